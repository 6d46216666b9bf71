//! The Segue control plane: POP registry and health, release schedules that pre-warm
//! every POP of a region before its drop, embargoes until then, and purge fan-out.
//!
//! State lives in SQLite or PostgreSQL (`db`); the HTTP API (`api`) writes rows, the
//! scheduler (`scheduler`) creates pre-warm jobs when their time comes, and POPs pull
//! their jobs and report progress through heartbeats (`core::control`). Every job is a
//! row keyed on (kind, release or purge, POP), so a restart picks up exactly where the
//! last run stopped and never hands out finished work again.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod console;
pub mod db;
pub mod error;
pub mod scheduler;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use segue_core::server::{self, ServerOptions};

pub use config::Config;
pub use error::Error;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Everything the API and the scheduler share.
pub struct App {
    pub config: Config,
    pub pool: db::Pool,
    /// Wakes the scheduler early (a release scheduled, a POP back).
    pub wake: tokio::sync::Notify,
    /// Bumped whenever jobs are created: wakes heartbeats waiting (long poll) for work.
    pub jobs: tokio::sync::watch::Sender<u64>,
    /// Set when shutdown begins.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl App {
    pub fn new(config: Config, pool: db::Pool) -> Self {
        App {
            config,
            pool,
            wake: tokio::sync::Notify::new(),
            jobs: tokio::sync::watch::channel(0).0,
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    /// New jobs exist: wake every waiting heartbeat.
    pub fn jobs_changed(&self) {
        self.jobs.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn api_authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(t) = api::bearer(headers) else { return false };
        self.config.api_tokens.iter().any(|k| segue_core::token::constant_time_eq(k.as_bytes(), t.as_bytes()))
    }

    pub fn region(&self, name: &str) -> Result<&config::Region, Error> {
        self.config.region(name).ok_or_else(|| {
            let known: Vec<&str> = self.config.regions.iter().map(|r| r.name.as_str()).collect();
            Error::UnknownRegion(format!("unknown region {name:?} (known: {})", known.join(", ")))
        })
    }

    pub fn heartbeat_timeout_ms(&self) -> i64 {
        self.config.heartbeat_timeout_secs as i64 * 1000
    }

    /// Does the origin hold `path`? (HEAD; 404 means no.)
    pub async fn origin_has(&self, path: &str) -> Result<(), Error> {
        let (status, _) = call(&self.config.origin, Method::HEAD, path, None, None, self.timeout())
            .await
            .map_err(|e| Error::Upstream(format!("origin {}: {e}", self.config.origin)))?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(Error::UnknownContent(format!("the origin has no {path}"))),
            s => Err(Error::Upstream(format!("origin answered {s} for HEAD {path}"))),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.request_timeout_secs)
    }
}

pub use segue_core::client::call;

pub fn server_options(config: &Config) -> ServerOptions {
    ServerOptions { shutdown_grace: Duration::from_secs(config.shutdown_grace_secs), ..ServerOptions::default() }
}

/// Open the database, then serve the API and run the scheduler until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let listener = server::bind(config.listen)
        .await
        .map_err(|e| Error::BadRequest(format!("cannot listen on {}: {e}", config.listen)))?;
    serve(listener, config, shutdown).await
}

/// `run` on a listener already bound.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    // Certificates are read before anything starts: a bad file stops start-up.
    let tls = match config.tls_listen {
        Some(addr) => {
            let shared = segue_core::tls::shared_config(&config.tls_certs)
                .map_err(|e| Error::BadRequest(format!("TLS certificates: {e}")))?;
            let l = server::bind(addr).await.map_err(|e| Error::BadRequest(format!("cannot listen on {addr}: {e}")))?;
            Some((l, shared))
        }
        None => None,
    };
    let pool = db::open(&config.database).await?;
    let opts = server_options(&config);
    let app = Arc::new(App::new(config, pool));
    tracing::info!(database = %segue_core::sql::redact(&app.config.database), regions = app.config.regions.len(), "control plane up");
    let sched = tokio::spawn(scheduler::run(app.clone(), app.stopping.subscribe()));
    let handler_app = app.clone();
    // On shutdown, waiting heartbeats answer at once instead of holding the drain.
    let stopping = app.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.stopping.send(true);
    };
    let tls_task = tls.map(|(l, shared)| {
        let (app, opts, mut stop) = (app.clone(), opts.clone(), app.stopping.subscribe());
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::spawn(server::serve_tls(l, shared, opts, move |req, _peer| api::handle(app.clone(), req), stopped))
    });
    server::serve(listener, opts, move |req, _peer| api::handle(handler_app.clone(), req), shutdown).await;
    if let Some(t) = tls_task {
        let _ = t.await;
    }
    let _ = sched.await;
    app.pool.close().await;
    tracing::info!("control plane stopped");
    Ok(())
}
