//! Helpers the cross-role tests share: start `segue` processes on 127.0.0.1 and talk to
//! them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn segue() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segue"));
    c.env("RUST_LOG", "warn");
    c
}

/// Start a server and wait for its `listening on ADDR` line.
pub fn spawn_server(cmd: Command) -> (Child, SocketAddr) {
    let (child, addrs) = spawn_servers(cmd, 1);
    (child, addrs[0])
}

/// Start a process that prints `n` `listening on ADDR` lines and collect them in order.
pub fn spawn_servers(cmd: Command, n: usize) -> (Child, Vec<SocketAddr>) {
    try_spawn_servers(cmd, n).unwrap_or_else(|e| panic!("server did not print `listening on`: {e}"))
}

/// [`spawn_servers`], or why not (the process exited first, or took 120 s).
pub fn try_spawn_servers(mut cmd: Command, n: usize) -> Result<(Child, Vec<SocketAddr>), String> {
    // stderr is inherited unless the caller redirected it.
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn segue");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => addrs.push(a),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.to_string());
            }
        }
    }
    Ok((child, addrs))
}

/// Put `data` in an origin store under `dir/store` as `/a/{cid}/high.ogg`.
pub fn put_object(dir: &std::path::Path, cid: &str, data: &[u8]) {
    let obj = dir.join("store/audio").join(cid);
    std::fs::create_dir_all(&obj).unwrap();
    std::fs::write(obj.join("high.ogg"), data).unwrap();
}

/// An origin process serving `dir/store`.
pub fn spawn_origin(dir: &std::path::Path) -> (Child, SocketAddr) {
    let mut o = segue();
    o.args(["origin", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.join("store"));
    spawn_server(o)
}

pub fn get(url: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let pos = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[pos + 1..]).parse().unwrap();
    body.truncate(pos);
    (code, body)
}

pub fn terminate(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("segue did not exit within 10 s of SIGTERM");
}

/// Sum of a metric's samples in a Prometheus text page (0 when absent).
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    metric_with(addr, name, "")
}

/// Sum of a metric's samples whose line contains `label` (e.g. `status="206"`).
pub fn metric_with(addr: SocketAddr, name: &str, label: &str) -> f64 {
    let (_, page) = get(&format!("http://{addr}/metrics"), &[]);
    metric_in(&page, name, label)
}

/// Sum of a metric's samples whose line contains `label`, in a Prometheus text page.
pub fn metric_in(page: &[u8], name: &str, label: &str) -> f64 {
    String::from_utf8_lossy(page)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An admin API call with curl: status and parsed JSON body.
pub fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c.arg(format!("http://{addr}{path}")).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(json).unwrap_or(serde_json::Value::Null))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An address nothing answers on: a port bound but not listening, so connections are
/// refused, held by the returned socket so no other test's listener can take it (a
/// dropped listener's port could be).
pub fn dead_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = held.local_addr().unwrap();
    (held, addr)
}

pub fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Write a packaging manifest for `cid` into an origin store under `dir/store`.
pub fn put_manifest(dir: &std::path::Path, cid: &str, samples: u64, lufs: f64) {
    let manifest = serde_json::json!({
        "version": 1, "content_id": cid,
        "source": { "sample_rate": 44100, "channels": 2, "samples": samples },
        "loudness": { "integrated_lufs": lufs, "true_peak_dbtp": -1.0 },
        "tiers": {}
    });
    let m = dir.join("store/manifest");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join(format!("{cid}.json")), manifest.to_string()).unwrap();
}

pub fn spawn_app_api(dir: &std::path::Path, database: &str, origin: SocketAddr, extra: &str) -> (Child, SocketAddr) {
    let cfg = dir.join("app.toml");
    let search = dir.join("search");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\norigin = \"http://{origin}\"\n\
             admin_tokens = [\"{APP_ADMIN}\"]\nsearch_dir = \"{}\"\n{extra}\n",
            search.display()
        ),
    )
    .unwrap();
    let mut c = segue();
    c.args(["app-api", "--config"]).arg(&cfg);
    spawn_server(c)
}

pub const APP_ADMIN: &str = "app-admin-token-000000001";

pub const SIGNING_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A running `segue up` with 3 s demo tracks.
pub struct Up {
    /// Its data directory (the app API token, signing key, access log, origin store).
    pub dir: tempfile::TempDir,
    pub up: std::process::Child,
    pub origin: std::net::SocketAddr,
    pub edge: std::net::SocketAddr,
    pub control_plane: std::net::SocketAddr,
    pub app: std::net::SocketAddr,
    /// The app API's admin token, and the file holding it.
    pub token: String,
    pub token_file: std::path::PathBuf,
}

pub fn start_up() -> Up {
    start_up_with(&[])
}

/// `start_up` with more `segue up` flags.
pub fn start_up_with(flags: &[&str]) -> Up {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = segue();
    cmd.args(["up", "--demo-track-secs", "3", "--data-dir"]).arg(dir.path()).args(flags);
    for flag in ["--origin-listen", "--edge-listen", "--control-plane-listen", "--app-api-listen"] {
        cmd.args([flag, "127.0.0.1:0"]);
    }
    let (up, addrs) = spawn_servers(cmd, 4);
    let token_file = dir.path().join("app-api.token");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    Up { up, origin: addrs[0], edge: addrs[1], control_plane: addrs[2], app: addrs[3], token, token_file, dir }
}

/// The demo album's track ids in order, once the app API has the whole demo catalog (the
/// standalone single is added last: a test that reads the catalog's change stamp must not
/// see it move).
pub fn album_ids(app: std::net::SocketAddr, token: &str) -> Vec<String> {
    let mut album = serde_json::Value::Null;
    wait_for("the demo album in the app API", 30, || {
        let (_, single) = admin(app, "GET", "/v1/search?q=standalone&types=track", Some(token), None);
        if single["hits"][0]["id"].as_str().is_none() {
            return false;
        }
        let (_, hits) = admin(app, "GET", "/v1/search?q=continuum&types=track", Some(token), None);
        let Some(id) = hits["hits"][0]["id"].as_str() else { return false };
        let (_, track) = admin(app, "GET", &format!("/v1/tracks/{id}"), Some(token), None);
        album =
            admin(app, "GET", &format!("/v1/albums/{}", track["album"]["id"].as_str().unwrap()), Some(token), None).1;
        album["tracks"].as_array().is_some_and(|t| t.len() == 4)
    });
    album["tracks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

/// The edge's access log in `dir` so far: one JSON object per complete line.
pub fn access_log(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("edge-access.log")).unwrap_or_default();
    text.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Run a client walk in tests/clients/ (`program` is `python3` or `node`) with `env`; its
/// last stdout line is its JSON summary. scripts/test.sh installs what the walks need.
pub fn client_walk(program: &str, script: &str, env: &[(&str, String)]) -> serde_json::Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new(program)
        .arg(dir.join(script))
        .current_dir(&dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed (scripts/test.sh installs what it needs):\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}
pub mod player;

/// A throwaway CA for TLS tests.
pub fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Segue test CA");
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate for `names` signed by `ca`, written as `stem.pem` / `stem.key`.
pub fn leaf_cert(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    names: &[&str],
    dir: &std::path::Path,
    stem: &str,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}
