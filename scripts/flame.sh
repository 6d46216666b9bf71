#!/usr/bin/env bash
# A flame graph of the edge's hot 256 KiB range path (the load of bench-edge.sh scenario
# 1): one segue origin, one edge pinned to core 0 with the catalog cached, `segue
# loadtest` on core 1, and `perf record -g` on the edge while the load runs.
#
#   scripts/flame.sh OUT.svg                    TRACKS=100 SECS=10 by default
#   SEGUE_BIN=/path/to/old/segue scripts/flame.sh before.svg
#   EDGE_TOML='zero_copy = false' scripts/flame.sh copy.svg
#   SSD=1 scripts/flame.sh ssd.svg             memory 10x smaller than the catalog, over
#                                              an SSD tier that holds it (bench-ssd.sh)
#   FOLDED=stacks.txt scripts/flame.sh x.svg   also keep the folded stacks (for grep)
#   LT_PROTO=h2 scripts/flame.sh h2.svg        the load over TLS: h1-tls, h2 (8 connections
#                                              x 8 streams) or h3 (likewise)
# Needs perf (linux-perf) and inferno (`cargo install inferno`), installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath "$1")
TRACKS="${TRACKS:-100}"
SECS="${SECS:-10}"
. scripts/bench-lib.sh
bench_setup flame
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
export PATH="$HOME/.cargo/bin:$PATH"
command -v inferno-flamegraph >/dev/null || cargo install -q inferno
make_catalog "$TRACKS"
RUST_LOG=warn taskset -c 1 "$BIN" origin --listen 127.0.0.1:18370 --data-dir "$WORK/data" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
printf '%s\n' "${EDGE_TOML:-}" >"$WORK/edge.toml"
mem=$(( total / 1000000 + 512 ))
if [ -n "${SSD:-}" ]; then
  mem=$(( total / 10000000 ))
  printf 'ssd_cache_dir = "%s"\nssd_cache_mb = %s\n' "$WORK/ssd" $(( total * 3 / 2000000 )) >>"$WORK/edge.toml"
fi
port=18380 load=(--connections 64)
tls=()
if [ -n "${LT_PROTO:-}" ]; then
  make_cert
  port=18381
  tls=(--tls-listen 127.0.0.1:18381 --h3-listen 127.0.0.1:18381 --tls-cert "$WORK/pop.pem" --tls-key "$WORK/pop.key")
  [ "$LT_PROTO" = h1-tls ] || load=(--connections 8 --streams 8)
fi
RUST_LOG=warn taskset -c 0 "$BIN" edge --config "$WORK/edge.toml" --listen 127.0.0.1:18380 --upstream http://127.0.0.1:18370 \
  --mem-cache-mb "$mem" "${tls[@]}" >"$WORK/edge.log" 2>&1 &
EDGE=$!
PIDS+=($EDGE)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18380/healthz >/dev/null && break; sleep 0.1; done
sed "s|^|http://127.0.0.1:18380|" "$WORK/paths.txt" | xargs -P 8 -I{} curl -sf -o /dev/null {}
lt "$port" --paths-file "$WORK/paths.txt" "${load[@]}" --duration-secs 3 >/dev/null
lt "$port" --paths-file "$WORK/paths.txt" "${load[@]}" --duration-secs "$SECS" >"$WORK/load.json" &
LOAD=$!
sleep 1
perf record -e cpu-clock -F 999 -g -p "$EDGE" -o "$WORK/perf.data" -- sleep $(( SECS - 2 )) 2>/dev/null
wait "$LOAD"
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/folded"
[ -n "${FOLDED:-}" ] && cp "$WORK/folded" "$FOLDED"
inferno-flamegraph --title "segue edge, ${LT_PROTO:+$LT_PROTO, }${SSD:+SSD tier, }256 KiB ranges ($(field '"%.0f req/s" % r["requests_per_sec"]' <"$WORK/load.json"))" \
  <"$WORK/folded" >"$OUT"
log "wrote $OUT; top frames:"
awk '{n = $NF; $NF = ""; split($0, f, ";"); top[f[length(f)]] += n; all += n} END {for (k in top) printf "%5.1f%% %s\n", 100 * top[k] / all, k}' "$WORK/folded" | sort -rn | head -12 >&2
