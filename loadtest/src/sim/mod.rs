//! `segue sim`: a fleet simulator on the edge's own cache code (issue "At scale").
//!
//! - [`simulate`]: a day of a sampled catalog across POPs in regions, an optional shield,
//!   one origin with a cap, and an album drop; per-POP hit ratios, origin egress over the
//!   day and at the drop, time to first byte and the coalescing factor.
//! - [`replay`]: a request trace through one POP, with what the edge would label each
//!   request (`X-Cache`): a real edge fed the same trace labels it the same.
//! - [`policies`]: a slice-access trace through the edge's cache under each eviction
//!   policy it has, by requests and bytes (the trace `libcachesim` reads too).

pub mod fleet;
pub mod node;
pub mod workload;

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use rand::Rng;
use segue_edge::config::Eviction;
use serde::Serialize;

use fleet::{Ask, Class, Fleet, Network};
use node::{Node, Object, Outcome, Rules};
use workload::{Action, Catalog, Play, Scale};

/// Everything a simulated day needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub pops: usize,
    pub shield: bool,
    /// Each POP's SSD tier, bytes at full scale (one run per size).
    pub pop_cache_bytes: Vec<u64>,
    /// Each POP's memory tier at full scale.
    pub pop_mem_bytes: u64,
    pub shield_cache_bytes: u64,
    pub rules: Rules,
    pub net: Network,
    pub scale: Scale,
    /// Hit ratios count from this hour on (caches start empty).
    pub warmup_h: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PopReport {
    pub name: String,
    pub region: usize,
    pub requests: u64,
    /// By requests as the edge labels them (every slice cached), by slice reads found in
    /// the cache, and by bytes: the share of bytes sent that cost no upstream fetch
    /// (offload: read-ahead fetches count against it, though they turn later reads
    /// into hits).
    pub request_hit_ratio: f64,
    pub slice_hit_ratio: f64,
    pub byte_hit_ratio: f64,
    /// Slice reads, reads that joined a fill in flight, and upstream fetches (of which
    /// read-ahead's and discoveries).
    pub slice_reads: u64,
    pub joins: u64,
    pub fills: u64,
    pub read_ahead_fills: u64,
    pub discoveries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DropReport {
    pub regions: Vec<RegionDrop>,
    /// Listener slice reads of the album at full scale per upstream fetch of it by the
    /// POPs (how many listeners each fill served).
    pub coalescing_factor: f64,
    pub origin_requests: u64,
    pub origin_bytes: u64,
    pub ttfb_ms_p50: f64,
    pub ttfb_ms_p99: f64,
    pub ttfb_ms_max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionDrop {
    pub region: usize,
    pub release_h: f64,
    /// Origin requests for the album made for this region's listeners in the 10
    /// minutes from its release (pre-warm fetches are not counted).
    pub origin_requests_at_release: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub pop_cache_bytes: u64,
    /// Fleet-wide after the warm-up: by requests, slice reads and bytes.
    pub request_hit_ratio: f64,
    pub slice_hit_ratio: f64,
    pub byte_hit_ratio: f64,
    /// Listener requests per second at full scale, after the warm-up.
    pub requests_per_s: f64,
    /// Origin requests per second at full scale (mean after the warm-up, and the busiest
    /// minute), and egress in Gbit/s.
    pub origin_requests_per_s: f64,
    pub origin_requests_per_s_peak: f64,
    pub origin_gbps_mean: f64,
    pub origin_gbps_peak: f64,
    pub origin_cap_gbps: f64,
    pub shield_byte_hit_ratio: Option<f64>,
    pub pops: Vec<PopReport>,
    pub drop: Option<DropReport>,
    /// Origin egress per minute at full scale (Gbit/s) and of it the album's.
    #[serde(skip)]
    pub egress_per_min: Vec<(f64, f64, f64)>,
    /// Around each release: seconds from it, origin album egress (Gbit/s), TTFB p99 (ms).
    #[serde(skip)]
    pub drop_per_s: Vec<(f64, f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub runs: Vec<RunReport>,
    pub seconds: f64,
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Every node's tallies (catalog, album) at the end of the warm-up.
type Snapshot = (Vec<(node::Stats, node::Stats)>,);

/// Slice reads of one POP: (µs, slice id, bytes).
pub type SliceTrace = Vec<(u64, u64, u64)>;

/// Every configured cache size, one simulated day each.
pub async fn simulate(opts: &Options, progress: &(dyn Fn(&str) + Sync)) -> Result<Report, String> {
    Ok(simulate_traced(opts, None, progress).await?.0)
}

/// [`simulate`], keeping the slice reads of POP `trace_pop` in the first run.
pub async fn simulate_traced(
    opts: &Options,
    trace_pop: Option<usize>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Report, Option<SliceTrace>), String> {
    if trace_pop.is_some_and(|p| p >= opts.pops) {
        return Err(format!("--trace-pop must be below --pops ({})", opts.pops));
    }
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    let mut trace = None;
    for (i, &bytes) in opts.pop_cache_bytes.iter().enumerate() {
        let (report, t) = run(opts, bytes, trace_pop.filter(|_| i == 0), progress).await?;
        runs.push(report);
        trace = trace.or(t);
    }
    Ok((Report { runs, seconds: started.elapsed().as_secs_f64() }, trace))
}

/// A node's tiers at the run's scale: each at least 16 slices. The album is simulated
/// whole, not sampled, so the SSD tier gets room for it on top of its scaled size: at
/// full scale an album is a sliver of a POP's cache, and it must stay one here.
fn scaled_tiers(opts: &Options, mem: u64, ssd: u64) -> (u64, u64) {
    let s = opts.scale.sample;
    let floor = opts.rules.slice * 16;
    let album = opts.scale.drop.as_ref().map_or(0, |d| {
        let slices: u64 = (0..u64::from(d.tracks))
            .flat_map(|t| {
                segue_core::Tier::ALL.map(|tier| workload::object_len(opts.scale.catalog_tracks + 1 + t, tier))
            })
            .map(|len| len.div_ceil(opts.rules.slice) + 1)
            .sum();
        slices * opts.rules.slice.next_multiple_of(4096)
    });
    let ssd = if ssd == 0 { 0 } else { ((ssd as f64 * s) as u64).max(floor) + album };
    (((mem as f64 * s) as u64).max(floor), ssd)
}

async fn run(
    opts: &Options,
    pop_cache: u64,
    trace_pop: Option<usize>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(RunReport, Option<SliceTrace>), String> {
    let scale = &opts.scale;
    let s = scale.sample;
    let regions = scale.regions.max(1);
    let mut nodes = Vec::new();
    let mut pops_by_region = vec![Vec::new(); regions];
    for i in 0..opts.pops {
        let r = i % regions;
        pops_by_region[r].push(i);
        let (mem, ssd) = scaled_tiers(opts, opts.pop_mem_bytes, pop_cache);
        nodes.push(Node::new(format!("pop-{r}-{}", pops_by_region[r].len()), mem, ssd, opts.rules).await?);
    }
    let shield = if opts.shield {
        let (mem, ssd) = scaled_tiers(opts, opts.pop_mem_bytes, opts.shield_cache_bytes);
        nodes.push(Node::new("shield".into(), mem, ssd, opts.rules).await?);
        Some(nodes.len() - 1)
    } else {
        None
    };
    let mut fleet = Fleet::new(nodes, shield, opts.net, opts.rules, 1_000_000);
    fleet.background_scale = 1.0 / s;
    fleet.trace = trace_pop.map(|p| (p, Vec::new()));
    let mut rng = workload::rng(scale.seed);
    let mut catalog = Catalog::sample(scale, &mut rng);
    let mut queue: BinaryHeap<std::cmp::Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut actions: HashMap<u64, Action> = HashMap::new();
    let mut seq = 0u64;
    let mut enqueue = |a: Action, queue: &mut BinaryHeap<_>, actions: &mut HashMap<u64, Action>| {
        seq += 1;
        queue.push(std::cmp::Reverse((a.at, seq)));
        actions.insert(seq, a);
    };
    let hour = 3_600_000_000u64;
    let mut end = (scale.hours * hour as f64) as u64;
    // The album: created first, so its objects are ids 0..n.
    let mut releases = Vec::new();
    if let Some(d) = &scale.drop {
        let mut album = Vec::new();
        for t in 0..u64::from(d.tracks) {
            let track = scale.catalog_tracks + 1 + t;
            album.push(segue_core::Tier::ALL.map(|tier| catalog.object(&mut fleet, track, tier)));
        }
        fleet.drop_until = fleet.objects.len() as u32;
        for n in &mut fleet.nodes {
            n.album_until = fleet.drop_until;
        }
        let listeners = (d.listeners as f64 * d.listener_sample / regions as f64).round() as u64;
        for r in 0..regions {
            let release = ((d.at_h * 60.0 + d.stagger_mins * r as f64) * 60e6) as u64;
            releases.push((r, release));
            end = end.max(release + hour / 2);
            for l in 0..listeners {
                let listener = 1 << 40 | (r as u64) << 32 | l;
                let node = workload::pop_for(&pops_by_region, r, listener);
                let press = -(1.0 - rng.random::<f64>()).ln() * d.press_mean_s;
                let mut start = release + (press * 1e6) as u64;
                let tier = workload::pick_tier(scale, &mut rng);
                let k = 1 + (-(1.0 - rng.random::<f64>()).ln() * (d.tracks_per_listener - 1.0).max(0.0)) as usize;
                for (i, objects) in album.iter().take(k.min(album.len())).enumerate() {
                    let object = objects[tier as usize];
                    let play = Play { start, node, listener, object, class: Class::Drop, prefetched: i > 0 };
                    let mut out = Vec::new();
                    workload::actions(scale, &fleet, play, &mut rng, &mut out);
                    for a in out {
                        enqueue(a, &mut queue, &mut actions);
                    }
                    let len = fleet.objects[object as usize].len;
                    start += (len as f64 / workload::byte_rate(&fleet, object) * 1e6) as u64;
                }
            }
        }
    }
    let prewarms: Vec<(u64, usize)> = match &scale.drop {
        Some(d) if d.prewarm_mins > 0.0 => {
            releases.iter().map(|&(r, at)| (at.saturating_sub((d.prewarm_mins * 60e6) as u64), r)).collect()
        }
        _ => Vec::new(),
    };
    let mut prewarms = prewarms.into_iter().peekable();
    // Background plays: a Poisson process per region at the peak rate, thinned by the
    // region's local hour.
    let peak = scale.peak_plays_per_s * s / regions as f64;
    let mut next: Vec<u64> = (0..regions).map(|_| (-(1.0 - rng.random::<f64>()).ln() / peak * 1e6) as u64).collect();
    let listeners_per_region = (scale.peak_plays_per_s * 240.0 / regions as f64).max(1.0) as u64;
    let warmup = (opts.warmup_h * hour as f64) as u64;
    let mut warm: Option<Snapshot> = None;
    let mut reported_h = 0;
    loop {
        let (r, at) = next.iter().enumerate().min_by_key(|(_, &a)| a).map(|(r, &a)| (r, a)).unwrap_or((0, u64::MAX));
        let action_at = queue.peek().map_or(u64::MAX, |std::cmp::Reverse((a, _))| *a);
        let prewarm_at = prewarms.peek().map_or(u64::MAX, |p| p.0);
        let t = at.min(action_at).min(prewarm_at);
        if t >= end {
            break;
        }
        if warm.is_none() && t >= warmup {
            fleet.run_until(warmup).await;
            warm = Some((fleet.nodes.iter().map(|n| (n.stats.clone(), n.album.clone())).collect(),));
        }
        fleet.run_until(t).await;
        if t / hour > reported_h {
            reported_h = t / hour;
            progress(&format!("simulated {reported_h} h of {:.0} h", end as f64 / hour as f64));
        }
        if t == prewarm_at {
            let Some((_, r)) = prewarms.next() else { continue };
            let targets: Vec<usize> = pops_by_region[r].iter().copied().chain(shield).collect();
            for node in targets {
                for o in 0..fleet.drop_until {
                    fleet.nodes[node].want(&fleet.objects, o);
                    let len = fleet.objects[o as usize].len;
                    let ask = Ask {
                        node,
                        client: 1 << 48,
                        object: o,
                        first: 0,
                        last: len - 1,
                        pace: None,
                        class: Class::Prewarm,
                        cause: None,
                    };
                    fleet.request(ask).await;
                }
            }
        } else if t == action_at {
            let Some(std::cmp::Reverse((_, id))) = queue.pop() else { continue };
            let Some(a) = actions.remove(&id) else { continue };
            let p = a.play;
            let ask = Ask {
                node: p.node,
                client: p.listener,
                object: p.object,
                first: a.first,
                last: a.last,
                pace: a.pace,
                class: p.class,
                cause: None,
            };
            fleet.request(ask).await;
        } else {
            next[r] = at + (-(1.0 - rng.random::<f64>()).ln() / peak * 1e6).max(1.0) as u64;
            let local = ((at as f64 / hour as f64) + workload::OFFSETS[r % workload::OFFSETS.len()]).rem_euclid(24.0);
            if rng.random::<f64>() >= workload::diurnal(local) {
                continue;
            }
            let listener = (r as u64) << 32 | rng.random_range(0..listeners_per_region);
            let node = workload::pop_for(&pops_by_region, r, listener);
            let track = catalog.draw(&mut rng);
            let tier = workload::pick_tier(scale, &mut rng);
            let object = catalog.object(&mut fleet, track, tier);
            // Most plays follow another: their first bytes were prefetched 30 s ahead.
            let play = Play {
                start: at + workload::PREFETCH_LEAD_US,
                node,
                listener,
                object,
                class: Class::Listener,
                prefetched: true,
            };
            let mut out = Vec::new();
            workload::actions(scale, &fleet, play, &mut rng, &mut out);
            for a in out {
                enqueue(a, &mut queue, &mut actions);
            }
        }
    }
    fleet.run_until(end).await;
    let report = summarize(opts, pop_cache, &fleet, warm, warmup, end, &releases);
    Ok((report, fleet.trace.take().map(|t| t.1)))
}

fn summarize(
    opts: &Options,
    pop_cache: u64,
    fleet: &Fleet,
    warm: Option<Snapshot>,
    warmup: u64,
    end: u64,
    releases: &[(usize, u64)],
) -> RunReport {
    let s = opts.scale.sample;
    let ds = opts.scale.drop.as_ref().map_or(1.0, |d| d.listener_sample);
    let before = warm.map(|w| w.0).unwrap_or_else(|| vec![Default::default(); fleet.nodes.len()]);
    let since = |i: usize| {
        let n = &fleet.nodes[i];
        node::Full::of(&n.stats.since(&before[i].0), &n.album.since(&before[i].1), s, ds)
    };
    let regions = opts.scale.regions.max(1);
    let mut pops = Vec::new();
    let mut total = node::Full::default();
    for i in 0..opts.pops {
        let st = since(i);
        total.add(&st);
        pops.push(PopReport {
            name: fleet.nodes[i].name.clone(),
            region: i % regions,
            requests: st.requests.round() as u64,
            request_hit_ratio: st.request_hit_ratio(),
            slice_hit_ratio: st.slice_hit_ratio(),
            byte_hit_ratio: st.offload(),
            slice_reads: st.slice_reads.round() as u64,
            joins: st.joins.round() as u64,
            fills: st.fills.round() as u64,
            read_ahead_fills: st.read_ahead_fills.round() as u64,
            discoveries: st.discoveries.round() as u64,
        });
    }
    let secs = (end.saturating_sub(warmup)) as f64 / 1e6;
    let series = &fleet.series;
    let per_bucket = series.bucket_us as f64 / 1e6;
    // Full-scale origin figures: sampled load scaled up, the album's as it is.
    let full = |i: usize, v: &[u64], d: &[u64]| {
        let (all, drop) = (v.get(i).copied().unwrap_or(0), d.get(i).copied().unwrap_or(0));
        (all - drop) as f64 / s + drop as f64
    };
    let buckets = series.origin_bytes.len();
    let first = (warmup / series.bucket_us) as usize;
    let (mut req_sum, mut bytes_sum) = (0.0, 0.0);
    for i in first..buckets {
        req_sum += full(i, &series.origin_requests, &series.origin_drop_requests);
        bytes_sum += full(i, &series.origin_bytes, &series.origin_drop_bytes);
    }
    let per_min = (60.0 / per_bucket).max(1.0) as usize;
    let mut egress_per_min = Vec::new();
    let (mut peak_req, mut peak_bytes) = (0.0f64, 0.0f64);
    for m in (0..buckets).step_by(per_min) {
        let r = m..(m + per_min).min(buckets);
        let bytes: f64 = r.clone().map(|i| full(i, &series.origin_bytes, &series.origin_drop_bytes)).sum();
        let reqs: f64 = r.clone().map(|i| full(i, &series.origin_requests, &series.origin_drop_requests)).sum();
        let drop: f64 = r.map(|i| series.origin_drop_bytes.get(i).copied().unwrap_or(0) as f64).sum();
        let span = per_min as f64 * per_bucket;
        egress_per_min.push((m as f64 * per_bucket / 3600.0, bytes * 8.0 / span / 1e9, drop * 8.0 / span / 1e9));
        if m >= first {
            peak_req = peak_req.max(reqs / span);
            peak_bytes = peak_bytes.max(bytes / span);
        }
    }
    let drop = opts.scale.drop.as_ref().map(|d| {
        let mut regions_out = Vec::new();
        for &(r, at) in releases {
            let window = at..at + 600_000_000;
            let n = fleet.album_fetches.iter().filter(|(t, node)| window.contains(t) && node % regions == r).count();
            regions_out.push(RegionDrop {
                region: r,
                release_h: at as f64 / 3.6e9,
                origin_requests_at_release: n as u64,
            });
        }
        let mut ttfb: Vec<u64> = fleet.ttfb.iter().filter(|t| t.2 == Class::Drop).map(|t| t.1).collect();
        ttfb.sort_unstable();
        let pop_drop_fills: u64 = series.origin_drop_requests.iter().sum();
        DropReport {
            regions: regions_out,
            coalescing_factor: fleet.drop_reads as f64 / d.listener_sample / pop_drop_fills.max(1) as f64,
            origin_requests: pop_drop_fills,
            origin_bytes: series.origin_drop_bytes.iter().sum(),
            ttfb_ms_p50: percentile(&ttfb, 0.5),
            ttfb_ms_p99: percentile(&ttfb, 0.99),
            ttfb_ms_max: percentile(&ttfb, 1.0),
        }
    });
    let mut drop_per_s = Vec::new();
    if let Some(&(_, at)) = releases.first() {
        let b = (at / series.bucket_us) as i64;
        let mut by_s: HashMap<i64, Vec<u64>> = HashMap::new();
        for t in fleet.ttfb.iter().filter(|t| t.2 == Class::Drop) {
            by_s.entry((t.0 / series.bucket_us) as i64 - b).or_default().push(t.1);
        }
        for d in -60i64..600 {
            let i = b + d;
            let bytes = usize::try_from(i).ok().and_then(|i| series.origin_drop_bytes.get(i)).copied().unwrap_or(0);
            let p99 = by_s.get_mut(&d).map_or(0.0, |v| {
                v.sort_unstable();
                percentile(v, 0.99)
            });
            drop_per_s.push((d as f64, bytes as f64 * 8.0 / per_bucket / 1e9, p99));
        }
    }
    let shield_byte_hit_ratio = fleet.shield.map(|i| since(i).offload());
    RunReport {
        pop_cache_bytes: pop_cache,
        request_hit_ratio: total.request_hit_ratio(),
        slice_hit_ratio: total.slice_hit_ratio(),
        byte_hit_ratio: total.offload(),
        requests_per_s: total.requests / secs.max(1.0),
        origin_requests_per_s: req_sum / secs.max(1.0),
        origin_requests_per_s_peak: peak_req,
        origin_gbps_mean: bytes_sum * 8.0 / secs.max(1.0) / 1e9,
        origin_gbps_peak: peak_bytes * 8.0 / 1e9,
        origin_cap_gbps: opts.net.origin_bytes_per_s * 8.0 / 1e9,
        shield_byte_hit_ratio,
        pops,
        drop,
        egress_per_min,
        drop_per_s,
    }
}

/// Write `report.json` and the plots into `dir`.
pub fn write(dir: &Path, report: &Report) -> Result<Vec<std::path::PathBuf>, String> {
    use crate::svg::{chart, Line};
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> Result<(), String> {
        let path = dir.join(name);
        segue_core::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };
    put("report.json", serde_json::to_string_pretty(report).map_err(|e| e.to_string())?)?;
    if let Some(run) = report.runs.first() {
        let egress = vec![
            Line { name: "origin egress".into(), points: run.egress_per_min.iter().map(|p| (p.0, p.1)).collect() },
            Line { name: "of it, the album".into(), points: run.egress_per_min.iter().map(|p| (p.0, p.2)).collect() },
        ];
        put("origin-egress.svg", chart("Origin egress over the run", "hour (UTC)", "Gbit/s", &egress))?;
        if !run.drop_per_s.is_empty() {
            let lines = vec![Line {
                name: "album egress from the origin".into(),
                points: run.drop_per_s.iter().map(|p| (p.0, p.1)).collect(),
            }];
            put("drop-egress.svg", chart("Album drop: origin egress", "seconds from the release", "Gbit/s", &lines))?;
            let lines =
                vec![Line { name: "TTFB p99".into(), points: run.drop_per_s.iter().map(|p| (p.0, p.2)).collect() }];
            put("drop-ttfb.svg", chart("Album drop: time to first byte", "seconds from the release", "ms", &lines))?;
        }
    }
    if report.runs.len() > 1 {
        let tb = |r: &RunReport| r.pop_cache_bytes as f64 / 1e12;
        let lines = vec![
            Line {
                name: "offload (bytes sent at no upstream cost)".into(),
                points: report.runs.iter().map(|r| (tb(r), r.byte_hit_ratio)).collect(),
            },
            Line {
                name: "request hit ratio".into(),
                points: report.runs.iter().map(|r| (tb(r), r.request_hit_ratio)).collect(),
            },
        ];
        put("hit-ratio.svg", chart("POPs by SSD tier size", "SSD tier per POP (TB)", "ratio", &lines))?;
    }
    Ok(written)
}

/// One line of a request trace: at `at_ms`, `client` asks for bytes `first..=last` of the
/// object at `path` (`len` bytes, with this strong ETag), or only its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    pub head: bool,
    pub at_ms: u64,
    pub client: u64,
    pub path: String,
    pub len: u64,
    pub etag: String,
    pub first: u64,
    pub last: u64,
}

/// Parse a request trace: CSV `at_ms,client,path,len,etag,first,last[,method]` with a
/// header line; the method is GET (the default) or HEAD.
pub fn parse_trace(text: &str, file: &str) -> Result<Vec<TraceLine>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let bad = |what: &str| format!("{file}:{}: {what}", n + 1);
        if f.len() != 7 && f.len() != 8 {
            return Err(bad("expected at_ms,client,path,len,etag,first,last[,method]"));
        }
        let head = match f.get(7).map(|m| m.trim()) {
            None | Some("GET") => false,
            Some("HEAD") => true,
            Some(m) => return Err(bad(&format!("method {m:?}: expected GET or HEAD"))),
        };
        let num =
            |i: usize, name: &str| f[i].trim().parse::<u64>().map_err(|_| bad(&format!("{name} is not a number")));
        let l = TraceLine {
            head,
            at_ms: num(0, "at_ms")?,
            client: num(1, "client")?,
            path: f[2].trim().to_owned(),
            len: num(3, "len")?,
            etag: f[4].trim().to_owned(),
            first: num(5, "first")?,
            last: num(6, "last")?,
        };
        if !l.path.starts_with('/') || l.len == 0 || l.first > l.last || l.last >= l.len {
            return Err(bad("path must start with / and first <= last < len"));
        }
        out.push(l);
    }
    Ok(out)
}

pub fn format_trace(lines: &[TraceLine]) -> String {
    let mut s = String::from("at_ms,client,path,len,etag,first,last,method\n");
    for l in lines {
        let method = if l.head { "HEAD" } else { "GET" };
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{method}\n",
            l.at_ms, l.client, l.path, l.len, l.etag, l.first, l.last
        ));
    }
    s
}

/// Replay a request trace through one POP with a `cache_bytes` memory tier; each
/// request's outcome as the edge would label it. `learned` gives objects the records a
/// real edge stored for them (header fields and freshness weigh in the cache beside the
/// slices, to the byte).
pub async fn replay(
    lines: &[TraceLine],
    rules: Rules,
    cache_bytes: u64,
    learned: &HashMap<String, segue_edge::cache::ObjectInfo>,
) -> Result<Vec<Outcome>, String> {
    replay_inspect(lines, rules, cache_bytes, learned, |_, _| {}).await
}

/// [`replay`], handing the POP's cache to `inspect` after each request's fills are in.
pub async fn replay_inspect(
    lines: &[TraceLine],
    rules: Rules,
    cache_bytes: u64,
    learned: &HashMap<String, segue_edge::cache::ObjectInfo>,
    mut inspect: impl FnMut(usize, &segue_edge::cache::Cache),
) -> Result<Vec<Outcome>, String> {
    let node = Node::new("pop".into(), cache_bytes, 0, rules).await?;
    let net = Network { shield_rtt_us: 0, origin_rtt_us: 100, flow_bytes_per_s: 1e9, origin_bytes_per_s: 1e12 };
    let mut fleet = Fleet::new(vec![node], None, net, rules, 1_000_000);
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let id = match ids.get(l.path.as_str()) {
            Some(&id) => id,
            None => {
                let id = fleet.objects.len() as u32;
                let mut o = Object::new(&l.path, l.len, &l.etag, &fleet.nodes[0].cache);
                if let Some(info) = learned.get(&l.path) {
                    o = o.learned(info.clone(), &fleet.nodes[0].cache);
                }
                fleet.objects.push(o);
                ids.insert(&l.path, id);
                id
            }
        };
        fleet.run_until(l.at_ms * 1000).await;
        fleet.now = fleet.now.max(l.at_ms * 1000);
        let ask = Ask {
            node: 0,
            client: l.client,
            object: id,
            first: l.first,
            last: l.last,
            pace: None,
            class: Class::Listener,
            cause: None,
        };
        out.push(if l.head { fleet.head(0, id).await } else { fleet.request(ask).await });
        // Fills take a millisecond: all are in before the trace's next millisecond.
        fleet.run_until(l.at_ms * 1000 + 999).await;
        inspect(out.len() - 1, &fleet.nodes[0].cache);
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    pub policy: String,
    pub requests: u64,
    pub miss_ratio: f64,
    pub byte_miss_ratio: f64,
}

/// A slice-access trace (`time,obj_id,obj_size` CSV, as `libcachesim` reads it) through
/// the edge's cache with each of its eviction policies: a miss stores the slice.
pub async fn policies(text: &str, cache_bytes: u64, slice: u64) -> Result<Vec<PolicyResult>, String> {
    let mut accesses = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(id), Some(size)) =
            (f.get(1).and_then(|v| v.parse::<u64>().ok()), f.get(2).and_then(|v| v.parse::<u64>().ok()))
        else {
            return Err(format!("trace line {}: expected time,obj_id,obj_size", n + 1));
        };
        accesses.push((id, size.min(node::MAX_SLICE)));
    }
    let mut out = Vec::new();
    for (name, eviction) in
        [("W-TinyLFU (edge)", Eviction::TinyLfu), ("S3-FIFO (edge)", Eviction::S3Fifo), ("LRU (edge)", Eviction::Lru)]
    {
        let rules = Rules { slice, eviction, read_ahead: 0, ssd_admit_after: 1 };
        let node = Node::new(name.into(), cache_bytes, 0, rules).await?;
        let (mut misses, mut miss_bytes, mut bytes) = (0u64, 0u64, 0u64);
        let mut names: HashMap<u64, std::sync::Arc<str>> = HashMap::new();
        for &(id, size) in &accesses {
            let object = names.entry(id).or_insert_with(|| format!("{id:016x}").into()).clone();
            let key = segue_edge::cache::SliceKey { object, generation: 1, index: 0 };
            bytes += size;
            if node.cache.slice(&key).await.is_none() {
                misses += 1;
                miss_bytes += size;
                node.cache.put_slice(key, 0, node::zeros(size));
            }
        }
        out.push(PolicyResult {
            policy: name.into(),
            requests: accesses.len() as u64,
            miss_ratio: node::ratio(misses, accesses.len() as u64),
            byte_miss_ratio: node::ratio(miss_bytes, bytes),
        });
    }
    Ok(out)
}
