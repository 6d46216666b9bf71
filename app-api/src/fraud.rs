//! Fraud flags: accounts whose month of plays looks like a bot farm's. A flagged account
//! is left out of that month's royalty report until someone reviews it: `cleared` puts
//! it back, `confirmed` keeps it out. A scan never reopens a reviewed flag.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::config::Fraud;
use crate::error::Error;
use crate::plays::{day_of, month_bounds};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Serialize)]
pub struct Flag {
    pub user: String,
    pub month: String,
    /// `around_the_clock`, `never_skips`, `loops_one_track` or `many_countries`.
    pub reason: String,
    pub detail: String,
    /// `open`, `cleared` or `confirmed`.
    pub status: String,
    pub flagged_ms: i64,
    pub reviewed_ms: i64,
    pub reviewer: String,
    pub note: String,
}

pub fn check_month(month: &str) -> Result<(i64, i64), Error> {
    month_bounds(month).ok_or_else(|| Error::BadRequest(format!("month {month:?} is not YYYY-MM")))
}

/// Run every rule over `month`'s plays and record new flags. Returns how many were new.
pub async fn scan(pool: &AnyPool, month: &str, rules: &Fraud, now_ms: i64) -> Result<usize, Error> {
    let (start, end) = check_month(month)?;
    let mut found: Vec<(String, &str, String)> = Vec::new();

    let rows = sqlx::query(
        "SELECT user_id, started_ms / 86400000, COUNT(DISTINCT started_ms / 3600000) FROM play_events \
         WHERE started_ms >= $1 AND started_ms < $2 GROUP BY user_id, started_ms / 86400000 \
         HAVING COUNT(DISTINCT started_ms / 3600000) >= $3 ORDER BY user_id",
    )
    .bind(start)
    .bind(end)
    .bind(rules.active_hours_per_day as i64)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let (user, day, hours): (String, i64, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        found.push((
            user,
            "around_the_clock",
            format!("plays started in {hours} distinct hours of {}", day_of(day * DAY_MS)),
        ));
    }

    let rows = sqlx::query(
        "SELECT user_id, COUNT(*) FROM play_events WHERE started_ms >= $1 AND started_ms < $2 \
         GROUP BY user_id HAVING COUNT(*) >= $3 AND MAX(skipped) = 0 ORDER BY user_id",
    )
    .bind(start)
    .bind(end)
    .bind(rules.never_skip_min_plays as i64)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let (user, plays): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
        found.push((user, "never_skips", format!("{plays} plays in {month}, not one skipped")));
    }

    let rows = sqlx::query(
        "SELECT user_id, track_id, started_ms / 86400000, COUNT(*) FROM play_events \
         WHERE started_ms >= $1 AND started_ms < $2 GROUP BY user_id, track_id, started_ms / 86400000 \
         HAVING COUNT(*) >= $3 ORDER BY user_id",
    )
    .bind(start)
    .bind(end)
    .bind(rules.loop_plays_per_day as i64)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let (user, track, day, plays): (String, String, i64, i64) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        found.push((user, "loops_one_track", format!("played {track} {plays} times on {}", day_of(day * DAY_MS))));
    }

    let rows = sqlx::query(
        "SELECT user_id, started_ms / 3600000, COUNT(DISTINCT country) FROM play_events \
         WHERE started_ms >= $1 AND started_ms < $2 GROUP BY user_id, started_ms / 3600000 \
         HAVING COUNT(DISTINCT country) >= $3 ORDER BY user_id",
    )
    .bind(start)
    .bind(end)
    .bind(rules.countries_per_hour as i64)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let (user, hour, countries): (String, i64, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let at = hour * HOUR_MS;
        found.push((
            user,
            "many_countries",
            format!(
                "plays from {countries} countries within the hour from {} {:02}:00 UTC",
                day_of(at),
                (at % DAY_MS) / HOUR_MS
            ),
        ));
    }

    let mut new = 0;
    for (user, reason, detail) in found {
        let mut tx = segue_core::sql::begin_write(pool).await?;
        let done = sqlx::query(
            "INSERT INTO fraud_flags (user_id, month, reason, detail, status, flagged_ms, reviewed_ms, reviewer, note) \
             VALUES ($1, $2, $3, $4, 'open', $5, 0, '', '') ON CONFLICT (user_id, month, reason) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(month)
        .bind(reason)
        .bind(detail.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            crate::periods::flag_history(&mut tx, &user, month, Some(reason), "open", now_ms).await?;
        }
        tx.commit().await?;
        if done.rows_affected() > 0 {
            tracing::warn!(user, month, reason, detail, "account flagged");
            metrics::counter!("plays_fraud_flags_total", "reason" => reason).increment(1);
            new += 1;
        }
    }
    Ok(new)
}

/// The flags of `month`, optionally only those with `status`.
pub async fn list(pool: &AnyPool, month: &str, status: Option<&str>) -> Result<Vec<Flag>, Error> {
    check_month(month)?;
    let rows = sqlx::query(
        "SELECT user_id, month, reason, detail, status, flagged_ms, reviewed_ms, reviewer, note FROM fraud_flags \
         WHERE month = $1 AND ($2 = '' OR status = $2) ORDER BY user_id, reason",
    )
    .bind(month)
    .bind(status.unwrap_or(""))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Flag {
                user: r.try_get(0)?,
                month: r.try_get(1)?,
                reason: r.try_get(2)?,
                detail: r.try_get(3)?,
                status: r.try_get(4)?,
                flagged_ms: r.try_get(5)?,
                reviewed_ms: r.try_get(6)?,
                reviewer: r.try_get(7)?,
                note: r.try_get(8)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)
}

/// `POST /v1/admin/fraud/review`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub user: String,
    pub month: String,
    /// `cleared` (the plays count) or `confirmed` (they stay out).
    pub verdict: String,
    #[serde(default)]
    pub note: String,
}

/// Record a review of every flag of (user, month). Returns how many flags it covered.
pub async fn review(pool: &AnyPool, r: &Review, reviewer: &str, now_ms: i64) -> Result<u64, Error> {
    check_month(&r.month)?;
    if !matches!(r.verdict.as_str(), "cleared" | "confirmed") {
        return Err(Error::BadRequest(format!("verdict {:?} must be cleared or confirmed", r.verdict)));
    }
    let mut tx = segue_core::sql::begin_write(pool).await?;
    let done = sqlx::query(
        "UPDATE fraud_flags SET status = $1, reviewed_ms = $2, reviewer = $3, note = $4 \
         WHERE user_id = $5 AND month = $6",
    )
    .bind(r.verdict.as_str())
    .bind(now_ms)
    .bind(reviewer)
    .bind(r.note.as_str())
    .bind(r.user.as_str())
    .bind(r.month.as_str())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no flags for user {:?} in {}", r.user, r.month)));
    }
    crate::periods::flag_history(&mut tx, &r.user, &r.month, None, &r.verdict, now_ms).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
