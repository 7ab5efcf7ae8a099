#!/usr/bin/env bash
# End-to-end smoke of the compose `cpu` profile on this host: up, one collaboration, one feedback, one adapter
# swap (a few SFT steps in the trainer container: published to the shared volume, loaded by the weak server, the
# alias flipped), a collaboration served by that adapter, then down. Needs the images (deploy/README.md) and .env.
#   deploy/smoke.sh            (COMPOSE="docker-compose" for Compose v1; KEEP=1 leaves the stack up)
set -euo pipefail
cd "$(dirname "$0")/.."
test -f .env || { echo "no .env: cp deploy/env.example .env and set its secrets" >&2; exit 2; }
compose=${COMPOSE:-"docker compose"}
port=$(sed -n 's/^COWEST_PORT=//p' .env)
url="http://127.0.0.1:${port:-8000}"
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
started=$(date +%s)
elapsed() { echo "[$(($(date +%s) - started)) s] $*"; }

$compose --profile cpu up -d
trap '[ -n "${KEEP:-}" ] || $compose --profile cpu down' EXIT
for _ in $(seq 1 120); do
  status=$(curl -s "$url/readyz" | json 'd["status"]' 2>/dev/null || true)
  [ "$status" = ready ] && break
  sleep 5
done
elapsed "readyz: $(curl -s "$url/readyz")"
[ "$status" = ready ]

answer=$(curl -sf "$url/v1/collaborate" -H 'content-type: application/json' \
  -d '{"question": "What is 2 + 2?", "domain": "general"}')
elapsed "collaboration: $(echo "$answer" | json '{k: d[k] for k in ("id", "mode", "answer", "degraded")}')"
trace=$(echo "$answer" | json 'd["id"]')
feedback=$(curl -sf "$url/v1/feedback" -H 'content-type: application/json' \
  -d "{\"id\": \"$trace\", \"score\": 1, \"correct_answer\": \"4\"}")
elapsed "feedback: $feedback"

printf '%s\n' \
  '{"question": "What is 2 + 2?", "answer": "4", "rationale": "2 + 2 = 4."}' \
  '{"question": "What is 3 + 3?", "answer": "6", "rationale": "3 + 3 = 6."}' \
  '{"question": "What is 5 + 1?", "answer": "6", "rationale": "5 + 1 = 6."}' \
  | $compose exec -T trainer sh -c 'cat > /tmp/smoke.jsonl'
$compose exec -T trainer cowest sft --domain general --data /tmp/smoke.jsonl --steps 3
elapsed "adapter swapped: $($compose exec -T trainer cowest adapters list --domain general | tail -n 3)"

for _ in $(seq 1 20); do  # the orchestrators see the alias change on the next request (pub/sub)
  after=$(curl -sf "$url/v1/collaborate" -H 'content-type: application/json' \
    -d '{"question": "What is 2 + 2?", "domain": "general"}')
  adapter=$(echo "$after" | json 'd["weak"].get("adapter") or ""')
  [ -n "$adapter" ] && break
  sleep 1
done
elapsed "collaboration after the swap: $(echo "$after" | json '{k: d[k] for k in ("mode", "degraded")} | {"weak": d["weak"]}')"
[ -n "$adapter" ]
elapsed "smoke passed"
