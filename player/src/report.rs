//! Play reporting: sends what waits in the outbox to the app API in batches, with retry
//! and backoff, and removes each play only once the app API acknowledged it.
//!
//! Every batch carries `sent_ms`, the device's clock when it was sent, so the app API can
//! correct the plays' start times by how far this device's clock is off. A network
//! failure, a 5xx or a 429 is retried (exponential backoff with full jitter, `Retry-After`
//! honoured); after `attempts` tries the plays stay in the outbox for the next sync. A
//! refusal of the whole batch (400, 401, 403) stops the sync with the app API's message.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use serde::Serialize;

use crate::api::AppApi;
use crate::outbox::{Outbox, PlayRecord};
use crate::Error;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sync {
    /// Plays sent (each counted once, however many tries it took).
    pub sent: usize,
    pub accepted: usize,
    pub duplicates: usize,
    /// Refused for good (`rejected` or `conflict`) and moved to `rejected/`.
    pub set_aside: usize,
    /// Plays still waiting in the outbox after the sync.
    pub waiting: usize,
    /// Why the sync stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Sync {
    /// Add a later sync's work: counts add up; what waits and the error are the later's.
    pub fn then(self, later: Sync) -> Sync {
        Sync {
            sent: self.sent + later.sent,
            accepted: self.accepted + later.accepted,
            duplicates: self.duplicates + later.duplicates,
            set_aside: self.set_aside + later.set_aside,
            waiting: later.waiting,
            error: later.error,
        }
    }
}

pub struct Reporter {
    api: AppApi,
    outbox: Arc<Outbox>,
    /// Plays per request (the app API takes up to 1,000 by default).
    pub batch: usize,
    /// Tries per batch before the sync gives up for now.
    pub attempts: u32,
    /// First backoff; doubled per try, capped at `MAX_BACKOFF`.
    pub backoff: Duration,
    /// One sync at a time (two would send the same plays twice: harmless, wasteful).
    running: tokio::sync::Mutex<()>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a try failed, and whether trying again could help.
enum Failure {
    Retry(String, Option<Duration>),
    Stop(String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Reporter {
    pub fn new(api: AppApi, outbox: Arc<Outbox>) -> Reporter {
        Reporter {
            api,
            outbox,
            batch: 500,
            attempts: 5,
            backoff: Duration::from_millis(250),
            running: tokio::sync::Mutex::new(()),
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Send everything waiting, oldest first.
    pub async fn sync(&self) -> Sync {
        let _one = self.running.lock().await;
        let mut sync = Sync::default();
        if let Err(e) = self.send_all(&mut sync).await {
            sync.error = Some(e.to_string());
        }
        sync.waiting = self.outbox.state().map_or(sync.waiting, |s| s.waiting);
        sync
    }

    async fn send_all(&self, sync: &mut Sync) -> Result<(), Error> {
        let pending = self.outbox.pending()?;
        for chunk in pending.chunks(self.batch.max(1)) {
            let answer = self.send(chunk).await.map_err(Error::Api)?;
            sync.sent += chunk.len();
            self.settle(chunk, &answer, sync)?;
        }
        Ok(())
    }

    /// Apply the app API's per-play answers to the outbox.
    fn settle(&self, chunk: &[PlayRecord], answer: &serde_json::Value, sync: &mut Sync) -> Result<(), Error> {
        let mut done = Vec::new();
        for r in answer["results"].as_array().into_iter().flatten() {
            let Some(play) = chunk.iter().find(|p| Some(p.event_id.as_str()) == r["event_id"].as_str()) else {
                continue;
            };
            match r["status"].as_str() {
                Some("accepted") => {
                    sync.accepted += 1;
                    done.push(play.event_id.as_str());
                }
                Some("duplicate") => {
                    sync.duplicates += 1;
                    done.push(play.event_id.as_str());
                }
                Some(status @ ("rejected" | "conflict")) => {
                    let why = r["reason"].as_str().or(r["message"].as_str()).unwrap_or(status);
                    tracing::warn!(event = %play.event_id, track = %play.track, status, why, "play refused; set aside");
                    self.outbox.set_aside(play, status, why)?;
                    sync.set_aside += 1;
                }
                // An answer this client does not know: keep the play and try later.
                _ => {}
            }
        }
        self.outbox.remove(&done)
    }

    /// POST one batch, retrying what may succeed later.
    async fn send(&self, chunk: &[PlayRecord]) -> Result<serde_json::Value, String> {
        let mut wait = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts.max(1) {
            match self.post(chunk).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Stop(e)) => return Err(e),
                Err(Failure::Retry(e, retry_after)) => {
                    tracing::info!(attempt, error = %e, "play report not delivered; will retry");
                    last = e;
                    if attempt == self.attempts.max(1) {
                        break;
                    }
                    // Full jitter: a fleet of devices coming back online does not retry in step.
                    let jittered = wait.mul_f64(rand::random::<f64>());
                    tokio::time::sleep(retry_after.map_or(jittered, |r| r.min(MAX_BACKOFF * 2))).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
        Err(format!("{last} (after {} tries; the plays stay in the outbox)", self.attempts.max(1)))
    }

    async fn post(&self, chunk: &[PlayRecord]) -> Result<serde_json::Value, Failure> {
        // Stamped per try: the app API compares it with its own clock on arrival.
        let body = serde_json::json!({ "sent_ms": now_ms(), "events": chunk });
        let body = Bytes::from(body.to_string());
        let (resp, bytes) = segue_core::client::call_full(
            &self.api.base,
            None,
            Method::POST,
            "/v1/play-events",
            Some(&self.api.token),
            Some(body),
            self.api.timeout,
        )
        .await
        .map_err(|e| Failure::Retry(format!("{}: {e}", self.api.base), None))?;
        let status = resp.status();
        let text = || format!("{status} {}", String::from_utf8_lossy(&bytes).trim());
        if status == StatusCode::OK {
            return serde_json::from_slice(&bytes).map_err(|e| Failure::Retry(format!("not a play answer: {e}"), None));
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure::Retry(text(), retry_after));
        }
        Err(Failure::Stop(text()))
    }
}
