//! The Segue load generator: HTTP/1.1 keep-alive connections driving a request mix
//! (Zipf-popular objects, random byte ranges or whole files) for a duration or a count,
//! or a storm (open N connections, then fire N requests at once). Latencies are kept
//! exactly and reported as percentiles.
//!
//! Bodies are read and discarded in large chunks (a 256 KiB read buffer), so one core of
//! the generator can push more than the server under test.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad target {0:?}: expected http://host:port")]
    BadTarget(String),
    #[error("no paths to request")]
    NoPaths,
    #[error("{path}: cannot learn its size: {detail}")]
    Probe { path: String, detail: String },
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
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
    pub target: SocketAddr,
    /// Paths to request, most popular first (Zipf rank order).
    pub paths: Vec<String>,
    pub mix: Mix,
    pub range_bytes: u64,
    /// Zipf exponent over `paths` (0 = uniform).
    pub zipf: f64,
    pub connections: usize,
    /// Run for this long (ignored when `requests` is set or in storm mode).
    pub duration: Duration,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// Storm: open `connections` connections, then send one request on each at once.
    pub storm: bool,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
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
    fn of(mut us: Vec<u64>) -> Self {
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
            "requests {}  errors {}  in {:.2} s\nthroughput {:.1} req/s  {:.1} MB/s\n\
             latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n\
             ttfb ms     p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\nstatuses {:?}",
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
            self.statuses
        )
    }
}

/// Parse `http://host:port` (no path) into a socket address.
pub fn parse_target(url: &str) -> Result<SocketAddr, Error> {
    let rest = url.strip_prefix("http://").ok_or_else(|| Error::BadTarget(url.into()))?;
    rest.trim_end_matches('/').parse().map_err(|_| Error::BadTarget(url.into()))
}

type Conn = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(target: SocketAddr) -> Result<Conn, Error> {
    let stream = tokio::net::TcpStream::connect(target).await.map_err(|e| Error::Connect(target, e))?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .read_buf_exact_size(Some(256 * 1024))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Connect(target, std::io::Error::other(e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

struct Sample {
    status: u16,
    ok: bool,
    bytes: u64,
    total_us: u64,
    ttfb_us: u64,
}

/// Send one GET and read its body to the end, checking it is complete.
async fn one(conn: &mut Conn, path: &str, range: Option<(u64, u64)>) -> Result<Sample, ()> {
    let mut req = Request::get(path).header(header::HOST, "loadtest");
    if let Some((a, b)) = range {
        req = req.header(header::RANGE, format!("bytes={a}-{b}"));
    }
    let req = req.body(Empty::new()).map_err(|_| ())?;
    conn.ready().await.map_err(|_| ())?;
    let start = Instant::now();
    let resp = conn.send_request(req).await.map_err(|_| ())?;
    let ttfb = start.elapsed();
    let status = resp.status();
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
        bytes,
        total_us: start.elapsed().as_micros() as u64,
        ttfb_us: ttfb.as_micros() as u64,
    })
}

/// Learn each path's size with a HEAD (ranges need it).
async fn sizes(target: SocketAddr, paths: &[String]) -> Result<Vec<u64>, Error> {
    let mut conn = connect(target).await?;
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let probe = |detail: String| Error::Probe { path: p.clone(), detail };
        let req = Request::head(p.as_str())
            .header(header::HOST, "loadtest")
            .body(Empty::<Bytes>::new())
            .map_err(|e| probe(e.to_string()))?;
        conn.ready().await.map_err(|e| probe(e.to_string()))?;
        let resp = conn.send_request(req).await.map_err(|e| probe(e.to_string()))?;
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

/// Cumulative Zipf weights over `n` ranks.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
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
    target: SocketAddr,
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
    let sizes = sizes(opts.target, &opts.paths).await?;
    let plan = Arc::new(Plan {
        target: opts.target,
        cdf: zipf_cdf(opts.paths.len(), opts.zipf),
        paths: opts.paths.clone(),
        sizes,
        mix: opts.mix,
        range: opts.range_bytes.max(1),
    });

    // Connect everything first, so a storm's requests leave together.
    let mut conns = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections.max(1) {
        conns.push(connect(opts.target).await?);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(conns.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(opts.requests.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (plan, barrier, stop, budget) = (plan.clone(), barrier.clone(), stop.clone(), budget.clone());
        let (storm, seed) = (opts.storm, opts.seed.wrapping_add(i as u64 * 0x9E37_79B9));
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut samples = Vec::new();
            barrier.wait().await;
            loop {
                if stop.load(Ordering::Relaxed)
                    || budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err()
                {
                    break;
                }
                let (path, range) = plan.pick(&mut rng);
                match one(&mut conn, path, range).await {
                    Ok(s) => samples.push(s),
                    Err(()) => {
                        samples.push(Sample { status: 0, ok: false, bytes: 0, total_us: 0, ttfb_us: 0 });
                        // The connection is unusable after a failed exchange: reconnect.
                        match connect(plan.target).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
                if storm {
                    break;
                }
            }
            samples
        }));
    }
    if !opts.storm && opts.requests.is_none() {
        tokio::time::sleep(opts.duration).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut statuses = std::collections::BTreeMap::new();
    let (mut bytes, mut errors) = (0u64, 0u64);
    let mut lat = Vec::with_capacity(all.len());
    let mut ttfb = Vec::with_capacity(all.len());
    for s in &all {
        *statuses.entry(s.status).or_insert(0) += 1;
        if s.ok {
            bytes += s.bytes;
            lat.push(s.total_us);
            ttfb.push(s.ttfb_us);
        } else {
            errors += 1;
        }
    }
    Ok(Report {
        requests: all.len() as u64,
        errors,
        bytes,
        seconds: secs,
        requests_per_sec: lat.len() as f64 / secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
        latency_ms: Percentiles::of(lat),
        ttfb_ms: Percentiles::of(ttfb),
        statuses,
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
        assert!(parse_target("http://127.0.0.1:8080").is_ok());
        assert!(parse_target("http://127.0.0.1:8080/").is_ok());
        assert!(parse_target("https://127.0.0.1:8080").is_err());
        assert!(parse_target("127.0.0.1").is_err());
    }
}
