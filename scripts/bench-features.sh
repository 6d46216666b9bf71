#!/usr/bin/env bash
# Audio features at ingest against librosa, on the same 3.5-minute music-like master
# (sox: a chord progression over a beat and noise), one core each, RUNS runs each,
# interleaved: segue's analysis as packaging runs it (downmix, resampling to 22.05 kHz,
# tempo, loudness, spectral shape, zero crossings, chroma and key, MFCC statistics)
# against librosa computing the same features from a file already loaded at 22.05 kHz
# (its load and resampling not counted).
#
#   scripts/bench-features.sh            RUNS=5
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
. scripts/bench-lib.sh
bench_setup features
cargo build --release -p segue-origin --example features_time >&2
EX="$(dirname "$BIN")/examples/features_time"
# 3.5 minutes: 42 bars of 5 s, a chord each, over a 120 BPM beat and a noise bed.
for chord in "C4 E4 G4" "A3 C4 E4" "F3 A3 C4" "G3 B3 D4"; do
  set -- $chord
  sox -n -r 44100 -c 2 -b 16 "$WORK/bar-$1.wav" synth 5 pluck "$1" pluck "$2" pluck "$3" \
    synth 5 sine mix 110 remix 1-3 1-3 vol 0.3
done
sox "$WORK"/bar-C4.wav "$WORK"/bar-A3.wav "$WORK"/bar-F3.wav "$WORK"/bar-G3.wav "$WORK/loop.wav"
sox "$WORK/loop.wav" "$WORK/music.wav" repeat 10 trim 0 210
ours=(); peer=()
for _ in $(seq 1 "$RUNS"); do
  ours+=("$(taskset -c 1 "$EX" "$WORK/music.wav" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')")
  peer+=("$(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 taskset -c 1 python3 - "$WORK/music.wav" <<'PY'
import sys, time, warnings
warnings.filterwarnings("ignore")
import librosa, numpy as np
y, sr = librosa.load(sys.argv[1], sr=22050, mono=True)
# Warm numba's JIT on a second of audio: compilation is not analysis.
librosa.beat.beat_track(y=y[:sr], sr=sr); librosa.feature.chroma_stft(y=y[:sr], sr=sr)
t0 = time.perf_counter()
onset = librosa.onset.onset_strength(y=y, sr=sr)
librosa.feature.tempo(onset_envelope=onset, sr=sr)
librosa.feature.rms(y=y)
S = np.abs(librosa.stft(y))
librosa.feature.spectral_centroid(S=S, sr=sr); librosa.feature.spectral_rolloff(S=S, sr=sr)
librosa.feature.spectral_flatness(S=S); librosa.feature.zero_crossing_rate(y)
librosa.feature.chroma_stft(S=S**2, sr=sr); librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13, n_mels=40)
print(time.perf_counter() - t0)
PY
)")
done
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
O=$(median "${ours[@]}"); P=$(median "${peer[@]}")
echo "| 3.5-minute master, one core (median of $RUNS) | segue: $O s | librosa: $P s | $(python3 -c "print(f'{$O / $P:.2f}')")x |"
