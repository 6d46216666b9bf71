//! `edge.toml`: every key optional, defaults below. See docs/OPERATING.md.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use segue_core::config::{ensure, FieldError, Validate};
use segue_core::token::TokenSettings;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP listener. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Upstreams in order of preference (parent POPs, then origins), as `http://host:port`
    /// or `https://host:port` (verified against `upstream_tls`).
    pub upstreams: Vec<String>,
    /// `[upstream_tls]`: the CAs trusted for `https://` upstreams and control plane
    /// (`ca_file`; default the system's roots) and an optional client certificate
    /// (`client_cert`, `client_key`) for servers that require one.
    pub upstream_tls: segue_core::tls::ClientSettings,
    /// Memory cache size, MiB. Default 1024.
    pub mem_cache_mb: u64,
    /// Memory tier eviction: `tiny_lfu` (W-TinyLFU; default), `s3_fifo` or `lru`.
    pub mem_eviction: Eviction,
    /// Directory of the SSD tier. Empty (the default): memory only.
    pub ssd_cache_dir: String,
    /// SSD tier size, MiB. Default 10240.
    pub ssd_cache_mb: u64,
    /// Requests a slice must have had before it is written to a full SSD tier, so
    /// one-hit wonders never churn the disk (while the tier has room every slice is
    /// written). Default 2; 1 writes every slice.
    pub ssd_admit_after: u8,
    /// Object records the memory index keeps (each ~1-2 KiB of RAM). 0 (the default):
    /// one per MiB of memory and SSD tier, at least 10,000 and at most 4,000,000. A
    /// record the index lets go is reloaded from the tier that keeps it beside the
    /// object's slices (one SSD read), so the index needs to cover the hot set only
    /// (docs/OPERATING.md, sizing).
    pub index_max_objects: u64,
    /// Slice size, KiB: objects are fetched and cached in aligned slices of this size.
    /// Default 256: players ask for 256 KiB ranges, and with 1 MiB slices every cold
    /// range cost four times its bytes upstream (docs/BENCHMARKS.md, scenario 4).
    pub slice_kib: u64,
    /// Seconds to wait for one upstream's response head. Default 5. A fetch failing over
    /// across upstreams stops at the reader timeout in all (the budget readers wait).
    pub upstream_connect_timeout_secs: u64,
    /// Idle upstream connections kept for reuse, per upstream. Default 64: enough for
    /// the fills of 64 busy client connections; each idle one holds a read buffer, so
    /// more costs memory outside the cache cap (docs/OPERATING.md, memory).
    pub upstream_idle_connections: usize,
    /// Requests the edge may have in flight to one upstream (fills, forwarded requests,
    /// revalidations; from request to end of body). More wait for a free one, for up to
    /// the reader timeout: a cold storm reaches an origin as a bounded queue. Default 256.
    pub upstream_max_connections: usize,
    /// Slices fetched ahead of a reader, so a cold stream gets more than one slice per
    /// upstream round trip: within the range it asked for, and past it for a sequential
    /// reader (a range starting at the object's start or where the same client's last
    /// range of it ended). Skipped while the upstream is more than half busy. Default 2;
    /// 0 turns it off.
    pub read_ahead_slices: u64,
    /// Keep memory-tier slices in a memory-mapped arena (a memfd) and send them on plain
    /// HTTP/1.1 with `sendfile`, by reference, instead of copying every byte into the
    /// socket. Default true. The arena's pages count as shared memory (`Shmem` in
    /// /proc/meminfo, the `edge_arena_bytes` gauge), within `mem_cache_mb`.
    pub zero_copy: bool,
    /// Seconds a waiting reader tolerates without new bytes from a fill. Default 10.
    pub reader_timeout_secs: u64,
    /// Seconds an upstream body may send nothing before its fetch is failed (its waiters
    /// get the error, its connection is closed, the next request fetches afresh). Default
    /// 10. TCP keepalive also probes idle upstream connections.
    pub upstream_read_timeout_secs: u64,
    /// Seconds an unfinished fill may go without progress before the next request takes
    /// over with a fresh fetch. Default 30.
    pub writer_max_age_secs: u64,
    /// Consecutive failures that open an upstream's circuit. Default 3.
    pub upstream_failures_to_open: u32,
    /// Seconds an open circuit keeps an upstream out of rotation. Default 5.
    pub upstream_open_secs: u64,
    /// Seconds between active health checks of every upstream (`GET upstream_probe_path`).
    /// Default 5; 0 turns them off (failures are then only seen on client traffic).
    pub upstream_probe_secs: u64,
    /// Path the health checks request. Default `/healthz` (origins and edges serve it).
    pub upstream_probe_path: String,
    /// Largest request head accepted (bytes). Default 16384.
    pub max_header_bytes: usize,
    /// Seconds a client has to send its request head. Default 10.
    pub header_read_timeout_secs: u64,
    /// Seconds in-flight requests may run after SIGTERM. Default 30.
    pub shutdown_grace_secs: u64,
    /// Open client connections at most, over every client listener (HTTP/1.1, TLS,
    /// HTTP/3); more are closed as soon as accepted, with a warning in the log at most
    /// every 10 s. Default 100000; 0: no cap. The admin listener is not counted.
    pub max_connections: usize,
    /// Open connections from one client address at most. Default 1024, sized for
    /// carrier-grade NAT (many listeners behind one address); 0: no cap.
    pub max_connections_per_ip: usize,
    /// Seconds a response may wait on a client that reads nothing before its connection
    /// (HTTP/3: its stream) is closed. Default 60, like nginx's `send_timeout`.
    pub send_timeout_secs: u64,
    /// File the access log is appended to (one JSON line per request). Empty (the
    /// default): no access log.
    pub access_log: String,
    /// This POP's name in `Via` headers, unique per POP: a request that arrives with it
    /// in `Via` is a parent loop and refused (508). Empty (the default): `HOST:PORT`, the
    /// machine's hostname and the listen port.
    pub name: String,
    /// Address of the TLS listener (HTTP/2 and HTTP/1.1 by ALPN, rustls). Unset: no TLS.
    pub tls_listen: Option<SocketAddr>,
    /// `[[tls_certs]]` for the TLS listener: `cert`, `key` (PEM files) and the SNI
    /// `names` each answers; the first also answers unknown names. Re-read on SIGHUP.
    pub tls_certs: Vec<segue_core::tls::CertSettings>,
    /// UDP address of the HTTP/3 listener (QUIC, same certificates as `tls_certs`);
    /// TCP responses then advertise it in `Alt-Svc`. Unset: no HTTP/3.
    pub h3_listen: Option<SocketAddr>,
    /// Serve `/metrics` on the client listeners too. With an admin listener it is served
    /// there (behind the admin token) and, unless this is set, not on the public port;
    /// without one it stays on the client listener. Default false.
    pub public_metrics: bool,
    /// Peers (CIDRs or addresses, e.g. the load balancers in front) whose
    /// `tokens.country_header` is believed. From anyone else the header is removed and the
    /// country comes from `geoip_db`. Default none.
    pub trusted_proxies: Vec<String>,
    /// A GeoIP database in the MaxMind format (GeoLite2/GeoIP2 Country or City) giving a
    /// client address's country, for country-bound signed URLs. Re-read on SIGHUP. Empty
    /// (the default): a country is known only from a trusted proxy's header.
    pub geoip_db: String,
    /// The country of a client that neither a trusted proxy's header nor `geoip_db`
    /// places (loopback and private addresses; a lab without a database), for
    /// country-bound signed URLs. Empty (the default): unknown, and such URLs are refused.
    pub unknown_country: String,
    /// Address of the admin API listener (purge, stats, pre-warm). Unset: no admin API.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer tokens accepted by the admin API (at least one when `admin_listen` is set).
    pub admin_tokens: Vec<String>,
    /// Signed-URL checks.
    pub tokens: TokenSettings,
    /// Per-path-prefix rules (`[[paths]]`): slicing, signed URLs, methods, default TTL.
    /// Default: `/a/` and `/enc/` (audio) sliced and signed; every other path cached whole,
    /// unsigned, GET and HEAD only. See `crate::policy::PathPolicy`.
    pub paths: Vec<crate::policy::PathPolicy>,
    /// Targeted cache-control fields obeyed, first valid one wins over `Cache-Control`
    /// and `Expires` (RFC 9213). Default `["segue-cache-control", "cdn-cache-control"]`.
    pub targeted_cache_control: Vec<String>,
    /// Targeted fields removed from responses before clients see them (a POP facing
    /// listeners; a parent POP keeps them for its children). Default: none.
    pub strip_targeted: Vec<String>,
    /// Origins whose pages may read what this POP serves (CORS: a web player fetching
    /// audio by Range): `*` (default; signed URLs authorise themselves and no cookie is
    /// used) or a list of `https://app.example`; empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// Register with a control plane and heartbeat to it; the answers carry this POP's
    /// jobs (pre-warm, purge) and embargoes. Unset: standalone.
    pub control_plane: Option<ControlPlaneSettings>,
}

/// `[control_plane]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneSettings {
    /// The control plane's base URL, e.g. `http://cp.internal:7080`.
    pub url: String,
    /// This POP's bearer token (the control plane's `pop_tokens` entry for `name`).
    /// `SEGUE_POP_TOKEN` in the environment sets it too.
    #[serde(default)]
    pub token: String,
    /// The region this POP serves (one of the control plane's `regions`).
    pub region: String,
    /// Where clients reach this POP. Default `http://LISTEN`.
    #[serde(default)]
    pub public_url: String,
    /// Where operators reach the admin API (shown by the control plane). Default
    /// `http://ADMIN_LISTEN`, empty without one.
    #[serde(default)]
    pub admin_url: String,
    /// Seconds between heartbeats. Default 5.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// This POP's capacity: with this many client connections open or more, or this much
    /// egress (Mbit/s, over the last heartbeat interval) or more, it reports itself
    /// saturated and the app API sends new streams to another POP of the region or to
    /// its overflow CDN. Default 0 for each: never saturated on that count.
    #[serde(default)]
    pub capacity_connections: u64,
    #[serde(default)]
    pub capacity_egress_mbps: u64,
}

fn default_heartbeat_secs() -> u64 {
    5
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstreams: Vec::new(),
            upstream_tls: Default::default(),
            mem_cache_mb: 1024,
            mem_eviction: Eviction::TinyLfu,
            ssd_cache_dir: String::new(),
            ssd_cache_mb: 10240,
            ssd_admit_after: 2,
            index_max_objects: 0,
            slice_kib: 256,
            upstream_connect_timeout_secs: 5,
            upstream_idle_connections: 64,
            upstream_max_connections: 256,
            read_ahead_slices: 2,
            zero_copy: true,
            reader_timeout_secs: 10,
            upstream_read_timeout_secs: 10,
            writer_max_age_secs: 30,
            upstream_failures_to_open: 3,
            upstream_open_secs: 5,
            upstream_probe_secs: 5,
            upstream_probe_path: "/healthz".into(),
            max_header_bytes: 16 * 1024,
            header_read_timeout_secs: 10,
            shutdown_grace_secs: 30,
            send_timeout_secs: 60,
            max_connections: 100_000,
            max_connections_per_ip: 1024,
            access_log: String::new(),
            name: String::new(),
            tls_listen: None,
            tls_certs: Vec::new(),
            h3_listen: None,
            admin_listen: None,
            trusted_proxies: Vec::new(),
            public_metrics: false,
            geoip_db: String::new(),
            unknown_country: String::new(),
            admin_tokens: Vec::new(),
            tokens: TokenSettings::default(),
            control_plane: None,
            paths: crate::policy::defaults(),
            targeted_cache_control: vec!["segue-cache-control".into(), "cdn-cache-control".into()],
            strip_targeted: Vec::new(),
            cors_origins: vec!["*".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Eviction {
    TinyLfu,
    S3Fifo,
    Lru,
}

impl Validate for Config {
    fn validate(&self) -> Result<(), FieldError> {
        ensure(!self.upstreams.is_empty(), "upstreams", "at least one upstream (http://host:port) is required")?;
        for o in &self.cors_origins {
            let origin = o == "*"
                || (o.starts_with("http://") || o.starts_with("https://"))
                    && o.trim_end_matches('/').matches('/').count() == 2
                    && http::HeaderValue::from_str(o).is_ok();
            ensure(origin, "cors_origins", "each is * or an origin such as https://app.example (no path)")?;
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let ok = u.parse::<http::Uri>().ok().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some()
                    && matches!(uri.path(), "" | "/")
            });
            ensure(ok, &format!("upstreams[{i}]"), format!("{u:?} is not an http(s)://host:port URL"))?;
        }
        ensure((1..=1024 * 1024).contains(&self.mem_cache_mb), "mem_cache_mb", "must be 1-1048576")?;
        ensure((16..=64 * 1024).contains(&self.slice_kib), "slice_kib", "must be 16-65536")?;
        ensure((64..=1 << 30).contains(&self.ssd_cache_mb), "ssd_cache_mb", "must be 64-1073741824")?;
        ensure((1..=100).contains(&self.ssd_admit_after), "ssd_admit_after", "must be 1-100")?;
        ensure(self.index_max_objects <= 1 << 32, "index_max_objects", "must be 0 (automatic) to 4294967296")?;
        ensure(
            (1..=300).contains(&self.upstream_connect_timeout_secs),
            "upstream_connect_timeout_secs",
            "must be 1-300",
        )?;
        ensure((1..=4096).contains(&self.upstream_idle_connections), "upstream_idle_connections", "must be 1-4096")?;
        ensure((1..=65_536).contains(&self.upstream_max_connections), "upstream_max_connections", "must be 1-65536")?;
        ensure(self.read_ahead_slices <= 8, "read_ahead_slices", "must be 0-8")?;
        ensure((1..=600).contains(&self.reader_timeout_secs), "reader_timeout_secs", "must be 1-600")?;
        ensure((1..=600).contains(&self.upstream_read_timeout_secs), "upstream_read_timeout_secs", "must be 1-600")?;
        ensure((1..=3600).contains(&self.writer_max_age_secs), "writer_max_age_secs", "must be 1-3600")?;
        ensure(self.upstream_probe_secs <= 3600, "upstream_probe_secs", "must be 0-3600")?;
        ensure(self.upstream_probe_path.starts_with('/'), "upstream_probe_path", "must start with '/'")?;
        ensure(self.upstream_failures_to_open >= 1, "upstream_failures_to_open", "must be at least 1")?;
        ensure((8 * 1024..=1024 * 1024).contains(&self.max_header_bytes), "max_header_bytes", "must be 8192-1048576")?;
        ensure((1..=300).contains(&self.header_read_timeout_secs), "header_read_timeout_secs", "must be 1-300")?;
        ensure((1..=3600).contains(&self.send_timeout_secs), "send_timeout_secs", "must be 1-3600")?;
        ensure(
            self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
            "name",
            "must be letters, digits, '-' or '.'",
        )?;
        if self.h3_listen.is_some() {
            ensure(!self.tls_certs.is_empty(), "h3_listen", "needs certificates in tls_certs")?;
        }
        if self.tls_listen.is_some() || self.h3_listen.is_some() {
            // Read the files now: a bad certificate stops start-up (or a reload) naming it.
            segue_core::tls::server_config(&self.tls_certs).map_err(|e| match e {
                segue_core::Error::Config { file, field, message } => {
                    FieldError::new(&field, format!("{}: {message}", file.display()))
                }
                e => FieldError::new("tls_certs", e.to_string()),
            })?;
        }
        if self.admin_listen.is_some() {
            ensure(!self.admin_tokens.is_empty(), "admin_tokens", "at least one token is required with admin_listen")?;
        }
        for (i, t) in self.admin_tokens.iter().enumerate() {
            ensure(
                t.len() >= 16 && !t.contains(char::is_whitespace),
                &format!("admin_tokens[{i}]"),
                "must be at least 16 characters, no spaces",
            )?;
        }
        crate::policy::validate(&self.paths)?;
        for (field, names) in
            [("targeted_cache_control", &self.targeted_cache_control), ("strip_targeted", &self.strip_targeted)]
        {
            for (i, n) in names.iter().enumerate() {
                ensure(
                    http::HeaderName::from_bytes(n.as_bytes()).is_ok(),
                    &format!("{field}[{i}]"),
                    format!("{n:?} is not a header field name"),
                )?;
            }
        }
        if let Some(cp) = &self.control_plane {
            ensure(
                cp.url.starts_with("http://") || cp.url.starts_with("https://"),
                "control_plane.url",
                "must be an http:// or https:// URL",
            )?;
            ensure(
                cp.token.len() >= 16 && !cp.token.contains(char::is_whitespace),
                "control_plane.token",
                "must be at least 16 characters, no spaces (or set SEGUE_POP_TOKEN)",
            )?;
            ensure(!cp.region.is_empty(), "control_plane.region", "is required")?;
            ensure((1..=300).contains(&cp.heartbeat_secs), "control_plane.heartbeat_secs", "must be 1-300")?;
        }
        self.tokens.verifier().map(|_| ())
    }
}

impl Config {
    /// The name in `Via`: the configured one, or `HOST:PORT`.
    pub fn via_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String =
            host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
        let host = if host.is_empty() { "segue-edge".to_owned() } else { host };
        format!("{host}:{}", self.listen.port())
    }

    /// The TLS client config for `https://` upstreams and control plane. Built (and its
    /// files read) only when one is configured; otherwise one trusting nobody, which
    /// plain `http://` never uses.
    pub fn tls_client(&self) -> Result<Arc<rustls::ClientConfig>, segue_core::Error> {
        let https = |u: &str| u.starts_with("https://");
        let cp = self.control_plane.as_ref().is_some_and(|c| https(&c.url));
        if self.upstreams.iter().any(|u| https(u)) || cp {
            return segue_core::tls::client_config(&self.upstream_tls);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| segue_core::Error::Config {
                file: "tls".into(),
                field: "upstream_tls".into(),
                message: e.to_string(),
            })?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    pub fn upstream_settings(&self, via: String, tls: Arc<rustls::ClientConfig>) -> crate::upstream::Settings {
        let reader = Duration::from_secs(self.reader_timeout_secs);
        crate::upstream::Settings {
            head_timeout: Duration::from_secs(self.upstream_connect_timeout_secs),
            read_timeout: Duration::from_secs(self.upstream_read_timeout_secs),
            // A little under the readers' timeout, so they get the fetch's own error.
            failover_budget: reader.saturating_sub(Duration::from_millis(500)).max(Duration::from_secs(1)),
            failures_to_open: self.upstream_failures_to_open,
            open_for: Duration::from_secs(self.upstream_open_secs),
            idle_connections: self.upstream_idle_connections,
            max_connections: self.upstream_max_connections,
            via,
            tls,
        }
    }

    /// The memory index's capacity in object records (`index_max_objects`, or derived
    /// from the tiers' sizes).
    pub fn index_objects(&self) -> u64 {
        if self.index_max_objects > 0 {
            return self.index_max_objects;
        }
        let ssd = if self.ssd_cache_dir.is_empty() { 0 } else { self.ssd_cache_mb };
        (self.mem_cache_mb + ssd).clamp(10_000, 4_000_000)
    }

    /// The SSD tier's settings, when one is configured.
    pub fn ssd(&self) -> Option<crate::cache::SsdOptions> {
        (!self.ssd_cache_dir.is_empty()).then(|| crate::cache::SsdOptions {
            dir: self.ssd_cache_dir.clone().into(),
            bytes: self.ssd_cache_mb << 20,
            admit_after: self.ssd_admit_after,
            simulated: false,
        })
    }

    /// Load `path` (or defaults when `None`) without validating: flags may still override.
    pub fn load(path: Option<&Path>) -> segue_core::Result<Self> {
        segue_core::config::load_or_default(path)
    }
}
