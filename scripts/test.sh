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

# Debian packages the tests use, installed when missing so this command works on a fresh
# machine: curl (range checks), python3-pip (moto, the S3 server), and the reference tools
# packaged audio is checked with: ogginfo (vorbis-tools), oggz-validate (oggz-tools),
# ffmpeg; sox makes the synthetic signals the audio features are checked on, against
# librosa (PyPI); promtool (prometheus) checks config/prometheus and the Grafana dashboards' queries.
# PostgreSQL and NATS are installed by scripts/services.sh when it starts them.
need=()
command -v curl >/dev/null || need+=(curl)
command -v ogginfo >/dev/null || need+=(vorbis-tools)
command -v oggz-validate >/dev/null || need+=(oggz-tools)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v sox >/dev/null || need+=(sox)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]} (Debian packages)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
LIBROSA_VERSION=0.11.0
if ! python3 -c "import librosa, sys; sys.exit(librosa.__version__ != '$LIBROSA_VERSION')" 2>/dev/null; then
  echo "test.sh: installing librosa $LIBROSA_VERSION (PyPI, the audio features' reference)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "librosa==$LIBROSA_VERSION" >&2
fi
# Third-party clients the tests drive: Subsonic clients (tests/subsonic_clients.rs), and
# playwright-core with axe-core driving Debian's Chromium (tests/web.rs; no browser download).
OPENSONIC_VERSION=10.4.1
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('py-opensonic') != '$OPENSONIC_VERSION')" 2>/dev/null; then
  echo "test.sh: installing py-opensonic $OPENSONIC_VERSION (PyPI, a Subsonic client)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "py-opensonic==$OPENSONIC_VERSION" >&2
fi
# The cache simulator's peer for eviction policies (tests/sim.rs).
LIBCACHESIM_VERSION=0.3.5
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('libcachesim') != '$LIBCACHESIM_VERSION')" 2>/dev/null; then
  echo "test.sh: installing libcachesim $LIBCACHESIM_VERSION (PyPI, cache policies to compare with)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "libcachesim==$LIBCACHESIM_VERSION" >&2
fi
if ! (cd tests/clients && npm ls --silent >/dev/null 2>&1); then
  echo "test.sh: installing the npm test clients (tests/clients/package-lock.json)" >&2
  (cd tests/clients && npm ci --silent --no-audit --no-fund >&2)
fi
if ! command -v promtool >/dev/null; then
  # Only its promtool is used; no exporters, no daemon.
  echo "test.sh: installing prometheus (Debian package, for promtool)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
fi

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
