//! `segue play` against a real stack (`segue up`: origin, edge, control plane, app API on
//! 127.0.0.1): the gapless demo album renders back to back like the continuous master.

mod common;

use common::player::*;
use common::*;

/// A listener of `app` (a new user's key) and one of `ids` whose stream answer's first
/// POP is `pop`.
fn listener_on(app: std::net::SocketAddr, token: &str, ids: &[String], pop: &str) -> (String, String) {
    for n in 0..16 {
        let body = format!(r#"{{"name":"listener {n}","country":"SE"}}"#);
        let (code, u) = admin(app, "POST", "/v1/admin/users", Some(token), Some(&body));
        assert_eq!(code, 201, "{u}");
        let key = u["api_key"].as_str().unwrap().to_owned();
        for id in ids {
            let (_, s) = admin(app, "GET", &format!("/v1/tracks/{id}/stream"), Some(&key), None);
            if s["url"].as_str().unwrap_or("").starts_with(pop) {
                return (key, id.clone());
            }
        }
    }
    panic!("no listener's first POP is {pop}");
}

/// A POP that is down: the player fails over to the stream answer's second POP and the
/// audio is the same.
#[test]
fn a_dead_pop_fails_over_to_the_second() {
    let Up { dir, up, origin, edge, app, token, .. } = start_up();
    let ids = album_ids(app, &token);
    // A second app API on the same catalog whose POPs are a dead one and the edge.
    let (_held, dead) = dead_addr();
    let dead = format!("http://{dead}");
    let (app2, app2_addr) = app_api_with_pops(dir.path(), "app2", origin, &[dead.clone(), format!("http://{edge}")]);
    let (key, id) = listener_on(app2_addr, &token, &ids, &dead);
    std::fs::write(dir.path().join("listener.key"), &key).unwrap();
    let run = |api: std::net::SocketAddr, token_file: &str, out: &str| {
        play(api, &dir.path().join(token_file), &dir.path().join(out), &[], std::slice::from_ref(&id))
    };
    let report = run(app2_addr, "listener.key", "failover.wav");
    assert!(report["failovers"].as_u64().unwrap() >= 1, "{report}");
    run(app, "app-api.token", "direct.wav");
    assert_eq!(
        std::fs::read(dir.path().join("failover.wav")).unwrap(),
        std::fs::read(dir.path().join("direct.wav")).unwrap(),
        "the same audio through the second POP"
    );
    assert!(terminate(app2).success());
    assert!(terminate(up).success());
}

/// A long track: its first audio plays long before its last byte arrives; a seek to
/// 2:00 fetches only the header pages and the bytes from the seek-table entry on
/// (checked in the edge's access log) and decodes exactly what the whole track decodes
/// from there; a POP that drops the download part way is left for the second POP from
/// the next byte, with no byte fetched twice.
#[test]
fn a_long_track_starts_early_seeks_to_two_minutes_and_resumes_on_the_second_pop() {
    let Up { dir, up, origin, edge, app, token, token_file, .. } = start_up();
    let id = long_track(dir.path(), app, &token);
    let (_, stream) = admin(app, "GET", &format!("/v1/tracks/{id}/stream?country=SE"), Some(&token), None);
    let (_, table_json) = get(stream["seek_table_url"].as_str().unwrap(), &[]);
    let table = segue_core::seek_table::SeekTable::from_json(&table_json).unwrap();
    assert!(table.total_bytes > 2 << 20, "a long track: {} bytes", table.total_bytes);
    let track = std::slice::from_ref(&id);

    // The whole track: the first audio came with a small part of the object.
    let whole = dir.path().join("whole.wav");
    let report = play(app, &token_file, &whole, &[], track);
    assert_eq!(report["frames"].as_u64(), Some(table.total_samples), "{report}");
    assert_eq!(report["bytes_fetched"].as_u64(), Some(table_json.len() as u64 + table.total_bytes), "{report}");
    let early = report["bytes_before_first_audio"].as_u64().unwrap();
    assert!(early < table.total_bytes / 2, "first audio after {early} of {} bytes: {report}", table.total_bytes);

    // A 1.5 s preview: exactly the track's first 1.5 s.
    let preview = dir.path().join("preview.wav");
    let report = play(app, &token_file, &preview, &["--duration-ms", "1500"], track);
    assert_eq!(report["frames"].as_u64(), Some(66_150), "{report}");
    assert!(wav_samples(&preview)[..] == wav_samples(&whole)[..66_150 * 2], "the track's own start");

    // Seek to 2:00.
    let audio_path = stream["url"].as_str().unwrap().split('?').next().unwrap().split_once("//").unwrap().1;
    let audio_path = audio_path[audio_path.find('/').unwrap()..].to_owned();
    let audio_ranges = |from: usize| -> Vec<String> {
        access_log(dir.path())[from..]
            .iter()
            .filter(|l| l["path"] == audio_path.as_str())
            .map(|l| l["range"].as_str().unwrap_or("none").to_owned())
            .collect()
    };
    wait_for("the whole track's and the preview's requests in the access log", 10, || audio_ranges(0).len() == 2);
    let before = access_log(dir.path()).len();
    let seeked = dir.path().join("seek.wav");
    let report = play(app, &token_file, &seeked, &["--start-ms", "120000"], track);
    let entry = table.entry_for(120 * 44_100 - segue_player::decode::PREROLL).unwrap();
    let expected = table_json.len() as u64 + table.header_bytes + (table.total_bytes - entry.offset);
    assert_eq!(report["bytes_fetched"].as_u64(), Some(expected), "{report} {entry:?}");
    assert!(expected < table.total_bytes / 8, "a seek to 2:00 of 2:10 fetches under an eighth of the object");
    let mut ranges = Vec::new();
    wait_for("the seek's requests in the access log", 10, || {
        ranges = audio_ranges(before);
        ranges.len() >= 2
    });
    assert_eq!(
        ranges,
        [format!("bytes=0-{}", table.header_bytes - 1), format!("bytes={}-{}", entry.offset, table.total_bytes - 1)],
        "the header pages, then from the entry on"
    );
    let (from_seek, from_start) = (wav_samples(&seeked), wav_samples(&whole));
    assert_eq!(from_seek.len() as u64, (table.total_samples - 120 * 44_100) * 2, "from 2:00 to the end");
    assert!(from_start[120 * 44_100 * 2..] == from_seek[..], "the same samples from 2:00 on");

    // A POP that drops every answer after 1 MiB: the rest comes from the second POP.
    let cut = format!("http://{}", faulty_pop(edge, Fault::CutAfter(1 << 20)));
    let (app2, app2_addr) = app_api_with_pops(dir.path(), "app2", origin, &[cut.clone(), format!("http://{edge}")]);
    let (key, _) = listener_on(app2_addr, &token, track, &cut);
    std::fs::write(dir.path().join("listener.key"), &key).unwrap();
    let resumed = dir.path().join("resumed.wav");
    let report = play(app2_addr, &dir.path().join("listener.key"), &resumed, &[], track);
    assert!(report["failovers"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(
        report["bytes_fetched"].as_u64(),
        Some(table_json.len() as u64 + table.total_bytes),
        "nothing fetched twice: {report}"
    );
    assert!(std::fs::read(&resumed).unwrap() == std::fs::read(&whole).unwrap(), "the same audio");
    assert!(terminate(app2).success());
    assert!(terminate(up).success());
}

#[test]
fn the_gapless_album_renders_like_the_continuous_master() {
    let Up { dir, up, app, token, token_file, .. } = start_up();
    let ids = album_ids(app, &token);
    let out = dir.path().join("album.wav");
    let report = play(app, &token_file, &out, &[], &ids);
    assert_eq!((report["tracks"].as_u64(), report["gap_samples"].as_u64()), (Some(4), Some(0)), "{report}");

    // Sample for sample the length of the continuous piece: no gap, no overlap.
    let master = segue_origin::demo::music(1, 0, 12);
    let want: Vec<i16> =
        (0..master[0].len()).flat_map(|i| [0, 1].map(|c| (master[c][i] * 32767.0).round() as i16)).collect();
    let mut wav = hound::WavReader::open(&out).unwrap();
    assert_eq!((wav.spec().channels, wav.spec().sample_rate), (2, 44_100));
    let got: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(got.len(), want.len(), "the album is exactly the piece's length");
    // Only the codec's own error: every track sits exactly where its cut of the piece
    // is (a sample dropped or repeated at a boundary would shift all that follows), and
    // each boundary is as faithful as the whole (a gap or a click is a burst of error).
    let whole = snr_db(&want, &got, 2, 0);
    let track = 3 * 44_100 * 2;
    for t in 0..4 {
        let (w, g) = (&want[t * track..(t + 1) * track], &got[t * track..(t + 1) * track]);
        let aligned = snr_db(w, g, 2, 0);
        for shift in [-2isize, -1, 1, 2] {
            let off = snr_db(w, g, 2, shift);
            assert!(off < aligned - 3.0, "track {t}: aligned at 0 ({aligned:.1} dB), not at {shift} ({off:.1} dB)");
        }
    }
    for b in 1..4 {
        let (at, window) = (b * track, 2 * 4096);
        let local = snr_db(&want[at - window..at + window], &got[at - window..at + window], 2, 0);
        assert!(local > whole - 6.0, "boundary {b}: {local:.1} dB against {whole:.1} dB overall");
    }

    // The access log records every request the album made.
    wait_for("the album's access log lines", 10, || access_log(dir.path()).len() >= 8);

    // Crossfade: exactly 500 ms of overlap, an equal-power mix of the two decodes, and
    // each track untouched outside it.
    let first = dir.path().join("first.wav");
    let mixed = dir.path().join("mixed.wav");
    play(app, &token_file, &first, &[], &ids[..1]);
    play(app, &token_file, &mixed, &["--crossfade-ms", "500"], &ids[..2]);
    let second_whole = dir.path().join("second.wav");
    play(app, &token_file, &second_whole, &[], &ids[1..2]);
    let (a, b, m) = (wav_samples(&first), wav_samples(&second_whole), wav_samples(&mixed));
    let c = 44_100 / 2 * 2; // 500 ms, both channels
    assert_eq!(m.len(), a.len() + b.len() - c, "the overlap is exactly 500 ms");
    let cut = a.len() - c;
    assert_eq!(&m[..cut], &a[..cut], "the first track is untouched before the fade");
    assert_eq!(&m[cut + c..], &b[c..], "the second is untouched after it");
    for f in 0..c / 2 {
        let theta = std::f64::consts::FRAC_PI_2 * (f as f64 + 0.5) / (c / 2) as f64;
        for ch in 0..2 {
            let want = f64::from(a[cut + f * 2 + ch]) * theta.cos() + f64::from(b[f * 2 + ch]) * theta.sin();
            let got = f64::from(m[cut + f * 2 + ch]);
            assert!((got - want.round().clamp(-32768.0, 32767.0)).abs() <= 1.0, "frame {f}: {got} vs {want}");
        }
    }

    // Skip to next after 1 s of each: the next track starts from the bytes prefetched for
    // it (each audio object is asked for once), and the output is 1 s + 1 s + all of the
    // last track, the same samples as the tracks' own starts.
    let before = access_log(dir.path()).len();
    let skipped = dir.path().join("skipped.wav");
    let report = play(app, &token_file, &skipped, &["--skip-after-ms", "1000"], &ids[..3]);
    assert_eq!(report["skip_latency_ms"].as_array().map(Vec::len), Some(2), "{report}");
    let s = wav_samples(&skipped);
    let second = 44_100 * 2;
    assert_eq!(s.len(), second * 2 + track, "1 s, 1 s, then the whole last track");
    assert_eq!(&s[..second], &a[..second]);
    assert_eq!(&s[second..2 * second], &b[..second]);
    assert_eq!(&s[2 * second..2 * second + 1000], &got[2 * track..2 * track + 1000], "track 3 from its start");
    let mut audio_requests = std::collections::HashMap::new();
    wait_for("the skip run in the access log", 10, || access_log(dir.path()).len() >= before + 6);
    for v in &access_log(dir.path())[before..] {
        if v["path"].as_str().unwrap().starts_with("/a/") {
            *audio_requests.entry(v["path"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        }
    }
    assert_eq!(audio_requests.len(), 3, "{audio_requests:?}");
    assert!(audio_requests.values().all(|n| *n == 1), "each object fetched once: {audio_requests:?}");

    // Keep-alive: the run's requests came over fewer connections than requests (as the
    // edge saw them: one client port per connection), the number the player reports;
    // without it, one connection per request, and the same audio.
    let run_log = |from: usize| -> (usize, usize) {
        let lines = access_log(dir.path())[from..].to_vec();
        let ports: std::collections::HashSet<&str> = lines.iter().filter_map(|l| l["peer"].as_str()).collect();
        (lines.len(), ports.len())
    };
    let (requests, ports) = run_log(before);
    assert_eq!(report["connections"].as_u64(), Some(ports as u64), "{report}");
    assert!(ports < requests, "{requests} requests over {ports} connections");
    let before = access_log(dir.path()).len();
    let fresh = dir.path().join("fresh.wav");
    let report = play(app, &token_file, &fresh, &["--skip-after-ms", "1000", "--no-keep-alive"], &ids[..3]);
    wait_for("the second skip run in the access log", 10, || access_log(dir.path()).len() >= before + 6);
    let (requests, ports) = run_log(before);
    assert_eq!((report["connections"].as_u64(), ports), (Some(requests as u64), requests), "{report}");
    assert_eq!(wav_samples(&fresh), s, "the same audio either way");
    assert!(terminate(up).success());
}

/// Where a proxy in front of the app API kills the player when its play report comes by.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    /// The play is in the outbox; the app API never sees the report.
    BeforeSend,
    /// The app API stored the play and answered; the player never reads the answer.
    BeforeAck,
}

/// A proxy to `app` that passes every request through (one per connection, as the
/// player makes them), except a play report, at which it kills process `pid` with -9.
fn killing_proxy(
    app: std::net::SocketAddr,
    cut: Cut,
    pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let pid = pid.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                    if let Some(at) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                };
                let head = String::from_utf8_lossy(&req[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while req.len() < head_end + length {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let kill = || {
                    let pid = pid.load(std::sync::atomic::Ordering::SeqCst).to_string();
                    assert!(std::process::Command::new("kill").args(["-9", &pid]).status().unwrap().success());
                };
                let report = head.starts_with("post /v1/play-events ");
                if report && cut == Cut::BeforeSend {
                    return kill();
                }
                // Ask the app API to close after answering, so its answer ends at EOF.
                let mut forward = req[..head_end - 2].to_vec();
                forward.extend_from_slice(b"connection: close\r\n\r\n");
                forward.extend_from_slice(&req[head_end..]);
                let mut upstream = std::net::TcpStream::connect(app).unwrap();
                upstream.write_all(&forward).unwrap();
                let mut answer = Vec::new();
                upstream.read_to_end(&mut answer).unwrap();
                if report {
                    return kill();
                }
                let _ = client.write_all(&answer);
            });
        }
    });
    addr
}

/// Plays of `track` the app API counted.
fn plays_of(app: std::net::SocketAddr, token: &str, track: &str) -> i64 {
    let (code, v) = admin(app, "GET", &format!("/v1/admin/plays/counts?track={track}"), Some(token), None);
    assert_eq!(code, 200, "{v}");
    v["counts"].as_array().unwrap().iter().map(|r| r["plays"].as_i64().unwrap()).sum()
}

/// The player reports each play through its outbox: killed with -9 after the play is
/// written but before it is sent, and after the app API stored it but before the player
/// read the answer, the play is counted exactly once when the outbox is next synced.
#[test]
fn plays_reach_the_app_api_exactly_once_through_player_kills() {
    use std::os::unix::process::ExitStatusExt;
    let Up { dir, up, app, token, .. } = start_up();
    let ids = album_ids(app, &token);
    let (code, u) = admin(app, "POST", "/v1/admin/users", Some(&token), Some(r#"{"name":"ana","country":"SE"}"#));
    assert_eq!(code, 201, "{u}");
    let key_file = dir.path().join("ana.key");
    std::fs::write(&key_file, u["api_key"].as_str().unwrap()).unwrap();
    let outbox = dir.path().join("ana-outbox");
    let waiting = || {
        std::fs::read_dir(&outbox)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    let player = |api: std::net::SocketAddr, args: &[&str]| {
        let mut c = segue();
        c.args(["play", "--app-api", &format!("http://{api}"), "--json", "--token-file"])
            .arg(&key_file)
            .arg("--outbox")
            .arg(&outbox)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let out = dir.path().join("ana.wav");
    let out = out.to_str().unwrap();

    // Killed before the report leaves: the play waits in the outbox, uncounted.
    let proxy = killing_proxy(app, Cut::BeforeSend, pid.clone());
    let child = player(proxy, &["--out", out, &ids[0]]).spawn().unwrap();
    pid.store(child.id(), std::sync::atomic::Ordering::SeqCst);
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.signal(), Some(9), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(waiting(), 1, "the play is in the outbox");
    assert_eq!(plays_of(app, &token, &ids[0]), 0);

    // Killed after the app API stored it, before the player read the answer.
    let proxy = killing_proxy(app, Cut::BeforeAck, pid.clone());
    let child = player(proxy, &["--sync"]).spawn().unwrap();
    pid.store(child.id(), std::sync::atomic::Ordering::SeqCst);
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.signal(), Some(9), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(waiting(), 1, "not acknowledged to the player, so still waiting");
    assert_eq!(plays_of(app, &token, &ids[0]), 1);

    // The next sync resends it: a duplicate, counted once, and the outbox is empty.
    let run = player(app, &["--sync"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!((v["plays"]["duplicates"].as_u64(), v["plays"]["waiting"].as_u64()), (Some(1), Some(0)), "{v}");
    assert_eq!(plays_of(app, &token, &ids[0]), 1);
    assert_eq!(waiting(), 0);

    // A normal run reports as it plays; --no-report leaves no trace.
    let run = player(app, &["--out", out, &ids[1]]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["plays"]["waiting"].as_u64(), Some(0), "{v}");
    let run = player(app, &["--out", out, "--no-report", &ids[2]]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!((plays_of(app, &token, &ids[1]), plays_of(app, &token, &ids[2])), (1, 0));
    // The play is the listener's: the whole 3 s track, in their home country.
    let (_, counts) = admin(app, "GET", &format!("/v1/admin/plays/counts?track={}", ids[1]), Some(&token), None);
    assert_eq!(counts["counts"][0]["country"], "SE", "{counts}");
    assert_eq!(counts["counts"][0]["ms_played"].as_i64().map(|m| (m - 3000).abs() <= 1), Some(true), "{counts}");
    assert!(terminate(up).success());
}

/// An edge in front of `origin` that requires signed URLs (the `segue up` key) and
/// places loopback clients in `country` (as a GeoIP database would place a listener).
fn edge_in(dir: &std::path::Path, origin: std::net::SocketAddr, country: &str) -> (std::process::Child, String) {
    let key = std::fs::read_to_string(dir.join("signing.key")).unwrap();
    let cfg = dir.join(format!("edge-{country}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nupstreams = [\"http://{origin}\"]\nunknown_country = \"{country}\"\n\
             [tokens]\nrequired = true\n[tokens.keys]\nup = \"{}\"\n",
            key.trim()
        ),
    )
    .unwrap();
    let mut e = segue();
    e.args(["edge", "--config"]).arg(&cfg);
    let (child, addr) = spawn_server(e);
    (child, format!("http://{addr}"))
}

/// The same path and token on another host.
fn on_host(url: &str, base: &str) -> String {
    let path = &url[url.find("://").unwrap() + 3..];
    format!("{base}{}", &path[path.find('/').unwrap()..])
}

/// A new listener of `country`: their API key.
fn listener(app: std::net::SocketAddr, token: &str, name: &str, country: &str) -> String {
    let body = format!(r#"{{"name":"{name}","country":"{country}"}}"#);
    let (code, u) = admin(app, "POST", "/v1/admin/users", Some(token), Some(&body));
    assert_eq!(code, 201, "{u}");
    u["api_key"].as_str().unwrap().to_owned()
}

/// Rights follow the listener: a US account cannot pick SE's rights at the app API, its
/// URLs are bound to US, and an edge that places the request in SE refuses them. A right
/// withdrawn reaches URLs already issued through the control plane's heartbeat answers
/// within 30 s, and a new grant lifts it.
#[test]
fn rights_bind_to_the_listener_and_a_withdrawal_reaches_issued_urls_within_30_s() {
    let Up { dir, up, app, origin, token, .. } = start_up();
    let ids = album_ids(app, &token);
    let us = listener(app, &token, "sam", "US");
    let stream =
        |key: &str, query: &str| admin(app, "GET", &format!("/v1/tracks/{}/stream{query}", ids[0]), Some(key), None);

    // At the app API: another country is refused; the home country is the default.
    let (code, v) = stream(&us, "?country=SE");
    assert_eq!((code, v["error"].as_str()), (403, Some("country_mismatch")), "{v}");
    let (code, v) = stream(&us, "");
    assert_eq!((code, v["country"].as_str()), (200, Some("US")), "{v}");
    let url = v["url"].as_str().unwrap().to_owned();
    assert!(url.contains("country=US"), "the URL is bound to the listener's country: {url}");
    // Its plays are where the session was signed for, whatever the client says.
    let session = v["session"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let play = |id: &str, country: Option<&str>| {
        let mut e = serde_json::json!({"event_id": id, "track": ids[0], "started_ms": now - 60_000,
            "ms_played": 2_000, "tier": "high", "device": "phone", "session": session});
        if let Some(c) = country {
            e["country"] = c.into();
        }
        let body = serde_json::json!({ "events": [e] }).to_string();
        admin(app, "POST", "/v1/play-events", Some(&us), Some(&body)).1["results"][0].clone()
    };
    assert_eq!(play("us-1", Some("SE"))["reason"], "country_mismatch");
    assert_eq!(play("us-2", None)["status"], "accepted");
    let (_, counts) = admin(app, "GET", &format!("/v1/admin/plays/counts?track={}", ids[0]), Some(&token), None);
    assert_eq!(counts["counts"][0]["country"], "US", "{counts}");
    // A URL edited to another country no longer verifies.
    let (se_edge, se) = edge_in(dir.path(), origin, "SE");
    let (us_edge, us_base) = edge_in(dir.path(), origin, "US");
    let (code, _) = get(&on_host(&url.replace("country=US", "country=SE"), &se), &[]);
    assert_eq!(code, 403, "a forged country claim");
    // At the edge: the US URL from a request the edge places in SE is refused.
    let (code, body) = get(&on_host(&url, &se), &[]);
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    let (code, _) = get(&on_host(&url, &us_base), &["-r", "0-99"]);
    assert_eq!(code, 206, "from the US it plays");

    // A withdrawal: the app API refuses new URLs at once, and the POP refuses the old one
    // within 30 s (heartbeats every 5 s in `segue up`).
    let se_key = listener(app, &token, "sofia", "SE");
    let (code, v) = stream(&se_key, "");
    assert_eq!(code, 200, "{v}");
    let old = v["url"].as_str().unwrap().to_owned();
    let (code, _) = get(&old, &["-r", "0-99"]);
    assert_eq!(code, 206);
    let rights = format!("/v1/admin/tracks/{}/rights", ids[0]);
    let started = std::time::Instant::now();
    let (code, v) = admin(app, "DELETE", &format!("{rights}/SE"), Some(&token), None);
    assert_eq!(code, 200, "{v}");
    let (code, v) = stream(&se_key, "");
    assert_eq!((code, v["error"].as_str()), (403, Some("forbidden")), "no new URL: {v}");
    wait_for("the POP to refuse the withdrawn URL", 30, || get(&old, &["-r", "0-99"]).0 == 403);
    let took = started.elapsed();
    eprintln!("withdrawal reached the POP in {:.1} s", took.as_secs_f64());
    let (_, body) = get(&old, &[]);
    assert!(String::from_utf8_lossy(&body).contains("rights_withdrawn"), "{}", String::from_utf8_lossy(&body));
    // Other countries' URLs of the same track still play.
    let (code, _) = get(&on_host(&url, &us_base), &["-r", "0-99"]);
    assert_eq!(code, 206);

    // Granted again: new URLs, and the POP lets them through once the withdrawal is lifted.
    let (code, v) = admin(app, "PUT", &rights, Some(&token), Some(r#"{"countries":["SE"]}"#));
    assert_eq!(code, 200, "{v}");
    let (code, v) = stream(&se_key, "");
    assert_eq!(code, 200, "{v}");
    let fresh = v["url"].as_str().unwrap().to_owned();
    wait_for("the POP to lift the withdrawal", 30, || get(&fresh, &["-r", "0-99"]).0 == 206);
    for e in [se_edge, us_edge] {
        assert!(terminate(e).success());
    }
    assert!(terminate(up).success());
}

/// End-of-day reconciliation over the edge's access log: the player's plays match their
/// deliveries (same session, same track); a play reported with a session nothing
/// delivered, and a delivery nobody reported, are both found.
#[test]
fn reconciliation_finds_a_play_without_delivery_and_a_delivery_without_play() {
    let Up { dir, up, app, token, .. } = start_up();
    let ids = album_ids(app, &token);
    let key = listener(app, &token, "rita", "SE");
    let key_file = dir.path().join("rita.key");
    std::fs::write(&key_file, &key).unwrap();
    let run = segue()
        .args(["play", "--app-api", &format!("http://{app}"), "--json", "--token-file"])
        .arg(&key_file)
        .arg("--outbox")
        .arg(dir.path().join("rita-outbox"))
        .arg("--out")
        .arg(dir.path().join("rita.wav"))
        .args(&ids[..2])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["plays"]["accepted"].as_u64(), Some(2), "{v}");
    // Planted: a play of track 3 in a session no POP served.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let planted = serde_json::json!({"events": [{"event_id": "planted-1", "track": ids[2], "started_ms": now - 60_000,
        "ms_played": 2_000, "tier": "high", "device": "rig", "session": "ses_planted"}]});
    let (code, v) = admin(app, "POST", "/v1/play-events", Some(&key), Some(&planted.to_string()));
    assert_eq!((code, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    // Planted: track 4 fetched whole and never reported.
    let (_, stream) = admin(app, "GET", &format!("/v1/tracks/{}/stream", ids[3]), Some(&key), None);
    let unreported = stream["session"].as_str().unwrap().to_owned();
    let (code, body) = get(stream["url"].as_str().unwrap(), &[]);
    assert!(code == 200 && !body.is_empty());
    wait_for("the access log to hold the fetch", 10, || {
        access_log(dir.path()).iter().any(|l| l["session"].as_str() == Some(unreported.as_str()))
    });

    let day =
        String::from_utf8(std::process::Command::new("date").args(["-u", "+%F"]).output().unwrap().stdout).unwrap();
    let out = segue()
        .args(["plays", "reconcile", "--day", day.trim(), "--format", "json", "--min-bytes", "1", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("app-api.db").display()))
        .arg("--access-log")
        .arg(dir.path().join("edge-access.log"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let line = |track: &str| r["tracks"].as_array().unwrap().iter().find(|t| t["track"] == track).cloned().unwrap();
    for t in &ids[..2] {
        let l = line(t);
        assert_eq!((l["plays"].as_u64(), l["delivered_plays"].as_u64()), (Some(1), Some(1)), "{l}");
        assert_eq!(l["deliveries_without_play"].as_u64(), Some(0), "{l}");
    }
    let l = line(&ids[2]);
    assert_eq!(l["plays_without_delivery"].as_u64(), Some(1), "{l}");
    assert_eq!(l["undelivered_sessions"][0], "ses_planted", "{l}");
    let l = line(&ids[3]);
    assert_eq!((l["plays"].as_u64(), l["deliveries_without_play"].as_u64()), (Some(0), Some(1)), "{l}");
    assert_eq!(l["unreported_sessions"][0].as_str(), Some(unreported.as_str()), "{l}");
    // A missing log is an error naming it.
    let out = segue()
        .args(["plays", "reconcile", "--day", day.trim(), "--access-log", "/nonexistent.log", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("app-api.db").display()))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/nonexistent.log"));
    assert!(terminate(up).success());
}
