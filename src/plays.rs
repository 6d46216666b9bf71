//! `segue plays ...`: the play pipeline's operator tools, run against the app API's
//! config (its database and, at scale, its NATS JetStream log).

use std::path::PathBuf;

use clap::Subcommand;
use segue_app_api::{play_log::PlayLog, play_store, royalty, Config};

use crate::Failure;

#[derive(Subcommand)]
pub enum PlaysAction {
    /// Apply the NATS JetStream play log to the database (when `[plays] log = "nats"`).
    ///
    /// Fetches batches, applies each in one transaction (idempotently: a redelivered
    /// event is not counted twice), and acks it after the commit. Run one or more; they
    /// share the durable consumer. Serves /metrics (pipeline lag) on
    /// plays.nats.consumer_listen. Stops on SIGTERM.
    ///
    /// Each partition (plays.nats.partitions) has its own durable consumer; this process
    /// consumes all of them, or those given with --partition (run one process per
    /// partition to spread them over machines).
    Consume {
        /// A partition to consume (0-based; repeat for several). Default: all.
        #[arg(long = "partition", value_name = "K")]
        partitions: Vec<usize>,
    },
    /// Check the audit log: recompute the hash chain over every event and the counts
    /// per track, day and country, and compare them with what is stored.
    ///
    /// Exits 0 when intact, 1 naming each inconsistency (an edited, deleted or inserted
    /// event; counts that disagree with the log).
    Verify {
        /// A `SEQ:HASH` a royalty report printed (audit_seq, audit_hash): the log must
        /// still contain exactly that event there.
        #[arg(long, value_name = "SEQ:HASH")]
        anchor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a month's pro-rata royalty report (CSV or JSON), byte-for-byte reproducible.
    ///
    /// Scans for fraud first; flagged accounts not cleared are left out. Refuses while
    /// the pipeline lags more than plays.report_max_lag_secs, unless --force.
    Report {
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        month: String,
        /// The month's revenue pool to share, e.g. 125000.00.
        #[arg(long)]
        pool: String,
        /// ISO 4217 currency of the pool.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// csv or json.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// Write here (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Only events up to this log position (a report's audit_seq), to re-render it.
        #[arg(long, value_name = "SEQ")]
        as_of: Option<i64>,
        /// Report even though the pipeline lags.
        #[arg(long)]
        force: bool,
        /// Close the month with this report: it is stored as issued and every later
        /// request for the month gets it; plays of it that arrive later are paid next
        /// month as adjustments. Months close in order.
        #[arg(long, conflicts_with_all = ["force", "as_of"])]
        close: bool,
    },
    /// End-of-day reconciliation: match a UTC day's counted plays to what the POPs
    /// delivered in their sessions (from the edges' access logs), and list per track the
    /// plays without delivery and the deliveries without a play.
    ///
    /// Exits 0 with the report (CSV per track, or JSON with example sessions); 1 when a
    /// log cannot be read.
    Reconcile {
        /// The day, YYYY-MM-DD (UTC).
        #[arg(long)]
        day: String,
        /// Edge access logs (edge.toml access_log) of every POP, for that day.
        #[arg(long = "access-log", value_name = "FILE", required = true, num_args = 1..)]
        access_logs: Vec<PathBuf>,
        /// Deliveries smaller than this are not "without play" (players prefetch the
        /// first 256 KiB of tracks they may not play).
        #[arg(long, default_value_t = 300_000, value_name = "BYTES")]
        min_bytes: u64,
        /// csv or json.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// Write here (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub async fn plays(action: PlaysAction, config: Config) -> Result<(), Failure> {
    let runtime = |e: segue_app_api::Error| Failure::Runtime(e.to_string());
    match action {
        PlaysAction::Consume { partitions } => {
            segue_app_api::play_stream::consume(config, partitions, segue_core::server::shutdown_signal())
                .await
                .map_err(|e| match e {
                    segue_app_api::Error::BadRequest(m) => Failure::Usage(m),
                    e => runtime(e),
                })
        }
        PlaysAction::Reconcile { day, access_logs, min_bytes, format, out } => {
            let pool = segue_app_api::catalog::open(&config.database).await.map_err(runtime)?;
            let logs: Vec<&std::path::Path> = access_logs.iter().map(PathBuf::as_path).collect();
            let result = segue_app_api::reconcile::run(&pool, &day, &logs, min_bytes).await;
            pool.close().await;
            let r = result.map_err(|e| match e {
                segue_app_api::Error::BadRequest(m) => Failure::Usage(m),
                e => runtime(e),
            })?;
            let body =
                if format == "csv" { r.csv() } else { serde_json::to_string_pretty(&r).unwrap_or_default() + "\n" };
            match out {
                None => print!("{body}"),
                Some(path) => segue_core::fsutil::write_atomic(&path, body.as_bytes(), 0o644)
                    .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?,
            }
            let (undelivered, unreported) =
                r.tracks.iter().fold((0, 0), |(a, b), t| (a + t.plays_without_delivery, b + t.deliveries_without_play));
            eprintln!(
                "segue plays: {day}: {} tracks, {undelivered} plays without delivery, {unreported} deliveries without play \
                 ({} log lines, {} deliveries, {} plays without a session)",
                r.tracks.len(),
                r.log_lines,
                r.deliveries,
                r.plays_without_session
            );
            Ok(())
        }
        PlaysAction::Verify { anchor, json } => {
            let anchor = anchor
                .map(|a| {
                    a.split_once(':')
                        .and_then(|(s, h)| Some((s.parse::<i64>().ok()?, h.to_owned())))
                        .filter(|(_, h)| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                        .ok_or_else(|| Failure::Usage(format!("--anchor {a:?} is not SEQ:HASH (64 hex digits)")))
                })
                .transpose()?;
            let pool = segue_app_api::catalog::open(&config.database).await.map_err(runtime)?;
            let (head, _) = play_store::head(&pool).await.map_err(runtime)?;
            let bar =
                crate::progress_bar(head.max(0) as u64, "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} events");
            let audit = play_store::verify(&pool, anchor.as_ref().map(|(s, h)| (*s, h.as_str())), |seq| {
                bar.set_position(seq.max(0) as u64)
            })
            .await
            .map_err(runtime)?;
            bar.finish_and_clear();
            pool.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&audit).unwrap_or_default());
            } else if audit.problems.is_empty() {
                println!("intact: {} events, head seq {} hash {}", audit.events, audit.seq, audit.hash);
            } else {
                for p in &audit.problems {
                    println!("TAMPERED: {p}");
                }
            }
            if audit.problems.is_empty() {
                Ok(())
            } else {
                Err(Failure::Runtime(format!(
                    "the play log fails verification ({} problem(s) listed)",
                    audit.problems.len()
                )))
            }
        }
        PlaysAction::Report { month, pool: amount, currency, format, out, as_of, force, close } => {
            let pool_minor = royalty::parse_money(&amount)
                .ok_or_else(|| Failure::Usage(format!("--pool {amount:?} is not an amount like 125000.00")))?;
            let request = royalty::Request { month, pool_minor, currency, as_of, force, close };
            let pool = segue_app_api::catalog::open(&config.database).await.map_err(runtime)?;
            let log = PlayLog::open(&config, pool.clone()).await.map_err(runtime)?;
            let lag = log.lag().await.map_err(runtime)?;
            if force && lag.events > 0 {
                eprintln!(
                    "segue plays: warning: {} events are not applied yet (oldest {:.0} s); reporting anyway",
                    lag.events, lag.seconds
                );
            }
            let report = royalty::run(&pool, &config, &log, &request).await.map_err(runtime)?;
            pool.close().await;
            let body = if format == "csv" { report.csv() } else { report.json() };
            match out {
                None => print!("{body}"),
                Some(path) => {
                    segue_core::fsutil::write_atomic(&path, body.as_bytes(), 0o644)
                        .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?;
                    eprintln!(
                        "segue plays: {} {}: {} streams, {} lines, {} {} shared; audit anchor {}:{}",
                        report.month,
                        path.display(),
                        report.streams,
                        report.lines.len(),
                        report.pool,
                        report.currency,
                        report.audit_seq,
                        report.audit_hash
                    );
                }
            }
            Ok(())
        }
    }
}
