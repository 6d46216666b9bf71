//! Cross-origin reads (the Fetch standard's CORS) of what the POP serves, so a web player
//! on the app's origin can fetch audio, seek tables and manifests by Range. Signed URLs
//! carry their own authorisation and no cookie is ever involved, so the default allows
//! every origin (`*`); `cors_origins` narrows it to listed origins.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use segue_core::server::Body;

/// Headers a script may read from answers: what ranged playback and caching need.
const EXPOSED: &str = "Content-Range, Content-Length, Accept-Ranges, ETag, Last-Modified, Age, X-Cache";
/// Request headers a script may send beyond the safelisted ones.
const ALLOWED_HEADERS: &str = "Range, If-Range, If-None-Match, If-Modified-Since";
/// How long a browser may keep a preflight's answer (seconds).
const PREFLIGHT_MAX_AGE: &str = "86400";

#[derive(Debug, Clone)]
pub struct Cors {
    /// Empty: CORS is off. `*`: any origin.
    origins: Vec<String>,
}

impl Cors {
    pub fn new(origins: &[String]) -> Cors {
        Cors { origins: origins.iter().map(|o| o.trim_end_matches('/').to_owned()).collect() }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if allowed.
    fn allow(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        if self.origins.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin.to_str().ok()?;
        self.origins.iter().any(|allowed| allowed == o).then(|| origin.clone())
    }

    /// A preflight (`OPTIONS` with `Access-Control-Request-Method`) of a GET or HEAD,
    /// answered here; anything else is not one.
    pub fn preflight(&self, req: &Request<impl Sized>) -> Option<Response<Body>> {
        if req.method() != Method::OPTIONS {
            return None;
        }
        let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut resp = Response::new(segue_core::server::full(Vec::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        let (Some(allow), true) = (self.allow(req.headers()), matches!(asked.as_bytes(), b"GET" | b"HEAD")) else {
            // Not allowed: no CORS headers, and the browser refuses the request.
            return Some(resp);
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
        Some(resp)
    }

    /// Mark an answer to a cross-origin GET or HEAD as readable by the requesting page.
    pub fn decorate(&self, request: &HeaderMap, resp: &mut Response<Body>) {
        let Some(allow) = self.allow(request) else { return };
        let h = resp.headers_mut();
        if allow != "*" {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, origin: Option<&str>, asked: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/a/x/high.ogg");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        if let Some(m) = asked {
            b = b.header(header::ACCESS_CONTROL_REQUEST_METHOD, m);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn preflights_and_answers_follow_the_allowed_origins() {
        let any = Cors::new(&["*".into()]);
        let p = any.preflight(&req(Method::OPTIONS, Some("http://app"), Some("GET"))).unwrap();
        assert_eq!(p.status(), StatusCode::NO_CONTENT);
        assert_eq!(p.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(p.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("Range"));
        // Only reads are allowed; a plain OPTIONS is not a preflight.
        let put = any.preflight(&req(Method::OPTIONS, Some("http://app"), Some("PUT"))).unwrap();
        assert!(put.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(any.preflight(&req(Method::OPTIONS, Some("http://app"), None)).is_none());
        assert!(any.preflight(&req(Method::GET, Some("http://app"), Some("GET"))).is_none());

        let listed = Cors::new(&["http://app.example/".into()]);
        let mut ok = Response::new(segue_core::server::full(Vec::new()));
        listed.decorate(req(Method::GET, Some("http://app.example"), None).headers(), &mut ok);
        assert_eq!(ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://app.example");
        assert_eq!(ok.headers()[header::VARY], "Origin");
        assert!(ok.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().contains("Content-Range"));
        let mut other = Response::new(segue_core::server::full(Vec::new()));
        listed.decorate(req(Method::GET, Some("http://evil.example"), None).headers(), &mut other);
        assert!(other.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let mut off = Response::new(segue_core::server::full(Vec::new()));
        Cors::new(&[]).decorate(req(Method::GET, Some("http://app"), None).headers(), &mut off);
        assert!(off.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }
}
