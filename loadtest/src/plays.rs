//! The play-event scenario: listeners' apps posting batches of plays to the app API
//! (`POST /v1/play-events`) over keep-alive connections, each event with a fresh
//! idempotency key. Reports sustained events/s and exact request latency percentiles.

use crate::now_ms;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use segue_core::client::Connector;
use serde::Serialize;

use crate::{connect, Error, Percentiles};

#[derive(Debug, Clone)]
pub struct PlaysOptions {
    pub target: Connector,
    /// Bearer token: an admin token (events for many users) or a user's key.
    pub token: String,
    /// Track ids plays are of (Zipf-free: uniform).
    pub tracks: Vec<String>,
    /// Distinct listeners events are spread over (ignored with a user's key).
    pub users: u64,
    /// Events per request.
    pub batch: usize,
    pub connections: usize,
    pub duration: Duration,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaysReport {
    pub requests: u64,
    pub errors: u64,
    /// Events the app API accepted (new plays, stored).
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    /// Time to the whole answer of one batch, milliseconds.
    pub latency_ms: Percentiles,
    pub statuses: std::collections::BTreeMap<u16, u64>,
}

impl PlaysReport {
    pub fn table(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "play events: {} events in {} requests  errors {}  in {:.2} s\nthroughput {:.0} events/s\n\
             batch latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\nstatuses {:?}",
            self.events,
            self.requests,
            self.errors,
            self.seconds,
            self.events_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.statuses
        )
    }
}

/// Where each listener of one connection is in their day: their plays follow each other
/// (one every 61 s from 20 hours ago, on their own device), as a real listener's do, so
/// none overlaps another or passes 24 h a day (the app API refuses both).
struct Listeners {
    /// This connection's share of the users: `first`, `first + step`, ...
    first: u64,
    step: u64,
    count: u64,
    next: std::collections::HashMap<u64, i64>,
    base_ms: i64,
}

const SPACING_MS: i64 = 61_000;

impl Listeners {
    fn new(o: &PlaysOptions, connection: usize) -> Listeners {
        let step = o.connections.max(1) as u64;
        let count = (o.users.max(1) / step).max(1);
        Listeners {
            first: connection as u64,
            step,
            count,
            next: std::collections::HashMap::new(),
            base_ms: now_ms() - 20 * 3_600_000,
        }
    }

    /// A listener and the start of their next play (`None`: every one is up to now).
    fn next(&mut self, rng: &mut SmallRng, now: i64) -> Option<(u64, i64)> {
        for _ in 0..64 {
            let user = self.first + self.step * rng.random_range(0..self.count);
            let k = self.next.entry(user).or_insert(0);
            let started = self.base_ms + *k * SPACING_MS;
            if started < now - SPACING_MS {
                *k += 1;
                return Some((user, started));
            }
        }
        None
    }
}

/// One batch body. Event ids are UUIDv7, made by the player's own generator (so the
/// server's idempotency index sees what devices send: time-ordered keys).
fn batch_body(o: &PlaysOptions, rng: &mut SmallRng, listeners: &mut Listeners) -> Bytes {
    let now = now_ms();
    let mut s = String::with_capacity(o.batch * 230 + 16);
    s.push_str("{\"events\":[");
    for i in 0..o.batch {
        let Some((user, started)) = listeners.next(rng, now) else { break };
        if i > 0 {
            s.push(',');
        }
        let track = &o.tracks[rng.random_range(0..o.tracks.len())];
        let id = segue_player::outbox::new_event_id();
        let played = rng.random_range(5_000..60_000i64);
        let skipped = played < 30_000;
        s.push_str(&format!(
            "{{\"event_id\":\"{id}\",\"user\":\"lt-user-{user}\",\"track\":\"{track}\",\"started_ms\":{started},\
             \"ms_played\":{played},\"tier\":\"high\",\"country\":\"SE\",\"device\":\"lt-dev-{user}\",\"skipped\":{skipped}}}"
        ));
    }
    s.push_str("]}");
    Bytes::from(s)
}

/// The `accepted` count at the start of a play-events answer (keys are sorted).
fn accepted(body: &[u8]) -> u64 {
    let rest = body.strip_prefix(b"{\"accepted\":").unwrap_or_default();
    rest.iter().take_while(|b| b.is_ascii_digit()).fold(0, |n, b| n * 10 + u64::from(b - b'0'))
}

/// Post batches on `connections` connections for `duration`.
pub async fn run(o: PlaysOptions) -> Result<PlaysReport, Error> {
    if o.tracks.is_empty() {
        return Err(Error::Usage("the plays scenario needs track ids (--track or --tracks-file)".into()));
    }
    if !(1..=10_000).contains(&o.batch) {
        return Err(Error::Usage("--batch must be 1-10000".into()));
    }
    let o = Arc::new(o);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..o.connections.max(1) {
        let mut conn = connect(&o.target).await?;
        let (o, stop) = (o.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // Seeded by the clock too: a second run must send new event ids.
            let mut rng = SmallRng::seed_from_u64(o.seed ^ (now_ms() as u64).wrapping_add(c as u64 * 0x9E37_79B9));
            let mut samples: Vec<(u16, u64)> = Vec::new();
            let mut events = 0u64;
            let mut listeners = Listeners::new(&o, c);
            while !stop.load(Ordering::Relaxed) {
                let body = batch_body(&o, &mut rng, &mut listeners);
                let req = Request::post("/v1/play-events")
                    .header(header::AUTHORIZATION, format!("Bearer {}", o.token))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body);
                let Ok(req) = req else { break };
                let t = Instant::now();
                let answer = async {
                    let resp = conn.send_body(req).await.map_err(|_| ())?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map_err(|_| ())?.to_bytes();
                    Ok::<_, ()>((status, body))
                }
                .await;
                match answer {
                    Ok((status, body)) => {
                        if status == StatusCode::OK {
                            events += accepted(&body);
                        }
                        samples.push((status.as_u16(), t.elapsed().as_micros() as u64));
                    }
                    Err(()) => {
                        samples.push((0, 0));
                        match connect(&o.target).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (samples, events)
        }));
    }
    tokio::time::sleep(o.duration).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut events) = (Vec::new(), 0u64);
    for t in tasks {
        let (s, e) = t.await.unwrap_or_default();
        all.extend(s);
        events += e;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let mut statuses = std::collections::BTreeMap::new();
    let mut lat = Vec::new();
    let mut errors = 0;
    for (status, us) in &all {
        *statuses.entry(*status).or_insert(0) += 1;
        if *status == 200 {
            lat.push(*us);
        } else {
            errors += 1;
        }
    }
    Ok(PlaysReport {
        requests: all.len() as u64,
        errors,
        events,
        seconds,
        events_per_sec: events as f64 / seconds,
        latency_ms: Percentiles::of(lat),
        statuses,
    })
}
