#!/usr/bin/env python3
"""The LRU reference for the catalog-10x-the-cap benchmark: replay a request trace
(`segue loadtest --trace-file`, lines `path first last`) through a byte-capped LRU cache
and print its request and byte hit ratios, for slices and for whole objects. Also the
ceiling a frequency-based policy can approach on a steady popularity: the fixed set of
the most-requested slices that fits the cap (counted over the whole trace, so it knows
the future), each fetched on its first request.

    scripts/lru-reference.py TRACE CAP_BYTES [SLICE_BYTES]     (slice 262144 by default)

A request is a hit when everything it asks for is cached before it; a miss fetches what
is missing (the missing slices, or the whole object), which is inserted. The byte hit
ratio is 1 - fetched bytes / requested bytes, as the benchmarks count it from the
origin's side. Object sizes are taken as one past the last byte the trace asks for.
"""
import sys
from collections import OrderedDict


def replay(trace, cap, slice_bytes, whole):
    size = {}
    for path, a, b in trace:
        size[path] = max(size.get(path, 0), b + 1)
    lru, held = OrderedDict(), 0
    hits = fetched = asked = 0
    for path, a, b in trace:
        asked += b - a + 1
        if whole:
            keys = [(path, 0, size[path])]
        else:
            keys = [(path, i, min(slice_bytes, size[path] - i * slice_bytes))
                    for i in range(a // slice_bytes, b // slice_bytes + 1)]
        missing = [k for k in keys if (k[0], k[1]) not in lru]
        if not missing:
            hits += 1
        for path_, i, n in keys:
            key = (path_, i)
            if key in lru:
                lru.move_to_end(key)
                continue
            fetched += n
            if n > cap:
                continue
            lru[key] = n
            held += n
            while held > cap:
                _, old = lru.popitem(last=False)
                held -= old
    return hits / max(len(trace), 1), 1 - fetched / max(asked, 1)


def best_fixed_set(trace, cap, slice_bytes):
    size, count = {}, {}
    for path, a, b in trace:
        size[path] = max(size.get(path, 0), b + 1)
        for i in range(a // slice_bytes, b // slice_bytes + 1):
            count[(path, i)] = count.get((path, i), 0) + 1
    chosen, held = set(), 0
    for key in sorted(count, key=count.get, reverse=True):
        n = min(slice_bytes, size[key[0]] - key[1] * slice_bytes)
        if held + n <= cap:
            chosen.add(key)
            held += n
    seen = set()
    hits = fetched = asked = 0
    for path, a, b in trace:
        asked += b - a + 1
        keys = [(path, i) for i in range(a // slice_bytes, b // slice_bytes + 1)]
        if all(k in seen for k in keys):
            hits += 1
        for k in keys:
            if k not in seen:
                fetched += min(slice_bytes, size[path] - k[1] * slice_bytes)
                if k in chosen:
                    seen.add(k)
    return hits / max(len(trace), 1), 1 - fetched / max(asked, 1)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cap = int(sys.argv[2])
    slice_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else 262144
    trace = []
    with open(sys.argv[1]) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 3:
                sys.exit(f"{sys.argv[1]}:{n}: expected `path first last`")
            trace.append((parts[0], int(parts[1]), int(parts[2])))
    for name, whole in (("LRU, slices", False), ("LRU, whole objects", True)):
        r, b = replay(trace, cap, slice_bytes, whole)
        print(f"{name}: request hit ratio {r:.3f}, byte hit ratio {b:.3f}")
    r, b = best_fixed_set(trace, cap, slice_bytes)
    print(f"Best fixed set of slices (knows the whole trace): request hit ratio {r:.3f}, byte hit ratio {b:.3f}")


if __name__ == "__main__":
    main()
