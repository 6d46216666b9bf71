//! Real third-party Subsonic clients against `segue up`: py-opensonic (PyPI) signing in
//! with an API key, and the npm `subsonic-api` client with the legacy token scheme. Each
//! walks a listener's session (tests/clients/*); here we check what the server kept.
//! scripts/test.sh installs both clients (pinned).

mod common;

use common::*;

#[test]
fn py_opensonic_and_subsonic_api_walk_a_listeners_session() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let cid = track["content_id"].as_str().unwrap();
    let (code, whole) = get(&format!("http://{}/a/{cid}/high.ogg", up.origin), &[]);
    assert_eq!(code, 200);
    let expect = up.dir.path().join("expected-high.ogg");
    std::fs::write(&expect, &whole).unwrap();
    let plays = || {
        let (code, r) =
            admin(up.app, "GET", &format!("/v1/admin/plays/counts?track={}", ids[0]), Some(&up.token), None);
        assert_eq!(code, 200, "{r}");
        r["counts"].as_array().unwrap().iter().map(|c| c["plays"].as_u64().unwrap()).sum::<u64>()
    };
    let user = |name: &str| {
        let body = format!(r#"{{"name":"{name}","country":"SE"}}"#);
        let (code, u) = admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(&body));
        assert_eq!(code, 201, "{u}");
        u["api_key"].as_str().unwrap().to_owned()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let common = [
        ("SEGUE_APP", format!("http://{}", up.app)),
        ("SEGUE_EXPECT", expect.to_string_lossy().into_owned()),
        ("SEGUE_PLAY_MS", (now - 120_000).to_string()),
    ];

    let key = user("pythonista");
    let mut env = common.to_vec();
    env.push(("SEGUE_API_KEY", key.clone()));
    let summary = client_walk("python3", "opensonic_walk.py", &env);
    assert_eq!(summary["scrobbled"], ids[0].as_str(), "{summary}");
    assert_eq!(plays(), 1, "two identical scrobbles are one play");
    let (_, likes) = admin(up.app, "GET", "/v1/me/likes", Some(&key), None);
    assert!(likes.to_string().contains(&ids[0]), "the star is a like: {likes}");

    // The npm client signs in with u+t+s: the user sets a Subsonic password first.
    let key = user("typescripter");
    let body = r#"{"username":"typescripter","password":"a long passphrase"}"#;
    assert_eq!(admin(up.app, "PUT", "/v1/me/subsonic-login", Some(&key), Some(body)).0, 200);
    let mut env = common.to_vec();
    env.push(("SEGUE_SUBSONIC_USER", "typescripter".into()));
    env.push(("SEGUE_SUBSONIC_PASSWORD", "a long passphrase".into()));
    let summary = client_walk("node", "subsonic_api_walk.mjs", &env);
    assert_eq!(summary["scrobbled"], ids[0].as_str(), "{summary}");
    assert_eq!(plays(), 2, "another listener's play counts; their retry does not");
    let (_, lists) = admin(up.app, "GET", "/v1/me/playlists", Some(&key), None);
    assert!(lists.to_string().contains("Night bus II"), "{lists}");
    assert!(terminate(up.up).success());
}
