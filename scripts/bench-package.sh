#!/usr/bin/env bash
# Packaging a 3.5-minute stereo 44.1 kHz master into the five tiers: `segue ingest`
# (tiers in parallel, plus decode, content hash, loudness, resampling, seek tables,
# fsynced writes) side by side with `oggenc` producing the same five tiers one after the
# other (libvorbis quality mode at each tier's nominal quality, -q -1, 2, 4, 5, 9, as
# segue's; the low tier from oggenc's own downmix and resampling). Best of RUNS for each.
# Prints a table.
#
#   scripts/bench-package.sh [RUNS]     default 3
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
. scripts/bench-lib.sh
bench_setup pkg
need_oggenc
music_master "$WORK/master.wav"

TIMEFORMAT='%R %U %S'
measure() { # prints "wall cpu" of the best (lowest wall) run
  local best=""
  for _ in $(seq 1 "$RUNS"); do
    local t
    t=$( { time "$@" >/dev/null 2>&1; } 2>&1 | tail -1)
    read -r wall user sys <<<"$t"
    local cpu; cpu=$(awk "BEGIN{print $user+$sys}")
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < ${best%% *})}"; then best="$wall $cpu"; fi
  done
  echo "$best"
}

segue_run() { rm -rf "$WORK/store"; "$BIN" ingest --data-dir "$WORK/store" "$WORK/master.wav"; }
oggenc_run() {
  oggenc -Q -q -1 --downmix --resample 22050 -o "$WORK/low.ogg" "$WORK/master.wav"
  for q in 2 4 5 9; do oggenc -Q -q "$q" -o "$WORK/$q.ogg" "$WORK/master.wav"; done
}
export -f segue_run oggenc_run
export BIN WORK

read -r sw sc <<<"$(measure bash -c segue_run)"
read -r ow oc <<<"$(measure bash -c oggenc_run)"
echo "| tool | wall s | CPU s |"
echo "|---|---|---|"
echo "| segue ingest (5 tiers in parallel, + decode, hash, loudness, seek tables) | $sw | $sc |"
echo "| oggenc, 5 tiers one after the other | $ow | $oc |"
echo "| **ratio segue/oggenc** | **$(awk "BEGIN{printf \"%.2f\", $sw/$ow}")×** | **$(awk "BEGIN{printf \"%.2f\", $sc/$oc}")×** |"
