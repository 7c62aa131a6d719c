#!/usr/bin/env bash
# Hostile clients, full size, against a release build: an upload flood and
# a slowloris, with what the server's memory and a normal client saw.
#
#   bash scripts/flood.sh            # builds the release binary if needed
#
# Environment: UPLOADS (60), UPLOAD_MB (94), SLOW_CONNECTIONS (19000; the
# attacking client needs as many descriptors).
# Prints a Markdown report on stdout (docs/hostile.md holds the last one).
set -euo pipefail
cd "$(dirname "$0")/.."

uploads=${UPLOADS:-60}
upload_mb=${UPLOAD_MB:-94}
slow=${SLOW_CONNECTIONS:-19000}
target=${CARGO_TARGET_DIR:-target}
bin=${JOBSERVER_BIN:-$target/release/jobserver}
[ -x "$bin" ] || cargo build --release >&2

tmp=$(mktemp -d)
server_pid=""
trap '[ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null; rm -rf "$tmp"' EXIT

# A valid PDF padded to the upload size (a comment after the end).
python3 - "$tmp/big.pdf" "$upload_mb" <<'EOF'
import sys
path, mb = sys.argv[1], int(sys.argv[2])
pdf = open("data/sample.pdf", "rb").read()
with open(path, "wb") as out:
    out.write(pdf)
    out.write(b"\n%" + b"x" * (mb * 1000 * 1000 - len(pdf) - 2))
EOF

port=$((20000 + RANDOM % 20000))
base="http://127.0.0.1:$port"
BIND_ADDR="127.0.0.1:$port" OUTPUT_DIR="$tmp/out" DATA_DIR=data PDF_WORKERS=1 \
  PDF_QUEUE_CAPACITY=1 RATE_LIMIT_PER_MINUTE=0 RUST_LOG=warn "$bin" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "$base/livez" >/dev/null && break; sleep 0.1; done

hwm() { awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$server_pid/status"; }
rss() { awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$server_pid/status"; }
idle_rss=$(rss)

# 1. Upload flood: every client sends its whole body at once (no
# `Expect: 100-continue`), so a refusal must be read while it sends.
for i in $(seq "$uploads"); do
  curl -s -o /dev/null -H 'Expect:' -H 'Content-Type: application/pdf' \
    -w '%{http_code} %{time_total}\n' --data-binary @"$tmp/big.pdf" \
    "$base/jobs/pdf?dpi=36&pages=1" >"$tmp/upload.$i" &
done
for job in $(jobs -p); do [ "$job" = "$server_pid" ] || wait "$job" || true; done
flood_peak=$(hwm)
sleep 1
flood_after=$(rss)
statuses=$(cat "$tmp"/upload.* | awk '{ print $1 }' | sort | uniq -c | awk '{ printf "%s%s × %s", (NR > 1 ? ", " : ""), $1, $2 }')
# spread COLUMN: the median and max, in ms, of a refused upload's curl time.
spread() {
  cat "$tmp"/upload.* | awk -v c="$1" '$1 == 503 { print $c * 1000 }' | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) printf "median %.0f ms, max %.0f ms", v[int((NR + 1) / 2)], v[NR]; else print "none" }'
}
refused_ms=$(spread 2)


# 1b. The same flood from a client that times the answer itself: from the
# end of its request head to the answer's first byte, while it goes on
# sending its body.
first_byte=$(python3 - "$port" "$uploads" "$tmp/big.pdf" <<'EOF'
import socket, sys, threading, time
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = open(path, "rb").read()
head = (f"POST /jobs/pdf?dpi=36&pages=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
results = []
def one():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    sent = time.monotonic()
    def send_body():
        try:
            for i in range(0, len(body), 1 << 20):
                s.sendall(body[i:i + (1 << 20)])
        except OSError:
            pass
    threading.Thread(target=send_body, daemon=True).start()
    first = s.recv(64)
    took = (time.monotonic() - sent) * 1000
    results.append((first[9:12].decode(errors="replace"), took))
    s.close()
threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
refused = sorted(ms for code, ms in results if code == "503")
if refused:
    print(f"{len(refused)} × 503, first byte median {refused[len(refused) // 2]:.1f} ms, max {refused[-1]:.1f} ms")
else:
    print("no 503")
EOF
)

# 2. Slowloris: one client (127.0.0.2) opens SLOW_CONNECTIONS connections,
# each with half a request head, while a normal client asks for /livez
# and a small PDF job.
ulimit -n 65536 2>/dev/null || true
python3 - "$port" "$slow" >"$tmp/slowloris.out" <<'EOF' &
import resource, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks, refused = [], 0
for _ in range(n):
    try:
        s = socket.socket()
    except OSError:
        refused += 1
        continue
    s.bind(("127.0.0.2", 0))
    try:
        s.connect(("127.0.0.1", port))
        s.send(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    except OSError:
        refused += 1
print(f"opened {len(socks)}, connect errors {refused}", flush=True)
time.sleep(15)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        while True:
            if not s.recv(65536):
                closed += 1
                break
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"closed by the server after 15 s: {closed} of {len(socks)}", flush=True)
EOF
loris=$!
sleep 5
livez=$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "$base/livez"; done |
  sort -n | awk '{ v[NR] = $1 * 1000 } END { printf "%.1f ms median, %.1f ms max", v[3], v[5] }')
pdf=$(curl -s -o /dev/null -w '%{http_code} in %{time_total} s' -H 'Content-Type: application/pdf' \
  --data-binary @data/sample.pdf "$base/jobs/pdf?dpi=36&pages=1")
open_during=$(curl -s "$base/metrics" | awk '/^jobserver_connections_open / { print $2 }')
wait "$loris" || true
refused_conns=$(curl -s "$base/metrics" | awk '/^jobserver_connections_refused_total\{reason="per_client"\}/ { print $2 }')
header_cut=$(curl -s "$base/metrics" | awk '/^jobserver_connections_timed_out_total\{phase="header"\}/ { print $2 }')
accept_errors=$(grep -c "accept failed" "$tmp/server.log" || true)

cat <<EOF
Measured by \`bash scripts/flood.sh\` ($(basename "$(dirname "$bin")") build, PDF_WORKERS=1, PDF_QUEUE_CAPACITY=1,
rate limit off, every other setting at its default), $(date -u +%Y-%m-%d), $(nproc) cores.

| what was tried | what happened |
|---|---|
| $uploads concurrent uploads of $upload_mb MB to \`POST /jobs/pdf\`, bodies sent without waiting (\`Expect:\` off) | statuses: $statuses; refused ones answered from their headers, curl's whole exchange (its own sending of the body included) $refused_ms; server peak RSS **$flood_peak MB** (idle: $idle_rss MB), $flood_after MB resident 1 s after |
| the same flood again, timed by a client of its own from the end of each request head to the answer's first byte, sending its body all the while | $first_byte |
| $slow connections from 127.0.0.2, each with half a request head | $(head -1 "$tmp/slowloris.out"); $open_during connections open 5 s into the attack; in all $refused_conns refused at accept (MAX_CONNECTIONS_PER_CLIENT) and $header_cut cut by HEADER_READ_TIMEOUT_MS; $(tail -1 "$tmp/slowloris.out"); accept errors logged: $accept_errors |
| meanwhile, a normal client on 127.0.0.1 | \`/livez\`: $livez; a one-page PDF job: $pdf |
EOF
