#!/usr/bin/env bash
# Edge vs nginx, Varnish and ATS, side by side on this machine: segue edge, nginx
# proxy_cache with proxy_cache_lock, nginx with `slice 1m`, Varnish (`-s malloc`) and
# Apache Traffic Server (RAM cache), each in front of the same segue origin,
# same files (Ogg-sized random objects), same byte cap, each server pinned to core 0 and
# the load generator (segue loadtest, one core) to core 1.
#
#   scripts/bench-edge.sh            TRACKS=1000 SECS=10 by default
#   TRACKS=300 SECS=5 scripts/bench-edge.sh
#   PEERS="segue ats" ONLY=2 scripts/bench-edge.sh     some peers, some scenarios
#
# Scenarios (issue "Edge POP core"):
#   1. hot 256 KiB ranges, 64 connections, Zipf 0.9 over the catalog
#   2. hot whole files, 16 connections, Zipf 0.9
#   3. 1,000 clients at once on one cold 8.4 MB object: upstream fetches, time vs one
#      direct fetch from the origin
#   4. catalog 10x the byte cap, Zipf 0.9, 256 KiB ranges: byte hit ratio, peak RSS
#      (not ATS: its RAM cache sits on a disk cache, which would hold more than the cap)
# Upstream traffic is read from the origin's own /metrics, the same way for every peer.
# Hot scenarios also report each server's CPU time over the measured run (utime + stime
# of its processes from /proc), as CPU per request and per GB served.
set -euo pipefail
cd "$(dirname "$0")/.."
TRACKS="${TRACKS:-1000}"
SECS="${SECS:-10}"
ONLY="${ONLY:-1234}"                    # which scenarios to run
EDGE_SLICE_KIB="${EDGE_SLICE_KIB:-256}"  # edge settings under test
EDGE_EVICTION="${EDGE_EVICTION:-tiny_lfu}"
# EDGE_TOML: more edge.toml lines, e.g. EDGE_TOML='read_ahead_slices = 0'.
. scripts/bench-lib.sh
bench_setup edge
need_nginx
[[ " ${PEERS:-varnish} " == *" varnish "* ]] && need_varnish
[[ " ${PEERS:-ats} " == *" ats "* ]] && need_ats

# The catalog: TRACKS objects of 0.6-8.7 MB (deterministic sizes), plus cold storm objects.
make_catalog "$TRACKS"
for name in cold0 cold1 cold2 cold3 cold4 cold5; do
  cid=$(printf '%s%060x' "c0de" "$(printf '%d' "'${name: -1}")")
  mkdir -p "$WORK/data/audio/$cid"
  head -c 8400000 /dev/urandom >"$WORK/data/audio/$cid/high.ogg"
  echo "/a/$cid/high.ogg" >"$WORK/$name.txt"
done
chmod -R a+rX "$WORK"
log "catalog: $TRACKS objects, $((total / 1000000)) MB"

# One read of the origin's counters: "requests bytes". Each read is itself one request,
# which `origin_delta` subtracts.
origin_counters() {
  curl -s http://127.0.0.1:18170/metrics | awk '$1 ~ /^origin_requests_total/ {r += $2} $1 ~ /^origin_body_bytes_total/ {b += $2} END {printf "%.0f %.0f", r, b}'
}
origin_delta() { # before-counters -> "requests MB" since then
  local now; now=$(origin_counters)
  read -r r0 b0 <<<"$1"; read -r r1 b1 <<<"$now"
  echo "$((r1 - r0 - 1)) $(((b1 - b0) / 1000000))"
}

# Origin (shared upstream), on core 1 with the load generator: it only works on misses.
RUST_LOG=warn taskset -c 1 "$BIN" origin --listen 127.0.0.1:18170 --data-dir "$WORK/data" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18170/healthz >/dev/null && break; sleep 0.1; done

start_peers() { # cap_mb
  local cap=$1
  printf 'slice_kib = %s\nmem_eviction = "%s"\n%s\n' "$EDGE_SLICE_KIB" "$EDGE_EVICTION" "${EDGE_TOML:-}" >"$WORK/edge.toml"
  RUST_LOG=warn taskset -c 0 "$BIN" edge --config "$WORK/edge.toml" --listen 127.0.0.1:18180 --upstream http://127.0.0.1:18170 --mem-cache-mb "$cap" >"$WORK/edge.log" 2>&1 &
  EDGE_PID=$!
  PIDS+=($EDGE_PID)
  mkdir -p "$WORK/nc1" "$WORK/nc2"
  nginx_conf 18170 "$cap" 18181 18182
  rm -f "$WORK/nginx.pid"
  taskset -c 0 "$NGINX" -c "$WORK/nginx.conf"
  for _ in $(seq 1 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done
  NGINX_PID=$(cat "$WORK/nginx.pid")
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18180/healthz >/dev/null && break; sleep 0.1; done
  VARNISH_PID=
  if [[ " ${PEERS[*]} " == *" varnish "* ]]; then start_varnish 18183 18170 "$cap"; fi
  ATS_PID=
  if [[ " ${PEERS[*]} " == *" ats "* && -z "${NO_ATS:-}" ]]; then start_ats 18184 18170 "$cap"; fi
}
stop_peers() {
  kill "$EDGE_PID" 2>/dev/null || true
  kill -QUIT "$NGINX_PID" 2>/dev/null || true
  [ -n "$VARNISH_PID" ] && kill "$VARNISH_PID" 2>/dev/null || true
  [ -n "$ATS_PID" ] && kill "$ATS_PID" 2>/dev/null || true
  # Wait until both are gone, so the next start is fresh (ports free, caches empty).
  for _ in $(seq 1 100); do
    kill -0 "$EDGE_PID" 2>/dev/null || kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  rm -rf "$WORK/nc1" "$WORK/nc2"
}

declare -A PORT=([segue]=18180 [nginx-lock]=18181 [nginx-slice]=18182 [varnish]=18183 [ats]=18184)
read -r -a PEERS <<<"${PEERS:-segue nginx-lock nginx-slice varnish ats}"
server_pid() { # peer -> the pids whose CPU is that server's
  case $1 in
    segue) echo "$EDGE_PID" ;;
    varnish) echo "$VARNISH_PID" ;;
    ats) echo "$ATS_PID" ;;
    *) echo "$NGINX_PID" ;;  # nginx-lock and nginx-slice share one worker
  esac
}
ratios() { # name of an array peer -> figure: "Ratio segue / PEER: N.NNx, ..." for each peer run
  local -n fig=$1
  local out="" p
  [ -n "${fig[segue]:-}" ] || return 0
  for p in "${PEERS[@]}"; do
    [ "$p" = segue ] && continue
    out+="${out:+, }segue / $p: $(awk "BEGIN{printf \"%.2f\", ${fig[segue]}/${fig[$p]}}")x"
  done
  echo "Ratio $out"
}
measured() { # peer loadtest-args... -> the loadtest JSON with "cpu_s" (server CPU seconds) added
  local p=$1 t0 t1 r
  shift
  t0=$(cpu_ticks $(server_pid "$p"))
  r=$(lt "${PORT[$p]}" "$@")
  t1=$(cpu_ticks $(server_pid "$p"))
  echo "$r" | python3 -c "import json,sys; r=json.load(sys.stdin); r['cpu_s']=($t1-$t0)/100; print(json.dumps(r))"
}

echo "## Edge vs nginx ($(date -u +%Y-%m-%d), TRACKS=$TRACKS, SECS=$SECS, edge slice_kib=$EDGE_SLICE_KIB mem_eviction=$EDGE_EVICTION)"
echo

# 1 and 2: hot. Cap holds the whole catalog; warm first with the same mix.
cap=$(( total / 1000000 + 1024 ))
if [[ "$ONLY" == *1* || "$ONLY" == *2* || "$ONLY" == *3* ]]; then
start_peers "$cap"
fi
if [[ "$ONLY" == *1* ]]; then
echo "### 1. Hot 256 KiB ranges, 64 connections, Zipf 0.9 (cap ${cap} MB)"
echo "| peer | req/s | MB/s | p50 ms | p99 ms | errors | server CPU s | CPU µs / request |"
echo "|---|---|---|---|---|---|---|---|"
declare -A RPS
for p in "${PEERS[@]}"; do
  # Hot means every byte cached: fetch every object whole once, then the mix once.
  sed "s|^|http://127.0.0.1:${PORT[$p]}|" "$WORK/paths.txt" | xargs -P 8 -I{} curl -sf -o /dev/null {}
  lt "${PORT[$p]}" --paths-file "$WORK/paths.txt" --connections 64 --duration-secs "$SECS" >/dev/null
  r=$(measured "$p" --paths-file "$WORK/paths.txt" --connections 64 --duration-secs "$SECS")
  RPS[$p]=$(echo "$r" | field 'r["requests_per_sec"]')
  echo "| $p | $(echo "$r" | field '"%.0f | %.0f | %.2f | %.2f | %d | %.2f | %.1f" % (r["requests_per_sec"], r["mb_per_sec"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"], r["cpu_s"], r["cpu_s"] * 1e6 / max(r["requests"], 1))') |"
done
echo
ratios RPS
echo
fi
if [[ "$ONLY" == *2* ]]; then
echo "### 2. Hot whole files, 16 connections, Zipf 0.9"
echo "| peer | req/s | MB/s | p50 ms | p99 ms | errors | server CPU s | CPU s / GB |"
echo "|---|---|---|---|---|---|---|---|"
declare -A MBS
for p in "${PEERS[@]}"; do
  lt "${PORT[$p]}" --paths-file "$WORK/paths.txt" --range-kib 0 --connections 16 --duration-secs "$SECS" >/dev/null
  r=$(measured "$p" --paths-file "$WORK/paths.txt" --range-kib 0 --connections 16 --duration-secs "$SECS")
  MBS[$p]=$(echo "$r" | field 'r["mb_per_sec"]')
  echo "| $p | $(echo "$r" | field '"%.0f | %.0f | %.2f | %.2f | %d | %.2f | %.3f" % (r["requests_per_sec"], r["mb_per_sec"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"], r["cpu_s"], r["cpu_s"] * 1e9 / max(r["bytes"], 1))') |"
done
echo
ratios MBS
echo

fi

# 3: cold storm.
if [[ "$ONLY" == *3* ]]; then
echo "### 3. 1,000 clients at once on one cold 8.4 MB object"
direct=$(lt 18170 --paths-file "$WORK/cold0.txt" --range-kib 0 --requests 1 --connections 1 | field 'r["latency_ms"]["max"]')
echo "One direct fetch of the whole object from the origin: ${direct} ms. Delivering 1,000"
echo "copies cannot finish in 1.5x that on any server (8.4 GB over loopback), so the column"
echo "that shows coalescing is the first byte: how long waiters wait for the one fetch."
echo
echo "| peer | first byte p50 / max (ms) | max first byte × direct fetch | all 1,000 complete (s) | origin requests | origin MB | errors |"
echo "|---|---|---|---|---|---|---|"
i=1
for p in "${PEERS[@]}"; do
  before=$(origin_counters)
  r=$(lt "${PORT[$p]}" --paths-file "$WORK/cold$i.txt" --range-kib 0 --storm --connections 1000)
  read -r reqs mb <<<"$(origin_delta "$before")"
  t50=$(echo "$r" | field 'r["ttfb_ms"]["p50"]'); tmax=$(echo "$r" | field 'r["ttfb_ms"]["max"]')
  secs=$(echo "$r" | field 'r["latency_ms"]["max"]/1000')
  echo "| $p | $(printf '%.1f / %.1f' "$t50" "$tmax") | $(awk "BEGIN{printf \"%.2f\", $tmax/$direct}") | $(printf '%.2f' "$secs") | $reqs | $mb | $(echo "$r" | field 'r["errors"]') |"
  i=$((i + 1))
done
echo
echo "(8.4 MB is $(( (8400000 + EDGE_SLICE_KIB * 1024 - 1) / (EDGE_SLICE_KIB * 1024) )) slices of ${EDGE_SLICE_KIB} KiB for segue, 9 of 1 MiB for nginx-slice.)"
echo
fi
if [[ "$ONLY" == *1* || "$ONLY" == *2* || "$ONLY" == *3* ]]; then
stop_peers
fi

# 4: catalog 10x the cap.
if [[ "$ONLY" == *4* ]]; then
cap=$(( total / 10000000 ))
NO_ATS=1 start_peers "$cap"
echo "### 4. Catalog ${total%??????} MB, cap ${cap} MB (10x), 256 KiB ranges, Zipf 0.9, 64 connections, $((SECS * 3)) s"
echo "| peer | cap MB | req/s | client MB | origin MB | byte hit ratio | request hit ratio | peak RSS MB | peak cache MB held |"
echo "|---|---|---|---|---|---|---|---|---|"
declare -A HELD=([segue]=0 [nginx-lock]=0 [nginx-slice]=0 [varnish]=0)
held_now() { # MB the peer holds right now: segue's cache gauge, nginx's cache directory
  case $1 in
    segue) curl -s http://127.0.0.1:18180/metrics | awk '$1 == "edge_cache_bytes{tier=\"mem\"}" {printf "%.0f", $2 / 1048576}' ;;
    nginx-lock) du -sm "$WORK/nc1" | cut -f1 ;;
    nginx-slice) du -sm "$WORK/nc2" | cut -f1 ;;
    varnish) echo "$2" ;;  # -s malloc is capped; its RSS column shows what it holds
  esac
}
run4() { # peer cap_mb
  local p=$1 before r origin_reqs origin_mb client_mb pid peak=0 sampler
  before=$(origin_counters)
  # nginx enforces max_size lazily (its cache manager), so sample what it really holds.
  ( m=0; while sleep 1; do h=$(held_now "$p" "$2"); [ "${h:-0}" -gt "$m" ] && m=$h && echo "$m" >"$WORK/held"; done ) &
  sampler=$!
  echo 0 >"$WORK/held"
  r=$(lt "${PORT[$p]}" --paths-file "$WORK/paths.txt" --connections 64 --duration-secs $((SECS * 3)) --trace-file "$WORK/trace-$p.txt")
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  peak=$(cat "$WORK/held"); HELD[$p]=$peak
  read -r origin_reqs origin_mb <<<"$(origin_delta "$before")"
  log "$p: origin requests $origin_reqs, origin MB $origin_mb"
  client_mb=$(echo "$r" | field 'int(r["bytes"]/1e6)')
  case $p in
    segue) pid=$EDGE_PID ;;
    varnish) pid=$(pgrep -P "$VARNISH_PID" | head -1) ;;
    *) pid=$(pgrep -P "$NGINX_PID" | head -1) ;;
  esac
  echo "| $p | $2 | $(echo "$r" | field '"%.0f" % r["requests_per_sec"]') | $client_mb | $origin_mb | $(awk "BEGIN{printf \"%.3f\", 1-$origin_mb/$client_mb}") | $(echo "$r" | field '"%.3f" % r["request_hit_ratio"]') | $(( $(rss_peak "$pid") / 1024 )) | $peak |"
}
for p in "${PEERS[@]}"; do [ "$p" = ats ] || run4 "$p" "$cap"; done
stop_peers
# The edge again, capped at the most bytes nginx-lock really held, for a like-for-like row.
if [[ " ${PEERS[*]} " == *" segue "* && ${HELD[nginx-lock]} -gt $cap ]]; then
  NO_ATS=1 start_peers "${HELD[nginx-lock]}"
  run4 segue "${HELD[nginx-lock]}"
  stop_peers
fi
echo
if [ -f "$WORK/trace-segue.txt" ]; then
  echo
  echo "The LRU reference on segue's own request trace at the same cap (scripts/lru-reference.py):"
  echo
  scripts/lru-reference.py "$WORK/trace-segue.txt" $((cap * 1048576)) $((EDGE_SLICE_KIB * 1024)) | sed 's/^/- /'
fi
echo
echo "(Request hit ratio: responses whose X-Cache says HIT, over all. nginx keeps its cache on disk, so its RSS excludes the cached bytes, which sit in the page cache; segue's RSS includes its memory tier. \"Peak cache MB held\": segue's cache gauge, nginx's cache directory, sampled each second.)"
fi
