//! The `segue` binary as operators run it: real processes on 127.0.0.1.

mod common;

use common::*;
use segue_core::client::Protocol;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[test]
fn origin_starts_from_flags_serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = segue();
    cmd.args(["origin", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path());
    let (child, addr) = spawn_server(cmd);
    assert_eq!(get(&format!("http://{addr}/healthz"), &[]), (200, b"ok\n".to_vec()));
    let (code, body) = get(&format!("http://{addr}/a/{}/high.ogg", "ab".repeat(32)), &[]);
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("\"error\":\"not_found\""));
    assert!(terminate(child).success());
}

#[test]
fn bad_config_and_flags_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("origin.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmax_header_bytes = 12\n").unwrap();
    let out = segue().args(["origin", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("origin.toml") && err.contains("max_header_bytes"), "{err}");

    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nlsiten = 1\n").unwrap();
    let out = segue().args(["origin", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("origin.toml") && err.contains("line 2") && err.contains("lsiten"), "{err}");

    let out = segue().args(["origin", "--listen", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = segue().args(["origin", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = segue().args(["origin", "--config", "/nonexistent/origin.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/origin.toml"));
}

#[test]
fn up_creates_the_demo_catalog_once_and_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut cmd = segue();
        cmd.args([
            "up",
            "--origin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--control-plane-listen",
            "127.0.0.1:0",
            "--app-api-listen",
            "127.0.0.1:0",
            "--demo-track-secs",
            "3",
            "--data-dir",
        ])
        .arg(dir.path());
        let (child, addrs) = spawn_servers(cmd, 4);
        (child, addrs[1], addrs[2], addrs[3]) // the edge, the control plane, the app API
    };
    let (child, addr, cp, app) = start();
    // The edge registers with the control plane; the release manager's token is on disk.
    let token = std::fs::read_to_string(dir.path().join("control-plane.token")).unwrap();
    wait_for("the edge to register", 20, || {
        let (_, v) = admin(cp, "GET", "/v1/pops", Some(token.trim()), None);
        v["pops"][0]["id"] == "local" && v["pops"][0]["healthy"] == true
    });
    // The demo tracks are in the app API: searchable, and streamable through the edge.
    let app_token = std::fs::read_to_string(dir.path().join("app-api.token")).unwrap();
    let app_token = app_token.trim();
    let mut found = serde_json::Value::Null;
    wait_for("the demo catalog in the app API", 20, || {
        found = admin(app, "GET", "/v1/search?q=continuum&types=track", Some(app_token), None).1;
        found["hits"].as_array().is_some_and(|h| h.len() == 4)
    });
    let track = found["hits"][0]["id"].as_str().unwrap();
    // A demo listener for Subsonic players, its key kept private on disk.
    let key_file = dir.path().join("listener.key");
    wait_for("the demo listener's key", 20, || key_file.exists());
    let listener_key = std::fs::read_to_string(&key_file).unwrap().trim().to_owned();
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (code, ping) = get(&format!("http://{app}/rest/ping.view?f=json&apiKey={listener_key}"), &[]);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&ping).contains(r#""status":"ok""#), "{}", String::from_utf8_lossy(&ping));
    let (code, stream) = admin(app, "GET", &format!("/v1/tracks/{track}/stream?country=SE"), Some(app_token), None);
    assert_eq!(code, 200, "{stream}");
    assert_eq!(get(stream["url"].as_str().unwrap(), &["-r", "0-3"]), (206, b"OggS".to_vec()));
    let manifests: Vec<_> =
        std::fs::read_dir(dir.path().join("origin/manifest")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(manifests.len(), 5, "four gapless cuts and one single");
    let cid = manifests[0].file_stem().unwrap().to_string_lossy().to_string();

    let (code, body) = get(&format!("http://{addr}/m/{cid}.json"), &[]);
    assert_eq!(code, 200);
    let manifest: segue_core::manifest::Manifest = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest.tiers.len(), 5);
    assert_eq!(manifest.source.samples, 3 * 44_100);

    for (tier, info) in &manifest.tiers {
        let (code, seek) = get(&format!("http://{addr}/seek/{cid}/{tier}.json"), &[]);
        assert_eq!(code, 200);
        let table = segue_core::seek_table::SeekTable::from_json(&seek).expect("valid seek table");
        assert_eq!(table.total_bytes, info.bytes);
        assert_eq!(table.total_samples, info.samples);
        // Every entry points at an Ogg page start (fetched through the edge).
        for e in &table.entries {
            let (code, head) =
                get(&format!("http://{addr}/a/{cid}/{tier}.ogg"), &["-r", &format!("{}-{}", e.offset, e.offset + 3)]);
            assert_eq!((code, head.as_slice()), (206, b"OggS".as_slice()));
        }
        let (code, whole) = get(&format!("http://{addr}/a/{cid}/{tier}.ogg"), &[]);
        assert_eq!((code, whole.len() as u64), (200, info.bytes));
    }
    assert!(terminate(child).success());

    // A second start packages nothing and serves the same catalog.
    let before = std::fs::metadata(&manifests[0]).unwrap().modified().unwrap();
    let (child, addr, _, _) = start();
    assert_eq!(std::fs::metadata(&manifests[0]).unwrap().modified().unwrap(), before);
    assert_eq!(get(&format!("http://{addr}/m/{cid}.json"), &[]).0, 200);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), listener_key, "the same demo listener");
    assert!(terminate(child).success());
}

#[test]
fn example_origin_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/origin.toml");
    let mut cmd = segue();
    cmd.args(["origin", "--config", cfg, "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path());
    let (child, addr) = spawn_server(cmd);
    assert_eq!(get(&format!("http://{addr}/healthz"), &[]).0, 200);
    assert!(terminate(child).success());
}

#[test]
fn edge_binary_in_front_of_origin_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    put_object(dir.path(), &"ab".repeat(32), &data);
    let (origin, origin_addr) = spawn_origin(dir.path());
    let mut e = segue();
    e.args(["edge", "--listen", "127.0.0.1:0", "--mem-cache-mb", "16", "--upstream", &format!("http://{origin_addr}")]);
    let (edge, edge_addr) = spawn_server(e);

    let url = format!("http://{edge_addr}/a/{}/high.ogg", "ab".repeat(32));
    let (code, body) = get(&url, &["-r", "1000000-1000999"]);
    assert_eq!((code, body.as_slice()), (206, &data[1_000_000..1_001_000]));
    let (code, body) = get(&url, &[]);
    assert_eq!((code, body.len()), (200, data.len()));
    assert_eq!(body, data);
    let (_, metrics) = get(&format!("http://{edge_addr}/metrics"), &[]);
    let text = String::from_utf8_lossy(&metrics);
    assert!(text.contains("edge_cache_results_total") && text.contains("edge_upstream_requests_total"), "{text}");
    let per_upstream = format!("edge_upstream_bytes_total{{upstream=\"http://{origin_addr}\"}} {}", data.len());
    assert!(text.contains(&per_upstream), "{per_upstream} missing from {text}");
    // The load generator against the edge: every response complete, exact counts.
    let target = format!("http://{edge_addr}");
    let path = format!("/a/{}/high.ogg", "ab".repeat(32));
    let trace = dir.path().join("trace.txt");
    let out = segue()
        .args(["loadtest", "--target", &target, "--path", &path, "--requests", "300", "--connections", "8", "--json"])
        .arg("--trace-file")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["requests"].as_u64(), report["errors"].as_u64()), (Some(300), Some(0)), "{report}");
    assert_eq!(report["statuses"]["206"].as_u64(), Some(300));
    // The object was fetched whole above: every range is a cache hit, and the trace has
    // each request as sent.
    assert_eq!((report["hits"].as_u64(), report["request_hit_ratio"].as_f64()), (Some(300), Some(1.0)), "{report}");
    let lines: Vec<String> = std::fs::read_to_string(&trace).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 300);
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        let (a, b): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert!(f[0] == path && a % (256 * 1024) == 0 && b < data.len() as u64 && a <= b, "{l}");
    }
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() >= report["latency_ms"]["p50"].as_f64().unwrap());
    let out = segue()
        .args([
            "loadtest",
            "--target",
            &target,
            "--path",
            &path,
            "--range-kib",
            "0",
            "--storm",
            "--connections",
            "100",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["requests"].as_u64(), report["errors"].as_u64()), (Some(100), Some(0)), "{report}");
    assert_eq!(report["bytes"].as_u64(), Some(100 * data.len() as u64));
    let out = segue().args(["loadtest", "--target", "ftp://x", "--path", "/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Bad flags exit 2 naming the problem.
    let out = segue().args(["edge", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstreams"));
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

#[test]
fn example_control_plane_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/control-plane.toml");
    let db = format!("sqlite://{}/cp.db", dir.path().display());
    let mut cmd = segue();
    cmd.args(["control-plane", "--config", cfg, "--listen", "127.0.0.1:0", "--database", &db]);
    let (child, addr) = spawn_server(cmd);
    assert_eq!(get(&format!("http://{addr}/healthz"), &[]).0, 200);
    // Without a token the API refuses, in JSON.
    let (code, body) = get(&format!("http://{addr}/v1/releases"), &[]);
    assert_eq!(code, 401);
    assert!(String::from_utf8_lossy(&body).contains("unauthorized"));
    assert!(terminate(child).success());
    // A bad value stops start-up naming the field.
    std::fs::write(dir.path().join("bad.toml"), "database = \"mysql://x\"\n").unwrap();
    let out = segue().args(["control-plane", "--config"]).arg(dir.path().join("bad.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database"));
}

#[test]
fn example_app_api_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/app-api.toml");
    let db = format!("sqlite://{}/app.db", dir.path().display());
    let mut cmd = segue();
    cmd.args(["app-api", "--config", cfg, "--listen", "127.0.0.1:0", "--database", &db]).current_dir(dir.path());
    let (child, addr) = spawn_server(cmd);
    assert_eq!(get(&format!("http://{addr}/healthz"), &[]).0, 200);
    assert!(terminate(child).success());
}

#[test]
fn example_edge_config_is_valid() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/edge.toml");
    let mut cmd = segue();
    cmd.args(["edge", "--config", cfg, "--listen", "127.0.0.1:0"]);
    let (child, addr) = spawn_server(cmd);
    assert_eq!(get(&format!("http://{addr}/healthz"), &[]).0, 200);
    assert!(terminate(child).success());
}

/// One request on an open keep-alive connection; returns the status.
fn keepalive_get(stream: &mut std::net::TcpStream, target: &str) -> u16 {
    use std::io::{Read, Write};
    write!(stream, "GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("connection still open");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn edge_reloads_keys_on_sighup_without_dropping_connections() {
    use segue_core::token::{Claims, Key};
    let dir = tempfile::tempdir().unwrap();
    put_object(dir.path(), &"cd".repeat(32), &[7u8; 50_000]);
    let (origin, origin_addr) = spawn_origin(dir.path());

    let (s1, s2) = ("11".repeat(16), "22".repeat(16));
    let cfg = dir.path().join("edge.toml");
    let write_cfg = |keys: &str| {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nupstreams = [\"http://{origin_addr}\"]\n[tokens]\nrequired = true\n[tokens.keys]\n{keys}\n"
        );
        std::fs::write(&cfg, text).unwrap();
    };
    write_cfg(&format!("k1 = \"{s1}\""));
    let mut e = segue();
    e.args(["edge", "--config"]).arg(&cfg);
    let (edge, edge_addr) = spawn_server(e);

    let path = format!("/a/{}/high.ogg", "cd".repeat(32));
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let signed = |id: &str, secret: &str| {
        let q = Key::from_hex(id, secret).unwrap().sign("GET", &path, &Claims { exp, ..Default::default() });
        format!("{path}?{q}")
    };
    let mut conn = std::net::TcpStream::connect(edge_addr).unwrap();
    assert_eq!(keepalive_get(&mut conn, &signed("k1", &s1)), 200);
    assert_eq!(keepalive_get(&mut conn, &signed("k2", &s2)), 403);

    // Rotate: k2 replaces k1; SIGHUP; the same connection sees the new keys.
    write_cfg(&format!("k2 = \"{s2}\""));
    let hup = || assert!(Command::new("kill").args(["-HUP", &edge.id().to_string()]).status().unwrap().success());
    hup();
    let mut rotated = false;
    for _ in 0..100 {
        if keepalive_get(&mut conn, &signed("k2", &s2)) == 200 {
            rotated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rotated, "the new key never took effect");
    assert_eq!(keepalive_get(&mut conn, &signed("k1", &s1)), 403);

    // A broken config is refused and the running one stays.
    write_cfg("k3 = \"not-hex\"");
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(keepalive_get(&mut conn, &signed("k2", &s2)), 200);
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// GET with curl, returning status, lowercased headers and body.
fn get_with_headers(url: &str) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    let out = Command::new("curl").args(["-sS", "-D", "-", "-o", "-", url]).output().expect("curl");
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&out.stdout[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().into()))
        .collect();
    (status, headers, out.stdout[split + 4..].to_vec())
}

#[test]
fn edge_restarts_warm_from_its_ssd_and_never_serves_corrupt_slices() {
    let dir = tempfile::tempdir().unwrap();
    let cid = "cd".repeat(32);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    put_object(dir.path(), &cid, &data);
    let (origin, origin_addr) = spawn_origin(dir.path());
    let ssd = dir.path().join("ssd");
    let start_edge = || {
        let mut e = segue();
        e.args(["edge", "--listen", "127.0.0.1:0", "--mem-cache-mb", "16", "--ssd-cache-mb", "64"])
            .args(["--upstream", &format!("http://{origin_addr}"), "--ssd-cache-dir"])
            .arg(&ssd);
        spawn_server(e)
    };
    let path = format!("/a/{cid}/high.ogg");

    // First life: asked for twice, so every slice is admitted to the SSD.
    let (edge, addr) = start_edge();
    for want in ["MISS", "HIT-MEM"] {
        let (code, h, body) = get_with_headers(&format!("http://{addr}{path}"));
        assert_eq!((code, h["x-cache"].as_str()), (200, want));
        assert!(body == data);
    }
    let mut written = 0.0;
    for _ in 0..200 {
        written = metric(addr, "edge_ssd_written_bytes");
        if written >= data.len() as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(written >= data.len() as f64, "only {written} bytes reached the SSD");
    // The object's record is written by the journal's own thread: wait until it is.
    wait_for("the object's journal record", 10, || {
        std::fs::read_to_string(ssd.join("objects.journal")).is_ok_and(|j| j.contains(&path))
    });

    // kill -9, then restart: every byte from the SSD, nothing from upstream.
    let mut edge = edge;
    edge.kill().unwrap();
    edge.wait().unwrap();
    let (edge, addr) = start_edge();
    let (code, h, body) = get_with_headers(&format!("http://{addr}{path}"));
    assert_eq!((code, h["x-cache"].as_str()), (200, "HIT-SSD"));
    assert!(body == data, "body after kill -9 differs");
    let (code, ranged) = get(&format!("http://{addr}{path}"), &["-r", "2000000-2099999"]);
    assert_eq!((code, ranged.as_slice()), (206, &data[2_000_000..2_100_000]));
    assert_eq!(metric(addr, "edge_upstream_requests_total"), 0.0);

    // A graceful restart is warm too.
    assert!(terminate(edge).success());
    let (edge, addr) = start_edge();
    let (code, h, body) = get_with_headers(&format!("http://{addr}{path}"));
    assert_eq!(code, 200);
    assert!(h["x-cache"].starts_with("HIT-"), "{h:?}");
    assert!(body == data);
    assert_eq!(metric(addr, "edge_upstream_requests_total"), 0.0);
    assert!(terminate(edge).success());

    // Corrupt the SSD files behind the edge's back: what fails its checksum is dropped
    // and fetched again, never served.
    for f in std::fs::read_dir(&ssd).unwrap() {
        let p = f.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with("slices.") {
            continue;
        }
        let mut bytes = std::fs::read(&p).unwrap();
        for i in (4096..bytes.len()).step_by(997) {
            bytes[i] ^= 0x5a;
        }
        std::fs::write(&p, bytes).unwrap();
    }
    let (edge, addr) = start_edge();
    let (code, _, body) = get_with_headers(&format!("http://{addr}{path}"));
    assert_eq!(code, 200);
    assert!(body == data, "a corrupt slice was served");
    assert!(metric(addr, "edge_upstream_requests_total") > 0.0);
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A metric from an edge's admin listener (where `/metrics` is once it has one).
fn admin_metric(admin: SocketAddr, name: &str) -> f64 {
    let (_, page) = get(&format!("http://{admin}/metrics"), &["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")]);
    metric_in(&page, name, "")
}

/// An edge process with an admin listener: (child, [edge, admin]).
fn spawn_edge_with_admin(upstream: SocketAddr, name: &str, dir: &std::path::Path) -> (Child, Vec<SocketAddr>) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nupstreams = [\"http://{upstream}\"]\nname = \"{name}\"\n\
             admin_listen = \"127.0.0.1:0\"\nadmin_tokens = [\"{ADMIN_TOKEN}\"]\nmem_cache_mb = 32\n\
             ssd_cache_dir = \"{}\"\nssd_cache_mb = 64\n",
            dir.join(format!("{name}-ssd")).display()
        ),
    )
    .unwrap();
    let mut e = segue();
    e.args(["edge", "--config"]).arg(&cfg);
    spawn_servers(e, 2)
}

#[test]
fn shield_and_edges_coalesce_purge_prewarm_and_outlive_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Vec<(String, Vec<u8>)> = (0..3u32)
        .map(|n| {
            let cid = format!("{:064x}", 0xabc0 + n);
            let data: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(7 + n) >> 5) as u8).collect();
            put_object(dir.path(), &cid, &data);
            (cid, data)
        })
        .collect();
    let (origin, origin_addr) = spawn_origin(dir.path());
    let (shield, s) = spawn_edge_with_admin(origin_addr, "shield", dir.path());
    let (edge1, e1) = spawn_edge_with_admin(s[0], "edge1", dir.path());
    let (edge2, e2) = spawn_edge_with_admin(s[0], "edge2", dir.path());
    let path = |i: usize| format!("/a/{}/high.ogg", objects[i].0);
    let slices = 1_500_000u64.div_ceil(256 * 1024) as f64;

    // A cold storm on both edges at once: one origin fetch per slice (via the shield).
    let storm = |addr: SocketAddr| {
        let target = format!("http://{addr}");
        let p = path(0);
        std::thread::spawn(move || {
            segue()
                .args(["loadtest", "--target", &target, "--path", &p, "--range-kib", "0", "--storm"])
                .args(["--connections", "100", "--json"])
                .output()
                .unwrap()
        })
    };
    let (a, b) = (storm(e1[0]), storm(e2[0]));
    for out in [a.join().unwrap(), b.join().unwrap()] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(100), Some(0)), "{r}");
    }
    assert_eq!(admin_metric(s[1], "edge_upstream_requests_total"), slices, "the shield fetched a slice twice");
    // With an admin listener, /metrics is there (behind the token), not on the public port.
    assert_eq!(get(&format!("http://{}/metrics", s[0]), &[]).0, 404);
    assert_eq!(get(&format!("http://{}/metrics", s[1]), &[]).0, 401);
    assert!(admin_metric(e1[1], "edge_upstream_requests_total") <= slices);

    // Admin API: a token is required; unknown objects are 404; bad requests 400.
    assert_eq!(admin(e1[1], "GET", "/admin/stats", None, None).0, 401);
    assert_eq!(admin(e1[1], "GET", "/admin/stats", Some("wrong-token-wrong-token"), None).0, 401);
    let (code, stats) = admin(e1[1], "GET", "/admin/stats", Some(ADMIN_TOKEN), None);
    assert_eq!((code, stats["objects"].as_u64()), (200, Some(1)), "{stats}");
    let unknown = format!("{{\"content_id\": \"{}\"}}", "9".repeat(64));
    let (code, body) = admin(e1[1], "POST", "/admin/purge", Some(ADMIN_TOKEN), Some(&unknown));
    assert_eq!((code, body["error"].as_str()), (404, Some("not_found")));
    let (code, body) = admin(e1[1], "POST", "/admin/purge", Some(ADMIN_TOKEN), Some("{\"tag\": 5}"));
    assert_eq!((code, body["error"].as_str()), (400, Some("bad_request")), "{body}");

    // The shield has the object on its SSD too (both edges asked: admitted)...
    let mut on_ssd = 0.0;
    for _ in 0..100 {
        on_ssd = admin_metric(s[1], "edge_ssd_written_bytes");
        if on_ssd >= 1_500_000.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(on_ssd >= 1_500_000.0, "the shield wrote {on_ssd} bytes to its SSD");
    // ...and purge by tag on every hop removes every tier: the next request goes all the
    // way to the origin again.
    let tag = format!("{{\"tag\": \"{}/high\"}}", objects[0].0);
    for hop in [s[1], e1[1], e2[1]] {
        let (code, body) = admin(hop, "POST", "/admin/purge", Some(ADMIN_TOKEN), Some(&tag));
        assert_eq!((code, body["purged"].as_u64()), (200, Some(1)), "{body}");
    }
    let (code, h, body) = get_with_headers(&format!("http://{}{}", e1[0], path(0)));
    assert_eq!((code, h["x-cache"].as_str()), (200, "MISS"));
    assert!(body == objects[0].1);
    assert_eq!(admin_metric(s[1], "edge_upstream_requests_total"), 2.0 * slices);

    // Soft purge: marked stale, revalidated (same version: the slices stay).
    let soft = format!("{{\"content_id\": \"{}\", \"soft\": true}}", objects[0].0);
    assert_eq!(admin(e1[1], "POST", "/admin/purge", Some(ADMIN_TOKEN), Some(&soft)).0, 200);
    let before = admin_metric(e1[1], "edge_upstream_requests_total");
    let (code, body) = get(&format!("http://{}{}", e1[0], path(0)), &[]);
    assert!(code == 200 && body == objects[0].1);
    assert_eq!(admin_metric(e1[1], "edge_upstream_requests_total"), before + 1.0, "revalidation is one slice fetch");

    // Pre-warm edge2 with objects 1 and 2 through the shield, with progress.
    let job = format!("{{\"paths\": [\"{}\", \"{}\"]}}", path(1), path(2));
    let (code, started) = admin(e2[1], "POST", "/admin/prewarm", Some(ADMIN_TOKEN), Some(&job));
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_u64().unwrap();
    let mut view = serde_json::Value::Null;
    for _ in 0..200 {
        view = admin(e2[1], "GET", &format!("/admin/prewarm/{id}"), Some(ADMIN_TOKEN), None).1;
        if view["state"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((view["state"].as_str(), view["done"].as_u64()), (Some("done"), Some(2)), "{view}");
    assert_eq!(view["bytes"].as_u64(), Some(3_000_000));
    let fetched = admin_metric(e2[1], "edge_upstream_requests_total");
    for i in [1, 2] {
        let (code, h, body) = get_with_headers(&format!("http://{}{}", e2[0], path(i)));
        assert_eq!((code, h["x-cache"].as_str()), (200, "HIT-MEM"));
        assert!(body == objects[i].1);
    }
    assert_eq!(admin_metric(e2[1], "edge_upstream_requests_total"), fetched);

    // A request that already passed through this POP is a loop: refused.
    let (code, body) = get(&format!("http://{}{}", e1[0], path(1)), &["-H", "Via: 1.1 other, 1.1 edge1"]);
    assert_eq!(code, 508, "{}", String::from_utf8_lossy(&body));

    // The origin goes away: cached bytes are still served, uncached ones fail fast (502).
    assert!(terminate(origin).success());
    let (code, body) = get(&format!("http://{}{}", e2[0], path(1)), &["-r", "0-99999"]);
    assert!(code == 206 && body == objects[1].1[..100_000]);
    let t = std::time::Instant::now();
    let (code, body) = get(&format!("http://{}/a/{}/high.ogg", e1[0], "e".repeat(64)), &[]);
    assert_eq!(code, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("upstream"));
    assert!(t.elapsed() < Duration::from_secs(30));
    for p in [edge1, edge2, shield] {
        assert!(terminate(p).success());
    }
}

/// A small tmpfs mounted for one test (the "disk" that fills up), unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: std::path::PathBuf, mib: u32) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "this test mounts a {mib} MiB tmpfs as a full disk and needs root (CI runs as root)");
        SmallDisk(at)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_ssd_directory_degrades_to_memory_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path().join("ssd"), 40);
    let objects: Vec<(String, Vec<u8>)> = (0..14u32)
        .map(|n| {
            let cid = format!("{:064x}", 0xd15c0 + n);
            let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(31 + n) >> 7) as u8).collect();
            put_object(dir.path(), &cid, &data);
            (cid, data)
        })
        .collect();
    let (origin, origin_addr) = spawn_origin(dir.path());
    let log = dir.path().join("edge.log");
    let mut e = segue();
    e.args(["edge", "--listen", "127.0.0.1:0", "--mem-cache-mb", "64", "--ssd-cache-mb", "64"])
        .args(["--upstream", &format!("http://{origin_addr}"), "--ssd-cache-dir"])
        .arg(&disk.0)
        .stderr(std::fs::File::create(&log).unwrap());
    let (edge, addr) = spawn_server(e);

    // Every object asked for twice (admitted to the SSD): 42 MB into a 40 MiB disk.
    let mut saw_full = false;
    for (cid, data) in &objects {
        for _ in 0..2 {
            let (code, body) = get(&format!("http://{addr}/a/{cid}/high.ogg"), &[]);
            assert!(code == 200 && body == *data, "wrong body for {cid}");
        }
        std::thread::sleep(Duration::from_millis(150));
        saw_full |= metric(addr, "edge_ssd_full") == 1.0;
    }
    for _ in 0..40 {
        saw_full |= metric(addr, "edge_ssd_full") == 1.0;
        if saw_full {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_full, "the edge never noticed its SSD directory was full");
    // Still serving everything, from memory, and the warning was logged.
    for (cid, data) in &objects {
        let (code, body) = get(&format!("http://{addr}/a/{cid}/high.ogg"), &["-r", "1000000-1099999"]);
        assert!(code == 206 && body == data[1_000_000..1_100_000]);
    }
    assert_eq!(get(&format!("http://{addr}/healthz"), &[]).0, 200);
    assert!(terminate(edge).success(), "the edge did not stop cleanly with a full disk");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("SSD directory is full"), "no warning logged:\n{text}");
    assert!(terminate(origin).success());
    drop(disk);
}

#[test]
fn kill_9_during_ssd_writes_then_restart_serves_nothing_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let objects: Vec<(String, Vec<u8>)> = (0..20u32)
        .map(|n| {
            let cid = format!("{:064x}", 0x4b1d0 + n);
            let data: Vec<u8> = (0..1_200_000u32).map(|i| (i.wrapping_mul(131 + n) >> 9) as u8).collect();
            put_object(dir.path(), &cid, &data);
            (cid, data)
        })
        .collect();
    let paths = dir.path().join("paths.txt");
    std::fs::write(&paths, objects.iter().map(|(c, _)| format!("/a/{c}/high.ogg\n")).collect::<String>()).unwrap();
    let (origin, origin_addr) = spawn_origin(dir.path());
    let ssd = dir.path().join("ssd");
    let start_edge = || {
        let mut e = segue();
        e.args(["edge", "--listen", "127.0.0.1:0", "--mem-cache-mb", "64", "--ssd-cache-mb", "256"])
            .args(["--upstream", &format!("http://{origin_addr}"), "--ssd-cache-dir"])
            .arg(&ssd);
        spawn_server(e)
    };

    // Load that keeps the SSD busy, and a kill -9 in the middle of it.
    let (mut edge, addr) = start_edge();
    let target = format!("http://{addr}");
    let p = paths.clone();
    let load = std::thread::spawn(move || {
        segue()
            .args(["loadtest", "--target", &target, "--paths-file"])
            .arg(&p)
            .args(["--range-kib", "0", "--connections", "8", "--duration-secs", "3", "--json"])
            .output()
            .unwrap()
    });
    let mut written = 0.0;
    for _ in 0..100 {
        written = metric(addr, "edge_ssd_written_bytes");
        if written > 4_000_000.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    edge.kill().unwrap();
    edge.wait().unwrap();
    let _ = load.join();
    assert!(written > 0.0, "nothing was being written when the edge was killed");

    // After the restart every object is byte-exact, whatever the SSD kept.
    let (edge, addr) = start_edge();
    for (cid, data) in &objects {
        let (code, body) = get(&format!("http://{addr}/a/{cid}/high.ogg"), &[]);
        assert!(code == 200 && body == *data, "object {cid} differs after kill -9");
    }
    assert!(metric(addr, "edge_ssd_read_bytes") > 0.0, "nothing was recovered from the SSD");
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// curl over TLS to `name` (resolved to 127.0.0.1) with the test CA: (HTTP version, status, body).
fn tls_get(port: u16, name: &str, ca: &std::path::Path, target: &str, extra: &[&str]) -> (String, u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_version} %{http_code}", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{name}:{port}{target}"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl https://{name}:{port}{target}: {}", String::from_utf8_lossy(&out.stderr));
    let mut body = out.stdout;
    let pos = body.iter().rposition(|&b| b == b'\n').unwrap();
    let tail = String::from_utf8_lossy(&body[pos + 1..]).to_string();
    body.truncate(pos);
    let (version, code) = tail.split_once(' ').unwrap();
    (version.to_string(), code.parse().unwrap(), body)
}

#[test]
fn tls_listener_serves_http2_and_http1_by_sni_and_reloads_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let cid = "7e".repeat(32);
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
    put_object(dir.path(), &cid, &data);
    let (origin, origin_addr) = spawn_origin(dir.path());

    let ca = test_ca();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    leaf_cert(&ca, &["pop-a.segue.test"], dir.path(), "a");
    leaf_cert(&ca, &["*.cdn.segue.test"], dir.path(), "b");
    let d = dir.path().display();
    let cfg = dir.path().join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\nh3_listen = \"127.0.0.1:0\"\n\
             upstreams = [\"http://{origin_addr}\"]\n\
             [[tls_certs]]\ncert = \"{d}/a.pem\"\nkey = \"{d}/a.key\"\nnames = [\"pop-a.segue.test\"]\n\
             [[tls_certs]]\ncert = \"{d}/b.pem\"\nkey = \"{d}/b.key\"\nnames = [\"*.cdn.segue.test\"]\n"
        ),
    )
    .unwrap();
    let mut e = segue();
    e.args(["edge", "--config"]).arg(&cfg);
    let (edge, addrs) = spawn_servers(e, 3);
    let (plain, tls, quic) = (addrs[0], addrs[1].port(), addrs[2]);
    let path = format!("/a/{cid}/high.ogg");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let h3_get = |name: &str, range: Option<&str>| {
        let mut req = http::Request::get(path.as_str());
        if let Some(r) = range {
            req = req.header("range", format!("bytes={r}"));
        }
        let roots = segue_core::client::roots_from_pem(&ca_pem).unwrap();
        let (resp, body) = rt
            .block_on(async {
                let h3 = segue_core::client::Connector::new(Protocol::Http3, quic, name, Some(roots))?;
                segue_core::client::fetch(&h3, req.body(()).unwrap()).await
            })
            .expect("HTTP/3 request");
        (resp.status().as_u16(), resp.headers().get("x-cache").cloned(), body.to_vec())
    };

    // The same bytes over HTTP/1.1, HTTP/2, HTTP/1.1 over TLS and HTTP/3, for every range form.
    for range in ["0-99999", "1500000-", "-70000", "262100-262200"] {
        let (code, _, h3) = h3_get("pop-a.segue.test", Some(range));
        assert_eq!(code, 206);
        let (_, h1) = get(&format!("http://{plain}{path}"), &["-r", range]);
        assert!(h3 == h1, "HTTP/3 body differs for {range}");
        let (code, h1) = get(&format!("http://{plain}{path}"), &["-r", range]);
        assert_eq!(code, 206);
        let (v, code, h2) = tls_get(tls, "pop-a.segue.test", &ca_pem, &path, &["--http2", "-r", range]);
        assert_eq!((v.as_str(), code), ("2", 206));
        assert!(h2 == h1, "HTTP/2 body differs for {range}");
        let (v, code, t1) = tls_get(tls, "pop-a.segue.test", &ca_pem, &path, &["--http1.1", "-r", range]);
        assert_eq!((v.as_str(), code), ("1.1", 206));
        assert!(t1 == h1, "HTTP/1.1+TLS body differs for {range}");
    }
    let (_, code, whole) = tls_get(tls, "pop-a.segue.test", &ca_pem, &path, &["--http2"]);
    assert!(code == 200 && whole == data);
    // HTTP/2 DATA frames are as large as the client accepts: 16 KiB by default, larger
    // when it says so (fewer frames, records and sends per response).
    let largest_frame = |max_frame: Option<u32>| {
        rt.block_on(async {
            use http_body_util::BodyExt;
            let roots = segue_core::client::roots_from_pem(&ca_pem).unwrap();
            let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{tls}").parse().unwrap();
            let mut h2 =
                segue_core::client::Connector::new(Protocol::Http2, tls_addr, "pop-a.segue.test", Some(roots)).unwrap();
            if let Some(m) = max_frame {
                h2 = h2.with_h2_max_frame(m);
            }
            let mut conn = h2.connect().await.unwrap();
            let req = http::Request::get(path.as_str()).header("range", "bytes=0-999999").body(()).unwrap();
            let mut body = conn.send(req).await.unwrap().into_body();
            let (mut largest, mut total) = (0, 0);
            while let Some(frame) = body.frame().await {
                if let Ok(chunk) = frame.unwrap().into_data() {
                    largest = largest.max(chunk.len());
                    total += chunk.len();
                }
            }
            assert_eq!(total, 1_000_000);
            largest
        })
    };
    assert_eq!(largest_frame(None), 16_384);
    assert!(largest_frame(Some(256 * 1024)) > 65_536, "the server kept to 16 KiB frames");
    let (code, x_cache, whole) = h3_get("x9.cdn.segue.test", None);
    assert!(code == 200 && whole == data && x_cache.is_some());
    // TCP responses advertise HTTP/3.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-"])
        .arg(format!("http://{plain}{path}"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains(&format!("alt-svc: h3=\":{}\"", quic.port())), "{head}");
    // SNI picks the certificate: curl verifies the name against what it is given.
    let (v, code, _) = tls_get(tls, "x1.cdn.segue.test", &ca_pem, "/healthz", &["--http2"]);
    assert_eq!((v.as_str(), code), ("2", 200));
    let (_, page) = get(&format!("http://{plain}/metrics"), &[]);
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("protocol=\"h2\"") && page.contains("protocol=\"http/1.1\"") && page.contains("protocol=\"h3\""),
        "{page}"
    );

    // Rotate certificate A to a new name, SIGHUP: a download already running goes on,
    // and new connections get the new certificate.
    let ca_path = ca_pem.clone();
    let slow_path = path.clone();
    let slow = std::thread::spawn(move || {
        tls_get(tls, "pop-a.segue.test", &ca_path, &slow_path, &["--http2", "--limit-rate", "1M"])
    });
    std::thread::sleep(Duration::from_millis(300));
    leaf_cert(&ca, &["pop-a2.segue.test"], dir.path(), "a");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace("\"pop-a.segue.test\"", "\"pop-a2.segue.test\""),
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &edge.id().to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (v, code, _) = tls_get(tls, "pop-a2.segue.test", &ca_pem, "/healthz", &["--http2"]);
    assert_eq!((v.as_str(), code), ("2", 200));
    assert_eq!(h3_get("pop-a2.segue.test", Some("0-9")).0, 206, "HTTP/3 did not pick up the new certificate");
    let (_, code, body) = slow.join().unwrap();
    assert!(code == 200 && body == data, "the download across the reload broke");

    // A certificate file that does not parse is refused at start, naming the field.
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    let out = segue()
        .args(["edge", "--listen", "127.0.0.1:0", "--upstream", &format!("http://{origin_addr}")])
        .args(["--tls-listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.path().join("bad.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("b.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_certs[0].cert") && err.contains("bad.pem"), "{err}");
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// An HTTP/2 client that opens streams and cancels them at once (the "rapid reset"
/// attack) is cut off with GOAWAY; other clients are served throughout.
#[test]
fn http2_rapid_reset_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    leaf_cert(&ca, &["pop.segue.test"], dir.path(), "p");
    let (origin, origin_addr) = spawn_origin(dir.path());
    let mut e = segue();
    e.args(["edge", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .args(["--upstream", &format!("http://{origin_addr}"), "--tls-cert"])
        .arg(dir.path().join("p.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("p.key"));
    let (edge, addrs) = spawn_servers(e, 2);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Bounded: if the server never cuts the connection, the attempt gives up after 30 s.
    let attack = async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(ca.der().to_vec())).unwrap();
        let stream = tls_connect(addrs[1], &tls_client(roots, &[b"h2"])).await;
        let (mut client, conn) = h2::client::handshake(stream).await.unwrap();
        let driver = tokio::spawn(conn);
        let mut opened = 0u32;
        for _ in 0..20_000 {
            let req =
                http::Request::get(format!("https://pop.segue.test/a/{}/high.ogg", "f".repeat(64))).body(()).unwrap();
            match client.send_request(req, true) {
                Ok((response, _)) => {
                    opened += 1;
                    drop(response); // RST_STREAM(CANCEL) right away
                }
                Err(_) => break,
            }
            if opened.is_multiple_of(64) {
                tokio::task::yield_now().await;
                if driver.is_finished() {
                    break;
                }
            }
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
        (opened, matches!(ended, Ok(Ok(Err(_)))) || matches!(ended, Ok(Ok(Ok(())))))
    };
    let (streams, cut_off) =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), attack).await.unwrap_or((0, false)) });
    eprintln!("rapid reset: {streams} streams opened before the server cut the connection");
    assert!(cut_off, "the server kept a rapid-reset connection open after {streams} streams");
    assert!(streams < 20_000, "all {streams} streams were accepted");
    // Everyone else is still served.
    assert_eq!(get(&format!("http://{}/healthz", addrs[0]), &[]).0, 200);
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// A returning TLS client resumes its session (no certificate exchange), also after the
/// edge reloaded its certificates, and `/metrics` counts resumed handshakes.
#[test]
fn tls_sessions_resume_across_certificate_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, edge, addrs, ca_pem) = spawn_tls_edge(dir.path(), &[], "");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls = tls_client(segue_core::client::roots_from_pem(&ca_pem).unwrap(), &[]);
    // One HTTP/1.1 request per connection (reading the answer also reads the tickets).
    let connect = || {
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tls_connect(addrs[1], &tls).await;
            let kind = s.get_ref().1.handshake_kind();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: pop.segue.test\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
            kind
        })
    };
    assert_eq!(connect(), Some(rustls::HandshakeKind::Full));
    assert_eq!(connect(), Some(rustls::HandshakeKind::Resumed));
    Command::new("kill").args(["-HUP", &edge.id().to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(connect(), Some(rustls::HandshakeKind::Resumed), "a reload ended resumption");
    let (_, page) = get(&format!("http://{}/metrics", addrs[0]), &[]);
    let page = String::from_utf8_lossy(&page);
    let resumed = page.lines().find(|l| l.starts_with("tls_handshakes_total{kind=\"resumed\"}"));
    assert!(resumed.is_some_and(|l| l.ends_with(" 2")), "{page}");
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// An HTTP/2 client that never opens its flow-control window holds its streams no
/// longer than the send timeout: the stalled responses are dropped and the connection
/// closed.
#[test]
fn http2_streams_a_client_never_reads_are_dropped_after_the_send_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cid = "5c".repeat(32);
    let data: Vec<u8> = (0..600_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (origin, edge, addrs, ca_pem) = spawn_tls_edge(dir.path(), &[(&cid, &data)], "send_timeout_secs = 1");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let closed = rt.block_on(async {
        let roots = segue_core::client::roots_from_pem(&ca_pem).unwrap();
        let stream = tls_connect(addrs[1], &tls_client(roots, &[b"h2"])).await;
        // A zero window: the server may send headers, never a byte of a body.
        let (mut client, conn) =
            h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(stream).await.unwrap();
        let driver = tokio::spawn(conn);
        let mut responses = Vec::new();
        for _ in 0..8 {
            let req = http::Request::get(format!("https://pop.segue.test/a/{cid}/high.ogg")).body(()).unwrap();
            responses.push(client.send_request(req, true).unwrap().0);
        }
        // Liveness, not speed: the connection ends within a bound well past the 1 s limit.
        tokio::time::timeout(Duration::from_secs(15), driver).await.is_ok()
    });
    assert!(closed, "a client that never reads held its HTTP/2 streams open");
    let (_, page) = get(&format!("http://{}/metrics", addrs[0]), &[]);
    assert!(String::from_utf8_lossy(&page).contains("http_stream_send_timeouts_total"));
    assert_eq!(get(&format!("http://{}/healthz", addrs[0]), &[]).0, 200);
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// Every hop of a POP over TLS: the origin behind an `https://` upstream and the control
/// plane's heartbeats, both verified against the configured CA; an edge trusting another
/// CA gets nothing from either (502, no registration).
#[test]
fn upstream_and_control_plane_hops_run_over_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cid = "e7".repeat(32);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8).collect();
    put_object(d, &cid, &data);
    let ca = test_ca();
    std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
    leaf_cert(&ca, &["127.0.0.1"], d, "hop");
    let other = test_ca();
    std::fs::write(d.join("other-ca.pem"), other.pem()).unwrap();
    let certs = format!("[[tls_certs]]\ncert = \"{0}/hop.pem\"\nkey = \"{0}/hop.key\"\n", d.display());

    let origin_cfg = d.join("origin.toml");
    let store = d.join("store");
    std::fs::write(
        &origin_cfg,
        format!("listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{certs}", store.display()),
    )
    .unwrap();
    let mut o = segue();
    o.args(["origin", "--config"]).arg(&origin_cfg);
    let (origin, origin_addrs) = spawn_servers(o, 2);

    let cp_cfg = d.join("cp.toml");
    std::fs::write(
        &cp_cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ndatabase = \"sqlite://{}/cp.db\"\n\
             api_tokens = [\"{CP_API}\"]\n[pop_tokens]\nsecure = \"pop-token-secure-000000\"\n\
             insecure = \"pop-token-insecure-0000\"\n{certs}",
            d.display()
        ),
    )
    .unwrap();
    let mut c = segue();
    c.args(["control-plane", "--config"]).arg(&cp_cfg);
    let (cp, cp_addrs) = spawn_servers(c, 2);

    let edge = |name: &str, ca_file: &str| {
        let cfg = d.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:0\"\nname = \"{name}\"\nupstreams = [\"https://{}\"]\n\
                 [upstream_tls]\nca_file = \"{}/{ca_file}\"\n\
                 [control_plane]\nurl = \"https://{}\"\ntoken = \"pop-token-{name}-{}\"\nregion = \"default\"\nheartbeat_secs = 1\n",
                origin_addrs[1],
                d.display(),
                cp_addrs[1],
                "0".repeat(if name == "secure" { 6 } else { 4 }),
            ),
        )
        .unwrap();
        let mut e = segue();
        e.args(["edge", "--config"]).arg(&cfg);
        spawn_servers(e, 1)
    };
    let (secure, secure_addrs) = edge("secure", "ca.pem");
    let (insecure, insecure_addrs) = edge("insecure", "other-ca.pem");
    let path = format!("/a/{cid}/high.ogg");
    let (code, body) = get(&format!("http://{}{path}", secure_addrs[0]), &[]);
    assert!(code == 200 && body == data, "through the TLS upstream: {code}");
    let (code, _) = get(&format!("http://{}{path}", insecure_addrs[0]), &[]);
    assert_eq!(code, 502, "an upstream certificate from an untrusted CA is refused");
    wait_for("the POP registered over TLS", 20, || {
        let (_, v) = admin(cp_addrs[0], "GET", "/v1/pops", Some(CP_API), None);
        v["pops"].as_array().is_some_and(|p| p.iter().any(|p| p["id"] == "secure"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (_, v) = admin(cp_addrs[0], "GET", "/v1/pops", Some(CP_API), None);
    assert!(v["pops"].as_array().is_some_and(|p| p.iter().all(|p| p["id"] != "insecure")), "{v}");
    for p in [secure, insecure, cp, origin] {
        assert!(terminate(p).success());
    }
}

/// On SIGTERM the HTTP/3 listener sends GOAWAY and lets a response in flight finish
/// (within the grace period) instead of cutting its stream.
#[test]
fn http3_shutdown_drains_a_response_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let cid = "3d".repeat(32);
    // Far more than the client's stream window: the server is mid-body when it is told
    // to stop, held back by flow control until the client reads on.
    let data: Vec<u8> = (0..24_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let (origin, edge, addrs, ca_pem) = spawn_tls_edge(dir.path(), &[(&cid, &data)], "");
    let path = format!("/a/{cid}/high.ogg");
    // Warm the cache, so the drained response is served from it.
    assert_eq!(get(&format!("http://{}{path}", addrs[0]), &[]).0, 200);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = rt.block_on(async {
        let roots = segue_core::client::roots_from_pem(&ca_pem).unwrap();
        let h3 = segue_core::client::Connector::new(Protocol::Http3, addrs[2], "pop.segue.test", Some(roots)).unwrap();
        let mut conn = h3.connect().await.unwrap();
        let resp = conn.send(http::Request::get(path.as_str()).body(()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        Command::new("kill").args(["-TERM", &edge.id().to_string()]).status().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        use http_body_util::BodyExt;
        let r = resp.into_body().collect().await.map(|b| b.to_bytes().len());
        if let Err(e) = &r {
            eprintln!("h3 body error: {e:?}");
        }
        drop(conn);
        r
    });
    assert_eq!(got.ok(), Some(data.len()), "the response in flight was cut at shutdown");
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// A TLS client config trusting `roots` and offering `alpn` (none: HTTP/1.1 by default).
fn tls_client(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(c)
}

/// A TLS connection to `pop.segue.test` at `addr`.
async fn tls_connect(
    addr: SocketAddr,
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("pop.segue.test").unwrap();
    tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.unwrap()
}

/// An edge with TLS (HTTP/1.1 + HTTP/2) and HTTP/3 listeners for `pop.segue.test`, in
/// front of an origin holding `objects`; `extra` is appended to its config. Returns the
/// origin, the edge, its [plain, tls, h3] addresses and the CA file.
fn spawn_tls_edge(
    dir: &std::path::Path,
    objects: &[(&str, &[u8])],
    extra: &str,
) -> (Child, Child, Vec<SocketAddr>, std::path::PathBuf) {
    for (cid, data) in objects {
        put_object(dir, cid, data);
    }
    let (origin, origin_addr) = spawn_origin(dir);
    let ca = test_ca();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    leaf_cert(&ca, &["pop.segue.test"], dir, "p");
    let d = dir.display();
    let cfg = dir.join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\nh3_listen = \"127.0.0.1:0\"\n\
             upstreams = [\"http://{origin_addr}\"]\n{extra}\n\
             [[tls_certs]]\ncert = \"{d}/p.pem\"\nkey = \"{d}/p.key\"\nnames = [\"pop.segue.test\"]\n"
        ),
    )
    .unwrap();
    let mut e = segue();
    e.args(["edge", "--config"]).arg(&cfg);
    let (edge, addrs) = spawn_servers(e, 3);
    (origin, edge, addrs, ca_pem)
}

/// `segue loadtest` drives the edge over every protocol, HTTP/2 and HTTP/3 with several
/// streams per connection, and every response is complete.
#[test]
fn loadtest_speaks_http1_tls_http2_and_http3() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cid = "1a".repeat(32);
    let (origin, edge, addrs, ca_pem) = spawn_tls_edge(dir.path(), &[(&cid, &data)], "");
    let path = format!("/a/{cid}/high.ogg");
    for (protocol, target, streams) in [
        ("h1", format!("http://{}", addrs[0]), "1"),
        ("h1-tls", format!("https://{}", addrs[1]), "1"),
        ("h2", format!("https://{}", addrs[1]), "4"),
        ("h3", format!("https://{}", addrs[2]), "4"),
    ] {
        let out = segue()
            .args(["loadtest", "--target", &target, "--protocol", protocol, "--streams", streams])
            .args(["--server-name", "pop.segue.test", "--ca"])
            .arg(&ca_pem)
            .args(["--path", &path, "--connections", "2", "--requests", "60", "--range-kib", "256", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{protocol}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["protocol"], protocol);
        assert_eq!(
            (report["requests"].as_u64(), report["errors"].as_u64()),
            (Some(60), Some(0)),
            "{protocol}: {report}"
        );
        assert_eq!(report["statuses"]["206"], 60, "{protocol}: {report}");
    }
    let (_, page) = get(&format!("http://{}/metrics", addrs[0]), &[]);
    let page = String::from_utf8_lossy(&page);
    for label in ["protocol=\"http/1.1\"", "protocol=\"h2\"", "protocol=\"h3\""] {
        assert!(page.contains(label), "no {label} in metrics");
    }
    // Usage errors name the problem.
    let out = segue()
        .args(["loadtest", "--target", &format!("https://{}", addrs[1]), "--protocol", "h2", "--path", &path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
    let out = segue()
        .args(["loadtest", "--target", &format!("http://{}", addrs[0]), "--protocol", "h4", "--path", &path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("h4"));
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// Clients that abuse the protocol are limited on every listener while others are served:
/// oversized header blocks get 431 (HTTP/1.1, HTTP/1.1+TLS, HTTP/2, HTTP/3); a client
/// that stops reading is cut off after `send_timeout_secs` (its TCP connection for
/// HTTP/1.1 and HTTP/2, its stream for HTTP/3) instead of holding it forever.
#[test]
fn header_floods_and_stalled_readers_are_limited_on_every_protocol() {
    let dir = tempfile::tempdir().unwrap();
    const BIG: usize = 24 << 20;
    let data: Vec<u8> = (0..BIG as u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8).collect();
    let cid = "5b".repeat(32);
    let (origin, edge, addrs, ca_pem) = spawn_tls_edge(dir.path(), &[(&cid, &data)], "send_timeout_secs = 1");
    let (plain, tls, quic) = (addrs[0], addrs[1], addrs[2]);
    let path = format!("/a/{cid}/high.ogg");
    // Warm the cache so stalls measure the client side only.
    assert_eq!(get(&format!("http://{plain}{path}"), &["-o", "/dev/null"]).0, 200);

    // Header floods: one 20 KiB header, and 1,000 small ones (the limit is 16 KiB).
    let huge = format!("X-Flood: {}", "a".repeat(20 * 1024));
    let many: Vec<String> = (0..1000).flat_map(|i| ["-H".to_string(), format!("X-Flood-{i}: 1")]).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for flood in [vec!["-H", huge.as_str()], many.clone()] {
        assert_eq!(get(&format!("http://{plain}/healthz"), &flood).0, 431, "HTTP/1.1");
        let (v, code, _) =
            tls_get(tls.port(), "pop.segue.test", &ca_pem, "/healthz", &[&["--http1.1"], &flood[..]].concat());
        assert_eq!((v.as_str(), code), ("1.1", 431), "HTTP/1.1 over TLS");
        let (v, code, _) =
            tls_get(tls.port(), "pop.segue.test", &ca_pem, "/healthz", &[&["--http2"], &flood[..]].concat());
        assert_eq!((v.as_str(), code), ("2", 431), "HTTP/2");
    }
    // Past four times the limit, an HTTP/2 client is not answered but cut off (GOAWAY).
    let way_over = format!("X-Flood: {}", "a".repeat(100 * 1024));
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--http2", "--retry", "0", "--cacert"])
        .arg(&ca_pem)
        .args(["--resolve", &format!("pop.segue.test:{}:127.0.0.1", tls.port()), "-H", &way_over])
        .arg(format!("https://pop.segue.test:{}/healthz", tls.port()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "HTTP/2: a 100 KiB header block was served");
    let (v, code, _) = tls_get(tls.port(), "pop.segue.test", &ca_pem, "/healthz", &["--http2"]);
    assert_eq!((v.as_str(), code), ("2", 200));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _in_runtime = rt.enter();
    let roots = || segue_core::client::roots_from_pem(&ca_pem).unwrap();
    let h3 = segue_core::client::Connector::new(Protocol::Http3, quic, "pop.segue.test", Some(roots())).unwrap();
    rt.block_on(async {
        let mut conn = h3.connect().await.unwrap();
        let req = http::Request::get("/healthz").header("x-flood", "a".repeat(64 * 1024)).body(()).unwrap();
        // The client may already know the server's limit from its SETTINGS and refuse to
        // send; otherwise the server answers 431. Either way the request is not served.
        if let Ok(resp) = conn.send(req).await {
            assert_eq!(resp.status(), 431, "HTTP/3");
        }
        // The connection still serves a normal request.
        let mut conn = h3.connect().await.unwrap();
        let resp = conn.send(http::Request::get("/healthz").body(()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
    });

    // Stalled readers. Each client asks for 24 MB, reads nothing for 4 s (the edge's send
    // timeout is 1 s), then reads what it can: the server must have given up before the
    // end. Meanwhile other clients are served.
    let stalled_h1 = async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(plain).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got += n,
                Err(_) => panic!("HTTP/1.1: the stalled connection was left open"),
            }
        }
        got
    };
    let stalled_h2 = async {
        let tls_config = tls_client(roots(), &[b"h2"]);
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = sock.connect(tls).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("pop.segue.test").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls_config).connect(name, tcp).await.unwrap();
        // Windows wide open: the server is held back by the socket, not by flow control.
        let (mut client, conn) = h2::client::Builder::new()
            .initial_window_size(64 << 20)
            .initial_connection_window_size(64 << 20)
            .handshake::<_, bytes::Bytes>(stream)
            .await
            .unwrap();
        let mut conn = Box::pin(conn);
        let req = http::Request::get(format!("https://pop.segue.test{path}")).body(()).unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        let resp = tokio::select! {
            r = response => r.unwrap(),
            _ = &mut conn => panic!("HTTP/2 connection ended early"),
        };
        // Stop reading the socket entirely.
        tokio::time::sleep(Duration::from_secs(4)).await;
        tokio::spawn(conn);
        let mut body = resp.into_body();
        let mut got = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), body.data()).await {
                Ok(Some(Ok(b))) => got += b.len(),
                Ok(Some(Err(_))) | Ok(None) => break,
                Err(_) => panic!("HTTP/2: the stalled connection was left open"),
            }
        }
        got
    };
    let stalled_h3 = async {
        let mut conn = h3.connect().await.unwrap();
        let resp = conn.send(http::Request::get(path.as_str()).body(()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut body = resp.into_body();
        let mut got = 0usize;
        loop {
            use http_body_util::BodyExt;
            match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
                Ok(Some(Ok(f))) => got += f.data_ref().map_or(0, |d| d.len()),
                Ok(Some(Err(_))) | Ok(None) => break,
                Err(_) => panic!("HTTP/3: the stalled stream was left open"),
            }
        }
        got
    };
    let others = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut conn = h3.connect().await.unwrap();
        let resp = conn.send(http::Request::get(path.as_str()).header("range", "bytes=0-99").body(()).unwrap()).await;
        resp.unwrap().status()
    };
    let (h1, h2, h3_got, other) = rt.block_on(async { tokio::join!(stalled_h1, stalled_h2, stalled_h3, others) });
    eprintln!("stalled readers got h1 {h1} B, h2 {h2} B, h3 {h3_got} B of {BIG}");
    assert_eq!(other, 206, "a well-behaved client was not served during the stalls");
    assert!(h1 < BIG, "HTTP/1.1: the stalled client got the whole body");
    assert!(h2 < BIG, "HTTP/2: the stalled client got the whole body");
    assert!(h3_got < BIG, "HTTP/3: the stalled client got the whole body");
    assert_eq!(get(&format!("http://{plain}/healthz"), &[]).0, 200);
    for protocol in ["http/1.1", "tls", "h3"] {
        let (_, page) = get(&format!("http://{plain}/metrics"), &[]);
        let page = String::from_utf8_lossy(&page).to_string();
        assert!(
            page.lines()
                .any(|l| l.starts_with("http_send_timeouts_total") && l.contains(&format!("protocol=\"{protocol}\""))),
            "no send timeout counted for {protocol}"
        );
    }
    assert!(terminate(edge).success());
    assert!(terminate(origin).success());
}

/// RFC 3339 UTC time `secs_from_now` seconds from now.
fn rfc3339_in(secs_from_now: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    aws_smithy_types::DateTime::from_secs(now + secs_from_now)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
}

const CP_API: &str = "release-manager-token-0001";
const CP_ADMIN: &str = "edge-admin-token-000000001";

/// A control plane process on `port` with regions eu (UTC+1) and us (UTC-5).
fn spawn_control_plane(dir: &std::path::Path, port: u16, database: &str, origin: SocketAddr) -> Child {
    let cfg = dir.join("cp.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\norigin = \"http://{origin}\"\n\
             api_tokens = [\"{CP_API}\"]\n\
             heartbeat_timeout_secs = 4\ntick_millis = 200\nmax_attempts = 2\n\
             [pop_tokens]\ne1 = \"pop-token-e1-0000000\"\ne2 = \"pop-token-e2-0000000\"\ne3 = \"pop-token-e3-0000000\"\n\
             e4 = \"pop-token-e4-0000000\"\ne5 = \"pop-token-e5-0000000\"\n\
             [[regions]]\nname = \"eu\"\nutc_offset_minutes = 60\n[[regions]]\nname = \"us\"\nutc_offset_minutes = -300\n"
        ),
    )
    .unwrap();
    let mut c = segue();
    c.args(["control-plane", "--config"]).arg(&cfg);
    spawn_server(c).0
}

/// An edge POP `name` in `region` behind `upstream`, registered with the control plane,
/// whose admin API takes `admin_token`.
fn spawn_pop(
    dir: &std::path::Path,
    name: &str,
    region: &str,
    upstream: SocketAddr,
    cp_port: u16,
    admin_token: &str,
) -> (Child, Vec<SocketAddr>) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nname = \"{name}\"\n\
             upstreams = [\"http://{upstream}\"]\nadmin_tokens = [\"{admin_token}\"]\n\
             [control_plane]\nurl = \"http://127.0.0.1:{cp_port}\"\ntoken = \"pop-token-{name}-0000000\"\n\
             region = \"{region}\"\nheartbeat_secs = 1\n"
        ),
    )
    .unwrap();
    let mut e = segue();
    e.args(["edge", "--config"]).arg(&cfg);
    spawn_servers(e, 2)
}

/// Origin, a shield, three POPs in two regions and the control plane, all real processes.
/// A scheduled release pre-warms exactly the target region's POPs (the origin sends each
/// slice once), embargoes its content there until the drop, survives a kill -9 of the
/// control plane, and then a 1,000-client storm at the drop costs the origin nothing.
/// Purges fan out to every POP. Bad requests change nothing.
#[test]
fn control_plane_prewarms_a_release_embargoes_it_and_fans_out_purges() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/cp/state.db", dir.path().display());
    control_plane_scenario(dir.path(), &db);
}

/// The same scenario with the control plane's state in PostgreSQL (a real server from
/// scripts/services.sh; the schema is reset first).
#[test]
fn control_plane_on_postgresql() {
    let url = std::env::var("SEGUE_TEST_POSTGRES_URL")
        .expect("SEGUE_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh (it starts PostgreSQL)");
    let out = Command::new("psql")
        .args([&url, "-q", "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"])
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    control_plane_scenario(dir.path(), &url);
}

fn control_plane_scenario(dir: &std::path::Path, db: &str) {
    let objects: Vec<(String, Vec<u8>)> = (0..2u32)
        .map(|k| {
            let data: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761 + k) >> 7) as u8).collect();
            (format!("{:02x}", 0xd0 + k).repeat(32), data)
        })
        .collect();
    for (cid, data) in &objects {
        put_object(dir, cid, data);
    }
    let (origin, origin_addr) = spawn_origin(dir);
    let mut s = segue();
    s.args(["edge", "--listen", "127.0.0.1:0", "--upstream", &format!("http://{origin_addr}")]);
    let shield_cfg = dir.join("shield.toml");
    std::fs::write(&shield_cfg, "upstream_probe_secs = 0\nname = \"shield\"\n").unwrap();
    s.arg("--config").arg(&shield_cfg);
    let (shield, shield_addr) = spawn_server(s);
    let cp_port = free_port();
    let mut cp = spawn_control_plane(dir, cp_port, db, origin_addr);
    let cp_addr: SocketAddr = format!("127.0.0.1:{cp_port}").parse().unwrap();
    let pops: Vec<(Child, Vec<SocketAddr>)> = [("e1", "eu"), ("e2", "eu"), ("e3", "us")]
        .iter()
        .map(|(n, r)| spawn_pop(dir, n, r, shield_addr, cp_port, CP_ADMIN))
        .collect();
    wait_for("three healthy POPs", 20, || {
        let (_, v) = admin(cp_addr, "GET", "/v1/pops", Some(CP_API), None);
        v["pops"].as_array().is_some_and(|p| p.len() == 3 && p.iter().all(|p| p["healthy"] == true))
    });
    let (code, v) = admin(cp_addr, "GET", "/v1/pops?region=eu", Some(CP_API), None);
    assert_eq!((code, v["pops"].as_array().map(|a| a.len())), (200, Some(2)));

    // Bad requests: clear 4xx JSON, nothing created.
    let (cid1, cid2) = (objects[0].0.clone(), objects[1].0.clone());
    let release = |id: &str, content: &[&str], at: &str, regions: &[&str]| {
        serde_json::json!({"id": id, "content_ids": content, "tiers": ["high"], "release_at": at,
                           "regions": regions, "lead_secs": 4, "schedule": true})
        .to_string()
    };
    let unknown = "ab".repeat(32);
    for (body, token, code, error) in [
        (release("x", &[&unknown], &rfc3339_in(60), &["eu"]), CP_API, 400, "unknown_content"),
        (release("x", &[&cid1], &rfc3339_in(-60), &["eu"]), CP_API, 400, "bad_request"),
        (release("x", &[&cid1], &rfc3339_in(60), &["mars"]), CP_API, 400, "unknown_region"),
        (release("x", &["not-a-cid"], &rfc3339_in(60), &["eu"]), CP_API, 400, "bad_request"),
        (release("x", &[&cid1], "tomorrow", &["eu"]), CP_API, 400, "bad_request"),
        (release("x", &[&cid1], &rfc3339_in(60), &["eu"]), "wrong-token-000000000", 401, "unauthorized"),
        ("{\"id\": 1".to_string(), CP_API, 400, "bad_request"),
    ] {
        let (c, v) = admin(cp_addr, "POST", "/v1/releases", Some(token), Some(&body));
        assert_eq!((c, v["error"].as_str()), (code, Some(error)), "{body}: {v}");
        assert!(!v["detail"].as_str().unwrap_or("").is_empty());
    }
    let (_, v) = admin(cp_addr, "GET", "/v1/releases", Some(CP_API), None);
    assert_eq!(v["releases"], serde_json::json!([]), "a bad request created something");
    let (c, _) = admin(cp_addr, "GET", "/v1/releases/nope", Some(CP_API), None);
    assert_eq!(c, 404);

    let slices_sent = || metric_with(origin_addr, "origin_requests_total", "status=\"206\"");
    let origin_before = (slices_sent(), metric(origin_addr, "origin_body_bytes_total"));
    // The release, through the CLI: drop in 10 s for eu only, pre-warm from 7 s before.
    let out = segue()
        .env("SEGUE_CP_TOKEN", CP_API)
        .args(["release", "create", "--control-plane", &format!("http://{cp_addr}"), "--id", "drop1"])
        .args(["--content", &format!("{cid1},{cid2}"), "--tiers", "high", "--at", &rfc3339_in(10)])
        .args(["--regions", "eu", "--lead-secs", "7", "--schedule"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("state scheduled"));
    let drop_at = std::time::Instant::now() + Duration::from_secs(9);

    // Embargo: the eu POPs refuse the content before the drop (after their next heartbeat).
    let path1 = format!("/a/{cid1}/high.ogg");
    let e1 = pops[0].1[0];
    wait_for("the embargo to reach e1", 10, || get(&format!("http://{e1}{path1}"), &["-r", "0-9"]).0 == 403);
    let (_, body) = get(&format!("http://{e1}{path1}"), &[]);
    assert!(String::from_utf8_lossy(&body).contains("embargoed"));

    // Kill -9 the control plane once the pre-warm is handed out, restart it: the release
    // completes and no POP is handed the same job twice.
    let status = |id: &str| admin(cp_addr, "GET", &format!("/v1/releases/{id}"), Some(CP_API), None).1;
    wait_for("pre-warm jobs to be handed out", 15, || {
        status("drop1")["jobs"].as_array().is_some_and(|j| !j.is_empty())
    });
    cp.kill().unwrap();
    cp.wait().unwrap();
    let cp2 = spawn_control_plane(dir, cp_port, db, origin_addr);
    wait_for("both eu POPs pre-warmed", 30, || {
        let v = status("drop1");
        let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
        jobs.len() == 2 && jobs.iter().all(|j| j["state"] == "done")
    });
    let v = status("drop1");
    for j in v["jobs"].as_array().unwrap() {
        assert_eq!(j["region"], "eu");
        assert_eq!(j["bytes"].as_u64(), Some(3_000_000), "{j}");
    }
    for (_, addrs) in &pops[..2] {
        let (_, jobs) = admin(addrs[1], "GET", "/admin/prewarm", Some(CP_ADMIN), None);
        assert_eq!(jobs["jobs"].as_array().map(|j| j.len()), Some(1), "a POP was pre-warmed twice: {jobs}");
    }
    let (_, stats) = admin(pops[2].1[1], "GET", "/admin/stats", Some(CP_ADMIN), None);
    assert_eq!(stats["objects"], 0, "the us POP was touched: {stats}");
    // Cached now, and still refused until the drop.
    let (_, stats) = admin(pops[0].1[1], "GET", "/admin/stats", Some(CP_ADMIN), None);
    assert_eq!(stats["objects"], 2, "{stats}");
    assert!(std::time::Instant::now() < drop_at, "the pre-warm took until the drop");
    assert_eq!(get(&format!("http://{e1}{path1}"), &["-r", "0-9"]).0, 403, "embargo not held on cached bytes");
    let origin_after = (slices_sent(), metric(origin_addr, "origin_body_bytes_total"));
    // 1.5 MB in 256 KiB slices is 6 slices; two objects: 12 fetches, each byte once.
    assert_eq!(origin_after.1 - origin_before.1, 3_000_000.0, "origin sent other than each byte once");
    assert_eq!(origin_after.0 - origin_before.0, 12.0, "origin slice fetches");
    // `segue release status` shows every POP's state and bytes.
    let out = segue()
        .env("SEGUE_CP_TOKEN", CP_API)
        .args(["release", "status", "drop1", "--control-plane", &format!("http://{cp_addr}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pop e1") && text.contains("pop e2") && text.contains("done") && text.contains("3.0 MB"),
        "{text}"
    );

    // At the drop: 1,000 clients at once on the two eu POPs; the origin sees nothing.
    let remaining = drop_at.saturating_duration_since(std::time::Instant::now());
    std::thread::sleep(remaining + Duration::from_millis(1500));
    let before = slices_sent();
    let storms: Vec<_> = pops[..2]
        .iter()
        .map(|(_, addrs)| {
            let mut c = segue();
            c.args(["loadtest", "--target", &format!("http://{}", addrs[0]), "--storm", "--connections", "500"])
                .args(["--path", &path1, "--path", &format!("/a/{cid2}/high.ogg"), "--json"]);
            c.stdout(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for s in storms {
        let out = s.wait_with_output().unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(500), Some(0)), "{r}");
        assert_eq!(r["statuses"]["206"], 500, "{r}");
    }
    assert_eq!(slices_sent() - before, 0.0, "the storm reached the origin");

    // Purge fan-out: every POP, tracked to completion.
    let started = std::time::Instant::now();
    let out = segue()
        .env("SEGUE_CP_TOKEN", CP_API)
        .args(["purge", "--content-id", &cid1, "--control-plane", &format!("http://{cp_addr}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("purge on 3 POPs done in {:.2} s", started.elapsed().as_secs_f64());
    assert!(String::from_utf8_lossy(&out.stdout).contains("3/3 POPs done"));
    let (_, stats) = admin(pops[0].1[1], "GET", "/admin/stats", Some(CP_ADMIN), None);
    assert_eq!(stats["objects"], 1, "cid1 not purged from e1: {stats}");

    // Cancel: a scheduled release is cancelled once; twice is a conflict.
    let (c, _) = admin(
        cp_addr,
        "POST",
        "/v1/releases",
        Some(CP_API),
        Some(&release("drop2", &[&cid2], &rfc3339_in(3600), &["us"])),
    );
    assert_eq!(c, 201);
    let (c, v) = admin(cp_addr, "POST", "/v1/releases/drop2/cancel", Some(CP_API), None);
    assert_eq!((c, v["state"].as_str()), (200, Some("cancelled")));
    let (c, v) = admin(cp_addr, "POST", "/v1/releases/drop2/cancel", Some(CP_API), None);
    assert_eq!((c, v["error"].as_str()), (409, Some("conflict")));

    // A POP that joins the region after the pre-warm still gets the job; one that cannot
    // reach any upstream reports failure, is retried, then flagged failed.
    let late = spawn_pop(dir, "e4", "eu", shield_addr, cp_port, CP_ADMIN);
    let (_held, dead) = dead_addr();
    let broken = spawn_pop(dir, "e5", "eu", dead, cp_port, CP_ADMIN);
    wait_for("the late POP pre-warmed and the broken one flagged", 30, || {
        let v = status("drop1");
        let job = |pop: &str| v["jobs"].as_array().and_then(|j| j.iter().find(|j| j["pop"] == pop).cloned());
        job("e4").is_some_and(|j| j["state"] == "done" && j["bytes"] == 3_000_000)
            && job("e5").is_some_and(|j| j["state"] == "failed" && j["attempts"] == 2)
    });
    let v = status("drop1");
    let e5 = v["jobs"].as_array().unwrap().iter().find(|j| j["pop"] == "e5").unwrap().clone();
    assert!(e5["error"].as_str().unwrap().contains("high.ogg"), "the failure names the object: {e5}");
    for (p, _) in [late, broken] {
        assert!(terminate(p).success());
    }

    for (p, _) in pops {
        assert!(terminate(p).success());
    }
    assert!(terminate(cp2).success());
    assert!(terminate(shield).success());
    assert!(terminate(origin).success());
}

#[test]
fn app_api_catalog_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/app/catalog.db", dir.path().display());
    app_api_catalog_scenario(dir.path(), &db);
}

/// The same with the catalog in PostgreSQL (its own database on the services' server).
#[test]
fn app_api_catalog_on_postgresql() {
    let url = std::env::var("SEGUE_TEST_POSTGRES_URL")
        .expect("SEGUE_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh (it starts PostgreSQL)");
    for sql in ["DROP DATABASE IF EXISTS segue_app_test WITH (FORCE)", "CREATE DATABASE segue_app_test"] {
        let out = Command::new("psql").args([&url, "-q", "-c", sql]).output().expect("psql");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let db = format!("{}/segue_app_test", url.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    app_api_catalog_scenario(dir.path(), &db);
}

/// Tracks are created from packaged content (the origin's manifests), grouped into
/// albums and artists, edited by admins only; bad input gets 4xx JSON and changes
/// nothing; the catalog survives a restart.
fn app_api_catalog_scenario(dir: &std::path::Path, db: &str) {
    let (a, b, c, missing) = ("a1".repeat(32), "b2".repeat(32), "d4".repeat(32), "c3".repeat(32));
    put_manifest(dir, &a, 441_000, -14.2);
    put_manifest(dir, &b, 882_000, -9.5);
    put_manifest(dir, &c, 441_000, -11.0);
    let live = "f7".repeat(32);
    put_manifest(dir, &live, 441_000, -11.0);
    put_object(dir, &a, &vec![7u8; 300_000]);
    let (origin, origin_addr) = spawn_origin(dir);
    // An edge that requires signed URLs with the app-api's key, and places loopback
    // clients in SE (as a GeoIP database would place the listener).
    let edge_cfg = dir.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!("unknown_country = \"SE\"\n[tokens]\nrequired = true\n[tokens.keys]\nk1 = \"{SIGNING_HEX}\"\n"),
    )
    .unwrap();
    let mut e = segue();
    e.args(["edge", "--listen", "127.0.0.1:0", "--upstream", &format!("http://{origin_addr}"), "--config"])
        .arg(&edge_cfg);
    let (edge, edge_addr) = spawn_server(e);
    // The control plane is down: POPs come from fallback_pops (documented fallback).
    let (_held, cp_down) = dead_addr();
    let extra = format!(
        "fallback_pops = [\"http://{edge_addr}\", \"http://{origin_addr}\"]\n\
         [signing]\nkid = \"k1\"\nsecret_hex = \"{SIGNING_HEX}\"\nttl_secs = 120\n\
         [control_plane]\nurl = \"http://{cp_down}\"\ntoken = \"cp-token-unreachable-01\"\n\
         [regions]\neu = [\"SE\", \"NO\"]\n"
    );
    let (app, addr) = spawn_app_api(dir, db, origin_addr, &extra);

    let (code, doc) = admin(addr, "GET", "/openapi.json", None, None);
    assert_eq!(code, 200);
    assert!(doc["paths"]["/v1/tracks/{id}"]["get"].is_object() && doc["openapi"] == "3.1.0", "{doc}");
    let (code, v) = admin(addr, "GET", "/v1/me", None, None);
    assert_eq!((code, v["error"].as_str()), (401, Some("unauthorized")));
    let (code, v) = admin(addr, "POST", "/v1/admin/users", Some(APP_ADMIN), Some(r#"{"name":"Lis","country":"SE"}"#));
    assert_eq!(code, 201, "{v}");
    let key = v["api_key"].as_str().unwrap().to_owned();
    let (code, me) = admin(addr, "GET", "/v1/me", Some(&key), None);
    assert_eq!((code, me["name"].as_str(), me["admin"].as_bool()), (200, Some("Lis"), Some(false)));

    let track = |cid: &str, n: u32, artist: &str, isrc: &str| {
        serde_json::json!({"content_id": cid, "title": format!("Continuum, part {n}"), "artists": [artist],
                           "album": "Continuum", "track_number": n, "genre": "ambient", "isrc": isrc})
        .to_string()
    };
    let (code, v) = admin(addr, "POST", "/v1/admin/tracks", Some(&key), Some(&track(&a, 1, "Ada", "")));
    assert_eq!((code, v["error"].as_str()), (403, Some("forbidden")), "users cannot write the catalog");
    let (code, t1) =
        admin(addr, "POST", "/v1/admin/tracks", Some(APP_ADMIN), Some(&track(&a, 1, "Ada", "SE-ABC-26-00001")));
    assert_eq!(code, 201, "{t1}");
    assert_eq!((t1["duration_ms"].as_i64(), t1["samples"].as_i64()), (Some(10_000), Some(441_000)));
    assert_eq!((t1["loudness"]["integrated_lufs"].as_f64(), t1["isrc"].as_str()), (Some(-14.2), Some("SEABC2600001")));
    let (code, t2) = admin(addr, "POST", "/v1/admin/tracks", Some(APP_ADMIN), Some(&track(&b, 2, "ada", "")));
    assert_eq!(code, 201, "{t2}");
    assert_eq!(t2["album"]["id"], t1["album"]["id"], "one album");
    assert_eq!(t2["artists"][0]["id"], t1["artists"][0]["id"], "one artist, whatever the case");

    // Bad input: 4xx JSON naming the problem, nothing created.
    for (body, code, error) in [
        (track(&missing, 3, "Ada", ""), 400, "unknown_content"),
        (track(&a, 3, "Ada", "not-an-isrc"), 400, "bad_request"),
        (track(&a, 2, "Ada", ""), 409, "conflict"),
        (track(&a, 0, "Ada", ""), 400, "bad_request"),
        (track("xyz", 3, "Ada", ""), 400, "bad_request"),
        (r#"{"content_id": 1"#.to_string(), 400, "bad_request"),
        (r#"{"title": "no content"}"#.to_string(), 400, "bad_request"),
    ] {
        let (c, v) = admin(addr, "POST", "/v1/admin/tracks", Some(APP_ADMIN), Some(&body));
        assert_eq!((c, v["error"].as_str()), (code, Some(error)), "{body}: {v}");
        assert!(!v["detail"].as_str().unwrap_or("").is_empty(), "{v}");
    }
    let album_path = format!("/v1/albums/{}", t1["album"]["id"].as_str().unwrap());
    let (code, album) = admin(addr, "GET", &album_path, Some(&key), None);
    assert_eq!(code, 200);
    let titles: Vec<&str> = album["tracks"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Continuum, part 1", "Continuum, part 2"]);
    assert_eq!(album["duration_ms"], 30_000);
    let (code, artist) =
        admin(addr, "GET", &format!("/v1/artists/{}", t1["artists"][0]["id"].as_str().unwrap()), Some(&key), None);
    assert_eq!((code, artist["albums"].as_array().map(|a| a.len())), (200, Some(1)));

    // Edits: admins only, validated, atomic.
    let t2_path = format!("/v1/admin/tracks/{}", t2["id"].as_str().unwrap());
    let (code, v) =
        admin(addr, "PATCH", &t2_path, Some(APP_ADMIN), Some(r#"{"title":"Continuum II","explicit":true}"#));
    assert_eq!((code, v["title"].as_str(), v["explicit"].as_bool()), (200, Some("Continuum II"), Some(true)));
    let (code, _) = admin(addr, "PATCH", &t2_path, Some(APP_ADMIN), Some(r#"{"title":"X","disc_number":0}"#));
    assert_eq!(code, 400);
    let (code, _) = admin(addr, "PATCH", &t2_path, Some(APP_ADMIN), Some(r#"{"track_number":1}"#));
    assert_eq!(code, 409);
    let (code, _) = admin(addr, "PATCH", "/v1/admin/tracks/trk_nope", Some(APP_ADMIN), Some("{}"));
    assert_eq!(code, 404);

    // Search: in step with catalog writes, prefix as you type, typo tolerant, exact first.
    let (code, v) = admin(addr, "PATCH", &t2_path, Some(APP_ADMIN), Some(r#"{"title":"Moonrise"}"#));
    assert_eq!(code, 200, "{v}");
    let moon = serde_json::json!({"content_id": c, "title": "Moon", "artists": ["Bo Lind"], "album": "Continuum",
                                  "album_artist": "Ada", "track_number": 3});
    let (code, t3) = admin(addr, "POST", "/v1/admin/tracks", Some(APP_ADMIN), Some(&moon.to_string()));
    assert_eq!(code, 201, "{t3}");
    let search = |q: &str| {
        let (code, v) = admin(addr, "GET", &format!("/v1/search?{q}"), Some(&key), None);
        assert_eq!(code, 200, "{q}: {v}");
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["type"].as_str().unwrap().to_owned(), h["name"].as_str().unwrap().to_owned()))
            .collect::<Vec<_>>()
    };
    let hits = search("q=moon&types=track");
    assert_eq!(hits.first().map(|h| h.1.as_str()), Some("Moon"), "exact match first: {hits:?}");
    assert!(hits.iter().any(|h| h.1 == "Moonrise"), "prefix match too: {hits:?}");
    assert!(search("q=moonri").iter().any(|h| h.1 == "Moonrise"), "prefix as you type");
    assert!(search("q=mooonrise").iter().any(|h| h.1 == "Moonrise"), "one typo");
    assert!(
        search("q=contniuum").iter().any(|h| h == &("album".to_string(), "Continuum".to_string())),
        "transposed letters"
    );
    assert!(search("q=bo%20lind&types=artist").iter().any(|h| h.1 == "Bo Lind"), "artists by name");
    assert!(search("q=lind+moon").iter().any(|h| h.1 == "Moon"), "words across name and artist");
    assert!(search("q=zzyzx").is_empty());
    for (q, code) in [("types=track", 400), ("q=moon&types=song", 400), ("q=moon&limit=0", 400), ("q=%20", 400)] {
        let (c, v) = admin(addr, "GET", &format!("/v1/search?{q}"), Some(&key), None);
        assert_eq!((c, v["error"].as_str()), (code, Some("bad_request")), "{q}: {v}");
    }

    // Rights: none yet, so no stream; grant SE and NO, window and release checked (as an
    // operator, who may ask for any country; a listener gets their own).
    let t1_id = t1["id"].as_str().unwrap().to_owned();
    let stream_as = |token: &str, country: &str| {
        admin(addr, "GET", &format!("/v1/tracks/{t1_id}/stream?tier=high&country={country}"), Some(token), None)
    };
    let stream = |country: &str| stream_as(if country == "SE" { &key } else { APP_ADMIN }, country);
    let (code, v) = stream_as(&key, "NO");
    assert_eq!((code, v["error"].as_str()), (403, Some("country_mismatch")), "a listener in SE picks NO: {v}");
    let (code, v) = stream("SE");
    assert_eq!((code, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("SE"), "the reason names the country: {v}");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rights_path = format!("/v1/admin/tracks/{t1_id}/rights");
    let grant = |body: serde_json::Value| admin(addr, "PUT", &rights_path, Some(APP_ADMIN), Some(&body.to_string()));
    assert_eq!(grant(serde_json::json!({"countries": ["SE", "NO"]})).0, 200);
    assert_eq!(
        grant(serde_json::json!({"countries": ["DE"], "valid_until_ms": now_ms - 1000, "valid_from_ms": 0})).0,
        200
    );
    assert_eq!(grant(serde_json::json!({"countries": ["FR"], "release_at_ms": now_ms + 3_600_000})).0, 200);
    for (body, code) in [
        (serde_json::json!({"countries": ["se"]}), 400),
        (serde_json::json!({"countries": []}), 400),
        (serde_json::json!({"countries": ["SE"], "valid_from_ms": 10, "valid_until_ms": 5}), 400),
    ] {
        assert_eq!(grant(body.clone()).0, code, "{body}");
    }
    let (code, v) =
        admin(addr, "PUT", "/v1/admin/tracks/trk_nope/rights", Some(APP_ADMIN), Some(r#"{"countries":["SE"]}"#));
    assert_eq!(code, 404, "{v}");
    let (code, v) = stream("DE");
    assert_eq!((code, v["error"].as_str()), (403, Some("forbidden")), "window ended: {v}");
    let (code, v) = stream("FR");
    assert_eq!((code, v["error"].as_str()), (403, Some("embargoed")), "before release: {v}");
    let (code, v) = stream("US");
    assert_eq!(code, 403, "no right in US: {v}");
    let (code, v) = stream("SE");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["pops_from"], "fallback_pops", "{v}");
    assert_eq!(
        (v["samples"].as_i64(), v["sample_rate"].as_i64(), v["duration_ms"].as_i64()),
        (Some(441_000), Some(44_100), Some(10_000))
    );
    // Primary and fallback are the two POPs, in an order fixed per (user, track).
    let mut urls = [v["url"].as_str().unwrap().to_owned(), v["fallback_url"].as_str().unwrap().to_owned()];
    urls.sort_by_key(|u| !u.starts_with(&format!("http://{edge_addr}/")));
    let [url, other] = urls;
    assert!(url.starts_with(&format!("http://{edge_addr}/a/{a}/high.ogg?")), "{v}");
    assert!(other.starts_with(&format!("http://{origin_addr}/a/{a}/high.ogg?")), "{v}");
    let (_, again) = stream("SE");
    let pop_of = |u: &serde_json::Value| u.as_str().unwrap().split('/').nth(2).unwrap().to_owned();
    assert_eq!(pop_of(&again["url"]), pop_of(&v["url"]), "the same listener and track get the same POP");
    // The signed URL verifies at the real edge; altered, it does not.
    assert_eq!(get(&url, &["-r", "0-99"]).0, 206, "the edge refused the signed URL");
    assert_eq!(get(&url.replace("exp=", "exp=1"), &["-r", "0-99"]).0, 403);
    assert_eq!(get(&format!("http://{edge_addr}/a/{a}/high.ogg"), &["-r", "0-99"]).0, 403);
    // A withdrawal must reach the POPs through the control plane; this one is down, so
    // nothing is withdrawn and the admin is told to retry (tests/play.rs has it reach them).
    let (code, v) = admin(addr, "DELETE", &format!("{rights_path}/SE"), Some(APP_ADMIN), None);
    assert_eq!((code, v["error"].as_str()), (503, Some("unavailable")), "{v}");
    assert_eq!(stream("SE").0, 200);
    assert_eq!(stream("NO").0, 200);
    let (code, v) =
        admin(addr, "GET", &format!("/v1/tracks/{t1_id}/stream?tier=lossless&country=NO"), Some(&key), None);
    assert_eq!((code, v["error"].as_str()), (400, Some("bad_request")), "{v}");

    // Collaborative playlists: two editors from one version converge on one order.
    let (_, mo) = admin(addr, "POST", "/v1/admin/users", Some(APP_ADMIN), Some(r#"{"name":"Mo","country":"NO"}"#));
    let (mo_key, mo_id) = (mo["api_key"].as_str().unwrap().to_owned(), mo["user"]["id"].as_str().unwrap().to_owned());
    let (code, pl) =
        admin(addr, "POST", "/v1/playlists", Some(&key), Some(r#"{"name":"Road trip","collaborative":true}"#));
    assert_eq!((code, pl["version"].as_i64()), (201, Some(0)), "{pl}");
    let pl_path = format!("/v1/playlists/{}", pl["id"].as_str().unwrap());
    let (code, _) = admin(addr, "GET", &pl_path, Some(&mo_key), None);
    assert_eq!(code, 404, "private until shared");
    assert_eq!(admin(addr, "PUT", &format!("{pl_path}/editors/{mo_id}"), Some(&key), None).0, 200);
    let ops = |k: &str, body: serde_json::Value| {
        admin(addr, "POST", &format!("{pl_path}/ops"), Some(k), Some(&body.to_string()))
    };
    let (tr1, tr2, tr3) = (t1["id"].clone(), t2["id"].clone(), t3["id"].clone());
    let (code, v) = ops(&key, serde_json::json!({"version": 0, "ops": [{"op": "add", "track_id": tr1, "index": 0}]}));
    assert_eq!((code, v["version"].as_i64()), (200, Some(1)), "{v}");
    let (_, v) = ops(&key, serde_json::json!({"version": 1, "ops": [{"op": "add", "track_id": tr2, "index": 1}]}));
    let item = |v: &serde_json::Value, i: usize| v["items"][i]["item_id"].as_str().unwrap().to_owned();
    let (i1, i2) = (item(&v, 0), item(&v, 1));
    // Both at version 2: Mo puts t3 between t1 and t2; Lis moves t1 after t2.
    let (code, v) =
        ops(&mo_key, serde_json::json!({"version": 2, "ops": [{"op": "add", "track_id": tr3, "index": 1}]}));
    assert_eq!((code, v["version"].as_i64()), (200, Some(3)), "{v}");
    let (code, v) = ops(&key, serde_json::json!({"version": 2, "ops": [{"op": "move", "item_id": i1, "index": 1}]}));
    assert_eq!((code, v["version"].as_i64()), (200, Some(4)), "{v}");
    let tracks_of = |v: &serde_json::Value| {
        v["items"].as_array().unwrap().iter().map(|i| i["track_id"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(tracks_of(&v), [tr3.clone(), tr2.clone(), tr1.clone()], "t1 after t2, t3 still before t2");
    let (_, lis_view) = admin(addr, "GET", &pl_path, Some(&key), None);
    let (_, mo_view) = admin(addr, "GET", &pl_path, Some(&mo_key), None);
    assert_eq!(
        (lis_view["version"].clone(), lis_view["items"].clone()),
        (mo_view["version"].clone(), mo_view["items"].clone())
    );
    // An op on an item removed meanwhile, or against an unknown version: 409, nothing changes.
    assert_eq!(ops(&mo_key, serde_json::json!({"version": 4, "ops": [{"op": "remove", "item_id": i2}]})).0, 200);
    let (code, v) = ops(&key, serde_json::json!({"version": 4, "ops": [{"op": "move", "item_id": i2, "index": 0}]}));
    assert_eq!((code, v["error"].as_str()), (409, Some("conflict")), "{v}");
    let (code, v) = ops(&key, serde_json::json!({"version": 99, "ops": [{"op": "remove", "item_id": i1}]}));
    assert_eq!((code, v["error"].as_str()), (409, Some("conflict")), "{v}");
    let (code, _) =
        ops(&key, serde_json::json!({"version": 5, "ops": [{"op": "add", "track_id": "trk_nope", "index": 0}]}));
    assert_eq!(code, 400);
    let (code, _) = ops(&key, serde_json::json!({"version": 5, "ops": [{"op": "shuffle"}]}));
    assert_eq!(code, 400);
    let (_, after) = admin(addr, "GET", &pl_path, Some(&key), None);
    assert_eq!((after["version"].as_i64(), after["items"].as_array().map(|i| i.len())), (Some(5), Some(2)), "{after}");
    // Shuffle: the same items in a new order for an editor, the playlist unchanged.
    let (code, sh) = admin(addr, "POST", &format!("{pl_path}/shuffle"), Some(&mo_key), None);
    assert_eq!((code, sh["version"].as_i64()), (200, Some(5)), "{sh}");
    let sorted = |v: &serde_json::Value| {
        let mut t: Vec<String> = tracks_of(v).iter().map(|x| x.as_str().unwrap().to_owned()).collect();
        t.sort();
        t
    };
    assert_eq!(sorted(&sh), sorted(&after));
    assert_eq!(admin(addr, "GET", &pl_path, Some(&key), None).1["items"], after["items"]);
    let (_, stranger) =
        admin(addr, "POST", "/v1/admin/users", Some(APP_ADMIN), Some(r#"{"name":"Kim","country":"SE"}"#));
    let stranger = stranger["api_key"].as_str().unwrap().to_owned();
    assert_eq!(admin(addr, "POST", &format!("{pl_path}/shuffle"), Some(&stranger), None).0, 404);
    let (_, since) = admin(addr, "GET", &format!("{pl_path}/ops?since=3"), Some(&mo_key), None);
    assert_eq!(since["ops"].as_array().map(|o| o.len()), Some(2), "{since}");
    // Likes and the library.
    assert_eq!(admin(addr, "PUT", &format!("/v1/me/likes/{}", tr1.as_str().unwrap()), Some(&mo_key), None).0, 200);
    assert_eq!(admin(addr, "PUT", "/v1/me/likes/trk_nope", Some(&mo_key), None).0, 404);
    let (_, likes) = admin(addr, "GET", "/v1/me/likes", Some(&mo_key), None);
    assert_eq!(likes["likes"], serde_json::json!([tr1]));
    let (_, mine) = admin(addr, "GET", "/v1/me/playlists", Some(&mo_key), None);
    assert_eq!(mine["playlists"][0]["name"], "Road trip", "{mine}");
    // Popularity: of two tracks matching alike, the more liked ranks first.
    let body = serde_json::json!({"content_id": live, "title": "Continuum, part 1", "artists": ["Ada"],
                                  "album": "Continuum Live", "track_number": 1});
    let (code, t4) = admin(addr, "POST", "/v1/admin/tracks", Some(APP_ADMIN), Some(&body.to_string()));
    assert_eq!(code, 201, "{t4}");
    for k in [&key, &mo_key] {
        assert_eq!(admin(addr, "PUT", &format!("/v1/me/likes/{}", t4["id"].as_str().unwrap()), Some(k), None).0, 200);
    }
    let (_, v) = admin(addr, "GET", "/v1/search?q=continuum%20part%201&types=track", Some(&key), None);
    assert_eq!(v["hits"][0]["id"], t4["id"], "the liked track first: {v}");
    assert_eq!(v["hits"][1]["id"], t1["id"], "{v}");

    // Everything acknowledged survives a restart.
    assert!(terminate(app).success());
    let (app, addr) = spawn_app_api(dir, db, origin_addr, &extra);
    let (_, after_restart) = admin(addr, "GET", &pl_path, Some(&key), None);
    assert_eq!(after_restart["items"], after["items"]);
    let (code, v) = admin(addr, "GET", &format!("/v1/tracks/{}", t2["id"].as_str().unwrap()), Some(&key), None);
    assert_eq!((code, v["title"].as_str(), v["track_number"].as_i64()), (200, Some("Moonrise"), Some(2)));
    // The index is rebuilt from the database at start.
    let (code, v) = admin(addr, "GET", "/v1/search?q=moonrise", Some(&key), None);
    assert_eq!((code, v["hits"][0]["name"].as_str()), (200, Some("Moonrise")), "{v}");
    let (code, v) = admin(addr, "GET", &format!("/v1/admin/tracks/{t1_id}/rights"), Some(APP_ADMIN), None);
    assert_eq!((code, v["rights"].as_array().map(|r| r.len())), (200, Some(4)), "SE, NO, DE, FR remain: {v}");
    assert!(terminate(edge).success());
    assert!(terminate(app).success());
    assert!(terminate(origin).success());
}

/// Stream URLs point at a healthy POP of the listener's region (from a real control
/// plane), with a second POP as fallback; with the control plane gone, the last list it
/// gave keeps working.
#[test]
fn stream_urls_pick_pops_by_region_from_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let cid = "e5".repeat(32);
    put_manifest(dir.path(), &cid, 441_000, -12.0);
    put_object(dir.path(), &cid, &[1u8; 1000]);
    let (origin, origin_addr) = spawn_origin(dir.path());
    let cp_port = free_port();
    let db = format!("sqlite://{}/cp.db", dir.path().display());
    let mut cp = spawn_control_plane(dir.path(), cp_port, &db, origin_addr);
    let pops: Vec<(Child, Vec<SocketAddr>)> = [("e1", "eu"), ("e2", "eu"), ("e3", "us")]
        .iter()
        .map(|(n, r)| spawn_pop(dir.path(), n, r, origin_addr, cp_port, CP_ADMIN))
        .collect();
    let cp_addr: SocketAddr = format!("127.0.0.1:{cp_port}").parse().unwrap();
    wait_for("three healthy POPs", 20, || {
        let (_, v) = admin(cp_addr, "GET", "/v1/pops", Some(CP_API), None);
        v["pops"].as_array().is_some_and(|p| p.iter().filter(|p| p["healthy"] == true).count() == 3)
    });
    let extra = format!(
        "pop_cache_secs = 1\n[signing]\nkid = \"k1\"\nsecret_hex = \"{SIGNING_HEX}\"\n\
         [control_plane]\nurl = \"http://{cp_addr}\"\ntoken = \"{CP_API}\"\n\
         [regions]\neu = [\"SE\", \"NO\"]\nus = [\"US\"]\n"
    );
    let db = format!("sqlite://{}/app.db", dir.path().display());
    let (app, addr) = spawn_app_api(dir.path(), &db, origin_addr, &extra);
    let body = serde_json::json!({"content_id": cid, "title": "Drift", "artists": ["Ada"], "album": "Drift", "track_number": 1});
    let (code, t) = admin(addr, "POST", "/v1/admin/tracks", Some(APP_ADMIN), Some(&body.to_string()));
    assert_eq!(code, 201, "{t}");
    let id = t["id"].as_str().unwrap();
    let (code, _) = admin(
        addr,
        "PUT",
        &format!("/v1/admin/tracks/{id}/rights"),
        Some(APP_ADMIN),
        Some(r#"{"countries":["SE","US"]}"#),
    );
    assert_eq!(code, 200);
    let host = |url: &str| url.split('/').nth(2).unwrap().to_owned();
    let eu: Vec<String> = pops[..2].iter().map(|(_, a)| a[0].to_string()).collect();
    let us = pops[2].1[0].to_string();
    let stream = |country: &str| {
        let (code, v) = admin(addr, "GET", &format!("/v1/tracks/{id}/stream?country={country}"), Some(APP_ADMIN), None);
        assert_eq!(code, 200, "{v}");
        (
            host(v["url"].as_str().unwrap()),
            host(v["fallback_url"].as_str().unwrap()),
            v["pops_from"].as_str().unwrap().to_owned(),
        )
    };
    let (primary, fallback, from) = stream("SE");
    assert_eq!(from, "control_plane");
    assert!(
        eu.contains(&primary) && eu.contains(&fallback) && primary != fallback,
        "{primary} {fallback} not the eu POPs {eu:?}"
    );
    let (primary, fallback, _) = stream("US");
    assert_eq!(primary, us, "a US listener goes to the us POP");
    assert!(eu.contains(&fallback), "the fallback is another region's POP: {fallback}");
    // The control plane goes away: the last list it gave is used.
    cp.kill().unwrap();
    cp.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let (primary, _, from) = stream("SE");
    assert_eq!(from, "control_plane_cached");
    assert!(eu.contains(&primary));
    assert!(terminate(app).success());
    for (p, _) in pops {
        assert!(terminate(p).success());
    }
    assert!(terminate(origin).success());
}

/// Every command is listed with a description, and each has its own useful `--help`.
#[test]
fn help_describes_every_command() {
    let out = segue().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let commands: Vec<&str> =
        text.lines().skip_while(|l| !l.starts_with("Commands:")).skip(1).take_while(|l| l.starts_with("  ")).collect();
    assert!(commands.len() >= 10, "{text}");
    for line in commands {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap();
        assert!(words.count() >= 3, "`{name}` has no description in --help: {line:?}");
        if name == "help" {
            continue;
        }
        let out = segue().args([name, "--help"]).output().unwrap();
        assert!(out.status.success() && out.stdout.len() > 200, "`segue {name} --help` is not useful");
    }
}
