//! `segue lab`: a real fleet on loopback. Three POPs in two regions behind a shield:
//! every POP registers in its region, the app API hands a listener a POP of their region
//! (with a second one as fallback), and a POP's miss goes through the shield, which
//! keeps the object for the next POP.

mod common;

use common::*;

#[test]
fn a_lab_fleet_registers_by_region_and_fetches_through_its_shield() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = segue();
    cmd.args(["lab", "--pops", "3", "--regions", "2", "--shield", "--ports-from", "0", "--demo-track-secs", "3"])
        .arg("--data-dir")
        .arg(dir.path());
    // origin, shield, the POPs in turn over the regions (pop-eu-1, pop-us-1, pop-eu-2),
    // control plane, app API.
    let (lab, addrs) = spawn_servers(cmd, 7);
    let (origin, shield, pops, cp, app) = (addrs[0], addrs[1], &addrs[2..5], addrs[5], addrs[6]);
    let cp_token = std::fs::read_to_string(dir.path().join("control-plane.token")).unwrap().trim().to_owned();
    let app_token = std::fs::read_to_string(dir.path().join("app-api.token")).unwrap().trim().to_owned();
    let registered = || {
        let (_, body) = get(&format!("http://{cp}/v1/pops"), &["-H", &format!("Authorization: Bearer {cp_token}")]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let mut pops: Vec<(String, String, bool)> = v["pops"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (p["id"].as_str().unwrap().to_owned(), p["region"].as_str().unwrap().to_owned(), p["healthy"] == true)
            })
            .collect();
        pops.sort();
        pops
    };
    wait_for("four POPs registered and healthy", 60, || registered().iter().filter(|p| p.2).count() == 4);
    let expect = |id: &str, region: &str| (id.to_owned(), region.to_owned(), true);
    assert_eq!(
        registered(),
        vec![expect("pop-eu-1", "eu"), expect("pop-eu-2", "eu"), expect("pop-us-1", "us"), expect("shield", "core")]
    );

    // A listener in the US gets the US POP; one in Sweden an EU POP and the other as fallback.
    let ids = album_ids(app, &app_token);
    let stream = |country: &str| {
        let body = format!(r#"{{"name":"l-{country}","country":"{country}"}}"#);
        let (_, user) = admin(app, "POST", "/v1/admin/users", Some(&app_token), Some(&body));
        let key = user["api_key"].as_str().unwrap().to_owned();
        admin(app, "GET", &format!("/v1/tracks/{}/stream", ids[0]), Some(&key), None).1
    };
    let us = stream("US");
    assert!(us["url"].as_str().unwrap().starts_with(&format!("http://{}/", pops[1])), "{us}");
    let se = stream("SE");
    let eu: Vec<String> = [pops[0], pops[2]].iter().map(|p| format!("http://{p}/")).collect();
    assert!(eu.iter().any(|p| se["url"].as_str().unwrap().starts_with(p)), "{se}");
    assert!(eu.iter().any(|p| se["fallback_url"].as_str().unwrap_or("").starts_with(p)), "{se}");

    // Every POP fetches the same object: through the shield, which fetched it once.
    let (_, track) = admin(app, "GET", &format!("/v1/tracks/{}", ids[1]), Some(&app_token), None);
    let path = format!("/a/{}/low.ogg", track["content_id"].as_str().unwrap());
    let (_, whole) = get(&format!("http://{origin}{path}"), &[]);
    for pop in pops {
        let (code, body) = get(&format!("http://{pop}{path}"), &[]);
        assert_eq!((code, body.len()), (200, whole.len()), "{pop}");
        assert_eq!(body, whole);
    }
    let shield_log = access_log(&dir.path().join("pops/shield"));
    let at_shield = shield_log.iter().filter(|l| l["path"] == path.as_str()).count();
    assert!(at_shield >= 1, "the POPs' misses reached the shield: {shield_log:?}");
    let (_, via) = get(&format!("http://{}{path}", pops[0]), &["-s", "-D", "-", "-o", "/dev/null"]);
    let via = String::from_utf8_lossy(&via).to_lowercase();
    assert!(via.contains("x-cache: hit"), "the POP keeps it: {via}");
    let (_, shield_again) = get(&format!("http://{shield}{path}"), &["-s", "-D", "-", "-o", "/dev/null"]);
    assert!(String::from_utf8_lossy(&shield_again).to_lowercase().contains("x-cache: hit"));
    assert!(terminate(lab).success());
}
