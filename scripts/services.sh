#!/usr/bin/env bash
# Start (or stop) the real engines the "at scale" tests talk to, on 127.0.0.1 only.
#
#   scripts/services.sh start   install what is missing, start, write $SEGUE_SERVICES_DIR/env
#   scripts/services.sh stop    stop what `start` started
#
# The env file holds `export NAME=value` lines the tests read:
#   SEGUE_TEST_S3_ENDPOINT   an S3-compatible server (moto in server mode)
#   SEGUE_TEST_POSTGRES_URL  a PostgreSQL server (Debian's package) with an empty database
#   SEGUE_TEST_NATS_URL      a NATS server with JetStream (Debian's nats-server package)
set -euo pipefail

DIR="${SEGUE_SERVICES_DIR:-${TMPDIR:-/tmp}/segue-services}"
MOTO_VERSION="5.2.5" # 5.2.1 answers CompleteMultipartUpload with the wrong XML root

log() { printf 'services: %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url, name, pidfile
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    if ! kill -0 "$(cat "$3")" 2>/dev/null; then log "$2 exited; see $DIR/$2.log"; tail -20 "$DIR/$2.log" >&2; return 1; fi
    sleep 0.2
  done
  log "$2 did not answer at $1 within 20 s"; return 1
}

start_s3() {
  if ! python3 -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    log "installing moto[server]==$MOTO_VERSION from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
  fi
  local port; port=$(free_port)
  python3 -m moto.server -H 127.0.0.1 -p "$port" >"$DIR/moto.log" 2>&1 &
  echo $! >"$DIR/moto.pid"
  wait_http "http://127.0.0.1:$port/" moto "$DIR/moto.pid"
  echo "export SEGUE_TEST_S3_ENDPOINT=http://127.0.0.1:$port" >>"$DIR/env"
  log "S3 (moto $MOTO_VERSION) on 127.0.0.1:$port"
}

# PostgreSQL from Debian's package, in a throwaway cluster owned by the `postgres` user
# (the server refuses to run as root), listening on 127.0.0.1 only, trust auth.
start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    log "installing postgresql (Debian package)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    as=(runuser -u postgres --)
  fi
  local data="$DIR/pg" sock="$DIR/pg-sock" logs="$DIR/pg-log" port
  rm -rf "$data" "$sock" "$logs"
  mkdir -p "$data" "$sock" "$logs"
  chmod 755 "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$data" "$sock" "$logs"; fi
  "${as[@]}" "$bin/initdb" -D "$data" -U segue -A trust -E UTF8 >"$DIR/postgres-init.log" 2>&1 \
    || { log "initdb failed; see $DIR/postgres-init.log"; tail -20 "$DIR/postgres-init.log" >&2; return 1; }
  port=$(free_port)
  "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$logs/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $sock -c fsync=on" start >&2 \
    || { log "postgres did not start; see $logs/postgres.log"; tail -20 "$logs/postgres.log" >&2; return 1; }
  head -1 "$data/postmaster.pid" >"$DIR/postgres.pid"
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U segue segue_test >&2
  echo "export SEGUE_TEST_POSTGRES_URL=postgres://segue@127.0.0.1:$port/segue_test" >>"$DIR/env"
  log "PostgreSQL ($("$bin/postgres" --version | awk '{print $3}')) on 127.0.0.1:$port"
}

# NATS with JetStream from Debian's package, file storage under $DIR/nats.
start_nats() {
  if ! command -v nats-server >/dev/null; then
    log "installing nats-server (Debian package)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >&2
  fi
  local port; port=$(free_port)
  rm -rf "$DIR/nats"
  mkdir -p "$DIR/nats"
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$DIR/nats" >"$DIR/nats.log" 2>&1 &
  echo $! >"$DIR/nats.pid"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "export SEGUE_TEST_NATS_URL=nats://127.0.0.1:$port" >>"$DIR/env"
      log "NATS ($(nats-server --version | awk '{print $2}')) with JetStream on 127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$(cat "$DIR/nats.pid")" 2>/dev/null; then log "nats-server exited; see $DIR/nats.log"; tail -20 "$DIR/nats.log" >&2; return 1; fi
    sleep 0.1
  done
  log "nats-server did not listen on 127.0.0.1:$port within 10 s"; return 1
}

stop_all() {
  for pidfile in "$DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  rm -f "$DIR/env"
}

case "${1:-start}" in
  start)
    mkdir -p "$DIR"
    stop_all
    : >"$DIR/env"
    start_s3
    start_postgres
    start_nats
    echo "$DIR/env"
    ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
