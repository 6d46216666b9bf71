#!/usr/bin/env bash
# The one test command: starts the engines the tests need (scripts/services.sh), runs every
# test of the workspace with cargo-nextest, builds the fuzz targets, and stops the engines.
#
#   scripts/test.sh [extra nextest args]
#   SEGUE_SKIP_FUZZ_BUILD=1 scripts/test.sh   skip building the fuzz targets
set -euo pipefail
cd "$(dirname "$0")/.."

export SEGUE_SERVICES_DIR="${SEGUE_SERVICES_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/segue-services.XXXXXX")}"
trap 'scripts/services.sh stop' EXIT

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

# Formatting is part of the suite (cheap, and keeps diffs about behaviour).
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all --check; fi

env_file=$(scripts/services.sh start)
# shellcheck disable=SC1090
source "$env_file"

cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"

if [ -z "${SEGUE_SKIP_FUZZ_BUILD:-}" ]; then
  scripts/fuzz.sh build
fi
