//! The Segue app API: catalog (artists, albums, tracks with the audio facts of their
//! packaging manifests), search (tantivy), users with API keys, and an OpenAPI
//! description. Territorial rights, stream URLs and playlists build on this (the
//! "App-api" issue).
//!
//! State lives in SQLite or PostgreSQL (`catalog`, through `segue_core::sql`).

#![deny(unsafe_code)]
// allowed only in `recs::als`, to run its solver with AVX2 where the CPU has it
// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "256"]

pub mod api;
pub mod catalog;
pub mod config;
pub mod drm;
pub mod error;
pub mod fraud;
pub mod limits;
pub mod live;
pub mod lyrics;
pub mod openapi;
pub mod ot;
pub mod periods;
pub mod play_log;
pub mod play_store;
pub mod play_stream;
pub mod playlists;
pub mod plays;
pub mod reconcile;
pub mod recs;
pub mod rights;
pub mod royalty;
pub mod search;
pub mod shuffle;
pub mod stream;
pub mod subsonic;
pub mod web;

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

pub struct App {
    pub config: Config,
    pub pool: sqlx::AnyPool,
    pub search: search::Search,
    pub rights: rights::Rights,
    pub pops: stream::PopDirectory,
    /// Where a request comes from (trusted header or GeoIP database).
    pub geo: segue_core::geo::Geo,
    /// Per-key token buckets.
    pub rate_limits: limits::RateLimits,
    /// The stream-URL signing key, when configured.
    pub signing: Option<segue_core::token::Key>,
    /// Where play events are made durable.
    pub plays: play_log::PlayLog,
    /// Track vectors for recommendations, in memory.
    pub recs: recs::serve::Vectors,
    /// Devices, licenses and renewals for offline listening.
    pub drm: drm::LicenseServer,
    /// Who reported playing what through a Subsonic client (`scrobble?submission=false`).
    pub now_playing: subsonic::NowPlaying,
    /// Subsonic passwords for the legacy token scheme: sealing keys and settings.
    pub logins: subsonic::auth::Logins,
    /// Wakes live playlist streams when an edit lands here.
    pub live: live::Live,
    /// Generated cover art (PNG) by (id, size).
    pub covers: moka::sync::Cache<(String, u32), bytes::Bytes>,
    /// Track id -> length in ms, to check play durations without a query per event.
    pub track_lengths: moka::sync::Cache<String, i64>,
}

/// An HTTP date for messages.
pub fn format_time(ms: i64) -> String {
    if ms == i64::MAX {
        return "never".into();
    }
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

impl App {
    /// Lengths (ms) of the known tracks among `ids`: cached, misses read in one query.
    pub async fn track_lengths(&self, ids: &[&str]) -> Result<std::collections::HashMap<String, i64>, Error> {
        let mut found = std::collections::HashMap::new();
        let mut missing = std::collections::BTreeSet::new();
        for id in ids {
            match self.track_lengths.get(*id) {
                Some(ms) => {
                    found.insert((*id).to_owned(), ms);
                }
                None => {
                    missing.insert(*id);
                }
            }
        }
        let missing: Vec<&str> = missing.into_iter().collect();
        for (id, ms) in catalog::track_lengths(&self.pool, &missing).await? {
            self.track_lengths.insert(id.clone(), ms);
            found.insert(id, ms);
        }
        Ok(found)
    }

    /// The packaging manifest of `content_id`, from the origin.
    pub async fn manifest(&self, content_id: &str) -> Result<segue_core::manifest::Manifest, Error> {
        let path = format!("/m/{content_id}.json");
        let timeout = Duration::from_secs(self.config.request_timeout_secs);
        let (status, body) = segue_core::client::call(&self.config.origin, Method::GET, &path, None, None, timeout)
            .await
            .map_err(|e| Error::Upstream(format!("origin {}: {e}", self.config.origin)))?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map_err(|e| Error::Upstream(format!("origin {path}: not a manifest: {e}"))),
            StatusCode::NOT_FOUND => {
                Err(Error::UnknownContent(format!("content {content_id} is not packaged at the origin (no {path})")))
            }
            s => Err(Error::Upstream(format!("origin answered {s} for {path}"))),
        }
    }
}

pub fn server_options(config: &Config) -> ServerOptions {
    ServerOptions { shutdown_grace: Duration::from_secs(config.shutdown_grace_secs), ..ServerOptions::default() }
}

/// Open the database, then serve the API until `shutdown`.
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
    let pool = catalog::open(&config.database).await?;
    let opts = server_options(&config);
    let search = search::Search::create(std::path::Path::new(&config.search_dir))?;
    let started = std::time::Instant::now();
    let indexed = search.rebuild(&pool).await?;
    tracing::info!(
        database = %segue_core::sql::redact(&config.database),
        indexed,
        index_ms = started.elapsed().as_millis() as u64,
        "app-api up"
    );
    let signing = if config.signing.kid.is_empty() {
        None
    } else {
        Some(
            segue_core::token::Key::from_hex(config.signing.kid.clone(), &config.signing.secret_hex)
                .map_err(|e| Error::BadRequest(format!("signing.secret_hex: {e}")))?,
        )
    };
    let plays = play_log::PlayLog::open(&config, pool.clone()).await?;
    let drm = drm::LicenseServer::open(&config.drm)?;
    let logins = subsonic::auth::Logins::open(&config.subsonic)?;
    let geo = config.geo.open().map_err(|e| Error::BadRequest(format!("{}: {}", e.field, e.message)))?;
    let app = Arc::new(App {
        geo,
        rate_limits: limits::RateLimits::new(config.limits.clone()),
        drm,
        recs: recs::serve::Vectors::default(),
        config,
        plays,
        now_playing: subsonic::now_playing_cache(),
        logins,
        live: live::Live::default(),
        covers: moka::sync::Cache::builder()
            .max_capacity(64 << 20)
            .weigher(|_, png: &bytes::Bytes| png.len().try_into().unwrap_or(u32::MAX))
            .build(),
        track_lengths: moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(Duration::from_secs(300))
            .build(),
        pool,
        search,
        rights: rights::Rights::default(),
        pops: stream::PopDirectory::default(),
        signing,
    });
    let handler_app = app.clone();
    server::serve(listener, opts, move |req, peer| api::handle(handler_app.clone(), req, peer), shutdown).await;
    app.pool.close().await;
    tracing::info!("app-api stopped");
    Ok(())
}
