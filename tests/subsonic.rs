//! The OpenSubsonic API on `segue up`: the envelope every client parses, in JSON and
//! XML, API-key authentication and the errors of the other schemes, form posts.

mod common;

use common::*;

fn rest(up: &Up, path_and_query: &str) -> (u16, String) {
    let (code, body) = get(&format!("http://{}/rest/{path_and_query}", up.app), &[]);
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn rest_json(up: &Up, path_and_query: &str) -> serde_json::Value {
    let (code, body) = rest(up, path_and_query);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["subsonic-response"].clone()
}

#[test]
fn the_envelope_authentication_and_errors_follow_opensubsonic() {
    let up = start_up();
    let (code, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"sonic","country":"SE"}"#));
    assert_eq!(code, 201, "{user}");
    let key = user["api_key"].as_str().unwrap().to_owned();

    // ping, with and without .view, JSON: the OpenSubsonic fields.
    for path in ["ping", "ping.view"] {
        let r = rest_json(&up, &format!("{path}?f=json&v=1.16.1&c=test&apiKey={key}"));
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(
            (r["version"].as_str(), r["type"].as_str(), r["openSubsonic"].as_bool()),
            (Some("1.16.1"), Some("segue"), Some(true))
        );
        assert!(r["serverVersion"].is_string(), "{r}");
    }
    // XML is the default format.
    let (code, xml) = rest(&up, &format!("getLicense?apiKey={key}"));
    assert_eq!(code, 200);
    assert!(
        xml.starts_with(
            r#"<?xml version="1.0" encoding="UTF-8"?><subsonic-response xmlns="http://subsonic.org/restapi""#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(r#"status="ok""#)
            && xml.contains(r#"openSubsonic="true""#)
            && xml.contains(r#"<license valid="true"></license>"#),
        "{xml}"
    );
    let ext = rest_json(&up, &format!("getOpenSubsonicExtensions?f=json&apiKey={key}"));
    let names: Vec<&str> =
        ext["openSubsonicExtensions"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"apiKeyAuthentication") && names.contains(&"formPost"), "{ext}");
    let me = rest_json(&up, &format!("getUser?f=json&username=sonic&apiKey={key}"));
    assert_eq!(
        (me["user"]["username"].as_str(), me["user"]["streamRole"].as_bool()),
        (Some("sonic"), Some(true)),
        "{me}"
    );
    assert_eq!(
        rest_json(&up, &format!("getMusicFolders?f=json&apiKey={key}"))["musicFolders"]["musicFolder"][0]["id"],
        1
    );

    // Errors are HTTP 200 with status failed and the spec's codes.
    let failed = |q: &str, code: u64| {
        let r = rest_json(&up, q);
        assert_eq!((r["status"].as_str(), r["error"]["code"].as_u64()), (Some("failed"), Some(code)), "{q}: {r}");
        r
    };
    failed("ping?f=json", 10);
    failed("ping?f=json&apiKey=wrong", 44);
    failed(&format!("ping?f=json&apiKey={key}&u=sonic"), 43);
    // A user without a Subsonic login: wrong username or password.
    failed("ping?f=json&u=sonic&t=abc&s=salt", 40);
    let r = failed("ping?f=json&u=sonic&p=secret", 42);
    assert!(r["error"]["helpUrl"].is_string(), "{r}");
    failed(&format!("noSuchEndpoint?f=json&apiKey={key}"), 0);
    let (_, xml) = rest(&up, "ping?apiKey=wrong");
    assert!(xml.contains(r#"status="failed""#) && xml.contains(r#"<error code="44""#), "{xml}");
    // Another major protocol version cannot be spoken; minor ones can.
    failed(&format!("ping?f=json&v=2.0.0&apiKey={key}"), 30);
    failed(&format!("ping?f=json&v=0.9&apiKey={key}"), 20);
    assert_eq!(rest_json(&up, &format!("ping?f=json&v=1.2.0&apiKey={key}"))["status"], "ok");

    // apiKeyAuthentication: tokenInfo names the key's user; the user sees which key is
    // active (a fingerprint) and can revoke it by rotating; so can an admin.
    assert_eq!(rest_json(&up, &format!("tokenInfo?f=json&apiKey={key}"))["tokenInfo"]["username"], "sonic");
    let (code, fp) = admin(up.app, "GET", "/v1/me/api-key", Some(&key), None);
    assert_eq!(code, 200);
    assert_eq!(fp["fingerprint"].as_str().map(str::len), Some(12), "{fp}");
    let (code, rotated) = admin(up.app, "POST", "/v1/me/api-key", Some(&key), None);
    assert_eq!(code, 200, "{rotated}");
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    failed(&format!("ping?f=json&apiKey={key}"), 44);
    assert_eq!(rest_json(&up, &format!("ping?f=json&apiKey={new_key}"))["status"], "ok");
    assert_ne!(admin(up.app, "GET", "/v1/me/api-key", Some(&new_key), None).1["fingerprint"], fp["fingerprint"]);
    let uid = user["user"]["id"].as_str().unwrap();
    let (code, by_admin) = admin(up.app, "POST", &format!("/v1/admin/users/{uid}/api-key"), Some(&up.token), None);
    assert_eq!(code, 200, "{by_admin}");
    failed(&format!("ping?f=json&apiKey={new_key}"), 44);
    let key = by_admin["api_key"].as_str().unwrap().to_owned();
    assert_eq!(admin(up.app, "POST", "/v1/admin/users/usr_nope/api-key", Some(&up.token), None).0, 404);
    assert_eq!(admin(up.app, "POST", &format!("/v1/admin/users/{uid}/api-key"), Some(&key), None).0, 403);

    // formPost: parameters from a form body.
    let url = format!("http://{}/rest/ping.view", up.app);
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "Content-Type: application/x-www-form-urlencoded", "--data"])
        .arg(format!("apiKey={key}&c=test&f=json"))
        .arg(&url)
        .output()
        .expect("curl");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["subsonic-response"]["status"], "ok", "{r}");
    assert!(terminate(up.up).success());
}

#[test]
fn browsing_by_tags_walks_artist_album_and_song() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"browser","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let call = |q: &str| rest_json(&up, &format!("{q}&f=json&apiKey={key}"));

    let artists = call("getArtists?x=1");
    assert_eq!(artists["status"], "ok", "{artists}");
    let index = artists["artists"]["index"].as_array().unwrap();
    let s = index.iter().find(|i| i["name"] == "S").unwrap_or_else(|| panic!("no S in {artists}"));
    let demo = s["artist"].as_array().unwrap().iter().find(|a| a["name"] == "Segue Demo").unwrap();
    assert!(demo["albumCount"].as_u64().unwrap() >= 1, "{demo}");

    let artist = call(&format!("getArtist?id={}", demo["id"].as_str().unwrap()));
    let albums = artist["artist"]["album"].as_array().unwrap();
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let album_id = track["album"]["id"].as_str().unwrap();
    let listed = albums.iter().find(|a| a["id"] == album_id).unwrap_or_else(|| panic!("{artist}"));
    assert_eq!(listed["songCount"], 4, "{listed}");

    let album = call(&format!("getAlbum?id={album_id}"));
    let songs = album["album"]["song"].as_array().unwrap();
    let song_ids: Vec<&str> = songs.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(song_ids, ids.iter().map(String::as_str).collect::<Vec<_>>(), "{album}");
    for (n, song) in songs.iter().enumerate() {
        assert_eq!((song["track"].as_u64(), song["isDir"].as_bool()), (Some(n as u64 + 1), Some(false)), "{song}");
        assert_eq!((song["albumId"].as_str(), song["suffix"].as_str()), (Some(album_id), Some("ogg")), "{song}");
        assert!(song["duration"].as_u64().unwrap() >= 2, "{song}");
        assert!(song.as_object().unwrap().values().all(|v| !v.is_null()), "optional fields are omitted: {song}");
    }
    let song = call(&format!("getSong?id={}", ids[1]));
    assert_eq!(song["song"]["title"], songs[1]["title"], "{song}");
    assert!(call("getGenres?x=1")["genres"]["genre"].is_array());

    // Not found is 70, a missing id 10; XML has the songs as repeated elements.
    assert_eq!(call("getAlbum?id=alb_nope")["error"]["code"], 70);
    assert_eq!(call("getSong?x=1")["error"]["code"], 10);
    let (_, xml) = rest(&up, &format!("getAlbum?id={album_id}&apiKey={key}"));
    assert_eq!(xml.matches("<song ").count(), 4, "{xml}");
    assert!(terminate(up.up).success());
}

/// curl without following redirects: (status, Location).
fn no_follow(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, location) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap(), location.to_owned())
}

#[test]
fn stream_redirects_to_a_signed_edge_url_that_serves_ranges_and_rights_apply() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let cid = track["content_id"].as_str().unwrap();
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"streamer","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let base = format!("http://{}/rest", up.app);
    for (query, tier) in [
        ("", "high"),
        ("&maxBitRate=96", "normal"),
        ("&maxBitRate=30", "low"),
        ("&maxBitRate=8", "low"),
        ("&format=raw", "very_high"),
    ] {
        let (code, location) = no_follow(&format!("{base}/stream.view?id={}&apiKey={key}{query}", ids[0]));
        assert_eq!(code, 302, "{query}");
        assert!(location.starts_with(&format!("http://{}/a/{cid}/{tier}.ogg?", up.edge)), "{query}: {location}");
    }
    let (code, location) = no_follow(&format!("{base}/download?id={}&apiKey={key}", ids[0]));
    assert_eq!(code, 302);
    assert!(location.contains("/very_high.ogg?"), "{location}");

    // The redirect carries its own authorisation and honours Range, byte for byte.
    let (_, location) = no_follow(&format!("{base}/stream?id={}&apiKey={key}", ids[0]));
    let (code, bytes) = get(&location, &["-H", "Range: bytes=100-4195"]);
    assert_eq!(code, 206);
    let (_, whole) = get(&format!("http://{}/a/{cid}/high.ogg", up.origin), &[]);
    assert_eq!(bytes, whole[100..4196], "the edge's bytes are the origin's");

    // Rights: a listener where the track is not licensed gets error 70, not audio.
    let (_, far) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"far away","country":"MX"}"#));
    let far_key = far["api_key"].as_str().unwrap();
    let r = rest_json(&up, &format!("stream?id={}&apiKey={far_key}&f=json", ids[0]));
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_u64()), (Some("failed"), Some(70)), "{r}");
    let (code, xml) = rest(&up, &format!("stream?id=trk_nope&apiKey={key}"));
    assert!(code == 200 && xml.contains(r#"<error code="70""#), "{xml}");
    assert_eq!(rest_json(&up, &format!("stream?apiKey={key}&f=json"))["error"]["code"], 10);
    assert_eq!(
        rest_json(&up, &format!("stream?id={}&maxBitRate=lots&apiKey={key}&f=json", ids[0]))["error"]["code"],
        0
    );
    assert!(terminate(up.up).success());
}

fn md5_hex(s: &str) -> String {
    use md5::Digest;
    md5::Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_legacy_token_scheme_checks_a_sealed_password_the_user_sets() {
    let up = start_up();
    let make = |name: &str| {
        let body = format!(r#"{{"name":"{name}","country":"SE"}}"#);
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(&body)).1["api_key"].as_str().unwrap().to_owned()
    };
    let (alice, bob) = (make("alice"), make("bob"));
    let login = |key: &str, body: &str| admin(up.app, "PUT", "/v1/me/subsonic-login", Some(key), Some(body));
    let password = "correct horse battery";
    let (code, r) = login(&alice, &format!(r#"{{"username":"alice","password":"{password}"}}"#));
    assert_eq!((code, r["username"].as_str()), (200, Some("alice")), "{r}");
    // Bad input changes nothing; a taken name is a conflict; the admin token has no login.
    assert_eq!(login(&bob, r#"{"username":"bob","password":"short"}"#).0, 400);
    assert_eq!(login(&bob, r#"{"username":"b o b","password":"long enough"}"#).0, 400);
    assert_eq!(login(&bob, r#"{"username":"alice","password":"long enough"}"#).0, 409);
    assert_eq!(login(&up.token, r#"{"username":"root","password":"long enough"}"#).0, 403);

    let token = |pw: &str, salt: &str| format!("u=alice&t={}&s={salt}", md5_hex(&format!("{pw}{salt}")));
    let ping = |auth: &str| rest_json(&up, &format!("ping?f=json&v=1.13.0&c=test&{auth}"));
    assert_eq!(ping(&token(password, "c19b2d"))["status"], "ok");
    let me = rest_json(&up, &format!("getUser?f=json&username=alice&{}", token(password, "a1b2c3")));
    assert_eq!(me["user"]["username"], "alice", "{me}");
    // Upper-case hex is the same token.
    let upper = format!("u=alice&t={}&s=x9y8z7", md5_hex(&format!("{password}x9y8z7")).to_uppercase());
    assert_eq!(ping(&upper)["status"], "ok");
    let code = |auth: &str| ping(auth)["error"]["code"].as_u64();
    assert_eq!(code(&token("wrong password", "c19b2d")), Some(40));
    assert_eq!(code(&token(password, "c19b2d").replace("u=alice", "u=nobody")), Some(40));
    assert_eq!(code("u=alice&t=0123"), Some(10), "t without s");
    // The password in the URL is off unless the operator turns it on.
    let plain = password.replace(' ', "%20");
    assert_eq!(code(&format!("u=alice&p={plain}")), Some(42));
    assert_eq!(code(&format!("u=alice&p={plain}&t=x&s=y")), Some(43));

    // At rest the password is sealed: neither the database nor its log holds it.
    for file in ["app-api.db", "app-api.db-wal"] {
        let bytes = std::fs::read(up.dir.path().join(file)).unwrap_or_default();
        assert!(!bytes.windows(password.len()).any(|w| w == password.as_bytes()), "{file} holds the password");
    }
    // A new password replaces the old one.
    assert_eq!(login(&alice, r#"{"username":"alice","password":"another secret"}"#).0, 200);
    assert_eq!(code(&token(password, "c19b2d")), Some(40));
    assert_eq!(ping(&token("another secret", "c19b2d"))["status"], "ok");
    // Removed: the API key still works, the password no longer does.
    assert_eq!(admin(up.app, "DELETE", "/v1/me/subsonic-login", Some(&alice), None).0, 200);
    assert_eq!(code(&token("another secret", "c19b2d")), Some(40));
    assert_eq!(rest_json(&up, &format!("ping?f=json&apiKey={alice}"))["status"], "ok");
    assert!(terminate(up.up).success());
}

#[test]
fn search3_finds_by_words_and_lists_the_library_for_an_empty_query() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"seeker","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let search = |q: &str| rest_json(&up, &format!("search3?f=json&apiKey={key}&{q}"))["searchResult3"].clone();
    // The demo album is "Continuum" by "Segue Demo".
    let r = search("query=continuum");
    assert!(
        r["album"].as_array().unwrap().iter().any(|a| a["name"].as_str().unwrap().to_lowercase().contains("continuum")),
        "{r}"
    );
    let songs = r["song"].as_array().unwrap();
    assert!(songs.len() >= 4 && songs.iter().all(|s| s["isDir"] == false), "{r}");
    assert!(search("query=segue%20demo")["artist"].as_array().unwrap().iter().any(|a| a["name"] == "Segue Demo"));
    // An empty query pages through everything: two pages of two songs, disjoint.
    let first = search("query=%22%22&songCount=2&artistCount=0&albumCount=0");
    let second = search("query=%22%22&songCount=2&songOffset=2&artistCount=0&albumCount=0");
    let page = |v: &serde_json::Value| -> Vec<String> {
        v["song"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
    };
    let (a, b) = (page(&first), page(&second));
    assert_eq!((a.len(), b.len()), (2, 2), "{first} {second}");
    assert!(a.iter().all(|x| !b.contains(x)));
    assert!(first["artist"].as_array().unwrap().is_empty(), "artistCount=0: {first}");
    let all = search("query=&songCount=500");
    assert!(ids.iter().all(|id| all["song"].as_array().unwrap().iter().any(|s| s["id"] == id.as_str())), "{all}");
    let (_, xml) = rest(&up, &format!("search3?apiKey={key}&query=continuum"));
    assert!(xml.contains("<searchResult3>") && xml.contains("<song "), "{xml}");
    assert_eq!(rest_json(&up, &format!("search3?f=json&apiKey={key}&query=x&songCount=many"))["error"]["code"], 0);
    assert!(terminate(up.up).success());
}

#[test]
fn album_lists_of_every_type_and_random_songs() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let album = track["album"]["id"].as_str().unwrap().to_owned();
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"lister","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let list = |q: &str| -> Vec<String> {
        let r = rest_json(&up, &format!("getAlbumList2?f=json&apiKey={key}&{q}"));
        assert_eq!(r["status"], "ok", "{q}: {r}");
        r["albumList2"]["album"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect()
    };
    let year =
        1970 + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 31_556_952;
    for q in [
        "type=newest",
        "type=alphabeticalByName",
        "type=alphabeticalByArtist",
        "type=random&size=500",
        &format!("type=byYear&fromYear={}&toYear={}", year - 1, year + 1),
    ] {
        assert!(list(q).contains(&album), "{q}");
    }
    assert!(list("type=byYear&fromYear=1990&toYear=1991").is_empty());
    // Nothing played or liked yet; then a play and a like.
    for q in ["type=frequent", "type=recent", "type=starred", "type=highest"] {
        assert!(list(q).is_empty(), "{q}");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let body = serde_json::json!({ "sent_ms": now, "events": [{ "event_id": "0190f0e0-0000-7000-8000-00000000abcd",
        "track": ids[0], "started_ms": now - 60_000, "ms_played": 2_500, "tier": "high", "device": "phone" }] });
    let (code, r) = admin(up.app, "POST", "/v1/play-events", Some(&key), Some(&body.to_string()));
    assert_eq!(code, 200, "{r}");
    let (code, r) = admin(up.app, "PUT", &format!("/v1/me/likes/{}", ids[1]), Some(&key), None);
    assert!(code == 200 || code == 201, "{r}");
    for q in ["type=frequent", "type=recent", "type=starred", "type=highest"] {
        assert_eq!(list(q), std::slice::from_ref(&album), "{q}");
    }
    assert_eq!(list("type=newest&size=1&offset=0").len(), 1);
    if let Some(genre) = track["genre"].as_str().filter(|g| !g.is_empty()) {
        assert!(list(&format!("type=byGenre&genre={}", genre.replace(' ', "%20"))).contains(&album));
    }
    let bad = rest_json(&up, &format!("getAlbumList2?f=json&apiKey={key}&type=bogus"));
    assert_eq!(bad["error"]["code"], 0, "{bad}");
    assert_eq!(rest_json(&up, &format!("getAlbumList2?f=json&apiKey={key}"))["error"]["code"], 10);
    let random = rest_json(&up, &format!("getRandomSongs?f=json&apiKey={key}&size=3"));
    assert_eq!(random["randomSongs"]["song"].as_array().unwrap().len(), 3, "{random}");
    assert!(terminate(up.up).success());
}

#[test]
fn scrobbles_count_once_and_stars_are_likes() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let (album, artist) = (track["album"]["id"].as_str().unwrap(), track["album"]["artist"]["id"].as_str().unwrap());
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"scrobbler","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let call = |q: &str| rest_json(&up, &format!("{q}&f=json&c=Feishin&apiKey={key}"));
    let plays = || {
        let (code, r) =
            admin(up.app, "GET", &format!("/v1/admin/plays/counts?track={}", ids[0]), Some(&up.token), None);
        assert_eq!(code, 200, "{r}");
        r["counts"].as_array().unwrap().iter().map(|c| c["plays"].as_u64().unwrap()).sum::<u64>()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let started = now - 120_000;
    // A client retrying a scrobble: counted once.
    for _ in 0..2 {
        let r = call(&format!("scrobble?id={}&time={started}&submission=true", ids[0]));
        assert_eq!(r["status"], "ok", "{r}");
    }
    assert_eq!(plays(), 1);
    // Another play of it later is another play.
    assert_eq!(call(&format!("scrobble?id={}&time={}", ids[0], started + 60_000))["status"], "ok");
    assert_eq!(plays(), 2);
    assert_eq!(call("scrobble?id=trk_nope&time=1")["error"]["code"], 70);
    // A play the play checks refuse (here: one ending in the future) is an error, not an ok.
    let future = call(&format!("scrobble?id={}&time={}", ids[0], now * 1000));
    assert_eq!(future["status"], "failed", "{future}");
    assert!(future["error"]["message"].as_str().unwrap().contains("future"), "{future}");
    assert_eq!(plays(), 2);
    assert_eq!(call("scrobble?x=1")["error"]["code"], 10);

    // Now playing.
    assert_eq!(call(&format!("scrobble?id={}&submission=FALSE", ids[2]))["status"], "ok");
    let np = call("getNowPlaying?x=1");
    let entry = &np["nowPlaying"]["entry"][0];
    assert_eq!(
        (entry["id"].as_str(), entry["username"].as_str(), entry["playerName"].as_str()),
        (Some(ids[2].as_str()), Some("scrobbler"), Some("Feishin")),
        "{np}"
    );
    assert_eq!(plays(), 2, "now playing is not a play");

    // Stars: a song is a like; albums and artists are starred.
    let r = call(&format!("star?id={}&albumId={album}&artistId={artist}", ids[1]));
    assert_eq!(r["status"], "ok", "{r}");
    let (_, likes) = admin(up.app, "GET", "/v1/me/likes", Some(&key), None);
    assert_eq!(likes["likes"], serde_json::json!([ids[1]]));
    let s = call("getStarred2?x=1")["starred2"].clone();
    assert_eq!(
        (s["song"][0]["id"].as_str(), s["album"][0]["id"].as_str(), s["artist"][0]["id"].as_str()),
        (Some(ids[1].as_str()), Some(album), Some(artist)),
        "{s}"
    );
    assert!(s["song"][0]["starred"].is_string(), "{s}");
    assert_eq!(call(&format!("unstar?id={}&albumId={album}", ids[1]))["status"], "ok");
    let s = call("getStarred2?x=1")["starred2"].clone();
    assert_eq!(
        (
            s["song"].as_array().unwrap().len(),
            s["album"].as_array().unwrap().len(),
            s["artist"].as_array().unwrap().len()
        ),
        (0, 0, 1),
        "{s}"
    );
    assert_eq!(call("star?albumId=alb_nope")["error"]["code"], 70);
    assert_eq!(call("star?x=1")["error"]["code"], 10);
    assert!(terminate(up.up).success());
}

#[test]
fn playlists_are_the_collaborative_playlists() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"curator","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let call = |q: &str| rest_json(&up, &format!("{q}&f=json&apiKey={key}"));
    let songs = |v: &serde_json::Value| -> Vec<String> {
        v["entry"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    };
    let created =
        call(&format!("createPlaylist?name=Road%20trip&songId={}&songId={}&songId={}", ids[2], ids[0], ids[3]));
    assert_eq!(created["status"], "ok", "{created}");
    let pl = &created["playlist"];
    let id = pl["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (pl["name"].as_str(), pl["owner"].as_str(), pl["songCount"].as_u64()),
        (Some("Road trip"), Some("curator"), Some(3)),
        "{pl}"
    );
    assert_eq!(songs(pl), [ids[2].clone(), ids[0].clone(), ids[3].clone()], "in the order given");
    // The same playlist through /v1.
    let (code, v1) = admin(up.app, "GET", &format!("/v1/playlists/{id}"), Some(&key), None);
    assert_eq!(code, 200, "{v1}");
    assert_eq!(v1["items"].as_array().unwrap().len(), 3);
    // Rename, remove the first, add one at the end.
    let r =
        call(&format!("updatePlaylist?playlistId={id}&name=Night%20drive&songIndexToRemove=0&songIdToAdd={}", ids[1]));
    assert_eq!(r["status"], "ok", "{r}");
    let got = call(&format!("getPlaylist?id={id}"));
    assert_eq!(got["playlist"]["name"], "Night drive");
    assert_eq!(songs(&got["playlist"]), [ids[0].clone(), ids[3].clone(), ids[1].clone()], "{got}");
    let all = call("getPlaylists?x=1");
    assert_eq!(all["playlists"]["playlist"][0]["id"], id.as_str(), "{all}");
    assert!(all["playlists"]["playlist"][0].get("entry").is_none());
    // Replacing the songs of an existing playlist.
    let r = call(&format!("createPlaylist?playlistId={id}&songId={}", ids[2]));
    assert_eq!(songs(&r["playlist"]), [ids[2].clone()], "{r}");
    assert_eq!(call(&format!("updatePlaylist?playlistId={id}&songIndexToRemove=7"))["error"]["code"], 70);
    // Someone else's playlist is not there for them.
    let (_, other) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"other","country":"SE"}"#));
    let other_key = other["api_key"].as_str().unwrap();
    assert_eq!(rest_json(&up, &format!("getPlaylist?id={id}&f=json&apiKey={other_key}"))["error"]["code"], 70);
    assert_eq!(call(&format!("deletePlaylist?id={id}"))["status"], "ok");
    assert_eq!(call(&format!("getPlaylist?id={id}"))["error"]["code"], 70);
    assert_eq!(call("createPlaylist?x=1")["error"]["code"], 10);
    assert!(terminate(up.up).success());
}

#[test]
fn folder_browsing_walks_artist_album_song_directories_and_covers_are_pngs() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"folders","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let call = |q: &str| rest_json(&up, &format!("{q}&f=json&apiKey={key}"));
    let idx = call("getIndexes?musicFolderId=1")["indexes"].clone();
    let changed = idx["lastModified"].as_i64().unwrap();
    assert!(changed > 0, "{idx}");
    let s = idx["index"].as_array().unwrap().iter().find(|i| i["name"] == "S").expect("an S index").clone();
    let artist = s["artist"].as_array().unwrap().iter().find(|a| a["name"] == "Segue Demo").unwrap().clone();
    // Nothing changed since then: no index, only the stamp.
    let same = call(&format!("getIndexes?ifModifiedSince={changed}"))["indexes"].clone();
    assert!(same.get("index").is_none() && same["lastModified"] == changed, "{same}");

    let dir = call(&format!("getMusicDirectory?id={}", artist["id"].as_str().unwrap()))["directory"].clone();
    assert_eq!(dir["name"], "Segue Demo");
    let albums = dir["child"].as_array().unwrap();
    let continuum = albums.iter().find(|a| a["title"] == "Continuum (gapless)").expect("the album").clone();
    assert_eq!((continuum["isDir"].as_bool(), continuum["duration"].as_i64()), (Some(true), Some(12)), "{dir}");
    assert_eq!(continuum["parent"], artist["id"]);
    let album_id = continuum["id"].as_str().unwrap();
    let songs = call(&format!("getMusicDirectory?id={album_id}"))["directory"].clone();
    assert_eq!(songs["parent"], artist["id"], "{songs}");
    let children: Vec<&str> = songs["child"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(children, ids.iter().map(String::as_str).collect::<Vec<_>>(), "songs in track order");
    assert!(songs["child"].as_array().unwrap().iter().all(|c| c["isDir"] == false && c["parent"] == album_id));
    assert_eq!(call("getMusicDirectory?id=alb_nope")["error"]["code"], 70);
    let (_, xml) = rest(&up, &format!("getIndexes?apiKey={key}"));
    assert!(xml.contains("<indexes ") && xml.contains(r#"<artist id=""#), "{xml}");

    // Covers: a PNG of the size asked, the same for an album and its songs, distinct
    // between albums; an unknown id is a Subsonic error, not an image.
    let cover = |id: &str, size: u32| {
        let url = format!("http://{}/rest/getCoverArt?id={id}&size={size}&apiKey={key}", up.app);
        let (code, body) = get(&url, &[]);
        assert_eq!(code, 200);
        body
    };
    let png = cover(album_id, 120);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 120, "width");
    assert_eq!(cover(&ids[0], 120), png, "a song's cover is its album's");
    let standalone = call("search3?query=standalone")["searchResult3"]["song"][0]["coverArt"].clone();
    assert_ne!(cover(standalone.as_str().unwrap(), 120), png);
    let artist_cover = cover(&format!("ar-{}", artist["id"].as_str().unwrap()), 64);
    assert_eq!(u32::from_be_bytes(artist_cover[16..20].try_into().unwrap()), 64);
    let (_, headers) =
        get(&format!("http://{}/rest/getCoverArt?id={album_id}&apiKey={key}", up.app), &["-D", "-", "-o", "/dev/null"]);
    let headers = String::from_utf8_lossy(&headers).to_lowercase();
    assert!(headers.contains("content-type: image/png") && headers.contains("max-age="), "{headers}");
    assert_eq!(call("getCoverArt?id=alb_nope")["error"]["code"], 70);
    assert!(terminate(up.up).success());
}

#[test]
fn proxy_mode_relays_ranges_from_the_edge_for_players_that_cannot_redirect() {
    let up = start_up_with(&["--subsonic-stream", "proxy"]);
    let ids = album_ids(up.app, &up.token);
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let cid = track["content_id"].as_str().unwrap();
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"noredirect","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let (_, whole) = get(&format!("http://{}/a/{cid}/high.ogg", up.origin), &[]);
    let url = format!("http://{}/rest/stream?id={}&apiKey={key}", up.app, ids[0]);
    // No -L: the app API answers the audio itself.
    let (code, part) = get(&url, &["-H", "Range: bytes=100-4195"]);
    assert_eq!(code, 206);
    assert_eq!(part, whole[100..4196], "the relayed bytes are the origin's");
    let (code, all) = get(&url, &[]);
    assert_eq!((code, all.len()), (200, whole.len()));
    let (_, headers) = get(&url, &["-H", "Range: bytes=0-99", "-D", "-", "-o", "/dev/null"]);
    let headers = String::from_utf8_lossy(&headers).to_lowercase();
    assert!(headers.contains(&format!("content-range: bytes 0-99/{}", whole.len())), "{headers}");
    assert!(headers.contains("content-type: audio/ogg") && headers.contains("accept-ranges: bytes"), "{headers}");
    // Failures are still Subsonic answers.
    let (code, body) = get(&format!("http://{}/rest/stream?id=trk_nope&apiKey={key}", up.app), &[]);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains(r#"code="70""#));
    assert!(terminate(up.up).success());
}

#[test]
fn lyrics_set_by_admins_reach_the_app_and_players() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, user) =
        admin(up.app, "POST", "/v1/admin/users", Some(&up.token), Some(r#"{"name":"singer","country":"SE"}"#));
    let key = user["api_key"].as_str().unwrap().to_owned();
    let put = |who: &str, track: &str, lang: &str, body: &str| {
        admin(up.app, "PUT", &format!("/v1/admin/tracks/{track}/lyrics/{lang}"), Some(who), Some(body))
    };
    let lrc = r#"{"text":"[00:01.00]One\n[00:02.00]Two"}"#;
    // Bad input changes nothing and says why; only admins write.
    assert_eq!(put(&up.token, &ids[0], "English", lrc).0, 400);
    assert_eq!(put(&up.token, "trk_000000000000", "eng", lrc).0, 404);
    assert_eq!(put(&up.token, &ids[0], "eng", r#"{"text":"  \n "}"#).0, 400);
    assert_eq!(put(&up.token, &ids[0], "eng", r#"{"lyrics":"x"}"#).0, 400);
    assert_eq!(put(&key, &ids[0], "eng", lrc).0, 403);
    let lyrics = |track: &str| admin(up.app, "GET", &format!("/v1/tracks/{track}/lyrics"), Some(&key), None).1;
    assert_eq!(lyrics(&ids[0])["lyrics"], serde_json::json!([]));
    let (code, set) = put(&up.token, &ids[0], "eng", lrc);
    assert_eq!(code, 200, "{set}");
    let got = lyrics(&ids[0]);
    assert_eq!(got["lyrics"][0]["synced"], true, "{got}");
    assert_eq!(got["lyrics"][0]["lines"][1], serde_json::json!({ "start_ms": 2000, "value": "Two" }));
    // Players see it through songLyrics.
    let call = |q: &str| rest_json(&up, &format!("{q}&f=json&apiKey={key}"));
    let ext = call("getOpenSubsonicExtensions?x=1");
    assert!(ext.to_string().contains("songLyrics"), "{ext}");
    let by_id = call(&format!("getLyricsBySongId?id={}", ids[0]));
    assert_eq!(by_id["lyricsList"]["structuredLyrics"][0]["line"][0]["start"], 1000, "{by_id}");
    assert_eq!(call("getLyricsBySongId?id=trk_000000000000")["error"]["code"], 70);
    // Removed: gone for both; removing again is a 404.
    let del =
        |who: &str| admin(up.app, "DELETE", &format!("/v1/admin/tracks/{}/lyrics/eng", ids[0]), Some(who), None).0;
    assert_eq!(del(&up.token), 200);
    assert_eq!(del(&up.token), 404);
    assert_eq!(
        call(&format!("getLyricsBySongId?id={}", ids[0]))["lyricsList"]["structuredLyrics"],
        serde_json::json!([])
    );
    assert!(terminate(up.up).success());
}
