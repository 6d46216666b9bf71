//! `app.toml`: every key has a documented default; validation names the field.

use std::net::SocketAddr;

use segue_core::config::{ensure, FieldError, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP API address. Default `127.0.0.1:7090`.
    pub listen: SocketAddr,
    /// State: `sqlite://PATH` (created if missing) or `postgres://...`. Default
    /// `sqlite://./data/app-api.db`.
    pub database: String,
    /// Directory of the search index (tantivy), rebuilt from the database at every start.
    /// Default `./data/app-search`.
    pub search_dir: String,
    /// Origin (or an edge) base URL, where track manifests are read at catalog writes.
    /// Default `http://127.0.0.1:7070`.
    pub origin: String,
    /// Bearer tokens with admin scope (catalog writes, users), at least 16 characters.
    /// `SEGUE_APP_ADMIN_TOKEN` in the environment adds one. Users' own API keys are made
    /// with `POST /v1/admin/users` and kept hashed in the database.
    pub admin_tokens: Vec<String>,
    /// Per-request timeout when asking the origin, seconds. Default 10.
    pub request_timeout_secs: u64,
    /// Seconds in-flight requests may run after SIGTERM. Default 10.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7090)),
            database: "sqlite://./data/app-api.db".into(),
            search_dir: "./data/app-search".into(),
            origin: "http://127.0.0.1:7070".into(),
            admin_tokens: Vec::new(),
            request_timeout_secs: 10,
            shutdown_grace_secs: 10,
        }
    }
}

impl Config {
    /// Read `path` (or the defaults), without validating: flags are applied first.
    pub fn load(path: Option<&std::path::Path>) -> segue_core::Result<Self> {
        segue_core::config::load_or_default(path)
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), FieldError> {
        ensure(
            self.database.starts_with("sqlite://")
                || self.database.starts_with("postgres://")
                || self.database.starts_with("postgresql://"),
            "database",
            "must be sqlite://PATH or postgres://...",
        )?;
        ensure(self.origin.starts_with("http://"), "origin", "must be an http:// URL")?;
        ensure(!self.search_dir.is_empty(), "search_dir", "is required")?;
        for (i, t) in self.admin_tokens.iter().enumerate() {
            ensure(
                t.len() >= segue_core::token::MIN_SECRET_LEN && t.bytes().all(|b| b.is_ascii_graphic()),
                &format!("admin_tokens[{i}]"),
                "must be at least 16 printable characters",
            )?;
        }
        ensure((1..=300).contains(&self.request_timeout_secs), "request_timeout_secs", "must be 1-300")?;
        ensure(self.shutdown_grace_secs <= 3600, "shutdown_grace_secs", "must be at most 3600")?;
        Ok(())
    }
}
