//! `origin.toml`: every key optional, defaults below. See docs/OPERATING.md.

use std::net::SocketAddr;
use std::path::Path;

use segue_core::config::{ensure, FieldError, Validate};
use segue_core::store::S3Settings;
use segue_core::token::TokenSettings;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP listener. Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Address of a TLS listener serving the same (HTTP/1.1 and HTTP/2 by ALPN), for
    /// edges that reach the origin over an untrusted network (`https://` upstreams).
    /// Unset (the default): none.
    pub tls_listen: Option<SocketAddr>,
    /// `[[tls_certs]]` of the TLS listener: `cert`, `key` (PEM) and the SNI `names`.
    pub tls_certs: Vec<segue_core::tls::CertSettings>,
    /// Object store: a directory (key K at DIR/K) or `s3://bucket/prefix`. Default `./data/origin`.
    pub data_dir: String,
    /// S3 connection settings, used when `data_dir` is an `s3://` URL.
    pub s3: S3Settings,
    /// Largest request head accepted (bytes); larger gets 431. Default 16384.
    pub max_header_bytes: usize,
    /// Seconds a client has to send its request head. Default 10.
    pub header_read_timeout_secs: u64,
    /// Seconds in-flight requests may run after SIGTERM. Default 30.
    pub shutdown_grace_secs: u64,
    /// Seconds a response may wait on a client that reads nothing before its connection
    /// (HTTP/3: its stream) is closed. Default 60, like nginx's `send_timeout`.
    pub send_timeout_secs: u64,
    /// `Cache-Control` for content-addressed objects. Default `public, max-age=31536000, immutable`.
    pub cache_control: String,
    /// Send `Surrogate-Key: {content_id} {content_id}/{tier}` so edges can purge by tag. Default true.
    pub surrogate_keys: bool,
    /// Signed-URL checks (off by default: the origin usually sits behind edges).
    pub tokens: TokenSettings,
    /// Master uploads (`POST /v1/masters`).
    pub ingest: IngestSettings,
    /// Content keys and encrypted variants (`/enc/`).
    pub drm: DrmSettings,
}

/// The `[drm]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrmSettings {
    /// File of key-encryption keys (`ID:HEX` lines, the first current). Empty (the
    /// default): the `SEGUE_KEK` environment variable; neither turns encrypted variants off.
    pub kek_file: String,
    /// Bearer tokens that may read wrapped content keys (the license server's). Default none.
    pub key_tokens: Vec<String>,
}

impl DrmSettings {
    /// The KEKs, if configured.
    pub fn keks(&self) -> Result<Option<segue_core::drm::kek::Keks>, FieldError> {
        segue_core::drm::kek::Keks::load_for(&self.kek_file, "drm.kek_file")
    }
}

/// The `[ingest]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Bearer tokens allowed to upload masters. Empty (the default) disables uploads.
    pub tokens: Vec<String>,
    /// Largest master accepted, MiB. Default 2048.
    pub max_master_mb: u64,
    /// Where uploads are spooled before packaging. Empty: the system temp directory.
    pub upload_dir: String,
    /// Masters packaged at once; each uses one core per tier. Default 1.
    pub max_concurrent: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings { tokens: Vec::new(), max_master_mb: 2048, upload_dir: String::new(), max_concurrent: 1 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tls_listen: None,
            tls_certs: Vec::new(),
            data_dir: "./data/origin".into(),
            s3: S3Settings::default(),
            max_header_bytes: 16 * 1024,
            header_read_timeout_secs: 10,
            shutdown_grace_secs: 30,
            send_timeout_secs: 60,
            cache_control: "public, max-age=31536000, immutable".into(),
            surrogate_keys: true,
            tokens: TokenSettings::default(),
            ingest: IngestSettings::default(),
            drm: DrmSettings::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), FieldError> {
        ensure(!self.data_dir.is_empty(), "data_dir", "must not be empty")?;
        ensure(
            self.tls_listen.is_none() || !self.tls_certs.is_empty(),
            "tls_certs",
            "tls_listen needs at least one [[tls_certs]] entry",
        )?;
        ensure((8 * 1024..=1024 * 1024).contains(&self.max_header_bytes), "max_header_bytes", "must be 8192-1048576")?;
        ensure((1..=300).contains(&self.header_read_timeout_secs), "header_read_timeout_secs", "must be 1-300")?;
        ensure((1..=3600).contains(&self.send_timeout_secs), "send_timeout_secs", "must be 1-3600")?;
        ensure(self.shutdown_grace_secs <= 3600, "shutdown_grace_secs", "must be at most 3600")?;
        ensure(
            http::HeaderValue::from_str(&self.cache_control).is_ok(),
            "cache_control",
            "is not a valid header value",
        )?;
        if self.data_dir.starts_with("s3://") {
            self.s3.validate()?;
        }
        ensure((1..=1024 * 1024).contains(&self.ingest.max_master_mb), "ingest.max_master_mb", "must be 1-1048576")?;
        ensure((1..=64).contains(&self.ingest.max_concurrent), "ingest.max_concurrent", "must be 1-64")?;
        for (i, t) in self.ingest.tokens.iter().enumerate() {
            ensure(t.len() >= 16, &format!("ingest.tokens[{i}]"), "must be at least 16 characters")?;
        }
        for (i, t) in self.drm.key_tokens.iter().enumerate() {
            ensure(t.len() >= 16, &format!("drm.key_tokens[{i}]"), "must be at least 16 characters")?;
        }
        self.drm.keks()?;
        self.tokens.verifier().map(|_| ())
    }
}

impl Config {
    /// Load `path` (or defaults when `None`) without validating: flags may still override.
    pub fn load(path: Option<&Path>) -> segue_core::Result<Self> {
        segue_core::config::load_or_default(path)
    }
}
