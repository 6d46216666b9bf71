//! `Cache-Control` (RFC 9111 §5.2) and the targeted fields of RFC 9213 (`CDN-Cache-Control`,
//! `Segue-Cache-Control`), parsed into one set of directives.
//!
//! `Cache-Control` is parsed leniently, as deployed caches must: names are
//! case-insensitive, values may be tokens or quoted strings, commas inside quotes do not
//! split, and a delta-seconds value that is not one (negative, `'3600'`, `3600.5`) makes
//! that directive mean "already stale" rather than being ignored. Targeted fields are
//! Structured Field dictionaries (RFC 8941): any syntax error, or a value of the wrong type,
//! makes the cache ignore the whole field (RFC 9213 §2.1).

use http::HeaderMap;

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
pub const DELTA_MAX: u64 = 1 << 31;

/// A directive that may name header fields (`no-cache="Set-Cookie"`, `private="..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fields {
    /// The directive applies to the whole response.
    All,
    /// Only these (lower-case) fields are affected.
    Named(Vec<String>),
}

/// The directives a cache acts on, from a response or a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: Option<Fields>,
    pub private: Option<Fields>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request only: `max-stale` (`Some(None)`: any staleness), `min-fresh`, `only-if-cached`.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

impl Directives {
    /// Every `Cache-Control` line of `headers`, as one list.
    pub fn cache_control(headers: &HeaderMap) -> Self {
        Self::from_lines(headers, http::header::CACHE_CONTROL.as_str())
    }

    /// The classic (RFC 9111) syntax, over every line of `name`.
    pub fn from_lines(headers: &HeaderMap, name: &str) -> Self {
        let mut d = Directives::default();
        for line in headers.get_all(name).iter() {
            let Ok(line) = std::str::from_utf8(line.as_bytes()) else { continue };
            for (name, value) in split_list(line) {
                d.apply_classic(&name.to_ascii_lowercase(), value.as_deref());
            }
        }
        d
    }

    fn apply_classic(&mut self, name: &str, value: Option<&str>) {
        // A repeated delta keeps the smaller value: of two conflicting freshness claims the
        // cache believes the more cautious (RFC 9111 §4.2.1 allows "stale").
        let delta = |v: Option<&str>| v.map_or(0, parse_delta);
        let min = |old: Option<u64>, new: u64| Some(old.map_or(new, |o| o.min(new)));
        match name {
            "max-age" => self.max_age = min(self.max_age, delta(value)),
            "s-maxage" => self.s_maxage = min(self.s_maxage, delta(value)),
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = merge_fields(self.no_cache.take(), value),
            "private" => self.private = merge_fields(self.private.take(), value),
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "immutable" => self.immutable = true,
            "stale-while-revalidate" => self.stale_while_revalidate = min(self.stale_while_revalidate, delta(value)),
            "stale-if-error" => self.stale_if_error = min(self.stale_if_error, delta(value)),
            "max-stale" => self.max_stale = Some(value.map(parse_delta)),
            "min-fresh" => self.min_fresh = min(self.min_fresh, delta(value)),
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }

    /// A targeted field (RFC 9213), or `None` when it is absent, empty or invalid (then the
    /// next field in precedence applies).
    pub fn targeted(headers: &HeaderMap, name: &str) -> Option<Self> {
        let mut joined = String::new();
        for line in headers.get_all(name).iter() {
            let line = std::str::from_utf8(line.as_bytes()).ok()?;
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(line);
        }
        let members = parse_sf_dictionary(&joined)?;
        if members.is_empty() {
            return None;
        }
        let mut d = Directives::default();
        for (key, value) in members {
            let int = |v: &SfItem| match v {
                SfItem::Integer(n) if *n >= 0 => Some((*n as u64).min(DELTA_MAX)),
                SfItem::Integer(_) => Some(0),
                _ => None,
            };
            let flag = |v: &SfItem| matches!(v, SfItem::Boolean(true));
            // Field-naming forms are strings in a targeted field (`private="a, b"`).
            let fields = |v: &SfItem| match v {
                SfItem::Boolean(true) => Some(Fields::All),
                SfItem::String(s) => Some(Fields::Named(field_names(s))),
                _ => None,
            };
            match key.as_str() {
                "max-age" => d.max_age = Some(int(&value)?),
                "s-maxage" => d.s_maxage = Some(int(&value)?),
                "stale-while-revalidate" => d.stale_while_revalidate = Some(int(&value)?),
                "stale-if-error" => d.stale_if_error = Some(int(&value)?),
                "no-store" => d.no_store = flag(&value),
                "no-cache" => d.no_cache = fields(&value),
                "private" => d.private = fields(&value),
                "public" => d.public = flag(&value),
                "must-revalidate" => d.must_revalidate = flag(&value),
                "proxy-revalidate" => d.proxy_revalidate = flag(&value),
                "must-understand" => d.must_understand = flag(&value),
                "immutable" => d.immutable = flag(&value),
                _ => {}
            }
        }
        Some(d)
    }
}

fn merge_fields(old: Option<Fields>, value: Option<&str>) -> Option<Fields> {
    let new = match value {
        None => Fields::All,
        Some(v) => Fields::Named(field_names(v)),
    };
    Some(match (old, new) {
        (Some(Fields::All), _) | (_, Fields::All) => Fields::All,
        (Some(Fields::Named(mut a)), Fields::Named(b)) => {
            a.extend(b);
            Fields::Named(a)
        }
        (None, named) => named,
    })
}

fn field_names(v: &str) -> Vec<String> {
    v.split(',').map(|f| f.trim().to_ascii_lowercase()).filter(|f| !f.is_empty()).collect()
}

/// delta-seconds (RFC 9111 §1.2.2): digits only, saturating at 2^31. Anything else (a
/// sign, a fraction, quotes of the wrong kind) is not a delta: taken as 0, "stale now".
pub fn parse_delta(v: &str) -> u64 {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    v.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX))
}

/// Split a Cache-Control list into (name, value) pairs: commas inside quoted strings do not
/// split, a quoted value is unquoted (backslash escapes undone). Whitespace around a
/// member is dropped; whitespace around `=` is not (`max-age = 5` names no known directive).
fn split_list(line: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let member = rest[..end].trim();
        rest = if end < rest.len() { &rest[end + 1..] } else { "" };
        if member.is_empty() {
            continue;
        }
        match member.split_once('=') {
            None => out.push((member.to_owned(), None)),
            Some((name, value)) => {
                let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(quoted) => unescape(quoted),
                    None => value.to_owned(),
                };
                out.push((name.to_owned(), Some(value)));
            }
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

/// The bare items a targeted field's directives use (RFC 8941 §3.3).
#[derive(Debug, Clone, PartialEq)]
enum SfItem {
    Integer(i64),
    Decimal,
    String(String),
    Token,
    Bytes,
    Boolean(bool),
}

/// An RFC 8941 dictionary (parameters are parsed and dropped); `None` on any syntax error.
fn parse_sf_dictionary(input: &str) -> Option<Vec<(String, SfItem)>> {
    let mut p = SfParser { s: input.as_bytes(), i: 0 };
    p.skip(|b| b == b' ');
    let mut out: Vec<(String, SfItem)> = Vec::new();
    while p.i < p.s.len() {
        let key = p.key()?;
        let value = if p.peek() == Some(b'=') {
            p.i += 1;
            if p.peek() == Some(b'(') {
                return None; // inner lists name no cache directive; treat as malformed
            }
            p.bare_item()?
        } else {
            SfItem::Boolean(true)
        };
        p.parameters()?;
        // A later member with the same key replaces the earlier (RFC 8941 §4.2.2).
        out.retain(|(k, _)| k != &key);
        out.push((key, value));
        p.skip(|b| b == b' ' || b == b'\t');
        if p.i == p.s.len() {
            break;
        }
        if p.peek() != Some(b',') {
            return None;
        }
        p.i += 1;
        p.skip(|b| b == b' ' || b == b'\t');
        if p.i == p.s.len() {
            return None; // trailing comma
        }
    }
    Some(out)
}

struct SfParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl SfParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Option<String> {
        let start = self.i;
        if !self.peek().is_some_and(|b| b.is_ascii_lowercase() || b == b'*') {
            return None;
        }
        self.skip(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*'));
        Some(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn parameters(&mut self) -> Option<()> {
        while self.peek() == Some(b';') {
            self.i += 1;
            self.skip(|b| b == b' ');
            self.key()?;
            if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<SfItem> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    let b = self.peek()?;
                    self.i += 1;
                    match b {
                        b'\\' => {
                            let e = self.peek()?;
                            if e != b'"' && e != b'\\' {
                                return None;
                            }
                            out.push(e as char);
                            self.i += 1;
                        }
                        b'"' => return Some(SfItem::String(out)),
                        0x20..=0x7e => out.push(b as char),
                        _ => return None,
                    }
                }
            }
            b':' => {
                self.i += 1;
                self.skip(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
                (self.peek() == Some(b':')).then(|| {
                    self.i += 1;
                    SfItem::Bytes
                })
            }
            b'?' => {
                self.i += 1;
                let v = match self.peek()? {
                    b'1' => true,
                    b'0' => false,
                    _ => return None,
                };
                self.i += 1;
                Some(SfItem::Boolean(v))
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                self.skip(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'(' | b')' | b'=' | b'\\'));
                Some(SfItem::Token)
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Option<SfItem> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        self.skip(|b| b.is_ascii_digit());
        let int_digits = self.i - start;
        if int_digits == 0 {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let f = self.i;
            self.skip(|b| b.is_ascii_digit());
            let frac = self.i - f;
            return (int_digits <= 12 && (1..=3).contains(&frac)).then_some(SfItem::Decimal);
        }
        if int_digits > 15 {
            return None;
        }
        let n: i64 = std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().ok()?;
        Some(SfItem::Integer(if neg { -n } else { n }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> Directives {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(http::header::CACHE_CONTROL, l.parse().unwrap());
        }
        Directives::cache_control(&h)
    }

    fn cdn(lines: &[&str]) -> Option<Directives> {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("cdn-cache-control", l.parse().unwrap());
        }
        Directives::targeted(&h, "cdn-cache-control")
    }

    #[test]
    fn classic_syntax_as_deployed() {
        // (field lines, max-age understood)
        let table: &[(&[&str], Option<u64>)] = &[
            (&["max-age=3600"], Some(3600)),
            (&["MAX-AGE=3600"], Some(3600)),
            (&["max-age=003600"], Some(3600)),
            (&["max-age=\"3600\""], Some(3600)),
            (&["max-age='3600'"], Some(0)),
            (&["max-age=-1"], Some(0)),
            (&["max-age=3600.5"], Some(0)),
            (&["max-age=a3600"], Some(0)),
            (&["max-age=99999999999999999999"], Some(DELTA_MAX)),
            (&["extension=\"max-age=3600\", max-age=1"], Some(1)),
            (&["max-age=1, extension=\"max-age=3600\""], Some(1)),
            (&["max-age=1800, max-age=1"], Some(1)),
            (&["max-age=1800", "max-age=1"], Some(1)),
            (&["max-age =3600"], None),
            (&["public"], None),
        ];
        for (lines, want) in table {
            assert_eq!(cc(lines).max_age, *want, "{lines:?}");
        }
    }

    #[test]
    fn classic_flags_and_fields() {
        let d = cc(&["nO-StOrE, private=\"Set-Cookie, X-A\"", "no-cache, s-maxage=10, must-revalidate"]);
        assert!(d.no_store && d.must_revalidate);
        assert_eq!(d.private, Some(Fields::Named(vec!["set-cookie".into(), "x-a".into()])));
        assert_eq!(d.no_cache, Some(Fields::All));
        assert_eq!(d.s_maxage, Some(10));
        let r = cc(&["max-stale, min-fresh=5, only-if-cached, nothing-to-see-here"]);
        assert_eq!((r.max_stale, r.min_fresh, r.only_if_cached), (Some(None), Some(5), true));
        assert_eq!(cc(&["stale-while-revalidate=30, stale-if-error=60"]).stale_if_error, Some(60));
    }

    #[test]
    fn targeted_fields_are_structured() {
        assert_eq!(cdn(&["max-age=3600"]).unwrap().max_age, Some(3600));
        assert_eq!(cdn(&["foobar, max-age=3600"]).unwrap().max_age, Some(3600));
        assert_eq!(cdn(&["max-age=2147483648"]).unwrap().max_age, Some(DELTA_MAX));
        assert!(cdn(&["private"]).unwrap().private == Some(Fields::All));
        assert!(cdn(&["no-store"]).unwrap().no_store);
        assert!(cdn(&["max-age=10;a=1", "no-cache"]).unwrap().no_cache.is_some());
        // Ignored whole: absent, empty, bad syntax, wrong type, upper case keys.
        for bad in [
            &[][..],
            &[""],
            &["max-age=10000, &&&&&"],
            &["max-age=\"10000\""],
            &["max-age=1.5"],
            &["MaX-aGe=3600"],
            &["max-age =100"],
            &["max-age=1,"],
        ] {
            assert_eq!(cdn(bad), None, "{bad:?}");
        }
    }
}
