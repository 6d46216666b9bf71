//! `pop-outage` and `origin-outage`: listeners playing the catalog for the run, and one
//! process of the fleet killed (SIGKILL) a third of the way in.

use std::sync::Arc;
use std::time::Instant;

use super::crowd::{catalog, report, watch_origin, Crowd, POLL};
use super::lab::{kill, Lab};
use super::listener::ListenerStats;
use super::watch::{Sample, Watch};
use super::{Error, Options, Report};

/// Figures of the ranges sent between `a` and `b` seconds.
fn window(samples: &[Sample], a: f64, b: f64) -> serde_json::Value {
    let here: Vec<&Sample> = samples.iter().filter(|s| s.t >= a && s.t < b).collect();
    let ok = here.iter().filter(|s| s.ok).count();
    serde_json::json!({
        "from_s": a, "to_s": b,
        "ranges": here.len(),
        "failed": here.len() - ok,
        "x_cache": super::watch::x_cache(&here),
        "ttfb_ms": super::watch::ttfb(&here),
    })
}

pub async fn pop_outage(lab: &Lab, opts: &Options) -> Result<Report, Error> {
    let victim = lab.edge_pops().next().cloned().ok_or_else(|| Error::Usage("the lab has no POP".into()))?;
    // The victim needs a second POP for its listeners to fail over to.
    if lab.edge_pops().count() < 2 {
        return Err(Error::Usage("pop-outage needs a lab with two POPs or more (--pops 2)".into()));
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
    let poll = watch_origin(lab, &watch);
    let from = watch.now();
    let until = Instant::now() + opts.duration;
    let playing = crowd.start(&catalog, until, opts.seed);
    tokio::time::sleep(opts.duration / 3).await;
    kill(&victim.pid_file)?;
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
    poll.stop().await;
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
    let pid_file = lab.origin.pid_file.clone().ok_or_else(|| {
        Error::Usage("the lab's origin runs in the lab's own process: there is no process to kill".into())
    })?;
    let watch = Arc::new(Watch::new());
    let (catalog, tracks) = catalog(lab, opts).await?;
    if tracks.len() < 3 {
        return Err(Error::Usage("origin-outage needs a catalog of three tracks or more".into()));
    }
    let crowd = Crowd::new(lab, opts, &watch, opts.listeners, false).await?;
    let poll = watch_origin(lab, &watch);
    let from = watch.now();
    let until = Instant::now() + opts.duration;
    let playing = crowd.start(&catalog, until, opts.seed);
    tokio::time::sleep(opts.duration / 3).await;
    // Ranks 1, 3, ... stale; the last one gone; the rest fresh.
    let last = tracks.len() - 1;
    let stale: Vec<String> = (1..last).step_by(2).map(|i| tracks[i].content_id.clone()).collect();
    let gone = vec![tracks[last].content_id.clone()];
    lab.purge(&stale, true).await?;
    lab.purge(&gone, false).await?;
    watch.mark("soft-purged ranks 1, 3, ...; purged the last");
    kill(&pid_file)?;
    let killed = watch.now();
    watch.mark("killed the origin");
    let (stats, api) = playing.await.unwrap_or_default();
    poll.stop().await;
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
