#!/usr/bin/env bash
# Stress and fault-injection run of the release server (see bench/STRESS.md).
#
#   bash scripts/stress.sh          short: 45 s of load, then the shutdown run (about 65 s)
#   bash scripts/stress.sh --long   long: 10 min of load, then a 30 s shutdown run
#
# Further arguments go to both runs (e.g. --seed 42, --keep). Exits with the
# first failing run's exit code (1 on any violation), else 0.
set -euo pipefail
cd "$(dirname "$0")/.."

main_load=45s
shutdown_load=6s
if [[ "${1:-}" == "--long" ]]; then
  main_load=10m
  shutdown_load=30s
  shift
fi

cargo build --release --bin jobserver --example stress
target_dir="${CARGO_TARGET_DIR:-target}"
export JOBSERVER_BIN="${JOBSERVER_BIN:-$target_dir/release/jobserver}"
stress="$target_dir/release/examples/stress"

status=0
"$stress" --duration "$main_load" "$@" || status=$?
shutdown_status=0
"$stress" --shutdown --duration "$shutdown_load" "$@" || shutdown_status=$?
if [[ $status -eq 0 ]]; then
  status=$shutdown_status
fi
exit "$status"
