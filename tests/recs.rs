//! Recommendations end to end on `segue up`: plays posted by listeners of two tastes,
//! `segue recs train` on the app API's database, and radio that follows the taste.

mod common;

use common::*;

#[test]
fn radio_follows_what_listeners_play_together_after_training() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // Two tastes: one crowd plays tracks 0 and 2 of the album, the other 1 and 3 (cuts of
    // one piece: by sound alone, neighbours are alike).
    let mut n = 0;
    for crowd in 0..2 {
        for u in 0..8 {
            let body = format!(r#"{{"name":"listener {crowd}-{u}","country":"SE"}}"#);
            let (code, user) = admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(&body));
            assert_eq!(code, 201, "{user}");
            let key = user["api_key"].as_str().unwrap().to_owned();
            let events: Vec<serde_json::Value> = (0..6)
                .map(|k| {
                    n += 1;
                    serde_json::json!({
                        "event_id": format!("0190f0e0-0000-7000-8000-{n:012x}"),
                        "track": ids[crowd + 2 * (k % 2)],
                        "started_ms": now - 3_600_000 + k as i64 * 60_000,
                        "ms_played": 2_500, "tier": "high", "device": "phone",
                    })
                })
                .collect();
            let body = serde_json::json!({ "sent_ms": now, "events": events }).to_string();
            let (code, r) = admin(up.app, "POST", "/v1/play-events", Some(&key), Some(&body));
            assert_eq!((code, r["accepted"].as_u64()), (200, Some(6)), "{r}");
        }
    }
    let (_, me) = admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"me","country":"SE"}"#));
    let me = me["api_key"].as_str().unwrap().to_owned();
    // Before training, radio answers from audio features alone.
    let (code, before) = admin(up.app, "GET", &format!("/v1/tracks/{}/radio", ids[0]), Some(&me), None);
    assert_eq!((code, before["model"].as_i64()), (200, Some(0)), "{before}");
    eprintln!("audio only, from track 0: {}", before["tracks"]);
    let run = segue()
        .args(["recs", "train", "--json", "--factors", "8", "--iterations", "10", "--database"])
        .arg(format!("sqlite://{}", up.dir.path().join("app-api.db").display()))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let trained: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        (trained["users"].as_u64(), trained["tracks"].as_u64(), trained["plays"].as_u64()),
        (Some(16), Some(4), Some(96))
    );
    // The app API reloads its vectors within a minute; a fresh app API on the same
    // database sees the model at once.
    let (up2, app2) = restart_app_api(&up);
    let radio = |track: &str| {
        let (code, r) = admin(app2, "GET", &format!("/v1/tracks/{track}/radio?limit=10"), Some(&me), None);
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["model"].as_i64(), trained["model"].as_i64(), "{r}");
        r["tracks"].as_array().unwrap().iter().map(|t| t["track_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let rank = |list: &[String], t: &str| list.iter().position(|x| x == t).unwrap();
    // Track 0's listeners also play track 2, not its neighbours in sound (1) or 3.
    let from0 = radio(&ids[0]);
    let before_first = |a: &str, b: &str| rank(&from0, a) < rank(&from0, b);
    assert!(before_first(&ids[2], &ids[1]) && before_first(&ids[2], &ids[3]), "{from0:?} of {ids:?}");
    let from3 = radio(&ids[3]);
    let before_first = |a: &str, b: &str| rank(&from3, a) < rank(&from3, b);
    assert!(before_first(&ids[1], &ids[0]) && before_first(&ids[1], &ids[2]), "{from3:?} of {ids:?}");
    assert_eq!(admin(app2, "GET", &format!("/v1/tracks/{}/radio?limit=0", ids[0]), Some(&me), None).0, 400);
    assert!(terminate(up2).success());
    assert!(terminate(up.up).success());
}

/// A second app API on `segue up`'s database (the same catalog, plays and models).
fn restart_app_api(up: &Up) -> (std::process::Child, std::net::SocketAddr) {
    let dir = up.dir.path().join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", up.dir.path().join("app-api.db").display());
    let token = std::fs::read_to_string(up.dir.path().join("app-api.token")).unwrap();
    let cfg = dir.join("app.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{db}\"\norigin = \"http://{}\"\nadmin_tokens = [\"{}\"]\nsearch_dir = \"{}\"\n\
             [drm]\nsigning_key_file = \"{}\"\n",
            up.origin,
            token.trim(),
            dir.join("search").display(),
            dir.join("drm.key").display()
        ),
    )
    .unwrap();
    let mut c = segue();
    c.args(["app-api", "--config"]).arg(&cfg);
    spawn_server(c)
}

/// Masters of two sounds, ingested into `segue up`'s store and added to its catalog
/// with rights in SE: taste A is low and tonal (two sines), taste B bright noise. Each
/// track has its own artist. Returns (kind, index, track id) in order.
fn add_tracks(up: &Up, names: &[(&str, usize)]) -> Vec<(String, String)> {
    let masters = up.dir.path().join("masters");
    std::fs::create_dir_all(&masters).unwrap();
    let mut files = Vec::new();
    for (kind, i) in names {
        let f = masters.join(format!("{kind}{i}.wav"));
        let effect: Vec<String> = if *kind == "a" {
            ["synth", "3", "sine", &(90 + 13 * i).to_string(), "sine", &(140 + 17 * i).to_string(), "vol", "0.4"]
                .map(String::from)
                .to_vec()
        } else {
            ["synth", "3", "whitenoise", "vol", "0.3", "highpass", &(3000 + 400 * i).to_string()]
                .map(String::from)
                .to_vec()
        };
        let ok = std::process::Command::new("sox")
            .args(["-n", "-r", "44100", "-c", "2", "-b", "16"])
            .arg(&f)
            .args(&effect)
            .status()
            .expect("sox (scripts/test.sh installs it)");
        assert!(ok.success());
        files.push(f);
    }
    let run = segue()
        .args(["ingest", "--json", "--data-dir"])
        .arg(up.dir.path().join("origin"))
        .args(&files)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut content = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name =
            std::path::Path::new(v["file"].as_str().unwrap()).file_stem().unwrap().to_string_lossy().into_owned();
        content.insert(name, v["content_id"].as_str().unwrap().to_owned());
    }
    names
        .iter()
        .map(|(kind, i)| {
            let name = format!("{kind}{i}");
            let body = serde_json::json!({
                "content_id": content[&name], "title": format!("Track {name}"), "artists": [format!("Artist {name}")],
                "album": format!("Album {name}"), "track_number": 1,
            })
            .to_string();
            let (code, t) = admin(up.app, "POST", "/v1/admin/tracks", Some(&up.token), Some(&body));
            assert_eq!(code, 201, "{t}");
            let id = t["id"].as_str().unwrap().to_owned();
            let (code, r) = admin(
                up.app,
                "PUT",
                &format!("/v1/admin/tracks/{id}/rights"),
                Some(&up.token),
                Some(r#"{"countries":["SE"]}"#),
            );
            assert_eq!(code, 200, "{r}");
            (name, id)
        })
        .collect()
}

/// Streams of `tracks` one after another from `ago_ms` before now.
fn post_streams(app: std::net::SocketAddr, key: &str, tracks: &[&str], ago_ms: i64, first_event: &mut u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let events: Vec<serde_json::Value> = tracks
        .iter()
        .enumerate()
        .map(|(k, t)| {
            *first_event += 1;
            serde_json::json!({
                "event_id": format!("0190f0e0-0000-7000-8000-{:012x}", *first_event),
                "track": t, "started_ms": now - ago_ms + k as i64 * 60_000,
                "ms_played": 2_500, "tier": "high", "device": "phone",
            })
        })
        .collect();
    let body = serde_json::json!({ "sent_ms": now, "events": events }).to_string();
    let (code, r) = admin(app, "POST", "/v1/play-events", Some(key), Some(&body));
    assert_eq!((code, r["accepted"].as_u64()), (200, Some(tracks.len() as u64)), "{r}");
}

fn train(up: &Up) -> serde_json::Value {
    let run = segue()
        // Three factors for the three tastes in these plays: more would let a model of
        // 20 listeners memorise each one's plays instead of generalising.
        .args(["recs", "train", "--json", "--factors", "3", "--iterations", "10", "--regularization", "0.1"])
        .args(["--alpha", "10", "--database"])
        .arg(format!("sqlite://{}", up.dir.path().join("app-api.db").display()))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap()
}

/// Two crowds with two tastes play six tracks each; after training, tracks of both
/// sounds are ingested that nobody has played. A listener of each taste gets, in
/// Discover Weekly's explore slots, the new tracks that sound like what they play, and
/// tracks they never played; the list stays the same on a second call; a stream of an
/// explored track is counted as exploration's feedback by the next training.
#[test]
fn a_cold_start_track_reaches_the_discover_weekly_of_listeners_of_its_sound() {
    let up = start_up();
    let demo = album_ids(up.app, &up.token);
    let warm: Vec<(&str, usize)> = (0..6).map(|i| ("a", i)).chain((0..6).map(|i| ("b", i))).collect();
    let warm = add_tracks(&up, &warm);
    let id = |name: &str| warm.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let warm_id = |name: &str| -> &str { warm.iter().find(|(n, _)| n == name).unwrap().1.as_str() };
    let mut event = 0;
    let mut keys = std::collections::HashMap::new();
    for kind in ["a", "b"] {
        for u in 0..8 {
            let body = format!(r#"{{"name":"listener {kind}{u}","country":"SE"}}"#);
            let (code, user) = admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(&body));
            assert_eq!(code, 201, "{user}");
            let key = user["api_key"].as_str().unwrap().to_owned();
            // Listener 0 of each crowd plays half the crowd's tracks; the others four of six.
            let n = if u == 0 { 3 } else { 4 };
            let tracks: Vec<String> = (0..n).map(|k| id(&format!("{kind}{}", (u + k) % 6))).collect();
            post_streams(
                up.app,
                &key,
                &tracks.iter().map(String::as_str).collect::<Vec<_>>(),
                26 * 3_600_000,
                &mut event,
            );
            keys.insert(format!("{kind}{u}"), key);
        }
    }
    // The demo album has its own listeners, so only the new releases below are cold.
    for u in 0..4 {
        let body = format!(r#"{{"name":"demo listener {u}","country":"SE"}}"#);
        let (_, user) = admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(&body));
        let demo: Vec<&str> = demo.iter().map(String::as_str).collect();
        post_streams(up.app, user["api_key"].as_str().unwrap(), &demo, 26 * 3_600_000, &mut event);
    }
    let trained = train(&up);
    assert_eq!(trained["audio_map_tracks"].as_u64(), Some(12 + demo.len() as u64), "{trained}");
    // New releases, nobody has played them.
    let cold = add_tracks(&up, &[("a", 6), ("a", 7), ("b", 6), ("b", 7)]);
    let cold_of = |kind: &str| -> Vec<String> {
        cold.iter().filter(|(n, _)| n.starts_with(kind)).map(|(_, id)| id.clone()).collect()
    };
    let (up2, app2) = restart_app_api(&up);
    let mut shown = std::collections::HashSet::new();
    for kind in ["a", "b"] {
        let key = &keys[&format!("{kind}0")];
        let (code, dw) = admin(app2, "GET", "/v1/me/discover-weekly", Some(key), None);
        assert_eq!(code, 200, "{dw}");
        let tracks = dw["tracks"].as_array().unwrap();
        let explored: Vec<&str> =
            tracks.iter().filter(|t| t["explore"] == true).map(|t| t["track_id"].as_str().unwrap()).collect();
        let other = if kind == "a" { "b" } else { "a" };
        shown.extend(explored.iter().map(|t| t.to_string()));
        let (mine, theirs) = (cold_of(kind), cold_of(other));
        let matching = explored.iter().filter(|t| mine.iter().any(|m| m == *t)).count();
        assert!(matching >= 1, "listener {kind}0 explores {explored:?}; {kind}: {mine:?}, {other}: {theirs:?}");
        // Never a track they played; their crowd's other tracks before the other crowd's.
        let position = |t: &str| tracks.iter().position(|x| x["track_id"] == t);
        for k in 0..3 {
            assert_eq!(position(&id(&format!("{kind}{k}"))), None, "{dw}");
        }
        let last_mine = (3..6).filter_map(|k| position(&id(&format!("{kind}{k}")))).max().unwrap();
        let first_theirs = (0..6).filter_map(|k| position(&id(&format!("{other}{k}")))).min().unwrap_or(usize::MAX);
        let names: Vec<String> = tracks
            .iter()
            .map(|t| {
                let t = t["track_id"].as_str().unwrap();
                warm.iter().chain(&cold).find(|(_, i)| i == t).map_or_else(|| format!("demo {t}"), |(n, _)| n.clone())
            })
            .collect();
        assert!(last_mine < first_theirs, "{kind}0's list: {names:?}");
        // The same list all week.
        let (_, again) = admin(app2, "GET", "/v1/me/discover-weekly", Some(key), None);
        assert_eq!(again["tracks"], dw["tracks"]);
        if kind == "a" {
            post_streams(app2, key, &[explored[0]], 0, &mut event);
        }
    }
    // Listener a1 streamed a1-a4: one taste, one mix, their tracks and then the unheard
    // tracks of the same crowd before any of the other's.
    let (code, mixes) = admin(app2, "GET", "/v1/me/daily-mixes", Some(&keys["a1"]), None);
    assert_eq!(code, 200, "{mixes}");
    assert_eq!(mixes["mixes"].as_array().unwrap().len(), 1, "{mixes}");
    let mix = mixes["mixes"][0]["tracks"].as_array().unwrap();
    let familiar: std::collections::BTreeSet<&str> =
        mix.iter().filter(|t| t["familiar"] == true).map(|t| t["track_id"].as_str().unwrap()).collect();
    assert_eq!(familiar, (1..5).map(|k| warm_id(&format!("a{k}"))).collect(), "{mixes}");
    let at = |t: &str| mix.iter().position(|x| x["track_id"] == t);
    let fresh_a = [at(warm_id("a0")), at(warm_id("a5"))];
    let first_b = (0..6).filter_map(|k| at(warm_id(&format!("b{k}")))).min().unwrap_or(usize::MAX);
    assert!(fresh_a.iter().all(|p| p.is_some_and(|p| p < first_b)), "{mixes}");
    assert_eq!(mixes["mixes"][0]["artists"].as_array().unwrap().len(), 3, "{mixes}");
    // Smart shuffle of a1's playlist of a0-a4: one track after every two, none of the
    // playlist's, all of its sound (tones, not noise).
    let (code, pl) = admin(app2, "POST", "/v1/playlists", Some(&keys["a1"]), Some(r#"{"name":"tones"}"#));
    assert_eq!(code, 201, "{pl}");
    let pl_path = format!("/v1/playlists/{}", pl["id"].as_str().unwrap());
    let adds: Vec<serde_json::Value> =
        (0..5).map(|k| serde_json::json!({"op": "add", "track_id": warm_id(&format!("a{k}")), "index": 0})).collect();
    let body = serde_json::json!({"version": pl["version"], "ops": adds}).to_string();
    let (code, r) = admin(app2, "POST", &format!("{pl_path}/ops"), Some(&keys["a1"]), Some(&body));
    assert_eq!(code, 200, "{r}");
    let (code, sh) = admin(app2, "POST", &format!("{pl_path}/shuffle?smart=true&every=2"), Some(&keys["a1"]), None);
    assert_eq!(code, 200, "{sh}");
    let items = sh["items"].as_array().unwrap();
    assert_eq!((items.len(), sh["recommended"].as_u64()), (7, Some(2)), "{sh}");
    for (k, item) in items.iter().enumerate() {
        let t = item["track_id"].as_str().unwrap();
        let ours = (0..5).any(|j| warm_id(&format!("a{j}")) == t);
        assert_eq!(item["recommended"] == true, !ours, "{sh}");
        assert_eq!(item["recommended"] == true, k % 3 == 2, "one after every two: {sh}");
        let noise = warm.iter().chain(&cold).any(|(n, i)| n.starts_with('b') && i == t);
        assert!(!noise, "{t} sounds like noise: {sh}");
    }
    // The player's queue: `segue play --playlist --smart` plays the five and one more
    // (through the first app API: it signs stream URLs).
    let key_file = up.dir.path().join("a1.key");
    std::fs::write(&key_file, &keys["a1"]).unwrap();
    let run = segue()
        .args(["play", "--no-report", "--json", "--app-api", &format!("http://{}", up.app), "--token-file"])
        .arg(&key_file)
        .arg("--out")
        .arg(up.dir.path().join("smart.wav"))
        .args(["--playlist", pl["id"].as_str().unwrap(), "--smart"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["tracks"].as_u64(), Some(6), "{report}");
    let bad = admin(app2, "POST", &format!("{pl_path}/shuffle?smart=maybe"), Some(&keys["a1"]), None);
    assert_eq!(bad.0, 400, "{}", bad.1);
    // Unauthenticated: refused.
    assert_eq!(admin(app2, "GET", "/v1/me/discover-weekly", None, None).0, 401);
    let trained = train(&up);
    // Exploration's feedback: every track shown in an explore slot, one of them streamed.
    assert_eq!(trained["explored_tracks"].as_u64(), Some(shown.len() as u64), "{trained}");
    assert_eq!(trained["explore_streams"].as_u64(), Some(1), "{trained}");
    assert!(terminate(up2).success());
    assert!(terminate(up.up).success());
}
