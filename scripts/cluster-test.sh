#!/usr/bin/env bash
# Runs the cluster suite (tests/cluster/): fetches the pinned nats-server and
# SeaweedFS binaries (scripts/fetch_engines.py, checksums verified), then
# builds with `--features cluster` and runs the unit tests of the cluster
# code and the suite, whose every test starts its own nats-server and S3
# server on 127.0.0.1 and three nodes or fewer of the real binary.
# Extra arguments go to the test binary (a name filter, --nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 scripts/fetch_engines.py .engines
export NATS_BIN="$PWD/.engines/nats-server" WEED_BIN="$PWD/.engines/weed"
# Two at a time: each case holds two engines and up to three nodes.
cargo test --features cluster --lib cluster::
cargo test --features cluster --test cluster -- --test-threads=2 "$@"
