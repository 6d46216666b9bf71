//! The fleet scenarios of `segue loadtest` at a small size against a real `segue lab`
//! (origin and POPs as separate processes): listeners, an album drop with and without
//! pre-warm, a POP killed under load, the origin killed under load, and overflow to a
//! secondary CDN. Each asserts what the scenario is for, from its JSON report.

mod common;

use common::*;
use serde_json::Value;

/// Start a lab in `dir` with `extra` flags; returns it once every POP is registered.
fn lab(dir: &std::path::Path, extra: &[&str], servers: usize) -> std::process::Child {
    let mut cmd = segue();
    cmd.args(["lab", "--pops", "3", "--regions", "2", "--shield", "--ports-from", "0", "--demo-track-secs", "20"])
        .args(["--restart-after-secs", "3"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .stderr(std::process::Stdio::null());
    let (lab, addrs) = spawn_servers(cmd, servers);
    let cp = addrs[5];
    let token = std::fs::read_to_string(dir.join("control-plane.token")).unwrap().trim().to_owned();
    wait_for("the lab's four POPs registered and healthy", 60, || {
        let (_, body) = get(&format!("http://{cp}/v1/pops"), &["-H", &format!("Authorization: Bearer {token}")]);
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        v["pops"].as_array().is_some_and(|p| p.iter().filter(|p| p["healthy"] == true).count() == 4)
    });
    lab
}

/// Run a scenario; its JSON report, after checking the files it wrote.
fn scenario(dir: &std::path::Path, name: &str, args: &[&str]) -> Value {
    let out = dir.join(format!("out-{name}-{}", args.len()));
    let run = segue()
        .args(["loadtest", "--scenario", name, "--lab"])
        .arg(dir)
        .arg("--out")
        .arg(&out)
        .args(["--speed", "8", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    for f in ["report.json", "origin-egress.svg", "ttfb.svg", "pops.svg"] {
        let text = std::fs::read_to_string(out.join(f)).unwrap_or_default();
        assert!(text.len() > 100, "{name}: {f} written");
    }
    assert!(std::fs::read_to_string(out.join("origin-egress.svg")).unwrap().contains("<svg"));
    report
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn listeners_drops_and_outages_on_a_lab() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), &[], 7);

    // Listeners: the player's pattern, every range served, plays reported and accepted.
    let r = scenario(dir.path(), "listeners", &["--listeners", "4", "--duration-secs", "10"]);
    let c = &r["clients"];
    assert!(n(&c["tracks"]) >= 4.0 && n(&c["ranges"]) > n(&c["tracks"]), "{c}");
    assert_eq!(n(&c["errors"]), 0.0, "{c}");
    assert!(n(&c["plays_accepted"]) >= 1.0 && c["plays_accepted"] == c["plays_reported"], "{c}");
    assert!(n(&c["prefetches"]) >= 1.0, "the next track is prefetched: {c}");
    assert!(r["timeline"]["seconds"].as_array().unwrap().len() >= 10);

    // An album drop, pre-warmed: the origin serves the album before the drop, nothing after.
    let warm = scenario(
        dir.path(),
        "album-drop",
        &["--listeners", "3", "--prewarm", "--lead-secs", "6", "--duration-secs", "4"],
    );
    let f = &warm["findings"];
    assert!(f["prewarm_jobs"].as_array().unwrap().iter().all(|j| j["done_before_drop"] == true), "{f}");
    assert!(n(&f["origin_requests_before_drop"]) > 0.0, "{f}");
    assert_eq!(n(&f["origin_requests_from_drop"]), 0.0, "pre-warmed: no origin request at or after T: {f}");
    for region in f["regions"].as_array().unwrap() {
        assert!(n(&region["first_ranges"]) >= 3.0 && n(&region["first_range_errors"]) == 0.0, "{region}");
    }
    // The same drop cold, staggered: the origin is hit from the first drop on.
    let cold = scenario(
        dir.path(),
        "album-drop",
        &["--listeners", "3", "--lead-secs", "4", "--stagger-secs", "2", "--duration-secs", "4"],
    );
    let f = &cold["findings"];
    assert_eq!(n(&f["origin_requests_before_drop"]), 0.0, "purged, not pre-warmed: {f}");
    assert!(n(&f["origin_requests_from_drop"]) > 0.0, "{f}");
    assert_eq!(n(&cold["clients"]["errors"]), 0.0);

    // A POP killed under load: listeners fail over, the control plane marks it down and the
    // app API stops handing it out; the lab restarts it and it is healthy again.
    let out = scenario(dir.path(), "pop-outage", &["--listeners", "6", "--duration-secs", "15"]);
    let f = &out["findings"];
    assert!(n(&f["marked_down_after_s"]) < 6.0, "down within three missed heartbeats and a poll: {f}");
    assert!(n(&f["healthy_again_after_s"]) > n(&f["marked_down_after_s"]), "{f}");
    assert!(n(&f["stream_answers_while_down"]) >= 1.0, "{f}");
    // The app API's POP list is at most a second old.
    assert!(f["last_answer_naming_it_after_down_s"].as_f64().is_none_or(|t| t <= 1.5), "{f}");
    assert_eq!(n(&out["clients"]["errors"]), 0.0, "every range served by the other POP: {}", out["clients"]);

    // The origin killed under load: cached tracks play on (fresh, and stale ones), the
    // uncached one fails until the lab has restarted the origin.
    let out = scenario(dir.path(), "origin-outage", &["--listeners", "6", "--duration-secs", "15", "--zipf", "0.3"]);
    let f = &out["findings"];
    let down = &f["while_down"];
    assert_eq!(n(&down["fresh"]["failed"]), 0.0, "{f}");
    assert_eq!(n(&down["stale"]["failed"]), 0.0, "{f}");
    assert!(n(&down["uncached"]["failed"]) >= 1.0, "nothing can serve what was never cached: {f}");
    assert!(n(&f["origin_back_after_s"]) >= 3.0, "{f}");
    assert!(terminate(lab).success());
}

#[test]
fn saturated_pops_overflow_to_the_secondary_cdn() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), &["--overflow", "--pop-capacity-connections", "3"], 8);
    let r = scenario(dir.path(), "overflow", &["--listeners", "16", "--duration-secs", "15"]);
    let f = &r["findings"];
    assert_eq!(n(&f["before"]["served_by_overflow"]), 0.0, "under capacity: {f}");
    assert!(f["first_saturated_at_s"].as_f64().is_some(), "{f}");
    assert!(n(&f["surge"]["served_by_overflow"]) >= 1.0, "{f}");
    assert!(n(&f["first_range_to_overflow_at_s"]) > n(&f["first_saturated_at_s"]), "{f}");
    assert_eq!(n(&r["clients"]["errors"]), 0.0, "{}", r["clients"]);
    assert!(terminate(lab).success());
}

#[test]
fn scenario_input_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let run = |args: &[&str]| {
        let out = segue().args(["loadtest", "--out"]).arg(&out_dir).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--scenario", "album-drop"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--lab"), "{err}");
    let nowhere = dir.path().join("nowhere");
    let (code, err) = run(&["--scenario", "listeners", "--lab", nowhere.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("lab.json") && err.contains("segue lab"), "{err}");
    std::fs::write(dir.path().join("lab.json"), "{\"origin\": 1}").unwrap();
    let (code, err) = run(&["--scenario", "listeners", "--lab", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a lab description"), "{err}");
    let (code, err) = run(&["--scenario", "listeners", "--lab", dir.path().to_str().unwrap(), "--speed", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--speed"), "{err}");
    let (code, err) = run(&["--scenario", "listeners", "--lab", dir.path().to_str().unwrap(), "--tier", "loud"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tier"), "{err}");
    assert!(!out_dir.exists(), "bad input writes nothing");
}
