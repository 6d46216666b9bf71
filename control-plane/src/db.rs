//! State in SQLite (default) or PostgreSQL through sqlx's `Any` driver: one set of
//! queries and one schema (`$N` placeholders, integer flags and millisecond times, which
//! both engines take), migrations embedded in the binary.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::error::Error;

pub type Pool = AnyPool;

/// Open the database (creating a SQLite file and its folder if missing) and bring its
/// schema up to date.
pub async fn open(url: &str) -> Result<Pool, Error> {
    segue_core::sql::open(
        url,
        &[
            (1, "init", include_str!("../migrations/0001_init.sql")),
            (2, "withdrawals", include_str!("../migrations/0002_withdrawals.sql")),
            (3, "pop_rates", include_str!("../migrations/0003_pop_rates.sql")),
            (4, "pop_load", include_str!("../migrations/0004_pop_load.sql")),
        ],
    )
    .await
    .map_err(Error::Database)
}

#[derive(Debug, Clone, Serialize)]
pub struct Pop {
    pub id: String,
    pub region: String,
    pub version: String,
    pub public_url: String,
    pub admin_url: String,
    pub mem_bytes: i64,
    pub ssd_bytes: i64,
    pub hit_ratio: f64,
    /// Requests and 5xx answers per second between the last two heartbeats.
    pub requests_per_s: f64,
    pub errors_per_s: f64,
    /// Client connections open and egress (Mbit/s) at the last heartbeat, and whether the
    /// POP is over its capacity.
    pub connections: i64,
    pub egress_mbps: f64,
    pub saturated: bool,
    pub reported_healthy: bool,
    pub last_seen_ms: i64,
    /// Heard from recently and reporting itself healthy.
    pub healthy: bool,
}

fn pop(r: &AnyRow, now: i64, timeout_ms: i64) -> Result<Pop, sqlx::Error> {
    let last_seen_ms: i64 = r.try_get("last_seen_ms")?;
    let reported_healthy = r.try_get::<i64, _>("reported_healthy")? != 0;
    Ok(Pop {
        id: r.try_get("id")?,
        region: r.try_get("region")?,
        version: r.try_get("version")?,
        public_url: r.try_get("public_url")?,
        admin_url: r.try_get("admin_url")?,
        mem_bytes: r.try_get("mem_bytes")?,
        ssd_bytes: r.try_get("ssd_bytes")?,
        requests_per_s: r.try_get("requests_per_s")?,
        errors_per_s: r.try_get("errors_per_s")?,
        hit_ratio: r.try_get("hit_ratio")?,
        connections: r.try_get("connections")?,
        egress_mbps: r.try_get("egress_mbps")?,
        saturated: r.try_get::<i64, _>("saturated")? != 0,
        reported_healthy,
        last_seen_ms,
        healthy: reported_healthy && now - last_seen_ms <= timeout_ms,
    })
}

pub struct Heartbeat<'a> {
    pub id: &'a str,
    pub region: &'a str,
    pub version: &'a str,
    pub public_url: &'a str,
    pub admin_url: &'a str,
    pub mem_bytes: i64,
    pub ssd_bytes: i64,
    pub hit_ratio: f64,
    pub requests: i64,
    pub errors: i64,
    pub healthy: bool,
    pub connections: i64,
    pub egress_mbps: f64,
    pub saturated: bool,
}

/// Record a heartbeat. True when the POP was unknown or down until now (it may have
/// jobs waiting for it).
pub async fn heartbeat(pool: &Pool, h: &Heartbeat<'_>, now: i64, timeout_ms: i64) -> Result<bool, Error> {
    let before = sqlx::query("SELECT * FROM pops WHERE id = $1").bind(h.id).fetch_optional(pool).await?;
    let was_healthy = match &before {
        Some(r) => pop(r, now, timeout_ms)?.healthy,
        None => false,
    };
    // Rates from the counts' growth since the last report; a POP that restarted counts
    // from zero, so its new totals are this interval's.
    let (mut requests_per_s, mut errors_per_s) = (0.0, 0.0);
    if let Some(r) = &before {
        let (last_ms, last_requests, last_errors): (i64, i64, i64) =
            (r.try_get("last_seen_ms")?, r.try_get("requests")?, r.try_get("errors")?);
        let secs = (now - last_ms) as f64 / 1000.0;
        if secs > 0.0 {
            let grew = |new: i64, old: i64| if new >= old { new - old } else { new };
            requests_per_s = grew(h.requests, last_requests) as f64 / secs;
            errors_per_s = grew(h.errors, last_errors) as f64 / secs;
        } else {
            requests_per_s = r.try_get("requests_per_s")?;
            errors_per_s = r.try_get("errors_per_s")?;
        }
    }
    sqlx::query(
        "INSERT INTO pops (id, region, version, public_url, admin_url, mem_bytes, ssd_bytes, hit_ratio, \
         reported_healthy, first_seen_ms, last_seen_ms, requests, errors, requests_per_s, errors_per_s, \
         connections, egress_mbps, saturated) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (id) DO UPDATE SET region = excluded.region, version = excluded.version, \
         public_url = excluded.public_url, admin_url = excluded.admin_url, mem_bytes = excluded.mem_bytes, \
         ssd_bytes = excluded.ssd_bytes, hit_ratio = excluded.hit_ratio, \
         reported_healthy = excluded.reported_healthy, last_seen_ms = excluded.last_seen_ms, \
         requests = excluded.requests, errors = excluded.errors, requests_per_s = excluded.requests_per_s, \
         errors_per_s = excluded.errors_per_s, connections = excluded.connections, \
         egress_mbps = excluded.egress_mbps, saturated = excluded.saturated",
    )
    .bind(h.id)
    .bind(h.region)
    .bind(h.version)
    .bind(h.public_url)
    .bind(h.admin_url)
    .bind(h.mem_bytes)
    .bind(h.ssd_bytes)
    .bind(h.hit_ratio)
    .bind(h.healthy as i64)
    .bind(now)
    .bind(h.requests)
    .bind(h.errors)
    .bind(requests_per_s)
    .bind(errors_per_s)
    .bind(h.connections)
    .bind(h.egress_mbps)
    .bind(h.saturated as i64)
    .execute(pool)
    .await?;
    Ok(h.healthy && !was_healthy)
}

/// Every POP (of `region` when given), by id.
pub async fn pops(pool: &Pool, region: Option<&str>, now: i64, timeout_ms: i64) -> Result<Vec<Pop>, Error> {
    let rows = match region {
        Some(r) => sqlx::query("SELECT * FROM pops WHERE region = $1 ORDER BY id").bind(r).fetch_all(pool).await?,
        None => sqlx::query("SELECT * FROM pops ORDER BY id").fetch_all(pool).await?,
    };
    Ok(rows.iter().map(|r| pop(r, now, timeout_ms)).collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionDrop {
    pub region: String,
    pub drop_at_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub id: String,
    pub title: String,
    pub state: String,
    pub release_at_ms: i64,
    pub local_time: bool,
    pub lead_secs: i64,
    pub tiers: Vec<String>,
    pub content_ids: Vec<String>,
    pub regions: Vec<RegionDrop>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

pub struct NewRelease<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub state: &'a str,
    pub release_at_ms: i64,
    pub local_time: bool,
    pub lead_secs: i64,
    pub tiers: &'a [String],
    pub content_ids: &'a [String],
    pub regions: &'a [RegionDrop],
}

/// Insert a release with its content and regions in one transaction. `Ok(false)` when
/// the id is taken.
pub async fn create_release(pool: &Pool, r: &NewRelease<'_>, now: i64) -> Result<bool, Error> {
    let mut tx = segue_core::sql::begin_write(pool).await?;
    let inserted = sqlx::query(
        "INSERT INTO releases (id, title, state, release_at_ms, local_time, lead_secs, tiers, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(r.id)
    .bind(r.title)
    .bind(r.state)
    .bind(r.release_at_ms)
    .bind(r.local_time as i64)
    .bind(r.lead_secs)
    .bind(r.tiers.join(","))
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    for cid in r.content_ids {
        sqlx::query("INSERT INTO release_content (release_id, content_id) VALUES ($1, $2)")
            .bind(r.id)
            .bind(cid)
            .execute(&mut *tx)
            .await?;
    }
    for d in r.regions {
        sqlx::query("INSERT INTO release_regions (release_id, region, drop_at_ms) VALUES ($1, $2, $3)")
            .bind(r.id)
            .bind(&d.region)
            .bind(d.drop_at_ms)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub async fn release(pool: &Pool, id: &str) -> Result<Option<Release>, Error> {
    let Some(r) = sqlx::query("SELECT * FROM releases WHERE id = $1").bind(id).fetch_optional(pool).await? else {
        return Ok(None);
    };
    let content_ids = sqlx::query("SELECT content_id FROM release_content WHERE release_id = $1 ORDER BY content_id")
        .bind(id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    let regions =
        sqlx::query("SELECT region, drop_at_ms FROM release_regions WHERE release_id = $1 ORDER BY drop_at_ms, region")
            .bind(id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok(RegionDrop { region: r.try_get(0)?, drop_at_ms: r.try_get(1)? }))
            .collect::<Result<_, sqlx::Error>>()?;
    let tiers: String = r.try_get("tiers")?;
    Ok(Some(Release {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        state: r.try_get("state")?,
        release_at_ms: r.try_get("release_at_ms")?,
        local_time: r.try_get::<i64, _>("local_time")? != 0,
        lead_secs: r.try_get("lead_secs")?,
        tiers: tiers.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
        content_ids,
        regions,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    }))
}

pub async fn release_ids(pool: &Pool) -> Result<Vec<String>, Error> {
    Ok(sqlx::query("SELECT id FROM releases ORDER BY release_at_ms, id")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?)
}

/// Move a release from one of `from` to `to`; false when it was in none of them.
pub async fn set_release_state(pool: &Pool, id: &str, from: &[&str], to: &str, now: i64) -> Result<bool, Error> {
    let mut tx = segue_core::sql::begin_write(pool).await?;
    let Some(row) = sqlx::query("SELECT state FROM releases WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?
    else {
        return Ok(false);
    };
    let state: String = row.try_get(0)?;
    if !from.contains(&state.as_str()) {
        return Ok(false);
    }
    sqlx::query("UPDATE releases SET state = $1, updated_ms = $2 WHERE id = $3")
        .bind(to)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if to == "cancelled" {
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', updated_ms = $1 WHERE kind = 'prewarm' AND parent_id = $2 \
             AND state IN ('pending', 'running')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// A region of a scheduled release whose pre-warm window is open.
pub struct DueRegion {
    pub release_id: String,
    pub region: String,
}

/// Regions whose pre-warm time has come (drop minus lead) and whose drop was less than
/// `late_ms` ago: POPs that join late still get the job.
pub async fn due_regions(pool: &Pool, now: i64, late_ms: i64) -> Result<Vec<DueRegion>, Error> {
    Ok(sqlx::query(
        "SELECT r.id, g.region FROM releases r JOIN release_regions g ON g.release_id = r.id \
         WHERE r.state = 'scheduled' AND g.drop_at_ms - r.lead_secs * 1000 <= $1 AND g.drop_at_ms + $2 >= $1",
    )
    .bind(now)
    .bind(late_ms)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok(DueRegion { release_id: r.try_get(0)?, region: r.try_get(1)? }))
    .collect::<Result<_, sqlx::Error>>()?)
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub kind: String,
    pub parent_id: String,
    pub pop_id: String,
    pub state: String,
    pub attempts: i64,
    #[serde(skip)]
    pub next_try_ms: i64,
    pub total: i64,
    pub done: i64,
    pub bytes: i64,
    pub error: String,
    pub updated_ms: i64,
}

fn job(r: &AnyRow) -> Result<Job, sqlx::Error> {
    Ok(Job {
        kind: r.try_get("kind")?,
        parent_id: r.try_get("parent_id")?,
        pop_id: r.try_get("pop_id")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_try_ms: r.try_get("next_try_ms")?,
        total: r.try_get("total")?,
        done: r.try_get("done")?,
        bytes: r.try_get("bytes")?,
        error: r.try_get("error")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

/// Create a pending job unless one exists for the same (kind, parent, POP).
pub async fn ensure_job(pool: &Pool, kind: &str, parent: &str, pop: &str, total: i64, now: i64) -> Result<bool, Error> {
    let n = sqlx::query(
        "INSERT INTO jobs (kind, parent_id, pop_id, state, attempts, next_try_ms, total, \
         done, bytes, error, created_ms, updated_ms) VALUES ($1, $2, $3, 'pending', 0, 0, $4, 0, 0, '', $5, $5) \
         ON CONFLICT (kind, parent_id, pop_id) DO NOTHING",
    )
    .bind(kind)
    .bind(parent)
    .bind(pop)
    .bind(total)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}

pub async fn jobs_of(pool: &Pool, kind: &str, parent: &str) -> Result<Vec<Job>, Error> {
    Ok(sqlx::query("SELECT * FROM jobs WHERE kind = $1 AND parent_id = $2 ORDER BY pop_id")
        .bind(kind)
        .bind(parent)
        .fetch_all(pool)
        .await?
        .iter()
        .map(job)
        .collect::<Result<_, _>>()?)
}

/// This POP's jobs to hand out now: pending ones whose retry time has come, and ones
/// handed out before and not finished (the POP may have restarted and forgotten them).
pub async fn jobs_for_pop(pool: &Pool, pop: &str, now: i64) -> Result<Vec<Job>, Error> {
    Ok(sqlx::query(
        "SELECT * FROM jobs WHERE pop_id = $1 AND ((state = 'pending' AND next_try_ms <= $2) OR state = 'running') \
         ORDER BY created_ms, kind, parent_id",
    )
    .bind(pop)
    .bind(now)
    .fetch_all(pool)
    .await?
    .iter()
    .map(job)
    .collect::<Result<_, _>>()?)
}

pub async fn job_of(pool: &Pool, kind: &str, parent: &str, pop: &str) -> Result<Option<Job>, Error> {
    Ok(sqlx::query("SELECT * FROM jobs WHERE kind = $1 AND parent_id = $2 AND pop_id = $3")
        .bind(kind)
        .bind(parent)
        .bind(pop)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(job)
        .transpose()?)
}

/// Write a job's new state, unless it was cancelled meanwhile.
pub async fn update_job(pool: &Pool, j: &Job, now: i64) -> Result<(), Error> {
    sqlx::query(
        "UPDATE jobs SET state = $1, attempts = $2, next_try_ms = $3, total = $4, \
         done = $5, bytes = $6, error = $7, updated_ms = $8 \
         WHERE kind = $9 AND parent_id = $10 AND pop_id = $11 AND state <> 'cancelled'",
    )
    .bind(&j.state)
    .bind(j.attempts)
    .bind(j.next_try_ms)
    .bind(j.total)
    .bind(j.done)
    .bind(j.bytes)
    .bind(&j.error)
    .bind(now)
    .bind(&j.kind)
    .bind(&j.parent_id)
    .bind(&j.pop_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A purge and its per-POP jobs, in one transaction.
pub async fn create_purge(
    pool: &Pool,
    id: &str,
    selector: &str,
    region: &str,
    pops: &[String],
    now: i64,
) -> Result<(), Error> {
    let mut tx = segue_core::sql::begin_write(pool).await?;
    sqlx::query("INSERT INTO purges (id, selector, region, created_ms) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(selector)
        .bind(region)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    for pop in pops {
        sqlx::query(
            "INSERT INTO jobs (kind, parent_id, pop_id, state, attempts, next_try_ms, total, \
             done, bytes, error, created_ms, updated_ms) VALUES ('purge', $1, $2, 'pending', 0, 0, 1, 0, 0, '', $3, $3)",
        )
        .bind(id)
        .bind(pop)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Purge {
    pub id: String,
    pub selector: serde_json::Value,
    pub region: String,
    pub created_ms: i64,
}

pub async fn purge(pool: &Pool, id: &str) -> Result<Option<Purge>, Error> {
    let Some(r) = sqlx::query("SELECT * FROM purges WHERE id = $1").bind(id).fetch_optional(pool).await? else {
        return Ok(None);
    };
    let selector: String = r.try_get("selector")?;
    Ok(Some(Purge {
        id: r.try_get("id")?,
        selector: serde_json::from_str(&selector).unwrap_or(serde_json::Value::Null),
        region: r.try_get("region")?,
        created_ms: r.try_get("created_ms")?,
    }))
}

/// Content embargoed in `region` now: releases not yet dropped there (or cancelled,
/// which keeps their content back indefinitely), with the instant it opens.
pub async fn embargoes(pool: &Pool, region: &str, now: i64) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query(
        "SELECT c.content_id, CASE WHEN r.state = 'cancelled' THEN $3 ELSE g.drop_at_ms END \
         FROM releases r JOIN release_regions g ON g.release_id = r.id JOIN release_content c ON c.release_id = r.id \
         WHERE g.region = $1 AND (g.drop_at_ms > $2 OR r.state = 'cancelled') ORDER BY c.content_id",
    )
    .bind(region)
    .bind(now)
    .bind(i64::MAX)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, sqlx::Error>>()?)
}

/// Record (or extend) a withdrawal of `content_id` in `country` until `until_ms`, and
/// forget expired ones (here, not on the heartbeat path, which only reads).
pub async fn put_withdrawal(
    pool: &Pool,
    content_id: &str,
    country: &str,
    until_ms: i64,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO withdrawals (content_id, country, until_ms, created_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (content_id, country) DO UPDATE SET until_ms = excluded.until_ms",
    )
    .bind(content_id)
    .bind(country)
    .bind(until_ms)
    .bind(now)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM withdrawals WHERE until_ms <= $1").bind(now).execute(pool).await?;
    Ok(())
}

/// Lift a withdrawal (the right was granted again). Whether there was one.
pub async fn delete_withdrawal(pool: &Pool, content_id: &str, country: &str) -> Result<bool, Error> {
    let n = sqlx::query("DELETE FROM withdrawals WHERE content_id = $1 AND country = $2")
        .bind(content_id)
        .bind(country)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Withdrawals still in force at `now`.
pub async fn withdrawals(pool: &Pool, now: i64) -> Result<Vec<segue_core::control::Withdrawal>, Error> {
    Ok(sqlx::query(
        "SELECT content_id, country, until_ms FROM withdrawals WHERE until_ms > $1 ORDER BY content_id, country",
    )
    .bind(now)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(segue_core::control::Withdrawal {
            content_id: r.try_get(0)?,
            country: r.try_get(1)?,
            until: r.try_get::<i64, _>(2)? / 1000,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(requests: i64, errors: i64) -> Heartbeat<'static> {
        Heartbeat {
            id: "pop-1",
            region: "eu",
            version: "1",
            public_url: "http://pop-1",
            admin_url: "",
            mem_bytes: 0,
            ssd_bytes: 0,
            hit_ratio: 0.5,
            requests,
            errors,
            healthy: true,
            connections: 0,
            egress_mbps: 0.0,
            saturated: false,
        }
    }

    #[tokio::test]
    async fn rates_come_from_the_counts_between_heartbeats_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("segue-cp-rates-{}", std::process::id()));
        let pool = open(&format!("sqlite://{}/cp.db", dir.display())).await.unwrap();
        let rates = |pops: Vec<Pop>| (pops[0].requests_per_s, pops[0].errors_per_s);
        assert!(heartbeat(&pool, &beat(1_000, 10), 10_000, 15_000).await.unwrap(), "a new POP came up");
        assert_eq!(rates(pops(&pool, None, 10_000, 15_000).await.unwrap()), (0.0, 0.0));
        heartbeat(&pool, &beat(1_500, 15), 15_000, 15_000).await.unwrap();
        assert_eq!(rates(pops(&pool, None, 15_000, 15_000).await.unwrap()), (100.0, 1.0));
        // The POP restarted: its counts began again from zero.
        heartbeat(&pool, &beat(200, 0), 20_000, 15_000).await.unwrap();
        assert_eq!(rates(pops(&pool, None, 20_000, 15_000).await.unwrap()), (40.0, 0.0));
        std::fs::remove_dir_all(&dir).ok();
    }
}
