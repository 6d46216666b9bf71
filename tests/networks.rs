//! The player on bad networks, against a real stack (`segue up`) through faulty POPs:
//! stalls, pauses and throttled links.

mod common;

use common::player::*;
use common::*;

/// Paced like a sound device, a next track whose fetch stalls fades the current one out
/// over 500 ms and fills with silence until it arrives: no click, no cut.
#[test]
fn a_stalled_next_track_fades_out_instead_of_clicking() {
    let Up { dir, up, origin, edge, app, token, token_file, .. } = start_up();
    let ids = album_ids(app, &token);
    let (_, second) = admin(app, "GET", &format!("/v1/tracks/{}", ids[1]), Some(&token), None);
    let stall = format!("/a/{}/high.ogg", second["content_id"].as_str().unwrap());
    let proxy = faulty_pop(edge, Fault::StallRequest(stall, 3.0));
    let (app2, app2_addr) = app_api_with_pops(dir.path(), "app2", origin, &[format!("http://{proxy}")]);
    let out = dir.path().join("stalled.wav");
    let report = play(app2_addr, &token_file, &out, &["--speed", "4"], &ids[..2]);
    assert_eq!(report["underruns"].as_u64(), Some(1), "{report}");
    let silence = report["silence_frames"].as_u64().unwrap() as usize;
    assert!(silence > 0, "{report}");
    let got = wav_samples(&out);
    let first = 3 * 44_100;
    assert_eq!(got.len(), (2 * first + silence) * 2, "track 1, silence, then all of track 2");
    // The last 500 ms of track 1 fade to nothing, smoothly; then silence.
    let fade = 44_100 / 2;
    let level = |from: usize, frames: usize| {
        (got[from * 2..(from + frames) * 2].iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / (frames * 2) as f64)
            .sqrt()
    };
    let (start, end) = (level(first - fade, 441), level(first - 441, 441));
    assert!(start > 1000.0 && end < start / 20.0, "faded: {start:.0} -> {end:.0} RMS");
    let steps =
        got[(first - 441) * 2..first * 2].windows(3).map(|w| (i32::from(w[2]) - i32::from(w[0])).abs()).max().unwrap();
    assert!(steps < 2000, "no click at the end of the fade: a step of {steps}");
    assert!(got[first * 2..(first + silence) * 2].iter().all(|s| *s == 0), "silence while the next track is late");
    assert!(terminate(app2).success());
    assert!(terminate(up).success());
}

/// Paced, a track whose bytes stop coming part way plays silence until 250 ms more have
/// arrived, then goes on where it was: nothing skipped, nothing repeated. A POP slower
/// than the tier gets a warning in the report.
#[test]
fn a_slow_pop_rebuffers_mid_track_and_the_report_warns_of_the_tier() {
    let Up { dir, up, origin, edge, app, token, token_file, .. } = start_up();
    let ids = album_ids(app, &token);
    let track = &ids[..1];
    let whole = dir.path().join("whole.wav");
    play(app, &token_file, &whole, &[], track);
    // Within the second page (the headers and the first half second are ~14 KiB, the
    // next second ~20 KiB), the POP pauses for 2 s.
    let slow = faulty_pop(edge, Fault::PauseAfter(32 << 10, 2.0));
    let (app2, app2_addr) = app_api_with_pops(dir.path(), "app2", origin, &[format!("http://{slow}")]);
    let out = dir.path().join("rebuffered.wav");
    let report = play(app2_addr, &token_file, &out, &["--speed", "4"], track);
    assert_eq!((report["rebuffers"].as_u64(), report["underruns"].as_u64()), (Some(1), Some(0)), "{report}");
    let silence = report["silence_frames"].as_u64().unwrap() as usize * 2;
    assert!(silence >= 44_100 / 4 * 2, "at least the 250 ms start buffer: {report}");
    let (want, got) = (wav_samples(&whole), wav_samples(&out));
    assert_eq!(got.len(), want.len() + silence, "the whole track and the silence");
    // Where the silence sits: the track up to there, the silence, then the rest of it.
    let at = (0..want.len()).find(|&i| got[i..i + silence].iter().all(|s| *s == 0)).unwrap();
    assert!(at > 0 && at < want.len() - 44_100, "mid-track: at sample {at}");
    assert!(got[..at] == want[..at], "the track up to the pause");
    assert!(got[at + silence..] == want[at..], "then the rest, from where it stopped");

    // A POP slower than the tier: the report warns (and a fast one did not).
    assert_eq!(play(app, &token_file, &whole, &[], track)["warnings"], serde_json::json!([]));
    let crawl = faulty_pop(edge, Fault::Throttle(16 << 10));
    let (app3, app3_addr) = app_api_with_pops(dir.path(), "app3", origin, &[format!("http://{crawl}")]);
    let report = play(app3_addr, &token_file, &out, &["--duration-ms", "1000", "--fixed-tier"], track);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("too slow to sustain the high tier"), "{report}");
    assert!(terminate(app3).success());
    assert!(terminate(app2).success());
    assert!(terminate(up).success());
}

/// A network the player measures as poor (a POP throttled to 512 KiB/s, against a 50 Mbit/s
/// bar: the estimate counts only the time spent waiting for bytes, so it reads well above
/// the throttle, and loopback well above the bar) makes it prefetch the next track's head 45 s before the end; the same queue from
/// the POP directly, 30 s.
#[test]
fn a_poor_network_prefetches_the_next_track_earlier() {
    let Up { dir, up, origin, edge, app, token, token_file, .. } = start_up();
    let ids = album_ids(app, &token);
    let long = long_track(dir.path(), app, &token);
    let queue = [long, ids[0].clone()];
    let proxy = faulty_pop(edge, Fault::Throttle(512 << 10));
    let (app2, app2_addr) = app_api_with_pops(dir.path(), "app2", origin, &[format!("http://{proxy}")]);
    let bar = ["--poor-below-kbps", "50000"];
    let slow = play(app2_addr, &token_file, &dir.path().join("slow.wav"), &bar, &queue);
    let lead = slow["prefetch_leads_ms"][0].as_f64().unwrap();
    assert!((44_000.0..=45_000.0).contains(&lead), "prefetched {lead} ms before the end: {slow}");
    assert_eq!(slow["poor_network_prefetches"].as_u64(), Some(1), "{slow}");
    let fast = play(app, &token_file, &dir.path().join("fast.wav"), &bar, &queue);
    let lead = fast["prefetch_leads_ms"][0].as_f64().unwrap();
    assert!((29_000.0..=30_000.0).contains(&lead), "prefetched {lead} ms before the end: {fast}");
    assert_eq!(fast["poor_network_prefetches"].as_u64(), Some(0), "{fast}");
    assert_eq!(wav_samples(&dir.path().join("slow.wav")), wav_samples(&dir.path().join("fast.wav")));
    assert!(terminate(app2).success());
    assert!(terminate(up).success());
}

/// Frames of each demo album track (3 s at 44.1 kHz), and of `long_track` (130 s).
const ALBUM_TRACK: usize = 3 * 44_100;
const LONG: usize = 130 * 44_100;

/// SNR of a region of `got` (stereo) against the same region of `want` (stereo), each
/// mixed to mono: aligned, and the best of some shifts that a gap or a filter delay
/// left in would cause.
fn mono_alignment(want: &[i16], got: &[i16]) -> (f64, f64) {
    let mono =
        |v: &[i16]| -> Vec<i16> { v.chunks(2).map(|f| ((i32::from(f[0]) + i32::from(f[1])) / 2) as i16).collect() };
    let (w, g) = (mono(want), mono(got));
    let shifted = [-256isize, -64, -16, 16, 64, 256].map(|s| snr_db(&w[300..w.len() - 300], &g, 1, s + 300));
    (snr_db(&w, &g, 1, 0), shifted.into_iter().fold(f64::MIN, f64::max))
}

/// A POP whose one link slows to 10 KiB/s (82 kbit/s: not enough for the normal tier
/// with margin) makes the next track come at the low tier, 22.05 kHz mono, resampled to
/// the queue's 44.1 kHz stereo with no gap at the boundary: the render stays exactly the
/// queue's length, every track where it belongs. When the link recovers (the first
/// low-tier request reaches the edge), the listener's tier comes back on a later track,
/// and the report says why each change happened.
#[test]
fn a_slow_link_lowers_the_next_tracks_tier_gaplessly_and_a_recovered_one_restores_it() {
    let Up { dir, up, origin, edge, app, token, token_file, .. } = start_up();
    let ids = album_ids(app, &token);
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let proxy = faulty_pop(edge, Fault::Link(10 << 10, slow.clone()));
    let (app2, app2_addr) = app_api_with_pops(dir.path(), "app2", origin, &[format!("http://{proxy}")]);
    let log_dir = dir.path().to_owned();
    let recover = slow.clone();
    std::thread::spawn(move || {
        wait_for("a low-tier request at the edge", 120, || {
            access_log(&log_dir).iter().any(|l| l["path"].as_str().is_some_and(|p| p.contains("/low.")))
        });
        recover.store(false, std::sync::atomic::Ordering::SeqCst);
    });
    // Two long tracks after the album: low-tier album tracks are a few kilobytes, too
    // little to outweigh the slow samples; the long ones bring enough to.
    let long = long_track(dir.path(), app, &token);
    let queue = [&ids[..], &[long.clone(), long, ids[0].clone()]].concat();
    let out = dir.path().join("adaptive.wav");
    let report = play(app2_addr, &token_file, &out, &["--tier", "normal", "--prefetch-tracks", "1"], &queue);
    assert!(!slow.load(std::sync::atomic::Ordering::SeqCst), "the link recovered: {report}");
    let tiers: Vec<&str> = report["tiers"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tiers.len(), queue.len(), "{report}");
    assert_eq!(tiers[0], "normal", "the first track at the listener's tier: {report}");
    let first_low = tiers.iter().position(|t| *t == "low").unwrap_or_else(|| panic!("no low tier: {report}"));
    assert!(first_low < 4, "a low-tier track on the slow link: {report}");
    assert_eq!(tiers[queue.len() - 1], "normal", "the listener's tier back after the recovery: {report}");
    let changes = report["tier_changes"].as_array().unwrap();
    assert!(changes[0]["reason"].as_str().unwrap().contains("cannot sustain normal"), "{report}");
    assert!(changes.last().unwrap()["reason"].as_str().unwrap().contains("again"), "{report}");
    assert_eq!((report["gap_samples"].as_u64(), report["underruns"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!((report["sample_rate"].as_u64(), report["channels"].as_u64()), (Some(44_100), Some(2)), "{report}");

    // Exactly the queue's length: no frame lost or added at any boundary, low tier or not.
    let got = wav_samples(&out);
    assert_eq!(got.len(), (5 * ALBUM_TRACK + 2 * LONG) * 2, "{report}");
    // Every album track where its cut of the continuous piece is; a low-tier one mono in
    // both channels, and aligned (a gap or a delay would shift it).
    let master = segue_origin::demo::music(1, 0, 12);
    let want: Vec<i16> =
        (0..master[0].len()).flat_map(|i| [0, 1].map(|c| (master[c][i] * 32767.0).round() as i16)).collect();
    let track = ALBUM_TRACK * 2;
    // The album, then the last track (the album's first again) at the end of the render.
    for (t, tier) in tiers.iter().enumerate().filter(|(t, _)| *t < 4 || *t == queue.len() - 1) {
        let (w, g) = match t {
            0..4 => (&want[t * track..(t + 1) * track], &got[t * track..(t + 1) * track]),
            _ => (&want[..track], &got[got.len() - track..]),
        };
        if *tier == "low" {
            assert!(g.chunks(2).all(|f| f[0] == f[1]), "track {t}: mono in both channels");
        }
        let (aligned, shifted) = mono_alignment(w, g);
        assert!(
            aligned > 5.0 && aligned > shifted + 1.0,
            "track {t} ({tier}): {aligned:.1} dB aligned, {shifted:.1} shifted"
        );
    }
    assert!(terminate(app2).success());
    assert!(terminate(up).success());
}

/// Lines of the edge's access log for `content`'s objects, once `sentinel`'s count has
/// grown past `seen` (a play made after the ones being counted: its lines come later).
fn edge_lines(dir: &std::path::Path, content: &str, sentinel: &str, seen: usize) -> (usize, usize) {
    let count = |c: &str| {
        access_log(dir).iter().filter(|l| l["path"].as_str().is_some_and(|p| p.contains(&format!("/{c}/")))).count()
    };
    wait_for("the sentinel play's access log lines", 20, || count(sentinel) > seen);
    (count(content), count(sentinel))
}

/// The on-device cache: a second play of a track makes no request to the edge and
/// sounds the same. What stays is what is played most: a track played less often never
/// evicts a cached one, a track played more often does. A damaged cached object is
/// dropped and the track comes from the edge again.
#[test]
fn a_cached_track_plays_again_with_no_request_to_the_edge() {
    let Up { dir, up, app, token, token_file, .. } = start_up();
    let ids = album_ids(app, &token);
    let content = |id: &str| {
        let (_, t) = admin(app, "GET", &format!("/v1/tracks/{id}"), Some(&token), None);
        t["content_id"].as_str().unwrap().to_owned()
    };
    let (a, b, sentinel) = (&ids[0], &ids[1], &ids[2]);
    let (ca, cb, cs) = (content(a), content(b), content(sentinel));
    let device = dir.path().join("device");
    let device_arg = device.to_str().unwrap().to_owned();
    let mut bound = "2G".to_owned();
    let mut seen = 0;
    let mut run = |id: &str, out: &str, bound: &str| {
        let flags = ["--device-dir", &device_arg, "--cache-bytes", bound];
        let report = play(app, &token_file, &dir.path().join(out), &flags, &[id.to_owned()]);
        // The sentinel, with no cache, makes sure the edge has logged that play.
        play(
            app,
            &token_file,
            &dir.path().join("s.wav"),
            &["--device-dir", &device_arg, "--no-cache"],
            std::slice::from_ref(sentinel),
        );
        let (lines_a, s) = edge_lines(dir.path(), &ca, &cs, seen);
        let lines_b = edge_lines(dir.path(), &cb, &cs, seen).0;
        seen = s;
        (report, lines_a, lines_b)
    };
    let index = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(device.join("cache/index.json")).unwrap()).unwrap()
    };
    let (first, a1, _) = run(a, "a1.wav", &bound);
    assert!(a1 > 0 && first["bytes_fetched"].as_u64() > Some(0), "{first}");
    assert_eq!(first["cached"].as_u64(), Some(1), "{first}");
    let (second, a2, _) = run(a, "a2.wav", &bound);
    assert_eq!(a2, a1, "no request to the edge for a cached track: {second}");
    assert_eq!((second["bytes_fetched"].as_u64(), second["from_cache"].as_u64()), (Some(0), Some(2)), "{second}");
    assert_eq!(wav_samples(&dir.path().join("a1.wav")), wav_samples(&dir.path().join("a2.wav")));

    // Room for one track: b, played less often than a (twice), does not take its place.
    let entry = &index()["entries"][format!("{ca}/high")];
    bound = ((entry["object_len"].as_u64().unwrap() + entry["table_len"].as_u64().unwrap()) * 3 / 2).to_string();
    for n in 1..=2 {
        let (r, ..) = run(b, &format!("b{n}.wav"), &bound);
        assert_eq!(r["cached"].as_u64(), Some(0), "b's play {n}: {r}");
        assert!(index()["entries"].get(format!("{ca}/high")).is_some(), "a stays cached");
    }
    // Its third play outnumbers a's two: b takes the room, and a comes from the edge again.
    let (third, ..) = run(b, "b3.wav", &bound);
    assert_eq!(third["cached"].as_u64(), Some(1), "{third}");
    let entries = index()["entries"].clone();
    assert!(entries.get(format!("{cb}/high")).is_some() && entries.get(format!("{ca}/high")).is_none(), "{entries}");
    let (again, a3, _) = run(a, "a3.wav", &bound);
    assert!(a3 > a2 && again["from_cache"].as_u64() == Some(0), "{again}");
    let (cached_b, _, b4) = run(b, "b4.wav", &bound);
    assert_eq!(cached_b["bytes_fetched"].as_u64(), Some(0), "{cached_b}");

    // A damaged object (same length) is caught, dropped and fetched again.
    let object = device.join(format!("cache/{cb}/high.ogg"));
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();
    let (healed, _, b5) = run(b, "b5.wav", &bound);
    assert!(b5 > b4 && healed["from_cache"].as_u64() == Some(0), "{healed}");
    assert_eq!(healed["cached"].as_u64(), Some(1), "stored again whole: {healed}");
    for n in 2..=5 {
        assert_eq!(wav_samples(&dir.path().join("b1.wav")), wav_samples(&dir.path().join(format!("b{n}.wav"))));
    }
    assert!(terminate(up).success());
}

/// Over TLS the player plays exactly what it plays over plain HTTP: with HTTP/2 every
/// request of the session (stream tables, prefetched heads, the rest of each track)
/// shares one connection; with HTTP/1.1 over TLS kept-alive connections are reused, and
/// without keep-alive each request pays its own handshake. A POP whose certificate the
/// player does not trust is an error that says so.
#[test]
fn the_player_streams_over_tls_on_one_http2_connection() {
    let Up { dir, up, origin, app, token, token_file, .. } = start_up();
    let ids = album_ids(app, &token);
    let (edge, tls_url, ca) = tls_edge(dir.path(), origin);
    let (app2, app2_addr) = app_api_with_pops(dir.path(), "app2", origin, &[tls_url]);
    let wav = |name: &str| wav_samples(&dir.path().join(name));
    play(app, &token_file, &dir.path().join("plain.wav"), &[], &ids);
    let h2 = play(app2_addr, &token_file, &dir.path().join("h2.wav"), &["--ca-file", &ca], &ids);
    assert_eq!(h2["connections"].as_u64(), Some(1), "{h2}");
    assert!(wav("h2.wav") == wav("plain.wav"), "the same audio over HTTP/2 and TLS");
    // In each track, a second in, a seek to 2 s: on the same connection, and exactly the
    // audio from there.
    let seeks =
        play(app2_addr, &token_file, &dir.path().join("seek.wav"), &["--ca-file", &ca, "--seek", "1000:2000"], &ids);
    assert_eq!(seeks["connections"].as_u64(), Some(1), "{seeks}");
    assert_eq!(seeks["seek_latency_ms"].as_array().map(Vec::len), Some(4), "{seeks}");
    let (plain, sought) = (wav("plain.wav"), wav("seek.wav"));
    let second = 44_100 * 2;
    assert_eq!(sought.len(), 4 * 2 * second, "a second before and after each seek");
    for t in 0..4 {
        let (at, from) = (t * 2 * second, t * 3 * second);
        assert!(sought[at..at + second] == plain[from..from + second], "track {t}: its first second");
        assert!(
            sought[at + second..at + 2 * second] == plain[from + 2 * second..from + 3 * second],
            "track {t} from 2 s"
        );
    }
    let flags = ["--ca-file", &ca, "--tls-protocol", "h1-tls"];
    let h1 = play(app2_addr, &token_file, &dir.path().join("h1.wav"), &flags, &ids);
    let fresh =
        play(app2_addr, &token_file, &dir.path().join("fresh.wav"), &[&flags[..], &["--no-keep-alive"]].concat(), &ids);
    let (kept, each) = (h1["connections"].as_u64().unwrap(), fresh["connections"].as_u64().unwrap());
    assert!(kept >= 1 && each >= 2 * kept, "{kept} kept-alive connections, {each} without keep-alive");
    assert!(wav("h1.wav") == wav("plain.wav") && wav("fresh.wav") == wav("plain.wav"));

    let untrusted = segue()
        .args(["play", "--no-report", "--country", "SE", "--app-api", &format!("http://{app2_addr}"), "--token-file"])
        .arg(&token_file)
        .arg("--out")
        .arg(dir.path().join("x.wav"))
        .arg(&ids[0])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success() && err.contains("certificate"), "{err}");
    assert!(terminate(app2).success());
    assert!(terminate(edge).success());
    assert!(terminate(up).success());
}
