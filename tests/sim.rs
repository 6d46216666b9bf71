//! `segue sim` end to end, small: a simulated day writes its report and plots, a bigger
//! SSD tier offloads more, a pre-warmed album costs the origin nothing at its release
//! while one not pre-warmed does; the slice trace it writes runs through the edge's
//! policies and libcachesim's, which agree on LRU; bad input names the file and line.

mod common;

use std::path::Path;

use common::*;

/// A short day on four POPs in two regions with a small album drop.
fn day(out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = segue()
        .args(["sim", "--pops", "4", "--regions", "2", "--hours", "2", "--warmup-h", "1", "--sample", "0.00005"])
        .args(["--drop-at-h", "1.5", "--drop-sample", "0.00002", "--peak-plays-per-s", "20000"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

fn album_requests_at_release(run: &serde_json::Value) -> Vec<u64> {
    run["drop"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["origin_requests_at_release"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_simulated_day_reports_offload_by_cache_size_and_a_prewarm_spares_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let warm = day(&dir.path().join("warm"), &["--cache-tb", "2,20", "--prewarm-mins", "5", "--stagger-mins", "10"]);
    let runs = warm["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let offload = |r: &serde_json::Value| r["byte_hit_ratio"].as_f64().unwrap();
    assert!(
        offload(&runs[0]) > 0.0 && offload(&runs[1]) > offload(&runs[0]),
        "{} vs {}",
        offload(&runs[0]),
        offload(&runs[1])
    );
    assert_eq!(runs[1]["pops"].as_array().unwrap().len(), 4);
    // Staggered: the second region releases ten minutes after the first.
    let regions = runs[1]["drop"]["regions"].as_array().unwrap();
    let at = |i: usize| regions[i]["release_h"].as_f64().unwrap();
    assert!((at(1) - at(0) - 10.0 / 60.0).abs() < 1e-6);
    assert_eq!(album_requests_at_release(&runs[1]), vec![0, 0], "pre-warmed: nothing from the origin at the release");
    for plot in ["origin-egress.svg", "drop-egress.svg", "drop-ttfb.svg", "hit-ratio.svg"] {
        let svg = std::fs::read_to_string(dir.path().join("warm").join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{plot}");
    }

    let cold = day(&dir.path().join("cold"), &["--cache-tb", "20", "--prewarm-mins", "0"]);
    let cold_run = &cold["runs"][0];
    assert!(album_requests_at_release(cold_run).iter().all(|&n| n > 0), "{:?}", album_requests_at_release(cold_run));
    assert!(cold_run["drop"]["coalescing_factor"].as_f64().unwrap() > 1.0);
}

#[test]
fn the_edge_and_libcachesim_agree_on_lru_over_the_same_slice_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("pop0.csv");
    let o = segue()
        .args(["sim", "--pops", "2", "--regions", "1", "--hours", "1", "--warmup-h", "0.5", "--sample", "0.00005"])
        .args(["--drop-listeners", "0", "--trace-pop", "0", "--trace-out"])
        .arg(&trace)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = std::fs::read_to_string(&trace).unwrap().lines().count();
    assert!(lines > 1000, "{lines} slice reads");
    let cache_mb = "64";
    let edge = segue().args(["sim", "--policies"]).arg(&trace).args(["--cache-mb", cache_mb]).output().unwrap();
    assert!(edge.status.success(), "{}", String::from_utf8_lossy(&edge.stderr));
    let edge = String::from_utf8(edge.stdout).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compare_policies.py");
    let lcs = std::process::Command::new("python3")
        .arg(script)
        .arg(&trace)
        .args(["--cache-bytes", &(64u64 << 20).to_string(), "--json"])
        .output()
        .unwrap();
    assert!(lcs.status.success(), "{}", String::from_utf8_lossy(&lcs.stderr));
    let lcs: serde_json::Value = serde_json::from_slice(&lcs.stdout).unwrap();
    let ours = |name: &str| -> f64 {
        let line = edge.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {edge}"));
        line.split_whitespace().rev().nth(1).unwrap().parse().unwrap()
    };
    let theirs = |name: &str| {
        lcs.as_array().unwrap().iter().find(|r| r["policy"] == name).unwrap()["miss_ratio"].as_f64().unwrap()
    };
    let (a, b) = (ours("LRU (edge)"), theirs("LRU (libcachesim)"));
    assert!(a > 0.01 && a < 0.99, "a miss ratio that says something: {a}");
    // The same policy on the same trace and bytes: the edge's cache also weighs each
    // entry's key and bookkeeping (~0.1% of a slice), nothing else differs.
    assert!((a - b).abs() < 0.01, "edge LRU {a} vs libcachesim LRU {b}");
    for name in ["W-TinyLFU (libcachesim)", "S3-FIFO (libcachesim)", "SIEVE (libcachesim)"] {
        assert!(theirs(name) > 0.0);
    }
}

#[test]
fn a_bad_trace_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.csv");
    std::fs::write(&trace, "at_ms,client,path,len,etag,first,last\n0,1,/a/x,100,e,0,99\n5,1,/a/x,100,e,50,10\n")
        .unwrap();
    let o = segue().args(["sim", "--replay"]).arg(&trace).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv:3") && err.contains("first <= last"), "{err}");
    let o = segue().args(["sim", "--sample", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--sample"));
}
