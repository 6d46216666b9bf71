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
