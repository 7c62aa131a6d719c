#!/usr/bin/env bash
# Cluster benchmark: one run of tests/cluster/bench.rs on this machine (PDF
# pages/s of 1 embedded node, 1 clustered node and 2 clustered nodes with the
# same total workers; the latency a sync job gains through the cluster;
# dispatch alone beside the local queue; the 503 of a full cluster). Writes
# docs/cluster-benchmarks.md (CLUSTER_BENCH_OUT to write elsewhere).
# Run it on a quiet machine: every process shares its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/fetch_engines.py .engines
export NATS_BIN="$PWD/.engines/nats-server" WEED_BIN="$PWD/.engines/weed"
cargo test --features cluster --test cluster bench_cluster -- --ignored --nocapture
