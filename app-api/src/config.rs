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
    /// Per-request timeout when asking the origin or the control plane, seconds. Default 10.
    pub request_timeout_secs: u64,
    /// Signing of stream URLs (the edges' `[tokens.keys]` must hold the same key).
    pub signing: Signing,
    /// Where healthy POPs are learned. Unset: only `fallback_pops`.
    pub control_plane: Option<ControlPlane>,
    /// Seconds a POP list from the control plane is used before asking again. Default 10.
    pub pop_cache_secs: u64,
    /// POP base URLs used when the control plane is unreachable and nothing is cached
    /// from it (or it knows no healthy POP).
    pub fallback_pops: Vec<String>,
    /// Region -> the countries (ISO 3166-1 alpha-2) whose clients it serves.
    pub regions: std::collections::BTreeMap<String, Vec<String>>,
    /// Region of countries not listed in `regions`. Default `default`.
    pub default_region: String,
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
            signing: Signing::default(),
            control_plane: None,
            pop_cache_secs: 10,
            fallback_pops: Vec::new(),
            regions: Default::default(),
            default_region: "default".into(),
            shutdown_grace_secs: 10,
        }
    }
}

/// `[signing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signing {
    /// Key id (`kid`) of the signing key. Empty: stream URLs are off (503).
    pub kid: String,
    /// The key, hex (at least 16 bytes). `SEGUE_SIGNING_KEY` in the environment sets it.
    pub secret_hex: String,
    /// Lifetime of a stream URL, seconds. Default 300.
    pub ttl_secs: u64,
}

impl Default for Signing {
    fn default() -> Self {
        Signing { kid: String::new(), secret_hex: String::new(), ttl_secs: 300 }
    }
}

/// `[control_plane]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// Base URL, e.g. `http://cp.internal:7080`.
    pub url: String,
    /// A control-plane API token (to list POPs).
    pub token: String,
}

impl Config {
    /// The region serving clients in `country`.
    pub fn region_of(&self, country: &str) -> &str {
        self.regions
            .iter()
            .find(|(_, countries)| countries.iter().any(|c| c == country))
            .map_or(self.default_region.as_str(), |(r, _)| r.as_str())
    }

    /// Read `path` (or the defaults), without validating: flags are applied first.
    pub fn load(path: Option<&std::path::Path>) -> segue_core::Result<Self> {
        segue_core::config::load_or_default(path)
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), FieldError> {
        segue_core::sql::check_url("database", &self.database)?;
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
        if !self.signing.kid.is_empty() {
            segue_core::token::Key::from_hex(self.signing.kid.clone(), &self.signing.secret_hex)
                .map_err(|e| FieldError::new("signing.secret_hex", e))?;
        }
        ensure((10..=86_400).contains(&self.signing.ttl_secs), "signing.ttl_secs", "must be 10-86400")?;
        if let Some(cp) = &self.control_plane {
            ensure(cp.url.starts_with("http://"), "control_plane.url", "must be an http:// URL")?;
            ensure(cp.token.len() >= 16, "control_plane.token", "must be at least 16 characters")?;
        }
        ensure((1..=300).contains(&self.pop_cache_secs), "pop_cache_secs", "must be 1-300")?;
        for (i, p) in self.fallback_pops.iter().enumerate() {
            ensure(
                p.starts_with("http://") || p.starts_with("https://"),
                &format!("fallback_pops[{i}]"),
                "must be an http(s) URL",
            )?;
        }
        for (r, countries) in &self.regions {
            for c in countries {
                ensure(
                    c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
                    &format!("regions.{r}"),
                    format!("{c:?} is not an ISO 3166-1 alpha-2 code"),
                )?;
            }
        }
        ensure(self.shutdown_grace_secs <= 3600, "shutdown_grace_secs", "must be at most 3600")?;
        Ok(())
    }
}
