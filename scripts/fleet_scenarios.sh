#!/usr/bin/env bash
# The fleet scenarios at full size (docs/BENCHMARKS.md, "Fleet scenarios"): a lab of four
# POPs in two regions behind a shield, 180 s demo tracks, and every scenario of
# `segue loadtest` against it; then a lab with an overflow CDN for the overflow scenario.
# Reports and plots go to OUT (default ./fleet-scenarios); a summary is printed at the end.
#
#   cargo build --release && scripts/fleet_scenarios.sh [OUT]
#
# LISTENERS (300) and DROP_LISTENERS (500 per region) set the sizes; about 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SEGUE_BIN:-target/release/segue}
OUT=$(realpath -m "${1:-fleet-scenarios}")
LISTENERS=${LISTENERS:-300}
DROP=${DROP_LISTENERS:-500}
LAB=$(mktemp -d /tmp/segue-fleet-lab.XXXXXX)
mkdir -p "$OUT"
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$LAB"' EXIT

start_lab() {
    rm -f "$LAB/lab.json"
    "$BIN" lab --data-dir "$LAB" --pops 4 --regions 2 --shield --ports-from 0 --demo-track-secs 180 "$@" \
        >"$OUT/lab.out" 2>"$OUT/lab.err" &
    PID=$!
    for _ in $(seq 300); do
        [ -f "$LAB/lab.json" ] && break
        kill -0 "$PID" 2>/dev/null || { echo "the lab exited; see $OUT/lab.err" >&2; exit 1; }
        sleep 1
    done
    sleep 5 # every POP's first heartbeat
}

stop_lab() {
    kill "$PID"
    wait "$PID" || true
    PID=
}

run() {
    local name=$1
    shift
    echo "== $name: segue loadtest $*" >&2
    "$BIN" loadtest --lab "$LAB" --out "$OUT/$name" --json "$@" >"$OUT/$name.json" 2>>"$OUT/loadtest.err"
}

start_lab
run listeners --scenario listeners --listeners "$LISTENERS" --duration-secs 120 --speed 2
run drop-prewarm --scenario album-drop --listeners "$DROP" --prewarm --lead-secs 30 --duration-secs 60
run drop-cold --scenario album-drop --listeners "$DROP" --lead-secs 30 --duration-secs 60
run drop-cold-stagger --scenario album-drop --listeners "$DROP" --lead-secs 30 --stagger-secs 30 --duration-secs 60
run pop-outage --scenario pop-outage --listeners "$LISTENERS" --duration-secs 90 --speed 2
run origin-outage --scenario origin-outage --listeners "$LISTENERS" --duration-secs 90 --speed 2 --zipf 0.5
stop_lab
start_lab --overflow --pop-capacity-connections 40
run overflow --scenario overflow --listeners "$LISTENERS" --duration-secs 90 --speed 2
stop_lab

python3 - "$OUT" <<'EOF'
import json, sys, os
out = sys.argv[1]
def load(n):
    return json.load(open(os.path.join(out, n + ".json")))
def ms(p):
    return f"{p['p50']:.1f} / {p['p99']:.1f}"
r = load("listeners"); c = r["clients"]
print(f"listeners: {r['listeners']} for {r['seconds']:.0f} s at {r['speed']}x: {c['tracks']} tracks, {c['ranges']} ranges, "
      f"errors {c['errors']}, rebuffers {c['rebuffers']}, hit ratio {c['hit_ratio']:.3f}, range TTFB p50/p99 {ms(c['ttfb_ms'])} ms, "
      f"stream API {ms(c['stream_api_ms'])} ms, plays {c['plays_accepted']}/{c['plays_reported']}, origin {r['origin']['requests']} requests")
for n in ["drop-prewarm", "drop-cold", "drop-cold-stagger"]:
    r = load(n); f = r["findings"]
    peak = max(s["origin_bytes"] for s in r["timeline"]["seconds"]) / 1e6
    regions = "; ".join(f"{g['region']}: first range p50/p99 {ms(g['first_range_ms'])} ms, {g['first_ranges']} ranges, "
                        f"{g['first_range_errors']} errors, origin {g['origin_requests_in_10s']} req in 10 s" for g in f["regions"])
    print(f"{n}: origin before T {f['origin_requests_before_drop']} req / {f['origin_bytes_before_drop']/1e6:.1f} MB, "
          f"from T {f['origin_requests_from_drop']} req / {f['origin_bytes_from_drop']/1e6:.1f} MB, peak {peak:.1f} MB/s; "
          f"{regions}; stream API {ms(r['clients']['stream_api_ms'])} ms; errors {r['clients']['errors']}")
r = load("pop-outage"); f = r["findings"]
print(f"pop-outage: killed {f['killed']} at {f['killed_at_s']:.0f} s; down after {f['marked_down_after_s']:.1f} s, "
      f"healthy again after {f['healthy_again_after_s']}; answers naming it while down {f['stream_answers_naming_it_while_down']}"
      f"/{f['stream_answers_while_down']}; failed on it {f['requests_failed_on_it']} (all failed over: errors {r['clients']['errors']}), "
      f"clients recovered after {f['clients_recovered_after_s']:.1f} s, rebuffers {r['clients']['rebuffers']}")
r = load("origin-outage"); f = r["findings"]; d = f["while_down"]
print(f"origin-outage: back after {f['origin_back_after_s']}; while down: " + "; ".join(
      f"{k} {d[k]['ranges'] - d[k]['failed']}/{d[k]['ranges']} served {d[k]['x_cache']}" for k in ["fresh", "stale", "uncached"])
      + f"; tracks lost {r['clients']['errors']}")
r = load("overflow"); f = r["findings"]
print(f"overflow: saturated at {f['first_saturated_at_s']}, first range to the overflow CDN at {f['first_range_to_overflow_at_s']}, "
      f"cleared at {f['saturation_cleared_at_s']}; overflow share before/surge/after "
      f"{f['before']['overflow_share']:.2f} / {f['surge']['overflow_share']:.2f} / {f['after']['overflow_share']:.2f}; "
      f"errors {r['clients']['errors']}; origin {r['origin']['requests']} requests (the overflow CDN's fills)")
EOF
