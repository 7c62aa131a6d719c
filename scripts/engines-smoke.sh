#!/usr/bin/env bash
# Smoke test of the cluster-mode services (cluster mode is in progress):
# fetches the pinned binaries with scripts/fetch_engines.py, starts each on
# 127.0.0.1 on free ports in a temporary directory, checks it answers, prints
# its version and stops it. Exits non-zero on any failure.
#
#   nats-server 2.15.1: `-js -a 127.0.0.1 -p PORT -m MPORT -sd DIR`; ready
#       when /healthz?js-enabled-only=true says ok; the client port must
#       greet with an INFO line saying version 2.15.1 and jetstream true.
#   weed 4.48 (SeaweedFS): `weed mini` with a pre-created bucket and the
#       credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; ready when a
#       signed ListBuckets (curl --aws-sigv4) names the bucket; then an
#       unsigned request must get 403 with an S3 <Error> XML body, and a
#       signed PUT then GET must return the same bytes.
#   Both: every TCP port the process listens on must be on 127.0.0.1 and be
#   one this script picked (checked with `ss` where it exists), so runs can
#   go in parallel; each must stop on SIGTERM within 15 s.
#
# Usage: scripts/engines-smoke.sh [DEST]     (DEST as for fetch_engines.py,
#        default .engines; needs python3 with pip, and curl)
#
# weed mini needs more flags than it seems to, to stay on loopback and inside
# its own directory (all checked with weed 4.48):
#   -ip=127.0.0.1 -ip.bind=127.0.0.1  defaults bind 0.0.0.0 and advertise the
#       host's address;
#   every HTTP port, and its gRPC port: gRPC defaults to HTTP + 10000, and
#       the built-in maintenance worker dials admin HTTP + 10000 whatever
#       -admin.port.grpc says, so ports come in pairs P, P+10000;
#   -admin.port: the admin server listens (23646) even with -admin.ui=false;
#   -webdav=false: WebDAV listens on 7333 and keeps a chunk cache in /tmp;
#   -s3.port.iceberg=0 -s3.port.lance=0: 8181 and 9101 otherwise;
#   -master.telemetry=false: on by default (telemetry.seaweedfs.com);
#   -s3.localSocket, -filer.localSocket: default /tmp/seaweedfs-*-PORT.sock,
#       and the S3 one is left behind on exit; the gRPC sockets
#       (/tmp/seaweedfs-*-grpc-PORT.sock) cannot be moved, are removed on a
#       clean exit, and are unique per run because the ports are;
#   -logtostderr: glog files otherwise go to /tmp (weed.INFO, ...);
#   -dir: it also writes mini.options there and reads it back next start.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=engines-smoke
say() { echo "$PROG: $*"; }
fail() { echo "$PROG: FAIL: $*" >&2; exit 1; }
for tool in python3 curl; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done

dest="${1:-.engines}"
python3 scripts/fetch_engines.py "$dest" || fail "fetch_engines.py failed"
dest=$(cd "$dest" && pwd)
nats="$dest/nats-server"
weed="$dest/weed"

work=$(mktemp -d "${TMPDIR:-/tmp}/engines-smoke.XXXXXX")
declare -A pids=()
cleanup() {
  local name
  for name in "${!pids[@]}"; do
    kill -KILL "${pids[$name]}" 2>/dev/null || true
    wait "${pids[$name]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fail, with the end of a service's log.
fail_log() {
  local log=$1; shift
  echo "$PROG: FAIL: $*; last lines of $(basename "$log"):" >&2
  tail -n 25 "$log" | sed 's/^/    /' >&2
  exit 1
}

# Free ports on 127.0.0.1: $1 single ones, then $2 pairs P, P+10000 (for
# weed's HTTP + gRPC). All are held until every one is found, so they differ.
free_ports() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys
singles, pairs = int(sys.argv[1]), int(sys.argv[2])
held, out = [], []
def bind(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    held.append(s)
    return s.getsockname()[1]
for _ in range(singles):
    out.append(bind(0))
for _ in range(1000):
    if len(out) == singles + 2 * pairs:
        break
    p = bind(0)
    if p + 10000 <= 65535 and bind(p + 10000):
        out += [p, p + 10000]
if len(out) != singles + 2 * pairs:
    sys.exit("no free port pairs P, P+10000 on 127.0.0.1")
print(*out)
EOF
}

# wait_ready NAME LOG TIMEOUT_S CMD...: until CMD succeeds, while NAME runs.
wait_ready() {
  local name=$1 log=$2 timeout=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    kill -0 "${pids[$name]}" 2>/dev/null || fail_log "$log" "$name exited before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || fail_log "$log" "$name not ready within $timeout s"
    sleep 0.1
  done
}

ms_since() { echo $(( (${EPOCHREALTIME//[.,]/} - ${1//[.,]/}) / 1000 )); }
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

# check_ports NAME PORT...: every TCP listener of NAME is 127.0.0.1:one of PORT.
check_ports() {
  local name=$1; shift
  if ! command -v ss >/dev/null; then
    say "$name: ss not found, listening ports not checked"
    return
  fi
  local addrs a bad=""
  addrs=$(ss -Hltnp | awk -v p="pid=${pids[$name]}," 'index($0, p) { print $4 }' | sort -u)
  [ -n "$addrs" ] || fail "$name: ss shows no listening socket"
  for a in $addrs; do
    if [ "${a%:*}" != 127.0.0.1 ] || [[ " $* " != *" ${a##*:} "* ]]; then bad+=" $a"; fi
  done
  [ -z "$bad" ] || fail "$name listens where it was not asked to:$bad"
  say "$name: listens on 127.0.0.1 only, on the $(echo "$addrs" | wc -l) ports given"
}

# stop NAME: SIGTERM, then up to 15 s for it to exit.
stop() {
  local name=$1 pid=${pids[$1]} t0=$EPOCHREALTIME rc=0
  kill -TERM "$pid"
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && fail "$name did not stop within 15 s of SIGTERM"
  wait "$pid" || rc=$?
  unset "pids[$name]"
  say "$name: stopped in $(ms_since "$t0") ms (exit $rc)"
}

read -r np nm sp sg mp mg vp vg fp fg ap ag < <(free_ports 2 5) || fail "no free ports"

# --- nats-server ---------------------------------------------------------
say "$("$nats" --version)"
t0=$EPOCHREALTIME
"$nats" -js -a 127.0.0.1 -p "$np" -m "$nm" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids[nats-server]=$!
nats_healthy() { curl -fsS "http://127.0.0.1:$nm/healthz?js-enabled-only=true" | grep -q '"ok"'; }
wait_ready nats-server "$work/nats.log" 10 nats_healthy
say "nats-server: JetStream healthy in $(ms_since "$t0") ms, RSS $(rss_mb "${pids[nats-server]}") MB"
# A NATS server greets each client with one INFO line of JSON.
info=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && read -r line <&3 && echo "$line"' _ "$np") \
  || fail "nats-server: no INFO line on 127.0.0.1:$np"
case "$info" in
  INFO*'"version":"2.15.1"'*'"jetstream":true'*) say "nats-server: client port 127.0.0.1:$np greets with INFO, version 2.15.1, jetstream true" ;;
  *) fail "nats-server: unexpected greeting on 127.0.0.1:$np: ${info:0:300}" ;;
esac
check_ports nats-server "$np" "$nm"
stop nats-server

# --- weed (SeaweedFS) ----------------------------------------------------
say "weed: $("$weed" version 2>/dev/null | head -n 1)"
export AWS_ACCESS_KEY_ID=smoke AWS_SECRET_ACCESS_KEY=smokesecret
bucket=smoke
s3="http://127.0.0.1:$sp"
signed=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
t0=$EPOCHREALTIME
(cd "$work" && exec "$weed" -logtostderr mini -dir="$work/s3" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket="$bucket" \
  -s3.port="$sp" -s3.port.grpc="$sg" -master.port="$mp" -master.port.grpc="$mg" \
  -volume.port="$vp" -volume.port.grpc="$vg" -filer.port="$fp" -filer.port.grpc="$fg" \
  -admin.ui=false -admin.port="$ap" -admin.port.grpc="$ag" \
  -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -master.telemetry=false \
  -s3.localSocket="$work/s3.sock" -filer.localSocket="$work/filer.sock" \
  >"$work/weed.log" 2>&1) &
pids[weed]=$!
lists_bucket() { curl -fsS "${signed[@]}" "$s3/" | grep -q "<Name>$bucket</Name>"; }
wait_ready weed "$work/weed.log" 30 lists_bucket
say "weed: S3 on $s3 lists bucket $bucket (signed ListBuckets) in $(ms_since "$t0") ms"

code=$(curl -sS -o "$work/anon.xml" -w '%{http_code}' "$s3/$bucket/") || fail "weed: unsigned request failed"
grep -q '<Error><Code>AccessDenied</Code>' "$work/anon.xml" && [ "$code" = 403 ] \
  || fail "weed: unsigned GET /$bucket/ got $code: $(head -c 300 "$work/anon.xml")"
say "weed: unsigned GET /$bucket/ -> 403 <Error><Code>AccessDenied</Code>"

head -c 65536 /dev/urandom >"$work/object"
sum=$(sha256sum "$work/object" | cut -d' ' -f1)
code=$(curl -sS -o "$work/put.out" -w '%{http_code}' "${signed[@]}" \
  -H "x-amz-content-sha256: $sum" -T "$work/object" "$s3/$bucket/smoke/object") \
  || fail "weed: signed PUT failed"
[ "$code" = 200 ] || fail "weed: signed PUT got $code: $(head -c 300 "$work/put.out")"
curl -fsS "${signed[@]}" -o "$work/object.back" "$s3/$bucket/smoke/object" || fail "weed: signed GET failed"
cmp -s "$work/object" "$work/object.back" || fail "weed: GET returned other bytes than the PUT"
say "weed: signed PUT then GET of 64 KiB: same bytes; RSS $(rss_mb "${pids[weed]}") MB"
check_ports weed "$sp" "$sg" "$mp" "$mg" "$vp" "$vg" "$fp" "$fg" "$ap" "$ag"
stop weed
left=$(ls /tmp/seaweedfs-*-"$sp".sock /tmp/seaweedfs-*-grpc-{"$sg","$mg","$vg","$fg","$ag"}.sock 2>/dev/null || true)
[ -z "$left" ] || { rm -f $left; fail "weed left sockets in /tmp: $(echo $left)"; }

say "OK"
