//! The monthly royalty report: pro-rata. The month's revenue pool is divided by the
//! month's paid streams (plays of 30 s or more, by accounts not flagged for fraud), each
//! track earns its streams' part, and each track's part is split among its rights
//! holders by their shares.
//!
//! Money is integer minor units (cents) all the way: the lines' largest remainders get
//! the last cents, so the lines sum to the pool exactly, and the same log (up to the
//! report's `audit_seq`) always renders the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::error::Error;
use crate::fraud::check_month;
use crate::play_log::Lag;
use crate::play_store::GENESIS;
use crate::plays::STREAM_MS;

/// Who gets a track's part, or the rest of it, when no shares are recorded.
pub const UNCLAIMED: &str = "unclaimed";
const FULL_BPS: i64 = 10_000;

/// What to report.
#[derive(Debug, Clone)]
pub struct Request {
    pub month: String,
    /// The revenue pool, in minor units (cents).
    pub pool_minor: i64,
    pub currency: String,
    /// Only events up to this seq of the log (default: the head), to re-render a report.
    pub as_of: Option<i64>,
    /// Report even though the pipeline lags.
    pub force: bool,
}

/// `"1234.56"` (at most two decimals) as 123456 minor units.
pub fn parse_money(s: &str) -> Option<i64> {
    let (units, cents) = s.split_once('.').unwrap_or((s, ""));
    if units.is_empty() || cents.len() > 2 || !units.bytes().chain(cents.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let cents: i64 = format!("{cents:0<2}").parse().ok()?;
    units.parse::<i64>().ok()?.checked_mul(100)?.checked_add(cents)
}

pub fn format_money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

pub fn check_currency(c: &str) -> Result<(), Error> {
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("currency {c:?} is not an ISO 4217 code like EUR")))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub track: String,
    pub isrc: String,
    pub title: String,
    pub streams: i64,
    pub holder: String,
    pub share_bps: i64,
    pub amount: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HolderTotal {
    pub holder: String,
    pub amount: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub month: String,
    pub currency: String,
    pub pool: String,
    /// Paid streams counted.
    pub streams: i64,
    /// Pool / streams, six decimals.
    pub per_stream: String,
    /// Accounts left out (flagged, not cleared) and the streams they had.
    pub excluded_accounts: Vec<String>,
    pub excluded_streams: i64,
    /// The log position the report covers: `segue plays verify --anchor SEQ:HASH`
    /// proves later that the log it came from was not rewritten.
    pub audit_seq: i64,
    pub audit_hash: String,
    pub lines: Vec<Line>,
    pub holders: Vec<HolderTotal>,
}

/// Scan for fraud, then report (the admin API and `segue plays report`).
pub async fn run(
    pool: &AnyPool,
    config: &crate::Config,
    plays: &crate::play_log::PlayLog,
    request: &Request,
) -> Result<Report, Error> {
    crate::fraud::scan(pool, &request.month, &config.plays.fraud, crate::now_ms()).await?;
    let lag = plays.lag().await?;
    let result = report(pool, request, lag, config.plays.report_max_lag_secs).await;
    // For alerting (config/alerts): 1 while the last report was refused for lag.
    match &result {
        Ok(_) => metrics::gauge!("royalty_report_blocked").set(0.0),
        Err(Error::Lagging(_)) => {
            metrics::gauge!("royalty_report_blocked").set(1.0);
            metrics::counter!("royalty_reports_blocked_total").increment(1);
        }
        Err(_) => {}
    }
    result
}

/// Compute the report; refuses (409 `pipeline_lagging`) when the pipeline lags more
/// than `max_lag_secs` unless forced.
pub async fn report(pool: &AnyPool, req: &Request, lag: Lag, max_lag_secs: u64) -> Result<Report, Error> {
    let (start, end) = check_month(&req.month)?;
    check_currency(&req.currency)?;
    if req.pool_minor < 0 {
        return Err(Error::BadRequest("pool must not be negative".into()));
    }
    if lag.seconds > max_lag_secs as f64 && !req.force {
        return Err(Error::Lagging(format!(
            "the play pipeline lags: {} acknowledged events are not applied yet, the oldest {:.0} s ago \
             (threshold {max_lag_secs} s), so the report would miss plays; wait for the consumer to catch up, \
             or force it",
            lag.events, lag.seconds
        )));
    }
    let (head, _) = crate::play_store::head(pool).await?;
    let seq = match req.as_of {
        Some(s) if s < 0 || s > head => {
            return Err(Error::BadRequest(format!("as_of {s} is not a position of the log (0-{head})")))
        }
        Some(s) => s,
        None => head,
    };
    let audit_hash = if seq == 0 {
        GENESIS.to_owned()
    } else {
        sqlx::query("SELECT hash FROM play_events WHERE seq = $1").bind(seq).fetch_one(pool).await?.try_get(0)?
    };

    let excluded: Vec<String> = sqlx::query(
        "SELECT DISTINCT user_id FROM fraud_flags WHERE month = $1 AND status <> 'cleared' ORDER BY user_id",
    )
    .bind(req.month.as_str())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;

    // Paid streams per track, split into counted and excluded ones.
    let rows = sqlx::query(
        "SELECT e.track_id, COALESCE(t.isrc, ''), COALESCE(t.title, ''), \
         SUM(CASE WHEN f.user_id IS NULL THEN 1 ELSE 0 END), SUM(CASE WHEN f.user_id IS NULL THEN 0 ELSE 1 END) \
         FROM play_events e \
         LEFT JOIN tracks t ON t.id = e.track_id \
         LEFT JOIN (SELECT DISTINCT user_id FROM fraud_flags WHERE month = $1 AND status <> 'cleared') f \
           ON f.user_id = e.user_id \
         WHERE e.started_ms >= $2 AND e.started_ms < $3 AND e.ms_played >= $4 AND e.seq <= $5 \
         GROUP BY e.track_id, t.isrc, t.title ORDER BY e.track_id",
    )
    .bind(req.month.as_str())
    .bind(start)
    .bind(end)
    .bind(STREAM_MS)
    .bind(seq)
    .fetch_all(pool)
    .await?;
    struct TrackStreams {
        isrc: String,
        title: String,
        streams: i64,
    }
    let mut tracks = BTreeMap::new();
    let mut excluded_streams = 0i64;
    for r in rows {
        let track: String = r.try_get(0)?;
        // SUM is BIGINT on SQLite and NUMERIC on PostgreSQL: read it as text.
        let counted = sum(&r, 3)?;
        excluded_streams += sum(&r, 4)?;
        if counted > 0 {
            tracks.insert(track, TrackStreams { isrc: r.try_get(1)?, title: r.try_get(2)?, streams: counted });
        }
    }
    let total: i64 = tracks.values().map(|t| t.streams).sum();

    let mut shares: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for r in sqlx::query("SELECT track_id, holder, share_bps FROM track_shares ORDER BY track_id, holder")
        .fetch_all(pool)
        .await?
    {
        shares.entry(r.try_get(0)?).or_default().push((r.try_get(1)?, r.try_get(2)?));
    }

    // (track, holder, bps) with its weight streams × bps, over total × 10000.
    let mut parts = Vec::new();
    for track in tracks.keys() {
        let mut given = 0;
        for (holder, bps) in shares.get(track).map(Vec::as_slice).unwrap_or_default() {
            parts.push((track.clone(), holder.clone(), *bps));
            given += bps;
        }
        if given < FULL_BPS {
            parts.push((track.clone(), UNCLAIMED.to_owned(), FULL_BPS - given));
        }
    }
    let denominator = i128::from(total) * i128::from(FULL_BPS);
    let mut amounts: Vec<(i64, i128)> = parts
        .iter()
        .map(|(track, _, bps)| {
            if denominator == 0 {
                return (0, 0);
            }
            let num = i128::from(req.pool_minor) * i128::from(tracks[track].streams) * i128::from(*bps);
            ((num / denominator) as i64, num % denominator)
        })
        .collect();
    let given: i64 = amounts.iter().map(|a| a.0).sum();
    let mut left = if denominator == 0 { 0 } else { req.pool_minor - given };
    // Largest remainder first; ties in (track, holder) order, which `parts` already is.
    let mut order: Vec<usize> = (0..amounts.len()).collect();
    order.sort_by(|&a, &b| amounts[b].1.cmp(&amounts[a].1).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        amounts[i].0 += 1;
        left -= 1;
    }

    let mut holders: BTreeMap<String, i64> = BTreeMap::new();
    let lines: Vec<Line> = parts
        .into_iter()
        .zip(amounts)
        .map(|((track, holder, bps), (amount, _))| {
            *holders.entry(holder.clone()).or_default() += amount;
            let t = &tracks[&track];
            Line {
                isrc: t.isrc.clone(),
                title: t.title.clone(),
                streams: t.streams,
                track,
                holder,
                share_bps: bps,
                amount: format_money(amount),
            }
        })
        .collect();
    let per_stream = if total == 0 {
        "0.000000".to_owned()
    } else {
        // Pool (cents) × 10^4 / streams = millionths of a unit.
        let micro = i128::from(req.pool_minor) * 10_000 / i128::from(total);
        format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
    };
    Ok(Report {
        month: req.month.clone(),
        currency: req.currency.clone(),
        pool: format_money(req.pool_minor),
        streams: total,
        per_stream,
        excluded_accounts: excluded,
        excluded_streams,
        audit_seq: seq,
        audit_hash,
        lines,
        holders: holders.into_iter().map(|(holder, a)| HolderTotal { holder, amount: format_money(a) }).collect(),
    })
}

fn sum(r: &sqlx::any::AnyRow, i: usize) -> Result<i64, Error> {
    if let Ok(v) = r.try_get::<i64, _>(i) {
        return Ok(v);
    }
    let s: String = r.try_get(i)?;
    s.parse().map_err(|_| Error::Database(format!("a stream count reads {s:?}")))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

impl Report {
    /// One line per (track, holder), with a header.
    pub fn csv(&self) -> String {
        let mut out = String::from("month,track,isrc,title,holder,share_bps,streams,amount,currency\n");
        for l in &self.lines {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                self.month,
                csv_field(&l.track),
                csv_field(&l.isrc),
                csv_field(&l.title),
                csv_field(&l.holder),
                l.share_bps,
                l.streams,
                l.amount,
                self.currency
            ));
        }
        out
    }

    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// `PUT /v1/admin/tracks/ID/shares`: `{"shares": [{"holder": "...", "share_bps": 7000}]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub holder: String,
    pub share_bps: i64,
}

/// Replace a track's shares; they must sum to 10000 basis points (100 %).
pub async fn set_shares(pool: &AnyPool, track: &str, shares: &[Share]) -> Result<(), Error> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in shares.iter().enumerate() {
        if s.holder.is_empty() || s.holder.len() > 128 || s.holder.trim() != s.holder {
            return Err(Error::BadRequest(format!("shares[{i}].holder must be 1-128 characters")));
        }
        if s.holder == UNCLAIMED {
            return Err(Error::BadRequest(format!("shares[{i}].holder {UNCLAIMED:?} is reserved")));
        }
        if !(1..=FULL_BPS).contains(&s.share_bps) {
            return Err(Error::BadRequest(format!("shares[{i}].share_bps must be 1-10000")));
        }
        if !seen.insert(s.holder.as_str()) {
            return Err(Error::BadRequest(format!("shares[{i}].holder {:?} is listed twice", s.holder)));
        }
    }
    let sum: i64 = shares.iter().map(|s| s.share_bps).sum();
    if !shares.is_empty() && sum != FULL_BPS {
        return Err(Error::BadRequest(format!("shares sum to {sum} basis points, not 10000")));
    }
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM track_shares WHERE track_id = $1").bind(track).execute(&mut *tx).await?;
    for s in shares {
        sqlx::query("INSERT INTO track_shares (track_id, holder, share_bps) VALUES ($1, $2, $3)")
            .bind(track)
            .bind(s.holder.as_str())
            .bind(s.share_bps)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn shares(pool: &AnyPool, track: &str) -> Result<Vec<Share>, Error> {
    let rows = sqlx::query("SELECT holder, share_bps FROM track_shares WHERE track_id = $1 ORDER BY holder")
        .bind(track)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok(Share { holder: r.try_get(0)?, share_bps: r.try_get(1)? }))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_exactly() {
        assert_eq!(parse_money("1000"), Some(100_000));
        assert_eq!(parse_money("1000.5"), Some(100_050));
        assert_eq!(parse_money("0.07"), Some(7));
        for bad in ["", ".5", "1.234", "-1", "1e3", "1,00"] {
            assert_eq!(parse_money(bad), None, "{bad}");
        }
        assert_eq!(format_money(100_050), "1000.50");
        assert_eq!(format_money(7), "0.07");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, \"b\""), "\"a, \"\"b\"\"\"");
    }
}
