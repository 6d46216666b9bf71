//! Play events as clients send them, and the checks each one passes before it is logged.
//!
//! A batch is judged event by event: a malformed or impossible event is rejected with a
//! reason and the rest of the batch still counts. The idempotency key is the client's
//! event id within its user, so a retried or re-synced event is answered `duplicate`.

use serde::{Deserialize, Serialize};

/// A play lasting at least this long counts as a stream (and is paid).
pub const STREAM_MS: i64 = 30_000;
/// Slack over the track's length for a play's duration (clients round and buffer).
const DURATION_SLACK_MS: i64 = 10_000;
const MAX_ID_LEN: usize = 128;

/// One event as it arrives; every field is checked by `check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayEvent {
    /// The client's idempotency key for this play (a UUID, say).
    pub event_id: String,
    /// Whose play; defaults to the caller. Only admin callers may name another user.
    #[serde(default)]
    pub user: Option<String>,
    pub track: String,
    /// When playback started, Unix milliseconds.
    pub started_ms: i64,
    /// How much was heard, milliseconds.
    pub ms_played: i64,
    pub tier: String,
    /// ISO 3166-1 alpha-2 country the play happened in; default the account's home country.
    #[serde(default)]
    pub country: Option<String>,
    pub device: String,
    #[serde(default)]
    pub skipped: bool,
    /// The stream session it came from (the stream answer's `session`).
    #[serde(default)]
    pub session: Option<String>,
}

/// A checked event, as logged. `received_ms` is stamped once, by the first app-api that
/// accepts it, so every replay of the log rebuilds the same record (and hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Play {
    pub user: String,
    pub event_id: String,
    pub track: String,
    pub started_ms: i64,
    pub ms_played: i64,
    pub tier: String,
    pub country: String,
    pub device: String,
    pub skipped: bool,
    pub received_ms: i64,
    /// Server clock minus the device's when it sent the event, when past the tolerance
    /// (`started_ms` is corrected by it); 0 otherwise.
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// The stream session, or empty.
    #[serde(default)]
    pub session: String,
}

impl Play {
    pub fn is_stream(&self) -> bool {
        self.ms_played >= STREAM_MS
    }
}

/// Why an event was not logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

fn reject(reason: &'static str, message: impl Into<String>) -> Rejection {
    Rejection { reason, message: message.into() }
}

/// What one event became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Duplicate,
    /// The event id was logged before with a different payload: the first stays counted,
    /// this one is kept for audit.
    Conflict {
        message: String,
    },
    Rejected {
        reason: &'static str,
        message: String,
    },
}

/// The limits `check` applies, from `[plays]`, and the clock.
pub struct Limits {
    pub now_ms: i64,
    pub max_future_ms: i64,
    pub max_age_ms: i64,
    /// How far the sending device's clock is behind the server's (see `clock_offset`).
    pub clock_offset_ms: i64,
}

/// The correction for a batch's device clock: server time minus the device's time when it
/// sent the batch (`sent_ms`). Offsets within `tolerance_ms` are transit time and clock
/// jitter, not a wrong clock, and are not applied (so a retry of the same event lands on
/// the same `started_ms` as the first try).
pub fn clock_offset(now_ms: i64, sent_ms: Option<i64>, tolerance_ms: i64) -> i64 {
    match sent_ms {
        Some(sent) => {
            let offset = now_ms.saturating_sub(sent);
            if offset.saturating_abs() > tolerance_ms {
                offset
            } else {
                0
            }
        }
        None => 0,
    }
}

fn check_id(field: &str, v: &str) -> Result<(), Rejection> {
    if v.is_empty() || v.len() > MAX_ID_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(reject(
            "malformed",
            format!("{field} must be 1-{MAX_ID_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// Parse one element of a batch. `caller` is the authenticated user; `admin` callers
/// (trusted gateways) may post for any user.
pub fn parse(value: serde_json::Value, caller: &str, admin: bool) -> Result<PlayEvent, Rejection> {
    let event: PlayEvent = serde_json::from_value(value).map_err(|e| reject("malformed", e.to_string()))?;
    check_id("event_id", &event.event_id)?;
    if let Some(u) = &event.user {
        check_id("user", u)?;
        if !admin && u != caller {
            return Err(reject("user_mismatch", format!("this key belongs to {caller}, not {u}")));
        }
    }
    Ok(event)
}

/// Where a play happened, as far as the server can tell.
pub enum Place<'a> {
    /// A listener's own play: the country its stream session was signed for, else the
    /// account's. A play naming another country is refused.
    Known(&'a str),
    /// A gateway or an admin token, trusted to say (and required to).
    Told,
}

/// Check an event against the limits and the track's length (`None`: no such track).
pub fn check(
    event: PlayEvent,
    caller: &str,
    place: Place<'_>,
    duration_ms: Option<i64>,
    limits: &Limits,
) -> Result<Play, Rejection> {
    check_id("track", &event.track)?;
    check_id("device", &event.device)?;
    if let Some(s) = &event.session {
        check_id("session", s)?;
    }
    let duration = duration_ms.ok_or_else(|| reject("unknown_track", format!("no track {:?}", event.track)))?;
    if event.tier.parse::<segue_core::Tier>().is_err() {
        return Err(reject(
            "bad_tier",
            format!("tier {:?} is not one of {}", event.tier, segue_core::Tier::ALL.map(|t| t.as_str()).join(", ")),
        ));
    }
    // What the event says is checked here; what the server knows (an account's or a
    // session's country) was checked when it was made.
    if let Some(c) = event.country.as_ref().filter(|c| !segue_core::geo::is_country_code(c)) {
        return Err(reject("bad_country", format!("country {c:?} is not an ISO 3166-1 alpha-2 code")));
    }
    let country = match (event.country, place) {
        (Some(c), Place::Told) => c,
        (Some(c), Place::Known(k)) if c == k => c,
        (Some(c), Place::Known(k)) => {
            return Err(reject(
                "country_mismatch",
                format!("the play names {c}, but its stream session or its account places it in {k}"),
            ))
        }
        (None, Place::Known(k)) if !k.is_empty() => k.to_owned(),
        (None, _) => return Err(reject("bad_country", "country is required (no account country to default to)")),
    };
    let started_ms = event.started_ms.saturating_add(limits.clock_offset_ms);
    if event.ms_played < 0 {
        return Err(reject("bad_duration", format!("ms_played {} is negative", event.ms_played)));
    }
    if event.ms_played > duration + DURATION_SLACK_MS {
        return Err(reject(
            "bad_duration",
            format!("ms_played {} is longer than the track ({duration} ms)", event.ms_played),
        ));
    }
    if started_ms.saturating_add(event.ms_played) > limits.now_ms + limits.max_future_ms {
        return Err(reject(
            "future",
            format!("the play ends at {} ms, in the future", started_ms.saturating_add(event.ms_played)),
        ));
    }
    if started_ms < limits.now_ms - limits.max_age_ms {
        return Err(reject(
            "too_old",
            format!(
                "started_ms {started_ms} is older than the {} days offline plays are kept",
                limits.max_age_ms / 86_400_000
            ),
        ));
    }
    Ok(Play {
        user: event.user.unwrap_or_else(|| caller.to_owned()),
        event_id: event.event_id,
        track: event.track,
        started_ms,
        ms_played: event.ms_played,
        tier: event.tier,
        country,
        device: event.device,
        skipped: event.skipped,
        received_ms: limits.now_ms,
        clock_offset_ms: limits.clock_offset_ms,
        session: event.session.unwrap_or_default(),
    })
}

/// `YYYY-MM-DD` (UTC) of a Unix millisecond time.
pub fn day_of(ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).map_or(time::Date::MIN, |t| t.date());
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// Whether `d` is a `YYYY-MM-DD` date.
pub fn is_day(d: &str) -> bool {
    let b = d.as_bytes();
    let num =
        |r: std::ops::Range<usize>| d.get(r).filter(|s| s.bytes().all(|c| c.is_ascii_digit()))?.parse::<u32>().ok();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && num(0..4).is_some()
        && num(5..7).is_some_and(|m| (1..=12).contains(&m))
        && num(8..10).is_some_and(|d| (1..=31).contains(&d))
}

/// A month `YYYY-MM` as its `[start, end)` in Unix milliseconds.
pub fn month_bounds(month: &str) -> Option<(i64, i64)> {
    let (y, m) = month.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, u8) = (y.parse().ok()?, m.parse().ok()?);
    let start = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, 1).ok()?;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = time::Date::from_calendar_date(ny, time::Month::try_from(nm).ok()?, 1).ok()?;
    let ms = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    Some((ms(start), ms(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { now_ms: 1_800_000_000_000, max_future_ms: 300_000, max_age_ms: 31 * 86_400_000, clock_offset_ms: 0 }
    }

    fn event() -> serde_json::Value {
        serde_json::json!({"event_id": "e1", "track": "trk_1", "started_ms": 1_799_999_000_000i64,
            "ms_played": 31_000, "tier": "high", "country": "SE", "device": "phone"})
    }

    fn run(v: serde_json::Value, duration: Option<i64>) -> Result<Play, Rejection> {
        check(parse(v, "usr_a", false)?, "usr_a", Place::Known("SE"), duration, &limits())
    }

    #[test]
    fn good_events_pass_and_bad_ones_say_why() {
        let p = run(event(), Some(200_000)).unwrap();
        assert_eq!((p.user.as_str(), p.is_stream(), p.received_ms), ("usr_a", true, limits().now_ms));
        let with = |k: &str, v: serde_json::Value| {
            let mut e = event();
            e[k] = v;
            run(e, Some(200_000)).unwrap_err().reason
        };
        assert_eq!(with("ms_played", (-1).into()), "bad_duration");
        assert_eq!(with("ms_played", 250_000.into()), "bad_duration");
        assert_eq!(with("started_ms", 1_800_001_000_000i64.into()), "future");
        assert_eq!(with("started_ms", 1_700_000_000_000i64.into()), "too_old");
        assert_eq!(with("tier", "ultra".into()), "bad_tier");
        assert_eq!(with("country", "se".into()), "bad_country");
        assert_eq!(with("user", "usr_b".into()), "user_mismatch");
        assert_eq!(with("event_id", "".into()), "malformed");
        assert_eq!(with("ms_played", "long".into()), "malformed");
        assert_eq!(run(event(), None).unwrap_err().reason, "unknown_track");
        // Extremes are refused, not overflowed.
        assert_eq!(with("started_ms", i64::MAX.into()), "future");
        assert_eq!(with("started_ms", i64::MIN.into()), "too_old");
        assert_eq!(with("ms_played", i64::MAX.into()), "bad_duration");
        // An admin (a trusted gateway) posts for anyone.
        let mut e = event();
        e["user"] = "usr_b".into();
        assert_eq!(
            check(parse(e.clone(), "admin", true).unwrap(), "admin", Place::Told, Some(200_000), &limits())
                .unwrap()
                .user,
            "usr_b"
        );
        // ... but must say where the play happened.
        e.as_object_mut().unwrap().remove("country");
        let err = check(parse(e, "admin", true).unwrap(), "admin", Place::Told, Some(200_000), &limits()).unwrap_err();
        assert_eq!(err.reason, "bad_country");
        // A listener's play without a country is in the account's.
        let mut e = event();
        e.as_object_mut().unwrap().remove("country");
        assert_eq!(run(e, Some(200_000)).unwrap().country, "SE");
        // ... and one naming another country than it is known to be in is refused.
        assert_eq!(with("country", "US".into()), "country_mismatch");
    }

    #[test]
    fn a_wrong_device_clock_is_corrected_by_the_offset_seen_at_send_time() {
        let now = limits().now_ms;
        // Within the tolerance: transit time, not applied.
        assert_eq!(clock_offset(now, Some(now - 800), 30_000), 0);
        assert_eq!(clock_offset(now, None, 30_000), 0);
        // A device an hour behind: its plays would read as an hour old; an hour ahead, as
        // in the future (refused). Both land where they happened.
        let behind = clock_offset(now, Some(now - 3_600_000), 30_000);
        assert_eq!(behind, 3_600_000);
        let mut e = event();
        e["started_ms"] = (now - 3_600_000 - 60_000).into();
        let p = check(
            parse(e, "usr_a", false).unwrap(),
            "usr_a",
            Place::Known("SE"),
            Some(200_000),
            &Limits { clock_offset_ms: behind, ..limits() },
        )
        .unwrap();
        assert_eq!((p.started_ms, p.clock_offset_ms), (now - 60_000, behind));
        let ahead = clock_offset(now, Some(now + 3_600_000), 30_000);
        let mut e = event();
        e["started_ms"] = (now + 3_600_000 - 60_000).into();
        let raw =
            check(parse(e.clone(), "usr_a", false).unwrap(), "usr_a", Place::Known("SE"), Some(200_000), &limits());
        assert_eq!(raw.unwrap_err().reason, "future");
        let fixed = check(
            parse(e, "usr_a", false).unwrap(),
            "usr_a",
            Place::Known("SE"),
            Some(200_000),
            &Limits { clock_offset_ms: ahead, ..limits() },
        );
        assert_eq!(fixed.unwrap().started_ms, now - 60_000);
    }

    #[test]
    fn days_and_months_are_utc() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_764_547_199_999), "2025-11-30");
        assert_eq!(day_of(1_764_547_200_000), "2025-12-01");
        assert_eq!(month_bounds("2025-12"), Some((1_764_547_200_000, 1_767_225_600_000)));
        assert_eq!(month_bounds("2024-02").map(|(a, b)| (b - a) / 86_400_000), Some(29));
        assert_eq!(month_bounds("2025-13"), None);
        assert_eq!(month_bounds("25-01"), None);
        assert!(is_day("9999-12-31") && is_day("2026-02-01"));
        assert!(!is_day("2026-13-01") && !is_day("2026-1-01") && !is_day("2026-01-0x"));
    }
}
