//! `Vary` (RFC 9111 §4.1): the request header fields a stored response was selected by,
//! normalised, and whether a new request presents the same ones.

use http::HeaderMap;

/// What the response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`: one response for every request.
    None,
    /// `Vary: *` (alone or among names): never served from the cache.
    Any,
    /// The nominated field names, lower case, in order, without duplicates.
    Fields(Vec<String>),
}

impl Vary {
    pub fn of(response: &HeaderMap) -> Self {
        let mut names: Vec<String> = Vec::new();
        for line in response.get_all(http::header::VARY).iter() {
            let Ok(line) = line.to_str() else { return Vary::Any };
            for name in line.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Vary::Any;
                }
                let name = name.to_ascii_lowercase();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        if names.is_empty() {
            Vary::None
        } else {
            Vary::Fields(names)
        }
    }
}

/// The nominated fields' values in one request: `None` for a field the request lacks.
pub type Selecting = Vec<(String, Option<String>)>;

/// The values of `names` in `req`, normalised: lines joined with ",", whitespace around
/// list members removed, so `a, b` and `a,b` select the same response.
pub fn selecting(names: &[String], req: &HeaderMap) -> Selecting {
    names
        .iter()
        .map(|name| {
            let mut values = req.get_all(name.as_str()).iter().peekable();
            if values.peek().is_none() {
                return (name.clone(), None);
            }
            let joined: Vec<String> = values
                .flat_map(|v| {
                    String::from_utf8_lossy(v.as_bytes()).split(',').map(|m| m.trim().to_owned()).collect::<Vec<_>>()
                })
                .collect();
            (name.clone(), Some(joined.join(",")))
        })
        .collect()
}

/// Whether a stored response selected by `stored` may answer `req` (§4.1).
pub fn matches(stored: &Selecting, req: &HeaderMap) -> bool {
    let names: Vec<String> = stored.iter().map(|(n, _)| n.clone()).collect();
    selecting(&names, req) == *stored
}

/// A suffix for the variant's cache key (slices and fills of two variants never mix).
pub fn variant_suffix(selecting: &Selecting) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    selecting.hash(&mut h);
    format!("#vary={:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in list {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn vary_field_syntax() {
        assert_eq!(Vary::of(&h(&[])), Vary::None);
        assert_eq!(Vary::of(&h(&[("vary", "")])), Vary::None);
        assert_eq!(
            Vary::of(&h(&[("vary", "Foo, bar"), ("vary", "FOO")])),
            Vary::Fields(vec!["foo".into(), "bar".into()])
        );
        for star in [
            &[("vary", "*")][..],
            &[("vary", "*, *")],
            &[("vary", "*"), ("vary", "*")],
            &[("vary", ", *")],
            &[("vary", ""), ("vary", "*")],
            &[("vary", "*, Foo")],
            &[("vary", "Foo, *")],
        ] {
            assert_eq!(Vary::of(&h(star)), Vary::Any, "{star:?}");
        }
    }

    #[test]
    fn requests_match_their_variant_only() {
        let names = vec!["foo".to_string(), "bar".to_string()];
        let stored = selecting(&names, &h(&[("foo", "1"), ("bar", "a, b")]));
        assert!(matches(&stored, &h(&[("bar", "a,b"), ("foo", "1")])));
        assert!(matches(&stored, &h(&[("foo", "1"), ("bar", "a"), ("bar", "b")])));
        assert!(!matches(&stored, &h(&[("foo", "2"), ("bar", "a, b")])));
        assert!(!matches(&stored, &h(&[("foo", "1")])));
        let omitted = selecting(&names, &h(&[("foo", "1")]));
        assert!(!matches(&omitted, &h(&[("foo", "1"), ("bar", "")])));
        assert!(matches(&omitted, &h(&[("foo", "1"), ("baz", "x")])));
        assert_ne!(variant_suffix(&stored), variant_suffix(&omitted));
    }
}
