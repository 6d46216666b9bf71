//! Registration with the control plane (the `core::control` contract): a heartbeat loop
//! carrying this POP's identity, addresses, cache figures and the progress of its jobs.
//! Each answer lists the content embargoed in this POP's region, which
//! `State::embargoed` enforces on every request (cached or not), and the jobs this POP
//! should run: pre-warms start here (idempotent by job id), purges run at once.
//!
//! The request is a long poll: while no job runs, the control plane holds it up to one
//! heartbeat period and answers early when a job appears, so purges arrive within a
//! round trip. While jobs run, a heartbeat goes out every half second to report progress.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Method;
use segue_core::control::{Heartbeat, HeartbeatAnswer, JobReport, JobState, Work};

use crate::config::{Config, ControlPlaneSettings};
use crate::State;

/// Progress reports while jobs run.
const BUSY_EVERY: Duration = Duration::from_millis(500);

/// A job this POP was handed, as it stands.
enum Handled {
    Prewarm(Arc<crate::admin::Job>),
    Finished(JobReport),
}

struct Beat {
    cp: ControlPlaneSettings,
    tls: Arc<rustls::ClientConfig>,
    base: Heartbeat,
    jobs: HashMap<String, Handled>,
    /// When the last heartbeat was sent and the egress count then.
    last_egress: Option<(std::time::Instant, u64)>,
}

/// Send heartbeats until the edge is gone. The first goes out at once.
pub fn spawn(state: &Arc<State>, config: &Config, cp: ControlPlaneSettings) {
    let base = Heartbeat {
        id: config.via_name(),
        region: cp.region.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        public_url: if cp.public_url.is_empty() { format!("http://{}", config.listen) } else { cp.public_url.clone() },
        admin_url: match (&cp.admin_url, config.admin_listen) {
            (u, _) if !u.is_empty() => u.clone(),
            (_, Some(a)) => format!("http://{a}"),
            _ => String::new(),
        },
        mem_bytes: 0,
        ssd_bytes: 0,
        hit_ratio: 0.0,
        requests: 0,
        errors: 0,
        healthy: true,
        jobs: Vec::new(),
        wait_ms: 0,
        connections: 0,
        egress_mbps: 0.0,
        saturated: false,
    };
    let weak = Arc::downgrade(state);
    let mut beat = Beat { cp, tls: state.tls_client.clone(), base, jobs: HashMap::new(), last_egress: None };
    tokio::spawn(async move {
        let period = Duration::from_secs(beat.cp.heartbeat_secs);
        let mut failing = false;
        while let Some(busy) = beat.running(&weak) {
            match beat.once(&weak, if busy { Duration::ZERO } else { period }).await {
                Some(Ok(())) => {
                    if failing {
                        tracing::info!(control_plane = beat.cp.url, "control plane reachable again");
                    }
                    failing = false;
                    if beat.running(&weak) == Some(true) {
                        tokio::time::sleep(BUSY_EVERY).await;
                    }
                }
                Some(Err(e)) => {
                    if !failing {
                        tracing::warn!(control_plane = beat.cp.url, error = %e, "heartbeat failed; keeping the last embargo list");
                    }
                    failing = true;
                    metrics::counter!("edge_heartbeat_failures_total").increment(1);
                    tokio::time::sleep(period).await;
                }
                None => break,
            }
        }
    });
}

/// Over either configured capacity.
fn saturated(cp: &ControlPlaneSettings, connections: u64, egress_mbps: f64) -> bool {
    (cp.capacity_connections > 0 && connections >= cp.capacity_connections)
        || (cp.capacity_egress_mbps > 0 && egress_mbps >= cp.capacity_egress_mbps as f64)
}

impl Beat {
    /// Whether a job is still running (None once the edge is gone).
    fn running(&self, weak: &Weak<State>) -> Option<bool> {
        weak.upgrade()?;
        Some(self.jobs.values().any(|j| matches!(j, Handled::Prewarm(p) if p.report("").state == JobState::Running)))
    }

    async fn once(&mut self, weak: &Weak<State>, wait: Duration) -> Option<Result<(), String>> {
        let mut hb = self.base.clone();
        {
            let state = weak.upgrade()?;
            let requests = state.served.load(Ordering::Relaxed);
            let hits = state.hits.load(Ordering::Relaxed);
            hb.mem_bytes = state.cache.memory_bytes();
            hb.ssd_bytes = state.cache.ssd_bytes();
            hb.hit_ratio = if requests == 0 { 0.0 } else { hits as f64 / requests as f64 };
            hb.requests = state.answered.load(Ordering::Relaxed);
            hb.errors = state.server_errors.load(Ordering::Relaxed);
            let egress = state.egress_bytes.load(Ordering::Relaxed);
            let now = std::time::Instant::now();
            if let Some((at, bytes)) = self.last_egress {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    hb.egress_mbps = egress.saturating_sub(bytes) as f64 * 8.0 / 1e6 / secs;
                }
            }
            self.last_egress = Some((now, egress));
            hb.connections = segue_core::limits::open_connections() as u64;
            hb.saturated = saturated(&self.cp, hb.connections, hb.egress_mbps);
        }
        hb.jobs = self
            .jobs
            .iter()
            .map(|(id, j)| match j {
                Handled::Prewarm(p) => p.report(id),
                Handled::Finished(r) => r.clone(),
            })
            .collect();
        hb.wait_ms = wait.as_millis() as u64;
        let answer = match self.send(&hb, wait).await {
            Ok(a) => a,
            Err(e) => return Some(Err(e)),
        };
        let state = weak.upgrade()?;
        state.set_embargoes(answer.embargoes.into_iter().map(|e| (e.content_id, e.until)).collect());
        state.set_withdrawn(answer.withdrawn);
        // Jobs the control plane no longer lists are settled there: forget finished ones.
        let listed: Vec<&str> = answer.jobs.iter().map(|j| j.id.as_str()).collect();
        self.jobs.retain(|id, j| {
            listed.contains(&id.as_str()) || matches!(j, Handled::Prewarm(p) if p.report("").state == JobState::Running)
        });
        for job in answer.jobs {
            if self.jobs.contains_key(&job.id) {
                continue;
            }
            let handled = match job.work {
                Work::Prewarm { paths } => match crate::admin::start_prewarm(&state, paths, Some(job.id.clone())) {
                    Ok(p) => Handled::Prewarm(p),
                    Err(e) => Handled::Finished(failed(&job.id, e)),
                },
                Work::Purge { selector } => match crate::admin::apply_purge(&state, &selector) {
                    Ok(keys) => Handled::Finished(JobReport {
                        id: job.id.clone(),
                        state: JobState::Done,
                        total: 1,
                        done: 1,
                        bytes: keys.len() as u64,
                        error: String::new(),
                    }),
                    Err(e) => Handled::Finished(failed(&job.id, e)),
                },
            };
            tracing::info!(job = job.id, "job from the control plane");
            self.jobs.insert(job.id, handled);
        }
        Some(Ok(()))
    }

    async fn send(&self, hb: &Heartbeat, wait: Duration) -> Result<HeartbeatAnswer, String> {
        let body = serde_json::to_vec(hb).map_err(|e| e.to_string())?;
        let limit = wait + Duration::from_secs(10);
        let (status, bytes) = segue_core::client::call_with(
            &self.cp.url,
            Some(self.tls.clone()),
            Method::POST,
            "/v1/pops/heartbeat",
            Some(&self.cp.token),
            Some(body.into()),
            limit,
        )
        .await?;
        if !status.is_success() {
            return Err(format!("answered {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("bad answer: {e}"))
    }
}

fn failed(id: &str, error: String) -> JobReport {
    JobReport { id: id.to_owned(), state: JobState::Failed, total: 0, done: 0, bytes: 0, error }
}
