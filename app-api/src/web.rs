//! The listener web app (`app-api/web/`): plain HTML, CSS and ES modules compiled into
//! the binary, served at `/` and `/web/*` without authentication (they hold no data; the
//! app signs in with an API key and calls `/v1` like any client).

use std::sync::OnceLock;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use segue_core::server::Body;
use sha2::{Digest, Sha256};

/// Path, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    ("/web/app.js", "text/javascript; charset=utf-8", include_bytes!("../web/app.js")),
    ("/web/player.js", "text/javascript; charset=utf-8", include_bytes!("../web/player.js")),
    ("/web/style.css", "text/css; charset=utf-8", include_bytes!("../web/style.css")),
];

/// Scripts and styles only from here; audio, seek tables and manifests come from the
/// POPs (any http(s) origin: the POP list is dynamic), covers as blobs.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self' http: https:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// Strong validators, computed once.
fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| FILES.iter().map(|(_, _, b)| format!("\"{}\"", hex::encode(&Sha256::digest(b)[..12]))).collect())
}

/// The file at `path`, if it is one of the app's; `304` when the client has it.
pub fn serve(path: &str, request: &HeaderMap) -> Option<Response<Body>> {
    let path = if path == "/index.html" { "/" } else { path };
    let at = FILES.iter().position(|(p, _, _)| *p == path)?;
    let (_, content_type, bytes) = FILES[at];
    let etag = &etags()[at];
    let fresh = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|t| t.trim() == etag || t.trim() == "*")
    });
    let mut resp = if fresh {
        let mut r = Response::new(segue_core::server::full(Vec::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(segue_core::server::full(bytes))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every use: a new binary's files are picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Some(resp)
}
