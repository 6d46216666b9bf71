//! `segue`: one binary, one subcommand per role. This file only parses arguments and
//! hands a config to the role's `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use segue_core::config::validated;

mod child;
mod keys;
mod lab;
mod listen;
mod offline;
mod plays;
mod recs;
mod release;
mod sim;
mod up;

#[derive(Parser)]
#[command(
    name = "segue",
    version,
    about = "Segue: music-streaming delivery stack (origin, edge, control plane, app API)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole stack on this machine with embedded defaults and a demo catalog.
    ///
    /// Creates the demo catalog (synthetic music packaged into five Ogg Vorbis tiers) in
    /// DATA_DIR/origin on first start, then runs the origin, an edge (POP) in front of it,
    /// and the control plane (SQLite in DATA_DIR) the edge registers with. The release
    /// manager token is written to DATA_DIR/control-plane.token. Stop with Ctrl-C or
    /// SIGTERM.
    Up {
        /// Where all state lives.
        #[arg(long, default_value = "./data", value_name = "DIR")]
        data_dir: PathBuf,
        /// Address of the origin listener.
        #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
        origin_listen: SocketAddr,
        /// Address of the edge (POP) listener clients fetch audio from.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        edge_listen: SocketAddr,
        /// Address of the control plane API (releases, purges; SQLite in DATA_DIR).
        #[arg(long, default_value = "127.0.0.1:7080", value_name = "ADDR")]
        control_plane_listen: SocketAddr,
        /// Address of the app API (catalog, search, stream URLs; SQLite in DATA_DIR).
        #[arg(long, default_value = "127.0.0.1:7090", value_name = "ADDR")]
        app_api_listen: SocketAddr,
        /// Length of each demo track in seconds.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=600))]
        demo_track_secs: u32,
        /// How Subsonic players get audio: `redirect` (a 302 to the signed edge URL) or
        /// `proxy` (relayed by the app API, for players that cannot follow redirects).
        #[arg(long, default_value = "redirect", value_parser = ["redirect", "proxy"])]
        subsonic_stream: String,
    },
    /// A fleet on this machine: the origin, a shield POP in front of it (with --shield),
    /// POPs spread over listener regions (eu, us, ap) behind it, the control plane they
    /// register with and the app API, with the demo catalog. Prints where each one is.
    ///
    /// Ports: origin P, control plane P+1, app API P+2, shield P+10, POPs P+11 on
    /// (P = --ports-from; 0: every listener on a free port). Each POP keeps its cache and
    /// access log in DATA_DIR/pops/NAME. Stop with Ctrl-C or SIGTERM.
    Lab(lab::LabArgs),
    Sim(sim::SimArgs),
    /// Package masters (WAV or FLAC files, or folders of them) into the origin's store.
    ///
    /// Each master is decoded, encoded into the five Ogg Vorbis tiers with seek tables,
    /// and stored under its content id; audio that is already stored is skipped. Masters
    /// are processed in parallel with a progress bar on stderr and a summary at the end.
    /// Exits 1 if any master failed.
    Ingest {
        /// Object store: a directory, or s3://bucket/prefix.
        #[arg(long, value_name = "DIR|URL")]
        data_dir: String,
        /// Origin config file, for the [s3] settings of an s3:// store.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON object per master on stdout (content_id, and per tier: key,
        /// bytes, samples, sample_rate, seek_key).
        #[arg(long)]
        json: bool,
        /// Masters at once (each already encodes its five tiers in parallel).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        /// Master files or folders.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Run a POP: serve byte ranges from a memory slice cache (and an SSD tier) in front of
    /// upstreams.
    ///
    /// Missing slices are fetched once from the first healthy upstream (parent POPs, then
    /// origins) and streamed to every waiting client as they arrive.
    Edge {
        /// TOML config file (see config/edge.toml); flags below override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen address, e.g. 127.0.0.1:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Upstream base URL (repeat, in order of preference), e.g. http://127.0.0.1:7070.
        #[arg(long = "upstream", value_name = "URL")]
        upstreams: Vec<String>,
        /// Memory cache size in MiB.
        #[arg(long, value_name = "N")]
        mem_cache_mb: Option<u64>,
        /// Directory of the SSD tier (recovered at start: a restarted POP stays warm).
        #[arg(long, value_name = "DIR")]
        ssd_cache_dir: Option<PathBuf>,
        /// SSD tier size in MiB.
        #[arg(long, value_name = "N")]
        ssd_cache_mb: Option<u64>,
        /// Admin API listen address (purge, stats, pre-warm); tokens come from the config
        /// file's admin_tokens or SEGUE_ADMIN_TOKEN.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
        /// TLS listen address (HTTP/2 and HTTP/1.1 by ALPN); needs --tls-cert and --tls-key
        /// or [[tls_certs]] in the config file.
        #[arg(long, value_name = "ADDR")]
        tls_listen: Option<SocketAddr>,
        /// PEM certificate chain for the TLS listener (replaces the config's tls_certs).
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<String>,
        /// PEM private key for --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<String>,
        /// HTTP/3 (QUIC) UDP listen address; uses the TLS certificates.
        #[arg(long, value_name = "ADDR")]
        h3_listen: Option<SocketAddr>,
    },
    /// Run the control plane: POP registry and health, release schedules that pre-warm
    /// every POP of a region before its drop, embargoes, purge fan-out.
    ///
    /// State is in SQLite (default) or PostgreSQL (`database = "postgres://..."`). POPs
    /// register by heartbeat and pull their jobs. SEGUE_CP_TOKEN adds a release-manager
    /// API token.
    ControlPlane {
        /// TOML config file (see config/control-plane.toml for every key and default).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// API listen address.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Database URL: sqlite://PATH or postgres://USER:PASS@HOST/DB.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
    /// Run the app API: the catalog (artists, albums, tracks with the audio facts of their
    /// packaging manifests), users with API keys, `/openapi.json`.
    ///
    /// State is in SQLite (default) or PostgreSQL. SEGUE_APP_ADMIN_TOKEN adds an admin
    /// token.
    AppApi {
        /// TOML config file (see config/app-api.toml for every key and default).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// API listen address.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Database URL: sqlite://PATH or postgres://USER:PASS@HOST/DB.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
    /// Play pipeline tools: apply the JetStream log (consume), check the audit chain
    /// (verify), write a month's royalty report (report).
    ///
    /// Each reads the app API's config (its database, and its [plays] section).
    Plays {
        #[command(subcommand)]
        action: plays::PlaysAction,
        /// The app API's TOML config file.
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Database URL (overrides the config's).
        #[arg(long, global = true, value_name = "URL")]
        database: Option<String>,
    },
    /// Offline listening: sync licensed, encrypted audio into a device directory, renew
    /// its licenses, show them. Play it with `segue play --offline --device-dir DIR`.
    Offline {
        #[command(subcommand)]
        action: offline::OfflineAction,
        /// The device directory (made on first sync).
        #[arg(long, global = true, value_name = "DIR")]
        device_dir: Option<PathBuf>,
        /// App API base URL.
        #[arg(long, global = true, default_value = "http://127.0.0.1:7090", value_name = "URL")]
        app_api: String,
        /// File holding the listener's API key.
        #[arg(long, global = true, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Content-key custody: rotate the key-encryption key (rewraps content keys only).
    ///
    /// Reads the origin's config: its object store and its [drm] KEKs.
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
        /// The origin's TOML config file.
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Object store (overrides the config's): a directory, or s3://bucket/prefix.
        #[arg(long, global = true, value_name = "DIR|URL")]
        data_dir: Option<String>,
    },
    /// Recommendation batch jobs: train implicit ALS on the play log.
    ///
    /// Reads the app API's config (its database).
    Recs {
        #[command(subcommand)]
        action: recs::RecsAction,
        /// The app API's TOML config file.
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Database URL (overrides the config's).
        #[arg(long, global = true, value_name = "URL")]
        database: Option<String>,
    },
    /// Create, schedule, follow and cancel releases on the control plane.
    ///
    /// The API token comes from SEGUE_CP_TOKEN or --token-file.
    Release {
        #[command(subcommand)]
        action: release::ReleaseAction,
        /// Control plane base URL.
        #[arg(long, global = true, env = "SEGUE_CONTROL_PLANE", default_value = "http://127.0.0.1:7080")]
        control_plane: String,
        /// File holding the API token.
        #[arg(long, global = true, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Print the control plane's JSON instead of a summary.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Purge content from every POP (or one region's) through the control plane, and
    /// wait until each POP has done it.
    Purge {
        /// Purge this content id (every tier).
        #[arg(long, group = "what")]
        content_id: Option<String>,
        /// Purge every object whose path starts with this.
        #[arg(long, group = "what")]
        prefix: Option<String>,
        /// Purge by Surrogate-Key tag (a content id, or CID/tier).
        #[arg(long, group = "what")]
        tag: Option<String>,
        /// Mark stale (revalidated on next request) instead of removing.
        #[arg(long)]
        soft: bool,
        /// Only this region's POPs.
        #[arg(long)]
        region: Option<String>,
        /// Return at once instead of waiting for every POP.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, env = "SEGUE_CONTROL_PLANE", default_value = "http://127.0.0.1:7080")]
        control_plane: String,
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Generate load against an edge or origin over HTTP/1.1, HTTP/1.1+TLS, HTTP/2 or
    /// HTTP/3 and report throughput and exact latency percentiles.
    ///
    /// Scenario `ranges` (default): paths come from --path (repeatable) and/or
    /// --paths-file (one per line), most popular first; each request picks one by Zipf
    /// popularity. Sizes are learned with a HEAD per path before the run.
    ///
    /// Scenario `plays`: post batches of --batch play events (fresh idempotency keys,
    /// plays of --track ids by --users listeners) to an app API's /v1/play-events with
    /// the token in --token-file; reports events/s and batch latency.
    ///
    /// Fleet scenarios, against a running `segue lab` (--lab, its data directory):
    /// --listeners simulated listeners do what the player does (stream URL from the app
    /// API, first 256 KiB, ranges at --speed times playback, the next track prefetched
    /// 30 s before the end, skips, seeks, play events), Zipf-popular tracks, spread over
    /// the lab's regions. `listeners` just plays; `album-drop` purges the demo album,
    /// releases it to two regions after --lead-secs (--stagger-secs apart), pre-warmed
    /// with --prewarm, and has --listeners per region press play at their drop;
    /// `pop-outage` kills a POP (SIGKILL) a third of the way in; `origin-outage` kills the
    /// origin; `overflow` (a lab with --overflow --pop-capacity-connections N) adds a
    /// surge of listeners for the middle third, so POPs report saturation and the app
    /// API sends new streams to the overflow CDN. Each writes report.json,
    /// origin-egress.svg, ttfb.svg and pops.svg to --out.
    Loadtest {
        /// ranges (audio byte ranges from an edge or origin), plays (play events to an
        /// app API), or a fleet scenario: listeners, album-drop, pop-outage, origin-outage,
        /// overflow.
        #[arg(long, default_value = "ranges", value_parser = ["ranges", "plays", "listeners", "album-drop", "pop-outage", "origin-outage", "overflow"])]
        scenario: String,
        /// Fleet scenarios: the lab's data directory (where `segue lab` wrote lab.json).
        #[arg(long, value_name = "DIR")]
        lab: Option<PathBuf>,
        /// Fleet scenarios: the folder for report.json and the plots.
        #[arg(long, value_name = "DIR", default_value = "./loadtest-out")]
        out: PathBuf,
        /// Fleet scenarios: simulated listeners (album-drop: per region).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        listeners: u32,
        /// Fleet scenarios: playback speed (1 = real time).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Fleet scenarios: the tier listeners stream.
        #[arg(long, default_value = "high")]
        tier: String,
        /// album-drop: pre-warm every POP of each region before its drop.
        #[arg(long)]
        prewarm: bool,
        /// album-drop: the second region drops this many seconds after the first.
        #[arg(long, default_value_t = 0)]
        stagger_secs: u64,
        /// album-drop: seconds from the start of the run to the first drop.
        #[arg(long, default_value_t = 15)]
        lead_secs: u64,
        /// plays: file holding the bearer token (an admin token posts for many users).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// plays: a track id to play (repeat, or comma-separated).
        #[arg(long = "track", value_name = "ID", value_delimiter = ',')]
        tracks: Vec<String>,
        /// plays: events per request.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// plays: distinct listeners the events are spread over.
        #[arg(long, default_value_t = 10_000)]
        users: u64,
        /// Target, e.g. http://127.0.0.1:8080 (h1) or https://localhost:8443 (h1-tls, h2,
        /// h3; for h3 the port is the edge's UDP h3_listen port). Not for fleet scenarios.
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// Wire protocol: h1, h1-tls, h2 or h3.
        #[arg(long, default_value = "h1", value_parser = clap::value_parser!(segue_core::client::Protocol))]
        protocol: segue_core::client::Protocol,
        /// PEM file of CA certificates to trust for TLS targets.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// TLS server name (SNI and certificate check); default: the target's host.
        #[arg(long, value_name = "NAME")]
        server_name: Option<String>,
        /// A path to request (repeat).
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<String>,
        /// A file with one path per line.
        #[arg(long, value_name = "FILE")]
        paths_file: Option<PathBuf>,
        /// Request random aligned ranges of this many KiB (0: whole objects).
        #[arg(long, default_value_t = 256, value_name = "KIB")]
        range_kib: u64,
        /// Zipf exponent of path popularity (0: uniform).
        #[arg(long, default_value_t = 0.9)]
        zipf: f64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        connections: u32,
        /// Concurrent requests per connection (h2 and h3 only).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
        streams: u32,
        /// h2: the largest DATA frame accepted, in KiB (16, browsers' default, up to 16383).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(16..=16383))]
        h2_max_frame_kib: u32,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Stop after this many requests instead of after a duration.
        #[arg(long)]
        requests: Option<u64>,
        /// Storm: open every connection, then send one request on each at the same moment.
        #[arg(long)]
        storm: bool,
        /// Random seed (the same seed gives the same request sequence).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write every request sent (`path first-byte last-byte`, one per line, in the
        /// order sent) to this file, to replay the same trace in a cache simulation.
        #[arg(long, value_name = "FILE")]
        trace_file: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Play a queue of tracks into a WAV file, the way an app's player does: stream URLs
    /// from the app API, audio by HTTP Range from the edge (going on from the next byte on
    /// the second POP when one fails), decoded as it arrives and trimmed to the exact
    /// samples so consecutive tracks join gaplessly.
    ///
    /// Reports time to first audio, bytes fetched, POP failovers, gaps, underruns and
    /// rebuffers (with --speed), skip latencies, and a warning when the fetches are too
    /// slow for the tier. Exits 1 naming the track and URL when a track cannot be played.
    ///
    /// Reports each play to the app API the way an app does: written to an on-device
    /// outbox first (fsynced), sent in batches with retry, removed only once
    /// acknowledged; plays that could not be sent wait for the next run (or --sync).
    Play(Box<listen::PlayArgs>),
    /// Serve packaged audio by byte range from an object store (filesystem or S3).
    Origin {
        /// TOML config file (see config/origin.toml); flags below override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen address, e.g. 127.0.0.1:7070.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Object store: a directory, or s3://bucket/prefix.
        #[arg(long, value_name = "DIR|URL")]
        data_dir: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    segue_core::telemetry::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("segue: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("segue: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("segue: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Usage errors (bad config or flag values) exit 2, like clap's own; the rest exit 1.
/// The API token from a file, if one is named.
/// A progress bar of `len` steps drawn with `template` (indicatif draws nothing when
/// stderr is not a terminal).
pub(crate) fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub(crate) fn read_token(file: Option<PathBuf>) -> Result<Option<String>, Failure> {
    file.map(|f| {
        std::fs::read_to_string(&f)
            .map(|t| t.trim().to_owned())
            .map_err(|e| Failure::Usage(format!("{}: {e}", f.display())))
    })
    .transpose()
}

pub(crate) enum Failure {
    Usage(String),
    Runtime(String),
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Origin { config, listen, data_dir } => {
            let mut cfg = segue_origin::Config::load(config.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            let source = config.unwrap_or_else(|| PathBuf::from("(flags)"));
            let cfg = validated(&source, cfg).map_err(|e| Failure::Usage(e.to_string()))?;
            segue_origin::run(cfg, segue_core::server::shutdown_signal())
                .await
                .map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Up {
            data_dir,
            origin_listen,
            edge_listen,
            control_plane_listen,
            app_api_listen,
            demo_track_secs,
            subsonic_stream,
        } => {
            let listen = [origin_listen, edge_listen, control_plane_listen, app_api_listen];
            let proxy = subsonic_stream == "proxy";
            up::up(data_dir, listen, demo_track_secs, proxy).await
        }
        Command::Lab(args) => lab::lab(args).await,
        Command::Sim(args) => sim::sim(args).await,
        Command::Edge {
            config,
            listen,
            upstreams,
            mem_cache_mb,
            ssd_cache_dir,
            ssd_cache_mb,
            admin_listen,
            tls_listen,
            tls_cert,
            tls_key,
            h3_listen,
        } => {
            // The same steps at start and on every SIGHUP: read the file, apply the flags,
            // validate.
            let load = move || -> Result<segue_edge::Config, String> {
                let mut cfg = segue_edge::Config::load(config.as_deref()).map_err(|e| e.to_string())?;
                if let Some(l) = listen {
                    cfg.listen = l;
                }
                if !upstreams.is_empty() {
                    cfg.upstreams = upstreams.clone();
                }
                if let Some(m) = mem_cache_mb {
                    cfg.mem_cache_mb = m;
                }
                if let Some(d) = &ssd_cache_dir {
                    cfg.ssd_cache_dir = d.to_string_lossy().into_owned();
                }
                if let Some(m) = ssd_cache_mb {
                    cfg.ssd_cache_mb = m;
                }
                if let Some(a) = admin_listen {
                    cfg.admin_listen = Some(a);
                }
                if let Some(a) = tls_listen {
                    cfg.tls_listen = Some(a);
                }
                if let Some(a) = h3_listen {
                    cfg.h3_listen = Some(a);
                }
                if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                    cfg.tls_certs =
                        vec![segue_core::tls::CertSettings { cert: cert.clone(), key: key.clone(), names: Vec::new() }];
                }
                if let (Some(cp), Ok(t)) = (cfg.control_plane.as_mut(), std::env::var("SEGUE_POP_TOKEN")) {
                    if !t.is_empty() {
                        cp.token = t;
                    }
                }
                // A token from the environment keeps it out of argv and config files.
                if let Ok(t) = std::env::var("SEGUE_ADMIN_TOKEN") {
                    if !t.is_empty() && !cfg.admin_tokens.contains(&t) {
                        cfg.admin_tokens.push(t);
                    }
                }
                let source = config.clone().unwrap_or_else(|| PathBuf::from("(flags)"));
                validated(&source, cfg).map_err(|e| e.to_string())
            };
            let cfg = load().map_err(Failure::Usage)?;
            segue_edge::run(cfg, load, segue_core::server::shutdown_signal())
                .await
                .map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Loadtest {
            scenario,
            lab,
            out,
            listeners,
            speed,
            tier,
            prewarm,
            stagger_secs,
            lead_secs,
            zipf,
            duration_secs,
            seed,
            json,
            ..
        } if !["ranges", "plays"].contains(&scenario.as_str()) => {
            let lab = lab.ok_or_else(|| {
                Failure::Usage(format!(
                    "the {scenario} scenario needs --lab DIR (a running `segue lab`'s data directory)"
                ))
            })?;
            let opts = segue_loadtest::scenario::Options {
                kind: scenario.parse().map_err(Failure::Usage)?,
                lab,
                out,
                listeners: listeners as usize,
                duration: std::time::Duration::from_secs(duration_secs),
                speed,
                tier,
                zipf,
                prewarm,
                stagger: std::time::Duration::from_secs(stagger_secs),
                lead: std::time::Duration::from_secs(lead_secs),
                seed,
            };
            let report = segue_loadtest::scenario::run(opts).await.map_err(|e| match e {
                segue_loadtest::scenario::Error::Usage(m) => Failure::Usage(m),
                e => Failure::Runtime(e.to_string()),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                println!("{}", report.table());
            }
            Ok(())
        }
        Command::Loadtest {
            scenario,
            token_file,
            tracks,
            batch,
            users,
            target,
            connections,
            duration_secs,
            seed,
            json,
            ..
        } if scenario == "plays" => {
            let token = read_token(token_file)?
                .ok_or_else(|| Failure::Usage("the plays scenario needs --token-file".into()))?;
            let target = target.ok_or_else(|| Failure::Usage("the plays scenario needs --target URL".into()))?;
            let opts = segue_loadtest::plays::PlaysOptions {
                target: segue_loadtest::target(&target, segue_core::client::Protocol::Http1, None, None)
                    .map_err(|e| Failure::Usage(e.to_string()))?,
                token,
                tracks,
                users,
                batch,
                connections: connections as usize,
                duration: std::time::Duration::from_secs(duration_secs),
                seed,
            };
            let report = segue_loadtest::plays::run(opts).await.map_err(|e| Failure::Runtime(e.to_string()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                println!("{}", report.table());
            }
            Ok(())
        }
        Command::Loadtest {
            target,
            protocol,
            ca,
            server_name,
            streams,
            h2_max_frame_kib,
            paths,
            paths_file,
            range_kib,
            zipf,
            connections,
            duration_secs,
            requests,
            storm,
            seed,
            trace_file,
            json,
            ..
        } => {
            let mut paths = paths;
            if let Some(f) = &paths_file {
                let text = std::fs::read_to_string(f).map_err(|e| Failure::Usage(format!("{}: {e}", f.display())))?;
                paths.extend(
                    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned),
                );
            }
            if !(0.0..=5.0).contains(&zipf) {
                return Err(Failure::Usage("--zipf must be between 0 and 5".into()));
            }
            let target = target.ok_or_else(|| Failure::Usage("the ranges scenario needs --target URL".into()))?;
            let opts = segue_loadtest::Options {
                target: segue_loadtest::target(&target, protocol, server_name.as_deref(), ca.as_deref())
                    .map_err(|e| Failure::Usage(e.to_string()))?
                    .with_h2_max_frame((h2_max_frame_kib * 1024).min((1 << 24) - 1)),
                paths,
                mix: if range_kib == 0 { segue_loadtest::Mix::Whole } else { segue_loadtest::Mix::Ranges },
                range_bytes: range_kib * 1024,
                zipf,
                connections: connections as usize,
                streams: streams as usize,
                duration: std::time::Duration::from_secs(duration_secs),
                requests,
                storm,
                seed,
                trace: trace_file,
            };
            let report = segue_loadtest::run(opts).await.map_err(|e| Failure::Runtime(e.to_string()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                println!("{}", report.table());
            }
            Ok(())
        }
        Command::Ingest { data_dir, config, json, jobs, paths } => ingest(data_dir, config, json, jobs, paths).await,
        Command::ControlPlane { config, listen, database } => {
            let mut cfg =
                segue_control_plane::Config::load(config.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = database {
                cfg.database = d;
            }
            if let Ok(t) = std::env::var("SEGUE_CP_TOKEN") {
                if !t.is_empty() && !cfg.api_tokens.contains(&t) {
                    cfg.api_tokens.push(t);
                }
            }
            let source = config.unwrap_or_else(|| PathBuf::from("(flags)"));
            let cfg = validated(&source, cfg).map_err(|e| Failure::Usage(e.to_string()))?;
            segue_control_plane::run(cfg, segue_core::server::shutdown_signal())
                .await
                .map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::AppApi { config, listen, database } => {
            let cfg = app_api_config(config, listen, database)?;
            segue_app_api::run(cfg, segue_core::server::shutdown_signal())
                .await
                .map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Play(args) => listen::play(*args).await,
        Command::Offline { action, device_dir, app_api, token_file, json } => {
            let dir = device_dir.ok_or_else(|| Failure::Usage("--device-dir is required".into()))?;
            offline::offline(action, dir, app_api, token_file, json).await
        }
        Command::Keys { action, config, data_dir } => keys::keys(action, config, data_dir).await,
        Command::Recs { action, config, database } => recs::recs(action, app_api_config(config, None, database)?).await,
        Command::Plays { action, config, database } => {
            plays::plays(action, app_api_config(config, None, database)?).await
        }
        Command::Release { action, control_plane, token_file, json } => {
            let client = release::Client::new(control_plane, read_token(token_file)?, json).map_err(Failure::Usage)?;
            client.release(action).await.map_err(Failure::Runtime)
        }
        Command::Purge { content_id, prefix, tag, soft, region, no_wait, control_plane, token_file, json } => {
            if content_id.is_none() && prefix.is_none() && tag.is_none() {
                return Err(Failure::Usage("give one of --content-id, --prefix or --tag".into()));
            }
            let client = release::Client::new(control_plane, read_token(token_file)?, json).map_err(Failure::Usage)?;
            let selector = serde_json::json!({
                "content_id": content_id, "prefix": prefix, "tag": tag, "soft": soft, "region": region,
            });
            client.purge(selector, !no_wait).await.map_err(Failure::Runtime)
        }
    }
}

/// The app API's config: the file (or defaults), then flags and environment, validated.
fn app_api_config(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    database: Option<String>,
) -> Result<segue_app_api::Config, Failure> {
    let mut cfg = segue_app_api::Config::load(config.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(d) = database {
        cfg.database = d;
    }
    if let Ok(t) = std::env::var("SEGUE_APP_ADMIN_TOKEN") {
        if !t.is_empty() && !cfg.admin_tokens.contains(&t) {
            cfg.admin_tokens.push(t);
        }
    }
    if let Ok(k) = std::env::var("SEGUE_SIGNING_KEY") {
        if !k.is_empty() {
            cfg.signing.secret_hex = k;
        }
    }
    if let Ok(t) = std::env::var("SEGUE_ORIGIN_KEY_TOKEN") {
        if !t.is_empty() {
            cfg.drm.origin_key_token = t;
        }
    }
    let source = config.unwrap_or_else(|| PathBuf::from("(flags)"));
    validated(&source, cfg).map_err(|e| Failure::Usage(e.to_string()))
}

async fn ingest(
    data_dir: String,
    config: Option<PathBuf>,
    json: bool,
    jobs: u16,
    paths: Vec<PathBuf>,
) -> Result<(), Failure> {
    use futures_util::StreamExt;
    use segue_origin::ingest;

    let cfg = segue_origin::Config::load(config.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
    let store = segue_core::store::open_store(&data_dir, &cfg.s3)
        .await
        .map_err(|e| Failure::Usage(format!("--data-dir: {e}")))?;
    let keks = cfg.drm.keks().map_err(|e| Failure::Usage(format!("{}: {}", e.field, e.message)))?;
    let files = ingest::collect(&paths).map_err(|e| Failure::Usage(e.to_string()))?;
    if files.is_empty() {
        return Err(Failure::Usage("no WAV or FLAC masters found in the given paths".into()));
    }

    let bar = progress_bar(files.len() as u64, "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} masters  {msg}");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    let (store, keks) = (store.as_ref(), keks.as_ref());
    let mut results = futures_util::stream::iter(files.iter())
        .map(|f| async move { (f, ingest::ingest_file(store, keks, f).await) })
        .buffer_unordered(usize::from(jobs));
    // indicatif draws nothing when stderr is not a terminal; per-master lines still must.
    let say = |line: String| if bar.is_hidden() { eprintln!("{line}") } else { bar.println(line) };
    let (mut created, mut existing, mut failed) = (0usize, 0usize, Vec::new());
    while let Some((file, result)) = results.next().await {
        match result {
            Ok(report) => {
                if report.created {
                    created += 1;
                } else {
                    existing += 1;
                }
                if json {
                    bar.suspend(|| println!("{}", serde_json::to_string(&report).unwrap_or_default()));
                } else {
                    let what = if report.created { "packaged" } else { "already stored" };
                    say(format!(
                        "{what:>14}  {}  {:.1} s  {}",
                        report.content_id,
                        report.duration_secs,
                        file.display()
                    ));
                }
            }
            Err(e) => {
                say(format!("{:>14}  {e}", "failed"));
                failed.push(e.to_string());
            }
        }
        bar.inc(1);
        bar.set_message(file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    }
    bar.finish_and_clear();
    eprintln!(
        "segue ingest: {created} packaged, {existing} already stored, {} failed, in {:.1} s ({})",
        failed.len(),
        started.elapsed().as_secs_f64(),
        store.describe()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Runtime(format!("{} of {} masters failed:\n  {}", failed.len(), files.len(), failed.join("\n  "))))
    }
}

#[cfg(test)]
mod tests {
    /// clap checks its own rules (conflicts, requirements, globals) only when a command
    /// is built: this builds them all.
    #[test]
    fn every_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
