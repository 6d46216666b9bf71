//! Jobs: the scheduler hands pre-warm jobs to the healthy POPs of every region whose
//! pre-warm time has come; POPs pull their jobs in heartbeat answers (`jobs_for`) and
//! report progress in the next heartbeat (`apply_report`). Every job is a row, written
//! as it changes, so a restart loses nothing, and a POP handed the same job twice (a
//! restart on either side) treats the repeat as the job it already runs.

use std::sync::Arc;
use std::time::Duration;

use segue_core::control::{Job as WireJob, JobReport, JobState, PurgeSelector, Work};

use crate::db::{self, Job};
use crate::error::Error;
use crate::{now_ms, App};

/// POPs that appear (or recover) up to a day after a region's drop still get its job.
const LATE_MS: i64 = 86_400_000;

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

/// One pass: hand out the jobs whose time has come.
pub async fn once(app: &Arc<App>) -> Result<(), Error> {
    let now = now_ms();
    let pops = db::pops(&app.pool, None, now, app.heartbeat_timeout_ms()).await?;
    metrics::gauge!("cp_pops_healthy").set(pops.iter().filter(|p| p.healthy).count() as f64);
    metrics::gauge!("cp_pops_down").set(pops.iter().filter(|p| !p.healthy).count() as f64);
    let mut handed = false;
    for due in db::due_regions(&app.pool, now, LATE_MS).await? {
        let Some(release) = db::release(&app.pool, &due.release_id).await? else { continue };
        let total = (release.content_ids.len() * release.tiers.len()) as i64;
        for pop in pops.iter().filter(|p| p.healthy && p.region == due.region) {
            if db::ensure_job(&app.pool, "prewarm", &release.id, &pop.id, total, now).await? {
                tracing::info!(release = release.id, pop = pop.id, region = pop.region, "pre-warm job handed out");
                metrics::counter!("cp_prewarm_jobs_total").increment(1);
                handed = true;
            }
        }
    }
    if handed {
        app.jobs_changed();
    }
    Ok(())
}

/// The wire id of a job row: `release:ID` or `purge:ID`.
fn wire_id(job: &Job) -> String {
    match job.kind.as_str() {
        "prewarm" => format!("release:{}", job.parent_id),
        _ => format!("purge:{}", job.parent_id),
    }
}

/// The jobs `pop` should run now, as sent in its heartbeat answer; pending ones become
/// running (handed out).
pub async fn jobs_for(app: &Arc<App>, pop: &str) -> Result<Vec<WireJob>, Error> {
    let now = now_ms();
    let mut out = Vec::new();
    for mut job in db::jobs_for_pop(&app.pool, pop, now).await? {
        let work = match job.kind.as_str() {
            "prewarm" => {
                let Some(release) = db::release(&app.pool, &job.parent_id).await? else { continue };
                let paths = release
                    .content_ids
                    .iter()
                    .flat_map(|c| release.tiers.iter().map(move |t| format!("/a/{c}/{t}.ogg")))
                    .collect();
                Work::Prewarm { paths }
            }
            _ => {
                let Some(purge) = db::purge(&app.pool, &job.parent_id).await? else { continue };
                let selector: PurgeSelector = serde_json::from_value(purge.selector)
                    .map_err(|e| Error::Database(format!("purge {}: stored selector: {e}", purge.id)))?;
                Work::Purge { selector }
            }
        };
        if job.state == "pending" {
            job.state = "running".into();
            db::update_job(&app.pool, &job, now).await?;
            tracing::info!(kind = job.kind, parent = job.parent_id, pop, "job handed to the POP");
        }
        out.push(WireJob { id: wire_id(&job), work });
    }
    Ok(out)
}

/// Record what `pop` says of one of its jobs. Failures are retried with backoff (the job
/// goes back to pending), then flagged failed after `max_attempts`.
pub async fn apply_report(app: &Arc<App>, pop: &str, report: &JobReport) -> Result<(), Error> {
    let Some((kind, parent)) = report
        .id
        .strip_prefix("release:")
        .map(|p| ("prewarm", p))
        .or_else(|| report.id.strip_prefix("purge:").map(|p| ("purge", p)))
    else {
        return Err(Error::BadRequest(format!("job id {:?} is not one this control plane hands out", report.id)));
    };
    let Some(mut job) = db::job_of(&app.pool, kind, parent, pop).await? else {
        return Err(Error::BadRequest(format!("no job {:?} for POP {pop}", report.id)));
    };
    // Only jobs handed out take reports; a late report of a settled job changes nothing.
    if job.state != "running" {
        return Ok(());
    }
    let now = now_ms();
    job.total = report.total as i64;
    job.done = report.done as i64;
    job.bytes = report.bytes as i64;
    match report.state {
        JobState::Running => {}
        JobState::Done => {
            job.state = "done".into();
            job.error.clear();
            tracing::info!(kind, parent, pop, bytes = job.bytes, "job done");
            if kind == "prewarm" {
                metrics::counter!("cp_prewarm_bytes_total").increment(report.bytes);
            }
        }
        JobState::Failed => {
            job.attempts += 1;
            job.error = report.error.chars().take(2000).collect();
            if job.attempts >= i64::from(app.config.max_attempts) {
                job.state = "failed".into();
                metrics::counter!("cp_jobs_failed_total", "kind" => kind).increment(1);
                tracing::warn!(kind, parent, pop, error = job.error, "job failed for good");
            } else {
                job.state = "pending".into();
                job.next_try_ms = now + (1000i64 << job.attempts.min(6));
                tracing::info!(kind, parent, pop, attempts = job.attempts, error = job.error, "job failed; will retry");
            }
        }
    }
    db::update_job(&app.pool, &job, now).await
}
