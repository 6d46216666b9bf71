#!/usr/bin/env bash
# Run the public HTTP caching conformance suite (github.com/http-tests/cache-tests, the
# suite behind cache-tests.fyi) against a fresh `segue edge` on loopback, configured as an
# operator would for a general origin: the shipped defaults plus `[[paths]] prefix = "/"`
# accepting every method (the suite PUTs its set-up and sends POST/PUT/DELETE/M-SEARCH).
#
#   scripts/cache-tests.sh [OUT.json]
#
# Needs Node >= 20 and a clone of the suite: CACHE_TESTS_SUITE names it (default
# .cache-tests-suite/ in this checkout, git-ignored: `git clone
# https://github.com/http-tests/cache-tests .cache-tests-suite`). The runner and
# summariser come from ../shared/cache-tests/ (CACHE_TESTS_RUNNER overrides).
#   PEER=nginx scripts/cache-tests.sh [OUT.json]   the same run against nginx (the suite's
#                                                  own nginx config: proxy_cache, revalidate)
# env: SEGUE_BIN (default: a release build of this checkout), EDGE_PORT (18180)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export CACHE_TESTS_SUITE="${CACHE_TESTS_SUITE:-$ROOT/.cache-tests-suite}"
RUNNER="${CACHE_TESTS_RUNNER:-$ROOT/../shared/cache-tests}"
OUT="${1:-}"
PORT="${EDGE_PORT:-18180}"
ORIGIN_PORT="${ORIGIN_PORT:-18100}"

[[ -f "$CACHE_TESTS_SUITE/test-engine/cli.mjs" ]] || {
  echo "cache-tests.sh: no suite at $CACHE_TESTS_SUITE; clone github.com/http-tests/cache-tests there (or set CACHE_TESTS_SUITE)" >&2
  exit 2
}
[[ -x "$RUNNER/run-against.sh" ]] || { echo "cache-tests.sh: no runner at $RUNNER (set CACHE_TESTS_RUNNER)" >&2; exit 2; }
command -v node >/dev/null || { echo "cache-tests.sh: needs Node >= 20 (apt-get install nodejs npm)" >&2; exit 2; }

PEER="${PEER:-segue}"
if [[ "$PEER" == segue && -z "${SEGUE_BIN:-}" ]]; then
  cargo build --release --bin segue >&2
  SEGUE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/segue"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/segue-cache-tests.XXXXXX")"
EDGE_PID=""
cleanup() {
  if [[ -n "$EDGE_PID" ]]; then kill "$EDGE_PID" 2>/dev/null; wait "$EDGE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ "$PEER" == nginx ]]; then
  # shellcheck source=scripts/bench-lib.sh
  source "$ROOT/scripts/bench-lib.sh"
  need_nginx
  mkdir -p "$WORK/nginx-cache/tmp"
  # Workers run as root when the script does: the cache folder is private to this user.
  user_line=""
  [[ "$(id -u)" == 0 ]] && user_line="user root;"
  cat >"$WORK/nginx.conf" <<CONF
$user_line
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 256; }
http {
  access_log off;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=my-cache:8m max_size=1000m inactive=600m;
  proxy_temp_path $WORK/nginx-cache/tmp;
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN_PORT;
      proxy_cache my-cache;
      proxy_cache_revalidate on;
      proxy_http_version 1.1;
    }
  }
}
CONF
  "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/edge.log" 2>&1 &
  EDGE_PID=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  RESULTS="${OUT:-$WORK/results.json}"
  "$RUNNER/run-against.sh" "http://127.0.0.1:$PORT" "$RESULTS"
  python3 "$RUNNER/summarize.py" "nginx=$RESULTS"
  exit 0
fi

cat >"$WORK/edge.toml" <<TOML
listen = "127.0.0.1:$PORT"
upstreams = ["http://127.0.0.1:$ORIGIN_PORT"]
mem_cache_mb = 256
# The suite's origin serves no /healthz; its request counters must see only test traffic.
upstream_probe_secs = 0

[[paths]]
prefix = "/"
methods = ["*"]
TOML

"$SEGUE_BIN" edge --config "$WORK/edge.toml" >"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/edge.log" 2>/dev/null && break
  kill -0 "$EDGE_PID" 2>/dev/null || { cat "$WORK/edge.log" >&2; exit 1; }
  sleep 0.1
done

RESULTS="${OUT:-$WORK/results.json}"
"$RUNNER/run-against.sh" "http://127.0.0.1:$PORT" "$RESULTS"
python3 "$RUNNER/summarize.py" "segue=$RESULTS"
