#!/usr/bin/env bash
# Core-path benchmark: the job queue against a bare axum handler.
#
# Run from the repository root:   bash bench/core.sh
#
# In one run, with one load tool (hey) and the same settings for every case:
#   (a) bare    POST /bare on examples/bare.rs (same JSON in and out, no queue)
#   (b) queue   POST /jobs/message {"work_ms":0}, one server per MESSAGE_WORKERS
#               value in WORKER_COUNTS
#   (c) reject  POST /jobs/message against a full queue (1 worker busy with a
#               REJECT_JOB_MS job, 1 queued): every answer should be an immediate 503.
#               Measured twice per round: with the busy worker at normal
#               priority (it spins one core, as a busy worker does), and with it
#               under SCHED_IDLE (so the rejection path's own cost shows).
# Cases (a) and (b) are interleaved over ROUNDS rounds (all servers stay up),
# so that drift on a shared machine hits every case alike; the summary gives
# medians. For each run the script also records CPU time: the server's per
# request, hey's, and everyone else's (other processes on the machine), read
# from /proc, since requests/s alone cannot tell a slow path from a busy host.
#
# Knobs (environment):
#   MESSAGE_WORKERS  worker threads for (b)                          (default 2)
#   WORKER_COUNTS    worker counts to run (b) with     (default "$MESSAGE_WORKERS 1")
#   QUEUE_CAPACITY   MESSAGE_QUEUE_CAPACITY for (b)                  (default 256)
#   REQUESTS         requests per measured run                    (default 200000)
#   WARMUP_REQUESTS  requests per warm-up, discarded                (default 20000)
#   CONNECTIONS      concurrent connections                            (default 32)
#   ROUNDS           measured runs per case                             (default 3)
#   BENCH_HOST       address the servers bind                 (default 127.0.0.1)
#   BENCH_PORT       first port: bare on it, job servers above it   (default 18000)
#   BENCH_OUT        raw hey output, server logs, results.tsv   (default: mktemp -d)
#   QUIET_WAIT_S     how long to wait for other CPU load to settle first (default 60)
#   REJECT_JOB_MS    length of the job that keeps the worker busy in (c); it must
#                    outlast one round of (c) measurements          (default 60000)
#   LIGHT_QPS_PER_CONN  also measure every case once at this fixed rate per
#                    connection (hey -q; 100 x 32 connections = 3200/s), where
#                    latency is the server's own, not the wait for a core;
#                    0 skips it                                    (default 100)
#   LIGHT_REQUESTS   requests per light-load run                   (default 16000)
#   BENCH_NICE       run servers and hey at this nice value (e.g. -10, as root)
#                    when other work on the machine cannot be stopped  (default: unchanged)
#   SKIP_BUILD=1     use the binaries already built
#
# Targets (reported, not enforced): queue >= 0.7x bare requests/s and p99 < 5 ms
# at 32 connections; 503 rejections p99 < 1 ms. hey shares the machine's cores
# with the servers: the numbers are as measured on this host.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGE_WORKERS="${MESSAGE_WORKERS:-2}"
WORKER_COUNTS="${WORKER_COUNTS:-$MESSAGE_WORKERS 1}"
QUEUE_CAPACITY="${QUEUE_CAPACITY:-256}"
REQUESTS="${REQUESTS:-200000}"
WARMUP_REQUESTS="${WARMUP_REQUESTS:-20000}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-3}"
BENCH_HOST="${BENCH_HOST:-127.0.0.1}"
BENCH_PORT="${BENCH_PORT:-18000}"
BENCH_OUT="${BENCH_OUT:-$(mktemp -d /tmp/jobserver-bench.XXXXXX)}"
QUIET_WAIT_S="${QUIET_WAIT_S:-60}"
REJECT_JOB_MS="${REJECT_JOB_MS:-60000}"
LIGHT_QPS_PER_CONN="${LIGHT_QPS_PER_CONN:-100}"
LIGHT_REQUESTS="${LIGHT_REQUESTS:-16000}"
BENCH_NICE="${BENCH_NICE:-}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BODY='{"text":"hello","work_ms":0}'
START_DEADLINE_S=30
NCPU=$(nproc)
HZ=$(getconf CLK_TCK)

if [[ -n $BENCH_NICE ]]; then
	renice -n "$BENCH_NICE" -p $$ >/dev/null || die "cannot renice to $BENCH_NICE"
fi
mkdir -p "$BENCH_OUT"
RESULTS="$BENCH_OUT/results.tsv"
: >"$RESULTS"
NOTES=()
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
	printf '[bench] error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- cleanup
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGTERM one process we started, SIGKILL after 5 s, reap it.
stop() {
	local pid=$1 i
	kill "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 50; i++)); do
		# An exited child stays a zombie (and passes kill -0) until reaped.
		[[ $(ps -o stat= -p "$pid" 2>/dev/null) == [^Z]* ]] || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local kept=() p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do
		[[ $p == "$pid" ]] || kept+=("$p")
	done
	PIDS=("${kept[@]+"${kept[@]}"}")
}

# ---------------------------------------------------------------- tools
if ! command -v hey >/dev/null 2>&1; then
	log "installing hey"
	SUDO=()
	[[ $(id -u) -eq 0 ]] || SUDO=(sudo)
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y hey >/dev/null ||
		{ "${SUDO[@]}" apt-get update >/dev/null &&
			"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y hey >/dev/null; }
fi
for tool in hey curl jq awk; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
	log "building (release)"
	cargo build --release --bin jobserver --example bare
fi
SERVER_BIN="$TARGET_DIR/release/jobserver"
BARE_BIN="$TARGET_DIR/release/examples/bare"
[[ -x $SERVER_BIN && -x $BARE_BIN ]] || die "missing $SERVER_BIN or $BARE_BIN"

# ---------------------------------------------------------------- CPU accounting
# machine_jiffies: busy, irq+softirq (part of busy; loopback networking
# mostly) and total jiffies of the whole machine (all CPUs).
machine_jiffies() {
	awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, $7 + $8, t; exit}' /proc/stat
}
# proc_jiffies PID: user+system jiffies of the process's job worker threads
# (named message-worker-N) and of all its other threads (the tokio runtime).
proc_jiffies() {
	local task comm jobs=0 rest=0 j
	for task in /proc/"$1"/task/*; do
		comm=$(cat "$task/comm" 2>/dev/null) || continue
		j=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "$task/stat" 2>/dev/null) || continue
		if [[ $comm == message-worker* ]]; then jobs=$((jobs + j)); else rest=$((rest + j)); fi
	done
	echo "$rest $jobs"
}

# Waits (up to QUIET_WAIT_S) until processes other than ours use < 0.2 cores.
wait_for_quiet() {
	local deadline=$((SECONDS + QUIET_WAIT_S)) b0 q0 t0 b1 q1 t1 other
	while :; do
		read -r b0 q0 t0 < <(machine_jiffies)
		sleep 2
		read -r b1 q1 t1 < <(machine_jiffies)
		other=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v n="$NCPU" 'BEGIN {printf "%.2f", t ? b / (t / n) : 0}')
		if awk -v o="$other" 'BEGIN {exit !(o < 0.2)}'; then
			return 0
		fi
		if ((SECONDS >= deadline)); then
			log "other processes still use $other cores; measuring anyway"
			NOTES+=("the machine was not idle before the run: other processes used $other cores")
			return 0
		fi
		log "other processes use $other cores; waiting for them to settle"
	done
}

# ---------------------------------------------------------------- servers
# start_job_server NAME PORT VAR=VALUE...: a job server; sets STARTED_PID.
start_job_server() {
	local name=$1 port=$2
	shift 2
	env RATE_LIMIT_PER_MINUTE=0 RUST_LOG=warn BIND_ADDR="$BENCH_HOST:$port" "$@" \
		"$SERVER_BIN" >"$BENCH_OUT/server-$name.log" 2>&1 &
	STARTED_PID=$!
	PIDS+=("$STARTED_PID")
	wait_until "job server ($name)" "$STARTED_PID" \
		curl -sf -o /dev/null --max-time 1 "http://$BENCH_HOST:$port/livez"
}

# wait_until WHAT PID CMD...: polls CMD until it succeeds; fails when PID
# exits or the deadline passes.
wait_until() {
	local what=$1 pid=$2
	shift 2
	local deadline=$((SECONDS + START_DEADLINE_S))
	until "$@"; do
		kill -0 "$pid" 2>/dev/null || die "$what exited; see $BENCH_OUT"
		((SECONDS < deadline)) || die "$what did not answer within ${START_DEADLINE_S}s"
		sleep 0.1
	done
}

# status_field PORT JQ_PATH / status_is PORT JQ_PATH VALUE: a job server's /status.
status_field() { curl -sf --max-time 2 "http://$BENCH_HOST:$1/status" | jq -r "$2"; }
status_is() { [[ $(status_field "$1" "$2" 2>/dev/null) == "$3" ]]; }

port_free() { ! curl -s -o /dev/null --max-time 1 "http://$BENCH_HOST:$1/"; }

# ---------------------------------------------------------------- load
# hey_run FILE URL N [HEY_ARGS...]: one hey run with the shared settings;
# hey's own CPU seconds go to FILE.cpu.
hey_run() {
	/usr/bin/env time -f '%U %S' -o "$1.cpu" \
		hey -n "$3" -c "$CONNECTIONS" "${@:4}" -m POST -T application/json -d "$BODY" "$2" >"$1" 2>&1 ||
		die "hey failed; see $1"
}

# The load measure() applies: full speed (the default), or with light_load
# a fixed rate (hey -q, per connection) where latency is the server's own
# rather than the time requests wait for a core.
LOAD_N=$REQUESTS
LOAD_ARGS=()
LOAD_SUFFIX=""
full_load() { LOAD_N=$REQUESTS LOAD_ARGS=() LOAD_SUFFIX=""; }
light_load() {
	LOAD_N=$LIGHT_REQUESTS
	LOAD_ARGS=(-q "$LIGHT_QPS_PER_CONN")
	LOAD_SUFFIX=" @ $((LIGHT_QPS_PER_CONN * CONNECTIONS))/s"
}

# measure CASE ROUND URL SERVER_PID: warm-up (full load only), then one
# measured run; appends a line to results.tsv.
measure() {
	local case="$1$LOAD_SUFFIX" round=$2 url=$3 spid=$4 slug file
	slug=$(printf '%s' "$case" | tr -c 'A-Za-z0-9' '_')
	file="$BENCH_OUT/$slug.r$round.txt"
	if ((${#LOAD_ARGS[@]})); then
		log "round $round: $case: $LOAD_N requests at $CONNECTIONS connections, hey ${LOAD_ARGS[*]}"
	else
		log "round $round: $case: warm-up ($WARMUP_REQUESTS), then $LOAD_N requests at $CONNECTIONS connections"
		hey_run "$file.warmup" "$url" "$WARMUP_REQUESTS"
	fi
	local b0 q0 t0 b1 q1 t1 r0 r1 j0 j1
	read -r b0 q0 t0 < <(machine_jiffies)
	read -r r0 j0 < <(proc_jiffies "$spid")
	hey_run "$file" "$url" "$LOAD_N" "${LOAD_ARGS[@]+"${LOAD_ARGS[@]}"}"
	read -r r1 j1 < <(proc_jiffies "$spid")
	read -r b1 q1 t1 < <(machine_jiffies)
	record "$case" "$round" "$file" $((b1 - b0)) $((q1 - q0)) $((t1 - t0)) $((r1 - r0)) $((j1 - j0))
}

# record CASE ROUND FILE BUSY SOFTIRQ TOTAL RUNTIME JOBS: parses hey's
# report (and the jiffies: machine busy/irq/total, server runtime threads,
# job worker threads), appends a results.tsv line: case round rps p50_ms
# p99_ms statuses errors runtime_us_per_req jobs_us_per_req server_cores
# hey_cores softirq_cores other_cores.
record() {
	local case=$1 round=$2 file=$3 busy=$4 softirq=$5 total=$6 runtime=$7 jobs=$8
	local rps p50 p99 statuses errors n hey_cpu
	rps=$(awk '/Requests\/sec:/ {printf "%.0f", $2}' "$file")
	[[ -n $rps ]] || die "cannot parse $file"
	p50=$(awk '$1 == "50%" && $2 == "in" {printf "%.2f", $3 * 1000}' "$file")
	p99=$(awk '$1 == "99%" && $2 == "in" {printf "%.2f", $3 * 1000}' "$file")
	statuses=$(awk '/Status code distribution:/ {on = 1; next}
		on && /^[[:space:]]*\[[0-9]+\]/ {gsub(/[][]/, "", $1); s = s (s ? " " : "") $1 ":" $2}
		on && /^[[:space:]]*$/ {on = 0}
		END {print s ? s : "none"}' "$file")
	errors=$(awk '/Error distribution:/ {on = 1; next}
		on && /^[[:space:]]*\[[0-9]+\]/ {gsub(/[][]/, "", $1); n += $1}
		END {print n + 0}' "$file")
	n=$(awk '/Status code distribution:/ {on = 1; next}
		on && /^[[:space:]]*\[[0-9]+\]/ {n += $2}
		END {print n + 0}' "$file")
	hey_cpu=$(awk '{print $1 + $2}' "$file.cpu")
	awk -v OFS='\t' -v c="$case" -v r="$round" -v rps="$rps" -v p50="${p50:-nan}" \
		-v p99="${p99:-nan}" -v st="$statuses" -v err="$errors" -v n="$n" \
		-v busy="$busy" -v irq="$softirq" -v total="$total" -v rt="$runtime" -v jobs="$jobs" \
		-v hz="$HZ" -v hey="$hey_cpu" -v ncpu="$NCPU" 'BEGIN {
			wall = total / ncpu / hz              # seconds the run took
			rt_s = rt / hz; jobs_s = jobs / hz; irq_s = irq / hz
			other = busy / hz - irq_s - rt_s - jobs_s - hey   # CPU seconds not ours
			if (other < 0) other = 0
			print c, r, rps, p50, p99, st, err, \
				(n ? sprintf("%.1f", rt_s / n * 1e6) : "nan"), \
				(n ? sprintf("%.1f", jobs_s / n * 1e6) : "nan"), \
				sprintf("%.2f", (rt_s + jobs_s) / wall), sprintf("%.2f", hey / wall), \
				sprintf("%.2f", irq_s / wall), sprintf("%.2f", other / wall)
		}' >>"$RESULTS"
	# Anything but 200 in (a)/(b), or anything but 503 in (c), is worth a note.
	local want=200 other_status
	[[ $case == reject* ]] && want=503
	other_status=$(awk -v want="$want" '/Status code distribution:/ {on = 1; next}
		on && /^[[:space:]]*\[[0-9]+\]/ {gsub(/[][]/, "", $1); if ($1 != want) n += $2}
		on && /^[[:space:]]*$/ {on = 0}
		END {print n + 0}' "$file")
	if ((other_status > 0 || errors > 0)); then
		NOTES+=("$case, round $round: $other_status answers other than $want, $errors transport errors ($file)")
	fi
	# A connection that took long to open (a dropped SYN is retried after
	# 1 s, then 3 s) shows up as a huge p99 that is not the server's doing.
	local slow_dial
	slow_dial=$(awk '$1 == "DNS+dialup:" {gsub(/,/, ""); if ($6 + 0 > 0.5) print $6}' "$file")
	if [[ -n $slow_dial ]]; then
		NOTES+=("$case, round $round: a connection took ${slow_dial} s to open (TCP SYN retry?); its requests inflate p99 ($file)")
	fi
	# hey sends -n/-c requests per connection, rounded down.
	if ((n + errors != LOAD_N / CONNECTIONS * CONNECTIONS)); then
		NOTES+=("$case, round $round: hey reports $((n + errors)) results for -n $LOAD_N ($file)")
	fi
}

# ---------------------------------------------------------------- start
for ((i = 0; i < 10; i++)); do
	port_free $((BENCH_PORT + i)) || die "port $((BENCH_PORT + i)) is taken; set BENCH_PORT"
done

BARE_URL="http://$BENCH_HOST:$BENCH_PORT/bare"
BIND_ADDR="$BENCH_HOST:$BENCH_PORT" "$BARE_BIN" >"$BENCH_OUT/server-bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_until "bare server" "$BARE_PID" \
	curl -sf -o /dev/null --max-time 1 -X POST -H 'Content-Type: application/json' -d "$BODY" "$BARE_URL"

CASES=("bare")
declare -A CASE_URL=([bare]="$BARE_URL") CASE_PID=([bare]="$BARE_PID")
declare -A seen=()
i=1
for workers in $WORKER_COUNTS; do
	[[ -n ${seen[$workers]:-} ]] && continue
	seen[$workers]=1
	port=$((BENCH_PORT + i))
	i=$((i + 1))
	start_job_server "w$workers" "$port" MESSAGE_WORKERS="$workers" MESSAGE_QUEUE_CAPACITY="$QUEUE_CAPACITY"
	curl -sf --max-time 5 -X POST -H 'Content-Type: application/json' -d "$BODY" \
		"http://$BENCH_HOST:$port/jobs/message" >"$BENCH_OUT/sample-w$workers.json" ||
		die "a sample job on the workers=$workers server failed"
	case="queue workers=$workers"
	CASES+=("$case")
	CASE_URL[$case]="http://$BENCH_HOST:$port/jobs/message"
	CASE_PID[$case]=$STARTED_PID
done

wait_for_quiet

# ---------------------------------------------------------------- (a) + (b)
for ((round = 1; round <= ROUNDS; round++)); do
	for case in "${CASES[@]}"; do
		measure "$case" "$round" "${CASE_URL[$case]}" "${CASE_PID[$case]}"
	done
done
if ((LIGHT_QPS_PER_CONN > 0)); then
	light_load
	for case in "${CASES[@]}"; do
		measure "$case" 1 "${CASE_URL[$case]}" "${CASE_PID[$case]}"
	done
	full_load
fi
cleanup

# ---------------------------------------------------------------- (c) reject
# Each round gets a fresh server, occupied anew: the long job must outlast
# the round's measurements. The job is CPU-bound (message jobs hash until
# work_ms is spent), so at normal priority it holds one core throughout.
REJECT_PORT=$((BENCH_PORT + 9))
REJECT_URL="http://$BENCH_HOST:$REJECT_PORT/jobs/message"
WORKER_TIDS=()
# set_worker_policy --idle|--other: scheduling policy of the busy worker.
set_worker_policy() {
	local tid
	for tid in "${WORKER_TIDS[@]}"; do
		chrt "$1" -p 0 "$tid" >/dev/null 2>&1 || return 1
	done
}
for ((round = 1; round <= ROUNDS; round++)); do
	start_job_server "reject-r$round" "$REJECT_PORT" MESSAGE_WORKERS=1 MESSAGE_QUEUE_CAPACITY=1 \
		MESSAGE_TIMEOUT_MS=$((REJECT_JOB_MS * 2)) MESSAGE_QUEUE_TIMEOUT_MS=$((REJECT_JOB_MS * 2)) \
		SHUTDOWN_GRACE_MS=200
	REJECT_PID=$STARTED_PID
	occupied_at=$SECONDS
	curl -s -o "$BENCH_OUT/reject-long.r$round.json" --max-time $((REJECT_JOB_MS / 500 + 10)) -X POST \
		-H 'Content-Type: application/json' -d "{\"text\":\"long\",\"work_ms\":$REJECT_JOB_MS}" "$REJECT_URL" &
	PIDS+=("$!")
	wait_until "busy worker" "$REJECT_PID" status_is "$REJECT_PORT" '.queues[0].busy_workers' 1
	curl -s -o "$BENCH_OUT/reject-queued.r$round.json" --max-time $((REJECT_JOB_MS / 500 + 10)) -X POST \
		-H 'Content-Type: application/json' -d "$BODY" "$REJECT_URL" &
	PIDS+=("$!")
	wait_until "queued job" "$REJECT_PID" status_is "$REJECT_PORT" '.queues[0].depth' 1

	measure "reject 503 (busy worker spinning)" "$round" "$REJECT_URL" "$REJECT_PID"
	# Again with the busy worker under SCHED_IDLE, so that it stops competing
	# with the runtime and hey for CPU: the cost of the 503 path itself.
	WORKER_TIDS=()
	for task in /proc/"$REJECT_PID"/task/*; do
		[[ $(cat "$task/comm" 2>/dev/null) == message-worker* ]] && WORKER_TIDS+=("${task##*/}")
	done
	if command -v chrt >/dev/null 2>&1 && ((${#WORKER_TIDS[@]})) && set_worker_policy --idle; then
		measure "reject 503 (busy worker SCHED_IDLE)" "$round" "$REJECT_URL" "$REJECT_PID"
		if ((round == 1 && LIGHT_QPS_PER_CONN > 0)); then
			light_load
			measure "reject 503 (busy worker SCHED_IDLE)" 1 "$REJECT_URL" "$REJECT_PID"
			full_load
		fi
		set_worker_policy --other || true
	elif ((round == 1)); then
		NOTES+=("reject: cannot put the busy worker under SCHED_IDLE; those rows are missing")
	fi
	if ((round == 1 && LIGHT_QPS_PER_CONN > 0)); then
		light_load
		measure "reject 503 (busy worker spinning)" 1 "$REJECT_URL" "$REJECT_PID"
		full_load
	fi
	depth_after=$(status_field "$REJECT_PORT" '.queues[0].depth')
	busy_after=$(status_field "$REJECT_PORT" '.queues[0].busy_workers')
	if [[ $depth_after != 1 || $busy_after != 1 ]]; then
		NOTES+=("reject, round $round: after $((SECONDS - occupied_at)) s depth=$depth_after busy=$busy_after, expected 1 and 1: the busy job ended before the round did, so some answers were 200 (raise REJECT_JOB_MS)")
	fi
	stop "$REJECT_PID"
	cleanup
done

# ---------------------------------------------------------------- report
# median [FORMAT]: median of the numbers on stdin (printf FORMAT, default %.2f).
median() {
	sort -g | awk -v f="${1:-%.2f}" '{v[NR] = $1}
		END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf f "\n", m}'
}
col() { awk -F'\t' -v c="$1" -v k="$2" '$1 == c {print $k}' "$RESULTS"; }

bare_rps=$(col bare 3 | median %.0f)
echo
echo "## Core path: queue vs bare handler"
echo
echo "hey -n $REQUESTS -c $CONNECTIONS -m POST -T application/json -d '$BODY' (warm-up $WARMUP_REQUESTS" \
	"before each run); $ROUNDS rounds, cases interleaved; queue capacity $QUEUE_CAPACITY;" \
	"$NCPU CPUs shared by hey and the servers${BENCH_NICE:+ (all at nice $BENCH_NICE)};" \
	"$(date -u +%Y-%m-%dT%H:%MZ); raw output in $BENCH_OUT"
echo
echo "Medians over the rounds (requests/s range in brackets). CPU µs/req: user+system time of"
echo "the server's runtime threads (tokio workers, main) and of its job worker threads, per"
echo "request (in the reject rows the worker thread runs the long job, not requests). hey,"
echo "softirq (mostly loopback TCP) and other cores: CPU used during the run by hey, by"
echo "interrupt handling, and by processes that are not ours (another build, say)."
echo "Rows marked @ N/s ran once at that fixed rate (hey -q) instead of flat out: at full load"
echo "$CONNECTIONS connections keep the cores saturated and mean latency is simply"
echo "$CONNECTIONS / (requests/s) (Little's law); at a fixed low rate it is the server's own."
echo
echo "| case | requests/s | p50 ms | p99 ms | ratio vs bare | runtime CPU µs/req | job-thread CPU µs/req | hey cores | softirq cores | other cores | status codes (all rounds) | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
cases_in_order=$(awk -F'\t' '!seen[$1]++ {print $1}' "$RESULTS")
while IFS= read -r case; do
	rps=$(col "$case" 3 | median %.0f)
	range=$(col "$case" 3 | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "–" hi}')
	p50=$(col "$case" 4 | median)
	p99=$(col "$case" 5 | median)
	rt_us=$(col "$case" 8 | median %.1f)
	jobs_us=$(col "$case" 9 | median %.1f)
	hey_c=$(col "$case" 11 | median)
	irq_c=$(col "$case" 12 | median)
	other=$(col "$case" 13 | median)
	statuses=$(col "$case" 6 | tr ' ' '\n' | awk -F: '{n[$1] += $2} END {for (s in n) printf "%s%s: %d", (k++ ? ", " : ""), s, n[s]}')
	errors=$(col "$case" 7 | awk '{n += $1} END {print n + 0}')
	ratio=$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN {printf "%.2fx", a / b}')
	[[ $case == *" @ "* ]] && ratio="–"
	echo "| $case | $rps ($range) | $p50 | $p99 | $ratio | $rt_us | $jobs_us | $hey_c | $irq_c | $other | $statuses | $errors |"
done <<<"$cases_in_order"
echo
echo "Every run:"
echo
echo "| case | round | requests/s | p50 ms | p99 ms | runtime µs/req | job-thread µs/req | server cores | hey cores | softirq cores | other cores |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $8, $9, $10, $11, $12, $13}' "$RESULTS"
echo
echo "Targets: queue >= 0.70x bare requests/s with p99 < 5 ms; 503 rejections p99 < 1 ms."
if ((${#NOTES[@]})); then
	echo
	echo "Notes:"
	printf -- '- %s\n' "${NOTES[@]}"
fi
