#!/usr/bin/env bash
# The benchmark report in one command: builds the release server, the bare
# render loop and the benchmark driver, installs the Debian package it
# needs when missing (only the plot font: the load generator is
# examples/bench/, which keeps every request's status and latency, so hey
# is not needed), and runs examples/bench/, which writes
# docs/benchmarks.md and docs/bench/*.png.
#
# Run from anywhere:   bash bench/run.sh [--quick] [--out DIR]
#
# --quick divides every duration by four (a trial run); --out DIR writes
# DIR/docs/... instead of the repository's docs/. The knobs are BENCH_*
# environment variables, listed with their defaults in bench/README.md and,
# with the values used, in the report. The sample defaults to
# ../shared/data/regal-17pages.pdf next to the repository (BENCH_SAMPLE).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[bench] %s\n' "$*" >&2; }

# apt_install PACKAGE...: as root, or through sudo when not.
apt_install() {
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null ||
		{ "${sudo[@]}" apt-get update >/dev/null &&
			"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null; }
}

# The plots draw their text with this TTF (no fontconfig needed).
if [[ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]]; then
	log "installing fonts-dejavu-core"
	apt_install fonts-dejavu-core
fi
log "building (release)"
cargo build --release --bin jobserver --example render_loop --example bench

# The report records the command it was made with.
export BENCH_COMMAND="bash bench/run.sh${*:+ $*}"
exec "${CARGO_TARGET_DIR:-target}/release/examples/bench" "$@"
