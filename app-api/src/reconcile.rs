//! End-of-day reconciliation: counted plays against what the CDN delivered.
//!
//! Every stream URL carries a session id (`sid`, signed with the URL); POPs write it to
//! their access logs, and the player reports it with the play. For a UTC day this
//! matches the day's plays to the bytes delivered in their session for their track, and
//! lists, per track, plays whose session the logs never delivered (reported but not
//! streamed: a forged or replayed report, or a POP whose log is missing) and deliveries
//! with no play at all (streamed but never reported: a client that does not report, or
//! lost reports). Deliveries smaller than `min_bytes` are left out of the second list: a
//! player prefetches the head of tracks it may never play.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::error::Error;
use crate::plays::STREAM_MS;

/// Sessions listed per track and kind, at most (the counts are whole).
const LISTED: usize = 100;

/// One track's line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrackLine {
    pub track: String,
    /// Plays that day (any length), and of them streams (30 s or more).
    pub plays: u64,
    pub streams: u64,
    /// Plays whose session has delivered bytes of this track in the logs.
    pub delivered_plays: u64,
    pub plays_without_delivery: u64,
    pub streams_without_delivery: u64,
    /// Sessions with at least `min_bytes` of this track delivered and no play reported.
    pub deliveries_without_play: u64,
    /// Bytes of this track delivered in sessions that day.
    pub bytes: u64,
    /// Examples: sessions of plays without delivery, and of deliveries without play.
    pub undelivered_sessions: Vec<String>,
    pub unreported_sessions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub day: String,
    /// Access log lines read, and of them deliveries (a session, an audio path, bytes).
    pub log_lines: u64,
    pub deliveries: u64,
    /// Plays that day that carry no session (older clients): not matchable.
    pub plays_without_session: u64,
    pub tracks: Vec<TrackLine>,
}

impl Reconciliation {
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "day,track,plays,streams,delivered_plays,plays_without_delivery,streams_without_delivery,\
             deliveries_without_play,bytes\n",
        );
        for t in &self.tracks {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                self.day,
                t.track,
                t.plays,
                t.streams,
                t.delivered_plays,
                t.plays_without_delivery,
                t.streams_without_delivery,
                t.deliveries_without_play,
                t.bytes
            ));
        }
        out
    }
}

/// Bytes delivered per (session, content id) on `day`, from access logs.
struct Deliveries {
    bytes: HashMap<(String, String), u64>,
    lines: u64,
}

fn read_logs(day: &str, logs: &[&Path]) -> Result<Deliveries, Error> {
    let mut d = Deliveries { bytes: HashMap::new(), lines: 0 };
    for path in logs {
        let file = std::fs::File::open(path).map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| Error::BadRequest(format!("{}: line {}: {e}", path.display(), n + 1)))?;
            if line.trim().is_empty() {
                continue;
            }
            d.lines += 1;
            // A torn last line (the POP was writing) or a foreign line is skipped, not fatal.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let (Some(session), Some(path), Some(ts)) =
                (v["session"].as_str(), v["path"].as_str(), v["ts_ms"].as_i64())
            else {
                continue;
            };
            if crate::plays::day_of(ts) != day || !matches!(v["status"].as_u64(), Some(200 | 206)) {
                continue;
            }
            let Ok(object) = segue_core::key::ObjectPath::parse(path) else { continue };
            let bytes = v["bytes"].as_u64().unwrap_or(0);
            if bytes > 0 {
                *d.bytes.entry((session.to_owned(), object.content_id().to_string())).or_default() += bytes;
            }
        }
    }
    Ok(d)
}

/// Reconcile `day` (`YYYY-MM-DD`, UTC) against the POPs' access logs.
pub async fn run(pool: &AnyPool, day: &str, logs: &[&Path], min_bytes: u64) -> Result<Reconciliation, Error> {
    if !crate::plays::is_day(day) {
        return Err(Error::BadRequest(format!("day {day:?} is not YYYY-MM-DD")));
    }
    let deliveries = read_logs(day, logs)?;
    let content_of: HashMap<String, String> = sqlx::query("SELECT id, content_id FROM tracks")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let track_of: HashMap<&str, &str> = content_of.iter().map(|(t, c)| (c.as_str(), t.as_str())).collect();

    let from = time_of(day)?;
    let rows =
        sqlx::query("SELECT track_id, session, ms_played FROM play_events WHERE started_ms >= $1 AND started_ms < $2")
            .bind(from)
            .bind(from + 86_400_000)
            .fetch_all(pool)
            .await?;
    let mut lines: BTreeMap<String, TrackLine> = BTreeMap::new();
    let mut without_session = 0;
    for r in &rows {
        let (track, session, ms): (String, String, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if session.is_empty() {
            without_session += 1;
            continue;
        }
        let line =
            lines.entry(track.clone()).or_insert_with(|| TrackLine { track: track.clone(), ..Default::default() });
        line.plays += 1;
        line.streams += u64::from(ms >= STREAM_MS);
        let delivered =
            content_of.get(&track).is_some_and(|c| deliveries.bytes.contains_key(&(session.clone(), c.clone())));
        if delivered {
            line.delivered_plays += 1;
        } else {
            line.plays_without_delivery += 1;
            line.streams_without_delivery += u64::from(ms >= STREAM_MS);
            if line.undelivered_sessions.len() < LISTED {
                line.undelivered_sessions.push(session);
            }
        }
    }

    // Deliveries: whose sessions reported a play of that track, started that day or the
    // days either side (a play that began before midnight, or was delivered after it).
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    let near = sqlx::query(
        "SELECT session, track_id FROM play_events WHERE started_ms >= $1 AND started_ms < $2 AND session <> ''",
    )
    .bind(from - 86_400_000)
    .bind(from + 2 * 86_400_000)
    .fetch_all(pool)
    .await?;
    for r in &near {
        reported.insert((r.try_get(0)?, r.try_get(1)?));
    }
    let mut sorted: Vec<(&(String, String), &u64)> = deliveries.bytes.iter().collect();
    sorted.sort();
    for ((session, content), bytes) in sorted {
        let Some(track) = track_of.get(content.as_str()) else { continue };
        let line = lines
            .entry((*track).to_owned())
            .or_insert_with(|| TrackLine { track: (*track).to_owned(), ..Default::default() });
        line.bytes += bytes;
        if *bytes >= min_bytes && !reported.contains(&(session.clone(), (*track).to_owned())) {
            line.deliveries_without_play += 1;
            if line.unreported_sessions.len() < LISTED {
                line.unreported_sessions.push(session.clone());
            }
        }
    }
    Ok(Reconciliation {
        day: day.to_owned(),
        log_lines: deliveries.lines,
        deliveries: deliveries.bytes.len() as u64,
        plays_without_session: without_session,
        tracks: lines.into_values().collect(),
    })
}

/// 00:00 UTC of `YYYY-MM-DD`, Unix ms.
fn time_of(day: &str) -> Result<i64, Error> {
    let (start, _) = crate::plays::month_bounds(&day[..7]).ok_or_else(|| Error::BadRequest(format!("day {day:?}")))?;
    let d: i64 = day[8..].parse().map_err(|_| Error::BadRequest(format!("day {day:?}")))?;
    Ok(start + (d - 1) * 86_400_000)
}
