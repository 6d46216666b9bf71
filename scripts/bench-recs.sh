#!/usr/bin/env bash
# Implicit ALS against the PyPI `implicit` library (0.7.x, its CPU conjugate-gradient
# solver, OPENBLAS_NUM_THREADS=1), on exactly the same interactions: `segue recs synth`
# writes seeded listening data with planted taste clusters and a popularity skew, split
# leave-last-out; both train on train.tsv with equal factors, iterations,
# regularization and alpha, two threads each (the machine's cores), RUNS runs each,
# interleaved; one neutral script (scripts/recs_score.py) ranks the full catalog for
# every held-out user from each model's saved factors and scores recall@10 and nDCG@10.
# Training time is each trainer's fit alone (data loading not counted for either).
#
#   scripts/bench-recs.sh       RUNS=3 USERS=50000 TRACKS=20000 FACTORS=64 ITERATIONS=15
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"; USERS="${USERS:-50000}"; TRACKS="${TRACKS:-20000}"
FACTORS="${FACTORS:-64}"; ITERATIONS="${ITERATIONS:-15}"; REG=0.01; ALPHA=40
. scripts/bench-lib.sh
python3 -c 'import implicit' 2>/dev/null || pip install --quiet 'implicit==0.7.*' >&2
bench_setup recs
"$BIN" recs synth --out "$WORK" --users "$USERS" --tracks "$TRACKS" --artists $((TRACKS / 10)) >&2
ours=(); peer=()
for _ in $(seq 1 "$RUNS"); do
  ours+=("$("$BIN" recs fit --train "$WORK/train.tsv" --out "$WORK/segue" --threads 2 \
    --factors "$FACTORS" --iterations "$ITERATIONS" --regularization $REG --alpha $ALPHA |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')")
  peer+=("$(OPENBLAS_NUM_THREADS=1 python3 scripts/recs_implicit.py "$WORK/train.tsv" "$WORK/implicit" \
    "$FACTORS" "$ITERATIONS" $REG $ALPHA 2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')")
done
python3 scripts/recs_score.py "$WORK" "$WORK/segue" "$WORK/implicit" > "$WORK/scores.jsonl"
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.2f}")' "$@"; }
O=$(median "${ours[@]}"); P=$(median "${peer[@]}")
python3 - "$WORK/scores.jsonl" "$O" "$P" "$USERS" "$TRACKS" "$FACTORS" "$ITERATIONS" "$RUNS" <<'PY'
import json, sys
s, p = [json.loads(l) for l in open(sys.argv[1])]
o_t, p_t, users, tracks, f, it, runs = sys.argv[2:]
print(f"| {users} users, {tracks} tracks, {f} factors, {it} iterations, 2 threads | segue | implicit 0.7 | segue / implicit |")
print("|---|---|---|---|")
print(f"| recall@10 | {s['recall@10']:.4f} | {p['recall@10']:.4f} | {s['recall@10'] / p['recall@10']:.2f}x |")
print(f"| nDCG@10 | {s['ndcg@10']:.4f} | {p['ndcg@10']:.4f} | {s['ndcg@10'] / p['ndcg@10']:.2f}x |")
print(f"| training time (median of {runs}) | {o_t} s | {p_t} s | {float(o_t) / float(p_t):.2f}x |")
PY
