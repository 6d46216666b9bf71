//! Filling one slice from upstream: a ranged GET, the object's identity learned or checked
//! from the response head, body chunks handed to the fill as they arrive, the finished
//! slice stored in the cache.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::Method;

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;

use crate::cache::{ObjectInfo, SliceKey};
use crate::coalesce::Fill;
use crate::error::Error;
use crate::http_cache::validate;
use crate::upstream::BodyError;
use crate::State;

/// Run the fill for slice `index` of the object at `key` (path and query).
/// `known` is the object's info when already known; its validator is checked. `stale` is
/// a stored copy being revalidated: its validators go with the request, and a 304 renews
/// it without moving a byte.
/// `generation` is the coalescer slot's (`UNKNOWN` for a discovery).
pub async fn run_fill(
    state: Arc<State>,
    fill: Arc<Fill>,
    key: Arc<str>,
    generation: u64,
    index: u64,
    known: Option<Arc<ObjectInfo>>,
    stale: Option<Arc<ObjectInfo>>,
) {
    let done = Finish { state: state.clone(), fill: fill.clone(), key: key.clone(), generation, index };
    let result = fill_slice(&state, &fill, &key, index, known, stale).await;
    if let Err(e) = &result {
        tracing::debug!(object = %key, index, error = %e, "fill failed");
    }
    fill.finish(result.map(|_| ()));
    drop(done);
}

/// Start [`run_fill`] in its own task, which a takeover can abort.
pub fn spawn_fill(
    state: &Arc<State>,
    fill: &Arc<Fill>,
    key: Arc<str>,
    generation: u64,
    index: u64,
    known: Option<Arc<ObjectInfo>>,
    stale: Option<Arc<ObjectInfo>>,
) {
    let task = tokio::spawn(run_fill(state.clone(), fill.clone(), key, generation, index, known, stale));
    fill.set_task(task.abort_handle());
}

/// However a fill's task ends (finished, failed, aborted by a takeover, or panicked), its
/// waiters are told and its slot is freed.
struct Finish {
    state: Arc<State>,
    fill: Arc<Fill>,
    key: Arc<str>,
    generation: u64,
    index: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.fill.is_done() {
            self.fill.finish(Err(Error::UpstreamUnavailable {
                path: self.key.to_string(),
                detail: "the fetch was stopped (taken over after making no progress)".into(),
            }));
        }
        self.state.coalescer.remove(&self.key, self.generation, self.index, &self.fill);
        if let Some(g) = self.fill.aliased() {
            self.state.coalescer.remove(&self.key, g, self.index, &self.fill);
        }
    }
}

async fn fill_slice(
    state: &State,
    fill: &Arc<Fill>,
    key: &Arc<str>,
    index: u64,
    known: Option<Arc<ObjectInfo>>,
    stale: Option<Arc<ObjectInfo>>,
) -> Result<(), Error> {
    let size = state.cache.slice_size;
    let first = index * size;
    let last = match &known {
        Some(info) if info.len == 0 => return Ok(()),
        Some(info) => (first + size).min(info.len) - 1,
        None => first + size - 1,
    };
    let started = Instant::now();
    let request_time = SystemTime::now();
    let mut headers = HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("bytes={first}-{last}")) {
        headers.insert(header::RANGE, v);
    }
    if let Some(s) = &stale {
        for (name, value) in validate::conditional_headers(&s.headers) {
            headers.insert(name, value);
        }
    }
    let fetched = state.upstreams.fetch(&Method::GET, key, &headers).await?;
    let response_time = SystemTime::now();
    let upstream = fetched.upstream;
    metrics::histogram!("edge_upstream_head_seconds").record(started.elapsed().as_secs_f64());

    if let (StatusCode::NOT_MODIFIED, Some(s)) = (fetched.status, &stale) {
        if validate::selects(&s.headers, &fetched.headers) {
            let renewed = state.renew(s, &fetched.headers, request_time, response_time);
            metrics::counter!("edge_revalidations_total", "result" => "not_modified").increment(1);
            fill.set_head(Ok(renewed));
            return Ok(());
        }
    }
    // What the response says about the object, and which bytes of the body are ours.
    let (total, body_offset) = match fetched.status {
        StatusCode::PARTIAL_CONTENT => {
            let (start, total) = content_range(&fetched.headers).ok_or_else(|| Error::UpstreamUnavailable {
                path: key.to_string(),
                detail: "206 without a usable Content-Range".into(),
            })?;
            if start != first {
                return Err(Error::UpstreamUnavailable {
                    path: key.to_string(),
                    detail: format!("asked for byte {first}, got {start}"),
                });
            }
            (total, 0)
        }
        // An upstream that ignores Range sends everything; keep our slice of it (and store
        // every other slice it passes, below).
        StatusCode::OK => match content_length(&fetched.headers) {
            Some(len) => (len, first),
            None => {
                return fill_unknown_length(state, fill, key, index, known, fetched, request_time, response_time).await
            }
        },
        StatusCode::RANGE_NOT_SATISFIABLE if unsatisfied_len(&fetched.headers) == Some(0) => (0, 0),
        _ => {
            let answer = match passthrough(key, fetched).await {
                Error::Upstream(p) => p,
                e => return Err(e),
            };
            return store_answer(state, fill, key, answer, request_time, response_time);
        }
    };
    let mut info = state.describe(
        key.clone(),
        key.clone(),
        StatusCode::OK,
        fetched.headers.clone(),
        total,
        Vec::new(),
        request_time,
        response_time,
    );
    // A response the rules say not to store still answers the requests waiting on this
    // fill; it is just never recorded, nor are its slices.
    info.transient = !state.storable_fill(key, fetched.status, &fetched.headers);
    let info = match known {
        Some(k) if k.len != info.len || k.validators.etag != info.validators.etag => {
            return Err(changed(state, &k, key));
        }
        Some(k) => k,
        None => {
            if stale.is_some() {
                metrics::counter!("edge_revalidations_total", "result" => "changed").increment(1);
            }
            let info = if info.transient { Arc::new(info) } else { state.cache.put_object(info) };
            announce(state, fill, key, &info);
            info
        }
    };
    if info.len == 0 {
        return Ok(());
    }
    let last = (first + size).min(info.len) - 1;
    let want = last - first + 1;

    // Stream the body into the fill, trimming to our slice when the upstream sent more.
    // A whole body (the upstream ignored Range) is read to its end and every slice it
    // passes is stored, so the object's other slices cost no fetch from byte 0 each.
    let mut passed = (body_offset > 0 || fetched.status == StatusCode::OK)
        .then(|| Passed::new(state, key, info.generation, index))
        .filter(|_| !info.transient);
    let mut body = fetched.body;
    let (mut seen, mut got) = (0u64, 0u64);
    while got < want || passed.is_some() {
        let frame = match body.frame().await {
            Some(Ok(f)) => f,
            // Ours is complete; only the extra slices are lost.
            Some(Err(_)) if got == want => break,
            Some(Err(BodyError::Stalled(idle))) => {
                // Stalled mid-body: fail the fill (every waiter sees it), close the connection.
                state.upstreams.record_failure(upstream);
                return Err(Error::UpstreamTimeout(format!(
                    "{key}: upstream sent nothing for {idle:?} after {got} bytes"
                )));
            }
            Some(Err(e)) => {
                state.upstreams.record_failure(upstream);
                return Err(Error::UpstreamUnavailable {
                    path: key.to_string(),
                    detail: format!("body failed after {got} bytes: {e}"),
                });
            }
            None => {
                if let Some(p) = passed.take() {
                    p.finish();
                }
                break;
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        if let Some(p) = passed.as_mut() {
            p.push(&data);
        }
        let (lo, hi) = (seen, seen + data.len() as u64);
        seen = hi;
        let from = body_offset + got;
        if hi <= from || got == want {
            continue;
        }
        let start = (from.max(lo) - lo) as usize;
        let end = ((body_offset + want).min(hi) - lo) as usize;
        if start < end {
            let piece = data.slice(start..end);
            got += piece.len() as u64;
            fill.push(piece);
        }
    }
    // Counted once per fill, not per chunk: the label is a string.
    metrics::counter!("edge_upstream_bytes_total", "upstream" => state.upstreams.name(upstream).to_owned())
        .increment(got);
    if got != want {
        state.upstreams.record_failure(upstream);
        return Err(Error::UpstreamUnavailable {
            path: key.to_string(),
            detail: format!("body ended after {got} of {want} bytes"),
        });
    }
    if info.transient {
        return Ok(());
    }
    if let Some(chunks) = fill.completed_bytes_now() {
        let data = state.cache.own(&chunks);
        state.cache.put_slice(SliceKey { object: key.clone(), generation: info.generation, index }, 0, data);
    }
    Ok(())
}

/// The slices of a whole body passing through a slice fill, stored as they complete
/// (all but the fill's own, which it stores itself).
struct Passed<'a> {
    state: &'a State,
    key: &'a Arc<str>,
    generation: u64,
    own: u64,
    /// Bytes of the current slice so far, and the body offset they start at.
    buf: Vec<u8>,
    start: u64,
}

impl<'a> Passed<'a> {
    fn new(state: &'a State, key: &'a Arc<str>, generation: u64, own: u64) -> Self {
        Passed { state, key, generation, own, buf: Vec::new(), start: 0 }
    }

    fn push(&mut self, mut data: &[u8]) {
        let size = self.state.cache.slice_size as usize;
        while !data.is_empty() {
            let take = (size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == size {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        let index = self.start / self.state.cache.slice_size;
        let bytes = std::mem::take(&mut self.buf);
        self.start += bytes.len() as u64;
        if index != self.own && !bytes.is_empty() {
            let slice = SliceKey { object: self.key.clone(), generation: self.generation, index };
            self.state.cache.put_slice(slice, 0, bytes.into());
        }
    }

    /// The body ended: its last (short) slice is complete too.
    fn finish(mut self) {
        self.flush();
    }
}

/// A 200 without `Content-Length` (the upstream ignored Range and streams a length it
/// does not announce): read whole, every slice stored as it passes, and the object
/// recorded with the length it turned out to have, never as empty. Waiters get the head
/// and their slice once the body has ended.
#[allow(clippy::too_many_arguments)]
async fn fill_unknown_length(
    state: &State,
    fill: &Arc<Fill>,
    key: &Arc<str>,
    index: u64,
    known: Option<Arc<ObjectInfo>>,
    fetched: crate::upstream::Fetched,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<(), Error> {
    let size = state.cache.slice_size;
    // Another version than the one being read: nothing of it may land under this one's
    // generation (its length is only known at the end; its validator is known now).
    if let Some(k) = known.as_ref().filter(|k| k.validators.etag != crate::cache::validators_of(&fetched.headers).etag)
    {
        return Err(changed(state, k, key));
    }
    let transient =
        known.as_ref().map_or_else(|| !state.storable_fill(key, StatusCode::OK, &fetched.headers), |k| k.transient);
    let generation = known.as_ref().map_or_else(|| state.cache.new_generation(), |k| k.generation);
    let mut body = fetched.body;
    let mut total = 0u64;
    let mut ours: Vec<u8> = Vec::new();
    let mut passed = Passed::new(state, key, generation, if transient { u64::MAX } else { index });
    loop {
        let frame = match body.frame().await {
            Some(Ok(f)) => f,
            Some(Err(BodyError::Stalled(idle))) => {
                state.upstreams.record_failure(fetched.upstream);
                return Err(Error::UpstreamTimeout(format!("{key}: upstream sent nothing for {idle:?}")));
            }
            Some(Err(e)) => {
                state.upstreams.record_failure(fetched.upstream);
                return Err(Error::UpstreamUnavailable { path: key.to_string(), detail: format!("body failed: {e}") });
            }
            None => break,
        };
        let Ok(data) = frame.into_data() else { continue };
        // Our slice's bytes are kept for the waiters; the others only pass into the cache.
        let (lo, hi) = (total, total + data.len() as u64);
        let (a, b) = (lo.max(index * size), hi.min((index + 1) * size));
        if a < b {
            ours.extend_from_slice(&data[(a - lo) as usize..(b - lo) as usize]);
        }
        total = hi;
        if !transient {
            passed.push(&data);
        }
    }
    if !transient {
        passed.finish();
    }
    let info = match known {
        Some(k) if k.len != total => return Err(changed(state, &k, key)),
        Some(k) => k,
        None => {
            let mut info = state.describe(
                key.clone(),
                key.clone(),
                StatusCode::OK,
                fetched.headers,
                total,
                Vec::new(),
                request_time,
                response_time,
            );
            info.generation = generation;
            info.transient = transient;
            let info = if transient { Arc::new(info) } else { state.cache.store(info) };
            announce(state, fill, key, &info);
            info
        }
    };
    if !ours.is_empty() {
        let ours = Bytes::from(ours);
        if !info.transient {
            state.cache.put_slice(
                SliceKey { object: key.clone(), generation: info.generation, index },
                0,
                ours.clone(),
            );
        }
        fill.push(ours);
    }
    Ok(())
}

/// The object changed upstream under a fill of version `k`: forget that version's slices
/// (unless a newer one replaced it already) so the next request starts over; this fill
/// fails visibly.
fn changed(state: &State, k: &ObjectInfo, key: &Arc<str>) -> Error {
    state.cache.drop_version(k);
    metrics::counter!("edge_object_changed_total").increment(1);
    Error::Changed(key.to_string())
}

/// Tell the fill's waiters what the object is. A stored version's fill of slice 0 is also
/// registered as that version's slice-0 fill, so readers of the version join it instead
/// of fetching slice 0 again.
fn announce(state: &State, fill: &Arc<Fill>, key: &Arc<str>, info: &Arc<ObjectInfo>) {
    if !info.transient && state.coalescer.alias(key, info.generation, 0, fill) {
        fill.set_alias(info.generation);
    }
    fill.set_head(Ok(info.clone()));
}

/// An upstream answer that is not the object (a 404, a redirect): stored like any
/// response when its rules allow (negative caching), and in any case handed to every
/// request waiting on the fill as it came.
fn store_answer(
    state: &State,
    fill: &Arc<Fill>,
    key: &Arc<str>,
    answer: Arc<crate::error::Passthrough>,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<(), Error> {
    if !state.storable_fill(key, answer.status, &answer.headers) {
        return Err(Error::Upstream(answer));
    }
    let mut info = state.describe(
        key.clone(),
        key.clone(),
        answer.status,
        answer.headers.clone(),
        answer.body.len() as u64,
        Vec::new(),
        request_time,
        response_time,
    );
    info.generation = state.cache.generation_for(&info);
    let size = state.cache.slice_size as usize;
    for (index, start) in (0..answer.body.len()).step_by(size).enumerate() {
        let piece = answer.body.slice(start..(start + size).min(answer.body.len()));
        let slice = SliceKey { object: key.clone(), generation: info.generation, index: index as u64 };
        state.cache.put_slice(slice, 0, piece);
    }
    fill.set_head(Ok(state.cache.store(info)));
    Ok(())
}

/// Largest upstream answer body kept to pass on to every waiter of a failed fill.
const PASSTHROUGH_MAX: usize = 256 << 10;

/// An answer that is not the object (a redirect, 404, 5xx): read whole (bounded) so every
/// request waiting on the fill gets it as the upstream sent it.
pub(crate) async fn passthrough(key: &str, fetched: crate::upstream::Fetched) -> Error {
    let mut body = fetched.body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                    if out.len() > PASSTHROUGH_MAX {
                        return Error::UpstreamUnavailable {
                            path: key.to_owned(),
                            detail: format!(
                                "upstream answered {} with a body over {PASSTHROUGH_MAX} bytes",
                                fetched.status
                            ),
                        };
                    }
                }
            }
            Err(e) => {
                return Error::UpstreamUnavailable { path: key.to_owned(), detail: format!("answer body failed: {e}") }
            }
        }
    }
    let mut headers = fetched.headers;
    headers.remove(header::CONTENT_LENGTH);
    Error::Upstream(Arc::new(crate::error::Passthrough {
        path: key.to_owned(),
        status: fetched.status,
        headers,
        body: out.into(),
    }))
}

/// Edge paths are arbitrary; one that is not a valid object key gets a neutral name.
pub(crate) fn store_key(key: &str) -> segue_core::ObjectKey {
    let path = key.trim_start_matches('/').split('?').next().unwrap_or("");
    segue_core::ObjectKey::new(path)
        .or_else(|_| segue_core::ObjectKey::new("edge-object"))
        .unwrap_or_else(|_| segue_core::ObjectKey::manifest(&segue_core::ContentId::from_bytes([0; 32])))
}

/// `Content-Range: bytes START-END/TOTAL` -> (START, TOTAL).
pub(crate) fn content_range(h: &HeaderMap) -> Option<(u64, u64)> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `Content-Range: bytes */LEN` of a 416.
fn unsatisfied_len(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_RANGE)?.to_str().ok()?.strip_prefix("bytes */")?.parse().ok()
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
