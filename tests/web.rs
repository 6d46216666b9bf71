//! The listener web app in a real browser (Debian's Chromium driven by playwright-core,
//! tests/clients/web_walk.mjs) against `segue up`: search, an album played gaplessly from
//! the edge by Range, a seek that fetches only from its seek point, a like, and a
//! playlist two browsers edit at once. Here we check what the servers saw.
//! `SEGUE_UPDATE_SCREENSHOTS=1` rewrites the screenshots in docs/screenshots/.
//! scripts/test.sh installs Chromium and the npm packages.

mod common;

use common::*;

/// Where a walk's screenshots go: docs/screenshots/ when `SEGUE_UPDATE_SCREENSHOTS` is
/// set, else the run's own directory.
fn shots(up: &Up) -> String {
    match std::env::var_os("SEGUE_UPDATE_SCREENSHOTS") {
        Some(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"),
        None => up.dir.path().join("screenshots"),
    }
    .to_string_lossy()
    .into_owned()
}

#[test]
fn a_listener_searches_plays_gaplessly_seeks_likes_and_edits_a_playlist_with_another() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let user = |name: &str| {
        let body = format!(r#"{{"name":"{name}","country":"SE"}}"#);
        let (code, u) = admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(&body));
        assert_eq!(code, 201, "{u}");
        (u["api_key"].as_str().unwrap().to_owned(), u["user"]["id"].as_str().unwrap().to_owned())
    };
    let ((key_a, _), (key_b, user_b)) = (user("ada"), user("bo"));
    let s = client_walk(
        "node",
        "web_walk.mjs",
        &[
            ("SEGUE_APP", format!("http://{}", up.app)),
            ("SEGUE_KEY_A", key_a.clone()),
            ("SEGUE_KEY_B", key_b.clone()),
            ("SEGUE_USER_B", user_b),
            ("SEGUE_SHOTS", shots(&up)),
        ],
    );

    // Gapless: the second track starts on the first one's last sample, each lasts its
    // exact sample count, and the signal steps no more across the boundary than inside.
    let g = &s["gapless"];
    assert_eq!(g["tracks"], serde_json::json!([ids[0], ids[1]]), "{g}");
    assert_eq!(g["first_end"], g["second_start"], "{g}");
    assert_eq!(g["frames"], g["expected_frames"], "{g}");
    assert_eq!(s["played_through"], ids[1].as_str(), "the second track followed the first");
    let step = g["boundary_step"].as_f64().unwrap();
    let inside = g["largest_step_before"].as_f64().unwrap().max(g["largest_step_after"].as_f64().unwrap());
    assert!(step <= inside * 1.5 + 1e-3, "a click at the boundary: {g}");

    // Audio came from the edge, by Range.
    let log = access_log(up.dir.path());
    let ranged: Vec<&serde_json::Value> =
        log.iter().filter(|l| l["path"].as_str().unwrap_or("").starts_with("/a/") && l["range"].is_string()).collect();
    assert!(ranged.len() >= 2, "ranged audio requests at the edge: {log:?}");

    // The seek fetched the headers and the bytes from a seek point at most 1.5 s in,
    // nothing in between.
    let seek = &s["seek"];
    let fetches = seek["fetches"].as_array().unwrap();
    let header_end = seek["header_bytes"].as_u64().unwrap() - 1;
    assert_eq!(fetches.len(), 2, "{seek}");
    assert_eq!((fetches[0]["start"].as_u64(), fetches[0]["end"].as_u64()), (Some(0), Some(header_end)), "{seek}");
    let from = fetches[1]["start"].as_u64().unwrap();
    let entry = seek["entries"].as_array().unwrap().iter().find(|e| e["offset"].as_u64() == Some(from));
    assert!(entry.is_some_and(|e| e["granule"].as_u64().unwrap() > 0), "the tail starts at a seek point: {seek}");
    assert!(from > header_end + 1, "bytes between the headers and the seek point were skipped: {seek}");
    let pos = seek["position"].as_f64().unwrap();
    assert!((1.4..=3.01).contains(&pos), "playing from about 1.5 s (or further, on a slow machine): {seek}");

    // The like and the playlist, as the API sees them: both browsers converged.
    let (_, likes) = admin(up.app, "GET", "/v1/me/likes", Some(&key_a), None);
    assert!(likes["likes"].as_array().unwrap().iter().any(|l| l == &s["liked"]), "{likes}");
    let p = &s["playlist"];
    assert_eq!(p["a"], p["b"], "both editors see the same list: {p}");
    let (_, server) = admin(up.app, "GET", &format!("/v1/playlists/{}", p["id"].as_str().unwrap()), Some(&key_b), None);
    let items: Vec<&serde_json::Value> = server["items"].as_array().unwrap().iter().map(|i| &i["track_id"]).collect();
    assert_eq!(serde_json::json!(items), p["a"], "{server}");
    assert_eq!(items.len(), 3);
    // How long each editor took to see the other's change is measured (the summary
    // shows it), not asserted: the walk only bounds the wait.
    for who in ["seen_by_b_ms", "seen_by_a_ms"] {
        assert!(s[who].is_u64(), "{s}");
    }

    // Plays went to /v1/play-events; axe found nothing serious on any screen.
    let (_, counts) = admin(up.app, "GET", &format!("/v1/admin/plays/counts?track={}", ids[0]), Some(&up.token), None);
    assert!(counts["counts"].as_array().is_some_and(|c| !c.is_empty()), "the first track's play was counted: {counts}");
    for (screen, found) in s["accessibility"].as_object().unwrap() {
        assert_eq!(found, &serde_json::json!([]), "axe on {screen}");
    }
    assert!(terminate(up.up).success());
}

#[test]
fn an_operator_watches_a_release_prewarm_every_pop_and_confirms_a_purge() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let content: Vec<String> = ids
        .iter()
        .map(|id| {
            admin(up.app, "GET", &format!("/v1/tracks/{id}"), Some(&up.token), None).1["content_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let (_, listener) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"curious","country":"SE"}"#));
    let cp_token = std::fs::read_to_string(up.dir.path().join("control-plane.token")).unwrap().trim().to_owned();
    let s = client_walk(
        "node",
        "console_walk.mjs",
        &[
            ("SEGUE_CONSOLE", format!("http://{}", up.control_plane)),
            ("SEGUE_CP_TOKEN", cp_token.clone()),
            ("SEGUE_LISTENER_KEY", listener["api_key"].as_str().unwrap().to_owned()),
            ("SEGUE_CONTENT", content[..2].join(",")),
            ("SEGUE_SHOTS", shots(&up)),
        ],
    );
    assert_eq!(s["listener_refused"], true);
    // The one POP of segue up, up, with its numbers.
    let pops = s["pops"].as_array().unwrap();
    assert_eq!(pops.len(), 1, "{s}");
    assert_eq!(pops[0]["cells"][0], "up", "{s}");
    // Every POP reached 100 %, and the control plane agrees.
    let prewarm = s["prewarm"].as_array().unwrap();
    assert!(!prewarm.is_empty() && prewarm.iter().all(|p| p["percent"] == 100), "{s}");
    assert_eq!(s["embargo"], "embargoed", "the drop is an hour away: {s}");
    let release = s["release"].as_str().unwrap();
    let (code, status) = get_with_token(up.control_plane, &format!("/v1/releases/{release}"), &cp_token);
    assert_eq!(code, 200);
    assert!(status["jobs"].as_array().unwrap().iter().all(|j| j["state"] == "done"), "{status}");
    // The purge: confirmed by every POP, as the page showed.
    let purge = s["purge"].as_array().unwrap();
    assert!(!purge.is_empty() && purge.iter().all(|p| p["state"] == "done"), "{s}");
    for (screen, found) in s["accessibility"].as_object().unwrap() {
        assert_eq!(found, &serde_json::json!([]), "axe on {screen}");
    }
    assert!(terminate(up.up).success());
}

/// GET a control-plane path with its token: status and JSON.
fn get_with_token(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, serde_json::Value) {
    let (code, body) = get(&format!("http://{addr}{path}"), &["-H", &format!("Authorization: Bearer {token}")]);
    (code, serde_json::from_slice(&body).unwrap_or_default())
}
