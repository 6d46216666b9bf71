//! The monthly royalty report: pro-rata. The month's revenue pool is divided by the
//! month's paid streams (plays of 30 s or more, by accounts not flagged for fraud), each
//! track earns its streams' part, and each track's part is split among its rights
//! holders by their shares.
//!
//! Money is integer minor units (cents) all the way: the lines' largest remainders get
//! the last cents, so the lines sum to the pool exactly, and the same log (up to the
//! report's `audit_seq`) always renders the same bytes.
//!
//! A report can close its month (`periods`): it is then stored as issued, and plays that
//! arrive for closed months later are paid in the next month's report as adjustments
//! (lines whose `played_in` is the earlier month), sharing that month's pool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::periods;

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
    /// Close the month with this report (not with `force` or `as_of`).
    pub close: bool,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    /// The month the streams were played in: the report's, or an earlier closed month's
    /// for an adjustment (plays that reached the log after that month was closed).
    pub played_in: String,
    pub track: String,
    pub isrc: String,
    pub title: String,
    pub streams: i64,
    pub holder: String,
    pub share_bps: i64,
    pub amount: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderTotal {
    pub holder: String,
    pub amount: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub month: String,
    pub currency: String,
    pub pool: String,
    /// This is the month's closing report, as stored when it was closed.
    pub closed: bool,
    /// Paid streams counted, adjustments included.
    pub streams: i64,
    /// Of them, streams of earlier closed months that reached the log after their close.
    pub adjustment_streams: i64,
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
    // A closed month's flags are settled: scanning it again would change nothing shown.
    let closes = periods::closes(pool).await?;
    if !closes.iter().any(|c| c.month == request.month) {
        crate::fraud::scan(pool, &request.month, &config.plays.fraud, crate::now_ms()).await?;
    }
    let lag = plays.lag().await?;
    let result = report(pool, request, lag, config.plays.report_max_lag_secs, &closes).await;
    // For alerting (config/prometheus/rules): 1 while the last report was refused for lag.
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
/// than `max_lag_secs` unless forced. A closed month answers its stored report; `closes`
/// are the closed months (`periods::closes`), oldest first.
pub async fn report(
    pool: &AnyPool,
    req: &Request,
    lag: Lag,
    max_lag_secs: u64,
    closes: &[periods::Close],
) -> Result<Report, Error> {
    let (start, end) = check_month(&req.month)?;
    check_currency(&req.currency)?;
    if req.pool_minor < 0 {
        return Err(Error::BadRequest("pool must not be negative".into()));
    }
    if req.close && (req.force || req.as_of.is_some()) {
        return Err(Error::BadRequest(
            "a month is closed on the whole log of a caught-up pipeline: no force, no as_of".into(),
        ));
    }
    let this = closes.iter().find(|c| c.month == req.month);
    if let Some(c) = this {
        if req.close {
            return Err(Error::Conflict(format!("{} is already closed", req.month)));
        }
        if req.as_of.is_none() {
            let stored: Report = serde_json::from_str(&c.report)
                .map_err(|e| Error::Database(format!("the closed report of {} does not read: {e}", req.month)))?;
            if (stored.pool.as_str(), stored.currency.as_str())
                != (format_money(req.pool_minor).as_str(), req.currency.as_str())
            {
                return Err(Error::Conflict(format!(
                    "{} was closed with a pool of {} {}; a closed report is not recomputed",
                    req.month, stored.pool, stored.currency
                )));
            }
            return Ok(stored);
        }
    } else if let Some(first) = closes.first().filter(|f| req.month < f.month) {
        return Err(Error::Conflict(format!(
            "{} is before the first closed month ({}), which closed it: its late plays are adjustments of later reports",
            req.month, first.month
        )));
    }
    let last = closes.last();
    if req.close {
        if let Some(l) = last.filter(|l| periods::next_month(&l.month).as_deref() != Some(req.month.as_str())) {
            let next = periods::next_month(&l.month).unwrap_or_default();
            return Err(Error::Conflict(format!(
                "months close in order: the last closed is {}, so {next} closes next, not {}",
                l.month, req.month
            )));
        }
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
    // Shares and flags as they were when the month was closed; as they are now if open.
    let at = this.map_or_else(crate::now_ms, |c| c.closed_ms);
    let excluded = periods::excluded_at(pool, &req.month, at).await?;

    // Paid streams per (month played in, track): the month's own, then the late plays of
    // closed months when this is the month after the last close.
    let mut tracks = BTreeMap::new();
    let mut excluded_streams = streams(pool, &req.month, (start, end), (-1, seq), at, &mut tracks).await?;
    let mut adjustment_streams = 0;
    let prior = closes.iter().rfind(|c| c.month < req.month);
    if let Some(p) = prior.filter(|p| periods::next_month(&p.month).as_deref() == Some(req.month.as_str())) {
        let (_, closed_end) = check_month(&p.month)?;
        let first: Option<i64> = sqlx::query(
            "SELECT MIN(started_ms) FROM play_events WHERE started_ms < $1 AND seq > $2 AND seq <= $3 AND ms_played >= $4",
        )
        .bind(closed_end)
        .bind(p.seq)
        .bind(seq)
        .bind(STREAM_MS)
        .fetch_one(pool)
        .await?
        .try_get(0)?;
        let mut month = first.map(periods::month_of);
        while let Some(m) = month.filter(|m| *m <= p.month) {
            let bounds = check_month(&m)?;
            let before = tracks.values().map(|t: &TrackStreams| t.streams).sum::<i64>();
            excluded_streams += streams(pool, &m, bounds, (p.seq, seq), at, &mut tracks).await?;
            adjustment_streams += tracks.values().map(|t| t.streams).sum::<i64>() - before;
            month = periods::next_month(&m);
        }
    }
    let total: i64 = tracks.values().map(|t| t.streams).sum();

    let mut shares: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for (track, holder, bps) in periods::shares_at(pool, at).await? {
        shares.entry(track).or_default().push((holder, bps));
    }

    // (month, track, holder, bps) with its weight streams × bps, over total × 10000.
    let mut parts = Vec::new();
    for key in tracks.keys() {
        let mut given = 0;
        for (holder, bps) in shares.get(&key.1).map(Vec::as_slice).unwrap_or_default() {
            parts.push((key.clone(), holder.clone(), *bps));
            given += bps;
        }
        if given < FULL_BPS {
            parts.push((key.clone(), UNCLAIMED.to_owned(), FULL_BPS - given));
        }
    }
    let denominator = i128::from(total) * i128::from(FULL_BPS);
    let mut amounts: Vec<(i64, i128)> = parts
        .iter()
        .map(|(key, _, bps)| {
            if denominator == 0 {
                return (0, 0);
            }
            let num = i128::from(req.pool_minor) * i128::from(tracks[key].streams) * i128::from(*bps);
            ((num / denominator) as i64, num % denominator)
        })
        .collect();
    let given: i64 = amounts.iter().map(|a| a.0).sum();
    let mut left = if denominator == 0 { 0 } else { req.pool_minor - given };
    // Largest remainder first; ties in (month, track, holder) order, which `parts` already is.
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
        .map(|((key, holder, bps), (amount, _))| {
            *holders.entry(holder.clone()).or_default() += amount;
            let t = &tracks[&key];
            Line {
                played_in: key.0,
                isrc: t.isrc.clone(),
                title: t.title.clone(),
                streams: t.streams,
                track: key.1,
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
    let mut report = Report {
        month: req.month.clone(),
        currency: req.currency.clone(),
        pool: format_money(req.pool_minor),
        closed: false,
        streams: total,
        adjustment_streams,
        per_stream,
        excluded_accounts: excluded,
        excluded_streams,
        audit_seq: seq,
        audit_hash,
        lines,
        holders: holders.into_iter().map(|(holder, a)| HolderTotal { holder, amount: format_money(a) }).collect(),
    };
    if req.close {
        report.closed = true;
        let stored = serde_json::to_string(&report).map_err(|e| Error::Database(e.to_string()))?;
        periods::close(pool, &periods::Close { month: req.month.clone(), seq, closed_ms: at, report: stored }).await?;
    }
    Ok(report)
}

struct TrackStreams {
    isrc: String,
    title: String,
    streams: i64,
}

/// Add the paid streams played in `month` (`bounds`, Unix ms) and logged at seq in
/// `(after, upto]` to `tracks`, by (month, track), leaving out the accounts flagged for
/// that month as of `at`. Returns the streams left out.
async fn streams(
    pool: &AnyPool,
    month: &str,
    bounds: (i64, i64),
    (after, upto): (i64, i64),
    at: i64,
    tracks: &mut BTreeMap<(String, String), TrackStreams>,
) -> Result<i64, Error> {
    // The flag subquery takes its month and time as $1 and $2.
    let rows = sqlx::query(&format!(
        "SELECT e.track_id, COALESCE(t.isrc, ''), COALESCE(t.title, ''), \
         SUM(CASE WHEN f.user_id IS NULL THEN 1 ELSE 0 END), SUM(CASE WHEN f.user_id IS NULL THEN 0 ELSE 1 END) \
         FROM play_events e \
         LEFT JOIN tracks t ON t.id = e.track_id \
         LEFT JOIN ({}) f ON f.user_id = e.user_id \
         WHERE e.started_ms >= $3 AND e.started_ms < $4 AND e.ms_played >= $5 AND e.seq > $6 AND e.seq <= $7 \
         GROUP BY e.track_id, t.isrc, t.title ORDER BY e.track_id",
        periods::EXCLUDED_AT
    ))
    .bind(month)
    .bind(at)
    .bind(bounds.0)
    .bind(bounds.1)
    .bind(STREAM_MS)
    .bind(after)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    let mut excluded = 0;
    for r in rows {
        let track: String = r.try_get(0)?;
        // SUM is BIGINT on SQLite and NUMERIC on PostgreSQL: read it as text.
        let counted = sum(&r, 3)?;
        excluded += sum(&r, 4)?;
        if counted > 0 {
            tracks.insert(
                (month.to_owned(), track),
                TrackStreams { isrc: r.try_get(1)?, title: r.try_get(2)?, streams: counted },
            );
        }
    }
    Ok(excluded)
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
        let mut out = String::from("month,played_in,track,isrc,title,holder,share_bps,streams,amount,currency\n");
        for l in &self.lines {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                self.month,
                l.played_in,
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

/// Replace a track's shares; they must sum to 10000 basis points (100 %). The old ones
/// stay on record (`periods::share_version`) for re-rendering closed months.
pub async fn set_shares(pool: &AnyPool, track: &str, shares: &[Share], now_ms: i64) -> Result<(), Error> {
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
    let mut tx = segue_core::sql::begin_write(pool).await?;
    sqlx::query("DELETE FROM track_shares WHERE track_id = $1").bind(track).execute(&mut *tx).await?;
    for s in shares {
        sqlx::query("INSERT INTO track_shares (track_id, holder, share_bps) VALUES ($1, $2, $3)")
            .bind(track)
            .bind(s.holder.as_str())
            .bind(s.share_bps)
            .execute(&mut *tx)
            .await?;
    }
    periods::share_version(&mut tx, track, shares, now_ms).await?;
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
