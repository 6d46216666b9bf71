//! The admin API, on its own listener, every route behind a bearer token: purge (hard or
//! soft) by content id, path prefix or tag (`Surrogate-Key`), cache stats, and pre-warm
//! jobs with progress. Every action is logged.
//!
//! ```text
//! GET  /admin/stats                      cache and upstream figures
//! POST /admin/purge   {"content_id"|"prefix"|"tag": "...", "soft": false}
//! POST /admin/prewarm {"paths": ["/a/.../high.ogg", ...], "key": "..."}   -> 202 {"id": N, ...}
//! GET  /admin/prewarm/N                   a job's progress
//! GET  /admin/prewarm                     every job's progress
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use segue_core::control::{JobReport, JobState, PurgeSelector};
use segue_core::server::ReqBody;
use segue_core::server::{json_error, json_response, Body};
use segue_core::store::ObjectReader;
use serde::{Deserialize, Serialize};

use crate::State;

/// Largest admin request body.
const MAX_BODY: usize = 4 << 20;
/// Objects a pre-warm job fetches at once.
const PREWARM_CONCURRENCY: usize = 4;

pub struct Jobs {
    /// Differs on every start: job ids restart at 1, so a poller that sees another
    /// instance knows its job is gone.
    instance: String,
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Arc<Job>>>,
    keys: Mutex<HashMap<String, u64>>,
}

impl Default for Jobs {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Jobs {
            instance: format!("{:x}-{:x}", nanos, std::process::id()),
            next: AtomicU64::new(0),
            jobs: Mutex::default(),
            keys: Mutex::default(),
        }
    }
}

pub struct Job {
    id: u64,
    instance: String,
    paths: Vec<String>,
    started: Instant,
    done: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    finished_ms: AtomicU64,
    errors: Mutex<Vec<String>>,
}

#[derive(Serialize)]
struct JobView {
    id: u64,
    instance: String,
    state: &'static str,
    total: u64,
    done: u64,
    failed: u64,
    bytes: u64,
    elapsed_ms: u64,
    errors: Vec<String>,
}

impl Job {
    /// Progress for a control-plane heartbeat, under the control plane's job id.
    pub(crate) fn report(&self, id: &str) -> JobReport {
        let v = self.view();
        JobReport {
            id: id.to_owned(),
            state: match v.state {
                "running" => JobState::Running,
                "done" => JobState::Done,
                _ => JobState::Failed,
            },
            total: v.total,
            done: v.done,
            bytes: v.bytes,
            error: v.errors.join("; "),
        }
    }

    fn view(&self) -> JobView {
        let finished = self.finished_ms.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        JobView {
            id: self.id,
            instance: self.instance.clone(),
            state: match (finished, failed) {
                (0, _) => "running",
                (_, 0) => "done",
                _ => "failed",
            },
            total: self.paths.len() as u64,
            done: self.done.load(Ordering::Relaxed),
            failed,
            bytes: self.bytes.load(Ordering::Relaxed),
            elapsed_ms: if finished > 0 { finished } else { self.started.elapsed().as_millis() as u64 },
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

pub async fn handle(state: Arc<State>, req: Request<ReqBody>) -> Response<Body> {
    if req.uri().path() == "/healthz" {
        return segue_core::server::health_response();
    }
    if !state.admin_authorized(req.headers()) {
        let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid admin bearer token is required");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if (&method, path.as_str()) == (&Method::GET, "/metrics") {
        // Scraped every few seconds: not logged like the actions below.
        return crate::metrics_page(&state);
    }
    let resp = match (method.clone(), path.as_str()) {
        (Method::GET, "/admin/stats") => json_response(StatusCode::OK, &stats(&state)),
        (Method::POST, "/admin/purge") => match body::<PurgeSelector>(req).await {
            Ok(p) => purge(&state, p),
            Err(r) => r,
        },
        (Method::POST, "/admin/prewarm") => match body::<PrewarmRequest>(req).await {
            Ok(p) => prewarm(&state, p),
            Err(r) => r,
        },
        (Method::GET, "/admin/prewarm") => {
            let jobs = state.jobs.jobs.lock().map(|j| j.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
            let mut views: Vec<JobView> = jobs.iter().map(|j| j.view()).collect();
            views.sort_by_key(|v| v.id);
            json_response(StatusCode::OK, &serde_json::json!({ "jobs": views }))
        }
        (Method::GET, p) if p.starts_with("/admin/prewarm/") => {
            let job = p["/admin/prewarm/".len()..]
                .parse::<u64>()
                .ok()
                .and_then(|id| state.jobs.jobs.lock().ok().and_then(|j| j.get(&id).cloned()));
            match job {
                Some(j) => json_response(StatusCode::OK, &j.view()),
                None => json_error(StatusCode::NOT_FOUND, "not_found", &format!("no pre-warm job at {p}")),
            }
        }
        (_, "/admin/stats" | "/admin/purge" | "/admin/prewarm") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &format!("{method} {path}"))
        }
        _ => json_error(StatusCode::NOT_FOUND, "not_found", &format!("no admin route {path}")),
    };
    tracing::info!(%method, path, status = resp.status().as_u16(), "admin request");
    resp
}

/// Read and parse a JSON body, or the 4xx response saying what is wrong with it.
async fn body<T: serde::de::DeserializeOwned>(req: Request<ReqBody>) -> Result<T, Response<Body>> {
    // Collected by hand: `http_body_util::Limited` over the boxed body trips a rustc
    // higher-ranked lifetime error inside the Send-checked service future.
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let too_large = || {
            json_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &format!("request body over {MAX_BODY} bytes"))
        };
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if bytes.len() + data.len() > MAX_BODY {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e) => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("request body unreadable: {e}"),
                ))
            }
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, "bad_request", &format!("invalid JSON body: {e}")))
}

fn stats(state: &State) -> serde_json::Value {
    let (written, read) = state.cache.ssd_io();
    serde_json::json!({
        "name": state.via.to_str().unwrap_or("").trim_start_matches("1.1 "),
        "memory_bytes": state.cache.memory_bytes(),
        "ssd": state.cache.has_ssd(),
        "ssd_written_bytes": written,
        "ssd_read_bytes": read,
        "objects": state.cache.object_count(),
        "fills_inflight": state.coalescer.len(),
        "upstreams": state.upstreams.health(),
    })
}

/// Purge what `p` selects: the keys of the objects in the memory index purged now (none:
/// nothing there matches), or why the selector is refused. Objects the index does not
/// hold are judged by the rule when their records come back (`bans`).
pub(crate) fn apply_purge(state: &State, p: &PurgeSelector) -> Result<Vec<String>, String> {
    p.validate()?;
    // The rule first: a record reloaded into the index while this runs is judged by it.
    state.cache.ban(p.clone());
    let matched = state.cache.objects_matching(|i| crate::bans::selects(p, i));
    let mode = if p.soft { "soft" } else { "hard" };
    for info in &matched {
        if p.soft {
            state.cache.mark_stale(info);
        } else {
            state.cache.purge(info);
        }
    }
    metrics::counter!("edge_purged_objects_total", "mode" => mode).increment(matched.len() as u64);
    tracing::info!(what = p.what(), mode, objects = matched.len(), "purged");
    Ok(matched.iter().map(|i| i.key.to_string()).collect())
}

fn purge(state: &State, p: PurgeSelector) -> Response<Body> {
    match apply_purge(state, &p) {
        Err(e) => json_error(StatusCode::BAD_REQUEST, "bad_request", &e),
        Ok(keys) if keys.is_empty() => {
            json_error(StatusCode::NOT_FOUND, "not_found", &format!("no cached object matches {:?}", p.what()))
        }
        Ok(keys) => {
            let mode = if p.soft { "soft" } else { "hard" };
            let listed: Vec<&String> = keys.iter().take(1000).collect();
            json_response(StatusCode::OK, &serde_json::json!({ "purged": keys.len(), "mode": mode, "objects": listed }))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrewarmRequest {
    paths: Vec<String>,
    /// Idempotency key: a second request with the same key gets the first one's job
    /// instead of a new one (a control plane retrying after a crash).
    #[serde(default)]
    key: Option<String>,
}

fn prewarm(state: &Arc<State>, p: PrewarmRequest) -> Response<Body> {
    match start_prewarm(state, p.paths, p.key) {
        Ok(job) => json_response(StatusCode::ACCEPTED, &job.view()),
        Err(e) => json_error(StatusCode::BAD_REQUEST, "bad_request", &e),
    }
}

/// Start a pre-warm job, or return the one already started with the same `key`.
pub(crate) fn start_prewarm(state: &Arc<State>, paths: Vec<String>, key: Option<String>) -> Result<Arc<Job>, String> {
    if paths.is_empty() {
        return Err("paths is empty".into());
    }
    for (i, path) in paths.iter().enumerate() {
        if !path.starts_with('/') || segue_core::key::check_path_safety(path).is_err() {
            return Err(format!("paths[{i}] {path:?} is not a safe absolute path"));
        }
    }
    if let Some(key) = &key {
        if key.is_empty() || key.len() > 256 {
            return Err("key must be 1-256 bytes".into());
        }
        let existing = state.jobs.keys.lock().ok().and_then(|k| k.get(key).copied());
        if let Some(job) = existing.and_then(|id| state.jobs.jobs.lock().ok().and_then(|j| j.get(&id).cloned())) {
            // A repeat gets the same job, unless that one failed: then this is a retry.
            if job.view().state != "failed" {
                tracing::debug!(id = job.id, key, "pre-warm already started with this key");
                return Ok(job);
            }
        }
    }
    let id = state.jobs.next.fetch_add(1, Ordering::Relaxed) + 1;
    if let (Some(key), Ok(mut keys)) = (&key, state.jobs.keys.lock()) {
        keys.insert(key.clone(), id);
    }
    let job = Arc::new(Job {
        id,
        instance: state.jobs.instance.clone(),
        paths,
        started: Instant::now(),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        finished_ms: AtomicU64::new(0),
        errors: Mutex::default(),
    });
    if let Ok(mut jobs) = state.jobs.jobs.lock() {
        jobs.insert(id, job.clone());
    }
    tracing::info!(id, key, objects = job.paths.len(), "pre-warm started");
    tokio::spawn(run_prewarm(state.clone(), job.clone()));
    Ok(job)
}

/// Fetch every object whole through the cache (coalesced with client traffic, admitted
/// to the SSD: a pre-warmed object is wanted by definition).
async fn run_prewarm(state: Arc<State>, job: Arc<Job>) {
    futures_util::stream::iter(job.paths.clone())
        .for_each_concurrent(PREWARM_CONCURRENCY, |path| {
            let (state, job) = (state.clone(), job.clone());
            async move {
                match warm_one(&state, &path).await {
                    Ok(bytes) => {
                        job.bytes.fetch_add(bytes, Ordering::Relaxed);
                        job.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        job.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(id = job.id, path, error = %e, "pre-warm of an object failed");
                        if let Ok(mut errors) = job.errors.lock() {
                            if errors.len() < 100 {
                                errors.push(format!("{path}: {e}"));
                            }
                        }
                    }
                }
            }
        })
        .await;
    let ms = job.started.elapsed().as_millis().max(1) as u64;
    job.finished_ms.store(ms, Ordering::Relaxed);
    let v = job.view();
    tracing::info!(id = job.id, done = v.done, failed = v.failed, bytes = v.bytes, ms, "pre-warm finished");
}

async fn warm_one(state: &Arc<State>, path: &str) -> Result<u64, String> {
    let key: Arc<str> = state.policy_for(path).cache_key(path, None).into();
    let stored = state.cache.load_object(&key).await.filter(|i| i.is_fresh(std::time::SystemTime::now()));
    let info = match stored {
        Some(info) => info,
        None => crate::serve::discover(state, &key, state.cache.object(&key)).await.map_err(|e| e.to_string())?.0,
    };
    state.cache.want(&info);
    let reader = crate::reader::EdgeReader::new(state.clone(), info.clone());
    let mut stream = reader.read(0..info.len).await.map_err(|e| e.to_string())?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.map_err(|e| e.to_string())?.len() as u64;
    }
    Ok(bytes)
}
