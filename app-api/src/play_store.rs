//! The play store: the hash-chained event log, the counts derived from it, and the
//! audit that checks both. Both play logs (embedded and JetStream) end here: `apply`
//! is idempotent, so replaying an event (a retry, a redelivery after a crash) changes
//! nothing, and it runs in one transaction, so an event is counted exactly when it is
//! logged.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::error::Error;
use crate::plays::{day_of, Play};

/// The hash before the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Rows per multi-row INSERT, and event ids per `IN (...)` lookup.
const CHUNK: usize = 64;
const LOOKUP_CHUNK: usize = 256;

/// The canonical record an event's hash covers: its fields in a fixed order.
#[derive(Serialize)]
struct Record<'a> {
    seq: i64,
    user: &'a str,
    event_id: &'a str,
    track: &'a str,
    started_ms: i64,
    ms_played: i64,
    tier: &'a str,
    country: &'a str,
    device: &'a str,
    skipped: bool,
    received_ms: i64,
    /// Left out when 0, so the links of events logged before it existed still verify.
    #[serde(skip_serializing_if = "is_zero")]
    clock_offset_ms: i64,
    /// Left out when empty, for the same reason.
    #[serde(skip_serializing_if = "str::is_empty")]
    session: &'a str,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The next link: SHA-256 of the previous hash (hex), a newline, and the record's JSON.
pub fn link(prev: &str, seq: i64, p: &Play) -> String {
    let record = Record {
        seq,
        user: &p.user,
        event_id: &p.event_id,
        track: &p.track,
        started_ms: p.started_ms,
        ms_played: p.ms_played,
        tier: &p.tier,
        country: &p.country,
        device: &p.device,
        skipped: p.skipped,
        received_ms: p.received_ms,
        clock_offset_ms: p.clock_offset_ms,
        session: &p.session,
    };
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    // Serializing a struct of strings and integers cannot fail.
    h.update(serde_json::to_vec(&record).unwrap_or_default());
    hex::encode(h.finalize())
}

/// `(p,p),(p,p)...` for `rows` rows of `cols` parameters. SQLite gets anonymous `?`:
/// sqlx binds by looking each parameter's name up, and SQLite finds a named (`$N`)
/// parameter by a linear search, which made binding a 6,000-parameter statement cost
/// 80 % of the ingest CPU; anonymous ones have no name to search. PostgreSQL needs `$N`.
fn placeholders(sqlite: bool, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            if sqlite {
                s.push('?');
            } else {
                s.push('$');
                s.push_str(&(r * cols + c + 1).to_string());
            }
        }
        s.push(')');
    }
    s
}

fn is_sqlite(conn: &sqlx::AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("sqlite")
}

/// What became of an event offered to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    New,
    /// Logged before with the same payload (a retry): nothing changes.
    Duplicate,
    /// Logged before with a different payload: nothing changes, and it is kept for audit.
    Conflict,
    /// New, but over an abuse limit (`limits::listening`): not logged.
    Refused(crate::plays::Rejection),
}

/// What a retry of an event repeats: the fields the device sent, with `started_ms` as
/// the device's clock said (before the server's correction, which differs per send).
/// The country is left out: the server may have filled it in from the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    track: String,
    device_started_ms: i64,
    ms_played: i64,
    tier: String,
    device: String,
    skipped: bool,
}

impl Fingerprint {
    pub fn of(p: &Play) -> Fingerprint {
        Fingerprint {
            track: p.track.clone(),
            device_started_ms: p.started_ms.saturating_sub(p.clock_offset_ms),
            ms_played: p.ms_played,
            tier: p.tier.clone(),
            device: p.device.clone(),
            skipped: p.skipped,
        }
    }

    /// A short digest of the payload (hex), to tell two payloads of one id apart.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(
            format!(
                "{}\n{}\n{}\n{}\n{}\n{}",
                self.track, self.device_started_ms, self.ms_played, self.tier, self.device, self.skipped
            )
            .as_bytes(),
        );
        hex::encode(&h.finalize()[..8])
    }
}

type Logged = HashMap<(String, String), Fingerprint>;

/// The events of `plays` already in the log, by (user, event id).
pub(crate) async fn logged(tx: &mut sqlx::AnyConnection, plays: &[&Play]) -> Result<Logged, Error> {
    let mut found = HashMap::new();
    let sqlite = is_sqlite(tx);
    for chunk in plays.chunks(LOOKUP_CHUNK) {
        let list = placeholders(sqlite, 1, chunk.len());
        let sql = format!(
            "SELECT user_id, event_id, track_id, started_ms - clock_offset_ms, ms_played, tier, device, skipped \
             FROM play_events WHERE event_id IN {list}"
        );
        let mut q = sqlx::query(&sql);
        for p in chunk {
            q = q.bind(p.event_id.as_str());
        }
        for row in q.fetch_all(&mut *tx).await? {
            let fp = Fingerprint {
                track: row.try_get(2)?,
                device_started_ms: row.try_get(3)?,
                ms_played: row.try_get(4)?,
                tier: row.try_get(5)?,
                device: row.try_get(6)?,
                skipped: row.try_get::<i64, _>(7)? != 0,
            };
            found.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?), fp);
        }
    }
    Ok(found)
}

/// The abuse limits' verdicts (`limits::listening`) on the new events of `plays`: the
/// first copy of each event not in `logged`. By index in `plays`, the refused ones only.
pub(crate) async fn refusals(
    conn: &mut sqlx::AnyConnection,
    plays: &[Play],
    logged: &Logged,
) -> Result<HashMap<usize, crate::plays::Rejection>, Error> {
    let mut seen = std::collections::HashSet::new();
    let candidates: Vec<(usize, &Play)> = plays
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            !logged.contains_key(&(p.user.clone(), p.event_id.clone())) && seen.insert((&p.user, &p.event_id))
        })
        .collect();
    let verdicts = crate::limits::listening(conn, &candidates.iter().map(|c| c.1).collect::<Vec<_>>()).await?;
    Ok(candidates.iter().zip(verdicts).filter_map(|((i, _), v)| v.map(|r| (*i, r))).collect())
}

/// Keep refused events whose id was logged with another payload, for audit.
async fn record_conflicts(conn: &mut sqlx::AnyConnection, conflicts: &[&Play]) -> Result<(), Error> {
    for p in conflicts {
        let payload = serde_json::to_string(p).unwrap_or_default();
        sqlx::query(
            "INSERT INTO play_conflicts (user_id, event_id, received_ms, payload) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(p.user.as_str())
        .bind(p.event_id.as_str())
        .bind(p.received_ms)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
        tracing::warn!(user = %p.user, event = %p.event_id, "play event id reused with a different payload");
    }
    metrics::counter!("plays_conflicts_total").increment(conflicts.len() as u64);
    Ok(())
}

/// [`record_conflicts`] outside a transaction (the JetStream publisher).
pub async fn conflicts_found(pool: &AnyPool, conflicts: &[&Play]) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    record_conflicts(&mut conn, conflicts).await
}

/// Events kept by `record_conflicts`.
pub async fn conflict_count(pool: &AnyPool) -> Result<i64, Error> {
    Ok(sqlx::query("SELECT COUNT(*) FROM play_conflicts").fetch_one(pool).await?.try_get(0)?)
}

/// Whether `p` repeats what is logged under its key (`None`: nothing is).
pub fn judge(p: &Play, logged: Option<&Fingerprint>) -> Applied {
    match logged {
        None => Applied::New,
        Some(fp) if *fp == Fingerprint::of(p) => Applied::Duplicate,
        Some(_) => Applied::Conflict,
    }
}

/// One (track, day, country) cell of counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub plays: i64,
    pub streams: i64,
    pub ms_played: i64,
}

impl Tally {
    fn add(&mut self, p: &Play) {
        self.plays += 1;
        self.streams += i64::from(p.is_stream());
        self.ms_played += p.ms_played;
    }
}

type CountKey = (String, String, String);

/// Append the events not yet logged, in order, and count them, in one transaction.
/// Returns what became of each: new, or a duplicate or conflict of the log or of an
/// earlier event in `plays`.
pub async fn apply(pool: &AnyPool, plays: &[Play]) -> Result<Vec<Applied>, Error> {
    let mut tx = segue_core::sql::begin_write(pool).await?;
    // Lock the head first: appenders queue here rather than race for the same seq.
    sqlx::query("UPDATE play_chain SET seq = seq WHERE id = 1").execute(&mut *tx).await?;
    let head = sqlx::query("SELECT seq, hash FROM play_chain WHERE id = 1").fetch_one(&mut *tx).await?;
    let (mut seq, mut hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
    let mut logged = logged(&mut tx, &plays.iter().collect::<Vec<_>>()).await?;
    // The abuse limits, in the same transaction that reads and then updates what they count.
    let mut refused = refusals(&mut tx, plays, &logged).await?;
    let mut fresh = Vec::with_capacity(plays.len());
    let mut conflicts = Vec::new();
    let mut counts: BTreeMap<CountKey, Tally> = BTreeMap::new();
    let mut out = Vec::with_capacity(plays.len());
    for (i, p) in plays.iter().enumerate() {
        if let Some(r) = refused.remove(&i) {
            out.push(Applied::Refused(r));
            continue;
        }
        let key = (p.user.clone(), p.event_id.clone());
        let verdict = judge(p, logged.get(&key));
        out.push(verdict.clone());
        match verdict {
            Applied::New => {
                logged.insert(key, Fingerprint::of(p));
                seq += 1;
                hash = link(&hash, seq, p);
                counts.entry((p.track.clone(), day_of(p.started_ms), p.country.clone())).or_default().add(p);
                fresh.push((seq, hash.clone(), p));
            }
            Applied::Conflict => conflicts.push(p),
            Applied::Duplicate | Applied::Refused(_) => {}
        }
    }
    if fresh.is_empty() && conflicts.is_empty() {
        tx.rollback().await?;
        return Ok(out);
    }
    record_conflicts(&mut tx, &conflicts).await?;
    if fresh.is_empty() {
        tx.commit().await?;
        return Ok(out);
    }
    let sqlite = is_sqlite(&tx);
    for chunk in fresh.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO play_events (seq, user_id, event_id, track_id, started_ms, ms_played, tier, country, \
             device, skipped, received_ms, hash, clock_offset_ms, session) VALUES {}",
            placeholders(sqlite, chunk.len(), 14)
        );
        let mut q = sqlx::query(&sql);
        for (seq, hash, p) in chunk {
            q = q
                .bind(*seq)
                .bind(p.user.as_str())
                .bind(p.event_id.as_str())
                .bind(p.track.as_str())
                .bind(p.started_ms)
                .bind(p.ms_played)
                .bind(p.tier.as_str())
                .bind(p.country.as_str())
                .bind(p.device.as_str())
                .bind(i64::from(p.skipped))
                .bind(p.received_ms)
                .bind(hash.as_str())
                .bind(p.clock_offset_ms)
                .bind(p.session.as_str());
        }
        q.execute(&mut *tx).await?;
    }
    let counts: Vec<_> = counts.into_iter().collect();
    for chunk in counts.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO play_counts (track_id, day, country, plays, streams, ms_played) VALUES {} \
             ON CONFLICT (track_id, day, country) DO UPDATE SET plays = play_counts.plays + excluded.plays, \
             streams = play_counts.streams + excluded.streams, ms_played = play_counts.ms_played + excluded.ms_played",
            placeholders(sqlite, chunk.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for ((track, day, country), t) in chunk {
            q = q
                .bind(track.as_str())
                .bind(day.as_str())
                .bind(country.as_str())
                .bind(t.plays)
                .bind(t.streams)
                .bind(t.ms_played);
        }
        q.execute(&mut *tx).await?;
    }
    // What the abuse limits read (`limits::listening`): listening per user per day, and
    // each device's latest play.
    let mut days: BTreeMap<(&str, String), i64> = BTreeMap::new();
    let mut latest: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
    for (_, _, p) in &fresh {
        *days.entry((p.user.as_str(), day_of(p.started_ms))).or_default() += p.ms_played;
        let l = latest.entry((p.user.as_str(), p.device.as_str())).or_insert((i64::MIN, i64::MIN));
        if p.started_ms > l.0 {
            *l = (p.started_ms, p.started_ms.saturating_add(p.ms_played));
        }
    }
    let days: Vec<_> = days.into_iter().collect();
    for chunk in days.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO play_user_days (user_id, day, ms_played) VALUES {} ON CONFLICT (user_id, day) \
             DO UPDATE SET ms_played = play_user_days.ms_played + excluded.ms_played",
            placeholders(sqlite, chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for ((user, day), ms) in chunk {
            q = q.bind(*user).bind(day.as_str()).bind(*ms);
        }
        q.execute(&mut *tx).await?;
    }
    let latest: Vec<_> = latest.into_iter().collect();
    for chunk in latest.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO play_devices (user_id, device, last_started_ms, last_end_ms) VALUES {} \
             ON CONFLICT (user_id, device) DO UPDATE SET last_started_ms = excluded.last_started_ms, \
             last_end_ms = excluded.last_end_ms WHERE excluded.last_started_ms > play_devices.last_started_ms",
            placeholders(sqlite, chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for ((user, device), (started, end)) in chunk {
            q = q.bind(*user).bind(*device).bind(*started).bind(*end);
        }
        q.execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE play_chain SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hash.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// The chain's head: last seq and hash.
pub async fn head(pool: &AnyPool) -> Result<(i64, String), Error> {
    let row = sqlx::query("SELECT seq, hash FROM play_chain WHERE id = 1").fetch_one(pool).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// A row of `GET /v1/admin/plays/counts`.
#[derive(Debug, Clone, Serialize)]
pub struct CountRow {
    pub track: String,
    pub day: String,
    pub country: String,
    #[serde(flatten)]
    pub tally: Tally,
}

fn count_row(r: &AnyRow) -> Result<CountRow, sqlx::Error> {
    Ok(CountRow {
        track: r.try_get(0)?,
        day: r.try_get(1)?,
        country: r.try_get(2)?,
        tally: Tally { plays: r.try_get(3)?, streams: r.try_get(4)?, ms_played: r.try_get(5)? },
    })
}

/// Counts with days in `[from, to]` (`YYYY-MM-DD`), for one track and/or country.
pub async fn counts(
    pool: &AnyPool,
    track: Option<&str>,
    country: Option<&str>,
    from: &str,
    to: &str,
) -> Result<Vec<CountRow>, Error> {
    let rows = sqlx::query(
        "SELECT track_id, day, country, plays, streams, ms_played FROM play_counts \
         WHERE day >= $1 AND day <= $2 AND ($3 = '' OR track_id = $3) AND ($4 = '' OR country = $4) \
         ORDER BY track_id, day, country LIMIT 100000",
    )
    .bind(from)
    .bind(to)
    .bind(track.unwrap_or(""))
    .bind(country.unwrap_or(""))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(count_row).collect::<Result<_, _>>()?)
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    /// Events read from the log.
    pub events: i64,
    /// The head the chain recomputes to.
    pub seq: i64,
    pub hash: String,
    /// Every inconsistency found (empty: the log is intact); the first few are listed.
    pub problems: Vec<String>,
}

const MAX_PROBLEMS: usize = 20;

/// Walk the whole log in seq order, recompute every link and the counts, and compare
/// them with what is stored. `anchor`: a (seq, hash) published earlier (a royalty
/// report's) the log must still contain. `progress` is told the seq reached.
pub async fn verify(
    pool: &AnyPool,
    anchor: Option<(i64, &str)>,
    mut progress: impl FnMut(i64),
) -> Result<Audit, Error> {
    let mut problems = Vec::new();
    let mut note = |p: String| {
        if problems.len() < MAX_PROBLEMS {
            problems.push(p);
        }
    };
    // One read-only snapshot for the whole walk: events appended meanwhile by a live
    // system are simply not seen, instead of reading as a moved head or counts that
    // disagree with the log. (PostgreSQL: REPEATABLE READ; SQLite in WAL mode: a read
    // transaction sees the database as of its first read.)
    let mut tx = pool.begin().await?;
    if !is_sqlite(&tx) {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    }
    let (mut seq, mut hash) = (0i64, GENESIS.to_owned());
    let mut events = 0i64;
    let mut counts: BTreeMap<CountKey, Tally> = BTreeMap::new();
    let mut anchored = anchor.is_none();
    loop {
        let rows = sqlx::query(
            "SELECT seq, user_id, event_id, track_id, started_ms, ms_played, tier, country, device, skipped, \
             received_ms, hash, clock_offset_ms, session FROM play_events WHERE seq > $1 ORDER BY seq LIMIT 10000",
        )
        .bind(seq)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let at: i64 = r.try_get(0)?;
            let p = Play {
                user: r.try_get(1)?,
                event_id: r.try_get(2)?,
                track: r.try_get(3)?,
                started_ms: r.try_get(4)?,
                ms_played: r.try_get(5)?,
                tier: r.try_get(6)?,
                country: r.try_get(7)?,
                device: r.try_get(8)?,
                skipped: r.try_get::<i64, _>(9)? != 0,
                received_ms: r.try_get(10)?,
                clock_offset_ms: r.try_get(12)?,
                session: r.try_get(13)?,
            };
            let stored: String = r.try_get(11)?;
            if at != seq + 1 {
                note(format!("events {}..{} are missing from the log (deleted)", seq + 1, at - 1));
            }
            let expected = link(&hash, at, &p);
            if stored != expected {
                note(format!(
                    "event seq {at} (user {}, event {}) does not match the chain: the row was edited, \
                     or an earlier one was",
                    p.user, p.event_id
                ));
            }
            if let Some((s, h)) = anchor {
                if s == at {
                    anchored = h == expected && h == stored;
                }
            }
            // Go on from the stored link: an edited row is named alone, and a row whose
            // hash was rewritten to match its edit breaks the next link instead.
            hash = stored;
            seq = at;
            events += 1;
            counts.entry((p.track.clone(), day_of(p.started_ms), p.country.clone())).or_default().add(&p);
        }
        progress(seq);
    }
    let row = sqlx::query("SELECT seq, hash FROM play_chain WHERE id = 1").fetch_one(&mut *tx).await?;
    let (head_seq, head_hash): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
    if head_seq != seq || head_hash != hash {
        note(format!(
            "the chain head says seq {head_seq} hash {head_hash}, the log recomputes to seq {seq} hash {hash}{}",
            if head_seq > seq { ": events were deleted from the end" } else { "" }
        ));
    }
    if let Some((s, h)) = anchor {
        if !anchored {
            note(format!("the anchor seq {s} hash {h} is not in the log: it was rewritten"));
        }
    }
    let stored = sqlx::query("SELECT track_id, day, country, plays, streams, ms_played FROM play_counts")
        .fetch_all(&mut *tx)
        .await?;
    tx.rollback().await?;
    let mut stored_counts = BTreeMap::new();
    for r in &stored {
        let c = count_row(r)?;
        stored_counts.insert((c.track, c.day, c.country), c.tally);
    }
    for (key, tally) in &counts {
        let s = stored_counts.remove(key).unwrap_or_default();
        if s != *tally {
            note(format!(
                "counts of track {} on {} in {}: stored {} plays / {} streams, the log says {} / {}",
                key.0, key.1, key.2, s.plays, s.streams, tally.plays, tally.streams
            ));
        }
    }
    for (key, s) in stored_counts.into_iter().filter(|(_, s)| s.plays != 0) {
        note(format!("counts of track {} on {} in {}: {} plays stored, none in the log", key.0, key.1, key.2, s.plays));
    }
    Ok(Audit { events, seq, hash, problems })
}
