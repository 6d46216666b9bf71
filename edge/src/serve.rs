//! The request path for GET and HEAD, in order: policy for the path prefix, cache key,
//! lookup (the variant `Vary` selects), then a fresh hit, a revalidation, or a fill, and
//! the response. Sliced prefixes (audio) fill aligned slices shared by every waiter; the
//! others forward the client's request and store the answer as it streams through.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use segue_core::range::{self, RangeOutcome};
use segue_core::server::{self, Body, BoxError, ReqBody};

use crate::cache::{self, ObjectInfo, SliceKey};
use crate::coalesce::{Joined, UNKNOWN};
use crate::error::Error;
use crate::http_cache::cache_control::Directives;
use crate::http_cache::freshness::{self, Freshness, Reuse};
use crate::http_cache::validate;
use crate::http_cache::vary::{self, Vary};
use crate::policy::PathPolicy;
use crate::upstream::BodyError;
use crate::{fetch, reader, State};

/// Largest body of a non-200 answer (a redirect, an error page) that is stored.
const SMALL_BODY_MAX: u64 = 1 << 20;

impl State {
    /// Describe a response about to be stored: its stored fields, validators, freshness.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn describe(
        &self,
        primary: Arc<str>,
        key: Arc<str>,
        status: StatusCode,
        mut headers: HeaderMap,
        len: u64,
        vary: vary::Selecting,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> ObjectInfo {
        let policy = self.policy_for(&primary);
        let (dirs, targeted) = freshness::response_directives(&headers, &self.targeted);
        validate::strip_unstored(&mut headers, Some(&dirs));
        headers.remove(header::CONTENT_LENGTH);
        if status == StatusCode::PARTIAL_CONTENT {
            headers.remove(header::CONTENT_RANGE);
        }
        let status = if status == StatusCode::PARTIAL_CONTENT { StatusCode::OK } else { status };
        let freshness = Freshness::new(
            status,
            &headers,
            &dirs,
            targeted,
            policy.default_ttl_for(status),
            policy.stale_on_error_secs,
            request_time,
            response_time,
        );
        ObjectInfo {
            store_key: fetch::store_key(&primary),
            validators: cache::validators_of(&headers),
            primary,
            key,
            status,
            headers,
            len,
            vary,
            freshness,
            generation: 0,
            stale: false,
            present: None,
            transient: false,
        }
    }

    /// Whether a sliced fill's answer may be stored: the fill is shared, so no client's
    /// request fields take part (audio paths are not credentialed).
    pub(crate) fn storable_fill(&self, key: &str, status: StatusCode, headers: &HeaderMap) -> bool {
        let (dirs, targeted) = freshness::response_directives(headers, &self.targeted);
        let status = if status == StatusCode::PARTIAL_CONTENT { StatusCode::OK } else { status };
        let ttl = self.policy_for(key).default_ttl_for(status);
        freshness::storable(&Method::GET, &HeaderMap::new(), status, headers, &dirs, targeted, ttl).is_ok()
    }

    /// A stored response renewed by a 304 (RFC 9111 §4.3.4): fields merged, freshness
    /// recomputed, slices kept.
    pub(crate) fn renew(
        &self,
        stored: &ObjectInfo,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Arc<ObjectInfo> {
        let merged = validate::merge_304(&stored.headers, not_modified);
        let mut info = self.describe(
            stored.primary.clone(),
            stored.key.clone(),
            stored.status,
            merged,
            stored.len,
            stored.vary.clone(),
            request_time,
            response_time,
        );
        info.generation = stored.generation;
        info.present = stored.present.clone();
        self.cache.store(info)
    }

    pub(crate) fn policy_for(&self, path: &str) -> Arc<PathPolicy> {
        let rules = self.policies.read().unwrap_or_else(|p| p.into_inner()).clone();
        crate::policy::for_path(&rules, path)
    }
}

/// GET or HEAD of anything under a cached prefix.
pub(crate) async fn get(
    state: &Arc<State>,
    req: &Request<ReqBody>,
    policy: &PathPolicy,
) -> Result<Response<Body>, Error> {
    let primary: Arc<str> = policy.cache_key(req.uri().path(), req.uri().query()).into();
    let rdirs = freshness::request_directives(req.headers());
    let resp = if policy.slice {
        sliced(state, req, &primary, &rdirs).await?
    } else {
        whole(state, req, &primary, &rdirs).await?
    };
    Ok(finish_headers(state, resp))
}

/// Remove the targeted fields operators asked to keep from clients (RFC 9213 §2.1).
fn finish_headers(state: &State, mut resp: Response<Body>) -> Response<Body> {
    for name in &state.strip_targeted {
        resp.headers_mut().remove(name);
    }
    resp
}

fn count(state: &State, x_cache: &str) {
    let name = match x_cache {
        "HIT-MEM" => "hit_mem",
        "HIT-SSD" => "hit_ssd",
        "MISS" => "miss",
        "STALE" => "stale",
        "REVALIDATED" => "revalidated",
        "PASS" => "pass",
        _ => "coalesced",
    };
    metrics::counter!("edge_cache_results_total", "result" => name).increment(1);
    state.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if x_cache.starts_with("HIT") || x_cache == "STALE" || x_cache == "REVALIDATED" {
        state.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The sliced path: one upstream fetch per slice however many clients wait.
async fn sliced(
    state: &Arc<State>,
    req: &Request<ReqBody>,
    primary: &Arc<str>,
    rdirs: &Directives,
) -> Result<Response<Body>, Error> {
    let now = SystemTime::now();
    let stored = state.cache.load_object(primary).await;
    let reuse = stored.as_ref().map(|i| i.reuse(rdirs, now));
    let (info, mut x_cache, first) = match (stored, reuse) {
        (Some(info), Some(Reuse::Fresh)) => (info, "HIT-MEM", None),
        (Some(info), Some(Reuse::StaleWhileRevalidate)) => {
            revalidate_in_background(state, info.clone());
            (info, "STALE", None)
        }
        (stored, _) if rdirs.only_if_cached => {
            let _ = stored;
            return Err(Error::NotCached(primary.to_string()));
        }
        (stored, _) => discover(state, primary, stored).await?,
    };
    if x_cache == "HIT-MEM" && req.method() == Method::GET {
        x_cache = classify(state, &info, req.headers());
    }
    let first = first.filter(|_| info.transient);
    serve_from(state, req, info, x_cache, first).await
}

/// Revalidate `info` once in the background (stale-while-revalidate): concurrent requests
/// for the same object start no second revalidation.
fn revalidate_in_background(state: &Arc<State>, info: Arc<ObjectInfo>) {
    let fresh = || false;
    if let Joined::Started(f) = state.coalescer.join(&info.key, UNKNOWN, 0, state.writer_max_age, fresh) {
        metrics::counter!("edge_background_revalidations_total").increment(1);
        fetch::spawn_fill(state, &f, info.key.clone(), UNKNOWN, 0, None, Some(info));
    }
}

/// The object's identity: learned from the fill of its first slice (coalesced), which
/// revalidates `stale` when there is one. When no upstream can answer, a stale copy is
/// served if its rules allow (stale-if-error) or an operator soft-purged it, but never
/// one the upstream said is gone.
pub(crate) async fn discover(
    state: &Arc<State>,
    key: &Arc<str>,
    stale: Option<Arc<ObjectInfo>>,
) -> Result<(Arc<ObjectInfo>, &'static str, Option<Arc<crate::coalesce::Fill>>), Error> {
    let usable = |i: &ObjectInfo| i.is_fresh(SystemTime::now());
    let fresh = || state.cache.object(key).is_some_and(|i| usable(&i));
    let (fill, how) = match state.coalescer.join(key, UNKNOWN, 0, state.writer_max_age, fresh) {
        Joined::Started(f) => {
            fetch::spawn_fill(state, &f, key.clone(), UNKNOWN, 0, None, stale.clone());
            (Some(f), if stale.is_some() { "REVALIDATED" } else { "MISS" })
        }
        Joined::Joined(f) => (Some(f), "COALESCED"),
        Joined::Ready => (None, "HIT-MEM"),
    };
    let found = match &fill {
        Some(fill) => fill.head(state.reader_timeout, key).await,
        None => Err(Error::Changed(key.to_string())),
    };
    match found {
        Ok(info) => Ok((info, how, fill)),
        // Discovery finished elsewhere, or this request joined a fill that does not
        // report the head (a later slice's): the info is cached by now.
        Err(e) => match (state.cache.object(key), stale) {
            (Some(info), _) if usable(&info) => Ok((info, how, None)),
            (_, Some(stale))
                if e.is_upstream_failure() && (stale.stale || stale.freshness.usable_on_error(SystemTime::now())) =>
            {
                tracing::warn!(object = %key, error = %e, "revalidation failed; serving the stale copy");
                metrics::counter!("edge_stale_served_total").increment(1);
                Ok((stale, "STALE", None))
            }
            (_, Some(_)) if gone(&e) => {
                // The upstream says the object is gone: the stale copy must not outlive it
                // (nor stand in for a later failure).
                tracing::info!(object = %key, "gone upstream; stored copy dropped");
                state.cache.drop_object(key);
                Err(e)
            }
            _ => Err(e),
        },
    }
}

/// An upstream answer saying the object no longer exists.
fn gone(e: &Error) -> bool {
    matches!(e, Error::Upstream(p) if matches!(p.status, StatusCode::NOT_FOUND | StatusCode::GONE))
}

/// HIT-MEM if every slice the response needs is in memory, HIT-SSD if all are cached and
/// some only on the SSD, COALESCED if the missing ones are all being fetched already, MISS
/// if this request will start a fetch.
fn classify(state: &State, info: &Arc<ObjectInfo>, req: &HeaderMap) -> &'static str {
    let size = state.cache.slice_size;
    if info.len == 0 {
        return "HIT-MEM";
    }
    let ranges = match requested(req, info.len) {
        Some(r) => r,
        None => return "HIT-MEM",
    };
    let mut result = "HIT-MEM";
    for (first, end) in ranges {
        for index in first / size..=(end - 1) / size {
            let key = SliceKey { object: info.key.clone(), generation: info.generation, index };
            match state.cache.tier_of(&key) {
                Some(cache::Tier::Mem) => continue,
                Some(cache::Tier::Ssd) => {
                    if result == "HIT-MEM" {
                        result = "HIT-SSD";
                    }
                    continue;
                }
                None => {}
            }
            if state.coalescer.is_inflight(&info.key, info.generation, index) {
                result = "COALESCED";
            } else {
                return "MISS";
            }
        }
    }
    result
}

/// Upstream bytes one request may cause, as a multiple of the bytes it is sent (or two
/// slices, which any single range may need).
const MAX_FILL_RATIO: u64 = 4;

/// Whether a multi-range request would make the edge fetch far more than it sends (64
/// one-byte ranges over 64 uncached slices: ~16 MiB upstream for ~6 KB sent).
fn too_costly(state: &State, info: &ObjectInfo, req: &HeaderMap) -> bool {
    let Some(ranges) = requested(req, info.len).filter(|r| r.len() > 1) else { return false };
    let size = state.cache.slice_size;
    let sent: u64 = ranges.iter().map(|(a, b)| b - a).sum();
    let budget = (MAX_FILL_RATIO * sent).max(2 * size);
    let mut slices: Vec<u64> = ranges.iter().flat_map(|(a, b)| a / size..=(b - 1) / size).collect();
    slices.sort_unstable();
    slices.dedup();
    let mut cost = 0;
    for index in slices {
        let key = SliceKey { object: info.key.clone(), generation: info.generation, index };
        if state.cache.tier_of(&key).is_none() && !state.coalescer.is_inflight(&info.key, info.generation, index) {
            cost += size;
            if cost > budget {
                return true;
            }
        }
    }
    false
}

/// The byte spans `[first, end)` a request for a `len`-byte object needs; `None` when it
/// needs none (an unsatisfiable range).
fn requested(req: &HeaderMap, len: u64) -> Option<Vec<(u64, u64)>> {
    if len == 0 {
        return Some(Vec::new());
    }
    match req.get(header::RANGE).and_then(|v| v.to_str().ok()).map(|r| range::resolve(r, len)) {
        Some(RangeOutcome::Partial(rs)) => Some(rs.iter().map(|r| (r.first, r.last + 1)).collect()),
        Some(RangeOutcome::Unsatisfiable) => None,
        _ => Some(vec![(0, len)]),
    }
}

/// Answer from a stored response: a representation through the shared range and
/// conditional code (`segue_core::respond`), any other status as it was stored.
async fn serve_stored(
    state: &Arc<State>,
    req: &Request<ReqBody>,
    info: Arc<ObjectInfo>,
    x_cache: &'static str,
) -> Result<Response<Body>, Error> {
    serve_from(state, req, info, x_cache, None).await
}

/// [`serve_stored`], reading the first slice from `first` (the fill that discovered a
/// transient object: its bytes are nowhere else).
async fn serve_from(
    state: &Arc<State>,
    req: &Request<ReqBody>,
    info: Arc<ObjectInfo>,
    x_cache: &'static str,
    first: Option<Arc<crate::coalesce::Fill>>,
) -> Result<Response<Body>, Error> {
    count(state, x_cache);
    let mut headers = info.headers.clone();
    headers.insert(header::AGE, HeaderValue::from(info.freshness.age_header(SystemTime::now())));
    headers.append(header::VIA, state.via.clone());
    headers.insert("x-cache", HeaderValue::from_static(x_cache));
    let is_head = req.method() == Method::HEAD;
    let client = req.extensions().get::<reader::Client>().copied();
    let reader =
        Arc::new(reader::EdgeReader::new(state.clone(), info.clone()).with_first_fill(first).with_client(client));
    if info.status != StatusCode::OK {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.len));
        let body = if is_head || info.len == 0 {
            server::empty()
        } else {
            let stream = segue_core::store::ObjectReader::read(reader.as_ref(), 0..info.len)
                .await
                .map_err(|e| Error::UpstreamUnavailable { path: info.key.to_string(), detail: e.to_string() })?;
            stream_body(stream)
        };
        let mut r = Response::new(body);
        *r.status_mut() = info.status;
        *r.headers_mut() = headers;
        return Ok(r);
    }
    headers.remove(header::CONTENT_TYPE);
    let counter = metrics::counter!("edge_body_bytes_total");
    let content_type = info.content_type().to_owned();
    let mut asked = std::borrow::Cow::Borrowed(req.headers());
    if !is_head && too_costly(state, &info, req.headers()) {
        // RFC 9110 §14.2: a server may ignore a Range of many small ranges; the whole
        // representation costs upstream no more than it sends.
        metrics::counter!("edge_ranges_ignored_total").increment(1);
        asked.to_mut().remove(header::RANGE);
    }
    segue_core::respond::object_response(is_head, &asked, reader, &content_type, headers, counter)
        .await
        .map_err(|e| Error::UpstreamUnavailable { path: info.key.to_string(), detail: e.to_string() })
}

fn stream_body(s: segue_core::store::ByteStream) -> Body {
    use futures_util::TryStreamExt;
    let frames = s.map_ok(hyper::body::Frame::data).map_err(|e| -> BoxError { Box::new(e) });
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames))
}

/// The unsliced path: stored responses are served under RFC 9111; a miss or a stale copy
/// forwards the client's request (its `Range` too) with the stored validators.
async fn whole(
    state: &Arc<State>,
    req: &Request<ReqBody>,
    primary: &Arc<str>,
    rdirs: &Directives,
) -> Result<Response<Body>, Error> {
    let now = SystemTime::now();
    // (A response to a request with credentials was only stored if it allowed a shared
    // cache to reuse it, RFC 9111 §3.5: `storable` checked.)
    let stored = state.cache.load_lookup(primary, req.headers()).await;
    if let Some(info) = &stored {
        match info.reuse(rdirs, now) {
            Reuse::Fresh => return answer_stored(state, req, info.clone(), "HIT-MEM").await,
            Reuse::StaleWhileRevalidate => {
                background_whole(state, req, info.clone());
                return answer_stored(state, req, info.clone(), "STALE").await;
            }
            Reuse::Revalidate => {}
        }
    }
    if rdirs.only_if_cached {
        return Err(Error::NotCached(primary.to_string()));
    }
    // Concurrent misses of one URL: the first goes upstream, the others wait for it and
    // are answered from what it stored (a cache lock); when nothing usable was stored
    // (uncacheable, a failure), each goes upstream itself.
    let mut lock = None;
    if req.method() == Method::GET {
        match state.coalescer.join(primary, UNKNOWN, LOCK, state.writer_max_age, || false) {
            Joined::Started(fill) => lock = Some(Lock { state: state.clone(), key: primary.clone(), fill }),
            Joined::Joined(fill) => {
                if fill.finished(state.reader_timeout).await {
                    if let Some(info) = state.cache.lookup(primary, req.headers()) {
                        if info.reuse(rdirs, SystemTime::now()) == Reuse::Fresh {
                            return answer_stored(state, req, info, "COALESCED").await;
                        }
                    }
                }
            }
            Joined::Ready => {}
        }
    }
    forward_and_store(state, req.method(), req.headers(), primary, stored, rdirs, lock).await
}

/// The coalescer slot of an unsliced URL's cache lock (in generation `UNKNOWN`, where
/// discovery uses 0 and background revalidations `u64::MAX`).
const LOCK: u64 = u64::MAX - 1;

/// Held by the request that went upstream for a URL; released (waiters woken) when the
/// answer is stored or known not to be, which is when this is dropped.
struct Lock {
    state: Arc<State>,
    key: Arc<str>,
    fill: Arc<crate::coalesce::Fill>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.fill.finish(Ok(()));
        self.state.coalescer.remove(&self.key, UNKNOWN, LOCK, &self.fill);
    }
}

/// Serve a stored representation, first fetching what a request needs of an object held
/// only in parts (RFC 9111 §3.4: completing a stored response).
async fn answer_stored(
    state: &Arc<State>,
    req: &Request<ReqBody>,
    info: Arc<ObjectInfo>,
    x_cache: &'static str,
) -> Result<Response<Body>, Error> {
    let Some(present) = info.present.clone() else {
        return serve_stored(state, req, info, x_cache).await;
    };
    let if_range_ok = req
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| info.validators.if_range_allows(v));
    let wanted = if if_range_ok { requested(req.headers(), info.len) } else { Some(vec![(0, info.len)]) };
    let wanted = wanted.unwrap_or_default();
    let first = wanted.iter().map(|r| r.0).min().unwrap_or(0);
    let end = wanted.iter().map(|r| r.1).max().unwrap_or(0);
    if wanted.iter().all(|&(a, b)| cache::missing(&present, a, b).is_none()) || req.method() == Method::HEAD {
        return serve_stored(state, req, info, x_cache).await;
    }
    let Some((a, b)) = cache::missing(&present, first, end) else {
        return serve_stored(state, req, info, x_cache).await;
    };
    // Fetch the missing bytes, open-ended when they run to the end.
    let mut headers = upstream_headers(req.headers(), true);
    let spec = if b == info.len { format!("bytes={a}-") } else { format!("bytes={a}-{}", b - 1) };
    if let Ok(v) = HeaderValue::from_str(&spec) {
        headers.insert(header::RANGE, v);
    }
    if let Some(v) = info.validators.etag_header().filter(|_| !info.validators.weak) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(header::IF_RANGE, v);
        }
    }
    let request_time = SystemTime::now();
    let fetched = state.upstreams.fetch(&Method::GET, &info.primary, &headers).await?;
    let response_time = SystemTime::now();
    let same = fetched.status == StatusCode::PARTIAL_CONTENT
        && fetch::content_range(&fetched.headers).is_some_and(|(start, total)| start == a && total == info.len)
        && cache::validators_of(&fetched.headers).etag == info.validators.etag;
    if !same {
        // Something else came back (the whole of a new version, an error): it answers
        // this request as a fresh response would.
        let rdirs = freshness::request_directives(req.headers());
        let answer = respond_fetched(
            state,
            req.method(),
            req.headers(),
            &info.primary,
            None,
            &rdirs,
            fetched,
            request_time,
            response_time,
            None,
        );
        return Box::pin(answer).await;
    }
    let mut body = fetched.body;
    let mut writer = SliceWriter::new(state, &info, a);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e {
            BodyError::Stalled(idle) => {
                Error::UpstreamTimeout(format!("{}: upstream sent nothing for {idle:?}", info.primary))
            }
            e => Error::UpstreamUnavailable { path: info.primary.to_string(), detail: format!("body failed: {e}") },
        })?;
        if let Ok(data) = frame.into_data() {
            writer.push(&data).await;
        }
    }
    let got = writer.finish().await;
    let mut updated = info.as_ref().clone();
    let present = cache::add_range(&present, a, a + got);
    updated.present = (cache::missing(&present, 0, info.len).is_some()).then_some(present);
    let updated = state.cache.store(updated);
    serve_stored(state, req, updated, "MISS").await
}

/// stale-while-revalidate on the unsliced path: one background revalidation per object.
fn background_whole(state: &Arc<State>, req: &Request<ReqBody>, info: Arc<ObjectInfo>) {
    let fresh = || false;
    let Joined::Started(fill) = state.coalescer.join(&info.key, UNKNOWN, u64::MAX, state.writer_max_age, fresh) else {
        return;
    };
    metrics::counter!("edge_background_revalidations_total").increment(1);
    let (state, headers, key) = (state.clone(), req.headers().clone(), info.key.clone());
    tokio::spawn(async move {
        let rdirs = Directives::default();
        let primary = info.primary.clone();
        let result = forward_and_store(&state, &Method::GET, &headers, &primary, Some(info), &rdirs, None).await;
        // Drain the answer so a changed object is stored whole.
        if let Ok(resp) = result {
            let _ = resp.into_body().collect().await;
        }
        fill.finish(Ok(()));
        state.coalescer.remove(&key, UNKNOWN, u64::MAX, &fill);
    });
}

/// Send the request upstream (with the stored validators when revalidating) and answer
/// from what comes back: a 304 renews the stored copy, a failure may fall back to it, and
/// anything else is passed through, stored as it streams when RFC 9111 allows.
async fn forward_and_store(
    state: &Arc<State>,
    method: &Method,
    req: &HeaderMap,
    primary: &Arc<str>,
    stored: Option<Arc<ObjectInfo>>,
    rdirs: &Directives,
    lock: Option<Lock>,
) -> Result<Response<Body>, Error> {
    let mut headers = upstream_headers(req, stored.is_some());
    if let Some(s) = &stored {
        for (name, value) in validate::conditional_headers(&s.headers) {
            headers.insert(name, value);
        }
    }
    let request_time = SystemTime::now();
    let fetched = match state.upstreams.fetch(method, primary, &headers).await {
        Ok(f) => f,
        Err(e) => {
            return match stored {
                Some(s) if e.is_upstream_failure() && (s.stale || s.freshness.usable_on_error(SystemTime::now())) => {
                    tracing::warn!(object = %primary, error = %e, "upstream failed; serving the stale copy");
                    metrics::counter!("edge_stale_served_total").increment(1);
                    let fake = request_for(method, req);
                    serve_stored(state, &fake, s, "STALE").await
                }
                _ => Err(e),
            }
        }
    };
    let response_time = SystemTime::now();
    respond_fetched(state, method, req, primary, stored, rdirs, fetched, request_time, response_time, lock).await
}

/// The client's end-to-end fields for the upstream request, without its own conditionals
/// when the cache sends its validators or a range of its own instead (`ours`).
fn upstream_headers(req: &HeaderMap, ours: bool) -> HeaderMap {
    let mut headers = req.clone();
    crate::upstream::strip_hop_by_hop(&mut headers);
    if ours {
        for h in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            headers.remove(h);
        }
    }
    headers
}

/// A request with `method` and `headers` and an empty body, to answer through
/// [`serve_stored`] from a background or fallback path.
fn request_for(method: &Method, headers: &HeaderMap) -> Request<ReqBody> {
    let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed();
    let mut r = Request::new(body);
    *r.method_mut() = method.clone();
    *r.headers_mut() = headers.clone();
    r
}

#[allow(clippy::too_many_arguments)]
async fn respond_fetched(
    state: &Arc<State>,
    method: &Method,
    req: &HeaderMap,
    primary: &Arc<str>,
    stored: Option<Arc<ObjectInfo>>,
    rdirs: &Directives,
    fetched: crate::upstream::Fetched,
    request_time: SystemTime,
    response_time: SystemTime,
    lock: Option<Lock>,
) -> Result<Response<Body>, Error> {
    let now = SystemTime::now();
    if fetched.status == StatusCode::NOT_MODIFIED {
        if let Some(s) = &stored {
            if validate::selects(&s.headers, &fetched.headers) {
                metrics::counter!("edge_revalidations_total", "result" => "not_modified").increment(1);
                let renewed = state.renew(s, &fetched.headers, request_time, response_time);
                return answer_stored(state, &request_for(method, req), renewed, "REVALIDATED").await;
            }
        }
    }
    if fetched.status.is_server_error() {
        if let Some(s) = stored.clone().filter(|s| s.stale || s.freshness.usable_on_error(now)) {
            tracing::warn!(object = %primary, status = %fetched.status, "upstream error; serving the stale copy");
            metrics::counter!("edge_stale_served_total").increment(1);
            return serve_stored(state, &request_for(method, req), s, "STALE").await;
        }
    }
    let (dirs, targeted) = freshness::response_directives(&fetched.headers, &state.targeted);
    let policy = state.policy_for(primary);
    let vary = Vary::of(&fetched.headers);
    let decision = if rdirs.no_store {
        Err("request no-store")
    } else if vary == Vary::Any {
        Err("vary *")
    } else {
        freshness::storable(
            method,
            req,
            fetched.status,
            &fetched.headers,
            &dirs,
            targeted,
            policy.default_ttl_for(fetched.status),
        )
    };
    // What the body will be stored as: (offset of its first byte, the object's length).
    let shape = match (decision, fetched.status) {
        (Err(_), _) => None,
        (Ok(()), StatusCode::PARTIAL_CONTENT) => {
            fetch::content_range(&fetched.headers).map(|(start, total)| (start, Some(total)))
        }
        (Ok(()), StatusCode::OK) => Some((0, content_length(&fetched.headers))),
        (Ok(()), _) => content_length(&fetched.headers).is_none_or(|l| l <= SMALL_BODY_MAX).then_some((0, None)),
    };
    if fetched.status.is_success() && fetched.status != StatusCode::NOT_MODIFIED {
        metrics::counter!("edge_revalidations_total", "result" => "changed").increment(stored.is_some() as u64);
    }
    let x_cache = if stored.is_some() { "EXPIRED" } else { "MISS" };
    let Some((offset, total)) = shape else {
        if let Err(why) = decision {
            tracing::trace!(object = %primary, why, "not stored");
            let gone = matches!(fetched.status, StatusCode::NOT_FOUND | StatusCode::GONE);
            if (dirs.no_store || gone) && stored.is_some() {
                state.cache.drop_object(primary);
            }
        }
        count(state, "PASS");
        return Ok(pass_through(state, fetched, "PASS"));
    };
    count(state, "MISS");
    let selecting = match &vary {
        Vary::Fields(names) => vary::selecting(names, req),
        _ => Vec::new(),
    };
    let key: Arc<str> = if selecting.is_empty() {
        primary.clone()
    } else {
        format!("{primary}{}", vary::variant_suffix(&selecting)).into()
    };
    let mut info = state.describe(
        primary.clone(),
        key,
        fetched.status,
        fetched.headers.clone(),
        total.unwrap_or(0),
        selecting,
        request_time,
        response_time,
    );
    info.generation = state.cache.generation_for(&info);
    let partial = fetched.status == StatusCode::PARTIAL_CONTENT;
    let mut resp_headers = fetched.headers.clone();
    resp_headers.append(header::VIA, state.via.clone());
    resp_headers.insert("x-cache", HeaderValue::from_static(x_cache));
    let status = fetched.status;
    let body = tee(state.clone(), info, offset, total, partial, fetched.body, lock);
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = resp_headers;
    Ok(r)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// An upstream answer passed on as it came (not stored).
fn pass_through(state: &State, fetched: crate::upstream::Fetched, x_cache: &'static str) -> Response<Body> {
    let mut headers = fetched.headers;
    headers.append(header::VIA, state.via.clone());
    headers.insert("x-cache", HeaderValue::from_static(x_cache));
    let body = fetched.body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = fetched.status;
    *r.headers_mut() = headers;
    r
}

/// Stream an upstream body to the client while storing it: slices are written as they
/// fill, and the object is recorded once the body is complete. The client leaving does
/// not stop the fetch; a body cut short is never recorded.
fn tee(
    state: Arc<State>,
    mut info: ObjectInfo,
    offset: u64,
    total: Option<u64>,
    partial: bool,
    mut body: crate::upstream::TimedBody,
    lock: Option<Lock>,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(16);
    tokio::spawn(async move {
        let mut writer = SliceWriter::new(&state, &info, offset);
        let mut client = Some(tx);
        let mut failed = false;
        // The last chunk is held back until the object is recorded, so a client that has
        // the whole body finds it in the cache on its next request.
        let mut held: Option<Bytes> = None;
        // A stalled upstream fails the body like any other error: the client's response
        // is cut, never ended cleanly.
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    let Ok(data) = f.into_data() else { continue };
                    writer.push(&data).await;
                    if let (Some(tx), Some(prev)) = (&client, held.replace(data)) {
                        if tx.send(Ok(prev)).await.is_err() {
                            client = None;
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    if let Some(tx) = client.take() {
                        if let Some(prev) = held.take() {
                            let _ = tx.send(Ok(prev)).await;
                        }
                        let _ = tx.send(Err(Box::new(e))).await;
                    }
                    break;
                }
            }
        }
        let got = writer.finish().await;
        let complete = match (partial, total) {
            (true, Some(t)) => offset + got <= t,
            (false, Some(t)) => got == t,
            (false, None) => true,
            (true, None) => false,
        };
        if failed || !complete {
            tracing::debug!(object = %info.key, got, "body incomplete; not stored");
            if let (Some(tx), Some(last)) = (client, held) {
                let _ = tx.send(Ok(last)).await;
            }
            return;
        }
        let last = held.take();
        if partial {
            let t = total.unwrap_or(0);
            info.len = t;
            let present = vec![(offset, offset + got)];
            info.present = (cache::missing(&present, 0, t).is_some()).then_some(present);
        } else {
            info.len = got;
        }
        state.cache.store(info);
        drop(lock);
        if let (Some(tx), Some(last)) = (client, last) {
            let _ = tx.send(Ok(last)).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    use futures_util::TryStreamExt;
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(stream.map_ok(hyper::body::Frame::data)))
}

/// Writes a run of an object's bytes into its slices as they arrive; a slice that already
/// holds bytes just before the run is extended, so parts join up.
struct SliceWriter<'a> {
    state: &'a State,
    key: Arc<str>,
    generation: u64,
    /// Absolute offset of the next byte.
    pos: u64,
    /// Bytes of the current slice not yet stored, starting at `buf_start` (absolute).
    buf: Vec<u8>,
    buf_start: u64,
    written: u64,
}

impl<'a> SliceWriter<'a> {
    fn new(state: &'a State, info: &ObjectInfo, offset: u64) -> Self {
        SliceWriter {
            state,
            key: info.key.clone(),
            generation: info.generation,
            pos: offset,
            buf: Vec::new(),
            buf_start: offset,
            written: 0,
        }
    }

    async fn push(&mut self, mut data: &[u8]) {
        let size = self.state.cache.slice_size;
        while !data.is_empty() {
            let slice_end = (self.pos / size + 1) * size;
            let take = ((slice_end - self.pos) as usize).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            self.written += take as u64;
            data = &data[take..];
            if self.pos == slice_end {
                self.flush().await;
            }
        }
    }

    async fn flush(&mut self) {
        if self.buf.is_empty() {
            self.buf_start = self.pos;
            return;
        }
        let size = self.state.cache.slice_size;
        let index = self.buf_start / size;
        let mut start = self.buf_start - index * size;
        let key = SliceKey { object: self.key.clone(), generation: self.generation, index };
        let mut data = std::mem::take(&mut self.buf);
        // Join a run already held in this slice that ends where this one starts (or
        // overlaps it): a part completing an earlier part.
        if let Some((old, _)) = self.state.cache.slice(&key).await {
            let old_end = old.start + old.data.len() as u64;
            if old.start < start && old_end >= start {
                let mut joined = old.data[..(start - old.start) as usize].to_vec();
                joined.extend_from_slice(&data);
                let new_end = start + data.len() as u64;
                if old_end > new_end {
                    joined.extend_from_slice(&old.data[(new_end - old.start) as usize..]);
                }
                data = joined;
                start = old.start;
            } else if start <= old.start
                && start + data.len() as u64 >= old.start
                && old_end > start + data.len() as u64
            {
                data.extend_from_slice(&old.data[(start + data.len() as u64 - old.start) as usize..]);
            }
        }
        self.state.cache.put_slice(key, start, data.into());
        self.buf_start = self.pos;
    }

    async fn finish(mut self) -> u64 {
        self.flush().await;
        self.written
    }
}
