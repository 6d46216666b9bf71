#!/usr/bin/env python3
"""Run a slice trace through libcachesim's policies, for comparison with the edge's own
cache (`segue sim --policies`): the same trace file, miss ratios by requests and bytes.

The trace is what `segue sim --trace-pop N --trace-out FILE` writes: CSV with a header,
`time,obj_id,obj_size`, one line per slice read at that POP.

    python3 scripts/compare_policies.py FILE --cache-bytes BYTES [--json]
"""
import argparse
import json
import sys

try:
    import libcachesim as lcs
except ImportError:
    sys.exit("libcachesim is not installed: pip install libcachesim==0.3.5")

POLICIES = [
    ("W-TinyLFU (libcachesim)", lambda size: lcs.WTinyLFU(size)),
    ("S3-FIFO (libcachesim)", lambda size: lcs.S3FIFO(size)),
    ("SIEVE (libcachesim)", lambda size: lcs.Sieve(size)),
    ("LRU (libcachesim)", lambda size: lcs.LRU(size)),
]


def reader(path):
    p = lcs.ReaderInitParam(has_header=True, has_header_set=True, delimiter=",",
                            obj_id_is_num=True, obj_id_is_num_set=True)
    p.time_field, p.obj_id_field, p.obj_size_field = 1, 2, 3
    return lcs.TraceReader(path, lcs.TraceType.CSV_TRACE, p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--cache-bytes", type=int, required=True)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with open(args.trace) as f:
        header = f.readline().strip()
        requests = sum(1 for _ in f)
    if header != "time,obj_id,obj_size":
        sys.exit(f"{args.trace}: line 1: expected the header time,obj_id,obj_size")
    results = []
    for name, make in POLICIES:
        miss, byte_miss = make(args.cache_bytes).process_trace(reader(args.trace))
        results.append({"policy": name, "requests": requests, "miss_ratio": miss, "byte_miss_ratio": byte_miss})
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'policy':<24} {'requests':>10} {'miss ratio':>12} {'byte miss ratio':>16}")
    for r in results:
        print(f"{r['policy']:<24} {r['requests']:>10} {r['miss_ratio']:>12.4f} {r['byte_miss_ratio']:>16.4f}")


if __name__ == "__main__":
    main()
