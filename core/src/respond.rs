//! The response to GET or HEAD of one object version, for every hop that serves objects
//! (origin from its store, edge from its slice cache): validators, conditional requests
//! (304/412), ranges (single, multipart, If-Range, 416) and a body streamed from the
//! reader. One implementation, so every hop answers the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::conditional::{Conditions, Precondition};
use crate::error::Error;
use crate::range::{self, ByteRange, Multipart, RangeOutcome};
use crate::server::{empty, json_error, Body, BoxError};
use crate::store::{ByteStream, ObjectReader};

/// Answer a GET (or HEAD when `is_head`) for the object `reader` has open. `headers` are
/// the caller's representation headers (Cache-Control, Surrogate-Key, X-Cache, ...);
/// `Accept-Ranges`, `ETag`, `Last-Modified`, `Content-Type` and the framing headers are
/// added here. `body_bytes` counts body bytes as they are sent.
pub async fn object_response(
    is_head: bool,
    req: &HeaderMap,
    reader: Arc<dyn ObjectReader>,
    content_type: &str,
    mut headers: HeaderMap,
    body_bytes: metrics::Counter,
) -> Result<Response<Body>, Error> {
    let meta = reader.meta().clone();
    let v = &meta.validators;

    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(etag) = v.etag_header() {
        insert(&mut headers, header::ETAG, &etag);
    }
    if let Some(lm) = v.last_modified_header() {
        insert(&mut headers, header::LAST_MODIFIED, &lm);
    }

    let conditions = Conditions {
        if_match: text(req, header::IF_MATCH),
        if_none_match: text(req, header::IF_NONE_MATCH),
        if_modified_since: text(req, header::IF_MODIFIED_SINCE),
        if_unmodified_since: text(req, header::IF_UNMODIFIED_SINCE),
    };
    match v.evaluate(&conditions, true) {
        Precondition::Proceed => {}
        Precondition::NotModified => return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty())),
        Precondition::Failed => {
            let mut r = json_error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match or If-Unmodified-Since does not hold",
            );
            r.headers_mut().extend(headers);
            return Ok(r);
        }
    }

    insert(&mut headers, header::CONTENT_TYPE, content_type);
    let len = meta.len;
    // Range applies to GET only (RFC 9110 §14.2); If-Range with a stale validator means "all of it".
    let outcome = match text(req, header::RANGE) {
        Some(r) if !is_head => match text(req, header::IF_RANGE) {
            Some(ir) if !v.if_range_allows(ir) => RangeOutcome::Full,
            _ => range::resolve(r, len),
        },
        _ => RangeOutcome::Full,
    };

    let resp = match outcome {
        RangeOutcome::Full => {
            insert(&mut headers, header::CONTENT_LENGTH, &len.to_string());
            let body = if is_head { empty() } else { stream_body(reader.read(0..len).await?, body_bytes) };
            respond(StatusCode::OK, headers, body)
        }
        RangeOutcome::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            insert(&mut headers, header::CONTENT_RANGE, &r.content_range(len));
            insert(&mut headers, header::CONTENT_LENGTH, &r.len().to_string());
            respond(StatusCode::PARTIAL_CONTENT, headers, stream_body(reader.read(r.to_std()).await?, body_bytes))
        }
        RangeOutcome::Partial(ranges) => {
            let mp = Multipart::new(boundary_seed(), content_type, len);
            insert(&mut headers, header::CONTENT_TYPE, &mp.content_type_header());
            insert(&mut headers, header::CONTENT_LENGTH, &mp.body_len(&ranges).to_string());
            respond(StatusCode::PARTIAL_CONTENT, headers, stream_body(multipart_stream(reader, mp, ranges), body_bytes))
        }
        RangeOutcome::Unsatisfiable => {
            insert(&mut headers, header::CONTENT_RANGE, &range::unsatisfied_content_range(len));
            let mut r = json_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                &format!("no requested range starts inside the {len}-byte object"),
            );
            headers.remove(header::CONTENT_TYPE);
            r.headers_mut().extend(headers);
            r
        }
    };
    Ok(resp)
}

/// Parts are read lazily, one after the other, from the one opened version.
fn multipart_stream(reader: Arc<dyn ObjectReader>, mp: Multipart, ranges: Vec<ByteRange>) -> ByteStream {
    let trailer = Bytes::from(mp.trailer());
    let parts = ranges.into_iter().map(move |r| {
        let head = Bytes::from(mp.part_header(&r));
        let reader = reader.clone();
        let body = stream::once(async move { reader.read(r.to_std()).await }).try_flatten();
        stream::once(async move { Ok(head) }).chain(body)
    });
    Box::pin(stream::iter(parts).flatten().chain(stream::once(async move { Ok(trailer) })))
}

fn stream_body(s: ByteStream, body_bytes: metrics::Counter) -> Body {
    let counted = s.inspect_ok(move |b| body_bytes.increment(b.len() as u64));
    // An Err item makes hyper abort the response, so a client never mistakes a truncated
    // body for a complete one.
    BodyExt::boxed_unsync(StreamBody::new(counted.map_ok(Frame::data).map_err(|e| -> BoxError { Box::new(e) })))
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn text(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn insert<K: header::IntoHeaderName>(h: &mut HeaderMap, name: K, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn boundary_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}
