//! The Segue origin: serves packaged audio objects (`/a/`, `/seek/`, `/m/`, `/enc/`) from
//! an object store with full RFC 9110 range and conditional semantics.

#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
mod error;
pub mod features;
pub mod ingest;
pub mod keys;
pub mod master;
mod object;
pub mod ogg;
pub mod package;
pub mod repage;
mod upload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Method, Request, Response};
use segue_core::key::{ObjectPath, PathError};
use segue_core::server::ReqBody;
use segue_core::server::{self, Body, ServerOptions};
use segue_core::store::{self, ObjectStore};
use segue_core::token::Verifier;

pub use config::Config;
pub use error::Error;

/// What every request handler shares.
pub struct State {
    pub store: Arc<dyn ObjectStore>,
    verifier: Verifier,
    token_required: bool,
    country_header: HeaderName,
    cache_control: HeaderValue,
    surrogate_keys: bool,
    ingest: config::IngestSettings,
    /// Packaging is CPU-bound: uploads take turns.
    ingest_slots: tokio::sync::Semaphore,
    /// Key-encryption keys: `None` turns encrypted variants and key custody off.
    pub keks: Option<Arc<segue_core::drm::kek::Keks>>,
    /// Bearer tokens that may read wrapped content keys (`GET /v1/keys/{cid}`).
    key_tokens: Vec<String>,
    /// Unwrapped content keys of recent `enc/` requests.
    content_keys: moka::sync::Cache<segue_core::ContentId, segue_core::drm::cipher::ContentKey>,
}

impl State {
    pub async fn new(config: &Config) -> segue_core::Result<Self> {
        let store = store::open_store(&config.data_dir, &config.s3).await?;
        Self::with_store(config, store)
    }

    pub fn with_store(config: &Config, store: Arc<dyn ObjectStore>) -> segue_core::Result<Self> {
        let invalid =
            |field: String, message: String| segue_core::Error::Config { file: "origin config".into(), field, message };
        // Install the recorder before the first request records anything.
        segue_core::telemetry::metrics();
        let verifier = config.tokens.verifier().map_err(|e| invalid(e.field, e.message))?;
        Ok(State {
            store,
            verifier,
            token_required: config.tokens.required,
            country_header: HeaderName::from_bytes(config.tokens.country_header.as_bytes())
                .map_err(|e| invalid("tokens.country_header".into(), e.to_string()))?,
            cache_control: HeaderValue::from_str(&config.cache_control)
                .map_err(|e| invalid("cache_control".into(), e.to_string()))?,
            surrogate_keys: config.surrogate_keys,
            ingest: config.ingest.clone(),
            ingest_slots: tokio::sync::Semaphore::new(config.ingest.max_concurrent.max(1)),
            keks: config.drm.keks().map_err(|e| invalid(e.field, e.message))?.map(Arc::new),
            key_tokens: config.drm.key_tokens.clone(),
            content_keys: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        })
    }
}

pub fn server_options(config: &Config) -> ServerOptions {
    ServerOptions {
        max_header_bytes: config.max_header_bytes,
        header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        send_timeout: Duration::from_secs(config.send_timeout_secs),
        limits: None,
    }
}

/// Run the origin until `shutdown` resolves: bind, print `listening on ADDR`, serve, drain.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> segue_core::Result<()> {
    let state = Arc::new(State::new(&config).await?);
    if let Some(fs) = fs_root(&config) {
        // Temp files older than a day are leftovers of a crash mid-write.
        match store::FsStore::new(fs).and_then(|s| s.sweep_temp_files(Duration::from_secs(86_400))) {
            Ok(n) if n > 0 => tracing::info!(removed = n, "removed stale temp files"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep temp files"),
        }
    }
    let listener = server::bind(config.listen)
        .await
        .map_err(|e| segue_core::Error::Io { path: config.listen.to_string(), source: e })?;
    let tls = match config.tls_listen {
        Some(addr) => {
            let shared = segue_core::tls::shared_config(&config.tls_certs)?;
            let l =
                server::bind(addr).await.map_err(|e| segue_core::Error::Io { path: addr.to_string(), source: e })?;
            Some((l, shared))
        }
        None => None,
    };
    tracing::info!(store = %state.store.describe(), "origin ready");
    // One shutdown signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tls_task = tls.map(|(l, shared)| {
        let (state, opts, mut stop) = (state.clone(), server_options(&config), stop_rx.clone());
        let stopped = async move {
            let _ = stop.changed().await;
        };
        tokio::spawn(server::serve_tls(l, shared, opts, move |req, peer| handle(state.clone(), req, peer), stopped))
    });
    let stopping = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    serve(listener, state, server_options(&config), stopping).await;
    if let Some(t) = tls_task {
        let _ = t.await;
    }
    Ok(())
}

fn fs_root(config: &Config) -> Option<&str> {
    (!config.data_dir.starts_with("s3://")).then_some(config.data_dir.as_str())
}

/// Serve on an already bound listener (tests bind port 0 themselves).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    opts: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    server::serve(listener, opts, move |req, peer| handle(state.clone(), req, peer), shutdown).await;
}

async fn handle(state: Arc<State>, req: Request<ReqBody>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // What was asked for, so content fetches can be told from health checks and scrapes
    // (a pre-warmed drop must reach the origin with no content request at all).
    let kind = match path.as_str() {
        "/healthz" => "health",
        "/metrics" => "metrics",
        "/v1/masters" => "masters",
        p if p.starts_with("/v1/keys/") => "keys",
        _ => "content",
    };
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => server::health_response(),
        (&Method::GET, "/metrics") => server::metrics_response(),
        (&Method::POST, "/v1/masters") => upload::post_master(&state, req).await,
        (_, "/v1/masters") => {
            server::json_error(http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST")
        }
        (&Method::GET, p) if p.starts_with("/v1/keys/") => wrapped_key(&state, &req, &p["/v1/keys/".len()..]).await,
        _ => match ObjectPath::parse(&path) {
            Ok(p) => object::serve(&state, &req, p).await.unwrap_or_else(Error::into_response),
            Err(PathError::Unsafe(why)) => Error::BadPath(why).into_response(),
            Err(PathError::NoSuchObject) => Error::NotFound(path.clone()).into_response(),
        },
    };
    let status = resp.status().as_u16();
    metrics::counter!(
        "origin_requests_total",
        "method" => method_label(&method), "status" => status.to_string(), "kind" => kind
    )
    .increment(1);
    metrics::histogram!("origin_response_head_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(%peer, %method, %path, status, "request");
    resp
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// `GET /v1/keys/{cid}`: a content key, still wrapped, for the license server (which
/// holds the KEK). Only `[drm] key_tokens` may ask.
async fn wrapped_key(state: &State, req: &Request<ReqBody>, cid: &str) -> Response<Body> {
    if state.key_tokens.is_empty() || !server::bearer_matches(req.headers(), &state.key_tokens) {
        return server::json_error(
            http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a [drm] key_tokens bearer token is required",
        );
    }
    let Ok(cid) = cid.parse::<segue_core::ContentId>() else {
        return server::json_error(http::StatusCode::BAD_REQUEST, "bad_content_id", "a content id is 64 hex digits");
    };
    match keys::wrapped(state.store.as_ref(), &cid).await {
        Ok(Some(w)) => server::json_response(http::StatusCode::OK, &w),
        Ok(None) => Error::NotFound(format!("no key for content {cid}")).into_response(),
        Err(e) => e.into_response(),
    }
}
