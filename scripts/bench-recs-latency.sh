#!/usr/bin/env bash
# Serving latency of recommendations at 100,000 tracks and a million listeners, one
# core each, in process (after the database reads): segue's Discover Weekly ranking
# (fold the listener in from 20-80 plays, score every track exactly, best 500 unheard)
# and radio (500 nearest by CF and audio cosine), against the same computation in
# NumPy (BLAS matrix-vector products, argpartition) on the same sizes.
#
#   scripts/bench-recs-latency.sh        TRACKS=100000 USERS=1000000 REQUESTS=2000
set -euo pipefail
cd "$(dirname "$0")/.."
TRACKS="${TRACKS:-100000}"; USERS="${USERS:-1000000}"; REQUESTS="${REQUESTS:-2000}"
cargo build --release -p segue-app-api --example recs_latency >&2
EX="$(realpath "${CARGO_TARGET_DIR:-target}")/release/examples/recs_latency"
ours=$(taskset -c 1 "$EX" "$TRACKS" "$USERS" "$REQUESTS")
peer=$(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 taskset -c 1 python3 - "$TRACKS" "$USERS" "$REQUESTS" <<'PY'
import json, sys, time
import numpy as np
tracks, users, requests = map(int, sys.argv[1:])
f, d, alpha, reg = 64, 49, 40.0, 0.01
rng = np.random.default_rng(7)
Y = rng.uniform(-0.3, 0.3, (tracks, f)).astype(np.float32)
A = rng.uniform(-2, 2, (tracks, d)).astype(np.float32)
A /= np.linalg.norm(A, axis=1, keepdims=True)
Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
G = (Y.T.astype(np.float64) @ Y.astype(np.float64))
pop = 1.0 / np.arange(1, tracks + 1) ** 0.8
pop /= pop.sum()
weekly, radio = [], []
for _ in range(requests):
    u = int(rng.integers(users))
    urng = np.random.default_rng(u)
    n = int(urng.integers(20, 81))
    items = urng.choice(tracks, n, p=pop)
    r = np.where(urng.random(n) < 0.2, 0.25, 1.0)
    t0 = time.perf_counter()
    Yu = Y[items].astype(np.float64)
    c = 1.0 + alpha * r
    M = G + reg * np.eye(f) + (Yu.T * (c - 1.0)) @ Yu
    x = np.linalg.solve(M, Yu.T @ c).astype(np.float32)
    s = Y @ x
    s[items] = -np.inf
    top = np.argpartition(-s, 500)[:500]
    top = top[np.argsort(-s[top])]
    weekly.append((time.perf_counter() - t0) * 1e3)
    t = int(rng.integers(tracks))
    t0 = time.perf_counter()
    s = (Yn @ Yn[t] + A @ A[t]) / 2
    s[t] = -np.inf
    top = np.argpartition(-s, 500)[:500]
    top = top[np.argsort(-s[top])]
    radio.append((time.perf_counter() - t0) * 1e3)
p = lambda v, q: float(np.percentile(v, q))
print(json.dumps({"discover_weekly_ms": {"p50": p(weekly, 50), "p99": p(weekly, 99)},
                  "radio_ms": {"p50": p(radio, 50), "p99": p(radio, 99)}}))
PY
)
python3 - "$ours" "$peer" "$TRACKS" "$USERS" "$REQUESTS" <<'PY'
import json, sys
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"| {sys.argv[3]} tracks, {sys.argv[4]} listeners, {sys.argv[5]} requests, one core | segue p50 / p99 | NumPy p50 / p99 | p99 segue / NumPy |")
print("|---|---|---|---|")
for k, name in (("discover_weekly_ms", "Discover Weekly ranking"), ("radio_ms", "radio ranking")):
    print(f"| {name} | {o[k]['p50']:.2f} / {o[k]['p99']:.2f} ms | {p[k]['p50']:.2f} / {p[k]['p99']:.2f} ms | {o[k]['p99'] / p[k]['p99']:.2f}x |")
PY
