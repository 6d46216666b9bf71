//! `listeners`, `pop-outage` and `origin-outage`: listeners playing the catalog for the
//! run, and in the outages one process of the fleet killed (SIGKILL) a third of the way in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lab::{kill, Lab, Track};
use super::listener::{Catalog, Listener, ListenerStats};
use super::watch::{Sample, Watch};
use super::{Error, Options, Report};

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

/// Poll the origin until the returned sender is dropped or set.
pub fn watch_origin(lab: &Lab, watch: &Arc<Watch>) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (w, origin) = (watch.clone(), lab.origin.url.clone());
    let task = tokio::spawn(async move { w.poll_origin(&origin, POLL, &rx).await });
    (tx, task)
}

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
    let (stop, poller) = watch_origin(lab, &watch);
    let from = watch.now();
    watch.mark("listeners start");
    let (stats, api) = crowd.play(&catalog, Instant::now() + opts.duration, opts.seed).await;
    let _ = stop.send(true);
    let _ = poller.await;
    let clients = ListenerStats::sum(&stats, api, &watch, from);
    Ok(report(lab, opts, &watch, clients, serde_json::Value::Null))
}

/// Figures of the ranges sent between `a` and `b` seconds.
fn window(samples: &[Sample], a: f64, b: f64) -> serde_json::Value {
    let here: Vec<&Sample> = samples.iter().filter(|s| s.t >= a && s.t < b).collect();
    let ok = here.iter().filter(|s| s.ok).count();
    let mut labels = std::collections::BTreeMap::new();
    for s in here.iter().filter(|s| s.ok) {
        *labels.entry(s.cache.as_str()).or_insert(0u64) += 1;
    }
    serde_json::json!({
        "from_s": a, "to_s": b,
        "ranges": here.len(),
        "failed": here.len() - ok,
        "x_cache": labels,
        "ttfb_ms": super::watch::ttfb(&here),
    })
}

pub async fn pop_outage(lab: &Lab, opts: &Options) -> Result<Report, Error> {
    let victim = lab.edge_pops().next().cloned().ok_or_else(|| Error::Lab("the lab has no POP".into()))?;
    // The victim needs a second POP for its listeners to fail over to.
    if lab.edge_pops().count() < 2 {
        return Err(Error::Lab("pop-outage needs a lab with two POPs or more (--pops 2)".into()));
    }
    let watch = Arc::new(Watch::new());
    let (catalog, _) = catalog(lab, opts).await?;
    let crowd = Crowd::new(lab, opts, &watch, opts.listeners, false).await?;
    // A listener of the victim's region, asking for stream URLs through the outage.
    let country = lab
        .regions
        .iter()
        .find(|r| r.name == victim.region)
        .and_then(|r| r.countries.first().cloned())
        .unwrap_or_else(|| "SE".into());
    let probe = AppProbe { base: lab.app_api.clone(), key: lab.user("lt-outage-probe", &country).await? };
    let (stop, poller) = watch_origin(lab, &watch);
    let from = watch.now();
    let until = Instant::now() + opts.duration;
    let seed = opts.seed;
    let playing = tokio::spawn({
        let catalog = catalog.clone();
        async move { crowd.play(&catalog, until, seed).await }
    });
    tokio::time::sleep(opts.duration / 3).await;
    kill(victim.pid, victim.pid_file.as_deref())?;
    let killed = watch.now();
    watch.mark(format!("killed {}", victim.name));

    // Until the run ends: when the control plane marks it down (and up again, once the
    // lab restarted it), and which stream answers still named it.
    let (mut down_at, mut up_at, mut last_named_while_down) = (None, None, None);
    let (mut answers_while_down, mut named_while_down) = (0u64, 0u64);
    let ids = catalog.ids().to_vec();
    let mut k = 0usize;
    while Instant::now() < until {
        let t = watch.now();
        if let Ok(pops) = lab.pop_states().await {
            let healthy = pops.iter().find(|p| p.id == victim.name).map(|p| p.healthy);
            match (down_at, up_at, healthy) {
                (None, _, Some(false)) => {
                    down_at = Some(t);
                    watch.mark(format!("control plane marks {} down", victim.name));
                }
                (Some(_), None, Some(true)) => {
                    up_at = Some(t);
                    watch.mark(format!("{} healthy again", victim.name));
                }
                _ => {}
            }
        }
        k += 1;
        let down = down_at.is_some() && up_at.is_none();
        if let Some(urls) = probe.urls(&ids[k % ids.len()], &opts.tier).await {
            if down {
                answers_while_down += 1;
                if urls.iter().any(|u| u.starts_with(&victim.url)) {
                    named_while_down += 1;
                    last_named_while_down = Some(t);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let (stats, api) = playing.await.unwrap_or_default();
    let _ = stop.send(true);
    let _ = poller.await;
    let samples = watch.samples();
    let failed_on_victim = |s: &&Sample| s.pop == victim.url && !s.ok && s.t >= killed;
    let last_failed = samples
        .iter()
        .filter(failed_on_victim)
        .map(|s| s.t)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m: f64| m.max(t))));
    // Recovered: from the kill to the last range that failed anywhere (each failed range
    // costs its listener a failover, or an error when the fallback failed too).
    let last_failure = samples.iter().filter(|s| !s.ok && s.t >= killed).map(|s| s.t).reduce(f64::max);
    let end = watch.now();
    let back = up_at.unwrap_or(end);
    let findings = serde_json::json!({
        "killed": victim.name,
        "killed_at_s": killed,
        "marked_down_after_s": down_at.map(|d| d - killed),
        "healthy_again_after_s": up_at.map(|u| u - killed),
        "stream_answers_while_down": answers_while_down,
        "stream_answers_naming_it_while_down": named_while_down,
        "last_answer_naming_it_after_down_s": last_named_while_down.zip(down_at).map(|(t, d)| t - d),
        "requests_failed_on_it": samples.iter().filter(failed_on_victim).count(),
        "last_failed_request_after_s": last_failed.map(|t| t - killed),
        "clients_recovered_after_s": last_failure.map_or(0.0, |t| t - killed),
        "before": window(&samples, from, killed),
        "while_down": window(&samples, killed, back),
        "after": window(&samples, back, end),
    });
    let clients = ListenerStats::sum(&stats, api, &watch, from);
    Ok(report(lab, opts, &watch, clients, findings))
}

/// The origin dies with the fleet in three states: most tracks cached and fresh, some
/// soft-purged just before (stale: the POPs must revalidate and cannot), the least
/// popular one purged (uncached: nothing can serve it). Listeners keep playing through
/// it and until the lab has restarted the origin.
pub async fn origin_outage(lab: &Lab, opts: &Options) -> Result<Report, Error> {
    let pid =
        lab.origin.pid.ok_or_else(|| Error::Lab("the lab's origin runs in its process: no pid to kill".into()))?;
    let watch = Arc::new(Watch::new());
    let (catalog, tracks) = catalog(lab, opts).await?;
    if tracks.len() < 3 {
        return Err(Error::Lab("origin-outage needs a catalog of three tracks or more".into()));
    }
    let crowd = Crowd::new(lab, opts, &watch, opts.listeners, false).await?;
    let (stop, poller) = watch_origin(lab, &watch);
    let from = watch.now();
    let until = Instant::now() + opts.duration;
    let seed = opts.seed;
    let playing = tokio::spawn({
        let catalog = catalog.clone();
        async move { crowd.play(&catalog, until, seed).await }
    });
    tokio::time::sleep(opts.duration / 3).await;
    // Ranks 1, 3, ... stale; the last one gone; the rest fresh.
    let last = tracks.len() - 1;
    let stale: Vec<String> = (1..last).step_by(2).map(|i| tracks[i].content_id.clone()).collect();
    let gone = vec![tracks[last].content_id.clone()];
    lab.purge(&stale, true).await?;
    lab.purge(&gone, false).await?;
    watch.mark("soft-purged ranks 1, 3, ...; purged the last");
    kill(pid, lab.origin.pid_file.as_deref())?;
    let killed = watch.now();
    watch.mark("killed the origin");
    let (stats, api) = playing.await.unwrap_or_default();
    let _ = stop.send(true);
    let _ = poller.await;
    let samples = watch.samples();
    let end = watch.now();
    let back = watch.origin_back_after(killed).unwrap_or(end);
    if back < end {
        watch.mark_at(back, "origin answering again");
    }
    let class = |cid: &str| {
        if stale.iter().any(|c| c == cid) {
            "stale"
        } else if gone.iter().any(|c| c == cid) {
            "uncached"
        } else {
            "fresh"
        }
    };
    let by_class = |a: f64, b: f64| {
        let mut m = serde_json::Map::new();
        for k in ["fresh", "stale", "uncached"] {
            let here: Vec<Sample> = samples.iter().filter(|s| class(&s.cid) == k).cloned().collect();
            m.insert(k.into(), window(&here, a, b));
        }
        serde_json::Value::Object(m)
    };
    let findings = serde_json::json!({
        "killed_at_s": killed,
        "origin_back_after_s": (back < end).then_some(back - killed),
        "stale_tracks": stale.len(),
        "uncached_tracks": gone.len(),
        "before": window(&samples, from, killed),
        "while_down": by_class(killed, back),
        "after": by_class(back, end),
    });
    let clients = ListenerStats::sum(&stats, api, &watch, from);
    Ok(report(lab, opts, &watch, clients, findings))
}

/// Stream answers for one listener, as the app API gives them.
struct AppProbe {
    base: String,
    key: String,
}

impl AppProbe {
    /// The primary and fallback URLs the app API hands out for `track` now.
    async fn urls(&self, track: &str, tier: &str) -> Option<Vec<String>> {
        let api = segue_player::api::AppApi::new(&self.base, &self.key);
        let info = api.stream(track, tier, None).await.ok()?;
        let mut v = vec![info.url];
        v.extend(info.fallback_url);
        Some(v)
    }
}
