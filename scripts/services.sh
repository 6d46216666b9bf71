#!/usr/bin/env bash
# Start (or stop) the real engines the "at scale" tests talk to, on 127.0.0.1 only.
#
#   scripts/services.sh start   install what is missing, start, write $SEGUE_SERVICES_DIR/env
#   scripts/services.sh stop    stop what `start` started
#
# The env file holds `export NAME=value` lines the tests read:
#   SEGUE_TEST_S3_ENDPOINT   an S3-compatible server (moto in server mode)
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
    echo "$DIR/env"
    ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
