//! What the browser-facing pages of the roles share: static files compiled into the
//! binary (strong ETags, `no-cache` so a new binary's files are used at once, a strict
//! Content-Security-Policy) and server-sent event streams.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::server::{full, Body, BoxError};

/// One page file: the path it answers, its content type, its bytes.
pub struct File {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The server-sent events reader both pages import (`/web/events.js`).
pub const EVENTS_JS: File = File {
    path: "/web/events.js",
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!("../web/events.js"),
};

/// The file of `files` at `path` (`/index.html` is `/`), with `csp`; `304` when the
/// client's copy is current.
pub fn serve(files: &[File], path: &str, request: &HeaderMap, csp: &'static str) -> Option<Response<Body>> {
    let path = if path == "/index.html" { "/" } else { path };
    let f = files.iter().find(|f| f.path == path)?;
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(f.bytes)[..12]));
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if current {
        let mut r = Response::new(full(Vec::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(full(f.bytes))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(f.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Some(resp)
}

/// A `text/event-stream` response sending what arrives on `rx` until the sender is
/// dropped; the sender sees the client leave as a failed send.
pub fn event_stream(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer (nginx) pass events at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// One event: `event: NAME` and its data (one line of JSON).
pub fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A comment line that keeps idle proxies from closing the stream.
pub const KEEP_ALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &[File] = &[File { path: "/", content_type: "text/html", bytes: b"<!doctype html>" }];

    #[test]
    fn files_have_validators_and_a_policy() {
        let r = serve(FILES, "/index.html", &HeaderMap::new(), "default-src 'self'").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], "default-src 'self'");
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve(FILES, "/", &h, "x").unwrap().status(), StatusCode::NOT_MODIFIED);
        assert!(serve(FILES, "/nope", &HeaderMap::new(), "x").is_none());
    }
}
