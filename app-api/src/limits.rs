//! Abuse limits: what one account, device or key may do.
//!
//! - **Listening**: a device plays one track at a time, so a play that starts while the
//!   device's latest play still runs (past a crossfade's worth of overlap) is refused
//!   (`overlap`); and no account listens more than 24 hours in a UTC day
//!   (`daily_limit`). Both read small state the play store keeps in the same
//!   transaction as the log (`play_devices`, `play_user_days`), so the check costs two
//!   indexed lookups per batch, not a scan of the account's history. Plays synced out of
//!   order (older than the device's latest) are checked against the day only.
//! - **Rate**: every key has a token bucket for requests and one for play events, with
//!   its own rates for gateways; over it, 429 with `Retry-After`. Buckets live in each
//!   app API process (a replica enforces its share). Admin tokens from the config are
//!   operators' and are not limited.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::catalog::User;
use crate::config::Limits as Settings;
use crate::error::Error;
use crate::plays::{day_of, Play, Rejection};

const DAY_MS: i64 = 86_400_000;
/// Plays of one device may overlap this much (a crossfade) before one is refused.
pub const OVERLAP_SLACK_MS: i64 = 15_000;
/// Users per `IN (...)` lookup.
const CHUNK: usize = 256;

/// Check new plays (each event once, in batch order) against each account's listening
/// that day and each device's latest play; a rejection per play, or `None`.
pub async fn listening(conn: &mut sqlx::AnyConnection, plays: &[&Play]) -> Result<Vec<Option<Rejection>>, Error> {
    if plays.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<&str> = plays.iter().map(|p| p.user.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let days: Vec<String> = plays.iter().map(|p| day_of(p.started_ms)).collect::<BTreeSet<_>>().into_iter().collect();
    let mut listened: HashMap<(String, String), i64> = HashMap::new();
    let mut devices: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for chunk in users.chunks(CHUNK) {
        let list = |from: usize, n: usize| (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(",");
        let sql = format!(
            "SELECT user_id, day, ms_played FROM play_user_days WHERE user_id IN ({}) AND day IN ({})",
            list(1, chunk.len()),
            list(chunk.len() + 1, days.len())
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(*u);
        }
        for d in &days {
            q = q.bind(d.as_str());
        }
        for r in q.fetch_all(&mut *conn).await? {
            listened.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
        let sql = format!(
            "SELECT user_id, device, last_started_ms, last_end_ms FROM play_devices WHERE user_id IN ({})",
            list(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(*u);
        }
        for r in q.fetch_all(&mut *conn).await? {
            devices.insert((r.try_get(0)?, r.try_get(1)?), (r.try_get(2)?, r.try_get(3)?));
        }
    }
    // In start order, so a batch's own plays are judged against each other too.
    let mut order: Vec<usize> = (0..plays.len()).collect();
    order.sort_by_key(|&i| plays[i].started_ms);
    let mut out = vec![None; plays.len()];
    for i in order {
        let p = plays[i];
        let end = p.started_ms.saturating_add(p.ms_played);
        let device = (p.user.clone(), p.device.clone());
        if let Some(&(last_start, last_end)) = devices.get(&device) {
            if p.started_ms >= last_start && p.started_ms < last_end - OVERLAP_SLACK_MS {
                out[i] = Some(Rejection {
                    reason: "overlap",
                    message: format!(
                        "device {:?} was playing until {} ms (a play from {last_start} ms); this one starts at {} ms",
                        p.device, last_end, p.started_ms
                    ),
                });
                continue;
            }
        }
        let day = (p.user.clone(), day_of(p.started_ms));
        let so_far = listened.get(&day).copied().unwrap_or(0);
        if so_far.saturating_add(p.ms_played) > DAY_MS {
            out[i] = Some(Rejection {
                reason: "daily_limit",
                message: format!(
                    "{} already has {:.1} h of listening on {}; a day has 24",
                    p.user,
                    so_far as f64 / 3_600_000.0,
                    day.1
                ),
            });
            continue;
        }
        listened.insert(day, so_far + p.ms_played);
        let latest = devices.entry(device).or_insert((i64::MIN, i64::MIN));
        if p.started_ms >= latest.0 {
            *latest = (p.started_ms, end);
        }
    }
    Ok(out)
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key (user id), for requests and for play events.
pub struct RateLimits {
    settings: Settings,
    buckets: moka::sync::Cache<(String, bool), Arc<Mutex<Bucket>>>,
}

impl RateLimits {
    pub fn new(settings: Settings) -> RateLimits {
        // Idle buckets are full again after burst / rate seconds: forgetting them then
        // changes nothing.
        let idle = Duration::from_secs(3600);
        RateLimits {
            settings,
            buckets: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_idle(idle).build(),
        }
    }

    fn take(&self, key: (String, bool), n: f64, (rate, burst): (f64, f64)) -> Result<(), Error> {
        if rate <= 0.0 {
            return Ok(());
        }
        let bucket = self.buckets.get_with(key, || Arc::new(Mutex::new(Bucket { tokens: burst, at: Instant::now() })));
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= n {
            b.tokens -= n;
            return Ok(());
        }
        let wait = if n > burst { f64::INFINITY } else { (n - b.tokens) / rate };
        if !wait.is_finite() {
            return Err(Error::BadRequest(format!(
                "{n} events in one request is more than this key's burst of {burst}; send smaller batches"
            )));
        }
        Err(Error::RateLimited(wait.ceil().max(1.0) as u64))
    }

    /// One request by `user` (config admin tokens are not limited).
    pub fn request(&self, user: &User) -> Result<(), Error> {
        let s = &self.settings;
        let limit = match user.gateway {
            true => (s.gateway_requests_per_sec, s.gateway_request_burst),
            false => (s.requests_per_sec, s.request_burst),
        };
        self.charge(user, false, 1.0, limit)
    }

    /// `n` play events posted by `user`.
    pub fn play_events(&self, user: &User, n: usize) -> Result<(), Error> {
        let s = &self.settings;
        let limit = match user.gateway {
            true => (s.gateway_play_events_per_sec, s.gateway_play_event_burst),
            false => (s.play_events_per_sec, s.play_event_burst),
        };
        self.charge(user, true, n as f64, limit)
    }

    /// Take `n` from `user`'s bucket of that kind, unless the caller is a config admin token.
    fn charge(&self, user: &User, events: bool, n: f64, limit: (f64, f64)) -> Result<(), Error> {
        if user.id == "admin" && user.admin {
            return Ok(());
        }
        self.take((user.id.clone(), events), n, limit)
    }
}
