//! `overflow`: a lab started with `--overflow --pop-capacity-connections N` (an edge
//! outside the control plane stands in for a secondary CDN). A quarter of the listeners
//! play throughout; the rest join for the middle third. Their connections push the POPs
//! over capacity; the POPs report it in their heartbeats, and the app API hands out the
//! overflow CDN for new streams until the crowd leaves and the POPs report room again.

use std::sync::Arc;
use std::time::Instant;

use super::crowd::{catalog, report, watch_origin, Crowd, POLL};
use super::lab::Lab;
use super::listener::ListenerStats;
use super::watch::{Sample, Watch};
use super::{Error, Options, Report};

pub async fn overflow(lab: &Lab, opts: &Options) -> Result<Report, Error> {
    let cdn = lab.overflow.clone().ok_or_else(|| {
        Error::Usage("overflow needs a lab started with --overflow --pop-capacity-connections N".into())
    })?;
    let watch = Arc::new(Watch::new());
    let (catalog, _) = catalog(lab, opts).await?;
    let base = (opts.listeners / 4).max(1);
    let steady = Crowd::new(lab, opts, &watch, base, false).await?;
    let surge = Crowd::new(lab, opts, &watch, opts.listeners.saturating_sub(base).max(1), false).await?;
    let poll = watch_origin(lab, &watch);
    let from = watch.now();
    let until = Instant::now() + opts.duration;
    let third = opts.duration / 3;
    let seed = opts.seed;
    let steady_task = steady.start(&catalog, until, seed);
    let surge_task = tokio::spawn({
        let catalog = catalog.clone();
        let w = watch.clone();
        async move {
            tokio::time::sleep(third).await;
            w.mark("surge joins");
            let out = surge.play(&catalog, Instant::now() + third, seed.wrapping_add(1)).await;
            w.mark("surge leaves");
            out
        }
    });
    // The control plane's view: when POPs first report saturation, and when none does.
    let (mut first_saturated, mut cleared) = (None, None);
    let mut peak_connections = 0u64;
    while Instant::now() < until {
        let t = watch.now();
        if let Ok(pops) = lab.pop_states().await {
            let busy: Vec<&str> = pops.iter().filter(|p| p.saturated).map(|p| p.id.as_str()).collect();
            peak_connections = peak_connections.max(pops.iter().map(|p| p.connections).max().unwrap_or(0));
            if first_saturated.is_none() && !busy.is_empty() {
                first_saturated = Some(t);
                watch.mark(format!("saturated: {}", busy.join(", ")));
            } else if first_saturated.is_some() && cleared.is_none() && busy.is_empty() {
                cleared = Some(t);
                watch.mark("no POP saturated");
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let (mut stats, mut api) = steady_task.await.unwrap_or_default();
    let (s2, a2) = surge_task.await.unwrap_or_default();
    stats.extend(s2);
    api.extend(a2);
    poll.stop().await;
    let samples = watch.samples();
    let end = watch.now();
    let (t1, t2) = (from + third.as_secs_f64(), from + 2.0 * third.as_secs_f64());
    let phase = |a: f64, b: f64| {
        let here: Vec<&Sample> = samples.iter().filter(|s| s.t >= a && s.t < b).collect();
        let to_cdn = here.iter().filter(|s| s.ok && s.pop == cdn.url).count();
        let ok = here.iter().filter(|s| s.ok).count();
        serde_json::json!({
            "from_s": a, "to_s": b,
            "ranges": here.len(),
            "failed": here.len() - ok,
            "served_by_overflow": to_cdn,
            "overflow_share": to_cdn as f64 / ok.max(1) as f64,
            "ttfb_ms": super::watch::ttfb(&here),
        })
    };
    let first_to_cdn = samples.iter().filter(|s| s.pop == cdn.url).map(|s| s.t).reduce(f64::min);
    let findings = serde_json::json!({
        "overflow_cdn": cdn.url,
        "steady_listeners": base,
        "surge_listeners": opts.listeners.saturating_sub(base).max(1),
        "first_saturated_at_s": first_saturated,
        "first_range_to_overflow_at_s": first_to_cdn,
        "saturation_cleared_at_s": cleared,
        "peak_connections_on_a_pop": peak_connections,
        "before": phase(from, t1),
        "surge": phase(t1, t2),
        "after": phase(t2, end),
    });
    let clients = ListenerStats::sum(&stats, api, &watch, from);
    Ok(report(lab, opts, &watch, clients, findings))
}
