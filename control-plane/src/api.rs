//! The HTTP API. Release managers (api tokens) create, schedule, inspect and cancel
//! releases and purges; POPs (their own tokens) send heartbeats and get back what is
//! embargoed in their region.
//!
//! ```text
//! POST /v1/pops/heartbeat          POP token    register, report jobs; -> {embargoes, jobs} (long poll)
//! GET  /v1/pops[?region=R]         api token    POPs with health
//! POST /v1/releases                api token    create (draft, or scheduled with "schedule": true)
//! GET  /v1/releases                api token    every release id
//! GET  /v1/releases/ID             api token    release, drop times, per-POP jobs
//! POST /v1/releases/ID/schedule    api token    draft -> scheduled
//! POST /v1/releases/ID/cancel      api token    -> cancelled (pending jobs stop)
//! POST /v1/purges                  api token    {content_id|prefix|tag, soft, region?} -> 202
//! GET  /v1/purges/ID               api token    per-POP progress
//! POST /v1/withdrawals             api token    {content_id, country, until} rights withdrawn -> 201
//! GET  /v1/withdrawals             api token    those in force
//! DELETE /v1/withdrawals/CID/CC    api token    lift one (the right was granted again)
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use segue_core::control::{Embargo, Heartbeat, HeartbeatAnswer, PurgeSelector};
use segue_core::server::{Body, ReqBody};
use segue_core::{ContentId, Tier};
use serde::{Deserialize, Serialize};

use crate::db::{self, RegionDrop};
use crate::error::Error;
use crate::{now_ms, App};

const MAX_BODY: usize = 1 << 20;

pub async fn handle(app: Arc<App>, req: Request<ReqBody>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match route(&app, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    metrics::counter!("cp_requests_total", "status" => resp.status().as_str().to_owned()).increment(1);
    // Reads and heartbeats (every POP, every few seconds) that succeed are routine.
    let routine = method == Method::GET || path == "/v1/pops/heartbeat";
    if !routine || !resp.status().is_success() {
        tracing::info!(%method, path, status = resp.status().as_u16(), "request");
    } else {
        tracing::debug!(%method, path, status = resp.status().as_u16(), "request");
    }
    resp
}

async fn route(app: &Arc<App>, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return Ok(segue_core::server::health_response()),
        (&Method::GET, "/metrics") => return Ok(segue_core::server::metrics_response()),
        (&Method::POST, "/v1/pops/heartbeat") => return heartbeat(app, req).await,
        (&Method::GET | &Method::HEAD, p) if p == "/" || p == "/index.html" || p.starts_with("/web/") => {
            if let Some(file) = crate::console::serve(p, req.headers()) {
                return Ok(file);
            }
        }
        _ => {}
    }
    if !app.api_authorized(req.headers()) {
        return Err(Error::Unauthorized);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "pops"]) => {
            let region = segue_core::server::query_param(req.uri().query(), "region");
            if let Some(r) = region {
                app.region(r)?;
            }
            let pops = db::pops(&app.pool, region, now_ms(), app.heartbeat_timeout_ms()).await?;
            json(StatusCode::OK, &serde_json::json!({ "pops": pops }))
        }
        (&Method::GET, ["v1", "regions"]) => {
            json(StatusCode::OK, &serde_json::json!({ "regions": app.config.regions }))
        }
        (&Method::GET, ["v1", "releases", id, "events"]) => {
            crate::console::status_events(app, crate::console::Watched::Release, id).await
        }
        (&Method::GET, ["v1", "purges", id, "events"]) => {
            crate::console::status_events(app, crate::console::Watched::Purge, id).await
        }
        (&Method::POST, ["v1", "releases"]) => {
            let body: CreateRelease = read_json(req).await?;
            let release = create_release(app, body).await?;
            json(StatusCode::CREATED, &release)
        }
        (&Method::GET, ["v1", "releases"]) => {
            json(StatusCode::OK, &serde_json::json!({ "releases": db::release_ids(&app.pool).await? }))
        }
        (&Method::GET, ["v1", "releases", id]) => json(StatusCode::OK, &release_status(app, id).await?),
        (&Method::POST, ["v1", "releases", id, "schedule"]) => {
            let release = db::release(&app.pool, id).await?.ok_or_else(|| no_release(id))?;
            check_future(&release.regions)?;
            if !db::set_release_state(&app.pool, id, &["draft"], "scheduled", now_ms()).await? {
                return Err(Error::Conflict(format!("release {id} is {}, not draft", release.state)));
            }
            tracing::info!(release = id, "release scheduled");
            app.wake.notify_one();
            json(StatusCode::OK, &release_status(app, id).await?)
        }
        (&Method::POST, ["v1", "releases", id, "cancel"]) => {
            let release = db::release(&app.pool, id).await?.ok_or_else(|| no_release(id))?;
            if !db::set_release_state(&app.pool, id, &["draft", "scheduled"], "cancelled", now_ms()).await? {
                return Err(Error::Conflict(format!("release {id} is already {}", release.state)));
            }
            tracing::info!(release = id, "release cancelled");
            json(StatusCode::OK, &release_status(app, id).await?)
        }
        (&Method::POST, ["v1", "purges"]) => {
            let body: CreatePurge = read_json(req).await?;
            let id = create_purge(app, body).await?;
            json(StatusCode::ACCEPTED, &purge_status(app, &id).await?)
        }
        (&Method::GET, ["v1", "purges", id]) => json(StatusCode::OK, &purge_status(app, id).await?),
        (&Method::POST, ["v1", "withdrawals"]) => {
            let w: segue_core::control::Withdrawal = read_json(req).await?;
            check_withdrawal(&w.content_id, &w.country)?;
            let now = now_ms();
            let until_ms = w.until.saturating_mul(1000);
            if until_ms <= now || until_ms > now + MAX_WITHDRAWAL_MS {
                return Err(Error::BadRequest(format!(
                    "until {} must be a Unix second in the next {} days (the longest URL lifetime)",
                    w.until,
                    MAX_WITHDRAWAL_MS / 86_400_000
                )));
            }
            db::put_withdrawal(&app.pool, &w.content_id, &w.country, until_ms, now).await?;
            tracing::info!(content = w.content_id, country = w.country, until = w.until, "rights withdrawn");
            json(StatusCode::CREATED, &w)
        }
        (&Method::GET, ["v1", "withdrawals"]) => {
            json(StatusCode::OK, &serde_json::json!({ "withdrawals": db::withdrawals(&app.pool, now_ms()).await? }))
        }
        (&Method::DELETE, ["v1", "withdrawals", content_id, country]) => {
            check_withdrawal(content_id, country)?;
            let lifted = db::delete_withdrawal(&app.pool, content_id, country).await?;
            tracing::info!(content = content_id, country, lifted, "withdrawal lifted");
            json(StatusCode::OK, &serde_json::json!({ "content_id": content_id, "country": country, "lifted": lifted }))
        }
        (_, ["v1", "pops" | "releases" | "purges" | "withdrawals" | "regions", ..]) => {
            Ok(segue_core::server::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{method} {path}"),
            ))
        }
        _ => Err(Error::NotFound(format!("no route {path}"))),
    }
}

/// Withdrawals last at most this long (the app API's longest URL lifetime is a day).
const MAX_WITHDRAWAL_MS: i64 = 7 * 86_400_000;

fn check_withdrawal(content_id: &str, country: &str) -> Result<(), Error> {
    content_id
        .parse::<ContentId>()
        .map_err(|_| Error::BadRequest(format!("content_id {content_id:?} is not a content id (64 hex digits)")))?;
    if !segue_core::geo::is_country_code(country) {
        return Err(Error::BadRequest(format!("country {country:?} is not an ISO 3166-1 alpha-2 code")));
    }
    Ok(())
}

fn no_release(id: &str) -> Error {
    Error::NotFound(format!("no release {id:?}"))
}

fn json(status: StatusCode, v: &impl Serialize) -> Result<Response<Body>, Error> {
    Ok(segue_core::server::json_response(status, v))
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<ReqBody>) -> Result<T, Error> {
    segue_core::server::read_json(req, MAX_BODY).await.map_err(Error::BadRequest)
}

// ---- POP heartbeats ----

/// Longest a heartbeat is held waiting for jobs.
const MAX_WAIT_MS: u64 = 30_000;

async fn heartbeat(app: &Arc<App>, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let token = bearer(req.headers()).map(str::to_owned);
    let hb: Heartbeat = read_json(req).await?;
    let Some(expected) = app.config.pop_tokens.get(&hb.id) else {
        return Err(Error::Forbidden(format!("POP {:?} is not in pop_tokens", hb.id)));
    };
    if !token.is_some_and(|t| segue_core::token::constant_time_eq(t.as_bytes(), expected.as_bytes())) {
        return Err(Error::Unauthorized);
    }
    app.region(&hb.region)?;
    for (field, url, required) in [("public_url", &hb.public_url, true), ("admin_url", &hb.admin_url, false)] {
        let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 512;
        if !(ok || (!required && url.is_empty())) {
            return Err(Error::BadRequest(format!("{field} must be an http(s) URL")));
        }
    }
    if !(0.0..=1.0).contains(&hb.hit_ratio) {
        return Err(Error::BadRequest("hit_ratio must be within 0..1".into()));
    }
    let now = now_ms();
    let h = db::Heartbeat {
        id: &hb.id,
        region: &hb.region,
        version: &hb.version,
        public_url: &hb.public_url,
        admin_url: &hb.admin_url,
        mem_bytes: hb.mem_bytes.min(i64::MAX as u64) as i64,
        ssd_bytes: hb.ssd_bytes.min(i64::MAX as u64) as i64,
        hit_ratio: hb.hit_ratio,
        requests: hb.requests.min(i64::MAX as u64) as i64,
        errors: hb.errors.min(i64::MAX as u64) as i64,
        healthy: hb.healthy,
        connections: hb.connections.min(i64::MAX as u64) as i64,
        egress_mbps: if hb.egress_mbps.is_finite() { hb.egress_mbps.max(0.0) } else { 0.0 },
        saturated: hb.saturated,
    };
    let came_up = db::heartbeat(&app.pool, &h, now, app.heartbeat_timeout_ms()).await?;
    metrics::counter!("cp_heartbeats_total").increment(1);
    for report in &hb.jobs {
        crate::scheduler::apply_report(app, &hb.id, report).await?;
    }
    // A POP that just came (back) may have jobs waiting for it: hand them out now rather
    // than at the next tick. (Every heartbeat waking the scheduler would make its work
    // grow with the number of POPs.)
    if came_up {
        tracing::info!(pop = hb.id, region = hb.region, "POP up");
        app.wake.notify_one();
    }
    // Long poll: hold the answer until a job for this POP exists or the wait ends.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(hb.wait_ms.min(MAX_WAIT_MS));
    let mut changed = app.jobs.subscribe();
    let mut stopping = app.stopping.subscribe();
    let jobs = loop {
        let jobs = crate::scheduler::jobs_for(app, &hb.id).await?;
        if !jobs.is_empty() || tokio::time::Instant::now() >= deadline || *stopping.borrow() {
            break jobs;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { break jobs },
            _ = stopping.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };
    let embargoes: Vec<Embargo> = db::embargoes(&app.pool, &hb.region, now_ms())
        .await?
        .into_iter()
        .map(|(content_id, ms)| Embargo { content_id, until: if ms == i64::MAX { i64::MAX } else { ms / 1000 } })
        .collect();
    let withdrawn = db::withdrawals(&app.pool, now_ms()).await?;
    json(StatusCode::OK, &HeartbeatAnswer { embargoes, jobs, withdrawn })
}

pub use segue_core::server::bearer;

// ---- releases ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRelease {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: String,
    content_ids: Vec<String>,
    #[serde(default)]
    tiers: Vec<String>,
    /// RFC 3339 UTC (`2026-12-01T00:00:00Z`), or with `local_time` a wall-clock time
    /// without zone (`2026-12-01T00:00:00`) meaning that time in each region.
    release_at: String,
    #[serde(default)]
    local_time: bool,
    regions: Vec<String>,
    #[serde(default)]
    lead_secs: Option<u64>,
    /// Schedule at once (otherwise a draft until `/schedule`).
    #[serde(default)]
    schedule: bool,
}

/// Parse RFC 3339 (`...Z`, or with `local` a zone-less wall-clock time) to Unix ms.
fn parse_time(s: &str, local: bool) -> Result<i64, Error> {
    let with_zone = if local {
        if s.ends_with('Z') || s.contains('+') {
            return Err(Error::BadRequest(format!("release_at {s:?}: with local_time, give a time without a zone")));
        }
        format!("{s}Z")
    } else {
        s.to_owned()
    };
    let t = aws_smithy_types::DateTime::from_str(&with_zone, aws_smithy_types::date_time::Format::DateTime)
        .map_err(|e| Error::BadRequest(format!("release_at {s:?} is not an RFC 3339 time: {e}")))?;
    t.to_millis().map_err(|e| Error::BadRequest(format!("release_at {s:?}: {e}")))
}

fn format_time(ms: i64) -> String {
    aws_smithy_types::DateTime::from_millis(ms)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| ms.to_string())
}

fn check_future(regions: &[RegionDrop]) -> Result<(), Error> {
    let now = now_ms();
    if let Some(past) = regions.iter().find(|d| d.drop_at_ms <= now) {
        return Err(Error::BadRequest(format!(
            "release time {} in region {} is in the past",
            format_time(past.drop_at_ms),
            past.region
        )));
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

async fn create_release(app: &Arc<App>, b: CreateRelease) -> Result<ReleaseStatus, Error> {
    let id = match b.id {
        Some(id) if !valid_id(&id) => {
            return Err(Error::BadRequest(format!("id {id:?}: 1-64 letters, digits, '-', '_' or '.'")))
        }
        Some(id) => id,
        None => format!("rel-{:x}", now_ms()),
    };
    if b.title.len() > 512 {
        return Err(Error::BadRequest("title is over 512 bytes".into()));
    }
    if b.content_ids.is_empty() || b.content_ids.len() > 1000 {
        return Err(Error::BadRequest("content_ids must list 1-1000 content ids".into()));
    }
    let mut content = Vec::new();
    for (i, c) in b.content_ids.iter().enumerate() {
        let cid: ContentId =
            c.parse().map_err(|_| Error::BadRequest(format!("content_ids[{i}] {c:?} is not a content id")))?;
        if !content.contains(&cid) {
            content.push(cid);
        }
    }
    let tiers: Vec<Tier> = if b.tiers.is_empty() {
        Tier::ALL.to_vec()
    } else {
        let mut out = Vec::new();
        for (i, t) in b.tiers.iter().enumerate() {
            let tier: Tier = t.parse().map_err(|_| {
                Error::BadRequest(format!(
                    "tiers[{i}] {t:?} is not a tier ({})",
                    Tier::ALL.map(|t| t.as_str()).join(", ")
                ))
            })?;
            if !out.contains(&tier) {
                out.push(tier);
            }
        }
        out
    };
    if b.regions.is_empty() {
        return Err(Error::BadRequest("regions must list at least one region".into()));
    }
    let at = parse_time(&b.release_at, b.local_time)?;
    let mut drops: Vec<RegionDrop> = Vec::new();
    for name in &b.regions {
        let region = app.region(name)?;
        if drops.iter().any(|d| &d.region == name) {
            continue;
        }
        let offset_ms = if b.local_time { i64::from(region.utc_offset_minutes) * 60_000 } else { 0 };
        drops.push(RegionDrop { region: name.clone(), drop_at_ms: at - offset_ms });
    }
    let lead = b.lead_secs.unwrap_or(app.config.lead_secs);
    if lead > 7 * 86400 {
        return Err(Error::BadRequest("lead_secs must be at most 604800 (a week)".into()));
    }
    check_future(&drops)?;
    // Every object must exist at the origin before anyone schedules a drop of it.
    for cid in &content {
        for tier in &tiers {
            app.origin_has(&format!("/a/{cid}/{tier}.ogg")).await?;
        }
    }
    let content_ids: Vec<String> = content.iter().map(|c| c.to_string()).collect();
    let tier_names: Vec<String> = tiers.iter().map(|t| t.as_str().to_owned()).collect();
    let new = db::NewRelease {
        id: &id,
        title: &b.title,
        state: if b.schedule { "scheduled" } else { "draft" },
        release_at_ms: at,
        local_time: b.local_time,
        lead_secs: lead as i64,
        tiers: &tier_names,
        content_ids: &content_ids,
        regions: &drops,
    };
    if !db::create_release(&app.pool, &new, now_ms()).await? {
        return Err(Error::Conflict(format!("release {id} already exists")));
    }
    tracing::info!(
        release = id,
        objects = content_ids.len() * tier_names.len(),
        scheduled = b.schedule,
        "release created"
    );
    if b.schedule {
        app.wake.notify_one();
    }
    release_status(app, &id).await
}

#[derive(Serialize)]
pub struct RegionStatus {
    region: String,
    drop_at: String,
    drop_at_ms: i64,
    prewarm_at: String,
    pops: usize,
    pops_done: usize,
}

#[derive(Serialize)]
pub struct ReleaseStatus {
    #[serde(flatten)]
    release: db::Release,
    release_at: String,
    objects: usize,
    region_status: Vec<RegionStatus>,
    /// One entry per POP that was handed the pre-warm job.
    jobs: Vec<JobView>,
}

#[derive(Serialize)]
pub struct JobView {
    pop: String,
    region: String,
    #[serde(flatten)]
    job: db::Job,
}

pub(crate) async fn release_status(app: &Arc<App>, id: &str) -> Result<ReleaseStatus, Error> {
    let release = db::release(&app.pool, id).await?.ok_or_else(|| no_release(id))?;
    let jobs = db::jobs_of(&app.pool, "prewarm", id).await?;
    let pops = db::pops(&app.pool, None, now_ms(), app.heartbeat_timeout_ms()).await?;
    let region_of = |pop: &str| pops.iter().find(|p| p.id == pop).map(|p| p.region.clone()).unwrap_or_default();
    let jobs: Vec<JobView> =
        jobs.into_iter().map(|j| JobView { pop: j.pop_id.clone(), region: region_of(&j.pop_id), job: j }).collect();
    let region_status = release
        .regions
        .iter()
        .map(|d| RegionStatus {
            region: d.region.clone(),
            drop_at: format_time(d.drop_at_ms),
            drop_at_ms: d.drop_at_ms,
            prewarm_at: format_time(d.drop_at_ms - release.lead_secs * 1000),
            pops: jobs.iter().filter(|j| j.region == d.region).count(),
            pops_done: jobs.iter().filter(|j| j.region == d.region && j.job.state == "done").count(),
        })
        .collect();
    Ok(ReleaseStatus {
        release_at: if release.local_time {
            format_time(release.release_at_ms).trim_end_matches('Z').to_owned() + " local"
        } else {
            format_time(release.release_at_ms)
        },
        objects: release.content_ids.len() * release.tiers.len(),
        region_status,
        jobs,
        release,
    })
}

// ---- purges ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePurge {
    #[serde(flatten)]
    selector: PurgeSelector,
    #[serde(default)]
    region: Option<String>,
}

async fn create_purge(app: &Arc<App>, b: CreatePurge) -> Result<String, Error> {
    b.selector.validate().map_err(Error::BadRequest)?;
    if let Some(r) = &b.region {
        app.region(r)?;
    }
    let now = now_ms();
    // Every POP of the scope, up or down: one that is down gets its purge when it returns.
    let pops: Vec<String> = db::pops(&app.pool, b.region.as_deref(), now, app.heartbeat_timeout_ms())
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let id = format!("{:x}-{:x}", now, rand_u32());
    let selector = serde_json::to_string(&b.selector).map_err(|e| Error::BadRequest(e.to_string()))?;
    db::create_purge(&app.pool, &id, &selector, b.region.as_deref().unwrap_or(""), &pops, now).await?;
    tracing::info!(purge = id, what = b.selector.what(), pops = pops.len(), "purge created");
    app.jobs_changed();
    Ok(id)
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

pub(crate) async fn purge_status(app: &Arc<App>, id: &str) -> Result<serde_json::Value, Error> {
    let purge = db::purge(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no purge {id:?}")))?;
    let jobs = db::jobs_of(&app.pool, "purge", id).await?;
    let done = jobs.iter().filter(|j| j.state == "done").count();
    let failed = jobs.iter().filter(|j| j.state == "failed").count();
    Ok(serde_json::json!({
        "purge": purge,
        "pops": jobs.len(),
        "pops_done": done,
        "pops_failed": failed,
        "complete": done == jobs.len(),
        "ended": done + failed == jobs.len(),
        "jobs": jobs,
    }))
}
