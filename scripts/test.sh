#!/usr/bin/env bash
# Runs the whole test suite. Installs the system tools some tests drive when
# they are missing (Debian packages: chromium for the dashboard's browser
# test, prometheus for `promtool check metrics`), then runs `cargo test`.
# pdfium itself is fetched by the build (build.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages the tests use)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test "$@"
