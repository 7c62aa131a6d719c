#!/usr/bin/env bash
# The cost of async mode on submit: the same message job (work_ms 0) sent
# sync and with ?mode=async to one release server, with hey, at 1 and 16
# connections. An async submit commits the job's record to the job database
# (grouped with concurrent ones) before its 202; its final state is written
# after it runs. Prints one line per run and the database's write counters.
#
#   bash bench/async.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hey >/dev/null || apt-get install -y hey >/dev/null
cargo build --release --bin jobserver
port=${PORT:-8222}
out=$(mktemp -d)
BIND_ADDR=127.0.0.1:$port OUTPUT_DIR=$out RATE_LIMIT_PER_MINUTE=0 MESSAGE_WORKERS=1 \
  MESSAGE_QUEUE_CAPACITY=100000 MAX_TRACKED_JOBS=100000000 RUST_LOG=warn \
  ./target/release/jobserver >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 200); do curl -fs "127.0.0.1:$port/livez" >/dev/null && break; sleep 0.05; done
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
body='{"text":"x","work_ms":0}'
for c in 1 16; do
  n=$((c == 1 ? 3000 : 20000))
  for mode in sync async; do
    query=""
    [ "$mode" = async ] && query="?mode=async"
    hey -n "$n" -c "$c" -m POST -T application/json -d "$body" \
      "http://127.0.0.1:$port/jobs/message$query" >"$out/hey.txt"
    rps=$(awk '/Requests\/sec/ {print $2}' "$out/hey.txt")
    p50=$(awk '/50% in/ {print $3 * 1000}' "$out/hey.txt")
    p99=$(awk '/99% in/ {print $3 * 1000}' "$out/hey.txt")
    codes=$(sed -n '/Status code distribution/,/^$/p' "$out/hey.txt" | grep '\[' | tr -s ' ' | tr '\n' ' ')
    printf '%-3s connections, %-5s: %8.0f req/s  p50 %5.2f ms  p99 %6.2f ms  %s\n' "$c" "$mode" "$rps" "$p50" "$p99" "$codes"
  done
done
curl -s "127.0.0.1:$port/status" | python3 -c '
import json, sys
db = json.load(sys.stdin)["async_jobs"]["database"]
print("job database: %d writes in %d commits (largest batch %d)" % (db["writes"], db["commits"], db["largest_batch"]))'
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
