//! Offline listening under DRM against a real stack (`segue up`: origin, edge, control
//! plane, app API on 127.0.0.1): encrypted objects, the license server, renewals and
//! revocation, key rotation.

mod common;

use common::*;
use segue_core::drm::cipher::{ContentKey, ObjectCipher};
use segue_core::drm::license::{DeviceSecret, Signed, Trust};
use segue_core::{ContentId, Tier};

/// A new listener in SE: their API key.
fn listener(app: std::net::SocketAddr, admin_token: &str, name: &str) -> String {
    let body = format!(r#"{{"name":"{name}","country":"SE"}}"#);
    let (code, u) = admin(app, "POST", "/v1/admin/users", Some(admin_token), Some(&body));
    assert_eq!(code, 201, "{u}");
    u["api_key"].as_str().unwrap().to_owned()
}

fn register(app: std::net::SocketAddr, key: &str, name: &str, device: &DeviceSecret) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "name": name, "public_key": device.public() }).to_string();
    admin(app, "POST", "/v1/drm/devices", Some(key), Some(&body))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn decrypt(key: &ContentKey, cid: &ContentId, tier: Tier, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    ObjectCipher::new(key, cid, tier).apply(offset, &mut out);
    out
}

/// Whether `tool args.. FILE` succeeds.
fn tool_reads(tool: &str, args: &[&str], file: &std::path::Path) -> bool {
    std::process::Command::new(tool)
        .args(args)
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
        .success()
}

#[test]
fn licenses_seal_content_keys_to_one_device_and_renewals_follow_rights_devices_and_subscriptions() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let key = listener(up.app, &up.token, "traveller");
    let (code, sk) = admin(up.app, "GET", "/v1/drm/server-key", Some(&key), None);
    assert_eq!(code, 200, "{sk}");
    let trust = Trust::from_public(sk["public_key"].as_str().unwrap()).unwrap();

    // Devices: five per user; the sixth, a repeated key, a bad key and an admin token are refused.
    let device = DeviceSecret::generate();
    let (code, d) = register(up.app, &key, "phone", &device);
    assert_eq!(code, 201, "{d}");
    let device_id = d["id"].as_str().unwrap().to_owned();
    for n in 2..=5 {
        assert_eq!(register(up.app, &key, &format!("device {n}"), &DeviceSecret::generate()).0, 201);
    }
    let (code, e) = register(up.app, &key, "sixth", &DeviceSecret::generate());
    assert_eq!((code, e["error"].as_str()), (409, Some("device_limit")), "{e}");
    assert_eq!(register(up.app, &key, "again", &device).0, 409);
    let bad = r#"{"name":"x","public_key":"AAAA"}"#;
    let (code, e) = admin(up.app, "POST", "/v1/drm/devices", Some(&key), Some(bad));
    assert_eq!(code, 400, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("public_key"), "{e}");
    assert_eq!(register(up.app, &up.token, "admin's", &DeviceSecret::generate()).0, 403);

    // A license for the demo album, sealed to the phone.
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&key), None);
    let album = track["album"]["id"].as_str().unwrap();
    let both = serde_json::json!({ "device": device_id, "album": album, "tracks": [ids[0]] }).to_string();
    assert_eq!(admin(up.app, "POST", "/v1/drm/licenses", Some(&key), Some(&both)).0, 400);
    let body = serde_json::json!({ "device": device_id, "album": album }).to_string();
    let (code, issued) = admin(up.app, "POST", "/v1/drm/licenses", Some(&key), Some(&body));
    assert_eq!(code, 201, "{issued}");
    let signed: Signed = serde_json::from_value(issued["license"].clone()).unwrap();
    let lic = trust.license(&signed).unwrap();
    assert_eq!(lic.device, device_id);
    assert_eq!(lic.tracks.iter().map(|t| t.track.clone()).collect::<Vec<_>>(), ids);
    let month = 30 * 86_400_000;
    assert!((lic.expires_ms - lic.issued_ms - month).abs() < 1000, "{lic:?}");
    assert_eq!(lic.grace_ms, 48 * 3_600_000);
    let keys = lic.open_keys(&device).unwrap();
    assert!(lic.open_keys(&DeviceSecret::generate()).is_err(), "another device's key opened the license");
    let mut payload = signed.payload.clone().into_bytes();
    payload[40] = if payload[40] == b'A' { b'B' } else { b'A' };
    let flipped = Signed { payload: String::from_utf8(payload).unwrap(), ..signed.clone() };
    assert!(trust.license(&flipped).is_err(), "a license with a flipped byte was accepted");

    // The encrypted objects, fetched from the edge with the license's signed URLs, open
    // with the sealed keys into the plain objects; any range decrypts alone.
    let (code, dl) = admin(up.app, "GET", &format!("/v1/drm/licenses/{}/downloads", lic.id), Some(&key), None);
    assert_eq!(code, 200, "{dl}");
    let first = &dl["downloads"][0];
    let url = first["url"].as_str().unwrap();
    assert!(url.contains("/enc/") && url.contains("sig="), "{url}");
    let (code, enc) = get(url, &[]);
    assert_eq!(code, 200);
    let cid = lic.tracks[0].content_id;
    let (_, plain) = get(&format!("http://{}/a/{cid}/high.ogg", up.edge), &[]);
    assert_eq!(enc.len(), plain.len());
    assert_ne!(enc[..4096], plain[..4096]);
    assert_eq!(decrypt(&keys[0], &cid, Tier::High, 0, &enc), plain);
    let (code, part) = get(url, &["-r", "5001-9000"]);
    assert_eq!(code, 206);
    assert_eq!(decrypt(&keys[0], &cid, Tier::High, 5001, &part), plain[5001..=9000]);
    // Real decoders cannot read the encrypted object, and can read the plain one.
    let dir = tempfile::tempdir().unwrap();
    let (enc_file, plain_file) = (dir.path().join("enc.ogg"), dir.path().join("plain.ogg"));
    std::fs::write(&enc_file, &enc).unwrap();
    std::fs::write(&plain_file, &plain).unwrap();
    let ffmpeg_reads = |f: &std::path::Path| {
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-xerror", "-i"])
            .arg(f)
            .args(["-f", "null", "-"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(ffmpeg_reads(&plain_file) && tool_reads("ogginfo", &[], &plain_file));
    assert!(!ffmpeg_reads(&enc_file), "ffmpeg decoded the encrypted object");
    assert!(!tool_reads("ogginfo", &[], &enc_file), "ogginfo read the encrypted object");
    // No key material in the servers' metrics.
    for addr in [up.origin, up.app] {
        let (_, page) = get(&format!("http://{addr}/metrics"), &[]);
        let page = String::from_utf8_lossy(&page);
        for k in &keys {
            assert!(!page.contains(&segue_core::drm::b64(k.expose())) && !page.contains(&hex(k.expose())));
        }
    }

    // Renewal by id: new dates, signed, no keys.
    let renew = serde_json::json!({ "licenses": [lic.id] }).to_string();
    let (code, r) = admin(up.app, "POST", "/v1/drm/renewals", Some(&key), Some(&renew));
    assert_eq!(code, 200, "{r}");
    let renewal = trust.renewal(&serde_json::from_value(r["renewals"][0].clone()).unwrap()).unwrap();
    assert_eq!((renewal.license.as_str(), renewal.device.as_str()), (lic.id.as_str(), device_id.as_str()));
    assert!(renewal.expires_ms >= lic.expires_ms && renewal.revoked.is_empty(), "{renewal:?}");
    assert!(trust.license(&serde_json::from_value(r["renewals"][0].clone()).unwrap()).is_err());
    // Rights withdrawn for one track: it rides back as revoked.
    let (code, _) = admin(up.app, "DELETE", &format!("/v1/admin/tracks/{}/rights/SE", ids[2]), Some(&up.token), None);
    assert_eq!(code, 200);
    let (_, r) = admin(up.app, "POST", "/v1/drm/renewals", Some(&key), Some(&renew));
    let renewal = trust.renewal(&serde_json::from_value(r["renewals"][0].clone()).unwrap()).unwrap();
    assert_eq!(renewal.revoked, vec![ids[2].clone()]);
    // Another listener cannot renew (or see) this license.
    let other = listener(up.app, &up.token, "someone else");
    let (_, r) = admin(up.app, "POST", "/v1/drm/renewals", Some(&other), Some(&renew));
    assert_eq!(r["refused"][0]["error"], "not_found", "{r}");
    assert_eq!(admin(up.app, "GET", &format!("/v1/drm/licenses/{}/downloads", lic.id), Some(&other), None).0, 404);

    // A second license on another device, then that device is removed: it cannot renew.
    let tablet = DeviceSecret::generate();
    let (code, devices) = admin(up.app, "GET", "/v1/drm/devices", Some(&key), None);
    assert_eq!((code, devices["devices"].as_array().unwrap().len()), (200, 5));
    let gone = devices["devices"][4]["id"].as_str().unwrap().to_owned();
    assert_eq!(admin(up.app, "DELETE", &format!("/v1/drm/devices/{gone}"), Some(&key), None).0, 200);
    let (code, t) = register(up.app, &key, "tablet", &tablet);
    assert_eq!(code, 201, "the freed slot takes a new device: {t}");
    let tablet_id = t["id"].as_str().unwrap();
    let body = serde_json::json!({ "device": tablet_id, "tracks": [ids[0], ids[1]], "tier": "low" }).to_string();
    let (code, issued2) = admin(up.app, "POST", "/v1/drm/licenses", Some(&key), Some(&body));
    assert_eq!(code, 201, "{issued2}");
    let lic2 = trust.license(&serde_json::from_value(issued2["license"].clone()).unwrap()).unwrap();
    assert_eq!((lic2.tier, lic2.open_keys(&tablet).unwrap().len()), (Tier::Low, 2));
    assert_eq!(admin(up.app, "DELETE", &format!("/v1/drm/devices/{tablet_id}"), Some(&key), None).0, 200);
    let both = serde_json::json!({ "licenses": [lic.id, lic2.id] }).to_string();
    let (_, r) = admin(up.app, "POST", "/v1/drm/renewals", Some(&key), Some(&both));
    assert_eq!(r["renewals"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["refused"][0]["error"], "device_removed", "{r}");

    // A playlist's tracks, in its order.
    let (code, pl) = admin(up.app, "POST", "/v1/playlists", Some(&key), Some(r#"{"name":"trip"}"#));
    assert_eq!(code, 201, "{pl}");
    let pl_id = pl["id"].as_str().unwrap();
    for (version, track) in [(0, &ids[3]), (1, &ids[1])] {
        let edit =
            serde_json::json!({ "version": version, "ops": [{ "op": "add", "track_id": track, "index": version }] });
        let path = format!("/v1/playlists/{pl_id}/ops");
        let (code, e) = admin(up.app, "POST", &path, Some(&key), Some(&edit.to_string()));
        assert_eq!(code, 200, "{e}");
    }
    let body = serde_json::json!({ "device": device_id, "playlist": pl_id }).to_string();
    let (code, issued3) = admin(up.app, "POST", "/v1/drm/licenses", Some(&key), Some(&body));
    assert_eq!(code, 201, "{issued3}");
    let lic3 = trust.license(&serde_json::from_value(issued3["license"].clone()).unwrap()).unwrap();
    assert_eq!(lic3.tracks.iter().map(|t| t.track.as_str()).collect::<Vec<_>>(), [ids[3].as_str(), ids[1].as_str()]);

    // Tracks per device are bounded (`drm.max_tracks_per_device`; 4 on a second app API
    // over the same database and keys): the phone holds the album's 4, a fifth is refused.
    let dir = up.dir.path();
    let extra = format!(
        "[signing]\nkid = \"up\"\nsecret_hex = \"{}\"\n[drm]\nkek_file = \"{}\"\norigin_key_token = \"{}\"\n\
         signing_key_file = \"{}\"\nmax_tracks_per_device = 4\n",
        std::fs::read_to_string(dir.join("signing.key")).unwrap().trim(),
        dir.join("kek").display(),
        std::fs::read_to_string(dir.join("origin-keys.token")).unwrap().trim(),
        dir.join("drm-signing.key").display()
    );
    let db = format!("sqlite://{}", dir.join("app-api.db").display());
    let strict_dir = dir.join("strict");
    std::fs::create_dir_all(&strict_dir).unwrap();
    let (strict, strict_addr) = spawn_app_api(&strict_dir, &db, up.origin, &extra);
    let single =
        admin(up.app, "GET", "/v1/search?q=standalone&types=track", Some(&key), None).1["hits"][0]["id"].clone();
    let body = serde_json::json!({ "device": device_id, "tracks": [single] }).to_string();
    let (code, e) = admin(strict_addr, "POST", "/v1/drm/licenses", Some(&key), Some(&body));
    assert_eq!((code, e["error"].as_str()), (409, Some("device_limit")), "{e}");
    let body = serde_json::json!({ "device": device_id, "tracks": [ids[0]] }).to_string();
    assert_eq!(
        admin(strict_addr, "POST", "/v1/drm/licenses", Some(&key), Some(&body)).0,
        201,
        "tracks held already count once"
    );
    assert!(terminate(strict).success());

    // The subscription ends: no renewal, no new license.
    let user_id = admin(up.app, "GET", "/v1/me", Some(&key), None).1["id"].as_str().unwrap().to_owned();
    let ended = format!(r#"{{"ends_ms":{}}}"#, now_ms() - 1000);
    let (code, _) =
        admin(up.app, "PUT", &format!("/v1/admin/users/{user_id}/subscription"), Some(&up.token), Some(&ended));
    assert_eq!(code, 200);
    let (code, e) = admin(up.app, "POST", "/v1/drm/renewals", Some(&key), Some(&renew));
    assert_eq!((code, e["error"].as_str()), (403, Some("subscription_ended")), "{e}");
    let body = serde_json::json!({ "device": device_id, "tracks": [ids[0]] }).to_string();
    assert_eq!(admin(up.app, "POST", "/v1/drm/licenses", Some(&key), Some(&body)).0, 403);
    assert!(terminate(up.up).success());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A renewal names licenses only and answers with dates: for a 500-track album, request
/// and answer together (headers included) stay under 2 KB.
#[test]
fn a_renewal_for_500_tracks_is_under_2_kb_on_the_wire() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let cid = track["content_id"].as_str().unwrap().to_owned();
    // 500 tracks of one album (the same audio: re-releases share content).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = format!("http://{}", up.app);
    let call = |method: http::Method, path: String, body: String| {
        let (base, token) = (base.clone(), up.token.clone());
        async move {
            let t = std::time::Duration::from_secs(30);
            segue_core::client::call(&base, method, &path, Some(&token), Some(body.into()), t).await.unwrap()
        }
    };
    let mut album = String::new();
    rt.block_on(async {
        for n in 1..=500 {
            let t = serde_json::json!({
                "content_id": cid, "title": format!("Take {n}"), "artists": ["Big Box"], "album": "Complete Takes",
                "track_number": n,
            });
            let (status, body) = call(http::Method::POST, "/v1/admin/tracks".into(), t.to_string()).await;
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
            album = t["album"]["id"].as_str().unwrap().to_owned();
            let path = format!("/v1/admin/tracks/{}/rights", t["id"].as_str().unwrap());
            let (status, _) = call(http::Method::PUT, path, r#"{"countries":["SE"]}"#.into()).await;
            assert_eq!(status, 200);
        }
    });
    let key = listener(up.app, &up.token, "collector");
    let device = DeviceSecret::generate();
    let (code, d) = register(up.app, &key, "phone", &device);
    assert_eq!(code, 201, "{d}");
    let body = serde_json::json!({ "device": d["id"], "album": album }).to_string();
    let (code, issued) = admin(up.app, "POST", "/v1/drm/licenses", Some(&key), Some(&body));
    assert_eq!(code, 201, "{issued}");
    assert_eq!(issued["tracks"], 500);
    let license_bytes = issued["license"].to_string().len();
    let renew = serde_json::json!({ "licenses": [issued["id"]] }).to_string();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_request} %{size_upload} %{size_header} %{size_download}",
        ])
        .args(["-H", &format!("Authorization: Bearer {key}"), "-H", "Content-Type: application/json"])
        .args(["--data-binary", &renew, &format!("http://{}/v1/drm/renewals", up.app)])
        .output()
        .unwrap();
    let w: Vec<u64> = String::from_utf8_lossy(&out.stdout).split(' ').map(|n| n.parse().unwrap()).collect();
    assert_eq!(w[0], 200);
    let wire: u64 = w[1..].iter().sum();
    eprintln!(
        "500-track license {license_bytes} B; renewal on the wire {wire} B (request {} + {}, answer {} + {})",
        w[1], w[2], w[3], w[4]
    );
    assert!(wire <= 2048, "a renewal took {wire} B on the wire");
    assert!(terminate(up.up).success());
}

/// `segue keys rotate` rewraps content keys under a new KEK without touching audio: after
/// the old KEK is gone, the origin serves the same encrypted bytes.
#[test]
fn content_keys_rotate_to_a_new_kek_without_touching_audio() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&up.token), None);
    let cid = track["content_id"].as_str().unwrap().to_owned();
    let enc_path = format!("/enc/{cid}/normal.ogg");
    let (code, before) = get(&format!("http://{}{enc_path}", up.origin), &[]);
    assert_eq!(code, 200);
    let audio_dir = up.dir.path().join("origin/audio");
    let audio_before: Vec<_> = std::fs::read_dir(audio_dir.join(&cid)).unwrap().map(|e| e.unwrap().path()).collect();
    let stamps = |paths: &[std::path::PathBuf]| -> Vec<_> {
        paths.iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect()
    };
    let audio_stamps = stamps(&audio_before);
    assert!(terminate(up.up).success());

    let old = std::fs::read_to_string(up.dir.path().join("kek")).unwrap();
    let old = old.lines().find(|l| l.starts_with("up1:")).unwrap().to_owned();
    let new = format!("k2:{}", "5a".repeat(32));
    let store = up.dir.path().join("origin");
    let run = segue()
        .args(["keys", "rotate", "--json", "--data-dir"])
        .arg(&store)
        .env("SEGUE_KEK", format!("{new},{old}"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let done: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let contents = std::fs::read_dir(store.join("manifest")).unwrap().count() as u64;
    assert_eq!((done["rewrapped"].as_u64(), done["created"].as_u64()), (Some(contents), Some(0)), "{done}");
    for entry in std::fs::read_dir(store.join("keys")).unwrap() {
        let w: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        assert_eq!(w["kek"], "k2");
    }
    assert_eq!(stamps(&audio_before), audio_stamps, "rotation rewrote audio");
    // Again: nothing left to do.
    let run =
        segue().args(["keys", "rotate", "--json", "--data-dir"]).arg(&store).env("SEGUE_KEK", &new).output().unwrap();
    let again: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!((again["rewrapped"].as_u64(), again["current"].as_u64()), (Some(0), Some(contents)), "{again}");

    // The new KEK alone serves the same encrypted bytes; the old one alone cannot.
    let mut c = segue();
    c.args(["origin", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&store).env("SEGUE_KEK", &new);
    let (origin, addr) = spawn_server(c);
    let (code, after) = get(&format!("http://{addr}{enc_path}"), &[]);
    assert_eq!(code, 200);
    assert!(before == after, "the encrypted object changed with the KEK");
    assert!(terminate(origin).success());
    let mut c = segue();
    c.args(["origin", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&store).env("SEGUE_KEK", &old);
    let (origin, addr) = spawn_server(c);
    let (code, body) = get(&format!("http://{addr}{enc_path}"), &[]);
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("k2") && !body.contains(&"5a".repeat(8)), "{body}");
    assert!(terminate(origin).success());
}

/// `segue play --offline` of `tracks` (none: the whole library) at `clock_ms`: the run's
/// output, and its JSON report when it succeeded.
fn play_offline(
    device: &std::path::Path,
    out: &std::path::Path,
    clock_ms: Option<i64>,
    extra: &[&str],
    tracks: &[String],
) -> (std::process::Output, serde_json::Value) {
    let mut c = segue();
    c.args(["play", "--offline", "--json", "--device-dir"]).arg(device).arg("--out").arg(out);
    c.arg("--outbox").arg(out.with_extension("outbox"));
    if let Some(ms) = clock_ms {
        c.args(["--clock-ms", &ms.to_string()]);
    }
    let run = c.args(extra).args(tracks).output().unwrap();
    let report = serde_json::from_slice(&run.stdout).unwrap_or_default();
    (run, report)
}

fn wav(path: &std::path::Path) -> Vec<i16> {
    hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect()
}

/// Sync an album, stop every server, and play it on the device: gapless and equal to the
/// online rendering sample for sample; a seek decrypts only from its seek entry; the
/// license lives by the device's clock (grace, expiry, a clock set back).
#[test]
fn a_synced_album_plays_offline_like_online_and_its_license_lives_by_the_device_clock() {
    let up = start_up();
    let ids = album_ids(up.app, &up.token);
    let key = listener(up.app, &up.token, "sailor");
    let work = tempfile::tempdir().unwrap();
    let key_file = work.path().join("key");
    std::fs::write(&key_file, &key).unwrap();
    let (_, track) = admin(up.app, "GET", &format!("/v1/tracks/{}", ids[0]), Some(&key), None);
    let album = track["album"]["id"].as_str().unwrap().to_owned();
    let app = format!("http://{}", up.app);

    // The online rendering, for comparison.
    let online = work.path().join("online.wav");
    let online_crossfaded = work.path().join("online-crossfade.wav");
    for (out, extra) in [(&online, "--crossfade-ms=0"), (&online_crossfaded, "--crossfade-ms=700")] {
        let run = segue()
            .args(["play", "--no-report", extra, "--app-api", &app, "--token-file"])
            .arg(&key_file)
            .arg("--out")
            .arg(out)
            .args(&ids)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    }

    let device = work.path().join("device");
    let sync = |extra: &[&str]| {
        let run = segue()
            .args(["offline", "sync", "--json", "--device-name", "cabin", "--app-api", &app, "--token-file"])
            .arg(&key_file)
            .arg("--device-dir")
            .arg(&device)
            .args(extra)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        serde_json::from_slice::<serde_json::Value>(&run.stdout).unwrap()
    };
    let synced = sync(&["--album", &album]);
    assert_eq!((synced["tracks"].as_u64(), synced["objects"].as_u64()), (Some(4), Some(4)), "{synced}");
    assert!(synced["downloaded_bytes"].as_u64().unwrap() > 0);
    // A sync cut short left half an object as `.part`: the next sync of the album (a
    // second license, which ends last: the device plays by it) fetches the other half only.
    let cid = track["content_id"].as_str().unwrap();
    let object = device.join(format!("objects/{cid}/high.ogg"));
    let whole = std::fs::read(&object).unwrap();
    std::fs::remove_file(&object).unwrap();
    std::fs::write(object.with_extension("ogg.part"), &whole[..whole.len() / 2]).unwrap();
    let again = sync(&["--album", &album]);
    assert_eq!(again["downloaded_bytes"].as_u64(), Some((whole.len() - whole.len() / 2) as u64), "{again}");
    assert!(std::fs::read(&object).unwrap() == whole);
    let expires = again["expires_ms"].as_i64().unwrap();
    assert!(expires >= synced["expires_ms"].as_i64().unwrap());
    // Renewal of both at once; the status, offline, shows them valid.
    let run = segue()
        .args(["offline", "renew", "--json", "--app-api", &app, "--token-file"])
        .arg(&key_file)
        .arg("--device-dir")
        .arg(&device)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let renewed: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(renewed["renewed"].as_array().map(Vec::len), Some(2), "{renewed}");
    let run = segue().args(["offline", "status", "--json", "--device-dir"]).arg(&device).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(status["licenses"].as_array().unwrap().iter().all(|l| l["state"] == "valid"), "{status}");
    let expires =
        status["licenses"].as_array().unwrap().iter().map(|l| l["expires_ms"].as_i64().unwrap()).max().unwrap();
    // Online with the device directory, a track licensed offline plays from the device
    // (the store the on-device cache shares): not a byte from the edge.
    let from_device = work.path().join("device.wav");
    let run = segue()
        .args(["play", "--no-report", "--json", "--app-api", &app, "--token-file"])
        .arg(&key_file)
        .arg("--device-dir")
        .arg(&device)
        .arg("--out")
        .arg(&from_device)
        .args(&ids[..1])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["bytes_fetched"], 0, "{report}");
    assert!(report["bytes_decrypted"].as_u64() > Some(0), "{report}");
    let first = wav(&from_device);
    assert!(first[..] == wav(&online)[..first.len()], "the device's copy sounds like the stream");
    assert!(terminate(up.up).success());

    // Offline: no server is running.
    let offline = work.path().join("offline.wav");
    let (run, report) = play_offline(&device, &offline, None, &[], &ids);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(report["gap_samples"], 0);
    assert_eq!(report["bytes_fetched"], 0);
    assert!(wav(&offline) == wav(&online), "the offline rendering differs from the online one");
    let (run, _) = play_offline(&device, &offline, None, &["--crossfade-ms", "700"], &ids);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(wav(&offline) == wav(&online_crossfaded), "the crossfaded renderings differ");
    assert_eq!(report["plays"]["waiting"], 4, "offline plays wait in the outbox: {report}");
    // Nothing decrypted was written to the device directory.
    let mut files = vec![device.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(!bytes.starts_with(b"OggS") && !bytes.starts_with(b"RIFF"), "{} is plain audio", p.display());
        }
    }

    // A seek decrypts from the seek entry before it, never the bytes in between.
    let table = std::fs::read(device.join(format!("seek/{cid}/high.json"))).unwrap();
    let table = segue_core::seek_table::SeekTable::from_json(&table).unwrap();
    let target = 2 * u64::from(table.sample_rate);
    let entry = table.entry_for(target - segue_player::decode::PREROLL).unwrap().offset;
    let (run, report) = play_offline(&device, &offline, None, &["--start-ms", "2000"], &ids[..1]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(report["bytes_decrypted"].as_u64(), Some(table.header_bytes + table.total_bytes - entry), "{report}");
    assert!(entry > table.header_bytes + 10_000, "the seek entry is well into the object");

    // The device's clock: day 29 plays; 30 days + 47 h plays with a grace warning; past
    // the grace period, and with the clock set back, it refuses.
    let (h, d) = (3_600_000, 86_400_000);
    let (run, _) = play_offline(&device, &offline, Some(expires - d), &[], &ids[..1]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let (run, report) = play_offline(&device, &offline, Some(expires + 47 * h), &[], &ids[..1]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("grace period, 1 h left"), "{warnings}");
    let (run, _) = play_offline(&device, &offline, Some(expires + 2 * d + 1), &[], &ids[..1]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("grace period is over"), "{err}");
    let (run, _) = play_offline(&device, &offline, Some(expires - 20 * d), &[], &ids[..1]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("clock"), "{err}");
}
