//! `segue`: one binary, one subcommand per role. This file only parses arguments and
//! hands a config to the role's `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use segue_core::config::validated;

#[derive(Parser)]
#[command(name = "segue", version, about = "Segue: music-streaming delivery stack (origin, edge, control plane, app API)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole stack on this machine with embedded defaults and a demo catalog.
    ///
    /// Creates the demo catalog (synthetic music packaged into five Ogg Vorbis tiers) in
    /// DATA_DIR/origin on first start, then serves it. Stop with Ctrl-C or SIGTERM.
    Up {
        /// Where all state lives.
        #[arg(long, default_value = "./data", value_name = "DIR")]
        data_dir: PathBuf,
        /// Address of the origin listener.
        #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
        origin_listen: SocketAddr,
        /// Length of each demo track in seconds.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=600))]
        demo_track_secs: u32,
    },
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
enum Failure {
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
            segue_origin::run(cfg, segue_core::server::shutdown_signal()).await.map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Up { data_dir, origin_listen, demo_track_secs } => up(data_dir, origin_listen, demo_track_secs).await,
    }
}

async fn up(data_dir: PathBuf, origin_listen: SocketAddr, secs: u32) -> Result<(), Failure> {
    let origin_dir = data_dir.join("origin");
    let cfg = segue_origin::Config {
        listen: origin_listen,
        data_dir: origin_dir.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let cfg = validated(&PathBuf::from("(segue up)"), cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    let store = segue_core::store::FsStore::new(&origin_dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    eprintln!("segue up: preparing the demo catalog in {}", origin_dir.display());
    let tracks = segue_origin::demo::ensure(&store, secs).await.map_err(|e| Failure::Runtime(format!("demo catalog: {e}")))?;
    let made = tracks.iter().filter(|t| t.created).count();
    eprintln!("segue up: demo catalog ready ({} tracks, {made} packaged now)", tracks.len());
    let base = format!("http://{origin_listen}");
    for t in &tracks {
        eprintln!("  {:<24} {:<22} {base}/a/{}/high.ogg", t.title, t.album, t.content_id);
    }
    eprintln!("  manifests: {base}/m/<content_id>.json   seek tables: {base}/seek/<content_id>/<tier>.json");
    segue_origin::run(cfg, segue_core::server::shutdown_signal()).await.map_err(|e| Failure::Runtime(e.to_string()))
}
