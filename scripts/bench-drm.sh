#!/usr/bin/env bash
# DRM and offline listening, on this machine (release build), each against a peer run
# side by side:
#   1. decrypt throughput of the enc/ layout (AES-128-CTR, `aes` crate) in the player's
#      64 KiB reads, against `openssl enc -aes-128-ctr` on the same 256 MB file, one core
#      each, ROUNDS interleaved runs;
#   2. enc/ on the fly: origin CPU per GB served for /enc/ against /a/ of the same
#      objects (what encrypting per range costs), and the storage encrypting at ingest
#      would add instead;
#   3. license issue latency for a 500-track album of 500 contents (p50/p99 of LICENSES
#      issues: 500 keys fetched wrapped from the origin, unwrapped, sealed, signed),
#      against reading the same album (GET /v1/albums/ID);
#   4. time to first audio offline (segue play --offline) against online with a warm
#      edge, RUNS plays each, interleaved.
#
#   scripts/bench-drm.sh                 ROUNDS=5 LICENSES=60 RUNS=15
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-5}"
LICENSES="${LICENSES:-60}"
RUNS="${RUNS:-15}"
. scripts/bench-lib.sh
bench_setup drm
cargo build --release -p segue-core --example ctr_throughput >&2
CTR="$(dirname "$BIN")/examples/ctr_throughput"
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.1f}")' "$@"; }
pct() { python3 -c "
import sys
v = sorted(float(x) for x in sys.argv[1:])
at = lambda q: v[min(len(v) - 1, max(0, int(-(-q * len(v) // 1)) - 1))]
print(f'{at(0.5):.1f} {at(0.99):.1f}')" "$@"; }

# 1. Decrypt throughput.
head -c 256M /dev/urandom >"$WORK/big"
cat "$WORK/big" >/dev/null
ours=(); peer=()
for _ in $(seq 1 "$ROUNDS"); do
  ours+=("$(taskset -c 1 "$CTR" "$WORK/big" 4 | python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_per_s"])')")
  t0=$(date +%s.%N)
  for _ in 1 2 3 4; do
    taskset -c 1 openssl enc -aes-128-ctr -K 42424242424242424242424242424242 -iv 00000000000000000000000000000000 \
      -in "$WORK/big" -out /dev/null
  done
  t1=$(date +%s.%N)
  peer+=("$(python3 -c "print(4 * 256 * 1048576 / ($t1 - $t0) / 1e6)")")
done
CTR_OURS=$(median "${ours[@]}"); CTR_PEER=$(median "${peer[@]}")
log "decrypt: segue $CTR_OURS MB/s, openssl $CTR_PEER MB/s"

# The stack, with 20 s demo tracks.
"$BIN" up --data-dir "$WORK/data" --demo-track-secs 20 --origin-listen 127.0.0.1:18500 --edge-listen 127.0.0.1:18501 \
  --control-plane-listen 127.0.0.1:18502 --app-api-listen 127.0.0.1:18503 >"$WORK/up.log" 2>&1 &
UP=$!
PIDS+=($UP)
for _ in $(seq 1 600); do grep -q "demo tracks added" "$WORK/up.log" 2>/dev/null && break; sleep 0.5; done
TOKEN=$(cat "$WORK/data/app-api.token")
APP=http://127.0.0.1:18503
api() { curl -sf -H "Authorization: Bearer $TOKEN" "$APP$1"; }
CIDS=$(ls "$WORK/data/origin/manifest" | sed 's/\.json$//')

# 2. /enc/ against /a/ at the origin: CPU ticks of the whole `segue up` process (the
# other roles idle) per GB, each object in each tier fetched ROUNDS times.
serve_cpu() { # prefix -> "ticks bytes"
  local before bytes=0 n
  before=$(cpu_ticks "$UP")
  for _ in $(seq 1 "$ROUNDS"); do
    for c in $CIDS; do
      for t in low normal standard high very_high; do
        n=$(taskset -c 1 curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:18500/$1/$c/$t.ogg")
        bytes=$((bytes + n))
      done
    done
  done
  echo "$(($(cpu_ticks "$UP") - before)) $bytes"
}
serve_cpu a >/dev/null; serve_cpu enc >/dev/null
read -r A_TICKS A_BYTES < <(serve_cpu a)
read -r E_TICKS E_BYTES < <(serve_cpu enc)
read -r A2_TICKS A2_BYTES < <(serve_cpu a)
read -r E2_TICKS E2_BYTES < <(serve_cpu enc)
per_gb() { python3 -c "print(f'{($1 + $3) * 10 / (($2 + $4) / 1e9):.0f}')"; }
A_MS_GB=$(per_gb "$A_TICKS" "$A_BYTES" "$A2_TICKS" "$A2_BYTES")
E_MS_GB=$(per_gb "$E_TICKS" "$E_BYTES" "$E2_TICKS" "$E2_BYTES")
AUDIO_MB=$(du -sk "$WORK/data/origin/audio" | awk '{printf "%.1f", $1 / 1024}')
ALL_MB=$(du -sk "$WORK/data/origin" | awk '{printf "%.1f", $1 / 1024}')
log "origin CPU per GB: /a/ $A_MS_GB ms, /enc/ $E_MS_GB ms; audio $AUDIO_MB MB of $ALL_MB MB stored"

# 3. License issue latency, a 500-track album of 500 contents. The license server needs a
# manifest per catalog entry and a key per content, not the audio: manifests of a demo
# track are copied under 500 new content ids, and `segue keys rotate` gives each a key.
CID1=${CIDS%%$'\n'*}
python3 - "$WORK/data/origin" "$CID1" >"$WORK/cids.txt" <<'PY'
import hashlib, json, sys
store, cid = sys.argv[1:3]
m = json.load(open(f"{store}/manifest/{cid}.json"))
for n in range(500):
    m["content_id"] = hashlib.sha256(f"bench take {n}".encode()).hexdigest()
    json.dump(m, open(f"{store}/manifest/{m['content_id']}.json", "w"))
    print(m["content_id"])
PY
SEGUE_KEK="$(cat "$WORK/data/kek")" "$BIN" keys rotate --data-dir "$WORK/data/origin" 2>&1 | tail -1 >&2
python3 - "$APP" "$TOKEN" "$WORK/cids.txt" >"$WORK/album.txt" <<'PY'
import json, sys, urllib.request
app, token, cids = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().split()
def call(method, path, body):
    req = urllib.request.Request(app + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
for n, cid in enumerate(cids, 1):
    t = call("POST", "/v1/admin/tracks", {"content_id": cid, "title": f"Take {n}", "artists": ["Big Box"],
                                          "album": "Complete Takes", "track_number": n})
    call("PUT", f"/v1/admin/tracks/{t['id']}/rights", {"countries": ["SE"]})
print(t["album"]["id"])
PY
ALBUM=$(cat "$WORK/album.txt")
USER_KEY=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"bench listener","country":"SE"}' "$APP/v1/admin/users" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
echo "$USER_KEY" >"$WORK/user.key"
uapi() { curl -sf -H "Authorization: Bearer $USER_KEY" -H 'Content-Type: application/json' "$@"; }
device() { # a fresh X25519 key, registered: its device id
  openssl genpkey -algorithm X25519 -out "$WORK/x.pem" 2>/dev/null
  local pub
  pub=$(openssl pkey -in "$WORK/x.pem" -pubout -outform DER | tail -c 32 | base64)
  uapi -d "{\"name\":\"bench $RANDOM\",\"public_key\":\"$pub\"}" "$APP/v1/drm/devices" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
issue=(); album=()
DEV=""
for i in $(seq 1 "$LICENSES"); do
  # 500 tracks per license, at most 10,000 per device: a device takes 15 licenses.
  if [ $(((i - 1) % 15)) -eq 0 ]; then
    [ -n "$DEV" ] && uapi -X DELETE "$APP/v1/drm/devices/$DEV" >/dev/null
    DEV=$(device)
  fi
  issue+=("$(uapi -o /dev/null -w '%{time_total}' -d "{\"device\":\"$DEV\",\"album\":\"$ALBUM\"}" "$APP/v1/drm/licenses")")
  album+=("$(uapi -o /dev/null -w '%{time_total}' "$APP/v1/albums/$ALBUM")")
done
ms() { for x in "$@"; do python3 -c "print($x * 1000)"; done; }
read -r ISSUE_P50 ISSUE_P99 < <(pct $(ms "${issue[@]}"))
read -r ALBUM_P50 ALBUM_P99 < <(pct $(ms "${album[@]}"))
LICENSE_BYTES=$(uapi -d "{\"device\":\"$DEV\",\"album\":\"$ALBUM\"}" "$APP/v1/drm/licenses" | wc -c)
log "license issue p50 $ISSUE_P50 ms p99 $ISSUE_P99 ms; album read p50 $ALBUM_P50 ms p99 $ALBUM_P99 ms"

# 4. Time to first audio: offline against online with a warm edge.
TRACKS=$(api "/v1/search?q=continuum&types=track" | python3 -c 'import json,sys; print(" ".join(h["id"] for h in json.load(sys.stdin)["hits"]))')
FIRST=${TRACKS%% *}
D_ALBUM=$(api "/v1/tracks/$FIRST" | python3 -c 'import json,sys; print(json.load(sys.stdin)["album"]["id"])')
"$BIN" offline sync --app-api "$APP" --token-file "$WORK/user.key" --device-dir "$WORK/device" --album "$D_ALBUM" \
  >/dev/null 2>&1
ttfa() { python3 -c 'import json,sys; print(json.load(sys.stdin)["time_to_first_audio_ms"])'; }
online() { "$BIN" play --no-report --app-api "$APP" --token-file "$WORK/user.key" --json --duration-ms 1000 \
  --out "$WORK/on.wav" "$FIRST" | ttfa; }
offline() { "$BIN" play --offline --no-report --device-dir "$WORK/device" --json --duration-ms 1000 \
  --out "$WORK/off.wav" "$FIRST" | ttfa; }
online >/dev/null; offline >/dev/null
on=(); off=()
for _ in $(seq 1 "$RUNS"); do on+=("$(online)"); off+=("$(offline)"); done
read -r ON_P50 ON_P99 < <(pct "${on[@]}")
read -r OFF_P50 OFF_P99 < <(pct "${off[@]}")
log "first audio: offline p50 $OFF_P50 ms, online warm p50 $ON_P50 ms"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo
echo "| measurement | segue | peer | ratio |"
echo "|---|---|---|---|"
echo "| decrypt, MB/s, one core (median of $ROUNDS) | $CTR_OURS | openssl enc -aes-128-ctr: $CTR_PEER | $(ratio "$CTR_OURS" "$CTR_PEER")x |"
echo "| origin CPU per GB served, ms | /enc/ on the fly: $E_MS_GB | /a/ plain: $A_MS_GB | $(ratio "$E_MS_GB" "$A_MS_GB")x |"
echo "| storage for encrypted variants | 0 MB on the fly | at ingest: +$AUDIO_MB MB on $ALL_MB MB | |"
echo "| license issue, 500 tracks, p50 / p99 ms ($LICENSES) | $ISSUE_P50 / $ISSUE_P99 | GET the album: $ALBUM_P50 / $ALBUM_P99 | $(ratio "$ISSUE_P50" "$ALBUM_P50")x |"
echo "| license size, 500 tracks | $LICENSE_BYTES B | | |"
echo "| time to first audio, p50 / p99 ms ($RUNS) | offline: $OFF_P50 / $OFF_P99 | online, warm edge: $ON_P50 / $ON_P99 | $(ratio "$OFF_P50" "$ON_P50")x |"
