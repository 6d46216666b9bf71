//! Scenarios against a running `segue lab` (issue "At scale"): simulated listeners doing
//! what the player does, over real HTTP to the lab's app API and POPs, while the fleet
//! is made to drop an album, lose a POP, lose its origin or saturate.
//!
//! Every scenario watches the origin from outside (its `/metrics`, content requests and
//! body bytes) and times every request its listeners make; it writes `report.json` and
//! SVG plots (origin egress and time to first byte over the run) to its folder.

mod crowd;
mod drop;
mod lab;
mod listener;
mod outage;
mod overflow;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use lab::Lab;
pub use listener::{Catalog, ListenerStats};
pub use watch::{Timeline, Watch};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options, or no lab where `--lab` points.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Setup(String),
    #[error("{path}: {detail}")]
    Write { path: String, detail: String },
}

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Listeners,
    AlbumDrop,
    PopOutage,
    OriginOutage,
    Overflow,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Ok(match s {
            "listeners" => Kind::Listeners,
            "album-drop" => Kind::AlbumDrop,
            "pop-outage" => Kind::PopOutage,
            "origin-outage" => Kind::OriginOutage,
            "overflow" => Kind::Overflow,
            _ => return Err(format!("unknown scenario {s:?}")),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    /// The lab's data directory (its `lab.json`).
    pub lab: PathBuf,
    /// Where the report and plots go.
    pub out: PathBuf,
    /// Simulated listeners (album-drop: per region).
    pub listeners: usize,
    /// How long the listeners play (listeners, outages: in all; album-drop: after the drop).
    pub duration: Duration,
    /// Playback speed: 1 is real time; 4 plays a minute of audio in 15 s.
    pub speed: f64,
    /// The tier listeners stream.
    pub tier: String,
    /// Zipf exponent of track popularity.
    pub zipf: f64,
    /// album-drop: pre-warm the POPs before the drop.
    pub prewarm: bool,
    /// album-drop: the second region drops this long after the first (0: together).
    pub stagger: Duration,
    /// album-drop: the drop is this long after the scenario starts (and the pre-warm this
    /// long before it at most).
    pub lead: Duration,
    pub seed: u64,
}

/// What a scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Kind,
    pub listeners: usize,
    pub seconds: f64,
    pub speed: f64,
    pub tier: String,
    /// Everything the listeners did and saw.
    pub clients: ListenerStats,
    /// The origin seen from outside: content requests and body bytes, in all and per
    /// second of the run.
    pub origin: watch::OriginTotals,
    /// What the scenario itself found (drop phases, outage recovery, ...).
    pub findings: serde_json::Value,
    /// POP base URL -> name.
    pub pop_names: std::collections::BTreeMap<String, String>,
    pub timeline: Timeline,
}

impl Report {
    pub fn table(&self) -> String {
        let c = &self.clients;
        let mut s = format!(
            "{:?}: {} listeners for {:.1} s at {}x ({} tier)\n\
             tracks {}  skips {}  seeks {}  prefetches {}  plays reported {} (accepted {}, 30 s or more {})\n\
             ranges {}  errors {}  failovers {}  re-asked stream URLs {}  rebuffers {}  hit ratio {:.3}\n\
             range ttfb ms  p50 {:.2}  p99 {:.2}  max {:.2}   stream API ms  p50 {:.2}  p99 {:.2}\n\
             origin: {} content requests, {:.1} MB",
            self.scenario,
            self.listeners,
            self.seconds,
            self.speed,
            self.tier,
            c.tracks,
            c.skips,
            c.seeks,
            c.prefetches,
            c.plays_reported,
            c.plays_accepted,
            c.plays_30s,
            c.ranges,
            c.errors,
            c.failovers,
            c.reasked,
            c.rebuffers,
            c.hit_ratio,
            c.ttfb_ms.p50,
            c.ttfb_ms.p99,
            c.ttfb_ms.max,
            c.stream_api_ms.p50,
            c.stream_api_ms.p99,
            self.origin.requests,
            self.origin.bytes as f64 / 1e6,
        );
        if !self.findings.is_null() {
            s.push_str(&format!("\n{}", serde_json::to_string_pretty(&self.findings).unwrap_or_default()));
        }
        s
    }
}

/// Run a scenario against the lab and write its report and plots to `opts.out`.
pub async fn run(opts: Options) -> Result<Report, Error> {
    if !(opts.speed > 0.0 && opts.speed <= 100.0) {
        return Err(Error::Usage(format!("--speed {} must be above 0 and at most 100", opts.speed)));
    }
    if !(0.0..=5.0).contains(&opts.zipf) {
        return Err(Error::Usage(format!("--zipf {} must be between 0 and 5", opts.zipf)));
    }
    if opts.tier.parse::<segue_core::Tier>().is_err() {
        return Err(Error::Usage(format!(
            "--tier {:?} is not a tier (low, normal, high, very_high, lossless)",
            opts.tier
        )));
    }
    let lab = Lab::load(&opts.lab)?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| Error::Write { path: opts.out.display().to_string(), detail: e.to_string() })?;
    let report = match opts.kind {
        Kind::Listeners => crowd::listeners(&lab, &opts).await?,
        Kind::PopOutage => outage::pop_outage(&lab, &opts).await?,
        Kind::OriginOutage => outage::origin_outage(&lab, &opts).await?,
        Kind::AlbumDrop => drop::album_drop(&lab, &opts).await?,
        Kind::Overflow => overflow::overflow(&lab, &opts).await?,
    };
    write(&opts.out, &report)?;
    Ok(report)
}

/// `report.json`, `origin-egress.svg`, `ttfb.svg` and `pops.svg`.
fn write(dir: &std::path::Path, report: &Report) -> Result<(), Error> {
    let put = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::Write { path: path.display().to_string(), detail: e.to_string() })
    };
    put("report.json", serde_json::to_string_pretty(report).unwrap_or_default())?;
    let t = &report.timeline;
    let marks: Vec<(f64, String)> = t.marks.iter().map(|m| (m.t, m.what.clone())).collect();
    let egress = crate::svg::Line {
        name: "origin egress, MB/s".into(),
        points: t.seconds.iter().map(|s| (s.t, s.origin_bytes as f64 / 1e6)).collect(),
    };
    let requests = crate::svg::Line {
        name: "origin content requests/s".into(),
        points: t.seconds.iter().map(|s| (s.t, s.origin_requests as f64)).collect(),
    };
    let title = format!("{:?}: origin", report.scenario);
    put(
        "origin-egress.svg",
        crate::svg::chart_marked(&title, "seconds into the run", "per second", &[egress, requests], &marks),
    )?;
    let p50 = crate::svg::Line {
        name: "TTFB p50, ms".into(),
        points: t.seconds.iter().filter(|s| s.ranges > 0).map(|s| (s.t, s.ttfb_p50_ms)).collect(),
    };
    let p99 = crate::svg::Line {
        name: "TTFB p99, ms".into(),
        points: t.seconds.iter().filter(|s| s.ranges > 0).map(|s| (s.t, s.ttfb_p99_ms)).collect(),
    };
    let errors = crate::svg::Line {
        name: "errors/s".into(),
        points: t.seconds.iter().map(|s| (s.t, s.errors as f64)).collect(),
    };
    let title = format!("{:?}: listeners' ranges", report.scenario);
    put(
        "ttfb.svg",
        crate::svg::chart_marked(&title, "seconds into the run", "ms, or per second", &[p50, p99, errors], &marks),
    )?;
    let pops: std::collections::BTreeSet<&String> = t.seconds.iter().flat_map(|s| s.per_pop.keys()).collect();
    let lines: Vec<crate::svg::Line> = pops
        .into_iter()
        .map(|pop| crate::svg::Line {
            name: report.pop_names.get(pop).cloned().unwrap_or_else(|| pop.clone()),
            points: t.seconds.iter().map(|s| (s.t, s.per_pop.get(pop).copied().unwrap_or(0) as f64)).collect(),
        })
        .collect();
    let title = format!("{:?}: ranges answered per POP", report.scenario);
    put("pops.svg", crate::svg::chart_marked(&title, "seconds into the run", "ranges/s", &lines, &marks))?;
    Ok(())
}
