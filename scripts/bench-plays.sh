#!/usr/bin/env bash
# Play-event ingest, both paths, side by side with the bare databases on this machine:
#   1. segue embedded: app-api on SQLite (group commit, hash chain, counts), driven over
#      HTTP by `segue loadtest --scenario plays` (CONNS connections, BATCH events each).
#   2. segue at scale: app-api publishing to NATS JetStream, `segue plays consume`
#      applying to PostgreSQL; the API's ingest rate, then the rate at which the
#      consumer has applied everything (end to end).
#   peers: the same rows (same columns, same unique key and index) inserted straight
#   into SQLite by Python's sqlite3 (one transaction per batch, WAL, synchronous=FULL),
#   and into PostgreSQL by pgbench (one INSERT ... ON CONFLICT DO NOTHING of BATCH rows
#   per transaction, CONNS clients): no HTTP, no validation, no chain, no counts.
# Servers on core 0, load generators on core 1.
#
#   3. consumers: NATS JetStream with P partitions (P = 1, 2, 4): events published with
#      no consumer running, then `segue plays consume` (one worker per partition) drains
#      them into PostgreSQL; the drain rate per P.
# Event ids are UUIDv7 from the player's own generator; the embedded path and its peer
# are measured on an empty database, then again with PRELOAD events (1,000,000) in.
#
#   scripts/bench-plays.sh                 SECS=15 CONNS=16 BATCH=100
#   PATHS=embedded scripts/bench-plays.sh  only the embedded path and its peer
#   PATHS=consumers scripts/bench-plays.sh consumer scaling only
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SECS:-15}"
CONNS="${CONNS:-16}"
BATCH="${BATCH:-100}"
PATHS="${PATHS:-embedded nats consumers}"
PRELOAD="${PRELOAD:-1000000}"
want() { [[ " $PATHS " == *" $1 "* ]]; }
. scripts/bench-lib.sh
bench_setup plays
TOKEN=bench-admin-token-0123456789
echo "$TOKEN" >"$WORK/token"
wait_up() { for _ in $(seq 1 300); do curl -sf "http://$1/healthz" >/dev/null && return 0; sleep 0.1; done; log "$1 did not start"; exit 1; }

# Events: random 128-bit ids (clients' UUIDs), plays started up to ten minutes ago,
# 10,000 listeners, 100 tracks; the peers insert rows drawn the same way.
# 100 packaged tracks (manifests only: the app-api reads lengths from them).
python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
os.makedirs(f"{work}/store/manifest")
for i in range(100):
    cid = f"{i:064x}"
    m = {"version": 1, "content_id": cid, "source": {"sample_rate": 44100, "channels": 2, "samples": 44100 * 200},
         "loudness": {"integrated_lufs": -14.0, "true_peak_dbtp": -1.0}, "tiers": {}}
    json.dump(m, open(f"{work}/store/manifest/{cid}.json", "w"))
PY
"$BIN" origin --listen 127.0.0.1:18400 --data-dir "$WORK/store" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
wait_up 127.0.0.1:18400

catalog() { # app-api address -> comma-separated track ids
  local ids=()
  for i in $(seq 0 99); do
    ids+=("$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      --data-binary "{\"content_id\":\"$(printf '%064x' "$i")\",\"title\":\"T$i\",\"artists\":[\"A\"],\"album\":\"B\",\"track_number\":$((i + 1))}" \
      "http://$1/v1/admin/tracks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
  done
  (IFS=,; echo "${ids[*]}")
}
loadtest() { # address -> JSON report
  taskset -c 1 "$BIN" loadtest --scenario plays --target "http://$1" --token-file "$WORK/token" --track "$2" \
    --batch "$BATCH" --connections "$CONNS" --duration-secs "$SECS" --json
}

E_EPS=0; N_EPS=0; SQLITE_PEER=1; PG_EPS=1
# 1. Embedded (SQLite).
if want embedded; then
cat >"$WORK/embedded.toml" <<CONF
listen = "127.0.0.1:18401"
database = "sqlite://$WORK/embedded/app.db"
search_dir = "$WORK/embedded/search"
origin = "http://127.0.0.1:18400"
admin_tokens = ["$TOKEN"]
CONF
taskset -c 0 "$BIN" app-api --config "$WORK/embedded.toml" >"$WORK/embedded.log" 2>&1 &
PIDS+=($!)
wait_up 127.0.0.1:18401
TRACKS=$(catalog 127.0.0.1:18401)
log "embedded: ${SECS}s of $CONNS connections x $BATCH events"
loadtest 127.0.0.1:18401 "$TRACKS" >"$WORK/embedded.json"
log "embedded, empty database: $(field 'round(r["events_per_sec"])' <"$WORK/embedded.json") events/s"
seq_now() { curl -sf -H "Authorization: Bearer $TOKEN" "http://$1/v1/admin/plays/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])'; }
while [ "$(seq_now 127.0.0.1:18401)" -lt "$PRELOAD" ]; do
  log "preloading: $(seq_now 127.0.0.1:18401) of $PRELOAD events"
  SECS=10 loadtest 127.0.0.1:18401 "$TRACKS" >/dev/null
done
E_IN=$(seq_now 127.0.0.1:18401)
loadtest 127.0.0.1:18401 "$TRACKS" >"$WORK/embedded-full.json"
log "embedded, $E_IN events in: $(field 'round(r["events_per_sec"])' <"$WORK/embedded-full.json") events/s"
"$BIN" plays verify --config "$WORK/embedded.toml" >"$WORK/embedded-verify.txt"

# Peer for the embedded path: the same rows straight into SQLite.
log "peer: Python sqlite3, same rows, one transaction per batch"
SQLITE_PEERS=$(taskset -c 0 python3 - "$WORK/peer.db" "$BATCH" "$SECS" "$PRELOAD" <<'PY'
import random, sqlite3, sys, time
db, batch, secs, preload = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
c.execute("""CREATE TABLE play_events (seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, event_id TEXT NOT NULL,
  track_id TEXT NOT NULL, started_ms BIGINT NOT NULL, ms_played BIGINT NOT NULL, tier TEXT NOT NULL,
  country TEXT NOT NULL, device TEXT NOT NULL, skipped BIGINT NOT NULL, received_ms BIGINT NOT NULL,
  hash TEXT NOT NULL, UNIQUE (event_id, user_id))""")
c.execute("CREATE INDEX by_start ON play_events (started_ms)")
rng = random.Random(1)
def uuid7():
    # What the player's generator makes: 48 bits of Unix ms, version 7, random bits.
    ms = int(time.time() * 1000)
    return "%08x-%04x-7%03x-%04x-%012x" % (ms >> 16, ms & 0xFFFF, rng.getrandbits(12),
                                          0x8000 | rng.getrandbits(14), rng.getrandbits(48))
def insert(n):
    now = int(time.time() * 1000)
    rows = [(f"lt-user-{rng.randrange(10000)}", uuid7(), f"trk_{rng.randrange(100):012x}",
             now - rng.randrange(60000, 600000), rng.randrange(5000, 60000), "high", "SE", "loadtest", 0, now,
             "%064x" % rng.getrandbits(256)) for i in range(n)]
    c.execute("BEGIN")
    c.executemany("INSERT INTO play_events (user_id, event_id, track_id, started_ms, ms_played, tier, country, device, "
                  "skipped, received_ms, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows)
    c.execute("COMMIT")
def measure():
    n, t0 = 0, time.time()
    while time.time() - t0 < secs:
        insert(batch)
        n += batch
    return n / (time.time() - t0)
empty = measure()
while c.execute("SELECT COUNT(*) FROM play_events").fetchone()[0] < preload:
    insert(10000)
print(f"{empty:.0f} {measure():.0f}")
PY
)

SQLITE_PEER=${SQLITE_PEERS% *}
SQLITE_PEER_FULL=${SQLITE_PEERS#* }
E_EPS=$(field 'round(r["events_per_sec"])' <"$WORK/embedded.json")
E_FULL=$(field 'round(r["events_per_sec"])' <"$WORK/embedded-full.json")
E_P50=$(field 'r["latency_ms"]["p50"]' <"$WORK/embedded.json")
E_P99=$(field 'r["latency_ms"]["p99"]' <"$WORK/embedded.json")
fi

# 2. At scale: NATS JetStream + PostgreSQL.
if want nats; then
start_postgres 18403
"${PSQL[@]}" -c "CREATE DATABASE plays"
mkdir -p "$WORK/nats"
taskset -c 0 nats-server -a 127.0.0.1 -p 18404 -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/nats.toml" <<CONF
listen = "127.0.0.1:18402"
database = "postgres://bench@127.0.0.1:18403/plays"
search_dir = "$WORK/nats-search"
origin = "http://127.0.0.1:18400"
admin_tokens = ["$TOKEN"]
[plays]
log = "nats"
[plays.nats]
url = "nats://127.0.0.1:18404"
consumer_listen = "127.0.0.1:18405"
CONF
sleep 0.5
taskset -c 0 "$BIN" app-api --config "$WORK/nats.toml" >"$WORK/nats-app.log" 2>&1 &
PIDS+=($!)
wait_up 127.0.0.1:18402
taskset -c 0 "$BIN" plays consume --config "$WORK/nats.toml" >"$WORK/consumer.log" 2>&1 &
PIDS+=($!)
wait_up 127.0.0.1:18405
TRACKS=$(catalog 127.0.0.1:18402)
log "nats: ${SECS}s of $CONNS connections x $BATCH events"
START=$(date +%s%N)
loadtest 127.0.0.1:18402 "$TRACKS" >"$WORK/nats.json"
log "waiting for the consumer to apply everything"
status() { curl -sf -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18402/v1/admin/plays/status; }
for _ in $(seq 1 6000); do
  [ "$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["lag"]["events"])')" = 0 ] && break
  sleep 0.1
done
DRAIN_S=$(python3 -c "print(($(date +%s%N) - $START) / 1e9)")
APPLIED=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')

# Peer for the scale path: the same rows straight into PostgreSQL with pgbench.
log "peer: pgbench, same rows, $BATCH per transaction, $CONNS clients"
"${PSQL[@]}" -d plays -c "CREATE TABLE peer_events (seq bigserial PRIMARY KEY, user_id text NOT NULL,
  event_id text NOT NULL, track_id text NOT NULL, started_ms bigint NOT NULL, ms_played bigint NOT NULL,
  tier text NOT NULL, country text NOT NULL, device text NOT NULL, skipped bigint NOT NULL,
  received_ms bigint NOT NULL, hash text NOT NULL, UNIQUE (event_id, user_id));
  CREATE INDEX ON peer_events (started_ms);"
cat >"$WORK/peer.sql" <<SQL
INSERT INTO peer_events (user_id, event_id, track_id, started_ms, ms_played, tier, country, device, skipped, received_ms, hash)
SELECT 'lt-user-' || (random() * 10000)::int, md5(random()::text), 'trk_' || (random() * 100)::int,
  (extract(epoch from now()) * 1000)::bigint - (random() * 540000)::bigint - 60000, (random() * 55000)::bigint + 5000, 'high', 'SE', 'loadtest', 0,
  1764000000000, md5(random()::text) || md5(random()::text)
FROM generate_series(1, $BATCH) ON CONFLICT DO NOTHING;
SQL
(cd "$WORK" && taskset -c 1 pgbench -h 127.0.0.1 -p 18403 -U bench -n -c "$CONNS" -j 1 -T "$SECS" -f peer.sql plays >pgbench.txt 2>&1)
PG_TPS=$(awk '/^tps/ {print $3; exit}' "$WORK/pgbench.txt")
PG_EPS=$(python3 -c "print(round($PG_TPS * $BATCH))")
PG_LAT=$(awk '/latency average/ {print $4; exit}' "$WORK/pgbench.txt")

N_EPS=$(field 'round(r["events_per_sec"])' <"$WORK/nats.json")
N_P50=$(field 'r["latency_ms"]["p50"]' <"$WORK/nats.json")
N_P99=$(field 'r["latency_ms"]["p99"]' <"$WORK/nats.json")
N_E2E=$(python3 -c "print(round($APPLIED / $DRAIN_S))")
fi

# 3. Consumer scaling: P partitions, one consumer worker each, draining a backlog.
declare -A DRAIN
if want consumers; then
want nats || { start_postgres 18403; mkdir -p "$WORK/nats"; taskset -c 0 nats-server -a 127.0.0.1 -p 18404 -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 & PIDS+=($!); sleep 0.5; }
for P in 1 2 4; do
  "${PSQL[@]}" -c "CREATE DATABASE scale$P"
  cat >"$WORK/scale$P.toml" <<CONF
listen = "127.0.0.1:18406"
database = "postgres://bench@127.0.0.1:18403/scale$P"
search_dir = "$WORK/scale$P-search"
origin = "http://127.0.0.1:18400"
admin_tokens = ["$TOKEN"]
[plays]
log = "nats"
[plays.nats]
url = "nats://127.0.0.1:18404"
stream = "SCALE$P"
subject = "segue.scale$P"
consumer = "scale$P"
partitions = $P
consumer_listen = "127.0.0.1:18407"
consumer_batch = 500
CONF
  taskset -c 0 "$BIN" app-api --config "$WORK/scale$P.toml" >"$WORK/scale$P-app.log" 2>&1 &
  APP=$!
  wait_up 127.0.0.1:18406
  TRACKS=$(catalog 127.0.0.1:18406)
  log "consumers: P=$P: publishing a backlog (${SECS}s) with no consumer running"
  loadtest 127.0.0.1:18406 "$TRACKS" >"$WORK/scale$P.json"
  BACKLOG=$(curl -sf -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18406/v1/admin/plays/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["lag"]["events"])')
  START=$(date +%s%N)
  "$BIN" plays consume --config "$WORK/scale$P.toml" >"$WORK/scale$P-consumer.log" 2>&1 &
  CONSUMER=$!
  for _ in $(seq 1 12000); do
    [ "$(curl -sf -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18406/v1/admin/plays/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["lag"]["events"])')" = 0 ] && break
    sleep 0.05
  done
  SECS_DRAIN=$(python3 -c "print(($(date +%s%N) - $START) / 1e9)")
  DRAIN[$P]="$BACKLOG $(python3 -c "print(round($BACKLOG / $SECS_DRAIN))")"
  log "consumers: P=$P: $BACKLOG events drained in ${SECS_DRAIN}s"
  kill "$CONSUMER" "$APP"; wait "$CONSUMER" "$APP" 2>/dev/null || true
done
fi

echo "## Play-event ingest ($(date -u +%Y-%m-%d), ${SECS}s, $CONNS connections x $BATCH events per request)"
echo
echo "| path | events/s | batch p50 ms | batch p99 ms | vs its bare database |"
echo "|---|---|---|---|---|"
want embedded && echo "| segue embedded (HTTP, SQLite, chain + counts), empty database | $E_EPS | $E_P50 | $E_P99 | $(python3 -c "print(f'{$E_EPS / $SQLITE_PEER:.2f}x')") |"
want embedded && echo "| bare SQLite (Python sqlite3, one txn per batch), empty | $SQLITE_PEER | | | 1x |"
want embedded && echo "| segue embedded, $E_IN events in | $E_FULL | $(field 'r["latency_ms"]["p50"]' <"$WORK/embedded-full.json") | $(field 'r["latency_ms"]["p99"]' <"$WORK/embedded-full.json") | $(python3 -c "print(f'{$E_FULL / $SQLITE_PEER_FULL:.2f}x')") |"
want embedded && echo "| bare SQLite, $PRELOAD rows in | $SQLITE_PEER_FULL | | | 1x |"
want nats && echo "| segue at scale: acknowledged by JetStream | $N_EPS | $N_P50 | $N_P99 | $(python3 -c "print(f'{$N_EPS / $PG_EPS:.2f}x')") |"
want nats && echo "| segue at scale: applied to PostgreSQL, end to end ($APPLIED events in ${DRAIN_S}s) | $N_E2E | | | $(python3 -c "print(f'{$N_E2E / $PG_EPS:.2f}x')") |"
want nats && echo "| bare PostgreSQL (pgbench, INSERT of $BATCH rows per txn) | $PG_EPS | ${PG_LAT} (avg) | | 1x |"
want embedded && echo && echo "verify after the embedded run: $(cat "$WORK/embedded-verify.txt")"
if want consumers; then
  echo
  echo "| partitions = consumers | backlog events | drained events/s | vs 1 |"
  echo "|---|---|---|---|"
  for P in 1 2 4; do
    set -- ${DRAIN[$P]}
    echo "| $P | $1 | $2 | $(python3 -c "print(f'{$2 / ${DRAIN[1]#* }:.2f}x')") |"
  done
fi
true
