//! Helpers for tests of `segue play` against a real stack: the player as a process,
//! faulty POPs in front of the real edge, another app API on the same catalog.

use super::*;

/// SNR in dB of `got` against `want` with `got` shifted by `shift` samples per channel.
pub fn snr_db(want: &[i16], got: &[i16], channels: usize, shift: isize) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    let frames = want.len() / channels;
    for f in 64..frames - 64 {
        let g = (f as isize + shift) as usize;
        for c in 0..channels {
            let w = f64::from(want[f * channels + c]);
            let d = f64::from(got[g * channels + c]);
            signal += w * w;
            noise += (w - d) * (w - d);
        }
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// `segue play` of `tracks` into `out` as a listener in SE, with `extra` flags: its JSON
/// report (the run must succeed).
pub fn play(
    app: std::net::SocketAddr,
    token_file: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
    tracks: &[String],
) -> serde_json::Value {
    let run = segue()
        .args(["play", "--app-api", &format!("http://{app}"), "--country", "SE", "--json", "--token-file"])
        .arg(token_file)
        .env("SEGUE_OUTBOX", out.parent().unwrap().join("outbox"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .args(tracks)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap()
}

/// The samples of a 16-bit WAV file, interleaved.
pub fn wav_samples(path: &std::path::Path) -> Vec<i16> {
    hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect()
}

/// Another app API, `name`, on `segue up`'s catalog (same database and signing key) whose
/// POPs are `pops`, in order: the process and its address.
pub fn app_api_with_pops(
    dir: &std::path::Path,
    name: &str,
    origin: std::net::SocketAddr,
    pops: &[String],
) -> (std::process::Child, std::net::SocketAddr) {
    let token = std::fs::read_to_string(dir.join("app-api.token")).unwrap();
    let key = std::fs::read_to_string(dir.join("signing.key")).unwrap();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"sqlite://{}\"\nsearch_dir = \"{}\"\norigin = \"http://{origin}\"\n\
             admin_tokens = [\"{}\"]\nfallback_pops = {pops:?}\n[signing]\nkid = \"up\"\nsecret_hex = \"{}\"\n",
            dir.join("app-api.db").display(),
            dir.join(format!("search-{name}")).display(),
            token.trim(),
            key.trim()
        ),
    )
    .unwrap();
    let mut c = segue();
    c.args(["app-api", "--config"]).arg(&cfg);
    spawn_server(c)
}

/// How a faulty POP misbehaves (a TCP proxy in front of the real edge).
#[derive(Clone)]
pub enum Fault {
    /// Hold every request whose head contains the text for so many seconds.
    StallRequest(String, f64),
    /// Pass this many bytes of each answer, then close the connection.
    CutAfter(u64),
    /// Pass this many bytes of each answer, wait so many seconds, then the rest.
    PauseAfter(u64, f64),
    /// Pass answers at this many bytes a second.
    Throttle(u64),
    /// One link for every connection: answers share this many bytes a second while the
    /// flag is set, and pass at full speed once it is cleared (the network recovers).
    Link(u64, std::sync::Arc<std::sync::atomic::AtomicBool>),
}

/// A TCP proxy in front of `upstream` with `fault`: its address. It carries one request
/// per connection (it asks the edge to close after answering), so every request of a
/// player that keeps connections alive still meets the fault.
pub fn faulty_pop(upstream: std::net::SocketAddr, fault: Fault) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // When the shared link is next free.
    let link = std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let (fault, link) = (fault.clone(), link.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                if let Fault::StallRequest(text, secs) = &fault {
                    if String::from_utf8_lossy(&head).contains(text.as_str()) {
                        std::thread::sleep(std::time::Duration::from_secs_f64(*secs));
                    }
                }
                let Ok(mut up) = std::net::TcpStream::connect(upstream) else { return };
                head.truncate(head.len().saturating_sub(2));
                head.extend_from_slice(b"Connection: close\r\n\r\n");
                let _ = up.write_all(&head);
                let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                });
                match fault {
                    Fault::StallRequest(..) => {
                        let _ = std::io::copy(&mut up, &mut client);
                    }
                    Fault::CutAfter(limit) => {
                        let _ = std::io::copy(&mut (&mut up).take(limit), &mut client);
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = up.shutdown(std::net::Shutdown::Both);
                    }
                    Fault::Throttle(rate) => {
                        let mut piece = vec![0u8; 1024];
                        while let Ok(n @ 1..) = up.read(&mut piece) {
                            if client.write_all(&piece[..n]).is_err() {
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64));
                        }
                    }
                    Fault::Link(rate, slow) => {
                        let mut piece = vec![0u8; 1024];
                        while let Ok(n @ 1..) = up.read(&mut piece) {
                            if slow.load(std::sync::atomic::Ordering::SeqCst) {
                                let due = {
                                    let mut free = link.lock().unwrap();
                                    let start = (*free).max(std::time::Instant::now());
                                    *free = start + std::time::Duration::from_secs_f64(n as f64 / rate as f64);
                                    *free
                                };
                                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                            }
                            if client.write_all(&piece[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    Fault::PauseAfter(limit, secs) => {
                        let _ = std::io::copy(&mut (&mut up).take(limit), &mut client);
                        let _ = client.flush();
                        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
                        let _ = std::io::copy(&mut up, &mut client);
                    }
                }
            });
        }
    });
    addr
}

/// A 130 s track (13 s of the demo music, ten times over), packaged into `segue up`'s
/// origin by `segue ingest` and added to the catalog with rights in SE: its id.
pub fn long_track(dir: &std::path::Path, app: std::net::SocketAddr, token: &str) -> String {
    let [l, r] = segue_origin::demo::music(3, 0, 13);
    let wav = dir.join("long.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for _ in 0..10 {
        for i in 0..l.len() {
            w.write_sample((l[i] * 32767.0).round() as i16).unwrap();
            w.write_sample((r[i] * 32767.0).round() as i16).unwrap();
        }
    }
    w.finalize().unwrap();
    let run = segue().args(["ingest", "--json", "--data-dir"]).arg(dir.join("origin")).arg(&wav).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let line = String::from_utf8_lossy(&run.stdout).lines().next().unwrap().to_owned();
    let packaged: serde_json::Value = serde_json::from_str(&line).unwrap();
    let body = serde_json::json!({
        "content_id": packaged["content_id"], "title": "Long Form", "artists": ["Segue Demo"],
        "album": "Long Form", "track_number": 1,
    });
    let (code, track) = admin(app, "POST", "/v1/admin/tracks", Some(token), Some(&body.to_string()));
    assert_eq!(code, 201, "{track}");
    let id = track["id"].as_str().unwrap().to_owned();
    let (code, v) =
        admin(app, "PUT", &format!("/v1/admin/tracks/{id}/rights"), Some(token), Some(r#"{"countries":["SE"]}"#));
    assert_eq!(code, 200, "{v}");
    id
}

/// An edge in front of `origin` with a TLS listener (a certificate for 127.0.0.1 from a
/// throwaway CA) that requires `segue up`'s signed URLs and places loopback listeners in
/// SE: the process, its `https://` base URL and the CA's PEM file.
pub fn tls_edge(dir: &std::path::Path, origin: std::net::SocketAddr) -> (std::process::Child, String, String) {
    let ca = test_ca();
    let ca_pem = dir.join("tls-ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    leaf_cert(&ca, &["127.0.0.1"], dir, "tls-edge");
    let key = std::fs::read_to_string(dir.join("signing.key")).unwrap();
    let cfg = dir.join("tls-edge.toml");
    let d = dir.display();
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\nupstreams = [\"http://{origin}\"]\n\
             unknown_country = \"SE\"\n\
             [[tls_certs]]\ncert = \"{d}/tls-edge.pem\"\nkey = \"{d}/tls-edge.key\"\nnames = [\"127.0.0.1\"]\n\
             [tokens]\nrequired = true\n[tokens.keys]\nup = \"{}\"\n",
            key.trim()
        ),
    )
    .unwrap();
    let mut e = segue();
    e.args(["edge", "--config"]).arg(&cfg);
    let (child, addrs) = spawn_servers(e, 2);
    (child, format!("https://127.0.0.1:{}", addrs[1].port()), ca_pem.display().to_string())
}
