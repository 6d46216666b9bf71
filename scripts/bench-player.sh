#!/usr/bin/env bash
# The player against `segue up` on this machine (release build, 20 s demo tracks, and a
# 4-minute track ingested with `segue ingest`):
#   - time to first audio, warm edge (the track cached) and cold (purged from the edge
#     first, so it comes through the origin), RUNS plays each, for a 20 s and a 4-minute
#     track (decoding as the bytes arrive, it should not depend on the length);
#   - peer for first audio: the first 50 ms of the 4-minute track to WAV, whole command,
#     `segue play --duration-ms 50` against ffmpeg -t 0.05 on the same signed URL;
#   - skip-to-next latency: plays of the five demo tracks skipping after 2 s each;
#   - peer: ffmpeg fetching the same signed URL and decoding the whole track to WAV,
#     against `segue play` doing the same, wall time of the whole command (warm edge).
#
#   scripts/bench-player.sh                 RUNS=20
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-20}"
. scripts/bench-lib.sh
bench_setup player

"$BIN" up --data-dir "$WORK/data" --demo-track-secs 20 --origin-listen 127.0.0.1:18500 --edge-listen 127.0.0.1:18501 \
  --control-plane-listen 127.0.0.1:18502 --app-api-listen 127.0.0.1:18503 >"$WORK/up.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do grep -q "demo tracks added" "$WORK/up.log" 2>/dev/null && break; sleep 0.5; done
TOKEN=$(cat "$WORK/data/app-api.token")
export SEGUE_CP_TOKEN=$(cat "$WORK/data/control-plane.token")
api() { curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18503$1"; }
TRACKS=$(api "/v1/search?q=continuum&types=track" | python3 -c 'import json,sys; print(" ".join(h["id"] for h in json.load(sys.stdin)["hits"]))')
SINGLE=$(api "/v1/search?q=standalone&types=track" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hits"][0]["id"])')
FIRST=${TRACKS%% *}
CID=$(api "/v1/tracks/$FIRST" | python3 -c 'import json,sys; print(json.load(sys.stdin)["content_id"])')
log "a 4-minute track: ffmpeg master, segue ingest, added to the catalog"
ffmpeg -v error -f lavfi -i "sine=frequency=220:duration=240" -f lavfi -i "anoisesrc=d=240:a=0.1" \
  -filter_complex "[0][1]amix=inputs=2,aformat=channel_layouts=stereo" -ar 44100 -c:a pcm_s16le "$WORK/long.wav"
"$BIN" ingest --json --data-dir "$WORK/data/origin" "$WORK/long.wav" >"$WORK/ingest.json" 2>/dev/null
LONG_CID=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["content_id"])' "$WORK/ingest.json")
LONG=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -X POST \
  -d "{\"content_id\":\"$LONG_CID\",\"title\":\"Long Form\",\"artists\":[\"Bench\"],\"album\":\"Long Form\",\"track_number\":1}" \
  http://127.0.0.1:18503/v1/admin/tracks | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -X PUT -d '{"countries":["SE"]}' \
  "http://127.0.0.1:18503/v1/admin/tracks/$LONG/rights" >/dev/null
play() { "$BIN" play --app-api http://127.0.0.1:18503 --token-file "$WORK/data/app-api.token" --country SE --json \
  --out "$WORK/out.wav" "$@"; }
stat() { python3 -c "
import json, sys
v = sorted(float(x) for x in sys.argv[1:])
at = lambda q: v[min(len(v) - 1, max(0, int(-(-q * len(v) // 1)) - 1))]
print(f'{at(0.5):.1f} {at(0.99):.1f}')" "$@"; }

ttfa() { python3 -c 'import json,sys; print(json.load(sys.stdin)["time_to_first_audio_ms"])'; }
# warm TRACK / cold TRACK CID: RUNS times to first audio
warm() { play "$1" >/dev/null; for _ in $(seq 1 "$RUNS"); do play "$1" | ttfa; done; }
cold() {
  for _ in $(seq 1 "$RUNS"); do
    "$BIN" purge --content-id "$2" --control-plane http://127.0.0.1:18502 >/dev/null
    play "$1" | ttfa
  done
}
log "first audio: $RUNS plays each, 20 s and 4-minute tracks, warm and cold"
mapfile -t warm20 < <(warm "$FIRST")
mapfile -t cold20 < <(cold "$FIRST" "$CID")
mapfile -t warm240 < <(warm "$LONG")
mapfile -t cold240 < <(cold "$LONG" "$LONG_CID")
log "first 50 ms of the 4-minute track to WAV, whole command: segue play vs ffmpeg, $RUNS each"
LONG_URL=$(api "/v1/tracks/$LONG/stream?country=SE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
seg50=(); ff50=()
for _ in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N); play --duration-ms 50 "$LONG" >/dev/null; t1=$(date +%s%N)
  ffmpeg -v error -y -i "$LONG_URL" -t 0.05 -f wav "$WORK/ff.wav"; t2=$(date +%s%N)
  seg50+=("$(( (t1 - t0) / 1000 ))e-3"); ff50+=("$(( (t2 - t1) / 1000 ))e-3")
done
log "skips: $(( (RUNS + 3) / 4 )) plays of five tracks, skipping after 2 s"
skips=()
for _ in $(seq 1 $(( (RUNS + 3) / 4 ))); do
  # shellcheck disable=SC2086
  skips+=($(play --skip-after-ms 2000 $TRACKS "$SINGLE" | python3 -c 'import json,sys; print(" ".join(str(x) for x in json.load(sys.stdin)["skip_latency_ms"]))'))
done
log "whole track to WAV: segue play vs ffmpeg, $RUNS each"
URL=$(api "/v1/tracks/$FIRST/stream?country=SE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
seg=(); ff=()
for _ in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N); play "$FIRST" >/dev/null; t1=$(date +%s%N)
  ffmpeg -v error -y -i "$URL" -f wav "$WORK/ff.wav"; t2=$(date +%s%N)
  seg+=("$(( (t1 - t0) / 1000 ))e-3"); ff+=("$(( (t2 - t1) / 1000 ))e-3")
done
read -r W50 W99 < <(stat "${warm20[@]}")
read -r C50 C99 < <(stat "${cold20[@]}")
read -r LW50 LW99 < <(stat "${warm240[@]}")
read -r LC50 LC99 < <(stat "${cold240[@]}")
read -r P50 P99 < <(stat "${seg50[@]}")
read -r Q50 Q99 < <(stat "${ff50[@]}")
read -r S50 S99 < <(stat "${skips[@]}")
read -r G50 G99 < <(stat "${seg[@]}")
read -r F50 F99 < <(stat "${ff[@]}")
echo "## Player ($(date -u +%Y-%m-%d), tier high, $RUNS runs)"
echo
echo "| measure | median ms | p99 ms |"
echo "|---|---|---|"
echo "| time to first audio, 20 s track, warm edge | $W50 | $W99 |"
echo "| time to first audio, 20 s track, cold (through the origin) | $C50 | $C99 |"
echo "| time to first audio, 4-minute track, warm edge | $LW50 | $LW99 |"
echo "| time to first audio, 4-minute track, cold | $LC50 | $LC99 |"
echo "| first 50 ms to WAV, whole command: segue play | $P50 | $P99 |"
echo "| first 50 ms to WAV, whole command: ffmpeg (peer) | $Q50 | $Q99 |"
echo "| skip to next (${#skips[@]} skips) | $S50 | $S99 |"
echo "| whole 20 s track to WAV: segue play | $G50 | $G99 |"
echo "| whole 20 s track to WAV: ffmpeg (peer) | $F50 | $F99 |"
echo
echo "first 50 ms, segue / ffmpeg (median): $(python3 -c "print(f'{$P50 / $Q50:.2f}x')")"
echo "whole track, segue / ffmpeg (median): $(python3 -c "print(f'{$G50 / $F50:.2f}x')")"
