# Shared by the bench-*.sh scripts (sourced, not run): the release binary, a work folder
# cleaned up on exit, the peers (nginx, a throwaway PostgreSQL), the Ogg-sized catalog,
# the nginx configuration the edge benchmarks compare against, and small helpers.
#
#   bench_setup NAME            sets BIN (a release build, or $SEGUE_BIN), WORK, PIDS;
#                               defines log; traps cleanup
#   need_oggenc                 installs vorbis-tools and ffmpeg if missing
#   music_master OUT            the packaging benchmarks' 3.5-minute music-like master
#   need_nginx                  installs nginx-light if missing; sets NGINX
#   need_varnish                installs varnish if missing; sets VARNISHD
#   start_varnish PORT ORIGIN_PORT CAP_MB
#                               varnishd -s malloc,CAP_MB in front of the origin, pinned to
#                               core 0; sets VARNISH_PID (the manager; its child serves)
#   need_ats                    installs trafficserver if missing
#   start_ats PORT ORIGIN_PORT CAP_MB
#                               Apache Traffic Server in front of the origin: a RAM cache of
#                               CAP_MB over a disk cache in $WORK/ats, one event thread,
#                               pinned to core 0; sets ATS_PID
#   cpu_ticks PID...            CPU time of those processes and their children so far,
#                               in clock ticks (1/100 s)
#   start_postgres PORT [-c k=v ...]
#                               a throwaway cluster in $WORK/pg on 127.0.0.1:PORT, pinned to
#                               core 0, user bench, trust auth; sets PSQL (psql as bench);
#                               stopped by the cleanup
#   make_cert                   a throwaway CA ($WORK/ca.pem) and a P-256 certificate for
#                               pop.segue.test and 127.0.0.1 ($WORK/pop.pem, $WORK/pop.key)
#   lt PORT ARGS...             segue loadtest on core 1 against 127.0.0.1:PORT, JSON out;
#                               with LT_PROTO=h1-tls|h2|h3 over that protocol with TLS to
#                               pop.segue.test (make_cert's CA)
#   rss_kinds PID               "anon+shmem file" resident MB of a process now (the
#                               memory it owns, and file pages it has mapped)
#   make_catalog N              N objects of 0.6-8.7 MB under $WORK/data; sets total;
#                               writes $WORK/paths.txt (most popular first)
#   nginx_conf ORIGIN_PORT CAP_MB LOCK_PORT SLICE_PORT [TLS_PORT]
#                               writes $WORK/nginx.conf: proxy_cache + lock on LOCK_PORT,
#                               slice 1m on SLICE_PORT, both on disk capped at CAP_MB; with
#                               TLS_PORT, the proxy_cache + lock cache over HTTPS there too
#                               (make_cert's certificate)

bench_setup() {
  # SEGUE_BIN benches a given binary (say, the release before a change) instead of a
  # release build of this checkout.
  if [ -n "${SEGUE_BIN:-}" ]; then
    BIN="$(realpath "$SEGUE_BIN")"
  else
    cargo build --release --bin segue >&2
    BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/segue"
  fi
  WORK=$(mktemp -d "/tmp/segue-$1-bench.XXXXXX")
  PIDS=()
  BENCH_NAME=$1
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # Let them exit before their folders go (segue up writes in $WORK until it stops).
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  [ -n "${PGBIN:-}" ] && [ -d "$WORK/pg" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}

need_oggenc() {
  command -v oggenc >/dev/null && command -v ffmpeg >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq vorbis-tools ffmpeg
  }
}

# music_master OUT: 3.5 minutes of 44.1 kHz stereo music-like audio (tones with vibrato
# and tremolo over decorrelated pink noise), the packaging benchmarks' master.
music_master() {
  ffmpeg -v error -filter_complex "
    anoisesrc=c=pink:a=0.18:d=210:r=44100:seed=1[nl];
    anoisesrc=c=pink:a=0.18:d=210:r=44100:seed=2[nr];
    [nl][nr]amerge=inputs=2[noise];
    aevalsrc='0.25*sin(2*PI*220*t+2*sin(2*PI*5*t))*(1+0.5*sin(2*PI*0.5*t))+0.15*sin(2*PI*660*t)|0.25*sin(2*PI*277*t+2*sin(2*PI*4*t))+0.15*sin(2*PI*880*t)*(1+0.5*sin(2*PI*2*t))':s=44100:d=210[tones];
    [noise][tones]amix=inputs=2:normalize=0[out]" -map "[out]" -c:a pcm_s16le "$1"
}

need_nginx() {
  command -v nginx >/dev/null || command -v /usr/sbin/nginx >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
  }
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

need_varnish() {
  command -v varnishd >/dev/null || command -v /usr/sbin/varnishd >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq varnish
  }
  VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)
}

need_ats() {
  command -v traffic_server >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq trafficserver
  }
}

start_ats() {
  local a="$WORK/ats"
  rm -rf "$a"
  mkdir -p "$a/etc" "$a/cache" "$a/log" "$a/run" "$a/var"
  cp -r /etc/trafficserver/. "$a/etc/"
  # A layout of our own, so nothing under /etc or /var is touched.
  cat >"$a/runroot.yaml" <<YAML
prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/sbin
sysconfdir: $a/etc
datadir: $a/cache
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: /usr/lib/trafficserver/modules
localstatedir: $a/var
runtimedir: $a/run
logdir: $a/log
cachedir: $a/cache
YAML
  echo "$a/cache $(( $3 * 2 + 256 ))M" >"$a/etc/storage.config"
  echo "map / http://127.0.0.1:$2/" >"$a/etc/remap.config"
  # Later lines win over the packaged defaults above them. RAM cache = the cap, and no
  # object too big for it (the default cutoff is 4 MB; the catalog goes to 8.7 MB).
  cat >>"$a/etc/records.config" <<CONF
CONFIG proxy.config.http.server_ports STRING $1:ipv4:ip-in=127.0.0.1
CONFIG proxy.config.cache.ram_cache.size INT $(( $3 * 1000000 ))
CONFIG proxy.config.cache.ram_cache_cutoff INT 16000000
CONFIG proxy.config.admin.user_id STRING #-1
CONFIG proxy.config.exec_thread.autoconfig INT 0
CONFIG proxy.config.exec_thread.limit INT 1
CONFIG proxy.config.http.cache.required_headers INT 0
CONFIG proxy.config.diags.logfile.filename STRING $a/log/diags.log
CONFIG proxy.config.http.insert_response_via_str INT 0
CONF
  (cd "$a" && exec taskset -c 0 traffic_server --run-root="$a/runroot.yaml" >"$a/ts.out" 2>&1) &
  ATS_PID=$!
  PIDS+=($ATS_PID)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && break; sleep 0.1; done
}

start_varnish() {
  mkdir -p "$WORK/varnish"
  # The default VCL, plus X-Cache (HIT when the object came from the cache).
  cat >"$WORK/varnish.vcl" <<VCL
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$2"; }
sub vcl_deliver { if (obj.hits > 0) { set resp.http.X-Cache = "HIT"; } else { set resp.http.X-Cache = "MISS"; } }
VCL
  taskset -c 0 "$VARNISHD" -F -j none -n "$WORK/varnish" -a "127.0.0.1:$1" -f "$WORK/varnish.vcl" \
    -s "malloc,${3}m" -p thread_pool_min=64 >"$WORK/varnish.log" 2>&1 &
  VARNISH_PID=$!
  PIDS+=($VARNISH_PID)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && break; sleep 0.1; done
}

cpu_ticks() {
  local total=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q"; done); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

start_postgres() {
  local port=$1
  shift
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$WORK/pg" "$WORK/pgsock"
  chown postgres "$WORK/pg" "$WORK/pgsock"; chmod 755 "$WORK"
  runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -U bench -A trust >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/pg.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $WORK/pgsock $*" start >/dev/null
  taskset -cp 0 "$(head -1 "$WORK/pg/postmaster.pid")" >/dev/null
  PSQL=(psql -h 127.0.0.1 -p "$port" -U bench -d postgres -q -v ON_ERROR_STOP=1)
}

log() { echo "bench-$BENCH_NAME: $*" >&2; }
rss_peak() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kinds() { awk '/RssAnon|RssShmem/ {a += $2} /RssFile/ {f = $2} END {printf "%d %d", a / 1024, f / 1024}' "/proc/$1/status"; }
lt() {
  if [ -n "${LT_PROTO:-}" ]; then
    taskset -c 1 "$BIN" loadtest --target "https://127.0.0.1:$1" --protocol "$LT_PROTO" --server-name pop.segue.test \
      --ca "$WORK/ca.pem" --json "${@:2}"
  else
    taskset -c 1 "$BIN" loadtest --target "http://127.0.0.1:$1" --json "${@:2}"
  fi
}

make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=pop.segue.test" \
    -keyout "$WORK/pop.key" -out "$WORK/pop.csr" 2>/dev/null
  printf 'subjectAltName=DNS:pop.segue.test,IP:127.0.0.1\n' >"$WORK/san.ext"
  openssl x509 -req -in "$WORK/pop.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
    -extfile "$WORK/san.ext" -out "$WORK/pop.pem" 2>/dev/null
}
field() { python3 -c "import json,sys; r=json.load(sys.stdin); print($1)"; }

make_catalog() {
  log "writing $1 objects"
  mkdir -p "$WORK/data/audio"
  : >"$WORK/paths.txt"
  total=0
  local i cid size
  for i in $(seq 1 "$1"); do
    cid=$(printf '%064x' "$i")
    size=$(( 600000 + (i * 7919 % 8100) * 1000 ))
    mkdir -p "$WORK/data/audio/$cid"
    head -c "$size" /dev/urandom >"$WORK/data/audio/$cid/high.ogg"
    echo "/a/$cid/high.ogg" >>"$WORK/paths.txt"
    total=$((total + size))
  done
}

nginx_conf() {
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
  add_header X-Cache \$upstream_cache_status always;
  upstream origin { server 127.0.0.1:$1; keepalive 64; }
  proxy_cache_path $WORK/nc1 levels=1:2 keys_zone=whole:64m max_size=${2}m inactive=1d use_temp_path=off;
  proxy_cache_path $WORK/nc2 levels=1:2 keys_zone=sliced:64m max_size=${2}m inactive=1d use_temp_path=off;
  server {
    listen 127.0.0.1:$3;
    $([ -n "${5:-}" ] && printf 'listen 127.0.0.1:%s ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;' "$5" "$WORK/pop.pem" "$WORK/pop.key")
    location / {
      proxy_pass http://origin;
      proxy_set_header Connection "";
      proxy_cache whole;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 60s;
      proxy_cache_valid 200 206 1d;
    }
  }
  server {
    listen 127.0.0.1:$4;
    location / {
      slice 1m;
      proxy_pass http://origin;
      proxy_set_header Connection "";
      proxy_set_header Range \$slice_range;
      proxy_cache sliced;
      proxy_cache_key \$uri\$slice_range;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 60s;
      proxy_cache_valid 200 206 1d;
    }
  }
}
CONF
}
