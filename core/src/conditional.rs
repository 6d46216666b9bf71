//! Validators and conditional requests (RFC 9110 §8.8, §13): ETag comparison,
//! `If-None-Match`, `If-Match`, `If-Modified-Since`, `If-Unmodified-Since`, `If-Range`.
//! Used by every hop that serves or caches objects.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A resource's validators, as its origin sent them: none is ever invented (a cache that
/// made one up would answer conditionals its origin never agreed to).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validators {
    /// The opaque tag without quotes; empty when the representation has none.
    pub etag: String,
    /// A weak tag (`W/"..."`): it matches `If-None-Match` only, never `If-Match` or `If-Range`.
    pub weak: bool,
    pub last_modified: Option<SystemTime>,
}

/// What preconditions say to do, in RFC 9110 §13.2.2 order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    /// 304 for GET/HEAD.
    NotModified,
    /// 412.
    Failed,
}

/// Header values a conditional evaluation looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
}

impl Validators {
    /// A strong entity tag and a modification time (what the origin's stores give).
    pub fn strong(etag: String, last_modified: SystemTime) -> Self {
        Validators { etag, weak: false, last_modified: Some(last_modified) }
    }

    /// Validators from a response's `ETag` and `Last-Modified` values, kept as sent (a
    /// weak tag stays weak; an unparseable one is no validator).
    pub fn from_headers(etag: Option<&str>, last_modified: Option<&str>) -> Self {
        let (weak, etag) = etag.and_then(|e| parse_tag(e.trim())).map_or((false, ""), |(w, t)| (w, t));
        Validators {
            etag: etag.to_owned(),
            weak,
            last_modified: last_modified.and_then(|v| httpdate::parse_http_date(v.trim()).ok()),
        }
    }

    /// The `ETag` header value (`"tag"` or `W/"tag"`), if there is a tag.
    pub fn etag_header(&self) -> Option<String> {
        match (self.etag.is_empty(), self.weak) {
            (true, _) => None,
            (false, true) => Some(format!("W/\"{}\"", self.etag)),
            (false, false) => Some(format!("\"{}\"", self.etag)),
        }
    }

    pub fn last_modified_header(&self) -> Option<String> {
        self.last_modified.map(httpdate::fmt_http_date)
    }

    /// Whole seconds, as HTTP dates carry them.
    fn modified_secs(&self) -> Option<u64> {
        self.last_modified.map(|t| t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs())
    }

    pub fn evaluate(&self, c: &Conditions<'_>, is_get_or_head: bool) -> Precondition {
        if let Some(im) = c.if_match {
            if !self.matches_list(im, true) {
                return Precondition::Failed;
            }
        } else if let (Some(ius), Some(modified)) = (c.if_unmodified_since.and_then(parse_date), self.modified_secs()) {
            if modified > ius {
                return Precondition::Failed;
            }
        }
        if let Some(inm) = c.if_none_match {
            if self.matches_list(inm, false) {
                return if is_get_or_head { Precondition::NotModified } else { Precondition::Failed };
            }
        } else if let (Some(ims), Some(modified)) = (c.if_modified_since.and_then(parse_date), self.modified_secs()) {
            if is_get_or_head && modified <= ims {
                return Precondition::NotModified;
            }
        }
        Precondition::Proceed
    }

    /// `If-Range`: serve the range only if the validator still matches. An entity tag must
    /// match strongly; a date must equal Last-Modified exactly (§13.1.5).
    pub fn if_range_allows(&self, if_range: &str) -> bool {
        let v = if_range.trim();
        if v.starts_with("W/") {
            return false;
        }
        if v.starts_with('"') {
            return !self.weak
                && !self.etag.is_empty()
                && parse_tag(v).is_some_and(|(weak, tag)| !weak && tag == self.etag);
        }
        parse_date(v).is_some_and(|d| Some(d) == self.modified_secs())
    }

    /// Whether an `If-Match`/`If-None-Match` list (or `*`) names this resource.
    fn matches_list(&self, list: &str, strong: bool) -> bool {
        if list.trim() == "*" {
            return true;
        }
        if self.etag.is_empty() || (strong && self.weak) {
            return false;
        }
        list.split(',').filter_map(|t| parse_tag(t.trim())).any(|(weak, tag)| tag == self.etag && !(strong && weak))
    }
}

/// `"tag"` or `W/"tag"` -> (weak, tag).
fn parse_tag(s: &str) -> Option<(bool, &str)> {
    let (weak, rest) = match s.strip_prefix("W/") {
        Some(r) => (true, r),
        None => (false, s),
    };
    let tag = rest.strip_prefix('"')?.strip_suffix('"')?;
    (!tag.contains('"')).then_some((weak, tag))
}

fn parse_date(s: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Validators {
        Validators::strong("abc".into(), UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    #[test]
    fn if_none_match_and_since() {
        let v = v();
        let lm = v.last_modified_header().unwrap();
        let c = |inm, ims| Conditions { if_none_match: inm, if_modified_since: ims, ..Default::default() };
        assert_eq!(v.evaluate(&c(Some("\"abc\""), None), true), Precondition::NotModified);
        assert_eq!(v.evaluate(&c(Some("W/\"abc\""), None), true), Precondition::NotModified);
        assert_eq!(v.evaluate(&c(Some("\"x\", \"abc\""), None), true), Precondition::NotModified);
        assert_eq!(v.evaluate(&c(Some("*"), None), true), Precondition::NotModified);
        assert_eq!(v.evaluate(&c(Some("\"x\""), Some(&lm)), true), Precondition::Proceed);
        assert_eq!(v.evaluate(&c(None, Some(&lm)), true), Precondition::NotModified);
        assert_eq!(v.evaluate(&c(None, Some("Mon, 01 Jan 2001 00:00:00 GMT")), true), Precondition::Proceed);
        assert_eq!(v.evaluate(&c(None, Some("garbage")), true), Precondition::Proceed);
    }

    #[test]
    fn if_match_is_strong() {
        let v = v();
        let c = |im| Conditions { if_match: Some(im), ..Default::default() };
        assert_eq!(v.evaluate(&c("\"abc\""), true), Precondition::Proceed);
        assert_eq!(v.evaluate(&c("W/\"abc\""), true), Precondition::Failed);
        assert_eq!(v.evaluate(&c("\"zzz\""), true), Precondition::Failed);
    }

    #[test]
    fn if_range() {
        let v = v();
        assert!(v.if_range_allows("\"abc\""));
        assert!(!v.if_range_allows("W/\"abc\""));
        assert!(!v.if_range_allows("\"old\""));
        assert!(v.if_range_allows(&v.last_modified_header().unwrap()));
        assert!(!v.if_range_allows("Mon, 01 Jan 2001 00:00:00 GMT"));
        assert!(!v.if_range_allows("nonsense"));
    }

    #[test]
    fn weak_and_missing_validators() {
        let weak = Validators::from_headers(Some("W/\"abc\""), None);
        assert_eq!(weak.etag_header().as_deref(), Some("W/\"abc\""));
        assert_eq!(weak.last_modified_header(), None);
        let c = |inm, im| Conditions { if_none_match: inm, if_match: im, ..Default::default() };
        assert_eq!(weak.evaluate(&c(Some("\"abc\""), None), true), Precondition::NotModified);
        assert_eq!(weak.evaluate(&c(None, Some("\"abc\"")), true), Precondition::Failed);
        assert!(!weak.if_range_allows("\"abc\""));
        // No validators: nothing matches but `*`, dates are ignored, nothing is invented.
        let none = Validators::from_headers(None, Some("not a date"));
        assert_eq!((none.etag_header(), none.last_modified_header()), (None, None));
        let since = Conditions { if_modified_since: Some("Mon, 01 Jan 2001 00:00:00 GMT"), ..Default::default() };
        assert_eq!(none.evaluate(&since, true), Precondition::Proceed);
        assert_eq!(none.evaluate(&c(Some("\"\""), None), true), Precondition::Proceed);
        assert!(!none.if_range_allows("Mon, 01 Jan 2001 00:00:00 GMT"));
    }
}
