//! The scheduler: every tick (or when woken) it hands pre-warm jobs to the healthy POPs
//! of every region whose pre-warm time has come, and advances every active job by one
//! call on its POP's admin API. Job state is written back after each call, so a crash
//! at any point repeats at most that one call (pre-warms and purges are idempotent).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::db::{self, Job, Pop};
use crate::error::Error;
use crate::{call, now_ms, App};

/// POPs that appear (or recover) up to a day after a region's drop still get its job.
const LATE_MS: i64 = 86_400_000;
/// POP calls in flight at once.
const CONCURRENCY: usize = 32;

pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let tick = Duration::from_millis(app.config.tick_millis);
    loop {
        if let Err(e) = once(&app).await {
            tracing::warn!(error = %e, "scheduler tick failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = app.wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// One pass: hand out due jobs, then advance every active one.
pub async fn once(app: &Arc<App>) -> Result<(), Error> {
    let now = now_ms();
    let timeout_ms = app.heartbeat_timeout_ms();
    let pops = db::pops(&app.pool, None, now, timeout_ms).await?;
    metrics::gauge!("cp_pops_healthy").set(pops.iter().filter(|p| p.healthy).count() as f64);
    metrics::gauge!("cp_pops_down").set(pops.iter().filter(|p| !p.healthy).count() as f64);
    for due in db::due_regions(&app.pool, now, LATE_MS).await? {
        let Some(release) = db::release(&app.pool, &due.release_id).await? else { continue };
        let total = (release.content_ids.len() * release.tiers.len()) as i64;
        for pop in pops.iter().filter(|p| p.healthy && p.region == due.region) {
            if db::ensure_job(&app.pool, "prewarm", &release.id, &pop.id, total, now).await? {
                tracing::info!(release = release.id, pop = pop.id, region = pop.region, "pre-warm job handed out");
                metrics::counter!("cp_prewarm_jobs_total").increment(1);
            }
        }
    }
    let by_id: HashMap<&str, &Pop> = pops.iter().map(|p| (p.id.as_str(), p)).collect();
    let jobs = db::active_jobs(&app.pool, now).await?;
    // Jobs of down POPs wait: they resume when the POP heartbeats again.
    let work: Vec<(Job, Pop)> = jobs
        .into_iter()
        .filter_map(|j| by_id.get(j.pop_id.as_str()).filter(|p| p.healthy).map(|p| (j, (*p).clone())))
        .collect();
    futures_util::stream::iter(work)
        .for_each_concurrent(CONCURRENCY, |(job, pop)| async move {
            let key = (job.kind.clone(), job.parent_id.clone(), job.pop_id.clone());
            if let Err(e) = advance(app, job, &pop).await {
                tracing::warn!(kind = key.0, parent = key.1, pop = key.2, error = %e, "job update failed");
            }
        })
        .await;
    Ok(())
}

/// The POP's view of a pre-warm job (`GET /admin/prewarm/ID`).
#[derive(Deserialize)]
struct EdgeJob {
    id: i64,
    #[serde(default)]
    instance: String,
    state: String,
    total: i64,
    done: i64,
    bytes: i64,
    #[serde(default)]
    errors: Vec<String>,
}

async fn advance(app: &Arc<App>, mut job: Job, pop: &Pop) -> Result<(), Error> {
    let outcome = match (job.kind.as_str(), job.state.as_str()) {
        ("prewarm", "pending") => dispatch_prewarm(app, &mut job, pop).await,
        ("prewarm", "running") => poll_prewarm(app, &mut job, pop).await,
        ("purge", "pending") => purge(app, &mut job, pop).await,
        _ => return Ok(()),
    };
    let now = now_ms();
    if let Err(reason) = outcome {
        job.attempts += 1;
        job.error = reason;
        if job.attempts >= i64::from(app.config.max_attempts) {
            job.state = "failed".into();
            metrics::counter!("cp_jobs_failed_total", "kind" => job.kind.clone()).increment(1);
            tracing::warn!(
                kind = job.kind,
                parent = job.parent_id,
                pop = pop.id,
                error = job.error,
                "job failed for good"
            );
        } else {
            job.state = "pending".into();
            job.next_try_ms = now + (1000i64 << job.attempts.min(6));
            tracing::info!(
                kind = job.kind,
                parent = job.parent_id,
                pop = pop.id,
                attempts = job.attempts,
                error = job.error,
                "job failed; will retry"
            );
        }
    }
    db::update_job(&app.pool, &job, now).await
}

fn admin_token(app: &App) -> Option<&str> {
    Some(app.config.edge_admin_token.as_str()).filter(|t| !t.is_empty())
}

async fn dispatch_prewarm(app: &Arc<App>, job: &mut Job, pop: &Pop) -> Result<(), String> {
    let release =
        db::release(&app.pool, &job.parent_id).await.map_err(|e| e.to_string())?.ok_or("the release is gone")?;
    let paths: Vec<String> =
        release.content_ids.iter().flat_map(|c| release.tiers.iter().map(move |t| format!("/a/{c}/{t}.ogg"))).collect();
    // The key makes a repeat after a crash (between the POP accepting and the row being
    // written) return the job already running instead of starting a second one.
    let key = format!("release:{}", job.parent_id);
    let body = serde_json::to_vec(&serde_json::json!({ "paths": paths, "key": key })).map_err(|e| e.to_string())?;
    let (status, resp) =
        call(&pop.admin_url, Method::POST, "/admin/prewarm", admin_token(app), Some(body.into()), app.timeout())
            .await?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("POST /admin/prewarm answered {status}: {}", String::from_utf8_lossy(&resp)));
    }
    let edge: EdgeJob = serde_json::from_slice(&resp).map_err(|e| format!("POST /admin/prewarm: {e}"))?;
    tracing::info!(
        release = job.parent_id,
        pop = pop.id,
        edge_job = edge.id,
        objects = paths.len(),
        "pre-warm dispatched"
    );
    job.state = "running".into();
    job.edge_job = edge.id;
    job.edge_instance = edge.instance;
    job.total = edge.total;
    job.error.clear();
    Ok(())
}

async fn poll_prewarm(app: &Arc<App>, job: &mut Job, pop: &Pop) -> Result<(), String> {
    let path = format!("/admin/prewarm/{}", job.edge_job);
    let (status, resp) = call(&pop.admin_url, Method::GET, &path, admin_token(app), None, app.timeout()).await?;
    let edge: Option<EdgeJob> = match status {
        StatusCode::OK => Some(serde_json::from_slice(&resp).map_err(|e| format!("GET {path}: {e}"))?),
        StatusCode::NOT_FOUND => None,
        s => return Err(format!("GET {path} answered {s}")),
    };
    let Some(edge) = edge.filter(|e| e.instance == job.edge_instance) else {
        // The POP restarted and forgot the job: hand it out again (what it had fetched
        // is on its SSD, so the repeat costs little).
        tracing::info!(
            release = job.parent_id,
            pop = pop.id,
            "POP lost its pre-warm job (restarted); dispatching again"
        );
        job.state = "pending".into();
        return Ok(());
    };
    job.total = edge.total;
    job.done = edge.done;
    job.bytes = edge.bytes;
    match edge.state.as_str() {
        "running" => Ok(()),
        "done" => {
            job.state = "done".into();
            job.error.clear();
            tracing::info!(release = job.parent_id, pop = pop.id, bytes = job.bytes, "pre-warm done");
            metrics::counter!("cp_prewarm_bytes_total").increment(job.bytes.max(0) as u64);
            Ok(())
        }
        _ => Err(format!("the POP's pre-warm failed: {}", edge.errors.join("; "))),
    }
}

async fn purge(app: &Arc<App>, job: &mut Job, pop: &Pop) -> Result<(), String> {
    let purge = db::purge(&app.pool, &job.parent_id).await.map_err(|e| e.to_string())?.ok_or("the purge is gone")?;
    let body = serde_json::to_vec(&purge.selector).map_err(|e| e.to_string())?;
    let (status, resp) =
        call(&pop.admin_url, Method::POST, "/admin/purge", admin_token(app), Some(body.into()), app.timeout()).await?;
    // 404: the POP holds nothing that matches, which is what a purge wants.
    if !status.is_success() && status != StatusCode::NOT_FOUND {
        return Err(format!("POST /admin/purge answered {status}: {}", String::from_utf8_lossy(&resp)));
    }
    job.state = "done".into();
    job.done = 1;
    job.error.clear();
    tracing::info!(purge = job.parent_id, pop = pop.id, "purged");
    Ok(())
}
