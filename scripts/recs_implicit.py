#!/usr/bin/env python3
"""Train the PyPI `implicit` library's ALS (the peer) on a train.tsv and save its factors.

Usage: recs_implicit.py TRAIN_TSV OUT_DIR FACTORS ITERATIONS REGULARIZATION ALPHA THREADS

Same model as `segue recs fit`: confidence 1 + alpha * r, L2 regularization, conjugate
gradient with 3 steps per row. Prints the fit time (seconds, the fit call only) as JSON.
"""
import json
import os
import sys
import time

import numpy as np
import scipy.sparse as sp


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    train, out = sys.argv[1], sys.argv[2]
    factors, iterations = int(sys.argv[3]), int(sys.argv[4])
    regularization, alpha, threads = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
    from implicit.cpu.als import AlternatingLeastSquares

    data = np.loadtxt(train, delimiter="\t", dtype=np.float64, ndmin=2)
    users, tracks = data[:, 0].astype(np.int64), data[:, 1].astype(np.int64)
    matrix = sp.csr_matrix(
        (data[:, 2].astype(np.float32), (users, tracks)), shape=(users.max() + 1, tracks.max() + 1)
    )
    matrix.sum_duplicates()
    model = AlternatingLeastSquares(
        factors=factors, regularization=regularization, alpha=alpha, iterations=iterations,
        use_cg=True, num_threads=threads, random_state=1,
    )
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    os.makedirs(out, exist_ok=True)
    np.save(f"{out}/user_factors.npy", np.asarray(model.user_factors, dtype=np.float32))
    np.save(f"{out}/item_factors.npy", np.asarray(model.item_factors, dtype=np.float32))
    print(json.dumps({"users": matrix.shape[0], "tracks": matrix.shape[1], "plays": matrix.nnz, "seconds": seconds}))


if __name__ == "__main__":
    main()
