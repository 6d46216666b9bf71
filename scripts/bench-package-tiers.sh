#!/usr/bin/env bash
# Per tier, what packaging costs, side by side with oggenc on the same masters: kbit/s
# (all bytes, and the audio without Ogg page overhead), pages and their length in audio,
# the widest gap between seek entries, and the CPU of all five tiers on one core
# (taskset -c 0): `segue ingest` (the whole job) against oggenc in quality mode (-q -1, 2,
# 4, 5, 9, libvorbis's quality for each nominal bitrate; the low tier from a 22.05 kHz mono
# downmix made beforehand, not timed).
#
# The reference masters (the set the tier qualities are calibrated on):
#   music  3.5 minutes of tones with vibrato and tremolo over pink noise (music_master)
#   demo1  2 minutes of the demo music, piece 1 (chords, bass, percussion-like bursts;
#   demo2  what `segue up` and the packaging tests encode), and piece 2
# and, outside the set, the stress master of tests/ingest.rs:
#   noise  1 minute of two steady tones under loud white noise (no music is this dense)
#
#   scripts/bench-package-tiers.sh          (issue "Packaging efficiency")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
bench_setup tiers
need_oggenc
cargo build --release -q -p segue-origin --example demo_master >&2
DEMO="$(realpath "${CARGO_TARGET_DIR:-target}")/release/examples/demo_master"

music_master "$WORK/music.wav"
"$DEMO" 1 120 "$WORK/demo1.wav"
"$DEMO" 2 120 "$WORK/demo2.wav"
ffmpeg -v error -filter_complex "
  anoisesrc=c=white:a=0.25:d=60:r=44100:seed=3[nl]; anoisesrc=c=white:a=0.25:d=60:r=44100:seed=4[nr];
  [nl][nr]amerge=inputs=2[noise];
  aevalsrc='0.18*sin(2*PI*220*t)|0.18*sin(2*PI*330*t)':s=44100:d=60[tones];
  [noise][tones]amix=inputs=2:normalize=0[out]" -map "[out]" -c:a pcm_s16le "$WORK/noise.wav"
MASTERS="music demo1 demo2 noise"

TIMEFORMAT='%U %S'
cpu() { local t; t=$( { time taskset -c 0 "$@" >/dev/null 2>&1; } 2>&1 | tail -1); awk -v u="${t% *}" -v s="${t#* }" 'BEGIN{printf "%.2f", u+s}'; }

declare -A q=([low]=-1 [normal]=2 [standard]=4 [high]=5 [very_high]=9)
: >"$WORK/cpu.txt"
for m in $MASTERS; do
  ffmpeg -v error -i "$WORK/$m.wav" -ac 1 -ar 22050 -c:a pcm_s16le "$WORK/$m-low.wav"
  s=$(cpu "$BIN" ingest --data-dir "$WORK/store-$m" "$WORK/$m.wav")
  o=0
  for t in low normal standard high very_high; do
    src="$WORK/$m.wav"; [ "$t" = low ] && src="$WORK/$m-low.wav"
    c=$(cpu oggenc -Q -q "${q[$t]}" -o "$WORK/oggenc-$m-$t.ogg" "$src"); o=$(awk "BEGIN{print $o+$c}")
  done
  echo "$m $s $o" >>"$WORK/cpu.txt"
done

python3 - "$WORK" $MASTERS <<'EOF'
import glob, json, os, sys
work, masters = sys.argv[1], sys.argv[2:]
tiers = [("low", 24), ("normal", 96), ("standard", 128), ("high", 160), ("very_high", 320)]

def stats(path, rate):
    """kbps, audio kbps, audio pages, shortest and mean page ms, widest granule gap ms."""
    data = open(path, "rb").read()
    at = overhead = 0
    granules = []
    while at < len(data):
        assert data[at:at + 4] == b"OggS", (path, at)
        nseg = data[at + 26]
        granule = int.from_bytes(data[at + 6:at + 14], "little", signed=True)
        overhead += 27 + nseg
        if granule > 0:
            granules.append(granule)
        at += 27 + nseg + sum(data[at + 27:at + 27 + nseg])
    secs = granules[-1] / rate
    spans = [b - a for a, b in zip([0] + granules, granules)]
    body = spans[:-1] or spans  # the last page holds what is left
    ms = lambda n: n * 1000 / rate
    return (len(data) * 8 / secs / 1000, (len(data) - overhead) * 8 / secs / 1000, len(granules),
            ms(min(body)), ms(sum(spans) / len(spans)), ms(max(spans)))

cpu = {m: (float(s), float(o)) for m, s, o in (l.split() for l in open(f"{work}/cpu.txt"))}
print("| master | tier | nominal | segue kbps (audio) | vs nominal | segue pages: n, min/mean ms, widest entry gap ms | oggenc -q kbps (audio) | vs nominal | oggenc pages: n, min/mean ms |")
print("|---|---|---|---|---|---|---|---|---|")
for m in masters:
    manifest = json.load(open(glob.glob(f"{work}/store-{m}/manifest/*.json")[0]))
    for tier, nominal in tiers:
        info = manifest["tiers"][tier]
        seek = json.load(open(glob.glob(f"{work}/store-{m}/seek/*/{tier}.json")[0]))
        entries = [e["granule"] for e in seek["entries"]] + [seek["total_samples"]]
        gap = max(b - a for a, b in zip(entries, entries[1:])) * 1000 / info["sample_rate"]
        sk, sa, sn, smin, smean, _ = stats(glob.glob(f"{work}/store-{m}/audio/*/{tier}.ogg")[0], info["sample_rate"])
        ok, oa, on, omin, omean, _ = stats(f"{work}/oggenc-{m}-{tier}.ogg", info["sample_rate"])
        pct = lambda k: f"{(k / nominal - 1) * 100:+.1f}%"
        print(f"| {m} | {tier} | {nominal} | {sk:.1f} ({sa:.1f}) | {pct(sk)} | {sn}, {smin:.0f}/{smean:.0f}, {gap:.0f} "
              f"| {ok:.1f} ({oa:.1f}) | {pct(ok)} | {on}, {omin:.0f}/{omean:.0f} |")
print()
print("| master | segue ingest CPU s (whole job) | oggenc -q CPU s (5 encodes) | segue / oggenc -q |")
print("|---|---|---|---|")
for m in masters:
    s, o = cpu[m]
    print(f"| {m} | {s:.2f} | {o:.2f} | **{s / o:.2f}×** |")
s, o = (sum(c[i] for c in cpu.values()) for i in (0, 1))
print(f"| all | {s:.2f} | {o:.2f} | **{s / o:.2f}×** |")
EOF

# ffmpeg (as in mpv) seeking into the high tier of the music master at 200 fixed targets:
# how many land off the target sample, and the worst. segue against oggenc -q 5's pages.
python3 - "$WORK" <<'EOF'
import glob, subprocess, sys
work = sys.argv[1]
def pcm(path, at=None):
    cmd = ["ffmpeg", "-v", "error"] + (["-ss", f"{at:.6f}"] if at is not None else []) + ["-i", path]
    cmd += (["-t", "0.05"] if at is not None else []) + ["-f", "s16le", "-acodec", "pcm_s16le", "-"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout
print()
print("| high tier of music, ffmpeg -ss at 200 targets | landed off target | worst, samples |")
print("|---|---|---|")
for name, path in [("segue", glob.glob(f"{work}/store-music/audio/*/high.ogg")[0]), ("oggenc -q 5", f"{work}/oggenc-music-high.ogg")]:
    whole = pcm(path)
    x, off, worst = 0x2545F4914F6CDD1D, 0, 0
    for _ in range(200):
        x ^= (x << 13) & (2**64 - 1); x ^= x >> 7; x ^= (x << 17) & (2**64 - 1)
        target = 8820 + x % (205 * 44100)
        got = pcm(path, target / 44100)[:1024]
        at = whole.find(got, max(0, (target - 8192) * 4), (target + 8192) * 4)
        assert at >= 0 and at % 4 == 0, (name, target)
        miss = abs(at // 4 - target)
        off += miss > 0
        worst = max(worst, miss)
    print(f"| {name} | {off / 2:.1f}% | {worst} |")
EOF
