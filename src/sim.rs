//! `segue sim`: the fleet simulator's command line (the engine is
//! `segue_loadtest::sim`).

use std::path::PathBuf;

use segue_loadtest::sim::{self, fleet::Network, node::Rules, workload};

use crate::Failure;

/// Simulate a day of a fleet on the edge's own cache code: POPs in regions (and a shield),
/// a Zipf-popular catalog sampled SHARDS-style, diurnal load, an album drop with or
/// without pre-warm and stagger. Writes report.json and SVG plots to --out.
///
/// `--replay FILE` instead replays a request trace (CSV at_ms,client,path,len,etag,first,last)
/// through one POP of --cache-mb and prints each request's X-Cache. `--policies FILE`
/// runs a slice trace (CSV time,obj_id,obj_size, as written by --trace-out and read by
/// libcachesim) through the edge's cache under each of its eviction policies.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// POPs, spread over the regions in turn.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pops: u32,
    /// Listener regions (UTC+1, -5, +9, -3, +5:30, +10).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=6))]
    regions: u32,
    /// Put one shield cache between the POPs and the origin.
    #[arg(long)]
    shield: bool,
    /// SSD tier per POP in TB at full scale; a comma-separated list runs once per size.
    #[arg(long, default_value = "10", value_delimiter = ',', value_name = "TB")]
    cache_tb: Vec<f64>,
    /// Memory tier per POP (and shield) in GB at full scale.
    #[arg(long, default_value_t = 64.0, value_name = "GB")]
    mem_gb: f64,
    /// The shield's cache in TB at full scale.
    #[arg(long, default_value_t = 100.0, value_name = "TB")]
    shield_cache_tb: f64,
    /// Tracks in the catalog (each in five tiers).
    #[arg(long, default_value_t = 100_000_000)]
    catalog_tracks: u64,
    /// Share of the catalog (and of plays, caches and origin cap) simulated.
    #[arg(long, default_value_t = 0.001)]
    sample: f64,
    /// Zipf exponent of track popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Plays started per second across the fleet at the daily peak (full scale).
    #[arg(long, default_value_t = 40_000.0)]
    peak_plays_per_s: f64,
    /// Length of the run (a drop past it extends it).
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Hit ratios and origin means count from this hour on.
    #[arg(long, default_value_t = 12.0)]
    warmup_h: f64,
    /// Origin egress cap, Gbit/s (78 GB/s = 624).
    #[arg(long, default_value_t = 624.0)]
    origin_gbps: f64,
    /// Edge config whose slice size, eviction policy and read-ahead the POPs use
    /// (default: the edge's defaults).
    #[arg(long, value_name = "FILE")]
    edge_config: Option<PathBuf>,
    /// Listeners who press play at the album drop (0: no drop).
    #[arg(long, default_value_t = 50_000_000)]
    drop_listeners: u64,
    /// Share of the drop's listeners simulated.
    #[arg(long, default_value_t = 0.001)]
    drop_sample: f64,
    /// Hour of the first region's release.
    #[arg(long, default_value_t = 23.0)]
    drop_at_h: f64,
    /// Pre-warm every POP of a region this long before its release (0: none).
    #[arg(long, default_value_t = 60.0)]
    prewarm_mins: f64,
    /// Each further region releases this much later (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    stagger_mins: f64,
    /// Tracks on the album.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=100))]
    album_tracks: u32,
    /// Write the slice reads of this POP (0-based) to --trace-out, for libcachesim.
    #[arg(long, requires = "trace_out")]
    trace_pop: Option<usize>,
    #[arg(long, value_name = "FILE")]
    trace_out: Option<PathBuf>,
    /// Where report.json and the plots go.
    #[arg(long, default_value = "./sim-out", value_name = "DIR")]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replay this request trace through one POP (see above).
    #[arg(long, value_name = "FILE", conflicts_with = "policies")]
    replay: Option<PathBuf>,
    /// Run this slice trace through each eviction policy (see above).
    #[arg(long, value_name = "FILE")]
    policies: Option<PathBuf>,
    /// The POP cache for --replay and --policies, MiB.
    #[arg(long, default_value_t = 1024)]
    cache_mb: u64,
}

fn rules(args: &SimArgs) -> Result<Rules, Failure> {
    let cfg = match &args.edge_config {
        Some(path) => {
            let cfg =
                segue_edge::Config::load(Some(path)).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            if cfg.slice_kib << 10 > sim::node::MAX_SLICE {
                return Err(Failure::Usage(format!(
                    "{}: slice_kib: the simulator takes slices up to {} KiB",
                    path.display(),
                    sim::node::MAX_SLICE >> 10
                )));
            }
            cfg
        }
        None => segue_edge::Config::default(),
    };
    Ok(Rules {
        slice: cfg.slice_kib << 10,
        eviction: cfg.mem_eviction,
        read_ahead: cfg.read_ahead_slices,
        ssd_admit_after: cfg.ssd_admit_after,
    })
}

fn read(path: &PathBuf) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

pub async fn sim(args: SimArgs) -> Result<(), Failure> {
    let rules = rules(&args)?;
    if let Some(path) = &args.replay {
        let lines = sim::parse_trace(&read(path)?, &path.display().to_string()).map_err(Failure::Usage)?;
        let outcomes =
            sim::replay(&lines, rules, args.cache_mb << 20, &Default::default()).await.map_err(Failure::Runtime)?;
        for o in outcomes {
            println!("{}", o.x_cache());
        }
        return Ok(());
    }
    if let Some(path) = &args.policies {
        let results = sim::policies(&read(path)?, args.cache_mb << 20, rules.slice).await.map_err(Failure::Usage)?;
        println!("{:<20} {:>10} {:>12} {:>16}", "policy", "requests", "miss ratio", "byte miss ratio");
        for r in results {
            println!("{:<20} {:>10} {:>12.4} {:>16.4}", r.policy, r.requests, r.miss_ratio, r.byte_miss_ratio);
        }
        return Ok(());
    }
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(Failure::Usage(what.into())) };
    check(args.sample > 0.0 && args.sample <= 1.0, "--sample must be in (0, 1]")?;
    check(args.drop_sample > 0.0 && args.drop_sample <= 1.0, "--drop-sample must be in (0, 1]")?;
    check(args.cache_tb.iter().all(|t| *t > 0.0), "--cache-tb sizes must be positive")?;
    check((0.0..=5.0).contains(&args.zipf), "--zipf must be between 0 and 5")?;
    check(args.hours > 0.0 && args.warmup_h < args.hours, "--warmup-h must be less than --hours")?;
    check(
        args.origin_gbps > 0.0 && args.peak_plays_per_s > 0.0,
        "--origin-gbps and --peak-plays-per-s must be positive",
    )?;
    let tb = |t: f64| (t * 1e12) as u64;
    let opts = sim::Options {
        pops: args.pops as usize,
        shield: args.shield,
        pop_cache_bytes: args.cache_tb.iter().map(|&t| tb(t)).collect(),
        pop_mem_bytes: (args.mem_gb * 1e9) as u64,
        shield_cache_bytes: tb(args.shield_cache_tb),
        rules,
        net: Network {
            shield_rtt_us: 20_000,
            origin_rtt_us: 80_000,
            flow_bytes_per_s: 125e6,
            origin_bytes_per_s: args.origin_gbps * 125e6,
        },
        scale: workload::Scale {
            regions: args.regions as usize,
            catalog_tracks: args.catalog_tracks,
            sample: args.sample,
            zipf: args.zipf,
            peak_plays_per_s: args.peak_plays_per_s,
            tier_mix: [0.05, 0.25, 0.2, 0.35, 0.15],
            skip_share: 0.25,
            seek_share: 0.05,
            lead_bytes: 256 << 10,
            hours: args.hours,
            seed: args.seed,
            drop: (args.drop_listeners > 0).then_some(workload::DropPlan {
                at_h: args.drop_at_h,
                listeners: args.drop_listeners,
                listener_sample: args.drop_sample,
                tracks: args.album_tracks,
                prewarm_mins: args.prewarm_mins,
                stagger_mins: args.stagger_mins,
                press_mean_s: 20.0,
                tracks_per_listener: 4.0,
            }),
        },
        warmup_h: args.warmup_h,
    };
    let bar = crate::progress_bar(0, "{spinner} {msg} [{elapsed}]");
    let report = sim::simulate_traced(&opts, args.trace_pop, &|m| bar.set_message(m.to_owned()))
        .await
        .map_err(Failure::Runtime)?;
    bar.finish_and_clear();
    let (report, trace) = report;
    if let (Some(path), Some(lines)) = (&args.trace_out, trace) {
        let mut text = String::from("time,obj_id,obj_size\n");
        for (t, id, size) in lines {
            text.push_str(&format!("{},{id},{size}\n", t / 1_000_000));
        }
        segue_core::fsutil::write_atomic(path, text.as_bytes(), 0o644)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?;
        eprintln!("slice trace of POP {}: {}", args.trace_pop.unwrap_or(0), path.display());
    }
    let written = sim::write(&args.out, &report).map_err(Failure::Runtime)?;
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>12} {:>10} {:>10}",
        "cache TB", "req hit", "byte hit", "req/s", "origin req/s", "origin Gb/s", "peak Gb/s"
    );
    for r in &report.runs {
        println!(
            "{:>10.2} {:>9.4} {:>9.4} {:>9.0} {:>12.0} {:>10.1} {:>10.1}",
            r.pop_cache_bytes as f64 / 1e12,
            r.request_hit_ratio,
            r.byte_hit_ratio,
            r.requests_per_s,
            r.origin_requests_per_s,
            r.origin_gbps_mean,
            r.origin_gbps_peak
        );
        if let Some(d) = &r.drop {
            println!(
                "  drop: origin requests {} ({} bytes), coalescing x{:.0}, TTFB p50 {:.1} ms p99 {:.1} ms",
                d.origin_requests, d.origin_bytes, d.coalescing_factor, d.ttfb_ms_p50, d.ttfb_ms_p99
            );
            for g in &d.regions {
                println!(
                    "    region {} release at {:.2} h: {} origin requests in the next 10 min",
                    g.region, g.release_h, g.origin_requests_at_release
                );
            }
        }
    }
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}
