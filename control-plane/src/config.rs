//! `cp.toml`: every key has a documented default; validation names the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use segue_core::config::{ensure, FieldError, Validate};
use serde::Deserialize;

/// One region POPs can belong to and releases can target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
    /// The region's offset from UTC in minutes, for releases at a local wall-clock time
    /// ("midnight in each time zone"). Default 0.
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP API address. Default `127.0.0.1:7080`.
    pub listen: SocketAddr,
    /// Address of a TLS listener serving the same API (HTTP/1.1 and HTTP/2 by ALPN), so
    /// POP tokens, purges, pre-warms and embargoes cannot be read or injected on the
    /// path. Unset (the default): none.
    pub tls_listen: Option<SocketAddr>,
    /// `[[tls_certs]]` of the TLS listener: `cert`, `key` (PEM) and the SNI `names`.
    pub tls_certs: Vec<segue_core::tls::CertSettings>,
    /// State: `sqlite://PATH` (created if missing) or `postgres://...`. Default
    /// `sqlite://./data/control-plane.db`.
    pub database: String,
    /// Origin (or shield) base URL, asked whether a release's content exists. Default
    /// `http://127.0.0.1:7070`.
    pub origin: String,
    /// Bearer tokens of release managers (releases, purges, POP listing), each at least
    /// 16 characters. `SEGUE_CP_TOKEN` in the environment adds one.
    pub api_tokens: Vec<String>,
    /// Per-POP bearer tokens for heartbeats: POP id -> token (at least 16 characters).
    pub pop_tokens: BTreeMap<String, String>,
    /// Known regions. Default one region, `default`, at UTC.
    pub regions: Vec<Region>,
    /// A POP silent for this long is marked down and gets no new jobs. Default 15.
    pub heartbeat_timeout_secs: u64,
    /// Default time before each region's drop when its POPs are handed pre-warm jobs.
    /// Default 3600 (one hour).
    pub lead_secs: u64,
    /// How often the scheduler looks at releases and jobs, milliseconds. Default 1000.
    pub tick_millis: u64,
    /// Attempts per POP job (a POP reporting failure) before it is flagged failed.
    /// Default 5.
    pub max_attempts: u32,
    /// Per-request timeout when asking the origin, seconds. Default 10.
    pub request_timeout_secs: u64,
    /// Seconds in-flight requests may run after SIGTERM. Default 10.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7080)),
            tls_listen: None,
            tls_certs: Vec::new(),
            database: "sqlite://./data/control-plane.db".into(),
            origin: "http://127.0.0.1:7070".into(),
            api_tokens: Vec::new(),
            pop_tokens: BTreeMap::new(),
            regions: vec![Region { name: "default".into(), utc_offset_minutes: 0 }],
            heartbeat_timeout_secs: 15,
            lead_secs: 3600,
            tick_millis: 1000,
            max_attempts: 5,
            request_timeout_secs: 10,
            shutdown_grace_secs: 10,
        }
    }
}

impl Config {
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }
}

fn token_ok(t: &str) -> bool {
    t.len() >= segue_core::token::MIN_SECRET_LEN && t.bytes().all(|b| b.is_ascii_graphic())
}

impl Validate for Config {
    fn validate(&self) -> Result<(), FieldError> {
        segue_core::sql::check_url("database", &self.database)?;
        ensure(
            self.tls_listen.is_none() || !self.tls_certs.is_empty(),
            "tls_certs",
            "tls_listen needs at least one [[tls_certs]] entry",
        )?;
        ensure(self.origin.starts_with("http://"), "origin", "must be an http:// URL")?;
        for (i, t) in self.api_tokens.iter().enumerate() {
            ensure(token_ok(t), &format!("api_tokens[{i}]"), "must be at least 16 printable characters")?;
        }
        for (pop, t) in &self.pop_tokens {
            ensure(token_ok(t), &format!("pop_tokens.{pop}"), "must be at least 16 printable characters")?;
        }
        ensure(!self.regions.is_empty(), "regions", "at least one region is required")?;
        for (i, r) in self.regions.iter().enumerate() {
            ensure(
                !r.name.is_empty() && r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                &format!("regions[{i}].name"),
                "must be letters, digits, - or _",
            )?;
            ensure(
                (-14 * 60..=14 * 60).contains(&r.utc_offset_minutes),
                &format!("regions[{i}].utc_offset_minutes"),
                "must be within -840..840",
            )?;
            ensure(
                self.regions[..i].iter().all(|o| o.name != r.name),
                &format!("regions[{i}].name"),
                "is listed twice",
            )?;
        }
        ensure((1..=3600).contains(&self.heartbeat_timeout_secs), "heartbeat_timeout_secs", "must be 1-3600")?;
        ensure(self.lead_secs <= 7 * 86400, "lead_secs", "must be at most 604800 (a week)")?;
        ensure((50..=60_000).contains(&self.tick_millis), "tick_millis", "must be 50-60000")?;
        ensure((1..=100).contains(&self.max_attempts), "max_attempts", "must be 1-100")?;
        ensure((1..=300).contains(&self.request_timeout_secs), "request_timeout_secs", "must be 1-300")?;
        ensure(self.shutdown_grace_secs <= 3600, "shutdown_grace_secs", "must be at most 3600")?;
        Ok(())
    }
}

impl Config {
    /// Read `path` (or the defaults), without validating: flags are applied first.
    pub fn load(path: Option<&std::path::Path>) -> segue_core::Result<Self> {
        segue_core::config::load_or_default(path)
    }
}
