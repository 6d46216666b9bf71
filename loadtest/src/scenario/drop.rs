//! `album-drop`: an album released at T to two regions (the second `stagger` later), its
//! objects purged from the whole fleet first so the drop starts cold. With `prewarm`, a
//! release at the control plane has every POP of each region fetch the album before its
//! drop; without, the first listeners' misses fill the fleet. At each region's drop all
//! its listeners press play at once, then keep listening to the album.
//!
//! Measured: the origin's content requests and bytes over the run (pre-warm traffic
//! before T, the storm's after), the first range's time to first byte per region at its
//! drop, and errors. With pre-warm the origin must see no content request from the first
//! drop on.

use crate::now_ms;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use super::crowd::{report, watch_origin, Crowd};
use super::lab::{Lab, Track};
use super::listener::{Catalog, ListenerStats};
use super::watch::{Sample, Watch};
use super::{Error, Options, Report};

/// `2026-12-01T00:00:00Z` for a Unix millisecond (whole seconds).
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

async fn sleep_until_ms(at: i64) {
    let wait = at - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// The album with the most tracks, in track order.
fn album_of(tracks: Vec<Track>) -> Result<Vec<Track>, Error> {
    let mut by_album: std::collections::BTreeMap<String, Vec<Track>> = std::collections::BTreeMap::new();
    for t in tracks {
        by_album.entry(t.album.clone()).or_default().push(t);
    }
    let mut album =
        by_album.into_values().max_by_key(Vec::len).ok_or_else(|| Error::Setup("no album in the catalog".into()))?;
    album.sort_by_key(|t| t.track_number);
    Ok(album)
}

pub async fn album_drop(lab: &Lab, opts: &Options) -> Result<Report, Error> {
    let regions: Vec<_> = lab.regions.iter().take(2).cloned().collect();
    let album = album_of(lab.tracks().await?)?;
    let cids: Vec<String> = album.iter().map(|t| t.content_id.clone()).collect();
    let watch = Arc::new(Watch::new());
    let crowd = Crowd::new(lab, opts, &watch, opts.listeners, true).await?;
    let poll = watch_origin(lab, &watch);

    // Cold: no POP (nor the shield) holds the album.
    lab.purge(&cids, false).await?;
    watch.mark("album purged from every POP");
    let first_drop = (now_ms() + opts.lead.as_millis() as i64 + 999) / 1000 * 1000;
    let drops: Vec<i64> = (0..regions.len()).map(|r| first_drop + r as i64 * opts.stagger.as_millis() as i64).collect();
    // Listeners of a region may stream the album from its drop on.
    for t in &album {
        for (r, region) in regions.iter().enumerate() {
            let grant = serde_json::json!({ "countries": region.countries, "release_at_ms": drops[r] });
            lab.app(Method::PUT, &format!("/v1/admin/tracks/{}/rights", t.id), Some(grant)).await?;
        }
    }
    let run = now_ms();
    let mut releases = Vec::new();
    if opts.prewarm {
        for (r, region) in regions.iter().enumerate() {
            // Pre-warm as soon as the control plane schedules it: a second from now.
            let lead_secs = ((drops[r] - now_ms()) / 1000 - 1).max(1);
            let id = format!("lt-drop-{run}-{}", region.name);
            let body = serde_json::json!({
                "id": id,
                "title": "loadtest album drop",
                "content_ids": cids,
                "tiers": [opts.tier],
                "release_at": rfc3339(drops[r]),
                "regions": [region.name],
                "lead_secs": lead_secs,
                "schedule": true,
            });
            lab.cp(Method::POST, "/v1/releases", Some(body)).await?;
            releases.push((region.name.clone(), id));
        }
        watch.mark("releases scheduled with pre-warm");
    }
    let t_of = |ms: i64| watch.now() + (ms - now_ms()) as f64 / 1000.0;
    let drop_t: Vec<f64> = drops.iter().map(|&d| t_of(d)).collect();

    // The storm: each region's listeners press play at its drop, then keep listening.
    let album_catalog = Catalog::new(album.iter().map(|t| t.id.clone()).collect(), opts.zipf);
    let last_drop = *drops.last().unwrap_or(&first_drop);
    let until = Instant::now() + Duration::from_millis((last_drop - now_ms()).max(0) as u64) + opts.duration;
    let mut tasks = Vec::new();
    for (mut l, region) in crowd.listeners.into_iter().zip(crowd.regions) {
        let at = regions.iter().position(|r| r.name == region).map_or(first_drop, |r| drops[r]);
        let catalog = album_catalog.clone();
        tasks.push(tokio::spawn(async move {
            sleep_until_ms(at).await;
            l.session(&catalog, until).await;
            (l.stats, l.api_ms)
        }));
    }
    // Meanwhile: how the pre-warm went.
    let mut prewarm = Vec::new();
    for (region, id) in &releases {
        let started = watch.now();
        let (mut done_at, mut last) = (None, serde_json::Value::Null);
        while now_ms() < last_drop + 1000 {
            if let Ok(s) = lab.cp(Method::GET, &format!("/v1/releases/{id}"), None).await {
                let rs = s["region_status"].as_array().and_then(|a| a.first()).cloned().unwrap_or_default();
                if rs["pops"].as_u64().unwrap_or(0) > 0 && rs["pops"] == rs["pops_done"] {
                    done_at = Some(watch.now());
                    last = rs;
                    break;
                }
                last = rs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let drop_at = drop_t[regions.iter().position(|r| &r.name == region).unwrap_or(0)];
        prewarm.push(serde_json::json!({
            "region": region, "release": id,
            "done_before_drop": done_at.is_some_and(|d| d <= drop_at),
            "done_at_s": done_at, "waited_from_s": started, "status": last,
        }));
    }
    for (r, region) in regions.iter().enumerate() {
        watch.mark_at(drop_t[r], format!("drop in {}", region.name));
    }
    let (mut stats, mut api) = (Vec::new(), Vec::new());
    for t in tasks {
        if let Ok((s, a)) = t.await {
            stats.push(s);
            api.extend(a);
        }
    }
    poll.stop().await;

    let samples = watch.samples();
    let end = watch.now();
    let region_of = |pop: &str| lab.pops.iter().find(|p| p.url == pop).map_or("", |p| p.region.as_str());
    let per_region: Vec<serde_json::Value> = regions
        .iter()
        .enumerate()
        .map(|(r, region)| {
            let (a, b) = (drop_t[r], drop_t[r] + 10.0);
            let firsts: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.first && s.t >= a - 0.5 && s.t < b && region_of(&s.pop) == region.name)
                .collect();
            let (req, bytes) = watch.origin_between(a, b);
            serde_json::json!({
                "first_range_x_cache": super::watch::x_cache(&firsts),
                "region": region.name,
                "drop_at_s": a,
                "first_range_ms": super::watch::ttfb(&firsts),
                "first_ranges": firsts.len(),
                "first_range_errors": firsts.iter().filter(|s| !s.ok).count(),
                "origin_requests_in_10s": req,
                "origin_bytes_in_10s": bytes,
            })
        })
        .collect();
    let (after_req, after_bytes) = watch.origin_between(drop_t[0], end);
    let (before_req, before_bytes) = watch.origin_between(0.0, drop_t[0]);
    let findings = serde_json::json!({
        "prewarm": opts.prewarm,
        "stagger_s": opts.stagger.as_secs_f64(),
        "album_tracks": album.len(),
        "listeners_per_region": opts.listeners,
        "regions": per_region,
        "origin_requests_before_drop": before_req,
        "origin_bytes_before_drop": before_bytes,
        "origin_requests_from_drop": after_req,
        "origin_bytes_from_drop": after_bytes,
        "prewarm_jobs": prewarm,
    });
    let clients = ListenerStats::sum(&stats, api, &watch, drop_t[0] - 1.0);
    Ok(report(lab, opts, &watch, clients, findings))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_unix_ms() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_083_200_000), "2026-12-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400_000 + 3_723_000), "2000-02-29T01:02:03Z");
    }
}
