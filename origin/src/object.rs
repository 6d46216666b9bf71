//! Serving one object: validators, conditional requests, ranges (single and multipart),
//! HEAD, and bodies streamed from the store chunk by chunk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use segue_core::conditional::{Conditions, Precondition};
use segue_core::range::{self, ByteRange, Multipart, RangeOutcome};
use segue_core::server::{empty, Body, BoxError};
use segue_core::store::{ByteStream, ObjectReader};
use segue_core::ObjectPath;

use crate::error::Error;
use crate::State;

pub async fn serve(state: &State, req: &Request<hyper::body::Incoming>, path: ObjectPath) -> Result<Response<Body>, Error> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(Error::MethodNotAllowed(method.to_string()));
    }
    if state.token_required {
        let country = req.headers().get(&state.country_header).and_then(|v| v.to_str().ok());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        state.verifier.verify(method.as_str(), req.uri().path(), req.uri().query(), now, country)?;
    }

    let reader: Arc<dyn ObjectReader> = Arc::from(state.store.open(&path.key()).await.map_err(|e| match e {
        segue_core::Error::NotFound(_) => Error::NotFound(path.http_path()),
        e => Error::Store(e),
    })?);
    let meta = reader.meta().clone();
    let v = &meta.validators;
    let h = req.headers();

    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, state.cache_control.clone());
    insert(&mut headers, header::ETAG, &v.etag_header());
    insert(&mut headers, header::LAST_MODIFIED, &v.last_modified_header());
    if state.surrogate_keys {
        let cid = path.content_id();
        let tags = match path.tier() {
            Some(t) => format!("{cid} {cid}/{t}"),
            None => cid.to_string(),
        };
        insert(&mut headers, "surrogate-key", &tags);
    }

    let conditions = Conditions {
        if_match: text(h, header::IF_MATCH),
        if_none_match: text(h, header::IF_NONE_MATCH),
        if_modified_since: text(h, header::IF_MODIFIED_SINCE),
        if_unmodified_since: text(h, header::IF_UNMODIFIED_SINCE),
    };
    match v.evaluate(&conditions, true) {
        Precondition::Proceed => {}
        Precondition::NotModified => return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty())),
        Precondition::Failed => {
            let mut r = segue_core::server::json_error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match or If-Unmodified-Since does not hold",
            );
            r.headers_mut().extend(headers);
            return Ok(r);
        }
    }

    let content_type = path.content_type();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let len = meta.len;
    let is_head = method == Method::HEAD;
    // Range applies to GET only (RFC 9110 §14.2); If-Range with a stale validator means "all of it".
    let outcome = match text(h, header::RANGE) {
        Some(r) if !is_head => match text(h, header::IF_RANGE) {
            Some(ir) if !v.if_range_allows(ir) => RangeOutcome::Full,
            _ => range::resolve(r, len),
        },
        _ => RangeOutcome::Full,
    };

    let resp = match outcome {
        RangeOutcome::Full => {
            insert(&mut headers, header::CONTENT_LENGTH, &len.to_string());
            let body = if is_head { empty() } else { stream_body(reader.read(0..len).await?) };
            respond(StatusCode::OK, headers, body)
        }
        RangeOutcome::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            insert(&mut headers, header::CONTENT_RANGE, &r.content_range(len));
            insert(&mut headers, header::CONTENT_LENGTH, &r.len().to_string());
            respond(StatusCode::PARTIAL_CONTENT, headers, stream_body(reader.read(r.to_std()).await?))
        }
        RangeOutcome::Partial(ranges) => {
            let mp = Multipart::new(boundary_seed(), content_type, len);
            insert(&mut headers, header::CONTENT_TYPE, &mp.content_type_header());
            insert(&mut headers, header::CONTENT_LENGTH, &mp.body_len(&ranges).to_string());
            respond(StatusCode::PARTIAL_CONTENT, headers, stream_body(multipart_stream(reader, mp, ranges)))
        }
        RangeOutcome::Unsatisfiable => {
            insert(&mut headers, header::CONTENT_RANGE, &range::unsatisfied_content_range(len));
            let mut r = segue_core::server::json_error(
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

fn stream_body(s: ByteStream) -> Body {
    let counted = s.inspect_ok(|b| metrics::counter!("origin_body_bytes_total").increment(b.len() as u64));
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
