{{/* Names, labels and the environment every CoWest container shares. */}}
{{- define "cowest.name" -}}{{ .Release.Name }}-cowest{{- end }}

{{- define "cowest.labels" -}}
app.kubernetes.io/name: cowest
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "cowest.selector" -}}
app.kubernetes.io/name: cowest
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The profile's served model names (shared/catalog.py). */}}
{{- define "cowest.weakModel" -}}
{{- if eq .Values.profile "tiny" }}tiny-weak{{ else }}SmolLM2-135M-Instruct{{ end }}
{{- end }}
{{- define "cowest.strongModel" -}}
{{- if eq .Values.strong.mode "external" }}{{ required "strong.external.model" .Values.strong.external.model }}
{{- else if eq .Values.profile "tiny" }}tiny-strong
{{- else if eq .Values.profile "fast" }}Qwen2.5-Coder-0.5B-Instruct
{{- else }}Qwen2.5-Coder-1.5B-Instruct{{ end }}
{{- end }}

{{- define "cowest.env" -}}
- name: COWEST_PROFILE
  value: {{ .Values.profile | quote }}
- name: COWEST_HOME
  value: /cowest
- name: COWEST_WEAK_URL
  value: http://{{ include "cowest.name" . }}-weak:8001/v1
- name: COWEST_WEAK_MODEL
  value: {{ include "cowest.weakModel" . | quote }}
- name: COWEST_STRONG_URL
  value: {{ if eq .Values.strong.mode "external" }}{{ required "strong.external.url" .Values.strong.external.url | quote }}{{ else }}http://{{ include "cowest.name" . }}-strong:8002/v1{{ end }}
- name: COWEST_STRONG_MODEL
  value: {{ include "cowest.strongModel" . | quote }}
{{- if eq .Values.strong.mode "external" }}
- name: COWEST_STRONG_API_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.name }}, key: strong-api-key}}
{{- end }}
- name: COWEST_WEAK_API_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.name }}, key: weak-api-key}}
- name: COWEST_ADMIN_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.name }}, key: admin-key}}
{{- end }}

{{/* An init container that provisions the profile's models into the shared `models` volume (idempotent). */}}
{{- define "cowest.modelsInit" -}}
- name: models
  image: {{ .Values.images.trainer }}
  imagePullPolicy: {{ .Values.images.pullPolicy }}
  command: ["cowest", "models", "pull", "--profile", {{ .Values.profile | quote }}]
  env:
    - {name: COWEST_HOME, value: /cowest}
  volumeMounts:
    - {name: models, mountPath: /cowest/models}
  securityContext: {allowPrivilegeEscalation: false, runAsNonRoot: true, runAsUser: 10001}
{{- end }}

{{- define "cowest.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  fsGroup: 10001
{{- end }}

{{- define "cowest.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL]}
{{- end }}
