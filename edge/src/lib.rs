//! The Segue edge: a POP daemon serving byte ranges from a memory slice cache, with one
//! upstream fetch per missing slice however many clients wait for it (bytes streamed to
//! every waiter as they arrive), ordered upstreams with failover, and signed-URL checks.
//! Responses are built by `segue_core::respond`, the same code the origin uses.

#![deny(unsafe_code)] // allowed only in `arena`, the mapped memory the cache sends from

mod access_log;
mod admin;
mod arena;
mod bans;
pub mod cache;
pub mod coalesce;
pub mod config;
mod cors;
mod error;
mod fetch;

mod heartbeat;
pub mod http_cache;
mod journal;
pub mod policy;
mod reader;
mod serve;
mod ssd;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use segue_core::server::ReqBody;
use segue_core::server::{self, Body, ServerOptions};
use segue_core::token::Verifier;

pub use config::Config;
pub use error::Error;
pub use reader::{Client, Streams};

use cache::Cache;
use coalesce::Coalescer;
use upstream::Upstreams;

pub struct State {
    pub cache: Cache,
    pub coalescer: Coalescer,
    pub upstreams: Upstreams,
    /// Signed-URL policy; replaced whole on SIGHUP, read per request.
    tokens: std::sync::RwLock<Arc<TokenPolicy>>,
    /// Per-path-prefix rules; replaced whole on SIGHUP.
    policies: std::sync::RwLock<Arc<Vec<Arc<policy::PathPolicy>>>>,
    /// Targeted cache-control fields obeyed, in precedence order (RFC 9213).
    targeted: Vec<HeaderName>,
    /// Targeted fields removed before responses reach clients.
    strip_targeted: Vec<HeaderName>,
    cors: cors::Cors,
    reader_timeout: Duration,
    writer_max_age: Duration,
    /// Slices fetched ahead of a sequential reader.
    read_ahead: u64,
    /// Where each client's last range of an object ended, to tell a reader going through
    /// an object from one jumping about in it (`reader::Sequential`).
    streams: reader::Streams,
    /// `/metrics` on the client listeners too (no admin listener, or `public_metrics`).
    public_metrics: bool,
    /// TLS to `https://` upstreams and control plane.
    tls_client: Arc<rustls::ClientConfig>,
    via: HeaderValue,
    /// Bearer tokens of the admin API; replaced on SIGHUP.
    admin_tokens: std::sync::RwLock<Vec<String>>,
    jobs: admin::Jobs,
    /// The TLS listener's certificates; reloaded on SIGHUP.
    tls: Option<segue_core::tls::SharedConfig>,
    /// The HTTP/3 endpoint (for certificate reloads) and its `Alt-Svc` advertisement.
    h3: std::sync::Mutex<Option<quinn::Endpoint>>,
    alt_svc: std::sync::OnceLock<HeaderValue>,
    probe: Option<(Duration, String)>,
    /// Content id -> Unix second its embargo in this POP's region ends, from the control
    /// plane's heartbeat answers.
    embargoes: std::sync::RwLock<Arc<std::collections::HashMap<String, i64>>>,
    /// Content id -> countries whose rights were withdrawn, each with the Unix second the
    /// entry can go (from the control plane's heartbeat answer).
    withdrawn: std::sync::RwLock<Arc<Withdrawn>>,
    /// Object requests answered, and those answered from the cache (for heartbeats).
    pub(crate) served: std::sync::atomic::AtomicU64,
    /// Every request answered, and those answered 5xx (for the heartbeat's rates).
    pub(crate) answered: std::sync::atomic::AtomicU64,
    pub(crate) server_errors: std::sync::atomic::AtomicU64,
    pub(crate) hits: std::sync::atomic::AtomicU64,
    /// Body bytes of the responses answered (their Content-Length), for the heartbeat's
    /// egress and saturation.
    pub(crate) egress_bytes: std::sync::atomic::AtomicU64,
    access_log: Option<Arc<access_log::AccessLog>>,
}

impl State {
    pub async fn new(config: &Config) -> segue_core::Result<Self> {
        segue_core::telemetry::metrics();
        let invalid = |field: &str, message: String| segue_core::Error::Config {
            file: "edge config".into(),
            field: field.into(),
            message,
        };
        let via = format!("1.1 {}", config.via_name());
        let tls_client = config.tls_client()?;
        Ok(State {
            cache: Cache::new(
                config.mem_cache_mb << 20,
                config.slice_kib << 10,
                config.mem_eviction,
                config.ssd(),
                config.index_objects(),
                config.zero_copy,
            )
            .await?,
            coalescer: Coalescer::default(),
            upstreams: Upstreams::new(&config.upstreams, config.upstream_settings(via.clone(), tls_client.clone())),
            tls_client,
            tokens: std::sync::RwLock::new(Arc::new(
                TokenPolicy::new(config).map_err(|e| invalid(&e.field, e.message))?,
            )),
            policies: std::sync::RwLock::new(Arc::new(policy::compile(&config.paths))),
            targeted: header_names(&config.targeted_cache_control).map_err(|e| invalid("targeted_cache_control", e))?,
            strip_targeted: header_names(&config.strip_targeted).map_err(|e| invalid("strip_targeted", e))?,
            cors: cors::Cors::new(&config.cors_origins),
            reader_timeout: Duration::from_secs(config.reader_timeout_secs),
            writer_max_age: Duration::from_secs(config.writer_max_age_secs),
            read_ahead: config.read_ahead_slices,
            streams: reader::Streams::new(),
            public_metrics: config.public_metrics || config.admin_listen.is_none(),
            via: HeaderValue::from_str(&via).map_err(|e| invalid("name", e.to_string()))?,
            admin_tokens: std::sync::RwLock::new(config.admin_tokens.clone()),
            jobs: admin::Jobs::default(),
            h3: std::sync::Mutex::new(None),
            alt_svc: std::sync::OnceLock::new(),
            tls: match config.tls_listen {
                Some(_) => Some(segue_core::tls::shared_config(&config.tls_certs)?),
                None => None,
            },
            probe: (config.upstream_probe_secs > 0)
                .then(|| (Duration::from_secs(config.upstream_probe_secs), config.upstream_probe_path.clone())),
            embargoes: Default::default(),
            withdrawn: Default::default(),
            served: Default::default(),
            answered: Default::default(),
            egress_bytes: Default::default(),
            server_errors: Default::default(),
            hits: Default::default(),
            access_log: if config.access_log.is_empty() {
                None
            } else {
                Some(Arc::new(
                    access_log::AccessLog::open(&config.access_log)
                        .map_err(|e| invalid("access_log", e.to_string()))?,
                ))
            },
        })
    }
}

/// Content id -> (country, Unix second the entry expires) of withdrawn rights.
type Withdrawn = std::collections::HashMap<String, Vec<(String, i64)>>;

/// What signed-URL checking needs, built from the config as one unit so a reload swaps
/// keys, prefixes and the country header together.
pub struct TokenPolicy {
    verifier: Verifier,
    required: bool,
    /// Where a request's country comes from (trusted header or GeoIP database).
    geo: segue_core::geo::Geo,
}

fn header_names(names: &[String]) -> Result<Vec<HeaderName>, String> {
    names.iter().map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|e| format!("{n:?}: {e}"))).collect()
}

impl TokenPolicy {
    fn new(config: &Config) -> Result<Self, segue_core::config::FieldError> {
        Ok(TokenPolicy {
            verifier: config.tokens.verifier()?,
            required: config.tokens.required,
            geo: segue_core::geo::Geo::new(
                http::HeaderName::from_bytes(config.tokens.country_header.as_bytes())
                    .map_err(|e| segue_core::config::FieldError::new("tokens.country_header", e.to_string()))?,
                &config.trusted_proxies,
                &config.geoip_db,
                &config.unknown_country,
            )?,
        })
    }
}

impl State {
    /// A request that already passed through this POP (its name in `Via`) is a loop in
    /// the parent configuration: refused, not fetched again.
    fn is_loop(&self, headers: &HeaderMap) -> bool {
        let me = self.via.as_bytes().get(4..).unwrap_or_default();
        headers.get_all(header::VIA).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|hop| hop.trim_ascii().split(|&b| b == b' ').nth(1).is_some_and(|by| by == me))
        })
    }

    /// `Authorization: Bearer T` with T one of the admin tokens (compared in constant time).
    fn admin_authorized(&self, headers: &HeaderMap) -> bool {
        let tokens = self.admin_tokens.read().unwrap_or_else(|p| p.into_inner());
        segue_core::server::bearer_matches(headers, &tokens)
    }

    fn token_policy(&self) -> Arc<TokenPolicy> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the embargo list (from a control-plane heartbeat answer).
    pub(crate) fn set_embargoes(&self, map: std::collections::HashMap<String, i64>) {
        let mut current = self.embargoes.write().unwrap_or_else(|p| p.into_inner());
        if **current != map {
            tracing::info!(embargoed = map.len(), "embargo list updated");
            metrics::gauge!("edge_embargoed_content").set(map.len() as f64);
            *current = Arc::new(map);
        }
    }

    /// Replace the withdrawn-rights list (from a control-plane heartbeat answer).
    pub(crate) fn set_withdrawn(&self, list: Vec<segue_core::control::Withdrawal>) {
        let mut map = Withdrawn::new();
        for w in list {
            map.entry(w.content_id).or_default().push((w.country, w.until));
        }
        let mut current = self.withdrawn.write().unwrap_or_else(|p| p.into_inner());
        if **current != map {
            tracing::info!(content = map.len(), "withdrawn-rights list updated");
            metrics::gauge!("edge_withdrawn_content").set(map.len() as f64);
            *current = Arc::new(map);
        }
    }

    /// Whether the rights to `path`'s content in `country` were withdrawn.
    fn withdrawn(&self, path: &str, country: &str) -> bool {
        let map = self.withdrawn.read().unwrap_or_else(|p| p.into_inner()).clone();
        if map.is_empty() {
            return false;
        }
        let Ok(parsed) = segue_core::key::ObjectPath::parse(path) else { return false };
        let now = fetch::unix_now() as i64;
        map.get(&parsed.content_id().to_string())
            .is_some_and(|l| l.iter().any(|(c, until)| c == country && *until > now))
    }

    /// The Unix second `path`'s content is embargoed until, if it still is.
    fn embargoed(&self, path: &str) -> Option<i64> {
        let map = self.embargoes.read().unwrap_or_else(|p| p.into_inner()).clone();
        if map.is_empty() {
            return None;
        }
        let parsed = segue_core::key::ObjectPath::parse(path).ok()?;
        let until = *map.get(&parsed.content_id().to_string())?;
        (until > fetch::unix_now() as i64).then_some(until)
    }

    /// Apply a reloaded config. Signed-URL settings take effect at once, for new requests
    /// on existing connections too; settings that size or wire the running edge (listen,
    /// upstreams, cache, slices, timeouts) need a restart and are reported as such.
    pub fn reload(&self, old: &Config, new: &Config) -> Result<Vec<&'static str>, segue_core::config::FieldError> {
        let policy = TokenPolicy::new(new)?;
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy::compile(&new.paths));
        if let (Some(shared), Some(_)) = (&self.tls, new.tls_listen) {
            segue_core::tls::reload(shared, &new.tls_certs)
                .map_err(|e| segue_core::config::FieldError::new("tls_certs", e.to_string()))?;
        }
        if let (Some(endpoint), Some(_)) = (&*self.h3.lock().unwrap_or_else(|p| p.into_inner()), new.h3_listen) {
            segue_core::http3::reload(endpoint, &new.tls_certs)
                .map_err(|e| segue_core::config::FieldError::new("tls_certs", e.to_string()))?;
        }
        *self.admin_tokens.write().unwrap_or_else(|p| p.into_inner()) = new.admin_tokens.clone();
        let mut needs_restart = Vec::new();
        let checks: [(&'static str, bool); 12] = [
            (
                "targeted_cache_control",
                (&old.targeted_cache_control, &old.strip_targeted)
                    != (&new.targeted_cache_control, &new.strip_targeted),
            ),
            ("listen", old.listen != new.listen),
            ("admin_listen", old.admin_listen != new.admin_listen),
            ("tls_listen", old.tls_listen != new.tls_listen),
            ("h3_listen", old.h3_listen != new.h3_listen),
            ("upstreams", old.upstreams != new.upstreams),
            ("mem_cache_mb", old.mem_cache_mb != new.mem_cache_mb),
            ("mem_eviction", old.mem_eviction != new.mem_eviction),
            ("slice_kib", old.slice_kib != new.slice_kib),
            (
                "ssd",
                (&old.ssd_cache_dir, old.ssd_cache_mb, old.ssd_admit_after)
                    != (&new.ssd_cache_dir, new.ssd_cache_mb, new.ssd_admit_after),
            ),
            ("name", old.name != new.name),
            (
                "timeouts",
                (
                    old.reader_timeout_secs,
                    old.writer_max_age_secs,
                    old.upstream_connect_timeout_secs,
                    old.upstream_read_timeout_secs,
                ) != (
                    new.reader_timeout_secs,
                    new.writer_max_age_secs,
                    new.upstream_connect_timeout_secs,
                    new.upstream_read_timeout_secs,
                ),
            ),
        ];
        for (field, changed) in checks {
            if changed {
                needs_restart.push(field);
            }
        }
        Ok(needs_restart)
    }
}

/// The client listeners' options. Clones share one set of connection caps (build it once
/// and clone it for every client listener).
pub fn server_options(config: &Config) -> ServerOptions {
    let limits = segue_core::limits::ConnLimits::new(config.max_connections, config.max_connections_per_ip);
    ServerOptions {
        max_header_bytes: config.max_header_bytes,
        header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        send_timeout: Duration::from_secs(config.send_timeout_secs),
        limits: Some(limits),
    }
}

/// Run the edge until `shutdown` resolves. On SIGHUP, `reload` is called for a fresh
/// config (the file re-read, flags re-applied, validated); signed-URL settings are applied
/// without touching connections, and a config that fails to load changes nothing.
pub async fn run(
    config: Config,
    reload: impl Fn() -> Result<Config, String> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) -> segue_core::Result<()> {
    let state = Arc::new(State::new(&config).await?);
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let state = state.clone();
        let mut current = config.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reload().map_err(|e| e.to_string()).and_then(|new| {
                    state.reload(&current, &new).map(|r| (new, r)).map_err(|e| format!("{}: {}", e.field, e.message))
                }) {
                    Ok((new, needs_restart)) => {
                        tracing::info!(?needs_restart, "config reloaded; signed-URL settings applied");
                        current = new;
                    }
                    Err(e) => tracing::error!(error = %e, "config reload refused; keeping the running config"),
                }
            }
        });
    }
    let listener = server::bind(config.listen)
        .await
        .map_err(|e| segue_core::Error::Io { path: config.listen.to_string(), source: e })?;
    tracing::info!(upstreams = ?config.upstreams, mem_cache_mb = config.mem_cache_mb, slice_kib = config.slice_kib, "edge ready");
    let bind = |addr: SocketAddr| async move {
        server::bind(addr).await.map_err(|e| segue_core::Error::Io { path: addr.to_string(), source: e })
    };
    let tls = match (config.tls_listen, &state.tls) {
        (Some(addr), Some(shared)) => Some((bind(addr).await?, shared.clone())),
        _ => None,
    };
    let h3 = match config.h3_listen {
        Some(addr) => {
            let endpoint = segue_core::http3::bind(addr, &config.tls_certs)?;
            let port = endpoint.local_addr().map(|a| a.port()).unwrap_or(addr.port());
            if let Ok(v) = HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")) {
                let _ = state.alt_svc.set(v);
            }
            *state.h3.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoint.clone());
            Some(endpoint)
        }
        None => None,
    };
    let admin = match config.admin_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    // One shutdown signal stops every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    register(&state, &config, &listener, admin.as_ref());
    let mut tasks = Vec::new();
    // The connection caps count every client listener's connections together.
    let client_opts = server_options(&config);
    if let Some((listener, shared)) = tls {
        let (state, opts, stop) = (state.clone(), client_opts.clone(), stopped(stop_rx.clone()));
        tasks.push(tokio::spawn(async move {
            server::serve_tls(listener, shared, opts, move |req, peer| handle(state.clone(), req, peer), stop).await;
        }));
    }
    if let Some(endpoint) = h3 {
        let (state, opts, stop) = (state.clone(), client_opts.clone(), stopped(stop_rx.clone()));
        tasks.push(tokio::spawn(async move {
            segue_core::http3::serve(endpoint, opts, move |req, peer| handle(state.clone(), req, peer), stop).await;
        }));
    }
    if let Some(listener) = admin {
        // The admin API stays reachable however many clients are connected.
        let opts = ServerOptions { limits: None, ..client_opts.clone() };
        let (state, stop) = (state.clone(), stopped(stop_rx.clone()));
        tasks.push(tokio::spawn(serve_admin(listener, state, opts, stop)));
    }
    let stopping = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    serve(listener, state.clone(), client_opts, stopping).await;
    for task in tasks {
        let _ = task.await;
    }
    // Flush memory to the SSD so the next start is warm.
    state.cache.close().await;
    Ok(())
}

/// Serve the admin API on its own listener until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    opts: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    server::serve(listener, opts, move |req, _| admin::handle(state.clone(), req), shutdown).await;
}

/// Start heartbeats to the control plane when `config` names one, advertising the
/// addresses actually bound (the config may say port 0).
pub fn register(
    state: &Arc<State>,
    config: &Config,
    listener: &tokio::net::TcpListener,
    admin: Option<&tokio::net::TcpListener>,
) {
    if let Some(cp) = config.control_plane.clone() {
        let mut bound = config.clone();
        bound.listen = listener.local_addr().unwrap_or(config.listen);
        bound.admin_listen = admin.and_then(|l| l.local_addr().ok()).or(config.admin_listen);
        heartbeat::spawn(state, &bound, cp);
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    opts: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if let Some((every, path)) = state.probe.clone() {
        // Holds the state weakly: the checks stop when the edge is gone.
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(state) = weak.upgrade() else { break };
                state.upstreams.probe_all(&path).await;
            }
        });
    }
    if state.cache.has_ssd() {
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            loop {
                let Some(state) = weak.upgrade() else { break };
                // statvfs and a directory listing: blocking calls, kept off the runtime.
                let _ = tokio::task::spawn_blocking(move || state.cache.check_ssd_space()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    server::serve(listener, opts, move |req, peer| handle(state.clone(), req, peer), shutdown).await;
}

async fn handle(state: Arc<State>, mut req: Request<ReqBody>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    state.token_policy().geo.strip_untrusted(peer.ip(), req.headers_mut());
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => server::health_response(),
        (&Method::GET, "/metrics") if state.public_metrics => metrics_page(&state),
        // Not proxied either: an upstream's own metrics are not a client's business.
        (&Method::GET, "/metrics") => {
            server::json_error(http::StatusCode::NOT_FOUND, "not_found", "/metrics is served on the admin listener")
        }
        _ if state.is_loop(req.headers()) => Error::Loop(state.via.to_str().unwrap_or("").to_owned()).into_response(),
        (&Method::OPTIONS, _) if req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) => {
            state.cors.preflight(&req).unwrap_or_else(|| Error::BadPath("not a CORS preflight").into_response())
        }
        (m, path) => {
            let policy = state.policy_for(path);
            if !policy.allows(m) {
                Error::MethodNotAllowed { method: m.to_string(), allow: policy.methods.join(", ") }.into_response()
            } else if m != Method::GET && m != Method::HEAD {
                let method = m.clone();
                let uri = req.uri().clone();
                let version = req.version();
                let range = req.headers().get(header::RANGE).cloned();
                let resp = forward(&state, req, peer).await.unwrap_or_else(Error::into_response);
                return finish(&state, started, resp, peer, &method, &uri, range.as_ref(), version);
            } else {
                req.extensions_mut().insert(reader::Client(peer.ip()));
                match check_request(&state, &req, &policy, peer) {
                    Ok(()) => serve::get(&state, &req, &policy).await.unwrap_or_else(Error::into_response),
                    Err(e) => e.into_response(),
                }
            }
        }
    };
    let mut resp = resp;
    if req.method() == Method::GET || req.method() == Method::HEAD {
        state.cors.decorate(req.headers(), &mut resp);
    }
    if let Some(alt) = state.alt_svc.get() {
        if req.version() != http::Version::HTTP_3 {
            resp.headers_mut().insert(header::ALT_SVC, alt.clone());
        }
    }
    let range = req.headers().get(header::RANGE);
    finish(&state, started, resp, peer, req.method(), req.uri(), range, req.version())
}

/// The Prometheus page, its gauges brought up to date.
pub(crate) fn metrics_page(state: &State) -> Response<Body> {
    metrics::gauge!("edge_cache_bytes", "tier" => "mem").set(state.cache.memory_bytes() as f64);
    metrics::gauge!("edge_arena_bytes").set(state.cache.arena_bytes() as f64);
    let (written, read) = state.cache.ssd_io();
    metrics::gauge!("edge_ssd_written_bytes").set(written as f64);
    metrics::gauge!("edge_ssd_read_bytes").set(read as f64);
    metrics::gauge!("edge_ssd_slices").set(state.cache.ssd_slices() as f64);
    metrics::gauge!("edge_fills_inflight").set(state.coalescer.len() as f64);
    server::metrics_response()
}

/// The `sid` of a query, when it is a plausible session id.
fn session_of(query: &str) -> Option<String> {
    let sid = query.split('&').find_map(|p| p.strip_prefix("sid="))?;
    let ok = (1..=64).contains(&sid.len()) && sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then(|| sid.to_owned())
}

/// Per-request metrics, the debug log line and the access log.
#[allow(clippy::too_many_arguments)]
fn finish(
    state: &State,
    started: Instant,
    resp: Response<Body>,
    peer: SocketAddr,
    method: &Method,
    uri: &http::Uri,
    range: Option<&HeaderValue>,
    v: http::Version,
) -> Response<Body> {
    let path = uri.path();
    let status = resp.status().as_u16();
    let protocol = match v {
        http::Version::HTTP_2 => "h2",
        http::Version::HTTP_3 => "h3",
        _ => "http/1.1",
    };
    metrics::counter!("edge_requests_total", "status" => status.to_string(), "protocol" => protocol).increment(1);
    state.answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if method != Method::HEAD {
        let length = resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        state.egress_bytes.fetch_add(length.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }
    if status >= 500 {
        state.server_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    metrics::histogram!("edge_response_head_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(%peer, %method, path, status, "request");
    let Some(log) = &state.access_log else { return resp };
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let expected = match (method, status) {
        (&Method::HEAD, _) | (_, 204 | 304) => Some(0),
        _ => header("content-length").and_then(|l| l.parse().ok()),
    };
    let entry = access_log::Entry {
        ts_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        peer,
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        session: uri.query().and_then(session_of),
        range: range.and_then(|r| r.to_str().ok()).map(str::to_owned),
        status,
        bytes: 0,
        aborted: false,
        cache: header("x-cache"),
        protocol,
        head_ms: started.elapsed().as_secs_f64() * 1000.0,
        ms: 0.0,
    };
    let log = log.clone();
    resp.map(|b| http_body_util::BodyExt::boxed_unsync(access_log::Logged::new(b, log, entry, started, expected)))
}

/// Methods the cache does not handle go upstream uncached (DESIGN: "forwards other methods
/// uncached"), still behind the signed-URL check, marked `X-Cache: PASS`. A success of an
/// unsafe method invalidates what the cache holds for the URL (RFC 9111 §4.4).
async fn forward(state: &Arc<State>, req: Request<ReqBody>, peer: SocketAddr) -> Result<Response<Body>, Error> {
    let policy = state.policy_for(req.uri().path());
    check_request(state, &req, &policy, peer)?;
    let method = req.method().clone();
    let target = policy.cache_key(req.uri().path(), req.uri().query());
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let resp = state.upstreams.forward(req).await?;
    metrics::counter!("edge_cache_results_total", "result" => "pass").increment(1);
    for path in http_cache::invalidate::targets(&method, resp.status(), resp.headers(), &target, host.as_deref()) {
        let (p, q) = path.split_once('?').map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
        let n = state.cache.invalidate(&state.policy_for(p).cache_key(p, q));
        if n > 0 {
            metrics::counter!("edge_invalidated_objects_total").increment(n as u64);
        }
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert("x-cache", HeaderValue::from_static("PASS"));
    parts.headers.append(header::VIA, state.via.clone());
    let body = http_body_util::BodyExt::map_err(body, |e| -> server::BoxError { Box::new(e) });
    Ok(Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(body)))
}

/// Path safety and the signed-URL check, for every request that reaches an upstream.
fn check_request(
    state: &State,
    req: &Request<ReqBody>,
    policy: &policy::PathPolicy,
    peer: SocketAddr,
) -> Result<(), Error> {
    let path = req.uri().path();
    if let Err(segue_core::key::PathError::Unsafe(why)) = segue_core::key::check_path_safety(path) {
        return Err(Error::BadPath(why));
    }
    // An embargo holds whatever the token says and whether or not the bytes are cached.
    if let Some(until) = state.embargoed(path) {
        return Err(Error::Embargoed(until));
    }
    let tokens = state.token_policy();
    // The country the URL was signed for, if it is bound to one.
    let bound = req.uri().query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("country=")));
    if tokens.required && policy.tokens {
        // Only a token bound to a country needs to know the request's.
        let country = if bound.is_some() { tokens.geo.country(peer.ip(), req.headers()) } else { None };
        let now = fetch::unix_now();
        tokens.verifier.verify(req.method().as_str(), path, req.uri().query(), now, country.as_deref())?;
    }
    // Rights withdrawn after the URL was signed: by the country it is bound to (checked
    // above against where the request comes from), else where the request comes from.
    if !state.withdrawn.read().unwrap_or_else(|p| p.into_inner()).is_empty() {
        let country = match bound {
            Some(c) => Some(c.to_owned()),
            None => tokens.geo.country(peer.ip(), req.headers()),
        };
        if let Some(c) = country.filter(|c| state.withdrawn(path, c)) {
            return Err(Error::Withdrawn(c));
        }
    }
    Ok(())
}
