#!/usr/bin/env bash
# Per tier, what packaging costs: kbit/s (audio and Ogg page overhead), bytes, pages and
# their length in audio, for `segue ingest` and for oggenc on the same 3.5-minute
# music-like master (scripts/bench-package.sh makes the same one); and the CPU of all five
# tiers on one core (taskset -c 0): segue ingest (whole job) against oggenc in quality mode
# (-q, the cheap one; libvorbis's quality for each nominal bitrate: -1, 2, 4, 5, 9, the
# low tier from a 22.05 kHz mono downmix) and in managed ABR (--managed -b, as segue).
#
#   scripts/bench-package-tiers.sh          (issue "Packaging efficiency": the baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
bench_setup tiers
need_oggenc
music_master "$WORK/master.wav"
ffmpeg -v error -i "$WORK/master.wav" -ac 1 -ar 22050 -c:a pcm_s16le "$WORK/low.wav"

TIMEFORMAT='%U %S'
cpu() { local t; t=$( { time taskset -c 0 "$@" >/dev/null 2>&1; } 2>&1 | tail -1); awk -v u="${t% *}" -v s="${t#* }" 'BEGIN{printf "%.1f", u+s}'; }

# Ogg page statistics of FILE at SECS of audio: kbps, audio kbps, pages, mean page ms.
pages() {
  python3 - "$1" "$2" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
secs = float(sys.argv[2])
at = pages = overhead = 0
while at < len(data):
    assert data[at:at + 4] == b"OggS", at
    nseg = data[at + 26]
    body = sum(data[at + 27:at + 27 + nseg])
    overhead += 27 + nseg
    pages += 1
    at += 27 + nseg + body
kbps = len(data) * 8 / secs / 1000
print(f"{kbps:.1f} {(len(data) - overhead) * 8 / secs / 1000:.1f} {pages} {secs * 1000 / max(pages - 2, 1):.0f} {len(data)}")
EOF
}

segue_cpu=$(cpu "$BIN" ingest --data-dir "$WORK/store" "$WORK/master.wav")
declare -A q=([low]=-1 [normal]=2 [standard]=4 [high]=5 [very_high]=9)
declare -A kb=([low]=24 [normal]=96 [standard]=128 [high]=160 [very_high]=320)
q_cpu=0; abr_cpu=0
for t in low normal standard high very_high; do
  src="$WORK/master.wav"; [ "$t" = low ] && src="$WORK/low.wav"
  c=$(cpu oggenc -Q -q "${q[$t]}" -o "$WORK/q-$t.ogg" "$src"); q_cpu=$(awk "BEGIN{print $q_cpu+$c}")
  c=$(cpu oggenc -Q --managed -b "${kb[$t]}" -o "$WORK/abr-$t.ogg" "$src"); abr_cpu=$(awk "BEGIN{print $abr_cpu+$c}")
done

printf '%-10s %8s | %-30s | %-30s | %-30s\n' tier nominal "segue: kbps (audio) pages ms" "oggenc -q: kbps (audio) pages ms" "oggenc ABR: kbps (audio) pages ms"
for t in low normal standard high very_high; do
  f=$(find "$WORK/store" -path "*/$t.ogg" | head -1)
  read -r sk sa sp sm sb < <(pages "$f" 210)
  read -r qk qa qp qm qb < <(pages "$WORK/q-$t.ogg" 210)
  read -r ak aa ap am ab < <(pages "$WORK/abr-$t.ogg" 210)
  printf '%-10s %8s | %6s (%6s) %5s %4s %9s | %6s (%6s) %5s %4s %9s | %6s (%6s) %5s %4s %9s\n' \
    "$t" "${kb[$t]}" "$sk" "$sa" "$sp" "$sm" "$sb" "$qk" "$qa" "$qp" "$qm" "$qb" "$ak" "$aa" "$ap" "$am" "$ab"
done
echo
echo "CPU s on one core, five tiers: segue ingest (whole job) $segue_cpu, oggenc -q $q_cpu, oggenc --managed $abr_cpu"
awk "BEGIN{printf \"ratio segue / oggenc -q: %.2fx; segue / oggenc --managed: %.2fx\n\", $segue_cpu/$q_cpu, $segue_cpu/$abr_cpu}"
