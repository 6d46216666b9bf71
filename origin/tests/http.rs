//! The origin over real sockets on 127.0.0.1: every range form (also through `curl -r`),
//! conditionals, HEAD, bad input, tokens, metrics and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use segue_core::store::{self, FsStore, ObjectStore};
use segue_core::token::{Claims, Key};
use segue_core::{ContentId, ObjectKey, Tier};
use segue_origin::{Config, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Origin {
    addr: SocketAddr,
    cid: ContentId,
    data: Bytes,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

async fn start(config: Config) -> Origin {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path()).unwrap());
    let cid = ContentId::digest(b"origin-test");
    let data = pattern(1_000_000);
    store::put_bytes(fs.as_ref(), &ObjectKey::audio(&cid, Tier::High), data.clone()).await.unwrap();
    store::put_bytes(fs.as_ref(), &ObjectKey::manifest(&cid), Bytes::from_static(b"{\"version\":1}")).await.unwrap();
    let state = Arc::new(State::with_store(&config, fs).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = segue_origin::server_options(&config);
    let task = tokio::spawn(async move {
        segue_origin::serve(listener, state, opts, async {
            let _ = rx.await;
        })
        .await
    });
    Origin { addr, cid, data, stop: Some(tx), task, _dir: dir }
}

struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn h(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Send one raw request (exactly as given: no normalisation) and read the response to EOF.
async fn raw(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    parse(&buf)
}

fn parse(buf: &[u8]) -> Resp {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("no header end");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp { status, headers, body: buf[split + 4..].to_vec() }
}

/// Split a multipart/byteranges body into (Content-Range, bytes) parts.
fn multipart(resp: &Resp) -> Vec<(String, Vec<u8>)> {
    let ct = resp.h("content-type");
    let boundary = ct.split("boundary=").nth(1).expect("boundary").to_string();
    let delim = format!("\r\n--{boundary}");
    let body = &resp.body;
    let mut parts = Vec::new();
    let mut pos = 0;
    let find = |from: usize, pat: &[u8]| body[from..].windows(pat.len()).position(|w| w == pat).map(|p| p + from);
    while let Some(start) = find(pos, delim.as_bytes()) {
        let after = start + delim.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let head_end = find(after, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&body[after..head_end]).to_string();
        let cr = head.lines().find_map(|l| l.strip_prefix("Content-Range: ")).unwrap().to_string();
        let (_, span) = cr.split_once(' ').unwrap();
        let (range, _) = span.split_once('/').unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let len = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        let data_start = head_end + 4;
        parts.push((cr, body[data_start..data_start + len].to_vec()));
        pos = data_start + len;
    }
    parts
}

fn audio_path(o: &Origin) -> String {
    format!("/a/{}/high.ogg", o.cid)
}

#[tokio::test]
async fn full_get_and_head_carry_validators_and_caching_headers() {
    let o = start(Config::default()).await;
    let r = raw(o.addr, "GET", &audio_path(&o), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, o.data);
    assert_eq!(r.h("content-length"), "1000000");
    assert_eq!(r.h("accept-ranges"), "bytes");
    assert_eq!(r.h("content-type"), "audio/ogg");
    assert_eq!(r.h("cache-control"), "public, max-age=31536000, immutable");
    assert!(r.h("etag").starts_with('"'));
    assert!(!r.h("last-modified").is_empty());
    assert_eq!(r.h("surrogate-key"), format!("{0} {0}/high", o.cid));

    let h = raw(o.addr, "HEAD", &audio_path(&o), &[("Range", "bytes=0-9")]).await;
    assert_eq!(h.status, 200, "Range is defined for GET only");
    assert_eq!(h.h("content-length"), "1000000");
    assert!(h.body.is_empty());
    assert_eq!(h.h("etag"), r.h("etag"));

    let m = raw(o.addr, "GET", &format!("/m/{}.json", o.cid), &[]).await;
    assert_eq!((m.status, m.h("content-type")), (200, "application/json"));
}

#[tokio::test]
async fn single_and_multiple_ranges_are_byte_exact() {
    let o = start(Config::default()).await;
    let d = &o.data;
    for (spec, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=262144-524287", 262_144, 524_287),
        ("bytes=999000-", 999_000, 999_999),
        ("bytes=-500", 999_500, 999_999),
        ("bytes=-2000000", 0, 999_999),
        ("bytes=999990-2000000", 999_990, 999_999),
        ("bytes=0-0", 0, 0),
    ] {
        let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", spec)]).await;
        assert_eq!(r.status, 206, "{spec}");
        assert_eq!(r.h("content-range"), format!("bytes {first}-{last}/1000000"), "{spec}");
        assert_eq!(r.body, &d[first..=last], "{spec}");
    }

    let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", "bytes=500000-500009,0-9,-10")]).await;
    assert_eq!(r.status, 206);
    assert!(r.h("content-type").starts_with("multipart/byteranges; boundary="));
    assert_eq!(r.h("content-length"), r.body.len().to_string());
    let parts = multipart(&r);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], ("bytes 500000-500009/1000000".into(), d[500_000..500_010].to_vec()));
    assert_eq!(parts[1], ("bytes 0-9/1000000".into(), d[0..10].to_vec()));
    assert_eq!(parts[2], ("bytes 999990-999999/1000000".into(), d[999_990..].to_vec()));

    // Overlapping ranges are coalesced, so the body is never larger than the object.
    let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", "bytes=0-99,50-149,200-209")]).await;
    let parts = multipart(&r);
    assert_eq!(
        parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["bytes 0-149/1000000", "bytes 200-209/1000000"]
    );
    assert_eq!(parts[0].1, &d[0..150]);
}

#[tokio::test]
async fn unsatisfiable_and_malformed_ranges() {
    let o = start(Config::default()).await;
    for spec in ["bytes=1000000-", "bytes=2000000-3000000", "bytes=-0"] {
        let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", spec)]).await;
        assert_eq!(r.status, 416, "{spec}");
        assert_eq!(r.h("content-range"), "bytes */1000000");
        assert_eq!(r.json()["error"], "range_not_satisfiable");
    }
    // Malformed or foreign-unit ranges are ignored: the whole object, 200.
    for spec in ["bytes=abc", "bytes=9-1", "pages=1-2", "bytes=1-2-3"] {
        let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", spec)]).await;
        assert_eq!(r.status, 200, "{spec}");
        assert_eq!(r.body.len(), 1_000_000);
    }
}

#[tokio::test]
async fn conditional_requests() {
    let o = start(Config::default()).await;
    let first = raw(o.addr, "HEAD", &audio_path(&o), &[]).await;
    let (etag, lm) = (first.h("etag").to_string(), first.h("last-modified").to_string());

    let r = raw(o.addr, "GET", &audio_path(&o), &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.h("etag"), etag);
    let r = raw(o.addr, "GET", &audio_path(&o), &[("If-Modified-Since", &lm)]).await;
    assert_eq!(r.status, 304);
    let r = raw(o.addr, "GET", &audio_path(&o), &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)]).await;
    assert_eq!(r.status, 200, "If-None-Match takes precedence");
    let r = raw(o.addr, "GET", &audio_path(&o), &[("If-Match", "\"other\"")]).await;
    assert_eq!(r.status, 412);

    let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", "bytes=10-19"), ("If-Range", &etag)]).await;
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", "bytes=10-19"), ("If-Range", &lm)]).await;
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = raw(o.addr, "GET", &audio_path(&o), &[("Range", "bytes=10-19"), ("If-Range", "\"stale\"")]).await;
    assert_eq!((r.status, r.body.len()), (200, 1_000_000));
}

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let o = start(Config::default()).await;
    let c = o.cid;
    for target in [
        "/a/../../etc/passwd".to_string(),
        format!("/a/{c}/%2e%2e/high.ogg"),
        format!("/a/{c}%2Fhigh.ogg"),
        format!("/a/{c}/high.ogg%00"),
        "/seek/./x".to_string(),
    ] {
        let r = raw(o.addr, "GET", &target, &[]).await;
        assert_eq!(r.status, 400, "{target}");
        assert_eq!(r.json()["error"], "bad_path", "{target}");
    }
    for target in
        [format!("/a/{c}/ultra.ogg"), format!("/a/{}/high.ogg", ContentId::digest(b"nope")), "/nothing".into()]
    {
        let r = raw(o.addr, "GET", &target, &[]).await;
        assert_eq!(r.status, 404, "{target}");
        assert_eq!(r.json()["error"], "not_found");
        assert!(r.json()["detail"].as_str().unwrap().contains(&target));
    }
    let r = raw(o.addr, "POST", &audio_path(&o), &[]).await;
    assert_eq!((r.status, r.h("allow")), (405, "GET, HEAD"));
    let huge = "x".repeat(40_000);
    let r = raw(o.addr, "GET", &audio_path(&o), &[("X-Big", &huge)]).await;
    assert_eq!(r.status, 431);
    // Still serving after all of that.
    assert_eq!(raw(o.addr, "GET", "/healthz", &[]).await.status, 200);
}

#[tokio::test]
async fn tokens_when_required() {
    let secret = "00112233445566778899aabbccddeeff";
    let mut config = Config::default();
    config.tokens.required = true;
    config.tokens.keys.insert("k1".into(), secret.into());
    let o = start(config).await;
    let path = audio_path(&o);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let key = Key::from_hex("k1", secret).unwrap();

    let r = raw(o.addr, "GET", &path, &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    let ok = key.sign("GET", &path, &Claims { exp: now + 60, ..Default::default() });
    let r = raw(o.addr, "GET", &format!("{path}?{ok}"), &[("Range", "bytes=0-9")]).await;
    assert_eq!((r.status, r.body.as_slice()), (206, &o.data[..10]));
    let expired = key.sign("GET", &path, &Claims { exp: now - 3600, ..Default::default() });
    let r = raw(o.addr, "GET", &format!("{path}?{expired}"), &[]).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["detail"].as_str().unwrap().contains("expired"));
    let embargo = key.sign("GET", &path, &Claims { exp: now + 7200, nbf: Some(now + 3600), country: None });
    assert_eq!(raw(o.addr, "GET", &format!("{path}?{embargo}"), &[]).await.status, 403);
    let se = key.sign("GET", &path, &Claims { exp: now + 60, nbf: None, country: Some("SE".into()) });
    assert_eq!(raw(o.addr, "GET", &format!("{path}?{se}"), &[("X-Client-Country", "SE")]).await.status, 200);
    assert_eq!(raw(o.addr, "GET", &format!("{path}?{se}"), &[("X-Client-Country", "NO")]).await.status, 403);
    let other_path = key.sign("GET", "/a/other/high.ogg", &Claims { exp: now + 60, ..Default::default() });
    assert_eq!(raw(o.addr, "GET", &format!("{path}?{other_path}"), &[]).await.status, 403);
}

#[tokio::test]
async fn metrics_and_health() {
    let o = start(Config::default()).await;
    raw(o.addr, "GET", &audio_path(&o), &[("Range", "bytes=0-9")]).await;
    let m = raw(o.addr, "GET", "/metrics", &[]).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(text.contains("origin_requests_total{method=\"GET\",status=\"206\",kind=\"content\"}"), "{text}");
    assert!(text.contains("origin_body_bytes_total"));
    assert_eq!(raw(o.addr, "GET", "/healthz", &[]).await.body, b"ok\n");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_bodies() {
    let mut o = start(Config::default()).await;
    let mut s = TcpStream::connect(o.addr).await.unwrap();
    let req = format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", audio_path(&o));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(n > 0);
    o.stop.take().unwrap().send(()).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let mut all = first[..n].to_vec();
    all.extend(rest);
    let r = parse(&all);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, o.data, "the in-flight body completes during shutdown");
    tokio::time::timeout(std::time::Duration::from_secs(10), o.task).await.unwrap().unwrap();
    assert!(TcpStream::connect(o.addr).await.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn curl_range_forms_are_byte_exact() {
    let o = start(Config::default()).await;
    let url = format!("http://{}{}", o.addr, audio_path(&o));
    let d = &o.data;
    for (spec, expect) in
        [("0-99", &d[0..100]), ("999900-", &d[999_900..]), ("-300", &d[999_700..]), ("4096-8191", &d[4096..8192])]
    {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "-r", spec, &url])
            .output()
            .await
            .expect("curl");
        assert!(out.status.success(), "curl -r {spec}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, expect, "curl -r {spec}");
    }
    let out =
        tokio::process::Command::new("curl").args(["-sS", "-i", "-r", "0-9,20-29", &url]).output().await.expect("curl");
    let r = parse(&out.stdout);
    assert_eq!(r.status, 206);
    let parts = multipart(&r);
    assert_eq!(parts.iter().map(|p| p.1.clone()).collect::<Vec<_>>(), vec![d[0..10].to_vec(), d[20..30].to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_serves_ranges_from_s3() {
    use segue_core::store::{S3Settings, S3Store};
    let endpoint = std::env::var("SEGUE_TEST_S3_ENDPOINT")
        .expect("SEGUE_TEST_S3_ENDPOINT is not set: run the suite with scripts/test.sh (it starts an S3 server)");
    let settings = S3Settings {
        endpoint,
        access_key_id: "segue-test".into(),
        secret_access_key: "segue-test-secret".into(),
        ..S3Settings::default()
    };
    let bucket = format!("segue-origin-{}", std::process::id());
    let s3 = S3Store::new(&bucket, "prod", &settings).unwrap();
    s3.client().create_bucket().bucket(&bucket).send().await.unwrap();
    let cid = ContentId::digest(b"s3-origin");
    let data = pattern(600_000);
    store::put_bytes(&s3, &ObjectKey::audio(&cid, Tier::Low), data.clone()).await.unwrap();

    let state = Arc::new(State::with_store(&Config::default(), Arc::new(s3)).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(segue_origin::serve(listener, state, Default::default(), std::future::pending()));
    let path = format!("/a/{cid}/low.ogg");
    let r = raw(addr, "GET", &path, &[("Range", "bytes=100-199,-50")]).await;
    assert_eq!(r.status, 206);
    let parts = multipart(&r);
    assert_eq!(parts[0].1, &data[100..200]);
    assert_eq!(parts[1].1, &data[599_950..]);
    let full = raw(addr, "GET", &path, &[]).await;
    assert_eq!((full.status, full.body.len()), (200, 600_000));
    assert_eq!(full.body, data);
    let etag = full.h("etag").to_string();
    assert_eq!(raw(addr, "GET", &path, &[("If-None-Match", &etag)]).await.status, 304);
    assert_eq!(raw(addr, "GET", &format!("/a/{cid}/high.ogg"), &[]).await.status, 404);
}

/// POST a body with raw headers; returns the parsed response.
async fn post(addr: SocketAddr, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut req =
        format!("POST {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413, 401) before reading the whole body; ignore write errors.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    parse(&buf)
}

fn wav_bytes(secs: u32) -> Vec<u8> {
    let mut cur = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
    let [l, r] = segue_origin::demo::music(2, 0, secs);
    for (a, b) in l.iter().zip(&r) {
        w.write_sample((a * 32_767.0) as i16).unwrap();
        w.write_sample((b * 32_767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    cur.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_upload_with_a_bearer_token() {
    let token = "release-manager-token-0001";
    let mut config = Config::default();
    config.ingest.tokens = vec![token.into()];
    config.ingest.max_master_mb = 1;
    let o = start(config).await;
    let wav = wav_bytes(2);
    let auth = format!("Bearer {token}");

    let r = post(o.addr, "/v1/masters", &[], &wav).await;
    assert_eq!((r.status, r.h("www-authenticate")), (401, "Bearer realm=\"segue-origin\""));
    let r = post(o.addr, "/v1/masters", &[("Authorization", "Bearer wrong-token-xxxxxxxx")], &wav).await;
    assert_eq!(r.status, 401);

    let r = post(o.addr, "/v1/masters", &[("Authorization", &auth), ("X-Filename", "track01.wav")], &wav).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let report = r.json();
    let cid = report["content_id"].as_str().unwrap().to_string();
    assert_eq!(r.h("location"), format!("/m/{cid}.json"));
    assert_eq!(report["tiers"].as_array().unwrap().len(), 5);
    let m = raw(o.addr, "GET", &format!("/m/{cid}.json"), &[]).await;
    assert_eq!(m.status, 200);
    let seg = raw(o.addr, "GET", &format!("/a/{cid}/low.ogg"), &[("Range", "bytes=0-3")]).await;
    assert_eq!((seg.status, seg.body.as_slice()), (206, b"OggS".as_slice()));

    let again = post(o.addr, "/v1/masters", &[("Authorization", &auth)], &wav).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["created"], false);

    let junk = post(o.addr, "/v1/masters", &[("Authorization", &auth), ("X-Filename", "notes.txt")], b"hello").await;
    assert_eq!(junk.status, 422);
    assert_eq!(junk.json()["error"], "bad_master");
    assert!(junk.json()["detail"].as_str().unwrap().contains("notes.txt"));
    let big = vec![0u8; (1 << 20) + 1];
    assert_eq!(post(o.addr, "/v1/masters", &[("Authorization", &auth)], &big).await.status, 413);
    assert_eq!(raw(o.addr, "GET", "/v1/masters", &[]).await.status, 405);
}

#[tokio::test]
async fn uploads_are_off_without_tokens() {
    let o = start(Config::default()).await;
    let r = post(o.addr, "/v1/masters", &[("Authorization", "Bearer anything-at-all-123")], b"RIFF").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["detail"].as_str().unwrap().contains("disabled"));
}
