#!/usr/bin/env bash
# Search vs PostgreSQL pg_trgm, side by side on this machine: a synthetic catalog of
# TRACKS tracks (default 1,000,000) loaded into the app-api's SQLite database, searched
# through the app-api's HTTP API (tantivy) with wrk, and the same titles in PostgreSQL
# with a trigram GIN index (`title % q ORDER BY similarity`), searched with pgbench.
# Queries: QUERIES (1,000) drawn from the catalog, a third typed exactly, a third as
# prefixes (3-6 letters, as the user types), a third with two letters swapped.
# Servers on core 0, load generators on core 1; CONNS concurrent clients each.
#
#   scripts/bench-search.sh                 TRACKS=1000000 SECS=10 CONNS=8
set -euo pipefail
cd "$(dirname "$0")/.."
TRACKS="${TRACKS:-1000000}"
QUERIES="${QUERIES:-1000}"
SECS="${SECS:-10}"
CONNS="${CONNS:-8}"
. scripts/bench-lib.sh
bench_setup search

# The catalog and the queries (deterministic), as TSV for both engines.
log "generating $TRACKS tracks and $QUERIES queries"
python3 - "$WORK" "$TRACKS" "$QUERIES" <<'PY'
import random, sys
work, n, nq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
syl = ["ka","lo","mi","ra","ne","so","tu","vi","da","pe","lu","mo","si","ta","re","no","ba","fi","go","ze","an","el","or","un","is"]
def word(): return "".join(rng.choice(syl) for _ in range(rng.randint(2, 4)))
def title(): return " ".join(word().capitalize() for _ in range(rng.randint(1, 4)))
artists = [title() for _ in range(max(1, n // 20))]
with open(f"{work}/tracks.tsv", "w") as f:
    for i in range(n):
        f.write(f"trk_{i:012x}\t{title()}\t{i // 10:x}\t{rng.randrange(len(artists))}\n")
with open(f"{work}/artists.tsv", "w") as f:
    for i, a in enumerate(artists):
        f.write(f"{i}\t{a}\n")
titles = [l.split("\t")[1] for l in open(f"{work}/tracks.tsv")]
qs = []
for k in range(nq):
    t = rng.choice(titles).lower()
    w = rng.choice(t.split())
    if k % 3 == 0:
        q = t
    elif k % 3 == 1:
        q = w[: rng.randint(3, min(6, len(w)))]
    else:
        i = rng.randrange(len(w) - 1)
        q = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    qs.append(q)
with open(f"{work}/queries.txt", "w") as f:
    f.write("\n".join(qs) + "\n")
PY

# App-api database, written directly in its schema (the API would take hours for 1M).
log "loading the app-api database"
APP_DB="$WORK/app.db"
TOKEN=bench-admin-token-0123456789
cat >"$WORK/app.toml" <<CONF
listen = "127.0.0.1:18390"
database = "sqlite://$APP_DB"
search_dir = "$WORK/search"
admin_tokens = ["$TOKEN"]
CONF
# Let the app-api create its schema, then stop it and fill the tables.
"$BIN" app-api --config "$WORK/app.toml" >"$WORK/app0.log" 2>&1 &
p=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18390/healthz >/dev/null && break; sleep 0.1; done
kill "$p"; wait "$p" 2>/dev/null || true
python3 - "$WORK" "$APP_DB" <<'PY'
import sqlite3, sys
work, db = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=OFF")
arts = [l.rstrip("\n").split("\t") for l in open(f"{work}/artists.tsv")]
c.executemany("INSERT INTO artists VALUES (?, ?, ?, 0)", [(f"art_{i}", a, f"{a.lower()}#{i}") for i, a in arts])
albums = {}
rows = []
for l in open(f"{work}/tracks.tsv"):
    tid, title, alb, art = l.rstrip("\n").split("\t")
    if alb not in albums:
        albums[alb] = art
        c.execute("INSERT INTO albums VALUES (?, ?, ?, ?, 0)", (f"alb_{alb}", f"Album {alb}", f"art_{art}", f"album {alb}"))
    rows.append((tid, title, f"alb_{alb}", 1, int(tid[4:], 16) % 10 + 1, "", "", 0, "00" * 32, 441000, 44100, -14.0, -1.0, 0, 0))
c.executemany("INSERT INTO tracks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
c.executemany("INSERT INTO track_artists VALUES (?, ?, 0)", [(r[0], "art_" + albums[r[2][4:]]) for r in rows])
c.commit()
PY

log "starting the app-api (rebuilds the search index from the database)"
taskset -c 0 "$BIN" app-api --config "$WORK/app.toml" >"$WORK/app.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 3000); do curl -sf http://127.0.0.1:18390/healthz >/dev/null && break; sleep 0.1; done
INDEX_MS=$(grep -o 'index_ms=[0-9]*' "$WORK/app.log" | head -1 | cut -d= -f2)

# wrk: each request a random query from the list.
cat >"$WORK/search.lua" <<LUA
local queries = {}
for line in io.lines("$WORK/queries.txt") do
  queries[#queries + 1] = line:gsub(" ", "%%20")
end
math.randomseed(7)
request = function()
  local q = queries[math.random(#queries)]
  return wrk.format("GET", "/v1/search?types=track&limit=20&q=" .. q, { ["Authorization"] = "Bearer $TOKEN" })
end
LUA
taskset -c 1 wrk -t 1 -c "$CONNS" -d 2s -s "$WORK/search.lua" http://127.0.0.1:18390 >/dev/null
taskset -c 1 wrk -t 1 -c "$CONNS" -d "${SECS}s" --latency -s "$WORK/search.lua" http://127.0.0.1:18390 >"$WORK/wrk.txt"
SEGUE_RPS=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
SEGUE_P50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.txt")
SEGUE_P99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")

# PostgreSQL with pg_trgm, same titles, same queries.
start_postgres 18391 -c shared_buffers=512MB
log "loading PostgreSQL and building the trigram index"
"${PSQL[@]}" -c "CREATE EXTENSION pg_trgm; CREATE TABLE tracks (id text, title text, album text, artist int);
  CREATE TABLE queries (id serial primary key, q text);"
"${PSQL[@]}" -c "\\copy tracks FROM '$WORK/tracks.tsv'"
"${PSQL[@]}" -c "\\copy queries (q) FROM '$WORK/queries.txt'"
PG_INDEX_START=$(date +%s%N)
"${PSQL[@]}" -c "CREATE INDEX ON tracks USING gin (lower(title) gin_trgm_ops); ANALYZE tracks;"
PG_INDEX_MS=$(( ($(date +%s%N) - PG_INDEX_START) / 1000000 ))
cat >"$WORK/pg.sql" <<SQL
\\set k random(1, $QUERIES)
SELECT id, title FROM tracks, (SELECT q FROM queries WHERE id = :k) s
  WHERE lower(title) % s.q ORDER BY similarity(lower(title), s.q) DESC LIMIT 20;
SQL
cd "$WORK"
taskset -c 1 pgbench -h 127.0.0.1 -p 18391 -U bench -n -c "$CONNS" -j 1 -T 2 -f pg.sql postgres >/dev/null 2>&1
taskset -c 1 pgbench -h 127.0.0.1 -p 18391 -U bench -n -c "$CONNS" -j 1 -T "$SECS" -f pg.sql -l --log-prefix=pgl postgres >pgbench.txt 2>&1
PG_TPS=$(awk '/^tps/ {print $3; exit}' pgbench.txt)
read -r PG_P50 PG_P99 < <(cat pgl.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.2fms %.2fms\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')

echo "## Search vs PostgreSQL pg_trgm ($(date -u +%Y-%m-%d), TRACKS=$TRACKS, QUERIES=$QUERIES, $CONNS clients, ${SECS}s)"
echo
echo "| engine | index build | queries/s | p50 | p99 |"
echo "|---|---|---|---|---|"
echo "| segue app-api (tantivy, over HTTP) | ${INDEX_MS} ms | $SEGUE_RPS | $SEGUE_P50 | $SEGUE_P99 |"
echo "| PostgreSQL 15 pg_trgm GIN (pgbench, no HTTP) | ${PG_INDEX_MS} ms | $PG_TPS | $PG_P50 | $PG_P99 |"
