#!/usr/bin/env bash
# Fuzz targets for every parser of untrusted input (fuzz/fuzz_targets/*).
#
#   scripts/fuzz.sh build            build every target (what CI does)
#   scripts/fuzz.sh run TARGET [S]   fuzz TARGET for S seconds (default 60)
#
# cargo-fuzz needs nightly-only flags; the stable toolchain here accepts them with
# RUSTC_BOOTSTRAP=1 (the sanitizer runtimes ship with it).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi
# Keep fuzz builds beside the workspace's other build products when a shared dir is set.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"; fi
case "${1:-build}" in
  build) cargo fuzz build --dev ;;
  run) cargo fuzz run "${2:?target}" -- -max_total_time="${3:-60}" ;;
  *) echo "usage: $0 build | run TARGET [SECONDS]" >&2; exit 2 ;;
esac
