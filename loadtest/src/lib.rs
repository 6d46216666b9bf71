//! The Segue load generator: keep-alive connections over HTTP/1.1, HTTP/1.1+TLS, HTTP/2
//! or HTTP/3 (`segue_core::client`) driving a request mix (Zipf-popular objects, random
//! byte ranges or whole files) for a duration or a count, or a storm (open N
//! connections, then fire N requests at once). HTTP/2 and HTTP/3 connections can carry
//! several concurrent streams each. Latencies are kept exactly and reported as
//! percentiles.
//!
//! A second scenario (`plays`) posts batches of play events to the app API.
//!
//! Bodies are read and discarded as they arrive, so one core of the generator can push
//! more than the server under test.

#![forbid(unsafe_code)]

pub mod plays;
pub mod scenario;
pub mod sim;
pub mod svg;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use segue_core::client::{Connection, Connector, Protocol};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad target {0:?}: expected http://host:port or https://host:port")]
    BadTarget(String),
    #[error("{0}")]
    Usage(String),
    #[error("no paths to request")]
    NoPaths,
    #[error("{path}: cannot learn its size: {detail}")]
    Probe { path: String, detail: String },
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
}

/// What each request asks for.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mix {
    /// A random range of `range_bytes` (aligned to its size) of the chosen object.
    Ranges,
    /// The whole chosen object.
    Whole,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Where, and over which protocol.
    pub target: Connector,
    /// Paths to request, most popular first (Zipf rank order).
    pub paths: Vec<String>,
    pub mix: Mix,
    pub range_bytes: u64,
    /// Zipf exponent over `paths` (0 = uniform).
    pub zipf: f64,
    pub connections: usize,
    /// Concurrent requests per connection (HTTP/2 and HTTP/3; 1 for HTTP/1.1).
    pub streams: usize,
    /// Run for this long (ignored when `requests` is set or in storm mode).
    pub duration: Duration,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// Storm: open `connections` connections, then send one request on each at once.
    pub storm: bool,
    pub seed: u64,
    /// Write every request (`path first last`, inclusive, one per line) here.
    pub trace: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub protocol: String,
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub mb_per_sec: f64,
    /// Time to the last body byte, milliseconds.
    pub latency_ms: Percentiles,
    /// Time to the response head, milliseconds.
    pub ttfb_ms: Percentiles,
    /// Status code -> count.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Complete responses the server says it answered from its cache (`X-Cache` starting
    /// with `HIT`; every peer in the benchmarks is set up to send it), and their bytes.
    pub hits: u64,
    pub hit_bytes: u64,
    /// hits / complete responses, and hit bytes / bytes.
    pub request_hit_ratio: f64,
    pub byte_hit_ratio: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Exact percentiles (nearest rank) of microsecond samples.
    pub(crate) fn of(mut us: Vec<u64>) -> Self {
        if us.is_empty() {
            return Percentiles::default();
        }
        us.sort_unstable();
        let at = |q: f64| us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1] as f64 / 1000.0;
        Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99), p999: at(0.999), max: at(1.0) }
    }
}

impl Report {
    /// A small fixed-width table for humans.
    pub fn table(&self) -> String {
        let l = &self.latency_ms;
        let t = &self.ttfb_ms;
        format!(
            "{}: requests {}  errors {}  in {:.2} s\nthroughput {:.1} req/s  {:.1} MB/s\n\
             latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n\
             ttfb ms     p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\nstatuses {:?}\n\
             cache hits (X-Cache: HIT...) {} of requests ({:.3}), {:.3} of bytes",
            self.protocol,
            self.requests,
            self.errors,
            self.seconds,
            self.requests_per_sec,
            self.mb_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            t.p50,
            t.p90,
            t.p99,
            t.p999,
            t.max,
            self.statuses,
            self.hits,
            self.request_hit_ratio,
            self.byte_hit_ratio
        )
    }
}

/// Build the connector for `url` (`http://host:port` for plain HTTP/1.1, `https://host:port`
/// for the TLS protocols). The host is resolved once; the TLS name is `server_name` or
/// the URL's host, trusted through the CA certificates in `ca_pem`.
pub fn target(
    url: &str,
    protocol: Protocol,
    server_name: Option<&str>,
    ca_pem: Option<&Path>,
) -> Result<Connector, Error> {
    let bad = || Error::BadTarget(url.into());
    let (tls, rest) = match url.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        _ => return Err(bad()),
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') || hostport.is_empty() {
        return Err(bad());
    }
    if tls != protocol.uses_tls() {
        return Err(Error::Usage(format!(
            "protocol {protocol} needs an {} target, got {url:?}",
            if protocol.uses_tls() { "https://" } else { "http://" }
        )));
    }
    let addr = hostport.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h).trim_matches(['[', ']']);
    let name = server_name.unwrap_or(host);
    let roots = match (protocol.uses_tls(), ca_pem) {
        (false, _) => None,
        (true, Some(p)) => Some(segue_core::client::roots_from_pem(p).map_err(|e| Error::Usage(e.to_string()))?),
        (true, None) => return Err(Error::Usage("TLS targets need --ca FILE (the CA certificates to trust)".into())),
    };
    Connector::new(protocol, addr, name, roots).map_err(|e| Error::Usage(e.to_string()))
}

pub(crate) async fn connect(target: &Connector) -> Result<Connection, Error> {
    target.connect().await.map_err(|e| Error::Connect(target.addr(), e.to_string()))
}

struct Sample {
    status: u16,
    ok: bool,
    hit: bool,
    bytes: u64,
    total_us: u64,
    ttfb_us: u64,
}

/// Send one GET and read its body to the end, checking it is complete.
async fn one(conn: &mut Connection, path: &str, range: Option<(u64, u64)>) -> Result<Sample, ()> {
    let mut req = Request::get(path);
    if let Some((a, b)) = range {
        req = req.header(header::RANGE, format!("bytes={a}-{b}"));
    }
    let req = req.body(()).map_err(|_| ())?;
    let start = Instant::now();
    let resp = conn.send(req).await.map_err(|_| ())?;
    let ttfb = start.elapsed();
    let status = resp.status();
    let hit = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() >= 3 && v[..3].eq_ignore_ascii_case("hit"));
    let expected: Option<u64> =
        resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => return Err(()),
        }
    }
    let ok = matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) && expected.is_none_or(|n| n == bytes);
    Ok(Sample {
        status: status.as_u16(),
        ok,
        hit,
        bytes,
        total_us: start.elapsed().as_micros() as u64,
        ttfb_us: ttfb.as_micros() as u64,
    })
}

/// Learn each path's size with a HEAD (ranges need it).
async fn sizes(target: &Connector, paths: &[String]) -> Result<Vec<u64>, Error> {
    let mut conn = connect(target).await?;
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let probe = |detail: String| Error::Probe { path: p.clone(), detail };
        let req = Request::head(p.as_str()).body(()).map_err(|e| probe(e.to_string()))?;
        let resp = conn.send(req).await.map_err(|e| probe(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(probe(format!("HEAD answered {}", resp.status())));
        }
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| probe("no Content-Length".into()))?;
        out.push(len);
    }
    Ok(out)
}

/// The wall clock, Unix ms (play events and release times are stamped with it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Cumulative Zipf weights over `n` ranks.
pub(crate) fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(s);
            acc
        })
        .collect();
    let total = acc.max(f64::MIN_POSITIVE);
    for c in &mut cdf {
        *c /= total;
    }
    cdf
}

struct Plan {
    target: Connector,
    paths: Vec<String>,
    sizes: Vec<u64>,
    cdf: Vec<f64>,
    mix: Mix,
    range: u64,
}

impl Plan {
    fn pick(&self, rng: &mut SmallRng) -> (&str, Option<(u64, u64)>) {
        let u: f64 = rng.random();
        let i = self.cdf.partition_point(|&c| c < u).min(self.paths.len() - 1);
        let len = self.sizes[i];
        let range = match self.mix {
            Mix::Whole => None,
            Mix::Ranges if len == 0 => None,
            Mix::Ranges => {
                let slots = len.div_ceil(self.range).max(1);
                let first = rng.random_range(0..slots) * self.range;
                Some((first, (first + self.range).min(len) - 1))
            }
        };
        (&self.paths[i], range)
    }
}

/// Run the load described by `opts`.
pub async fn run(opts: Options) -> Result<Report, Error> {
    if opts.paths.is_empty() {
        return Err(Error::NoPaths);
    }
    let streams = opts.streams.max(1);
    if streams > 1 && !opts.target.protocol().multiplexes() {
        return Err(Error::Usage(format!(
            "{} carries one request at a time: --streams must be 1",
            opts.target.protocol()
        )));
    }
    let sizes = sizes(&opts.target, &opts.paths).await?;
    let plan = Arc::new(Plan {
        target: opts.target.clone(),
        cdf: zipf_cdf(opts.paths.len(), opts.zipf),
        paths: opts.paths.clone(),
        sizes,
        mix: opts.mix,
        range: opts.range_bytes.max(1),
    });

    // Connect everything first, so a storm's requests leave together.
    let mut conns = Vec::with_capacity(opts.connections * streams);
    for _ in 0..opts.connections.max(1) {
        let conn = connect(&opts.target).await?;
        for _ in 1..streams {
            conns.extend(conn.share());
        }
        conns.push(conn);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(conns.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(opts.requests.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (plan, barrier, stop, budget) = (plan.clone(), barrier.clone(), stop.clone(), budget.clone());
        let (storm, seed) = (opts.storm, opts.seed.wrapping_add(i as u64 * 0x9E37_79B9));
        let tracing = opts.trace.is_some();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut samples = Vec::new();
            let mut traced: Vec<(u64, String)> = Vec::new();
            barrier.wait().await;
            loop {
                if stop.load(Ordering::Relaxed)
                    || budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err()
                {
                    break;
                }
                let (path, range) = plan.pick(&mut rng);
                match one(&mut conn, path, range).await {
                    Ok(s) => {
                        if tracing {
                            let (a, b) = range.unwrap_or((0, s.bytes.saturating_sub(1)));
                            let at = started.elapsed().as_micros() as u64 - s.total_us;
                            traced.push((at, format!("{path} {a} {b}")));
                        }
                        samples.push(s)
                    }
                    Err(()) => {
                        samples.push(Sample { status: 0, ok: false, hit: false, bytes: 0, total_us: 0, ttfb_us: 0 });
                        // The connection is unusable after a failed exchange: reconnect.
                        match connect(&plan.target).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
                if storm {
                    break;
                }
            }
            (samples, traced)
        }));
    }
    if !opts.storm && opts.requests.is_none() {
        tokio::time::sleep(opts.duration).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    let mut traced = Vec::new();
    for t in tasks {
        let (samples, lines) = t.await.unwrap_or_default();
        all.extend(samples);
        traced.extend(lines);
    }
    if let Some(file) = &opts.trace {
        // In the order the requests were sent.
        traced.sort_unstable();
        let text: String = traced.into_iter().map(|(_, l)| l + "\n").collect();
        std::fs::write(file, text).map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut statuses = std::collections::BTreeMap::new();
    let (mut bytes, mut errors, mut hits, mut hit_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut lat = Vec::with_capacity(all.len());
    let mut ttfb = Vec::with_capacity(all.len());
    for s in &all {
        *statuses.entry(s.status).or_insert(0) += 1;
        if s.ok {
            bytes += s.bytes;
            if s.hit {
                hits += 1;
                hit_bytes += s.bytes;
            }
            lat.push(s.total_us);
            ttfb.push(s.ttfb_us);
        } else {
            errors += 1;
        }
    }
    Ok(Report {
        protocol: opts.target.protocol().to_string(),
        requests: all.len() as u64,
        errors,
        bytes,
        seconds: secs,
        requests_per_sec: lat.len() as f64 / secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
        latency_ms: Percentiles::of(lat),
        ttfb_ms: Percentiles::of(ttfb),
        statuses,
        hits,
        hit_bytes,
        request_hit_ratio: hits as f64 / (all.len() as u64 - errors).max(1) as f64,
        byte_hit_ratio: hit_bytes as f64 / bytes.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_nearest_rank() {
        let p = Percentiles::of((1..=1000).map(|i| i * 1000).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.p999, p.max), (500.0, 900.0, 990.0, 999.0, 1000.0));
        assert_eq!(Percentiles::of(vec![7000]).p50, 7.0);
        assert_eq!(Percentiles::of(vec![]).max, 0.0);
    }

    #[test]
    fn zipf_favours_the_first_ranks() {
        let cdf = zipf_cdf(1000, 0.9);
        assert!((cdf[999] - 1.0).abs() < 1e-9);
        assert!(cdf.windows(2).all(|w| w[0] < w[1]));
        assert!(cdf[9] > 0.2, "top 10 of 1000 get a fifth of requests at s=0.9: {}", cdf[9]);
        let uniform = zipf_cdf(4, 0.0);
        assert!((uniform[1] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn targets_parse() {
        let h1 = |url| target(url, Protocol::Http1, None, None);
        assert_eq!(h1("http://127.0.0.1:8080").unwrap().addr(), "127.0.0.1:8080".parse().unwrap());
        assert!(h1("http://127.0.0.1:8080/").is_ok());
        assert!(h1("http://localhost:8080").is_ok());
        assert!(matches!(h1("https://127.0.0.1:8080"), Err(Error::Usage(_))));
        assert!(matches!(h1("127.0.0.1"), Err(Error::BadTarget(_))));
        assert!(matches!(h1("http://127.0.0.1:8080/x"), Err(Error::BadTarget(_))));
        // TLS without a CA to trust is refused with a clear message.
        let e = target("https://localhost:8443", Protocol::Http2, None, None).unwrap_err();
        assert!(e.to_string().contains("--ca"), "{e}");
    }
}
