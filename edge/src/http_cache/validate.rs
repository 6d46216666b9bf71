//! Which response fields a cache stores (RFC 9111 §3.1), the conditional request that
//! revalidates a stored response (§4.3.1), and how a 304 updates it (§3.2, §4.3.4).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::cache_control::{Directives, Fields};

/// Fields that describe one connection, never the response (RFC 9110 §7.6.1), plus the
/// proxy-authentication fields a shared cache must not keep.
const NOT_STORED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
];

/// Remove what must not be stored or forwarded: hop-by-hop fields, the fields listed in
/// `Connection`, and fields a response's `private="..."`/`no-cache="..."` names.
pub fn strip_unstored(headers: &mut HeaderMap, dirs: Option<&Directives>) {
    let named = connection_named(headers);
    for name in NOT_STORED.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(name);
    }
    if let Some(d) = dirs {
        for f in [&d.private, &d.no_cache] {
            if let Some(Fields::Named(names)) = f {
                for n in names {
                    headers.remove(n.as_str());
                }
            }
        }
    }
}

/// The field names a message's `Connection` lists (lower case): they too are hop-by-hop.
pub fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .filter(|n| !n.is_empty())
        .collect()
}

/// The validators to send when revalidating a stored response: `If-None-Match` with its
/// entity tag exactly as stored (weak stays weak), `If-Modified-Since` with its
/// `Last-Modified`. Nothing for a response without them: validators are never invented.
pub fn conditional_headers(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stored.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        if lm.to_str().ok().and_then(super::freshness::parse_date).is_some() {
            out.push((header::IF_MODIFIED_SINCE, lm.clone()));
        }
    }
    out
}

/// Whether a 304 is about this stored response (§4.3.4): when the 304 carries an entity
/// tag, it must be the stored one; otherwise it is taken to be.
pub fn selects(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    match (not_modified.get(header::ETAG), stored.get(header::ETAG)) {
        (Some(new), Some(old)) => opaque(new) == opaque(old),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn opaque(v: &HeaderValue) -> &[u8] {
    let b = v.as_bytes();
    b.strip_prefix(b"W/").unwrap_or(b)
}

/// The stored fields updated from a 304 (§3.2): every field the 304 carries replaces the
/// stored one, except those that describe the stored body's framing.
pub fn merge_304(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut fresh = not_modified.clone();
    strip_unstored(&mut fresh, None);
    let mut out = stored.clone();
    for name in fresh.keys() {
        if matches!(name.as_str(), "content-length" | "content-range" | "content-encoding" | "transfer-encoding") {
            continue;
        }
        out.remove(name);
        for v in fresh.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in list {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_not_stored() {
        let mut r = h(&[
            ("connection", "a, B"),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("set-cookie", "x=1"),
            ("x-secret", "s"),
        ]);
        let d = Directives { private: Some(Fields::Named(vec!["x-secret".into()])), ..Default::default() };
        strip_unstored(&mut r, Some(&d));
        let left: Vec<&str> = r.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["c", "set-cookie"]);
    }

    #[test]
    fn conditionals_come_from_stored_validators_only() {
        let both = conditional_headers(&h(&[("etag", "W/\"v1\""), ("last-modified", "Mon, 01 Jan 2001 00:00:00 GMT")]));
        assert_eq!(both[0], (header::IF_NONE_MATCH, HeaderValue::from_static("W/\"v1\"")));
        assert_eq!(both[1].0, header::IF_MODIFIED_SINCE);
        assert!(conditional_headers(&h(&[("last-modified", "yesterday")])).is_empty());
        assert!(conditional_headers(&h(&[])).is_empty());
    }

    #[test]
    fn a_304_updates_all_but_framing() {
        let stored = h(&[
            ("etag", "\"v1\""),
            ("content-length", "36"),
            ("test-header", "A"),
            ("cache-control", "max-age=1"),
            ("keep", "k"),
        ]);
        let nm = h(&[
            ("etag", "\"v1\""),
            ("content-length", "10"),
            ("test-header", "B"),
            ("cache-control", "max-age=3600"),
            ("connection", "close"),
        ]);
        assert!(selects(&stored, &nm));
        let merged = merge_304(&stored, &nm);
        assert_eq!(merged["content-length"], "36");
        assert_eq!((merged["test-header"].to_str().unwrap(), merged["keep"].to_str().unwrap()), ("B", "k"));
        assert_eq!(merged["cache-control"], "max-age=3600");
        assert!(!merged.contains_key("connection"));
        assert!(!selects(&stored, &h(&[("etag", "\"v2\"")])));
        assert!(selects(&h(&[("etag", "W/\"v1\"")]), &h(&[("etag", "\"v1\"")])));
        assert!(selects(&stored, &h(&[("date", "x")])));
    }
}
