//! What every scenario shares: its listeners (accounts spread over the lab's regions,
//! starting on a ramp), the catalog in a popularity order fixed by the seed, the origin
//! watched from outside, and the report; and the plainest scenario, `listeners`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lab::{Lab, Track};
use super::listener::{Catalog, Listener, ListenerStats};
use super::watch::Watch;
use super::Error;
use super::{Options, Report};

/// How often the origin's metrics and the control plane's POP list are polled.
pub const POLL: Duration = Duration::from_millis(250);

/// Listener accounts spread over the lab's regions in turn (each in its region's first
/// country), playing for the scenario.
pub struct Crowd {
    pub listeners: Vec<Listener>,
    /// The region of each listener.
    pub regions: Vec<String>,
}

impl Crowd {
    /// `n` listeners per region in `regions` (all the lab's when empty), or `n` in all spread
    /// over them when `per_region` is false.
    pub async fn new(
        lab: &Lab,
        opts: &Options,
        watch: &Arc<Watch>,
        n: usize,
        per_region: bool,
    ) -> Result<Crowd, Error> {
        let regions = &lab.regions;
        let total = if per_region { n * regions.len() } else { n };
        let run = format!(
            "{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
        );
        let mut listeners = Vec::with_capacity(total);
        let mut of = Vec::with_capacity(total);
        for i in 0..total {
            let region = &regions[i % regions.len()];
            let country = region.countries.first().map_or("SE", String::as_str);
            let name = format!("lt-{run}-{i}");
            let key = lab.user(&name, country).await?;
            let seed = opts.seed.wrapping_add(i as u64 * 0x9E37_79B9);
            listeners.push(Listener::new(name, &lab.app_api, &key, &opts.tier, opts.speed, seed, watch.clone()));
            of.push(region.name.clone());
        }
        Ok(Crowd { listeners, regions: of })
    }

    /// Every listener plays `catalog` until `until`, each starting at a random moment of
    /// the first tenth of the time (at most 10 s) as listeners do, rather than in step;
    /// returns their stats and stream API latencies.
    pub fn start(self, catalog: &Catalog, until: Instant, seed: u64) -> Playing {
        let catalog = catalog.clone();
        tokio::spawn(async move { self.play(&catalog, until, seed).await })
    }

    pub async fn play(self, catalog: &Catalog, until: Instant, seed: u64) -> (Vec<ListenerStats>, Vec<f64>) {
        use rand::{Rng, SeedableRng};
        let ramp = (until.saturating_duration_since(Instant::now()) / 10).min(Duration::from_secs(10));
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut tasks = Vec::new();
        for mut l in self.listeners {
            let catalog = catalog.clone();
            let start = ramp.mul_f64(rng.random::<f64>());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(start).await;
                l.session(&catalog, until).await;
                (l.stats, l.api_ms)
            }));
        }
        let (mut stats, mut api) = (Vec::new(), Vec::new());
        for t in tasks {
            if let Ok((s, a)) = t.await {
                stats.push(s);
                api.extend(a);
            }
        }
        (stats, api)
    }
}

/// The catalog in a popularity order fixed by the seed, and its tracks in that order.
pub async fn catalog(lab: &Lab, opts: &Options) -> Result<(Catalog, Vec<Track>), Error> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut tracks = lab.tracks().await?;
    tracks.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(opts.seed));
    Ok((Catalog::new(tracks.iter().map(|t| t.id.clone()).collect(), opts.zipf), tracks))
}

/// The origin's metrics, polled in the background into the watch.
pub struct OriginPoll {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl OriginPoll {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub fn watch_origin(lab: &Lab, watch: &Arc<Watch>) -> OriginPoll {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (w, origin) = (watch.clone(), lab.origin.url.clone());
    let task = tokio::spawn(async move { w.poll_origin(&origin, POLL, &rx).await });
    OriginPoll { stop, task }
}

/// What listeners playing in the background give back: their stats and stream API
/// latencies.
pub type Playing = tokio::task::JoinHandle<(Vec<ListenerStats>, Vec<f64>)>;

pub fn report(lab: &Lab, opts: &Options, watch: &Watch, clients: ListenerStats, findings: serde_json::Value) -> Report {
    let mut pop_names: std::collections::BTreeMap<String, String> =
        lab.pops.iter().map(|p| (p.url.clone(), p.name.clone())).collect();
    if let Some(o) = &lab.overflow {
        pop_names.insert(o.url.clone(), "overflow CDN".into());
    }
    Report {
        pop_names,
        scenario: opts.kind,
        listeners: opts.listeners,
        seconds: watch.now(),
        speed: opts.speed,
        tier: opts.tier.clone(),
        clients,
        origin: watch.origin_totals(),
        findings,
        timeline: watch.timeline(),
    }
}

pub async fn listeners(lab: &Lab, opts: &Options) -> Result<Report, Error> {
    let watch = Arc::new(Watch::new());
    let (catalog, _) = catalog(lab, opts).await?;
    let crowd = Crowd::new(lab, opts, &watch, opts.listeners, false).await?;
    let poll = watch_origin(lab, &watch);
    let from = watch.now();
    let (stats, api) = crowd.play(&catalog, Instant::now() + opts.duration, opts.seed).await;
    poll.stop().await;
    let clients = ListenerStats::sum(&stats, api, &watch, from);
    Ok(report(lab, opts, &watch, clients, serde_json::Value::Null))
}
