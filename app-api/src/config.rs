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
    /// `[geo]`: the country a request comes from (travelling listeners).
    pub geo: Geo,
    /// `[limits]`: per-key rate limits.
    pub limits: Limits,
    /// Seconds a POP list from the control plane is used before asking again. Default 10.
    pub pop_cache_secs: u64,
    /// POP base URLs used when the control plane is unreachable and nothing is cached
    /// from it (or it knows no healthy POP).
    pub fallback_pops: Vec<String>,
    /// A secondary CDN's base URL (it serves the same paths and checks the same signed
    /// URLs): new streams go there when every healthy POP of the listener's region reports
    /// itself saturated. Empty (the default): saturated POPs are still handed out.
    pub overflow_url: String,
    /// Region -> the countries (ISO 3166-1 alpha-2) whose clients it serves.
    pub regions: std::collections::BTreeMap<String, Vec<String>>,
    /// Region of countries not listed in `regions`. Default `default`.
    pub default_region: String,
    /// Seconds in-flight requests may run after SIGTERM. Default 10.
    pub shutdown_grace_secs: u64,
    /// Play events: where they go, what is valid, fraud rules.
    pub plays: Plays,
    /// The license server: devices, licenses for offline listening, renewals.
    pub drm: DrmSettings,
    /// `[subsonic]`: the OpenSubsonic API for existing players.
    pub subsonic: SubsonicSettings,
}

/// `[subsonic]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubsonicSettings {
    /// Keys that seal users' Subsonic passwords at rest, in the KEK format (`ID:HEX`
    /// lines, the first current). Empty: `SEGUE_SUBSONIC_KEYS`; neither turns the legacy
    /// `u`+`t`+`s` scheme off (API keys still work). The token scheme needs the password
    /// itself on the server, so it is kept encrypted rather than hashed.
    pub password_keys_file: String,
    /// Accept `p=` (the password itself, or `enc:` hex of it) in URLs. Default false: it
    /// ends up in logs and histories; clients should use `t`+`s` or `apiKey`.
    pub allow_plain_password: bool,
    /// How `stream` and `download` hand over audio: `redirect` (a 302 to a signed edge URL,
    /// the CDN path; default) or `proxy` (the app API fetches from the edge and relays,
    /// for clients that cannot follow redirects).
    pub stream: StreamMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    #[default]
    Redirect,
    Proxy,
}

pub const SUBSONIC_KEYS_VAR: &str = "SEGUE_SUBSONIC_KEYS";

impl Default for SubsonicSettings {
    fn default() -> Self {
        SubsonicSettings {
            password_keys_file: String::new(),
            allow_plain_password: false,
            stream: StreamMode::Redirect,
        }
    }
}

/// `[drm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrmSettings {
    /// Key-encryption keys that unwrap content keys: the origin's file (same format).
    /// Empty: `SEGUE_KEK`; neither turns the license server off (503).
    pub kek_file: String,
    /// Bearer token for the origin's `GET /v1/keys/{cid}` (one of its `[drm] key_tokens`).
    pub origin_key_token: String,
    /// The Ed25519 key that signs licenses (32 raw bytes), made on first start.
    /// Default `./data/drm-signing.key`.
    pub signing_key_file: String,
    /// Devices a user may register at once. Default 5.
    pub max_devices: u32,
    /// Days a license (or a renewal) lasts. Default 30.
    pub license_days: u32,
    /// Hours a device may still play after expiry. Default 48.
    pub grace_hours: u32,
    /// Tracks one device may hold licenses for. Default 10000.
    pub max_tracks_per_device: u32,
}

impl Default for DrmSettings {
    fn default() -> Self {
        DrmSettings {
            kek_file: String::new(),
            origin_key_token: String::new(),
            signing_key_file: "./data/drm-signing.key".into(),
            max_devices: 5,
            license_days: 30,
            grace_hours: 48,
            max_tracks_per_device: 10_000,
        }
    }
}

impl DrmSettings {
    fn validate(&self) -> Result<(), FieldError> {
        ensure((1..=100).contains(&self.max_devices), "drm.max_devices", "must be 1-100")?;
        ensure((1..=366).contains(&self.license_days), "drm.license_days", "must be 1-366")?;
        ensure(self.grace_hours <= 24 * 30, "drm.grace_hours", "must be at most 720")?;
        ensure(
            (1..=1_000_000).contains(&self.max_tracks_per_device),
            "drm.max_tracks_per_device",
            "must be 1-1000000",
        )?;
        ensure(!self.signing_key_file.is_empty(), "drm.signing_key_file", "is required")?;
        ensure(
            self.origin_key_token.is_empty() || self.origin_key_token.len() >= 16,
            "drm.origin_key_token",
            "must be at least 16 characters",
        )?;
        segue_core::drm::kek::Keks::load_for(&self.kek_file, "drm.kek_file").map(|_| ())
    }
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
            geo: Geo::default(),
            limits: Limits::default(),
            pop_cache_secs: 10,
            fallback_pops: Vec::new(),
            overflow_url: String::new(),
            regions: Default::default(),
            default_region: "default".into(),
            shutdown_grace_secs: 10,
            plays: Plays::default(),
            drm: DrmSettings::default(),
            subsonic: SubsonicSettings::default(),
        }
    }
}

/// Where acknowledged play events are kept until they are applied to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlayLogKind {
    /// Straight into `database` in the request's transaction (group commit).
    Embedded,
    /// Into a NATS JetStream stream; `segue plays consume` applies them to `database`.
    Nats,
}

/// `[plays]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plays {
    /// `embedded` (default) or `nats`.
    pub log: PlayLogKind,
    /// Most events in one `POST /v1/play-events`. Default 1000.
    pub max_batch: usize,
    /// A play may start at most this far in the future (client clock skew). Default 300.
    pub max_future_secs: u64,
    /// A batch's `sent_ms` this close to the server's clock is taken as right (transit
    /// time); past it, the difference corrects the events' `started_ms`. Default 30.
    pub clock_tolerance_secs: u64,
    /// Offline plays older than this are refused. Default 31 days.
    pub max_age_days: u64,
    /// The report refuses to run while events wait longer than this to be applied
    /// (unless forced). Default 60.
    pub report_max_lag_secs: u64,
    /// `[plays.nats]`: the JetStream log (when `log = "nats"`).
    pub nats: Nats,
    /// `[plays.fraud]`: when an account is flagged.
    pub fraud: Fraud,
}

impl Default for Plays {
    fn default() -> Self {
        Plays {
            log: PlayLogKind::Embedded,
            max_batch: 1000,
            max_future_secs: 300,
            clock_tolerance_secs: 30,
            max_age_days: 31,
            report_max_lag_secs: 60,
            nats: Nats::default(),
            fraud: Fraud::default(),
        }
    }
}

/// `[plays.nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nats {
    /// Server URL, or several comma-separated (the nodes of a cluster; the client moves
    /// to another when one fails). Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Copies of the stream JetStream keeps, on that many cluster nodes (1-5; 3 in
    /// production: one node can fail with nothing acknowledged lost). Default 1.
    pub replicas: usize,
    /// Partitions: an event goes to subject `SUBJECT.P`, P from its track, and each
    /// partition has its own durable consumer, so consumers apply in parallel. Default 1.
    pub partitions: usize,
    /// A NATS credentials file (`.creds`: user JWT and NKey seed). Empty: none.
    pub credentials_file: String,
    /// CA certificate (PEM) to verify the servers' TLS certificates with; setting it
    /// requires TLS. Empty: the system roots, TLS only if the server asks.
    pub tls_ca_file: String,
    /// Refuse a server that does not offer TLS. Default false.
    pub tls_required: bool,
    /// Where messages that are not play events, or that no database accepts, are moved
    /// (with why, in headers) instead of blocking the consumer: this subject, in stream
    /// `dead_letter_stream`. Defaults `segue.plays-dead` and `PLAYS_DEAD`.
    pub dead_letter_subject: String,
    pub dead_letter_stream: String,
    /// JetStream stream (created if missing, file storage). Default `PLAYS`.
    pub stream: String,
    /// Subject events are published on. Default `segue.plays`.
    pub subject: String,
    /// JetStream deduplication window (message id = user/event id), seconds. Retries
    /// inside it are answered `duplicate` by the server itself. Default 7200.
    pub duplicate_window_secs: u64,
    /// Durable consumer name of `segue plays consume`. Default `segue-plays`.
    pub consumer: String,
    /// Where `segue plays consume` serves `/metrics` and `/healthz`. Default
    /// `127.0.0.1:7091`.
    pub consumer_listen: SocketAddr,
    /// Most events the consumer applies in one transaction. Default 2000.
    pub consumer_batch: usize,
}

impl Default for Nats {
    fn default() -> Self {
        Nats {
            url: "nats://127.0.0.1:4222".into(),
            replicas: 1,
            partitions: 1,
            credentials_file: String::new(),
            tls_ca_file: String::new(),
            tls_required: false,
            dead_letter_subject: "segue.plays-dead".into(),
            dead_letter_stream: "PLAYS_DEAD".into(),
            stream: "PLAYS".into(),
            subject: "segue.plays".into(),
            duplicate_window_secs: 7200,
            consumer: "segue-plays".into(),
            consumer_listen: SocketAddr::from(([127, 0, 0, 1], 7091)),
            consumer_batch: 2000,
        }
    }
}

/// `[plays.fraud]`: an account is flagged for a month when any rule holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fraud {
    /// Plays started in at least this many distinct hours of one UTC day ("around the
    /// clock"). Default 20.
    pub active_hours_per_day: u64,
    /// At least this many plays in the month and not one skipped. Default 300.
    pub never_skip_min_plays: u64,
    /// One track played at least this many times in one day. Default 100.
    pub loop_plays_per_day: u64,
    /// Plays from at least this many countries within one hour. Default 3.
    pub countries_per_hour: u64,
}

impl Default for Fraud {
    fn default() -> Self {
        Fraud { active_hours_per_day: 20, never_skip_min_plays: 300, loop_plays_per_day: 100, countries_per_hour: 3 }
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

/// `[limits]`: per-key rates (token buckets; 0 turns one off). Admin tokens from the
/// config are not limited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests per second a user key may make, sustained. Default 20.
    pub requests_per_sec: f64,
    /// And in a burst. Default 200.
    pub request_burst: f64,
    /// Play events per second a user key may post, sustained. Default 1 (a listener
    /// plays far fewer).
    pub play_events_per_sec: f64,
    /// And at once (an offline month synced). Default 20000.
    pub play_event_burst: f64,
    /// The same for gateway keys (posting for many users). Defaults 1000, 5000, 50000, 500000.
    pub gateway_requests_per_sec: f64,
    pub gateway_request_burst: f64,
    pub gateway_play_events_per_sec: f64,
    pub gateway_play_event_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_sec: 20.0,
            request_burst: 200.0,
            play_events_per_sec: 1.0,
            play_event_burst: 20_000.0,
            gateway_requests_per_sec: 1000.0,
            gateway_request_burst: 5000.0,
            gateway_play_events_per_sec: 50_000.0,
            gateway_play_event_burst: 500_000.0,
        }
    }
}

/// `[geo]`: where a request comes from, so a listener travelling outside their account's
/// country gets the rights of where they are. Only trusted sources count: a load
/// balancer's header (from `trusted_proxies` only) or a GeoIP database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Geo {
    /// Peers (CIDRs or addresses) whose `country_header` is believed. Default none.
    pub trusted_proxies: Vec<String>,
    /// Default `x-client-country`.
    pub country_header: String,
    /// A MaxMind-format database (GeoLite2/GeoIP2 Country or City). Empty (default): none.
    pub geoip_db: String,
}

impl Default for Geo {
    fn default() -> Self {
        Geo { trusted_proxies: Vec::new(), country_header: "x-client-country".into(), geoip_db: String::new() }
    }
}

impl Geo {
    pub fn open(&self) -> Result<segue_core::geo::Geo, segue_core::config::FieldError> {
        let header = http::HeaderName::from_bytes(self.country_header.as_bytes())
            .map_err(|e| segue_core::config::FieldError::new("geo.country_header", e.to_string()))?;
        segue_core::geo::Geo::new(header, &self.trusted_proxies, &self.geoip_db, "")
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
        let name_ok_early =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        segue_core::sql::check_url("database", &self.database)?;
        ensure(self.origin.starts_with("http://"), "origin", "must be an http:// URL")?;
        ensure(!self.search_dir.is_empty(), "search_dir", "is required")?;
        self.drm.validate()?;
        segue_core::drm::kek::Keks::load_for_var(
            &self.subsonic.password_keys_file,
            "subsonic.password_keys_file",
            SUBSONIC_KEYS_VAR,
        )?;
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
        self.geo.open()?;
        let l = &self.limits;
        for (name, v) in [
            ("limits.requests_per_sec", l.requests_per_sec),
            ("limits.request_burst", l.request_burst),
            ("limits.play_events_per_sec", l.play_events_per_sec),
            ("limits.play_event_burst", l.play_event_burst),
            ("limits.gateway_requests_per_sec", l.gateway_requests_per_sec),
            ("limits.gateway_request_burst", l.gateway_request_burst),
            ("limits.gateway_play_events_per_sec", l.gateway_play_events_per_sec),
            ("limits.gateway_play_event_burst", l.gateway_play_event_burst),
        ] {
            ensure(v.is_finite() && (0.0..=1e9).contains(&v), name, "must be 0-1000000000 (0: no limit)")?;
        }
        for (i, p) in self.fallback_pops.iter().enumerate() {
            ensure(
                p.starts_with("http://") || p.starts_with("https://"),
                &format!("fallback_pops[{i}]"),
                "must be an http(s) URL",
            )?;
        }
        ensure(
            self.overflow_url.is_empty()
                || self.overflow_url.starts_with("http://")
                || self.overflow_url.starts_with("https://"),
            "overflow_url",
            "must be an http(s) URL (or empty)",
        )?;
        for (r, countries) in &self.regions {
            for c in countries {
                ensure(
                    segue_core::geo::is_country_code(c),
                    &format!("regions.{r}"),
                    format!("{c:?} is not an ISO 3166-1 alpha-2 code"),
                )?;
            }
        }
        ensure(self.shutdown_grace_secs <= 3600, "shutdown_grace_secs", "must be at most 3600")?;
        let p = &self.plays;
        ensure((1..=10_000).contains(&p.max_batch), "plays.max_batch", "must be 1-10000")?;
        ensure(p.max_future_secs <= 86_400, "plays.max_future_secs", "must be at most 86400")?;
        ensure((1..=366).contains(&p.max_age_days), "plays.max_age_days", "must be 1-366")?;
        ensure(p.report_max_lag_secs <= 86_400, "plays.report_max_lag_secs", "must be at most 86400")?;
        let n = &p.nats;
        ensure(
            n.url.split(',').all(|u| u.trim().starts_with("nats://") || u.trim().starts_with("tls://")),
            "plays.nats.url",
            "must be nats://HOST:PORT (or tls://), comma-separated for a cluster",
        )?;
        ensure((1..=5).contains(&n.replicas), "plays.nats.replicas", "must be 1-5")?;
        ensure((1..=64).contains(&n.partitions), "plays.nats.partitions", "must be 1-64")?;
        ensure(
            name_ok_early(&n.dead_letter_stream),
            "plays.nats.dead_letter_stream",
            "must be letters, digits, - or _",
        )?;
        ensure(
            !n.dead_letter_subject.is_empty()
                && !n.dead_letter_subject.contains(['*', '>', ' '])
                && !n.dead_letter_subject.starts_with(&format!("{}.", n.subject)),
            "plays.nats.dead_letter_subject",
            "must be a plain subject outside SUBJECT.*",
        )?;
        let name_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ensure(name_ok(&n.stream), "plays.nats.stream", "must be letters, digits, - or _")?;
        ensure(name_ok(&n.consumer), "plays.nats.consumer", "must be letters, digits, - or _")?;
        ensure(
            !n.subject.is_empty() && !n.subject.contains(['*', '>', ' ']),
            "plays.nats.subject",
            "must be a plain subject (no wildcards or spaces)",
        )?;
        ensure(
            (60..=7 * 86_400).contains(&n.duplicate_window_secs),
            "plays.nats.duplicate_window_secs",
            "must be 60-604800",
        )?;
        ensure((1..=10_000).contains(&n.consumer_batch), "plays.nats.consumer_batch", "must be 1-10000")?;
        let f = &p.fraud;
        ensure((2..=24).contains(&f.active_hours_per_day), "plays.fraud.active_hours_per_day", "must be 2-24")?;
        ensure(f.never_skip_min_plays >= 1, "plays.fraud.never_skip_min_plays", "must be at least 1")?;
        ensure(f.loop_plays_per_day >= 2, "plays.fraud.loop_plays_per_day", "must be at least 2")?;
        ensure(f.countries_per_hour >= 2, "plays.fraud.countries_per_hour", "must be at least 2")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_configs_are_valid() {
        for name in ["app-api.toml", "app-api-production.toml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(name);
            let mut cfg = super::Config::load(Some(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
            // What the deployment supplies: the key from SEGUE_SIGNING_KEY, the GeoIP file.
            if cfg.signing.secret_hex.is_empty() {
                cfg.signing.secret_hex = "ab".repeat(32);
            }
            cfg.geo.geoip_db.clear();
            let cfg = segue_core::config::validated(&path, cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.contains("production") {
                assert_eq!((cfg.plays.nats.replicas, cfg.plays.nats.partitions), (3, 4));
            }
        }
    }
}
