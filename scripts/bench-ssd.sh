#!/usr/bin/env bash
# The edge's SSD tier, side by side with nginx proxy_cache on disk, and warm-restart
# recovery time. Same catalog as bench-edge.sh (Ogg-sized random objects), one segue
# origin as the upstream of every peer, servers pinned to core 0, load to core 1.
#
#   scripts/bench-ssd.sh                    TRACKS=1000 SECS=20 by default
# Disk: the catalog, plus up to twice it for nginx's two caches at once (about 14 GB at
# TRACKS=1000); the script checks before it starts.
#   TRACKS=300 SECS=10 scripts/bench-ssd.sh
#   SKIP_RECOVERY=1 ...                    scenario 1 only
#
# 1. Catalog 10x the memory cap but within the SSD cap: 256 KiB ranges, Zipf 0.9,
#    64 connections, over plain HTTP/1.1 and over HTTPS (the same cache, a second
#    listener); a warm-up run, then the measured run (req/s, p99, byte hit ratio).
#    segue: memory cap + SSD cap; nginx: proxy_cache on disk with max_size = the SSD cap
#    (its memory is the kernel's page cache, which no cap bounds).
#    Each server's CPU time over the measured run (/proc utime + stime) is reported too.
# 2. Recovery: the whole catalog pre-warmed onto the SSD in 16 KiB slices (many slices),
#    then the time from start to serving after SIGTERM and after kill -9.
set -euo pipefail
cd "$(dirname "$0")/.."
TRACKS="${TRACKS:-1000}"
SECS="${SECS:-20}"
. scripts/bench-lib.sh
bench_setup ssd
need_nginx
make_cert
TOKEN=bench-admin-token-0123456789

need_mb=$(( TRACKS * 47 / 10 * 3 + 1024 ))
free_mb=$(df -Pm /tmp | awk 'NR == 2 {print $4}')
[ "$free_mb" -gt "$need_mb" ] || { log "needs ~$need_mb MB free in /tmp, has $free_mb; try a smaller TRACKS"; exit 1; }
make_catalog "$TRACKS"
chmod -R a+rX "$WORK"
mem=$(( total / 10000000 ))
ssd=$(( total * 3 / 2000000 ))
log "catalog: $TRACKS objects, $((total / 1000000)) MB; memory cap $mem MB, SSD cap $ssd MB"

origin_bytes() { curl -s http://127.0.0.1:18270/metrics | awk '$1 ~ /^origin_body_bytes_total/ {b += $2} END {printf "%.0f", b}'; }
wait_listening() { # file -> ms until it says "listening on"
  local t0 t1; t0=$(date +%s%N)
  for _ in $(seq 1 6000); do grep -q "listening on" "$1" 2>/dev/null && break; sleep 0.01; done
  t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 ))
}

RUST_LOG=warn taskset -c 1 "$BIN" origin --listen 127.0.0.1:18270 --data-dir "$WORK/data" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18270/healthz >/dev/null && break; sleep 0.1; done

echo "## Edge SSD tier vs nginx on disk ($(date -u +%Y-%m-%d), TRACKS=$TRACKS, SECS=$SECS)"
echo
echo "### 1. Catalog $((total / 1000000)) MB: memory cap $mem MB (10x smaller), SSD cap $ssd MB (holds it), 256 KiB ranges, Zipf 0.9, 64 connections"
echo
echo "| peer | req/s | p50 ms | p99 ms | client MB | origin MB | byte hit ratio | peak RSS MB | RSS owned / file-mapped MB | server CPU s | CPU µs / request |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"

measure() { # name port pid
  lt "$2" --paths-file "$WORK/paths.txt" --connections 64 --duration-secs "$SECS" >/dev/null
  local before after r client t0 t1
  before=$(origin_bytes)
  t0=$(cpu_ticks "$3")
  r=$(lt "$2" --paths-file "$WORK/paths.txt" --connections 64 --duration-secs "$SECS")
  t1=$(cpu_ticks "$3")
  after=$(origin_bytes)
  client=$(echo "$r" | field 'r["bytes"]')
  echo "| $1 | $(echo "$r" | field '"%.0f | %.2f | %.2f" % (r["requests_per_sec"], r["latency_ms"]["p50"], r["latency_ms"]["p99"])') | $((client / 1000000)) | $(((after - before) / 1000000)) | $(awk "BEGIN{printf \"%.3f\", 1-($after-$before)/$client}") | $(( $(rss_peak "$3") / 1024 )) | $(rss_kinds "$3" | tr ' ' /) | $(awk "BEGIN{printf \"%.2f | %.1f\", ($t1-$t0)/100, ($t1-$t0)*10000/$(echo "$r" | field 'r["requests"]')}") |"
}

# segue: memory above SSD.
printf 'mem_cache_mb = %s\nssd_cache_dir = "%s"\nssd_cache_mb = %s\n' "$mem" "$WORK/ssd" "$ssd" >"$WORK/edge.toml"
RUST_LOG=warn taskset -c 0 "$BIN" edge --config "$WORK/edge.toml" --listen 127.0.0.1:18280 --upstream http://127.0.0.1:18270 \
  --tls-listen 127.0.0.1:18284 --tls-cert "$WORK/pop.pem" --tls-key "$WORK/pop.key" >"$WORK/edge.out" 2>"$WORK/edge.log" &
EDGE=$!; PIDS+=($EDGE)
wait_listening "$WORK/edge.out" >/dev/null
measure segue 18280 "$EDGE"
LT_PROTO=h1-tls measure "segue HTTPS" 18284 "$EDGE"
kill "$EDGE"; wait "$EDGE" 2>/dev/null || true
rm -rf "$WORK/ssd"  # disk space for the next peer

# nginx: proxy_cache on disk, max_size = the SSD cap, with and without slice.
mkdir -p "$WORK/nc1" "$WORK/nc2"
nginx_conf 18270 "$ssd" 18281 18282 18285
taskset -c 0 "$NGINX" -c "$WORK/nginx.conf"
for _ in $(seq 1 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done
NGINX_PID=$(cat "$WORK/nginx.pid")
measure "nginx proxy_cache + lock" 18281 "$(pgrep -P "$NGINX_PID" | head -1)"
LT_PROTO=h1-tls measure "nginx proxy_cache + lock HTTPS" 18285 "$(pgrep -P "$NGINX_PID" | head -1)"
measure "nginx slice 1m" 18282 "$(pgrep -P "$NGINX_PID" | head -1)"
kill -QUIT "$NGINX_PID"
for _ in $(seq 1 100); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
rm -rf "$WORK/nc1" "$WORK/nc2"
echo
echo "(byte hit ratio of the measured run, after a warm-up run of the same length; nginx's RSS excludes its cache, which is on disk and in the page cache)"
echo

[ -n "${SKIP_RECOVERY:-}" ] && exit 0
# 2. Recovery.
echo "### 2. Warm-restart recovery"
echo
rm -rf "$WORK/ssd"
printf 'slice_kib = 16\nmem_cache_mb = %s\nssd_cache_dir = "%s"\nssd_cache_mb = %s\nadmin_listen = "127.0.0.1:18290"\nadmin_tokens = ["%s"]\n' \
  "$mem" "$WORK/ssd" "$ssd" "$TOKEN" >"$WORK/edge16.toml"
start16() { # sets EDGE and STARTED_MS; log in $WORK/edge16.log
  : >"$WORK/edge16.out"
  RUST_LOG=info taskset -c 0 "$BIN" edge --config "$WORK/edge16.toml" --listen 127.0.0.1:18283 --upstream http://127.0.0.1:18270 >"$WORK/edge16.out" 2>"$WORK/edge16.log" &
  EDGE=$!; PIDS+=($EDGE)
  STARTED_MS=$(wait_listening "$WORK/edge16.out")
}
start16
paths_json=$(python3 -c "import json; print(json.dumps({'paths': open('$WORK/paths.txt').read().split()}))")
job=$(curl -s -H "Authorization: Bearer $TOKEN" -d "$paths_json" http://127.0.0.1:18290/admin/prewarm | field 'r["id"]')
t0=$(date +%s)
while :; do
  st=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18290/admin/prewarm/$job")
  state=$(echo "$st" | field 'r["state"]')
  [ "$state" != running ] && break
  log "pre-warm: $(echo "$st" | field '"%d/%d objects, %d MB" % (r["done"], r["total"], r["bytes"] // 1000000)')"
  sleep 5
done
log "pre-warm $state in $(( $(date +%s) - t0 )) s"
written=$(curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18290/metrics | awk '$1 == "edge_ssd_written_bytes" {printf "%.0f", $2}')
slices=$(( written / 16400 ))
kill "$EDGE"; wait "$EDGE" 2>/dev/null || true
start16; graceful=$STARTED_MS
recovered_ms=$(grep -o 'took_ms=[0-9]*' "$WORK/edge16.log" | head -1 | cut -d= -f2)
check=$(lt 18283 --paths-file "$WORK/paths.txt" --connections 8 --requests 2000)
before=$(origin_bytes)
lt 18283 --paths-file "$WORK/paths.txt" --connections 8 --requests 2000 >/dev/null
after=$(origin_bytes)
kill -9 "$EDGE"; wait "$EDGE" 2>/dev/null || true
start16; killed=$STARTED_MS
killed_recovered_ms=$(grep -o 'took_ms=[0-9]*' "$WORK/edge16.log" | head -1 | cut -d= -f2)
kill "$EDGE"; wait "$EDGE" 2>/dev/null || true
echo "About $slices slices of 16 KiB on the SSD ($((written / 1000000)) MB written by the pre-warm)."
echo
echo "| restart | start to serving (ms) | SSD index + journal recovery (ms) | per million slices (s, scaled) |"
echo "|---|---|---|---|"
echo "| after SIGTERM | $graceful | $recovered_ms | $(awk "BEGIN{printf \"%.1f\", $graceful/1000*1000000/$slices}") |"
echo "| after kill -9 | $killed | $killed_recovered_ms | $(awk "BEGIN{printf \"%.1f\", $killed/1000*1000000/$slices}") |"
echo
echo "After the graceful restart, 2,000 more 256 KiB range requests cost the origin $(((after - before) / 1000000)) MB ($(echo "$check" | field 'r["errors"]') errors in the first 2,000)."
