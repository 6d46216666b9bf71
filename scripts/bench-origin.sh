#!/usr/bin/env bash
# Origin vs nginx (sendfile on), side by side on this machine, same files, same pinning:
# each server on core 0, the load generator (wrk) on core 1.
#
#   scripts/bench-origin.sh [SECONDS]     default 10 s per run
#
# Needs Debian's nginx and wrk (installed if missing). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
FILES=32
SIZE=$((4 * 1024 * 1024))

for p in nginx wrk; do
  command -v "$p" >/dev/null || command -v "/usr/sbin/$p" >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk
  }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --bin segue >&2
BIN="${CARGO_TARGET_DIR:-target}/release/segue"

WORK=$(mktemp -d /tmp/segue-bench.XXXXXX)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data/audio"
paths=()
for i in $(seq 1 $FILES); do
  cid=$(printf '%064x' "$i")
  mkdir -p "$WORK/data/audio/$cid"
  head -c $SIZE /dev/urandom >"$WORK/data/audio/$cid/high.ogg"
  paths+=("\"/a/$cid/high.ogg\"")
done
# nginx workers run as an unprivileged user.
chmod -R a+rX "$WORK"
# Warm the page cache so both servers read from memory.
cat "$WORK"/data/audio/*/high.ogg >/dev/null

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18081;
    location /a/ { alias $WORK/data/audio/; }
  }
}
CONF
taskset -c 0 "$NGINX" -c "$WORK/nginx.conf"

RUST_LOG=warn taskset -c 0 "$BIN" origin --listen 127.0.0.1:18080 --data-dir "$WORK/data" >"$WORK/origin.log" 2>&1 &
echo $! >"$WORK/origin.pid"
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done

list=$(IFS=,; echo "${paths[*]}")
cat >"$WORK/range.lua" <<LUA
local paths = { $list }
local chunk = 262144
local slots = $SIZE / chunk
request = function()
  local off = math.random(0, slots - 1) * chunk
  return wrk.format("GET", paths[math.random(#paths)], { ["Range"] = "bytes=" .. off .. "-" .. (off + chunk - 1) })
end
LUA
cat >"$WORK/whole.lua" <<LUA
local paths = { $list }
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA

run() { # name port script conns
  local out
  out=$(taskset -c 1 wrk -t1 -c"$4" -d"${DUR}s" --latency -s "$WORK/$3" "http://127.0.0.1:$2" 2>&1)
  if grep -q "Non-2xx" <<<"$out"; then echo "bench: $1 answered errors:" >&2; echo "$out" >&2; exit 1; fi
  local rps mbs p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  mbs=$(awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v=v*1024} else {sub("MB","",v)}; print v}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$1|$rps|$mbs|$p50|$p99"
}

echo "| workload | server | req/s | MB/s | p50 | p99 |"
echo "|---|---|---|---|---|---|"
for wl in "range.lua:256 KiB ranges, 64 conns:64" "whole.lua:whole 4 MiB files, 16 conns:16"; do
  IFS=: read -r script label conns <<<"$wl"
  s=$(run segue 18080 "$script" "$conns")
  n=$(run nginx 18081 "$script" "$conns")
  IFS='|' read -r _ srps smbs sp50 sp99 <<<"$s"
  IFS='|' read -r _ nrps nmbs np50 np99 <<<"$n"
  echo "| $label | segue origin | $srps | $smbs | $sp50 | $sp99 |"
  echo "| $label | nginx | $nrps | $nmbs | $np50 | $np99 |"
  echo "| $label | **ratio segue/nginx** | **$(awk "BEGIN{printf \"%.2f\", $srps/$nrps}")×** | | | |"
done
