//! Play counting as clients and finance see it: real app-api (and, at scale, NATS
//! JetStream, a consumer and PostgreSQL) processes on 127.0.0.1, killed with -9 while
//! a client keeps sending with retries.

mod common;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const TRACK_SAMPLES: u64 = 44_100 * 200; // 200 s

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// An app-api config on a fixed port (restarts keep the address).
fn write_config(
    dir: &std::path::Path,
    port: u16,
    database: &str,
    origin: std::net::SocketAddr,
    plays: &str,
) -> std::path::PathBuf {
    let cfg = dir.join("app.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\norigin = \"http://{origin}\"\n\
             admin_tokens = [\"{APP_ADMIN}\"]\nsearch_dir = \"{}\"\n[plays]\nmax_age_days = 366\n{plays}\n",
            dir.join("search").display()
        ),
    )
    .unwrap();
    cfg
}

fn start_app(cfg: &std::path::Path) -> Child {
    let mut c = segue();
    c.args(["app-api", "--config"]).arg(cfg);
    spawn_server(c).0
}

fn kill_9(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Three 200 s tracks in the catalog; returns their ids.
fn catalog(dir: &std::path::Path, addr: std::net::SocketAddr) -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let cid = format!("{}{}", name.repeat(2), "0".repeat(62));
            put_manifest(dir, &cid, TRACK_SAMPLES, -14.0);
            let body = serde_json::json!({"content_id": cid, "title": format!("Track {name}"), "artists": ["Ada"],
                "album": "Counted", "track_number": i + 1, "isrc": format!("SEABC260000{i}")});
            let (code, t) = admin(addr, "POST", "/v1/admin/tracks", Some(APP_ADMIN), Some(&body.to_string()));
            assert_eq!(code, 201, "{t}");
            t["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn event(id: &str, user: &str, track: &str, started_ms: i64, ms_played: i64, country: &str) -> serde_json::Value {
    serde_json::json!({"event_id": id, "user": user, "track": track, "started_ms": started_ms,
        "ms_played": ms_played, "tier": "high", "country": country, "device": "test-rig", "skipped": false})
}

fn post_plays(addr: std::net::SocketAddr, token: &str, events: &[serde_json::Value]) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "events": events }).to_string();
    admin(addr, "POST", "/v1/play-events", Some(token), Some(&body))
}

/// One batch with retries until acknowledged; counts the attempts that failed.
fn send_until_acked(port: u16, events: &[serde_json::Value], failures: &AtomicU64) -> serde_json::Value {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (code, v) = post_plays(addr, APP_ADMIN, events);
        if code == 200 {
            return v;
        }
        failures.fetch_add(1, Ordering::Relaxed);
        assert!(std::time::Instant::now() < deadline, "batch never acknowledged: {code} {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The event ids a client sends while the servers are being killed: `batches` batches of
/// `per` events, all plays of `tracks` by 211 listeners, two thirds of them streams.
fn storm_batches(tracks: &[String], batches: usize, per: usize) -> Vec<Vec<serde_json::Value>> {
    let start = now_ms() - 3_600_000;
    (0..batches)
        .map(|b| {
            (0..per)
                .map(|i| {
                    let n = b * per + i;
                    let ms = if n.is_multiple_of(3) { 12_000 } else { 45_000 };
                    // Many listeners, each play on a device of its own: 100 ms apart on
                    // one device they would overlap, and the app API refuses that.
                    let mut e = event(
                        &format!("k9-{n}"),
                        &format!("usr_{}", n % 211),
                        &tracks[n % 3],
                        start + n as i64 * 100,
                        ms,
                        "SE",
                    );
                    e["device"] = format!("rig-{n}").into();
                    e
                })
                .collect()
        })
        .collect()
}

/// Send every batch from a thread while `restart` kills and restarts the servers; returns
/// the failed attempts (proof the kills landed on live traffic).
fn send_through_kills(port: u16, batches: Vec<Vec<serde_json::Value>>, mut restart: impl FnMut()) -> u64 {
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (failures, done) = (failures.clone(), done.clone());
        std::thread::spawn(move || {
            for batch in &batches {
                let v = send_until_acked(port, batch, &failures);
                let answered = v["accepted"].as_u64().unwrap() + v["duplicates"].as_u64().unwrap();
                assert_eq!(answered, batch.len() as u64, "every event is stored: {v}");
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut kills = 0;
    while !done.load(Ordering::Relaxed) && kills < 6 {
        std::thread::sleep(Duration::from_millis(250));
        restart();
        kills += 1;
    }
    client.join().unwrap();
    assert!(kills >= 3, "the client finished before the kills ({kills})");
    failures.load(Ordering::Relaxed)
}

fn totals(addr: std::net::SocketAddr) -> (i64, i64) {
    let (code, v) = admin(addr, "GET", "/v1/admin/plays/counts", Some(APP_ADMIN), None);
    assert_eq!(code, 200, "{v}");
    v["counts"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(p, s), r| (p + r["plays"].as_i64().unwrap(), s + r["streams"].as_i64().unwrap()))
}

fn verify(cfg: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = segue().args(["plays", "verify", "--config"]).arg(cfg).args(extra).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn sqlite(db: &std::path::Path, sql: &str) {
    let script = format!(
        "import sqlite3; c = sqlite3.connect({:?}); c.executescript({sql:?}); c.commit()",
        db.display().to_string()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A month (YYYY-MM) about three months back and the Unix ms of its 3rd, 10:00 UTC.
fn past_month() -> (String, i64) {
    let then = now_ms() / 1000 - 90 * 86_400;
    let text = aws_smithy_types::DateTime::from_secs(then).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap();
    let month = text[..7].to_owned();
    let first = aws_smithy_types::DateTime::from_str(
        &format!("{month}-01T00:00:00Z"),
        aws_smithy_types::date_time::Format::DateTime,
    )
    .unwrap()
    .secs();
    (month, (first + 2 * 86_400 + 10 * 3_600) * 1000)
}

/// The fixed dataset of the hand-computed report: tracks A, B, C; u1 and u2 listen
/// normally, u3 plays from three countries in one hour (fraud).
fn report_dataset(tracks: &[String], t0: i64) -> Vec<serde_json::Value> {
    let (a, b, c) = (&tracks[0], &tracks[1], &tracks[2]);
    let mut n = 0;
    let mut ev = |user: &str, track: &str, ms: i64, country: &str| {
        n += 1;
        event(&format!("r-{n}"), user, track, t0 + n as i64 * 240_000, ms, country)
    };
    vec![
        ev("u1", a, 45_000, "SE"),
        ev("u1", a, 60_000, "SE"),
        ev("u1", a, 30_000, "SE"), // exactly 30 s: a stream
        ev("u1", a, 29_999, "SE"), // not a stream
        ev("u1", b, 45_000, "SE"),
        ev("u1", b, 45_000, "SE"),
        ev("u1", c, 45_000, "SE"),
        ev("u2", a, 45_000, "DE"),
        ev("u2", a, 45_000, "DE"),
        ev("u2", b, 45_000, "DE"),
        ev("u2", c, 45_000, "DE"),
        ev("u3", a, 45_000, "SE"),
        ev("u3", a, 45_000, "DE"),
        ev("u3", a, 45_000, "US"),
    ]
}

/// An app API on SQLite with the three-track catalog: its config's `extra` sections
/// appended (e.g. `[limits]`).
struct SqliteApp {
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    app: Child,
    origin: Child,
    addr: std::net::SocketAddr,
    tracks: Vec<String>,
}

fn sqlite_app(extra: &str) -> SqliteApp {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("app/app.db").display());
    let (origin, origin_addr) = spawn_origin(dir.path());
    let port = free_port();
    let cfg = write_config(dir.path(), port, &db, origin_addr, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}{extra}")).unwrap();
    let app = start_app(&cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tracks = catalog(dir.path(), addr);
    SqliteApp { dir, cfg, app, origin, addr, tracks }
}

impl SqliteApp {
    fn stop(self) {
        kill_9(self.app);
        kill_9(self.origin);
    }
}

/// The same event id again: the same payload is a duplicate, another payload (a longer
/// `ms_played`) a conflict, kept for audit and not counted. A device whose clock is two
/// hours behind has its plays moved to when they happened, by the offset its `sent_ms`
/// shows, and a retry of them (another `sent_ms`) is still a duplicate.
#[test]
fn a_reused_event_id_is_a_conflict_and_a_wrong_device_clock_is_corrected() {
    let s = sqlite_app("");
    let (dir, cfg, addr, tracks) = (s.dir.path(), &s.cfg, s.addr, &s.tracks);
    let now = now_ms();
    let first = event("c-1", "u1", &tracks[0], now - 120_000, 45_000, "SE");
    let mut longer = first.clone();
    longer["ms_played"] = 90_000.into();
    let statuses = |v: &serde_json::Value| -> Vec<String> {
        v["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_owned()).collect()
    };
    let (code, v) = post_plays(addr, APP_ADMIN, &[first.clone(), first.clone(), longer.clone()]);
    assert_eq!(code, 200, "{v}");
    assert_eq!(statuses(&v), ["accepted", "duplicate", "conflict"], "{v}");
    let (_, v) = post_plays(addr, APP_ADMIN, &[longer, first]);
    assert_eq!(statuses(&v), ["conflict", "duplicate"], "{v}");
    let (_, status) = admin(addr, "GET", "/v1/admin/plays/status", Some(APP_ADMIN), None);
    assert_eq!((status["seq"].as_i64(), status["conflicts"].as_i64()), (Some(1), Some(2)), "{status}");
    assert_eq!(totals(addr), (1, 1), "the first payload counts, once");

    // Two hours behind: the device says its play started 2 h 1 min ago; it was 1 min ago.
    let skew = 2 * 3_600_000;
    let device_now = now_ms() - skew;
    let late = event("c-2", "u1", &tracks[1], device_now - 60_000, 45_000, "SE");
    let body = |sent_ms: i64| serde_json::json!({ "sent_ms": sent_ms, "events": [late.clone()] }).to_string();
    let (code, v) = admin(addr, "POST", "/v1/play-events", Some(APP_ADMIN), Some(&body(device_now)));
    assert_eq!((code, statuses(&v)), (200, vec!["accepted".to_owned()]), "{v}");
    let offset = v["clock_offset_ms"].as_i64().unwrap();
    assert!((offset - skew).abs() < 10_000, "offset {offset} ms, the clock is {skew} ms behind");
    let (code, v) = admin(addr, "POST", "/v1/play-events", Some(APP_ADMIN), Some(&body(device_now + 5_000)));
    assert_eq!((code, statuses(&v)), (200, vec!["duplicate".to_owned()]), "a retry: {v}");
    let script = format!(
        "import sqlite3; print(sqlite3.connect({:?}).execute(\"SELECT started_ms FROM play_events WHERE event_id = 'c-2'\").fetchone()[0])",
        dir.join("app/app.db").display().to_string()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let started: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((started - (now - 60_000)).abs() < 15_000, "logged as started at {started}, about {}", now - 60_000);
    let (ok, out) = verify(cfg, &[]);
    assert!(ok, "{out}");
    s.stop();
}

/// Abuse limits: one device plays one track at a time (an overlapping play is refused,
/// another device's is not), an account listens at most 24 h a day, a key over its rate
/// gets 429 with Retry-After, and a gateway key posts for others without being an admin.
#[test]
fn overlapping_plays_a_25_hour_day_and_a_flooding_key_are_refused() {
    let s = sqlite_app(
        "[limits]\nrequests_per_sec = 1\nrequest_burst = 8\nplay_events_per_sec = 1\nplay_event_burst = 20\n",
    );
    let (addr, tracks) = (s.addr, &s.tracks);
    let user = |name: &str, extra: &str| {
        let body = format!(r#"{{"name":"{name}","country":"SE"{extra}}}"#);
        let (code, u) = admin(addr, "POST", "/v1/admin/users", Some(APP_ADMIN), Some(&body));
        assert_eq!(code, 201, "{u}");
        (u["api_key"].as_str().unwrap().to_owned(), u["user"]["id"].as_str().unwrap().to_owned())
    };
    let (listener, listener_id) = user("ana", "");
    let (gateway, _) = user("partner", r#","gateway":true"#);
    let statuses = |v: &serde_json::Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().or(r["status"].as_str()).unwrap().to_owned())
            .collect()
    };
    let now = now_ms();
    let mine = |id: &str, device: &str, started: i64| {
        let mut e = event(id, &listener_id, &tracks[0], started, 180_000, "SE");
        e["device"] = device.into();
        e.as_object_mut().unwrap().remove("user");
        e
    };
    // 180 s plays: the next at +170 s is a crossfade; at +60 s, on the same device, two at once.
    let (code, v) = post_plays(
        addr,
        &listener,
        &[
            mine("o-1", "phone", now - 900_000),
            mine("o-2", "phone", now - 730_000),
            mine("o-3", "phone", now - 670_000),
            mine("o-4", "laptop", now - 670_000),
        ],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(statuses(&v), ["accepted", "accepted", "overlap", "accepted"], "{v}");
    // A retry of an accepted play is a duplicate, not an overlap with itself.
    let (_, v) = post_plays(addr, &listener, &[mine("o-2", "phone", now - 730_000)]);
    assert_eq!(statuses(&v), ["duplicate"], "{v}");

    // A gateway posts for others (not an admin), up to 24 h a day per account: 200 s plays
    // on two devices from 00:00 of a past day; the one past 24 h is refused.
    let (_, t0) = past_month();
    let midnight = t0 - 10 * 3_600_000;
    let day: Vec<serde_json::Value> = (0..433)
        .map(|i| {
            let mut e = event(&format!("d-{i}"), "u-day", &tracks[1], midnight + (i / 2) * 200_000, 200_000, "SE");
            e["device"] = if i % 2 == 0 { "a" } else { "b" }.into();
            e
        })
        .collect();
    let mut last = serde_json::Value::Null;
    for chunk in day.chunks(150) {
        let (code, v) = post_plays(addr, &gateway, chunk);
        assert_eq!(code, 200, "{v}");
        last = v;
    }
    assert_eq!(statuses(&last).last().map(String::as_str), Some("daily_limit"), "{last}");
    assert_eq!(last["accepted"].as_u64(), Some(432 - 300), "{last}");
    let (code, v) = admin(addr, "GET", "/v1/admin/plays/status", Some(&gateway), None);
    assert_eq!((code, v["error"].as_str()), (403, Some("forbidden")), "a gateway is not an admin: {v}");

    // Over the listener's event burst (20; 5 used): 429 with Retry-After, nothing stored.
    let flood: Vec<serde_json::Value> =
        (0..18).map(|i| mine(&format!("f-{i}"), "tablet", now - 4_000_000 + i * 190_000)).collect();
    let url = format!("http://{addr}/v1/play-events");
    let body = serde_json::json!({ "events": flood }).to_string();
    let (code, head) = get(
        &url,
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {listener}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
    );
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert_eq!(code, 429, "{head}");
    assert!(head.contains("retry-after: ") && head.contains("rate_limited"), "{head}");
    // Requests too: the burst of 8 is spent by now.
    let codes: Vec<u16> = (0..8).map(|_| admin(addr, "GET", "/v1/me", Some(&listener), None).0).collect();
    assert!(codes.contains(&429), "{codes:?}");
    // Admin tokens are operators': not limited.
    assert!((0..20).all(|_| admin(addr, "GET", "/v1/admin/plays/status", Some(APP_ADMIN), None).0 == 200));
    let (_, status) = admin(addr, "GET", "/v1/admin/plays/status", Some(APP_ADMIN), None);
    assert_eq!(status["seq"].as_i64(), Some(3 + 432), "{status}");
    s.stop();
}

/// `YYYY-MM` `n` months after `month` (before, when negative).
fn month_step(month: &str, n: i32) -> String {
    let index = month[..4].parse::<i32>().unwrap() * 12 + month[5..].parse::<i32>().unwrap() - 1 + n;
    format!("{:04}-{:02}", index.div_euclid(12), index.rem_euclid(12) + 1)
}

/// A report closes its month: later requests get the same bytes, even after the shares
/// change and a late play of that month arrives. The late play is paid in the next
/// month's report as an adjustment (a line played in the closed month); re-rendering the
/// closed month at its log position uses the shares in force when it closed.
#[test]
fn late_plays_are_next_months_adjustments_and_a_closed_report_never_changes() {
    let s = sqlite_app("");
    let (cfg, addr, tracks) = (&s.cfg, s.addr, &s.tracks);
    let (a, b) = (&tracks[0], &tracks[1]);
    let shares = |t: &str, body: &str| {
        let (code, v) = admin(addr, "PUT", &format!("/v1/admin/tracks/{t}/shares"), Some(APP_ADMIN), Some(body));
        assert_eq!(code, 200, "{v}");
    };
    shares(a, r#"{"shares":[{"holder":"label","share_bps":10000}]}"#);
    let (month, t0) = past_month();
    let (next, t1) = (month_step(&month, 1), t0 + 31 * 86_400_000);
    let plays = [
        event("m-1", "u1", a, t0, 45_000, "SE"),
        event("m-2", "u1", a, t0 + 600_000, 45_000, "SE"),
        event("n-1", "u1", b, t1, 45_000, "SE"),
    ];
    assert_eq!(post_plays(addr, APP_ADMIN, &plays).1["accepted"].as_u64(), Some(3));
    let report = |m: &str, query: &str| {
        let url = format!("http://{addr}/v1/admin/royalties?month={m}&currency=EUR&{query}");
        let (code, body) = get(&url, &["-H", &format!("Authorization: Bearer {APP_ADMIN}")]);
        (code, String::from_utf8_lossy(&body).into_owned())
    };

    let (code, closed) = report(&month, "pool=100.00&format=csv&close=true");
    assert_eq!(code, 200, "{closed}");
    assert_eq!(closed, format!("month,played_in,track,isrc,title,holder,share_bps,streams,amount,currency\n{month},{month},{a},SEABC2600000,Track a,label,10000,2,100.00,EUR\n"));
    let (_, json) = report(&month, "pool=100.00&format=json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["closed"], true, "{v}");
    let closed_seq = v["audit_seq"].as_i64().unwrap();

    // After the close: new shares, and a play of the closed month arrives late.
    shares(a, r#"{"shares":[{"holder":"label","share_bps":5000},{"holder":"artist","share_bps":5000}]}"#);
    assert_eq!(post_plays(addr, APP_ADMIN, &[event("m-3", "u2", a, t0 + 3_600_000, 45_000, "DE")]).1["accepted"], 1);
    assert_eq!(report(&month, "pool=100.00&format=csv"), (200, closed.clone()), "the closed report is unchanged");
    assert_eq!(
        report(&month, &format!("pool=100.00&format=csv&as_of={closed_seq}")),
        (200, closed.clone()),
        "re-rendered with the shares of then"
    );
    let (code, v) = report(&month, "pool=90.00");
    assert!(code == 409 && v.contains("closed with a pool of 100.00"), "{code} {v}");
    let (code, v) = report(&month, "pool=100.00&close=true");
    assert_eq!(code, 409, "closed once: {v}");

    // The next month pays its own stream and the late one, marked as played in the
    // closed month, with today's shares.
    let (code, csv) = report(&next, "pool=30.00&format=csv");
    assert_eq!(code, 200, "{csv}");
    let mut want = vec![
        format!("{next},{month},{a},SEABC2600000,Track a,artist,5000,1,7.50,EUR"),
        format!("{next},{month},{a},SEABC2600000,Track a,label,5000,1,7.50,EUR"),
        format!("{next},{next},{b},SEABC2600001,Track b,unclaimed,10000,1,15.00,EUR"),
    ];
    want.sort();
    let got: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(got, want, "{csv}");
    let (_, json) = report(&next, "pool=30.00&format=json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((v["streams"].as_i64(), v["adjustment_streams"].as_i64()), (Some(2), Some(1)), "{v}");

    // Months close in order, and the one before the first close was closed with it.
    let after = month_step(&month, 3);
    let (code, v) = report(&after, "pool=1.00&close=true");
    assert!(code == 409 && v.contains("close in order"), "{code} {v}");
    let before = month_step(&month, -1);
    let (code, v) = report(&before, "pool=1.00");
    assert_eq!(code, 409, "{v}");
    let (code, v) = report(&next, "pool=30.00&close=true");
    assert_eq!(code, 200, "{v}");
    let (ok, out) = verify(cfg, &[]);
    assert!(ok, "{out}");
    s.stop();
}

/// `segue plays verify` on a live system: plays keep arriving while it walks the log,
/// and it still finds the log intact (it reads one snapshot, not a log that grows under it).
#[test]
fn verify_reads_one_snapshot_while_plays_arrive() {
    let s = sqlite_app("");
    let (cfg, addr, tracks) = (&s.cfg, s.addr, &s.tracks);
    for batch in storm_batches(tracks, 50, 200) {
        assert_eq!(post_plays(addr, APP_ADMIN, &batch).0, 200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (stop, tracks) = (stop.clone(), tracks.clone());
        move || {
            let mut sent = 0;
            // Events 10,000-33,999: after the ones above, none in the future; small
            // batches, so appends land all through each verify.
            let batches = storm_batches(&tracks, 3400, 10);
            for batch in &batches[1000..] {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                assert_eq!(post_plays(addr, APP_ADMIN, batch).0, 200);
                sent += 1;
            }
            sent
        }
    });
    for _ in 0..20 {
        let (ok, out) = verify(cfg, &[]);
        assert!(ok, "a live log reads as tampered: {out}");
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    assert!(sent > 0, "no plays arrived while verify ran");
    s.stop();
}

#[test]
fn plays_count_exactly_once_through_kill_9_and_report_royalties_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app/app.db");
    let db = format!("sqlite://{}", db_path.display());
    let (origin, origin_addr) = spawn_origin(dir.path());
    let port = free_port();
    let cfg = write_config(dir.path(), port, &db, origin_addr, "");
    let app = start_app(&cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tracks = catalog(dir.path(), addr);
    let now = now_ms();

    // Per-event answers: accepted, duplicate (retried, or twice in one batch), rejected
    // with a reason; one bad event does not sink the batch.
    let good = event("e-1", "u9", &tracks[0], now - 60_000, 45_000, "SE");
    let batch = vec![
        good.clone(),
        good.clone(),
        event("e-2", "u9", "trk_nope", now - 60_000, 45_000, "SE"),
        event("e-3", "u9", &tracks[0], now - 60_000, -5, "SE"),
        event("e-4", "u9", &tracks[0], now - 60_000, 900_000, "SE"),
        event("e-5", "u9", &tracks[0], now + 3_600_000, 45_000, "SE"),
        serde_json::json!({"event_id": "e-6", "track": tracks[0]}),
    ];
    let (code, v) = post_plays(addr, APP_ADMIN, &batch);
    assert_eq!(code, 200, "{v}");
    let statuses: Vec<(&str, Option<&str>)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["reason"].as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("accepted", None),
            ("duplicate", None),
            ("rejected", Some("unknown_track")),
            ("rejected", Some("bad_duration")),
            ("rejected", Some("bad_duration")),
            ("rejected", Some("future")),
            ("rejected", Some("malformed")),
        ],
        "{v}"
    );
    let (code, v) = post_plays(addr, APP_ADMIN, std::slice::from_ref(&good));
    assert_eq!((code, v["duplicates"].as_u64()), (200, Some(1)), "a retry is a duplicate: {v}");
    // A user's own key posts only its own plays.
    let (code, u) = admin(addr, "POST", "/v1/admin/users", Some(APP_ADMIN), Some(r#"{"name":"Lis","country":"SE"}"#));
    assert_eq!(code, 201);
    let key = u["api_key"].as_str().unwrap();
    let me = u["user"]["id"].as_str().unwrap();
    let mut mine = event("own-1", me, &tracks[1], now - 120_000, 50_000, "SE");
    let (code, v) =
        post_plays(addr, key, &[mine.clone(), event("own-2", "u9", &tracks[1], now - 60_000, 50_000, "SE")]);
    assert_eq!(code, 200);
    assert_eq!((v["accepted"].as_u64(), v["results"][1]["reason"].as_str()), (Some(1), Some("user_mismatch")), "{v}");
    mine.as_object_mut().unwrap().remove("user");
    let (_, v) = post_plays(addr, key, &[mine]);
    assert_eq!(v["duplicates"].as_u64(), Some(1), "the caller is the default user: {v}");
    // Whole-request errors: 4xx JSON, nothing stored.
    for (body, code) in [(r#"{"events": 5}"#, 400), ("not json", 400), (r#"{"evts": []}"#, 400)] {
        let (c, v) = admin(addr, "POST", "/v1/play-events", Some(APP_ADMIN), Some(body));
        assert_eq!((c, v["error"].as_str()), (code, Some("bad_request")), "{body}: {v}");
    }
    let (code, _) = admin(addr, "POST", "/v1/play-events", None, Some(r#"{"events": []}"#));
    assert_eq!(code, 401);
    assert_eq!(totals(addr), (2, 2));

    // kill -9 the app-api again and again while a client sends 3,000 events in batches,
    // retrying each until acknowledged: every event is counted once.
    let batches = storm_batches(&tracks, 150, 20);
    let mut running = Some(app);
    let failures = send_through_kills(port, batches.clone(), || {
        kill_9(running.take().unwrap());
        running = Some(start_app(&cfg));
    });
    let app = running.unwrap();
    assert!(failures > 0, "no request was cut by a kill");
    let (plays, streams) = totals(addr);
    assert_eq!((plays, streams), (2 + 3000, 2 + 2000), "exactly once after {failures} failed attempts");
    // Everything again: all duplicates, nothing counted twice.
    for batch in batches.iter().step_by(10) {
        let (code, v) = post_plays(addr, APP_ADMIN, batch);
        assert_eq!((code, v["duplicates"].as_u64()), (200, Some(20)), "{v}");
    }
    assert_eq!(totals(addr), (3002, 2002));

    // Offline sync, out of order: a device posts plays from days ago after newer ones;
    // they land on their own day.
    let (month, t0) = past_month();
    let mut dataset = report_dataset(&tracks, t0);
    dataset.reverse();
    let (code, v) = post_plays(addr, APP_ADMIN, &dataset);
    assert_eq!((code, v["accepted"].as_u64()), (200, Some(14)), "{v}");
    let day =
        aws_smithy_types::DateTime::from_secs(t0 / 1000).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap();
    let (_, v) = admin(
        addr,
        "GET",
        &format!("/v1/admin/plays/counts?from={0}&to={0}&track={1}", &day[..10], tracks[0]),
        Some(APP_ADMIN),
        None,
    );
    let by_country: Vec<(String, i64, i64)> = v["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["country"].as_str().unwrap().to_owned(), r["plays"].as_i64().unwrap(), r["streams"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(by_country, [("DE".into(), 3, 3), ("SE".into(), 5, 4), ("US".into(), 1, 1)], "{v}");

    // The hand-computed report. Shares: A 70/30 label/artist, B all label, C none.
    for (t, shares) in [
        (&tracks[0], r#"{"shares":[{"holder":"label","share_bps":7000},{"holder":"artist","share_bps":3000}]}"#),
        (&tracks[1], r#"{"shares":[{"holder":"label","share_bps":10000}]}"#),
    ] {
        let (code, v) = admin(addr, "PUT", &format!("/v1/admin/tracks/{t}/shares"), Some(APP_ADMIN), Some(shares));
        assert_eq!(code, 200, "{v}");
    }
    let (code, v) = admin(
        addr,
        "PUT",
        &format!("/v1/admin/tracks/{}/shares", tracks[2]),
        Some(APP_ADMIN),
        Some(r#"{"shares":[{"holder":"label","share_bps":6000}]}"#),
    );
    assert_eq!((code, v["error"].as_str()), (400, Some("bad_request")), "shares must sum to 100 %: {v}");
    // Streams counted: A 5 (u1 3, u2 2), B 3, C 2 = 10; u3's 3 are excluded (flagged).
    // Pool 1000.01: 100001 cents x 35000/100000 = 35000.35 -> the spare cent goes to
    // A/label (largest remainder).
    let report_path = format!("/v1/admin/royalties?month={month}&pool=1000.01&currency=EUR&format=csv");
    let (code, csv) =
        get(&format!("http://{addr}{report_path}"), &["-H", &format!("Authorization: Bearer {APP_ADMIN}")]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&csv));
    let expected = format!(
        "month,played_in,track,isrc,title,holder,share_bps,streams,amount,currency\n\
         {month},{month},{a},SEABC2600000,Track a,artist,3000,5,150.00,EUR\n\
         {month},{month},{a},SEABC2600000,Track a,label,7000,5,350.01,EUR\n\
         {month},{month},{b},SEABC2600001,Track b,label,10000,3,300.00,EUR\n\
         {month},{month},{c},SEABC2600002,Track c,unclaimed,10000,2,200.00,EUR\n",
        a = tracks[0],
        b = tracks[1],
        c = tracks[2]
    );
    let mut sorted_expected: Vec<&str> = expected.lines().collect();
    sorted_expected[1..].sort();
    assert_eq!(String::from_utf8_lossy(&csv), sorted_expected.join("\n") + "\n");
    let (_, json) = admin(addr, "GET", &report_path.replace("csv", "json"), Some(APP_ADMIN), None);
    assert_eq!((json["streams"].as_i64(), json["per_stream"].as_str()), (Some(10), Some("100.001000")), "{json}");
    assert_eq!((json["excluded_accounts"][0].as_str(), json["excluded_streams"].as_i64()), (Some("u3"), Some(3)));
    let (_, flags) = admin(addr, "GET", &format!("/v1/admin/fraud?month={month}"), Some(APP_ADMIN), None);
    assert_eq!(
        (flags["flags"][0]["user"].as_str(), flags["flags"][0]["reason"].as_str()),
        (Some("u3"), Some("many_countries")),
        "{flags}"
    );
    // The CLI renders the same bytes, and again at the same log position.
    let out_file = dir.path().join("report.csv");
    let anchor = format!("{}:{}", json["audit_seq"], json["audit_hash"].as_str().unwrap());
    for extra in [vec![], vec!["--as-of".to_owned(), json["audit_seq"].to_string()]] {
        let out = segue()
            .args(["plays", "report", "--month", &month, "--pool", "1000.01", "--out"])
            .arg(&out_file)
            .args(&extra)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(&out_file).unwrap(), csv, "byte for byte");
    }
    // Review clears u3: their streams count again.
    let review = format!(r#"{{"user":"u3","month":"{month}","verdict":"cleared","note":"tour bus"}}"#);
    let (code, v) = admin(addr, "POST", "/v1/admin/fraud/review", Some(APP_ADMIN), Some(&review));
    assert_eq!(code, 200, "{v}");
    let (_, json2) = admin(addr, "GET", &report_path.replace("csv", "json"), Some(APP_ADMIN), None);
    assert_eq!((json2["streams"].as_i64(), json2["excluded_streams"].as_i64()), (Some(13), Some(0)), "{json2}");
    let (code, v) = admin(addr, "GET", "/v1/admin/royalties?month=2026-13&pool=1", Some(APP_ADMIN), None);
    assert_eq!((code, v["error"].as_str()), (400, Some("bad_request")), "{v}");

    // The audit log: intact, anchored at the report; an edit, then a deletion at the end,
    // are both detected.
    assert!(terminate(app).success());
    let (ok, text) = verify(&cfg, &["--anchor", &anchor]);
    assert!(ok && text.contains("intact: 3016 events"), "{text}");
    sqlite(&db_path, "UPDATE play_events SET ms_played = ms_played + 100000 WHERE seq = 5");
    let (ok, text) = verify(&cfg, &[]);
    assert!(!ok && text.contains("event seq 5 ") && text.contains("counts of track"), "{text}");
    sqlite(&db_path, "UPDATE play_events SET ms_played = ms_played - 100000 WHERE seq = 5");
    let (ok, text) = verify(&cfg, &[]);
    assert!(ok, "restored: {text}");
    sqlite(&db_path, "DELETE FROM play_events WHERE seq = (SELECT MAX(seq) FROM play_events)");
    let (ok, text) = verify(&cfg, &["--anchor", &anchor]);
    assert!(!ok && text.contains("deleted from the end"), "{text}");
    assert!(terminate(origin).success());
}

fn fresh_postgres_db(name: &str) -> String {
    let url = std::env::var("SEGUE_TEST_POSTGRES_URL")
        .expect("SEGUE_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh (it starts PostgreSQL)");
    for sql in [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")] {
        let out = Command::new("psql").args([&url, "-q", "-c", &sql]).output().expect("psql");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    format!("{}/{name}", url.rsplit_once('/').unwrap().0)
}

fn start_consumer(cfg: &std::path::Path) -> Child {
    let mut c = segue();
    c.args(["plays", "consume", "--config"]).arg(cfg);
    spawn_server(c).0
}

fn lag_events(addr: std::net::SocketAddr) -> u64 {
    let (code, v) = admin(addr, "GET", "/v1/admin/plays/status", Some(APP_ADMIN), None);
    assert_eq!(code, 200, "{v}");
    v["lag"]["events"].as_u64().unwrap()
}

/// At scale: events go to NATS JetStream and a consumer applies them to PostgreSQL.
/// The app-api and the consumer are both killed with -9 again and again while a client
/// sends with retries; once the consumer catches up every event is counted once. A
/// stopped consumer makes the report refuse (lag in /metrics) unless forced.
#[test]
fn plays_count_exactly_once_through_nats_jetstream_into_postgresql() {
    let nats = std::env::var("SEGUE_TEST_NATS_URL")
        .expect("SEGUE_TEST_NATS_URL is not set: run the suite with scripts/test.sh (it starts nats-server)");
    let db = fresh_postgres_db("segue_plays_test");
    let dir = tempfile::tempdir().unwrap();
    let (origin, origin_addr) = spawn_origin(dir.path());
    let (port, metrics_port) = (free_port(), free_port());
    let stream = format!("PLAYS_{}", std::process::id());
    let plays = format!(
        "log = \"nats\"\nreport_max_lag_secs = 1\n[plays.nats]\nurl = \"{nats}\"\nstream = \"{stream}\"\n\
         subject = \"segue.test.{stream}\"\nconsumer_listen = \"127.0.0.1:{metrics_port}\"\nconsumer_batch = 200\n"
    );
    let cfg = write_config(dir.path(), port, &db, origin_addr, &plays);
    let app = start_app(&cfg);
    let consumer = start_consumer(&cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tracks = catalog(dir.path(), addr);

    let batches = storm_batches(&tracks, 100, 20);
    let mut running = Some((app, consumer));
    let mut round = 0;
    let failures = send_through_kills(port, batches.clone(), || {
        let (app, consumer) = running.take().unwrap();
        // Alternate: the app-api, the consumer, then both at once.
        let (app, consumer) = match round % 3 {
            0 => (kill_then(app, || start_app(&cfg)), consumer),
            1 => (app, kill_then(consumer, || start_consumer(&cfg))),
            _ => {
                kill_9(consumer);
                (kill_then(app, || start_app(&cfg)), start_consumer(&cfg))
            }
        };
        round += 1;
        running = Some((app, consumer));
    });
    assert!(failures > 0, "no request was cut by a kill");
    let (app, consumer) = running.unwrap();
    wait_for("the consumer to catch up", 60, || lag_events(addr) == 0 && totals(addr).0 == 2000);
    assert_eq!(totals(addr), (2000, 1333), "exactly once after {failures} failed attempts");
    // Re-sent long after: duplicates, by JetStream's window or by the database.
    for batch in batches.iter().step_by(10) {
        let (code, v) = post_plays(addr, APP_ADMIN, batch);
        assert_eq!((code, v["duplicates"].as_u64()), (200, Some(20)), "{v}");
    }

    // The consumer stops: acknowledged events wait in the stream, the lag shows in
    // /metrics, and the report refuses until it catches up (or is forced).
    assert!(terminate(consumer).success());
    let late: Vec<_> = (0..50)
        .map(|i| {
            let mut e = event(&format!("late-{i}"), &format!("u{i}"), &tracks[0], now_ms() - 90_000, 45_000, "NO");
            e["device"] = format!("rig-late-{i}").into();
            e
        })
        .collect();
    let (code, v) = post_plays(addr, APP_ADMIN, &late);
    assert_eq!((code, v["accepted"].as_u64()), (200, Some(50)), "{v}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(metric(addr, "plays_pipeline_lag_events"), 50.0);
    let month = aws_smithy_types::DateTime::from_secs(now_ms() / 1000 - 90)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()[..7]
        .to_owned();
    let report = format!("/v1/admin/royalties?month={month}&pool=100.00");
    let (code, v) = admin(addr, "GET", &report, Some(APP_ADMIN), None);
    assert_eq!((code, v["error"].as_str()), (409, Some("pipeline_lagging")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("50 acknowledged events"), "{v}");
    let (code, v) = admin(addr, "GET", &format!("{report}&force=1"), Some(APP_ADMIN), None);
    assert_eq!(code, 200, "forced: {v}");
    let consumer = start_consumer(&cfg);
    wait_for("the consumer to drain", 60, || lag_events(addr) == 0 && totals(addr).0 == 2050);
    let (code, v) = admin(addr, "GET", &report, Some(APP_ADMIN), None);
    assert_eq!(code, 200, "{v}");
    let consumer_metrics = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    wait_for("the consumer's lag gauge", 10, || metric(consumer_metrics, "plays_pipeline_lag_events") == 0.0);
    assert!(metric(consumer_metrics, "plays_consumer_applied_total") >= 50.0);

    assert!(terminate(consumer).success());
    assert!(terminate(app).success());
    let (ok, text) = verify(&cfg, &[]);
    assert!(ok && text.contains("intact: 2050 events"), "{text}");
    assert!(terminate(origin).success());
}

fn kill_then(child: Child, start: impl FnOnce() -> Child) -> Child {
    kill_9(child);
    start()
}

/// A 3-node JetStream cluster on loopback (Debian's nats-server), the play stream
/// replicated on all three and split in two partitions. One node is killed with -9
/// mid-ingest: the client retries what was not acknowledged, and once the consumer has
/// caught up every acknowledged event is counted exactly once. A message that is not a
/// play, and one PostgreSQL refuses (a NUL byte), go to the dead-letter stream; the rest
/// of their batches is applied.
#[test]
fn a_three_node_jetstream_cluster_loses_nothing_when_a_node_dies() {
    let db = fresh_postgres_db("segue_cluster_test");
    let dir = tempfile::tempdir().unwrap();
    let (origin, origin_addr) = spawn_origin(dir.path());
    let nodes: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut servers: Vec<Option<Child>> = (0..3)
        .map(|i| {
            let routes: Vec<String> =
                (0..3).filter(|j| *j != i).map(|j| format!("nats://127.0.0.1:{}", nodes[j].1)).collect();
            let log = std::fs::File::create(dir.path().join(format!("nats-{i}.log"))).unwrap();
            let child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &nodes[i].0.to_string(), "-js", "-n", &format!("n{i}")])
                .arg("-sd")
                .arg(dir.path().join(format!("nats-{i}")))
                .args(["--cluster_name", "segue", "--cluster", &format!("nats://127.0.0.1:{}", nodes[i].1)])
                .args(["--routes", &routes.join(",")])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server (Debian: nats-server; scripts/services.sh installs it)");
            Some(child)
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(|(p, _)| format!("nats://127.0.0.1:{p}")).collect();
    let (port, metrics_port) = (free_port(), free_port());
    let plays = format!(
        "log = \"nats\"\n[plays.nats]\nurl = \"{}\"\nreplicas = 3\npartitions = 2\nstream = \"PLAYS_C\"\n\
         subject = \"segue.cluster\"\ndead_letter_stream = \"PLAYS_C_DEAD\"\ndead_letter_subject = \"segue.cluster-dead\"\n\
         consumer_listen = \"127.0.0.1:{metrics_port}\"\nconsumer_batch = 200\n",
        urls.join(",")
    );
    let cfg = write_config(dir.path(), port, &db, origin_addr, &plays);
    // The cluster elects its JetStream leader within seconds; until then the stream
    // cannot be created and the app API exits naming the error.
    let healthy = || get(&format!("http://127.0.0.1:{port}/healthz"), &[]).0 == 200;
    let mut app = None;
    for _ in 0..30 {
        let mut c = segue();
        c.args(["app-api", "--config"]).arg(&cfg).stderr(std::process::Stdio::null());
        let Ok((mut child, _)) = try_spawn_servers(c, 1) else { continue };
        // It listens first, then connects to NATS and exits if it cannot.
        while !healthy() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if healthy() {
            app = Some(child);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let app = app.expect("the app API never started against the cluster");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tracks = catalog(dir.path(), addr);
    let consumer = start_consumer(&cfg);

    // Poison, published raw on partition 0 through the last node: not JSON, and a play
    // PostgreSQL refuses.
    let now = now_ms();
    let bad_play = serde_json::json!({"user": "u-x", "event_id": "poison-1", "track": tracks[0],
        "started_ms": now - 60_000, "ms_played": 40_000, "tier": "high", "country": "SE", "device": "a\u{0}b",
        "skipped": false, "received_ms": now});
    {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", nodes[2].0)).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut info = String::new();
        r.read_line(&mut info).unwrap();
        let mut out = b"CONNECT {\"verbose\":false}\r\n".to_vec();
        for payload in [b"not a play".to_vec(), bad_play.to_string().into_bytes()] {
            out.extend_from_slice(format!("PUB segue.cluster.0 {}\r\n", payload.len()).as_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"PING\r\n");
        s.write_all(&out).unwrap();
        let mut line = String::new();
        while !line.starts_with("PONG") {
            line.clear();
            r.read_line(&mut line).unwrap();
        }
    }

    let mut killed = false;
    let failures = send_through_kills(port, storm_batches(&tracks, 60, 50), || {
        if !killed {
            let mut node = servers[0].take().unwrap();
            node.kill().unwrap();
            node.wait().unwrap();
            killed = true;
        }
    });
    eprintln!("{failures} requests failed while a node was down");
    wait_for("the consumer to apply every acknowledged event", 90, || totals(addr) == (3000, 2000));
    wait_for("the stream to drain", 30, || lag_events(addr) == 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(totals(addr), (3000, 2000), "no event lost, none counted twice");
    assert_eq!(metric(format!("127.0.0.1:{metrics_port}").parse().unwrap(), "plays_consumer_dead_lettered_total"), 2.0);
    let (ok, out) = verify(&cfg, &[]);
    assert!(ok && out.contains("3000 events"), "{out}");
    kill_9(consumer);
    kill_9(app);
    kill_9(origin);
    for s in servers.into_iter().flatten() {
        kill_9(s);
    }
}
