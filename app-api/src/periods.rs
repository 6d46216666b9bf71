//! Royalty periods: closing a month, and reading shares and fraud flags as they were at
//! a given time.
//!
//! A report run with `close` closes its month: the report is stored as issued and is
//! what every later request for that month gets, byte for byte. Months close in order
//! (the first close also closes everything before it). Plays of a closed month, or of
//! any month before it, that reach the log after the close are not lost and do not
//! rewrite it: they are paid in the next month's report as adjustments, lines marked
//! with the month they were played in.
//!
//! Shares and fraud flags change over time; both keep their history
//! (`track_share_versions`, `fraud_flag_history`), so a closed month re-rendered at an
//! earlier log position (`as_of`) uses the shares and flags in force when it was closed.

use sqlx::{AnyPool, Row};

use crate::error::Error;

/// A closed month.
#[derive(Debug, Clone)]
pub struct Close {
    pub month: String,
    /// The log position the closing report covered.
    pub seq: i64,
    pub closed_ms: i64,
    /// The report as issued (JSON).
    pub report: String,
}

/// Every closed month, oldest first.
pub async fn closes(pool: &AnyPool) -> Result<Vec<Close>, Error> {
    Ok(sqlx::query("SELECT month, seq, closed_ms, report FROM royalty_closes ORDER BY month")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Close { month: r.try_get(0)?, seq: r.try_get(1)?, closed_ms: r.try_get(2)?, report: r.try_get(3)? })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Store a closing report. Fails (409) if the month was closed meanwhile.
pub async fn close(pool: &AnyPool, c: &Close) -> Result<(), Error> {
    let done = sqlx::query(
        "INSERT INTO royalty_closes (month, seq, closed_ms, report) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (month) DO NOTHING",
    )
    .bind(c.month.as_str())
    .bind(c.seq)
    .bind(c.closed_ms)
    .bind(c.report.as_str())
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::Conflict(format!("{} was closed meanwhile", c.month)));
    }
    tracing::info!(month = c.month, seq = c.seq, "royalty month closed");
    Ok(())
}

/// The month after `YYYY-MM`.
pub fn next_month(month: &str) -> Option<String> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    Some(if m >= 12 { format!("{:04}-01", y + 1) } else { format!("{y:04}-{:02}", m + 1) })
}

/// `YYYY-MM` of a Unix millisecond time (UTC).
pub fn month_of(ms: i64) -> String {
    crate::plays::day_of(ms)[..7].to_owned()
}

/// Each track's shares in force at `at_ms`: (track, holder, basis points), by track and holder.
pub async fn shares_at(pool: &AnyPool, at_ms: i64) -> Result<Vec<(String, String, i64)>, Error> {
    Ok(sqlx::query(
        "SELECT track_id, holder, share_bps FROM track_share_versions \
         WHERE valid_from_ms <= $1 AND valid_until_ms > $1 ORDER BY track_id, holder",
    )
    .bind(at_ms)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
    .collect::<Result<_, sqlx::Error>>()?)
}

/// Accounts left out of `month`'s report as of `at_ms`: those with a flag whose latest
/// status then was not `cleared`. (A subquery over `$1` month and `$2` time, to join on.)
pub const EXCLUDED_AT: &str = "SELECT DISTINCT h.user_id FROM fraud_flag_history h \
     WHERE h.month = $1 AND h.at_ms <= $2 AND h.status <> 'cleared' AND NOT EXISTS ( \
       SELECT 1 FROM fraud_flag_history l WHERE l.user_id = h.user_id AND l.month = h.month \
       AND l.reason = h.reason AND l.at_ms <= $2 AND l.at_ms > h.at_ms)";

pub async fn excluded_at(pool: &AnyPool, month: &str, at_ms: i64) -> Result<Vec<String>, Error> {
    Ok(sqlx::query(&format!("{EXCLUDED_AT} ORDER BY h.user_id"))
        .bind(month)
        .bind(at_ms)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// Record a fraud flag's new status (`reason` None: every flag of the user that month).
pub async fn flag_history(
    conn: &mut sqlx::AnyConnection,
    user: &str,
    month: &str,
    reason: Option<&str>,
    status: &str,
    at_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO fraud_flag_history (user_id, month, reason, status, at_ms) \
         SELECT user_id, month, reason, $1, $2 FROM fraud_flags WHERE user_id = $3 AND month = $4 \
         AND ($5 = '' OR reason = $5)",
    )
    .bind(status)
    .bind(at_ms)
    .bind(user)
    .bind(month)
    .bind(reason.unwrap_or(""))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Record a track's new shares as a version in force from `now_ms` (ending the last).
pub async fn share_version(
    conn: &mut sqlx::AnyConnection,
    track: &str,
    shares: &[crate::royalty::Share],
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query("UPDATE track_share_versions SET valid_until_ms = $1 WHERE track_id = $2 AND valid_until_ms > $1")
        .bind(now_ms)
        .bind(track)
        .execute(&mut *conn)
        .await?;
    for s in shares {
        sqlx::query(
            "INSERT INTO track_share_versions (track_id, holder, share_bps, valid_from_ms, valid_until_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(track)
        .bind(s.holder.as_str())
        .bind(s.share_bps)
        .bind(now_ms)
        .bind(i64::MAX)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn months_follow_each_other() {
        assert_eq!(super::next_month("2026-11").as_deref(), Some("2026-12"));
        assert_eq!(super::next_month("2026-12").as_deref(), Some("2027-01"));
        assert_eq!(super::month_of(1_764_547_200_000), "2025-12");
    }
}
