#!/usr/bin/env python3
"""Score factor models on a leave-last-out split, the same way for every trainer.

Usage: recs_score.py DATA_DIR FACTORS_DIR [FACTORS_DIR ...]

DATA_DIR holds train.tsv (user, track, weight) and test.tsv (user, held-out track), as
`segue recs synth` writes them. Each FACTORS_DIR holds user_factors.npy and
item_factors.npy (rows in id order). For every test user, all tracks are ranked by
x_u . y_i, tracks the user has in train.tsv are left out, and recall@10 and nDCG@10
(one relevant track, so nDCG is 1/log2(rank + 1) when it is in the top 10) are averaged.
Prints one JSON line per model.
"""
import json
import sys

import numpy as np


def load(data_dir):
    train = np.loadtxt(f"{data_dir}/train.tsv", delimiter="\t", dtype=np.float64, ndmin=2)
    test = np.loadtxt(f"{data_dir}/test.tsv", delimiter="\t", dtype=np.int64, ndmin=2)
    users = train[:, 0].astype(np.int64)
    tracks = train[:, 1].astype(np.int64)
    order = np.argsort(users, kind="stable")
    users, tracks = users[order], tracks[order]
    bounds = np.searchsorted(users, np.arange(users.max() + 2))
    return tracks, bounds, test


def score(tracks, bounds, test, factors_dir, k=10, batch=2048):
    x = np.load(f"{factors_dir}/user_factors.npy").astype(np.float32)
    y = np.load(f"{factors_dir}/item_factors.npy").astype(np.float32)
    hits, ndcg = 0.0, 0.0
    for start in range(0, len(test), batch):
        part = test[start:start + batch]
        scores = x[part[:, 0]] @ y.T
        for row, (u, _) in enumerate(part):
            if u + 1 < len(bounds):
                scores[row, tracks[bounds[u]:bounds[u + 1]]] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1), axis=1)
        for row, (_, held) in enumerate(part):
            where = np.nonzero(top[row] == held)[0]
            if len(where):
                hits += 1
                ndcg += 1.0 / np.log2(where[0] + 2)
    n = len(test)
    return {"model": factors_dir, "users": n, "recall@10": hits / n, "ndcg@10": ndcg / n}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    tracks, bounds, test = load(sys.argv[1])
    for d in sys.argv[2:]:
        print(json.dumps(score(tracks, bounds, test, d)))


if __name__ == "__main__":
    main()
