#!/usr/bin/env bash
# Runs every request in api.http with a real REST client (httpyac, pinned,
# installed from the npm registry into .tools/) against the real server, and
# checks that each gets exactly the status its `# expect:` line documents.
#
#   server A (MESSAGE_WORKERS=1 MESSAGE_QUEUE_CAPACITY=1, no rate limit):
#       every request once, then "queue_full" 4 times at once (503)
#   server B (RATE_LIMIT_PER_MINUTE=1 RATE_LIMIT_BURST=1):
#       "rate_limited" 3 times at once (429)
#   server C (API keys, ADMIN_BIND_ADDR): every request once, of which the
#       "API keys" and admin ones are checked
set -euo pipefail
cd "$(dirname "$0")/.."

HTTPYAC_VERSION=6.16.7
tools=.tools/httpyac
httpyac="$tools/node_modules/.bin/httpyac"
if [ ! -x "$httpyac" ] || [ "$("$httpyac" --version)" != "$HTTPYAC_VERSION" ]; then
  echo "installing httpyac $HTTPYAC_VERSION into $tools"
  npm install --prefix "$tools" --no-save --no-audit --no-fund --loglevel=error "httpyac@$HTTPYAC_VERSION" >/dev/null
fi

bin="${JOBSERVER_BIN:-target/debug/jobserver}"
[ -x "$bin" ] || cargo build --bin jobserver
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# api.http's @host: the server's default address (httpyac's --var does not
# override a file variable). Stop a server you run there before checking.
port=8000
host="http://127.0.0.1:$port"
if curl -fs "$host/livez" >/dev/null 2>&1; then
  echo "something already answers on $host; stop it first"; exit 1
fi
start() {
  env BIND_ADDR="127.0.0.1:$port" OUTPUT_DIR="$work/out" RUST_LOG=warn "$@" "$bin" >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do
    curl -fs "$host/livez" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "the server did not start:"; cat "$work/server.log"; exit 1
}
stop() {
  kill "$pid"; wait "$pid" || true; pid=""
}
# httpyac names a chained response `{{req.field}}` where REST Client (the
# syntax api.http keeps for its users) writes `{{req.response.body.$.field}}`;
# run a translated copy beside the original so relative file paths hold.
copy=".api.httpyac.http"
sed 's/\.response\.body\.\$\././g' api.http >"$copy"
trap 'cleanup; rm -f "$copy"' EXIT
# httpyac exits non-zero when a request gets an error status; the checker
# below decides what is right.
send() {
  "$httpyac" send "$copy" --json "$@" 2>/dev/null || true
}

start MESSAGE_WORKERS=1 MESSAGE_QUEUE_CAPACITY=1 RATE_LIMIT_PER_MINUTE=0
send --all >"$work/all.json"
send --name queue_full --repeat 4 --repeat-mode parallel >"$work/queue_full.json"
stop
start RATE_LIMIT_PER_MINUTE=1 RATE_LIMIT_BURST=1
send --name rate_limited --repeat 3 --repeat-mode parallel >"$work/rate_limited.json"
stop
start API_KEYS=alice=alice-key-0123456789,bob=bob-key-0123456789ab \
  ADMIN_BIND_ADDR=127.0.0.1:8001 RATE_LIMIT_PER_MINUTE=0
send --all >"$work/keyed.json"
stop

keyed=()
for name in keys_missing keys_unknown alice_job alice_sees bob_blind admin_status admin_metrics status_moved; do
  keyed+=("$name=$work/keyed.json")
done
python3 scripts/check_api_http.py api.http "$work/all.json" \
  queue_full="$work/queue_full.json" rate_limited="$work/rate_limited.json" "${keyed[@]}"
