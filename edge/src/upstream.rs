//! Upstreams: an ordered list (parent POPs, then origins) behind one pooled HTTP client.
//! A request goes to the first upstream whose circuit is closed; connection errors,
//! timeouts and 5xx answers count against that upstream and move the request to the
//! next one, within a retry budget so an outage does not multiply upstream load.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::error::Error;

struct Upstream {
    base: String,
    failures: AtomicU32,
    /// Unix millis until which the circuit is open.
    open_until: AtomicU64,
    /// Requests this upstream may have in flight (head to end of body): more wait for a
    /// slot, so a cold storm reaches an origin as a bounded queue, not a connection flood.
    slots: Arc<tokio::sync::Semaphore>,
}

/// How the edge talks to its upstreams (from `edge.toml`).
pub struct Settings {
    /// Per upstream: time for the response head.
    pub head_timeout: Duration,
    /// How long an upstream body may send nothing (see [`TimedBody`]).
    pub read_timeout: Duration,
    /// Time for one fetch's head across every upstream it fails over to (and the wait
    /// for a slot): what a waiting reader tolerates, so failover ends before readers
    /// give up instead of after.
    pub failover_budget: Duration,
    pub failures_to_open: u32,
    pub open_for: Duration,
    pub idle_connections: usize,
    pub max_connections: usize,
    pub via: String,
    /// For `https://` upstreams: whom to trust and the client certificate to present.
    pub tls: Arc<rustls::ClientConfig>,
}

pub struct Upstreams {
    list: Vec<Upstream>,
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    head_timeout: Duration,
    read_timeout: Duration,
    failover_budget: Duration,
    max_connections: usize,
    failures_to_open: u32,
    open_for: Duration,
    /// Retry budget in tenths of a retry: each request deposits 2 (capped), each retry
    /// withdraws 10, so retries stay under ~20% of requests during an outage.
    budget: AtomicI64,
    via: String,
}

/// Request bodies sent upstream: empty for slice fetches, the client's for forwarded methods.
type UpstreamBody = UnsyncBoxBody<Bytes, segue_core::server::BoxError>;

/// Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"];

/// An upstream's answer: status, headers, and the body still streaming.
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: TimedBody,
    pub upstream: usize,
}

/// An upstream body that fails once it has sent nothing for `read_timeout` while being
/// read: every reader of an upstream body (a slice fill, a stored stream, a response
/// passed through) is protected from a stalled upstream in this one place. The clock
/// runs only while a frame is awaited, so a slow consumer is never taken for a stall.
pub struct TimedBody {
    inner: Incoming,
    read_timeout: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    /// The upstream's slot, freed when the body is done with (read or dropped).
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Why an upstream body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream sent nothing for {0:?}")]
    Stalled(Duration),
    #[error(transparent)]
    Body(#[from] hyper::Error),
}

impl TimedBody {
    fn new(inner: Incoming, read_timeout: Duration, slot: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        let deadline = Box::pin(tokio::time::sleep(read_timeout));
        TimedBody { inner, read_timeout, deadline, waiting: false, _slot: slot }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if !this.waiting {
            this.waiting = true;
            let at = tokio::time::Instant::now() + this.read_timeout;
            this.deadline.as_mut().reset(at);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Body)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    metrics::counter!("edge_upstream_stalls_total").increment(1);
                    Poll::Ready(Some(Err(BodyError::Stalled(this.read_timeout))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

const BUDGET_CAP: i64 = 1_000;
/// Largest request body kept to send an idempotent request a second time.
const RETRY_BODY_MAX: u64 = 1 << 20;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Upstreams {
    pub fn new(bases: &[String], s: Settings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(s.head_timeout));
        // An upstream that vanished (power, a dropped route) without a FIN or RST is found
        // by keepalive probes instead of never.
        connector.set_keepalive(Some(Duration::from_secs(30)));
        // `https://` upstreams (a parent POP's TLS listener, an origin behind TLS) are
        // verified against `upstream_tls`; `http://` ones stay plain.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*s.tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(s.idle_connections)
            // Fixed 64 KiB reads. hyper's adaptive reads grow each connection's buffer to
            // ~400 KiB, and body chunks handed to fills pin those buffers: with pooled
            // connections that was ~200 MB of RSS outside the cache cap (BENCHMARKS.md).
            .http1_read_buf_exact_size(64 << 10)
            .build(connector);
        Upstreams {
            list: bases
                .iter()
                .map(|b| Upstream {
                    base: b.trim_end_matches('/').to_owned(),
                    failures: AtomicU32::new(0),
                    open_until: AtomicU64::new(0),
                    slots: Arc::new(tokio::sync::Semaphore::new(s.max_connections)),
                })
                .collect(),
            client,
            head_timeout: s.head_timeout,
            read_timeout: s.read_timeout,
            failover_budget: s.failover_budget,
            max_connections: s.max_connections,
            failures_to_open: s.failures_to_open,
            open_for: s.open_for,
            budget: AtomicI64::new(BUDGET_CAP),
            via: s.via,
        }
    }

    /// Each upstream's circuit, for the admin API.
    pub fn health(&self) -> Vec<serde_json::Value> {
        let now = now_ms();
        self.list
            .iter()
            .map(|u| {
                serde_json::json!({
                    "upstream": u.base,
                    "circuit": if u.open_until.load(Ordering::Relaxed) > now { "open" } else { "closed" },
                    "consecutive_failures": u.failures.load(Ordering::Relaxed),
                    "in_flight": self.max_connections - u.slots.available_permits(),
                })
            })
            .collect()
    }

    pub fn name(&self, i: usize) -> &str {
        self.list.get(i).map(|u| u.base.as_str()).unwrap_or("?")
    }

    /// Send a GET or HEAD for `path` (with query) with `headers`, failing over in order on
    /// connection errors, timeouts and 5xx answers. When every upstream answered 5xx, the
    /// last answer is returned as it is (the cache decides between it and a stale copy).
    pub async fn fetch(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<Fetched, Error> {
        let deadline = tokio::time::Instant::now() + self.failover_budget;
        let _ = self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((b + 2).min(BUDGET_CAP)));
        let now = now_ms();
        // Closed circuits first, in configured order; if every circuit is open, try them
        // all anyway (an open circuit is a guess, a request is a probe).
        let mut order: Vec<usize> =
            (0..self.list.len()).filter(|&i| self.list[i].open_until.load(Ordering::Relaxed) <= now).collect();
        if order.is_empty() {
            order = (0..self.list.len()).collect();
        }
        let mut last = String::from("no upstream configured");
        let mut timed_out = false;
        let mut server_error: Option<Fetched> = None;
        for (attempt, &i) in order.iter().enumerate() {
            if attempt > 0 && self.budget.fetch_sub(10, Ordering::Relaxed) < 10 {
                self.budget.fetch_add(10, Ordering::Relaxed);
                last = format!("{last}; retry budget exhausted");
                break;
            }
            let up = &self.list[i];
            // Wait for a slot of this upstream, within the fetch's budget.
            let slot = match tokio::time::timeout_at(deadline, up.slots.clone().acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                _ => {
                    timed_out = true;
                    metrics::counter!("edge_upstream_queue_timeouts_total", "upstream" => up.base.clone()).increment(1);
                    last = format!("{}: all {} connections busy", up.base, self.max_connections);
                    break;
                }
            };
            let uri: Uri = match format!("{}{path}", up.base).parse() {
                Ok(u) => u,
                Err(e) => {
                    return Err(Error::UpstreamUnavailable {
                        path: path.to_owned(),
                        detail: format!("bad upstream URL: {e}"),
                    })
                }
            };
            let mut req = match Request::builder()
                .method(method.clone())
                .uri(uri)
                .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            {
                Ok(r) => r,
                Err(e) => return Err(Error::UpstreamUnavailable { path: path.to_owned(), detail: e.to_string() }),
            };
            *req.headers_mut() = headers.clone();
            if let Ok(v) = http::HeaderValue::from_str(&self.via) {
                req.headers_mut().append(http::header::VIA, v);
            }
            metrics::counter!("edge_upstream_requests_total", "upstream" => up.base.clone()).increment(1);
            // Each attempt gets the head timeout, cut to its share of what is left of the
            // budget, so every upstream in the order gets a try before readers give up.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let limit = self.head_timeout.min(left / (order.len() - attempt) as u32);
            match tokio::time::timeout(limit, self.client.request(req)).await {
                Ok(Ok(resp)) if !resp.status().is_server_error() => {
                    up.failures.store(0, Ordering::Relaxed);
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    let body = TimedBody::new(body, self.read_timeout, Some(slot));
                    return Ok(Fetched { status: parts.status, headers: parts.headers, body, upstream: i });
                }
                Ok(Ok(resp)) => {
                    last = format!("{} answered {}", up.base, resp.status());
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    let body = TimedBody::new(body, self.read_timeout, Some(slot));
                    server_error = Some(Fetched { status: parts.status, headers: parts.headers, body, upstream: i });
                }
                Ok(Err(e)) => last = format!("{}: {e}", up.base),
                Err(_) => {
                    timed_out = true;
                    last = format!("{}: no response head within {limit:?}", up.base);
                }
            }
            self.record_failure(i);
            if tokio::time::Instant::now() >= deadline {
                last = format!("{last}; failover budget of {:?} spent", self.failover_budget);
                break;
            }
        }
        if let Some(answer) = server_error {
            return Ok(answer);
        }
        if timed_out {
            Err(Error::UpstreamTimeout(format!("{path} ({last})")))
        } else {
            Err(Error::UpstreamUnavailable { path: path.to_owned(), detail: last })
        }
    }

    /// Active health check: `GET {base}{path}` on every upstream. An answer below 500
    /// closes its circuit at once (recovery without waiting for client traffic); no answer
    /// or a 5xx counts as a failure, like a failed fetch. Not counted as upstream requests.
    pub async fn probe_all(&self, path: &str) {
        for (i, up) in self.list.iter().enumerate() {
            let ok = match format!("{}{path}", up.base).parse::<Uri>() {
                Ok(uri) => {
                    let req = Request::get(uri)
                        .header(http::header::VIA, &self.via)
                        .body(Empty::new().map_err(|never| match never {}).boxed_unsync());
                    match req {
                        Ok(req) => matches!(
                            tokio::time::timeout(self.head_timeout, self.client.request(req)).await,
                            Ok(Ok(resp)) if !resp.status().is_server_error()
                        ),
                        Err(_) => false,
                    }
                }
                Err(_) => false,
            };
            let result = if ok { "ok" } else { "failed" };
            metrics::counter!("edge_upstream_probes_total", "upstream" => up.base.clone(), "result" => result)
                .increment(1);
            if ok {
                if up.open_until.swap(0, Ordering::Relaxed) > now_ms() {
                    tracing::info!(upstream = %up.base, "upstream answers its health check again; back in rotation");
                }
                up.failures.store(0, Ordering::Relaxed);
            } else {
                self.record_failure(i);
            }
        }
    }

    /// Forward a request the cache does not handle (methods other than GET and HEAD) to
    /// the first upstream whose circuit is closed, body streamed both ways. One attempt:
    /// the body can be sent only once, and the method may not be idempotent.
    pub async fn forward(&self, req: Request<segue_core::server::ReqBody>) -> Result<http::Response<TimedBody>, Error> {
        let now = now_ms();
        let i = (0..self.list.len()).find(|&i| self.list[i].open_until.load(Ordering::Relaxed) <= now).unwrap_or(0);
        let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let Some(up) = self.list.get(i) else {
            return Err(Error::UpstreamUnavailable { path, detail: "no upstream configured".into() });
        };
        let uri: Uri = format!("{}{path}", up.base)
            .parse()
            .map_err(|e| Error::UpstreamUnavailable { path: path.clone(), detail: format!("bad upstream URL: {e}") })?;
        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers);
        if let Ok(v) = http::HeaderValue::from_str(&self.via) {
            parts.headers.append(http::header::VIA, v);
        }
        // An idempotent method with a small body may be sent twice (RFC 9110 §9.2.2): a
        // pooled connection the upstream closed just as it was reused fails the first
        // try without the request having been handled. Other requests get one attempt.
        let small = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| (!parts.headers.contains_key(http::header::TRANSFER_ENCODING)).then_some(0))
            .is_some_and(|n| n <= RETRY_BODY_MAX);
        let idempotent = matches!(parts.method, Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE);
        let (body, replay) = if idempotent && small {
            let bytes = match collect_small(body).await {
                Ok(b) => b,
                Err(detail) => return Err(Error::UpstreamUnavailable { path, detail }),
            };
            (http_body_util::Full::new(bytes.clone()).map_err(|never| match never {}).boxed_unsync(), Some(bytes))
        } else {
            (body.boxed_unsync(), None)
        };
        let wait = tokio::time::timeout(self.failover_budget, up.slots.clone().acquire_owned()).await;
        let Ok(Ok(slot)) = wait else {
            metrics::counter!("edge_upstream_queue_timeouts_total", "upstream" => up.base.clone()).increment(1);
            return Err(Error::UpstreamTimeout(format!("{path}: all {} connections busy", self.max_connections)));
        };
        let mut slot = Some(slot);
        let mut attempt = Some(Request::from_parts(parts.clone(), body));
        let mut last = String::new();
        let mut retried = false;
        while let Some(req) = attempt.take() {
            metrics::counter!("edge_upstream_requests_total", "upstream" => up.base.clone()).increment(1);
            match tokio::time::timeout(self.head_timeout, self.client.request(req)).await {
                Ok(Ok(mut resp)) => {
                    strip_hop_by_hop(resp.headers_mut());
                    return Ok(resp.map(|b| TimedBody::new(b, self.read_timeout, slot.take())));
                }
                Ok(Err(e)) => {
                    last = format!("{}: {e}", up.base);
                    if let Some(bytes) = replay.as_ref().filter(|_| !retried && !e.is_connect()) {
                        retried = true;
                        tracing::debug!(path, error = %e, "idempotent request failed on its connection; sending it again");
                        let body =
                            http_body_util::Full::new(bytes.clone()).map_err(|never| match never {}).boxed_unsync();
                        attempt = Some(Request::from_parts(parts.clone(), body));
                        continue;
                    }
                }
                Err(_) => {
                    self.record_failure(i);
                    return Err(Error::UpstreamTimeout(format!(
                        "{path} ({}: no response head within {:?})",
                        up.base, self.head_timeout
                    )));
                }
            }
        }
        self.record_failure(i);
        Err(Error::UpstreamUnavailable { path, detail: last })
    }

    /// Count a failure against upstream `i` (also for failures mid-body).
    /// Whether the upstream a fetch would go to now is at most half busy: best-effort
    /// fetches (read-ahead) are only made then, never queued behind client fills.
    pub fn has_spare_capacity(&self) -> bool {
        let now = now_ms();
        let first = self.list.iter().find(|u| u.open_until.load(Ordering::Relaxed) <= now).or(self.list.first());
        first.is_some_and(|u| u.slots.available_permits() * 2 >= self.max_connections)
    }

    pub fn record_failure(&self, i: usize) {
        let Some(up) = self.list.get(i) else { return };
        metrics::counter!("edge_upstream_errors_total", "upstream" => up.base.clone()).increment(1);
        let n = up.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.failures_to_open {
            up.open_until.store(now_ms() + self.open_for.as_millis() as u64, Ordering::Relaxed);
            up.failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %up.base, "circuit opened after {n} consecutive failures");
        }
    }
}

/// A request body of at most `RETRY_BODY_MAX` bytes, whole.
async fn collect_small(mut body: segue_core::server::ReqBody) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(f) => f.into_data().unwrap_or_default(),
            Err(e) => return Err(format!("request body: {e}")),
        };
        out.extend_from_slice(&data);
        if out.len() as u64 > RETRY_BODY_MAX {
            return Err(format!("request body over its Content-Length ({RETRY_BODY_MAX} bytes at most)"));
        }
    }
    Ok(out.into())
}

/// Remove hop-by-hop headers, including any named by `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named = crate::http_cache::validate::connection_named(h);
    for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        h.remove(name);
    }
}
