#!/usr/bin/env bash
# Static checks of what deploys the project (make deploy-check, run by CI):
#   docker-compose.yml against the Compose Specification's JSON schema (the copy check-jsonschema vendors);
#   every deploy/docker/Dockerfile.* with hadolint (.hadolint.yaml says what it ignores and why);
#   the Helm chart linted, then rendered with its default values, the GPU values and an external strong API, each
#   rendering validated against the Kubernetes 1.37 schemas (kubernetes-validate --strict: unknown fields fail).
# The compose profiles' structure (what each starts, what is published) is tested in tests/deploy/.
set -euo pipefail
bin=${1:-.venv-deploy/bin}
cd "$(dirname "$0")/.."
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
for dockerfile in deploy/docker/Dockerfile.*; do
  "$bin/hadolint" "$dockerfile"
  echo "ok -- hadolint $dockerfile"
done
chart=deploy/helm/cowest
"$bin/helm" lint --strict "$chart"
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
for values in "default" "gpu" "external-strong"; do
  case $values in
    default) args=() ;;
    gpu) args=(-f "$chart/values-gpu.yaml") ;;
    external-strong) args=(--set strong.mode=external --set strong.external.url=https://api.example.com/v1
                           --set strong.external.model=gpt-x) ;;
  esac
  "$bin/helm" template cowest "$chart" "${args[@]}" > "$rendered"
  "$bin/kubernetes-validate" --strict --quiet "$rendered"
  echo "ok -- helm template ($values): $(grep -c '^kind:' "$rendered") resources valid against Kubernetes 1.37"
done
