#!/usr/bin/env bash
# PDF rendering benchmark: the bare render loop against the server.
#
#   bash bench/pdf.sh [path/to/sample.pdf]      (from the repo root)
#
# Builds the release server and examples/render_loop.rs, then measures, in
# one run, and prints a Markdown table:
#   a. the bare loop (pdfium in one process, the server's render function, no
#      server): 1 process, and W processes in parallel (W = nproc);
#   b. the server with PDF_WORKERS=1: 8 jobs back-to-back, and one job alone
#      (also one job alone on W workers, which PDF_FAN_OUT spreads over
#      them);
#   c. the server with PDF_WORKERS=W: W clients sending 4 jobs each;
#   d. the server's overhead: (b) against the bare loop;
#   e. 8 jobs sent at once to W workers: wall time for all of them;
#   f. peak RSS of the server plus its renderer processes during (e);
#   g. PNG encoder timings (render_loop --encoders).
# Every job uploads the sample as a raw application/pdf body; every reply
# must be 200 with one entry per page of the sample.
#
# Sample: $1, else $PDF_SAMPLE, else ../shared/data/regal-17pages.pdf.
# Knobs (environment): DPI (200), REPS (bare-loop passes, 3), W (nproc),
# SEQ_JOBS (8), JOBS_PER_CLIENT (4), BURST_JOBS (8), PORT (18431),
# QUIET_WAIT (seconds each phase waits for an idle machine, 30), NICE (give
# this benchmark's processes that niceness, e.g. -19 (root only), so that
# other work on a shared machine skews the figures less; off by default).
# Talks only to 127.0.0.1. Renders go to a temporary OUTPUT_DIR, removed at exit.
# Builds into $CARGO_TARGET_DIR when it is set (default: target/).
set -euo pipefail

# The whole script is one block, so bash parses it before running it:
# editing this file during a run cannot break that run.
{

AUTOGROUP_NICE=
if [[ -n ${NICE:-} ]]; then
    # With autogroup scheduling (kernel.sched_autogroup_enabled=1) CPU is
    # shared between sessions first and a process's nice counts only inside
    # its session, so set the session's niceness too (restored at exit);
    # children inherit both.
    if [[ -w /proc/self/autogroup ]]; then
        AUTOGROUP_NICE=$(sed -n 's/.* nice //p' /proc/self/autogroup)
        echo "$NICE" 2>/dev/null >/proc/self/autogroup || AUTOGROUP_NICE=
    fi
    renice -n "$NICE" -p $$ >/dev/null
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SAMPLE=${1:-${PDF_SAMPLE:-../shared/data/regal-17pages.pdf}}
DPI=${DPI:-200}
REPS=${REPS:-3}
W=${W:-$(nproc)}
SEQ_JOBS=${SEQ_JOBS:-8}
JOBS_PER_CLIENT=${JOBS_PER_CLIENT:-4}
BURST_JOBS=${BURST_JOBS:-8}
PORT=${PORT:-18431}
ADDR=127.0.0.1:$PORT
BASE=http://$ADDR

die() {
    echo "bench/pdf.sh: $*" >&2
    exit 1
}

[[ -f $SAMPLE ]] || die "no sample PDF at $SAMPLE (pass its path as the first argument)"
SAMPLE=$(realpath "$SAMPLE")
for tool in curl jq pgrep; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

echo "building (release) ..." >&2
cargo build --release --quiet --bin jobserver --example render_loop
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SERVER_BIN=$TARGET_DIR/release/jobserver
LOOP_BIN=$TARGET_DIR/release/examples/render_loop

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pdf-bench.XXXXXX")
SERVER_PID=
SAMPLER_PID=
cleanup() {
    if [[ -n $SAMPLER_PID ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
    stop_server
    rm -rf "$TMP"
    if [[ -n $AUTOGROUP_NICE ]]; then echo "$AUTOGROUP_NICE" >/proc/self/autogroup || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
log() { echo "[$(date +%T)] $*" >&2; }

# ---------------------------------------------------------------- server --

stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        # Graceful shutdown stops the renderers; give it 15 s, then force.
        local deadline=$((SECONDS + 15))
        while kill -0 "$SERVER_PID" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            pkill -KILL -P "$SERVER_PID" 2>/dev/null || true
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

# start_server WORKERS: starts the server and waits (60 s at most) for /livez.
start_server() {
    local workers=$1
    if curl -s -o /dev/null --max-time 1 "$BASE/livez"; then
        die "something already answers on $ADDR; set PORT"
    fi
    rm -rf "$TMP/out" && mkdir -p "$TMP/out" "$TMP/data"
    env BIND_ADDR="$ADDR" \
        PDF_WORKERS="$workers" \
        PDF_QUEUE_CAPACITY=$((BURST_JOBS + W * JOBS_PER_CLIENT + workers)) \
        PDF_TIMEOUT_MS=600000 \
        RATE_LIMIT_PER_MINUTE=0 \
        DATA_DIR="$TMP/data" \
        OUTPUT_DIR="$TMP/out" \
        RUST_LOG=warn \
        "$SERVER_BIN" >"$TMP/server-$workers.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 60))
    until curl -s -o /dev/null --max-time 1 "$BASE/livez"; do
        kill -0 "$SERVER_PID" 2>/dev/null || {
            cat "$TMP/server-$workers.log" >&2
            die "the server exited at start"
        }
        ((SECONDS < deadline)) || die "the server did not answer /livez within 60 s"
        sleep 0.1
    done
}

# job TAG: one upload of the sample; the reply goes to $TMP/replies/TAG.json
# and "TAG HTTP_CODE CLIENT_SECONDS" to $TMP/replies/TAG.code.
job() {
    local tag=$1 out
    out=$(curl -sS -o "$TMP/replies/$tag.json" -w '%{http_code} %{time_total}' \
        --max-time 900 -H 'Content-Type: application/pdf' --data-binary "@$SAMPLE" \
        "$BASE/jobs/pdf?dpi=$DPI") || out="000 0"
    echo "$tag $out" >"$TMP/replies/$tag.code"
}

# client TAG N: N jobs back to back.
client() {
    local i
    for ((i = 1; i <= $2; i++)); do job "$1-$i"; done
}

# check TAG...: every reply is 200 with $PAGES pages; prints the pages seen.
# Clears the renders so the disk holds one phase at a time.
check() {
    local tag code pages total=0
    for tag in "$@"; do
        read -r _ code _ <"$TMP/replies/$tag.code"
        if [[ $code != 200 ]]; then
            cat "$TMP/replies/$tag.json" >&2 2>/dev/null || true
            die "job $tag answered HTTP $code"
        fi
        pages=$(jq '.pages | length' "$TMP/replies/$tag.json")
        ((pages == PAGES)) || die "job $tag rendered $pages pages, expected $PAGES"
        total=$((total + pages))
    done
    find "$TMP/out" -mindepth 1 -delete
    echo "$total"
}

# mean FIELD TAG...: mean of a reply's numeric field over the jobs.
mean() {
    local field=$1
    shift
    local files=()
    for tag in "$@"; do files+=("$TMP/replies/$tag.json"); done
    jq -s "map(.$field) | add / length" "${files[@]}" | xargs printf '%.0f'
}

# mean client-side seconds over jobs, in ms.
client_ms() {
    local tag files=()
    for tag in "$@"; do files+=("$TMP/replies/$tag.code"); done
    awk '{ s += $3 } END { printf "%.0f", s * 1000 / NR }' "${files[@]}"
}

# numbered PREFIX N: the tags PREFIX-1 .. PREFIX-N, one a line.
numbered() {
    local i
    for ((i = 1; i <= $2; i++)); do echo "$1-$i"; done
}

tags() { # tags PREFIX CLIENTS JOBS
    local c
    for ((c = 1; c <= $2; c++)); do numbered "$1$c" "$3"; done
}

# jobs_at_once TAG...: one job per tag, all sent at once; waits for them all.
jobs_at_once() {
    local tag pids=()
    for tag in "$@"; do
        job "$tag" &
        pids+=($!)
    done
    wait "${pids[@]}"
}

# sample_rss ROOT_PID OUT: every 50 ms, the sum of resident memory (kB) of
# ROOT_PID and its children; keeps "MAX_KB SAMPLES" in OUT until killed.
# Kept cheap (about 1 % of a core): /proc/PID/statm, children listed again
# only every 20 samples (renderers change only when one dies or is
# recycled), and a sleep without a fork.
sample_rss() {
    local root=$1 out=$2 max=0 n=0 total pid rss pids=() tick sleeper
    exec {tick}< <(exec sleep 100000)
    sleeper=$!
    trap 'echo "$max $n" >"$out"; kill "$sleeper" 2>/dev/null; exit 0' TERM
    while :; do
        if ((n % 20 == 0)); then
            pids=("$root" $(pgrep -P "$root" || true))
        fi
        total=0
        for pid in "${pids[@]}"; do
            read -r _ rss _ 2>/dev/null <"/proc/$pid/statm" || continue
            total=$((total + rss * PAGE_KB))
        done
        n=$((n + 1))
        ((total > max)) && max=$total
        read -r -t 0.05 -u "$tick" _ || true
    done
}

# engine_stat FIELD: a counter from /status (pdf_engine), "n/a" if absent.
engine_stat() {
    curl -s --max-time 5 "$BASE/status" | jq -r ".pdf_engine.$1 // \"n/a\"" 2>/dev/null || echo "n/a"
}

rss_now_kb() {
    local total=0 pid rss
    for pid in "$SERVER_PID" $(pgrep -P "$SERVER_PID" || true); do
        read -r _ rss _ 2>/dev/null <"/proc/$pid/statm" || continue
        total=$((total + rss * PAGE_KB))
    done
    echo "$total"
}

# ------------------------------------------------------- other CPU load --
# The machine may be shared. For each phase the table reports the CPU that
# processes outside this benchmark used meanwhile ("other load", in % of one
# core): CPU busy time from /proc/stat minus this script's own (its reaped
# children from `times`, plus the live server and renderers from /proc).

HZ=$(getconf CLK_TCK)
PAGE_KB=$(($(getconf PAGESIZE) / 1024))
busy_ticks() {
    local _ u n s _i _w irq sirq steal _rest
    read -r _ u n s _i _w irq sirq steal _rest </proc/stat
    echo $((u + n + s + irq + sirq + steal))
}
# Sets OURS to the ticks used by this script's processes so far. Not to be
# called in a subshell: `times` must see this shell's reaped children.
our_ticks() {
    local total=0 line m s pid f
    times >"$TMP/times" # a builtin with a redirection: runs in this shell
    line=$(sed -n 2p "$TMP/times") # children: user sys, as 1m2.345s
    for t in $line; do
        m=${t%%m*}
        s=${t#*m}
        s=${s%s}
        total=$(calc "$total + ($m * 60 + $s) * $HZ" 0)
    done
    if [[ -n $SERVER_PID ]]; then
        for pid in "$SERVER_PID" $(pgrep -P "$SERVER_PID" || true); do
            read -r -a f 2>/dev/null <"/proc/$pid/stat" || continue
            total=$((total + f[13] + f[14] + f[15] + f[16]))
        done
    fi
    OURS=$total
}
phase_begin() {
    P_BUSY=$(busy_ticks)
    our_ticks
    P_OURS=$OURS
    P_T=$(now)
}
# phase_end VAR: sets VAR to the other load since phase_begin, in % of one
# core (never below 0: tick counts are coarse).
phase_end() {
    local busy t
    busy=$(busy_ticks)
    our_ticks
    t=$(now)
    local x="((($busy - $P_BUSY) - ($OURS - $P_OURS)) / $HZ / ($t - $P_T) * 100)"
    printf -v "$1" '%s' "$(calc "($x > 0 ? $x : 0)" 0)"
}
# Before each phase: waits (QUIET_WAIT seconds at most, default 30) until
# the machine is idle, i.e. under 10 % of one core busy over 2 s (counting
# only other processes: the idle server and renderers use nothing).
wait_quiet() {
    local deadline=$((SECONDS + ${QUIET_WAIT:-30})) b0 b1 said=
    while :; do
        b0=$(busy_ticks)
        sleep 2
        b1=$(busy_ticks)
        if (((b1 - b0) * 100 < 10 * 2 * HZ)); then return; fi
        if ((SECONDS >= deadline)); then
            log "WARNING: the machine is busy ($(((b1 - b0) * 100 / (2 * HZ))) % of a core used by others); measuring anyway (NICE=-19 gives this benchmark priority)"
            return
        fi
        if [[ -z $said ]]; then
            log "waiting up to ${QUIET_WAIT:-30} s for the machine to be idle ($(((b1 - b0) * 100 / (2 * HZ))) % of a core busy)"
            said=1
        fi
    done
}

# cpu_split: "SERVER RENDERERS": CPU ticks used so far by the server process
# itself and by its live renderer processes.
cpu_split() {
    local f pid server=0 renderers=0
    read -r -a f 2>/dev/null <"/proc/$SERVER_PID/stat" && server=$((f[13] + f[14]))
    for pid in $(pgrep -P "$SERVER_PID" || true); do
        read -r -a f 2>/dev/null <"/proc/$pid/stat" || continue
        renderers=$((renderers + f[13] + f[14] + f[15] + f[16]))
    done
    echo "$server $renderers"
}
# cpu_per_page BEFORE AFTER PAGES: "SERVER_MS RENDERERS_MS" of CPU per page.
cpu_per_page() {
    local s0 r0 s1 r1
    read -r s0 r0 <<<"$1"
    read -r s1 r1 <<<"$2"
    echo "$(calc "($s1 - $s0) * 1000 / $HZ / $3" 1) $(calc "($r1 - $r0) * 1000 / $HZ / $3" 1)"
}

mkdir -p "$TMP/replies"

# ------------------------------------------------------------ a. bare loop --

wait_quiet
log "a. bare loop, 1 process"
phase_begin
"$LOOP_BIN" --dpi "$DPI" --reps "$REPS" "$SAMPLE" >"$TMP/bare-1.log"
phase_end OTHER_A1
result() { grep '^RESULT' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
BARE_PPS=$(result "$TMP/bare-1.log" pages_per_s)
BARE_MS=$(result "$TMP/bare-1.log" ms_per_page)
BARE_CPU=$(result "$TMP/bare-1.log" cpu_ms_per_page)
PAGES=$(($(result "$TMP/bare-1.log" pages) / REPS))
log "   $BARE_PPS pages/s ($BARE_MS ms/page); the sample has $PAGES pages"

wait_quiet
log "a. bare loop, $W processes in parallel"
pids=()
phase_begin
for ((p = 1; p <= W; p++)); do
    "$LOOP_BIN" --dpi "$DPI" --reps "$REPS" "$SAMPLE" >"$TMP/bare-w$p.log" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || die "a bare-loop process failed"; done
phase_end OTHER_A2
BARE_W_PPS=0
for ((p = 1; p <= W; p++)); do
    BARE_W_PPS=$(calc "$BARE_W_PPS + $(result "$TMP/bare-w$p.log" pages_per_s)" 3)
done
log "   $BARE_W_PPS pages/s aggregate"

# ------------------------------------------------------- b. one worker --

log "b. server, PDF_WORKERS=1"
start_server 1
job warm1
check warm1 >/dev/null
wait_quiet
phase_begin
c0=$(cpu_split)
t0=$(now)
job alone
t1=$(now)
check alone >/dev/null
ALONE_MS=$(calc "($t1 - $t0) * 1000" 0)
ALONE_RUN=$(mean run_ms alone)
t0=$(now)
client seq1 "$SEQ_JOBS"
t1=$(now)
mapfile -t SEQ_TAGS < <(tags seq 1 "$SEQ_JOBS")
SEQ_PAGES=$(check "${SEQ_TAGS[@]}")
SEQ_S=$(calc "$t1 - $t0" 3)
SEQ_PPS=$(calc "$SEQ_PAGES / $SEQ_S" 3)
SEQ_RUN=$(mean run_ms "${SEQ_TAGS[@]}")
SEQ_QUEUE=$(mean queue_ms "${SEQ_TAGS[@]}")
SEQ_TOTAL=$(mean total_ms "${SEQ_TAGS[@]}")
SEQ_CLIENT=$(client_ms "${SEQ_TAGS[@]}")
read -r SEQ_CPU_SERVER SEQ_CPU_RENDER <<<"$(cpu_per_page "$c0" "$(cpu_split)" $((SEQ_PAGES + PAGES)))"
phase_end OTHER_B
IDLE1_KB=$(rss_now_kb)
stop_server
log "   $SEQ_PPS pages/s; one job alone ${ALONE_MS} ms"

# ------------------------------------------------------- c, e, f. W workers --

log "c. server, PDF_WORKERS=$W, $W clients x $JOBS_PER_CLIENT jobs"
start_server "$W"
# Warm every renderer: W jobs at once.
mapfile -t WARM_TAGS < <(numbered warmw "$W")
jobs_at_once "${WARM_TAGS[@]}"
check "${WARM_TAGS[@]}" >/dev/null
wait_quiet
FAN0=$(engine_stat fanned_out_jobs)
t0=$(now)
job alonew
t1=$(now)
check alonew >/dev/null
ALONEW_MS=$(calc "($t1 - $t0) * 1000" 0)
FAN1=$(engine_stat fanned_out_jobs)
wait_quiet
pids=()
phase_begin
c0=$(cpu_split)
t0=$(now)
for ((c = 1; c <= W; c++)); do
    client "par$c" "$JOBS_PER_CLIENT" &
    pids+=($!)
done
wait "${pids[@]}"
t1=$(now)
phase_end OTHER_C
c1=$(cpu_split)
mapfile -t PAR_TAGS < <(tags par "$W" "$JOBS_PER_CLIENT")
PAR_PAGES=$(check "${PAR_TAGS[@]}")
PAR_S=$(calc "$t1 - $t0" 3)
PAR_PPS=$(calc "$PAR_PAGES / $PAR_S" 3)
PAR_RUN=$(mean run_ms "${PAR_TAGS[@]}")
PAR_TOTAL=$(mean total_ms "${PAR_TAGS[@]}")
SCALING=$(calc "$PAR_PPS / $SEQ_PPS" 2)
read -r PAR_CPU_SERVER PAR_CPU_RENDER <<<"$(cpu_per_page "$c0" "$c1" "$PAR_PAGES")"
FAN2=$(engine_stat fanned_out_jobs)
log "   $PAR_PPS pages/s (x$SCALING vs 1 worker)"

wait_quiet
log "e/f. $BURST_JOBS jobs at once on $W workers, sampling RSS every 50 ms"
IDLEW_KB=$(rss_now_kb)
sample_rss "$SERVER_PID" "$TMP/rss" &
SAMPLER_PID=$!
sleep 0.2
mapfile -t BURST_TAGS < <(numbered burst "$BURST_JOBS")
phase_begin
t0=$(now)
jobs_at_once "${BURST_TAGS[@]}"
t1=$(now)
sleep 0.1
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
phase_end OTHER_E
BURST_PAGES=$(check "${BURST_TAGS[@]}")
BURST_S=$(calc "$t1 - $t0" 2)
BURST_QUEUE_MAX=$(for t in "${BURST_TAGS[@]}"; do echo "$TMP/replies/$t.json"; done |
    xargs jq -s 'map(.queue_ms) | max | floor')
read -r PEAK_KB SAMPLES <"$TMP/rss"
PEAK_MB=$(calc "$PEAK_KB * 1024 / 1e6" 0)
RENDERERS=$(pgrep -P "$SERVER_PID" | wc -l)
FAN3=$(engine_stat fanned_out_jobs)
CRASHES=$(engine_stat renderer_crashes)
RECYCLES=$(engine_stat renderer_recycles)
stop_server
log "   ${BURST_S} s for $BURST_PAGES pages; peak RSS ${PEAK_MB} MB over $SAMPLES samples"

# ------------------------------------------------------------- g. encoders --

wait_quiet
log "g. PNG encoders"
phase_begin
"$LOOP_BIN" --encoders --dpi "$DPI" "$SAMPLE" >"$TMP/encoders.log"
phase_end OTHER_G

# ------------------------------------------------------------------ report --

OVERHEAD=$(calc "(1 - $SEQ_PPS / $BARE_PPS) * 100" 1)
BARE_JOB_MS=$(calc "$BARE_MS * $PAGES" 0)
fanned() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && echo "$(($2 - $1))" || echo "n/a"; }
verdict() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**missed**"; }
SCALE_TARGET=$(calc "0.9 * $W" 1)

cat <<EOF

## PDF rendering benchmark

$(basename "$SAMPLE"): $PAGES pages at $DPI dpi; $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')); W = $W; nice $(nice)$(sed -n 's/.* nice / (session /p; ' /proc/self/autogroup 2>/dev/null | sed 's/$/)/'); $(date -u +'%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)').

| | measurement | result | target | | other load |
|---|---|---:|---|---|---:|
| a | bare loop, 1 process ($REPS passes) | $BARE_PPS pages/s ($BARE_MS ms/page) | the limit | | $OTHER_A1 % |
| a | bare loop, $W processes in parallel | $BARE_W_PPS pages/s ($(calc "$BARE_W_PPS / $BARE_PPS" 2)x) | | | $OTHER_A2 % |
| b | server, 1 worker, $SEQ_JOBS jobs back-to-back | $SEQ_PPS pages/s ($SEQ_PAGES pages in $SEQ_S s) | | | $OTHER_B % |
| b | server, 1 worker, one job alone | $ALONE_MS ms wall (run_ms $ALONE_RUN; bare loop $BARE_JOB_MS) | | | $OTHER_B % |
| b | server, $W workers, one job alone | $ALONEW_MS ms wall (fanned out: $(fanned "$FAN0" "$FAN1")) | | | |
| c | server, $W workers, $W clients x $JOBS_PER_CLIENT jobs | $PAR_PPS pages/s ($PAR_PAGES pages in $PAR_S s) | | | $OTHER_C % |
| c | scaling vs 1 worker | ${SCALING}x | >= ${SCALE_TARGET}x | $(verdict "$SCALING >= $SCALE_TARGET") | $OTHER_C % |
| d | server overhead, 1 worker vs bare loop | ${OVERHEAD} % | <= 10 % | $(verdict "$OVERHEAD <= 10") | |
| e | $BURST_JOBS jobs at once on $W workers | $BURST_S s wall ($BURST_PAGES pages; longest queue wait $BURST_QUEUE_MAX ms) | <= 11 s (2 cores) | $(verdict "$BURST_S <= 11") | $OTHER_E % |
| f | peak RSS, server + $RENDERERS renderers, during e | $PEAK_MB MB ($SAMPLES samples; idle $(calc "$IDLEW_KB * 1024 / 1e6" 0) MB) | <= 400 MB | $(verdict "$PEAK_MB <= 400") | $OTHER_E % |

Where a job's time goes (means, ms per ${PAGES}-page job): 1 worker back-to-back: client wall $SEQ_CLIENT, server total_ms $SEQ_TOTAL, queue_ms $SEQ_QUEUE, run_ms $SEQ_RUN; bare loop $BARE_JOB_MS. $W workers: run_ms $PAR_RUN, total_ms $PAR_TOTAL. Jobs fanned out over several renderers: $(fanned "$FAN1" "$FAN2") of $((PAR_PAGES / PAGES)) in c, $(fanned "$FAN2" "$FAN3") of $BURST_JOBS in e; renderer crashes $CRASHES, recycles $RECYCLES.

CPU per page (ms): bare loop $BARE_CPU; server with 1 worker: renderer $SEQ_CPU_RENDER + server process $SEQ_CPU_SERVER; with $W workers: renderers $PAR_CPU_RENDER + server process $PAR_CPU_SERVER. Idle RSS, 1 worker: $(calc "$IDLE1_KB * 1024 / 1e6" 0) MB.

Other load: CPU used by processes outside this benchmark during the phase, in % of one core: 0 on a quiet machine; above ~10 the row is suspect. While one process renders (rows a1, b), the other core is free and others may use it (up to 100 %) without taking CPU from the benchmark, though they still share caches and memory bandwidth with it.

### g. PNG encoders (other load $OTHER_G %)

$(cat "$TMP/encoders.log")
EOF
exit 0
}
