//! Shared by the edge's integration tests: an origin and an edge on loopback, a scripted
//! upstream (a real HTTP server that counts requests and misbehaves on demand), and a raw
//! HTTP client that shows truncated bodies as they are.
#![allow(dead_code)]

pub mod mmdb;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use segue_core::server::{Body, BoxError};
use segue_core::store::{self, FsStore, ObjectStore};
use segue_core::ObjectKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub const SLICE: u64 = 256 * 1024;

pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8 ^ seed).collect()
}

pub async fn start_edge(upstreams: Vec<String>, tweak: impl FnOnce(&mut segue_edge::Config)) -> SocketAddr {
    start_edge_with_state(upstreams, tweak).await.0
}

pub async fn start_edge_with_state(
    upstreams: Vec<String>,
    tweak: impl FnOnce(&mut segue_edge::Config),
) -> (SocketAddr, Arc<segue_edge::State>) {
    let mut config = segue_edge::Config { upstreams, slice_kib: SLICE / 1024, mem_cache_mb: 64, ..Default::default() };
    config.reader_timeout_secs = 5;
    // Scripted upstreams count every request; health checks are tested on their own.
    config.upstream_probe_secs = 0;
    // These tests exercise the slice engine on any path, and forwarding of any method.
    let all = |prefix: &str, tokens: bool| segue_edge::policy::PathPolicy {
        methods: vec!["*".into()],
        ..segue_edge::policy::PathPolicy::new(prefix, true, tokens)
    };
    config.paths = vec![all("/", false), all("/a/", true), all("/enc/", true)];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The listen address names the POP in Via, as in a real start.
    config.listen = addr;
    tweak(&mut config);
    let state = Arc::new(segue_edge::State::new(&config).await.unwrap());
    tokio::spawn(segue_edge::serve(
        listener,
        state.clone(),
        segue_edge::server_options(&config),
        std::future::pending(),
    ));
    (addr, state)
}

pub async fn start_origin(objects: &[(ObjectKey, Bytes)]) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path()).unwrap());
    for (k, d) in objects {
        store::put_bytes(fs.as_ref(), k, d.clone()).await.unwrap();
    }
    let config = segue_origin::Config::default();
    let state = Arc::new(segue_origin::State::with_store(&config, fs).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(segue_origin::serve(listener, state, Default::default(), std::future::pending()));
    (addr, dir)
}

/// How the scripted upstream misbehaves on the next requests.
#[derive(Default)]
pub struct Script {
    /// Send this many bytes of each body, then wait for the notify.
    pub stall_after: Option<(usize, Arc<Notify>)>,
    /// Send this many bytes of each body, then abort the connection.
    pub die_after: Option<usize>,
    /// Random misbehaviour: (seed, chance to die mid-body, chance to stall mid-body).
    pub chaos: Option<(u64, f64, f64)>,
    /// Stall only the next request (with `stall_after`), not every one.
    pub stall_once: bool,
    /// Serve these bytes with this ETag instead of the object (a new version upstream).
    pub replace: Option<(Bytes, String)>,
    /// Wait this long before each 16 KiB chunk (a slow but steady upstream).
    pub pace: Option<std::time::Duration>,
    /// Worse misbehaviour, per request by chance: stall forever mid-body, ignore Range
    /// (a 200 with the whole body), send no Content-Length, serve another version.
    pub faults: Option<Faults>,
    requests_seen: u64,
}

#[derive(Clone)]
pub struct Faults {
    pub seed: u64,
    pub stall_forever: f64,
    pub ignore_range: f64,
    pub no_length: f64,
    /// Another version of every object (same length, ETag "v2") and the chance of it.
    pub other_version: Option<(Bytes, f64)>,
}

pub struct Scripted {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<HashMap<String, usize>>>,
    /// Responses sent whole, per Range header.
    pub clean: Arc<Mutex<HashMap<String, usize>>>,
    pub script: Arc<Mutex<Script>>,
    /// Most requests in flight at once (head sent, body not yet ended or dropped).
    pub peak: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a request in flight until dropped (with its response body).
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Scripted {
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().values().sum()
    }
    pub fn max_per_range(&self) -> usize {
        self.requests.lock().unwrap().values().copied().max().unwrap_or(0)
    }
}

pub async fn start_scripted(data: Bytes) -> Scripted {
    start_scripted_objects(HashMap::new(), data).await
}

/// A scripted upstream serving `objects` by path, `fallback` for any other path.
pub async fn start_scripted_objects(objects: HashMap<String, Bytes>, fallback: Bytes) -> Scripted {
    let requests: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let clean: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let script: Arc<Mutex<Script>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (rq, cl, sc) = (requests.clone(), clean.clone(), script.clone());
    let (active, peak): (Arc<std::sync::atomic::AtomicUsize>, Arc<std::sync::atomic::AtomicUsize>) = Default::default();
    let peak2 = peak.clone();
    let objects = Arc::new(objects);
    tokio::spawn(segue_core::server::serve(
        listener,
        Default::default(),
        move |req, _| {
            let (rq, cl, sc, objects, fallback) =
                (rq.clone(), cl.clone(), sc.clone(), objects.clone(), fallback.clone());
            let now = active.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            peak2.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            let in_flight = InFlight(active.clone());
            async move {
                let (replaced, faults, seen) = {
                    let s = sc.lock().unwrap();
                    (s.replace.clone(), s.faults.clone(), s.requests_seen)
                };
                let mut fault_rng = faults.as_ref().map(|f| {
                    use rand::SeedableRng;
                    rand::rngs::SmallRng::seed_from_u64(f.seed ^ seen.wrapping_mul(0x2545_F491_4F6C_DD1D))
                });
                let mut roll = |p: f64| {
                    use rand::Rng;
                    fault_rng.as_mut().is_some_and(|r| r.random_bool(p.clamp(0.0, 1.0)))
                };
                let (mut data, mut etag) = match replaced {
                    Some((d, e)) => (d, e),
                    None => (objects.get(req.uri().path()).cloned().unwrap_or(fallback), "v1".to_string()),
                };
                let f = faults.clone().unwrap_or(Faults {
                    seed: 0,
                    stall_forever: 0.0,
                    ignore_range: 0.0,
                    no_length: 0.0,
                    other_version: None,
                });
                if let Some((other, p)) = &f.other_version {
                    if roll(*p) && other.len() == data.len() {
                        (data, etag) = (other.clone(), "v2".to_string());
                    }
                }
                let (forever, whole, unsized_) = (roll(f.stall_forever), roll(f.ignore_range), roll(f.no_length));
                let mut range =
                    req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let asked = range.clone();
                if whole {
                    range.clear();
                }
                let tag = format!("{} {asked}", req.uri().path());
                *rq.lock().unwrap().entry(tag.clone()).or_default() += 1;
                let len = data.len() as u64;
                let (first, last) = range
                    .strip_prefix("bytes=")
                    .and_then(|r| r.split_once('-'))
                    .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap().min(len - 1)))
                    .unwrap_or((0, len - 1));
                let body = data.slice(first as usize..=last as usize);
                let (stall, mut die, chaos_stall) = {
                    let mut s = sc.lock().unwrap();
                    s.requests_seen += 1;
                    let mut chaos_stall = None;
                    let mut die = s.die_after;
                    if let Some((seed, p_die, p_stall)) = s.chaos {
                        use rand::{Rng, SeedableRng};
                        let mut rng =
                            rand::rngs::SmallRng::seed_from_u64(seed ^ s.requests_seen.wrapping_mul(0x9E37_79B9));
                        let roll: f64 = rng.random();
                        if roll < p_die {
                            die = Some(rng.random_range(0..body.len()));
                        } else if roll < p_die + p_stall {
                            chaos_stall = Some((rng.random_range(0..body.len()), rng.random_range(20..300u64)));
                        }
                    }
                    let stall = s.stall_after.clone();
                    if s.stall_once {
                        s.stall_after = None;
                    }
                    (stall, die, (chaos_stall, s.pace))
                };
                let (chaos_stall, pace) = chaos_stall;
                const CHUNK: usize = 16 * 1024;
                let chunks: Vec<Bytes> =
                    (0..body.len()).step_by(CHUNK).map(|i| body.slice(i..(i + CHUNK).min(body.len()))).collect();
                let n = chunks.len();
                if die.is_some_and(|d| d >= body.len()) {
                    die = None;
                }
                let forever_at = forever.then_some(n / 2);
                let stream = futures_util::stream::iter(chunks).enumerate().then(move |(i, c)| {
                    let _in_flight = &in_flight;
                    let (stall, cl, tag) = (stall.clone(), cl.clone(), tag.clone());
                    async move {
                        if let Some(p) = pace {
                            tokio::time::sleep(p).await;
                        }
                        let sent = i * CHUNK;
                        if let Some(limit) = die {
                            if sent + c.len() > limit {
                                return Err::<Frame<Bytes>, BoxError>("scripted upstream death".into());
                            }
                        }
                        if let Some((limit, n)) = stall {
                            if sent >= limit && sent < limit + CHUNK {
                                n.notified().await;
                            }
                        }
                        if forever_at == Some(i) {
                            std::future::pending::<()>().await;
                        }
                        if let Some((at, ms)) = chaos_stall {
                            if sent <= at && at < sent + CHUNK {
                                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            }
                        }
                        if i + 1 == n {
                            *cl.lock().unwrap().entry(tag).or_default() += 1;
                        }
                        Ok(Frame::data(c))
                    }
                });
                let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)) as Body);
                *r.status_mut() = if whole { StatusCode::OK } else { StatusCode::PARTIAL_CONTENT };
                let h = r.headers_mut();
                if !whole {
                    h.insert(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}").parse().unwrap());
                }
                if !unsized_ {
                    h.insert(header::CONTENT_LENGTH, (last - first + 1).into());
                }
                h.insert(header::ETAG, format!("\"{etag}\"").parse().unwrap());
                h.insert(header::CONTENT_TYPE, "audio/ogg".parse().unwrap());
                h.insert(header::CACHE_CONTROL, "max-age=3600".parse().unwrap());
                r
            }
        },
        std::future::pending(),
    ));
    Scripted { addr, requests, clean, script, peak }
}

pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn h(&self, n: &str) -> &str {
        self.headers.get(n).map(String::as_str).unwrap_or("")
    }
}

pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", target, headers, b"").await
}

/// One request on a fresh connection; a non-empty `body` is sent with its Content-Length.
pub async fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await; // an aborted body ends in a reset
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp { status, headers, body: buf[split + 4..].to_vec() }
}
