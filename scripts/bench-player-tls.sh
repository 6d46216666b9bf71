#!/usr/bin/env bash
# Skip-to-next and seek latency over TLS, with and without keep-alive: `segue up` (release
# build, 20 s demo tracks) with a second edge serving HTTPS (make_cert's certificate for
# 127.0.0.1) and an app API whose only POP is that edge, optionally behind
# scripts/delay_proxy.py (a mobile link's round trip). Per setting, PLAYS plays of the five
# demo tracks; in each, 2 s in, a seek to 5 s, then 3 s later a skip to the next track
# (which is not loading yet: 12 s are left, a deck starts 10 s before the end): seek
# latency (seek to the first audio at the target) and skip latency (skip to the next
# track's first audio, from its prefetched head), p50/p99 over all of them. The edge is warm (one untimed play
# first). The peer is the same player opening a connection (and a TLS handshake) per request.
#
#   scripts/bench-player-tls.sh            PLAYS=8 RTTS="0 40"
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYS="${PLAYS:-8}"
RTTS="${RTTS:-0 40}"
. scripts/bench-lib.sh
bench_setup player-tls
make_cert

"$BIN" up --data-dir "$WORK/data" --demo-track-secs 20 --origin-listen 127.0.0.1:18600 --edge-listen 127.0.0.1:18601 \
  --control-plane-listen 127.0.0.1:18602 --app-api-listen 127.0.0.1:18603 >"$WORK/up.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do grep -q "demo tracks added" "$WORK/up.log" 2>/dev/null && break; sleep 0.5; done
TOKEN=$(cat "$WORK/data/app-api.token")
KEY=$(cat "$WORK/data/signing.key")
api() { curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18603$1"; }
TRACKS=$(api "/v1/search?q=continuum&types=track" | python3 -c 'import json,sys; print(" ".join(h["id"] for h in json.load(sys.stdin)["hits"]))')
SINGLE=$(api "/v1/search?q=standalone&types=track" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hits"][0]["id"])')

cat >"$WORK/tls-edge.toml" <<EOF
listen = "127.0.0.1:18611"
tls_listen = "127.0.0.1:18612"
upstreams = ["http://127.0.0.1:18600"]
unknown_country = "SE"
[[tls_certs]]
cert = "$WORK/pop.pem"
key = "$WORK/pop.key"
names = ["pop.segue.test"]
[tokens]
required = true
[tokens.keys]
up = "$KEY"
EOF
"$BIN" edge --config "$WORK/tls-edge.toml" >"$WORK/tls-edge.log" 2>&1 &
PIDS+=($!)

# An app API on up's catalog whose only POP is POP_URL: APP_PID, on port 18620 + N.
app_api() {
  cat >"$WORK/app-$2.toml" <<EOF
listen = "127.0.0.1:$((18620 + $2))"
database = "sqlite://$WORK/data/app-api.db"
search_dir = "$WORK/search-$2"
origin = "http://127.0.0.1:18600"
admin_tokens = ["$TOKEN"]
fallback_pops = ["$1"]
[signing]
kid = "up"
secret_hex = "$KEY"
EOF
  "$BIN" app-api --config "$WORK/app-$2.toml" >"$WORK/app-$2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((18620 + $2))/healthz" >/dev/null && return; sleep 0.2; done
  echo "app API $2 did not start" >&2; exit 1
}

stat() { python3 -c "
import sys
v = sorted(float(x) for x in sys.argv[1:])
at = lambda q: v[min(len(v) - 1, max(0, int(-(-q * len(v) // 1)) - 1))]
print(f'{at(0.5):.1f} {at(0.99):.1f} {len(v)}')" "$@"; }

# run APP_PORT ARGS...: the skip and seek latencies of PLAYS plays, as two lines.
run() {
  local port=$1; shift
  local skips=() seeks=()
  for _ in $(seq 1 "$PLAYS"); do
    # shellcheck disable=SC2086
    read -r -a both < <("$BIN" play --app-api "http://127.0.0.1:$port" --token-file "$WORK/data/app-api.token" \
      --country SE --json --no-report --ca-file "$WORK/ca.pem" --out "$WORK/out.wav" \
      --skip-after-ms 3000 --seek 2000:5000 "$@" $TRACKS "$SINGLE" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(" ".join(f"k{x}" for x in r["skip_latency_ms"]) + " " + " ".join(f"s{x}" for x in r["seek_latency_ms"]))')
    for x in "${both[@]}"; do
      case $x in k*) skips+=("${x#k}") ;; s*) seeks+=("${x#s}") ;; esac
    done
  done
  echo "$(stat "${skips[@]}") $(stat "${seeks[@]}")"
}

n=0
printf '%-6s %-8s %-11s %22s %22s\n' "rtt" "proto" "keep-alive" "skip p50/p99 ms (n)" "seek p50/p99 ms (n)"
for rtt in $RTTS; do
  n=$((n + 1))
  if [ "$rtt" = 0 ]; then
    pop="https://127.0.0.1:18612"
  else
    python3 scripts/delay_proxy.py $((18630 + n)) 18612 "$((rtt / 2))" &
    PIDS+=($!)
    pop="https://127.0.0.1:$((18630 + n))"
  fi
  app_api "$pop" "$n"
  port=$((18620 + n))
  run "$port" >/dev/null # warm the edge
  for proto in h2 h1-tls; do
    for ka in yes no; do
      flags=(--tls-protocol "$proto")
      [ "$ka" = no ] && flags+=(--no-keep-alive)
      read -r kp50 kp99 kn sp50 sp99 sn < <(run "$port" "${flags[@]}")
      printf '%-6s %-8s %-11s %14s %7s %14s %7s\n' "${rtt}ms" "$proto" "$ka" "$kp50/$kp99" "($kn)" "$sp50/$sp99" "($sn)"
    done
  done
done
