#!/usr/bin/env bash
# The player against `segue up` on this machine (release build, 20 s demo tracks):
#   - time to first audio, warm edge (the track cached) and cold (purged from the edge
#     first, so it comes through the origin), RUNS plays each;
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
play() { "$BIN" play --app-api http://127.0.0.1:18503 --token-file "$WORK/data/app-api.token" --country SE --json \
  --out "$WORK/out.wav" "$@"; }
stat() { python3 -c "
import json, sys
v = sorted(float(x) for x in sys.argv[1:])
at = lambda q: v[min(len(v) - 1, max(0, int(-(-q * len(v) // 1)) - 1))]
print(f'{at(0.5):.1f} {at(0.99):.1f}')" "$@"; }

log "warm: $RUNS plays of one track"
play "$FIRST" >/dev/null
warm=()
for _ in $(seq 1 "$RUNS"); do warm+=("$(play "$FIRST" | python3 -c 'import json,sys; print(json.load(sys.stdin)["time_to_first_audio_ms"])')"); done
log "cold: $RUNS plays, each after a purge of the track from the edge"
cold=()
for _ in $(seq 1 "$RUNS"); do
  "$BIN" purge --content-id "$CID" --control-plane http://127.0.0.1:18502 >/dev/null
  cold+=("$(play "$FIRST" | python3 -c 'import json,sys; print(json.load(sys.stdin)["time_to_first_audio_ms"])')")
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
read -r W50 W99 < <(stat "${warm[@]}")
read -r C50 C99 < <(stat "${cold[@]}")
read -r S50 S99 < <(stat "${skips[@]}")
read -r G50 G99 < <(stat "${seg[@]}")
read -r F50 F99 < <(stat "${ff[@]}")
echo "## Player ($(date -u +%Y-%m-%d), 20 s demo tracks, tier high, $RUNS runs)"
echo
echo "| measure | median ms | p99 ms |"
echo "|---|---|---|"
echo "| time to first audio, warm edge | $W50 | $W99 |"
echo "| time to first audio, cold (through the origin) | $C50 | $C99 |"
echo "| skip to next (${#skips[@]} skips) | $S50 | $S99 |"
echo "| whole track to WAV: segue play | $G50 | $G99 |"
echo "| whole track to WAV: ffmpeg (peer) | $F50 | $F99 |"
echo
echo "segue / ffmpeg (median): $(python3 -c "print(f'{$G50 / $F50:.2f}x')")"
