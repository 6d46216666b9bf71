#!/usr/bin/env bash
# Edge protocols vs nginx, side by side on this machine: hot 256 KiB ranges over
# HTTP/1.1+TLS, HTTP/2 and HTTP/3 from the segue edge, and over HTTP/1.1+TLS and HTTP/2
# from nginx (proxy_cache + lock, the same certificate, ciphers negotiated by default:
# TLS 1.3 AES-256-GCM for both). Debian's nginx has no HTTP/3 module, so the HTTP/3 peer
# is Caddy (Debian's caddy, `file_server` on the same files, the same certificate, all
# three protocols). Servers are pinned to core 0; the load generator (segue loadtest,
# which does the client half of every TLS record) and the origin to core 1.
#
#   scripts/bench-protocols.sh                 TRACKS=200 SECS=10 by default
#   CONNS=64 STREAMS=8 scripts/bench-protocols.sh
#   ROWS="segue-h2 nginx-h2" scripts/bench-protocols.sh      only these rows
#   ROWS="segue-h3 caddy-h3" scripts/bench-protocols.sh      HTTP/3 against Caddy's
# Row "h2-256k": HTTP/2 with the client accepting 256 KiB DATA frames (--h2-max-frame-kib;
# browsers accept 16 KiB, the default of the "h2" rows).
#
# HTTP/1.1 rows use CONNS connections; HTTP/2 and HTTP/3 rows use CONNS/STREAMS
# connections carrying STREAMS concurrent streams each, so every row has CONNS requests
# in flight. "server CPU" is the server process's CPU time over the run (100% = its one
# core busy); "client CPU" the load generator's, which includes its startup and probes.
set -euo pipefail
cd "$(dirname "$0")/.."
TRACKS="${TRACKS:-200}"
SECS="${SECS:-10}"
CONNS="${CONNS:-64}"
STREAMS="${STREAMS:-8}"
. scripts/bench-lib.sh
bench_setup protocols
need_nginx
command -v caddy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq caddy; }

make_catalog "$TRACKS"
chmod -R a+rX "$WORK"
log "catalog: $TRACKS objects, $((total / 1000000)) MB"

# A CA and a certificate for pop.segue.test (P-256, like most CDN certificates).
make_cert

RUST_LOG=warn taskset -c 1 "$BIN" origin --listen 127.0.0.1:18270 --data-dir "$WORK/data" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
cap=$((total / 1000000 + 1024))
RUST_LOG=warn taskset -c 0 "$BIN" edge --listen 127.0.0.1:18280 --upstream http://127.0.0.1:18270 \
  --mem-cache-mb "$cap" --tls-listen 127.0.0.1:18243 --h3-listen 127.0.0.1:18243 \
  --tls-cert "$WORK/pop.pem" --tls-key "$WORK/pop.key" >"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
PIDS+=($EDGE_PID)

mkdir -p "$WORK/nc1"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  proxy_http_version 1.1;
  upstream origin { server 127.0.0.1:18270; keepalive 64; }
  proxy_cache_path $WORK/nc1 levels=1:2 keys_zone=whole:64m max_size=${cap}m inactive=1d use_temp_path=off;
  server {
    listen 127.0.0.1:18281;
    listen 127.0.0.1:18244 ssl http2;
    ssl_certificate $WORK/pop.pem;
    ssl_certificate_key $WORK/pop.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://origin;
      proxy_set_header Connection "";
      proxy_cache whole;
      proxy_cache_lock on;
      proxy_cache_valid 200 206 1d;
    }
  }
}
CONF
taskset -c 0 "$NGINX" -c "$WORK/nginx.conf"
cat >"$WORK/Caddyfile" <<CONF
{
	admin off
	auto_https off
	servers {
		protocols h1 h2 h3
	}
}
https://pop.segue.test:18245 {
	bind 127.0.0.1
	tls $WORK/pop.pem $WORK/pop.key
	uri strip_prefix /a
	root * $WORK/data/audio
	file_server
}
CONF
XDG_DATA_HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" taskset -c 0 caddy run --config "$WORK/Caddyfile" \
  --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
CADDY_PID=$!
PIDS+=($CADDY_PID)
for port in 18270 18280 18281; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" -o /dev/null && break; curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)

# Hot: every object fetched whole through each server once (plain HTTP), then the mix once.
for port in 18280 18281; do
  sed "s|^|http://127.0.0.1:$port|" "$WORK/paths.txt" | xargs -P 8 -I{} curl -sf -o /dev/null {}
done

TIMEFORMAT='%U %S'
run() { # port protocol connections streams (protocol h2-256k: h2, client accepting 256 KiB frames)
  local proto=$2 frames=()
  [ "$2" = h2-256k ] && proto=h2 frames=(--h2-max-frame-kib 256)
  LT_PROTO=$proto lt "$1" "${frames[@]}" --connections "$3" --streams "$4" --paths-file "$WORK/paths.txt" \
    --duration-secs "$SECS"
}

echo "## Edge protocols vs nginx ($(date -u +%Y-%m-%d), TRACKS=$TRACKS, SECS=$SECS, $CONNS requests in flight)"
echo
echo "| server | protocol | connections x streams | req/s | MB/s | p50 ms | p99 ms | errors | server CPU | client CPU |"
echo "|---|---|---|---|---|---|---|---|---|---|"
declare -A RPS
h2conns=$((CONNS / STREAMS))
for row in "segue 18243 h1-tls $CONNS 1" "segue 18243 h2 $h2conns $STREAMS" "segue 18243 h2-256k $h2conns $STREAMS" \
  "segue 18243 h3 $h2conns $STREAMS" \
  "nginx 18244 h1-tls $CONNS 1" "nginx 18244 h2 $h2conns $STREAMS" "caddy 18245 h2 $h2conns $STREAMS" \
  "caddy 18245 h3 $h2conns $STREAMS" "nginx 18244 h2-256k $h2conns $STREAMS"; do
  read -r server port proto conns streams <<<"$row"
  [[ " ${ROWS:-segue-h1-tls segue-h2 segue-h2-256k segue-h3 nginx-h1-tls nginx-h2 caddy-h3} " == *" $server-$proto "* ]] || continue
  run "$port" "$proto" "$conns" "$streams" >/dev/null # warm-up: connections, TLS session, caches
  case $server in segue) pid=$EDGE_PID ;; caddy) pid=$CADDY_PID ;; *) pid=$NGINX_WORKER ;; esac
  t0=$(cpu_ticks "$pid")
  { time run "$port" "$proto" "$conns" "$streams" >"$WORK/run.json"; } 2>"$WORK/time.txt"
  t1=$(cpu_ticks "$pid")
  r=$(cat "$WORK/run.json")
  secs=$(echo "$r" | field 'r["seconds"]')
  server_cpu=$(awk -v a="$t0" -v b="$t1" -v s="$secs" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f%%", 100*(b-a)/hz/s}')
  client_cpu=$(awk -v s="$secs" '{printf "%.0f%%", 100*($1+$2)/s}' "$WORK/time.txt")
  RPS[$server-$proto]=$(echo "$r" | field 'r["requests_per_sec"]')
  echo "| $server | $proto | $conns x $streams | $(echo "$r" | field '"%.0f | %.0f | %.2f | %.2f | %d" % (r["requests_per_sec"], r["mb_per_sec"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"])') | $server_cpu | $client_cpu |"
done
echo
ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }
[ -n "${ROWS:-}" ] && exit 0
echo "segue h3 vs Caddy h3: $(ratio "${RPS[segue-h3]}" "${RPS[caddy-h3]}")x; segue h2 vs its h1-tls: $(ratio "${RPS[segue-h2]}" "${RPS[segue-h1-tls]}")x (256 KiB frames: $(ratio "${RPS[segue-h2-256k]}" "${RPS[segue-h1-tls]}")x); segue h3 vs its h2: $(ratio "${RPS[segue-h3]}" "${RPS[segue-h2]}")x"
echo "Ratios vs nginx HTTP/2: segue h2 $(ratio "${RPS[segue-h2]}" "${RPS[nginx-h2]}")x, segue h3 $(ratio "${RPS[segue-h3]}" "${RPS[nginx-h2]}")x, segue h1-tls $(ratio "${RPS[segue-h1-tls]}" "${RPS[nginx-h2]}")x; segue h1-tls vs nginx h1-tls $(ratio "${RPS[segue-h1-tls]}" "${RPS[nginx-h1-tls]}")x"
