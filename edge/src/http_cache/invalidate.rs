//! Invalidation (RFC 9111 §4.4): a successful answer to an unsafe request invalidates the
//! target URI and the URIs in `Location` and `Content-Location`, when those are on the
//! same origin (a response must not be able to evict another site's entries).

use http::{HeaderMap, Method, StatusCode};

/// Whether `method` is unsafe (RFC 9110 §9.2.1): anything but GET, HEAD, OPTIONS, TRACE.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// The paths (with query) an answer to an unsafe request invalidates, beside the target.
/// `host` is the request's authority: absolute URIs must name it to count.
pub fn targets(
    method: &Method,
    status: StatusCode,
    response: &HeaderMap,
    target: &str,
    host: Option<&str>,
) -> Vec<String> {
    if !is_unsafe(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![target.to_owned()];
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(v) = response.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        if let Some(path) = same_origin_path(v.trim(), target, host) {
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// `v` as a path on the request's own origin: absolute path, relative reference resolved
/// against `target`, or an absolute URI naming `host`. Anything else is another origin.
fn same_origin_path(v: &str, target: &str, host: Option<&str>) -> Option<String> {
    if v.is_empty() || v.starts_with("//") {
        return None;
    }
    if v.starts_with('/') {
        return Some(v.to_owned());
    }
    if v.contains("://") {
        let uri = v.parse::<http::Uri>().ok()?;
        let authority = uri.authority()?;
        let same = host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_str()));
        return same.then(|| uri.path_and_query().map_or("/".into(), |p| p.as_str().to_owned()));
    }
    if v.contains(':') {
        return None;
    }
    // A relative reference: resolve against the target's directory.
    let base = target.split('?').next().unwrap_or("/");
    let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{dir}{v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(list: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in list {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn unsafe_successes_invalidate_same_origin_locations() {
        let h = resp(&[("location", "/x?a=1"), ("content-location", "y")]);
        let got = targets(&Method::POST, StatusCode::CREATED, &h, "/dir/t", Some("pop.example"));
        assert_eq!(got, ["/dir/t", "/x?a=1", "/dir/y"]);
        let abs = resp(&[("location", "http://pop.example/z"), ("content-location", "http://other.example/w")]);
        assert_eq!(targets(&Method::PUT, StatusCode::OK, &abs, "/t", Some("pop.example")), ["/t", "/z"]);
        let m_search = Method::from_bytes(b"M-SEARCH").unwrap();
        assert_eq!(targets(&m_search, StatusCode::OK, &resp(&[]), "/t", None), ["/t"]);
        assert!(targets(&Method::POST, StatusCode::INTERNAL_SERVER_ERROR, &h, "/t", None).is_empty());
        assert!(targets(&Method::GET, StatusCode::OK, &h, "/t", None).is_empty());
        assert!(targets(&Method::OPTIONS, StatusCode::OK, &h, "/t", None).is_empty());
    }
}
