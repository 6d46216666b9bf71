//! Storability (RFC 9111 §3), freshness (§4.2) and the reuse decision (§4, RFC 5861), for
//! a shared cache. Everything here is a pure function of header fields and times, so it
//! is tested alone, table by table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Method, StatusCode};

use super::cache_control::{Directives, Fields, DELTA_MAX};

/// Status codes a cache may give heuristic freshness (RFC 9110 §15.1), and so also the
/// ones it "understands" for `must-understand`.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Statuses whose semantics this cache knows (for `must-understand`, RFC 9111 §5.2.2.3).
fn understood(status: StatusCode) -> bool {
    heuristically_cacheable(status) || matches!(status.as_u16(), 302 | 303 | 307 | 400 | 403 | 500 | 502 | 503 | 504)
}

/// The response directives a shared cache obeys: the first valid targeted field in the
/// configured precedence (RFC 9213: e.g. `Segue-Cache-Control`, then `CDN-Cache-Control`),
/// else `Cache-Control`. `targeted` says which one won: then `Expires` is ignored too.
pub fn response_directives(headers: &HeaderMap, targeted: &[HeaderName]) -> (Directives, bool) {
    for name in targeted {
        if let Some(d) = Directives::targeted(headers, name.as_str()) {
            return (d, true);
        }
    }
    (Directives::cache_control(headers), false)
}

/// The request's directives: `Cache-Control`, or `Pragma: no-cache` when there is none
/// (RFC 9111 §5.4).
pub fn request_directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::cache_control(headers);
    if !headers.contains_key(http::header::CACHE_CONTROL)
        && headers
            .get_all(http::header::PRAGMA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("no-cache"))))
    {
        d.no_cache = Some(Fields::All);
    }
    d
}

/// Why a response is not stored (for logs and metrics), or `Ok` when it may be.
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    dirs: &Directives,
    targeted: bool,
    default_ttl: Option<u64>,
) -> Result<(), &'static str> {
    if method != Method::GET {
        return Err("method");
    }
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err("status");
    }
    if dirs.must_understand {
        // must-understand overrides no-store for the statuses it names (§5.2.2.3).
        if !understood(status) {
            return Err("must-understand");
        }
    } else if dirs.no_store {
        return Err("no-store");
    }
    if dirs.private == Some(Fields::All) {
        return Err("private");
    }
    if req.contains_key(http::header::AUTHORIZATION)
        && !(dirs.public || dirs.s_maxage.is_some() || dirs.must_revalidate)
    {
        return Err("authorization");
    }
    if status == StatusCode::PARTIAL_CONTENT && !headers.contains_key(http::header::CONTENT_RANGE) {
        return Err("partial without Content-Range");
    }
    let explicit = dirs.max_age.is_some()
        || dirs.s_maxage.is_some()
        || dirs.public
        || (!targeted && headers.contains_key(http::header::EXPIRES));
    if explicit || heuristically_cacheable(status) || (default_ttl.is_some() && status.is_success()) {
        Ok(())
    } else {
        Err("no freshness")
    }
}

/// What the cache keeps about a stored response's freshness, computed when it is stored
/// and again when a 304 updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime (§4.2.1).
    pub lifetime: Duration,
    /// `corrected_initial_age` (§4.2.3).
    pub initial_age: Duration,
    /// When the response was received.
    pub response_time: SystemTime,
    /// May not be served without a successful validation (`no-cache`).
    pub no_cache: bool,
    /// May never be served stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub no_stale: bool,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// How a stored response may be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh (or acceptably stale for this request's `max-stale`): serve it.
    Fresh,
    /// Stale within `stale-while-revalidate`: serve it and revalidate in the background.
    StaleWhileRevalidate,
    /// Validate with the origin before serving (it may still be served on error, see
    /// [`Freshness::usable_on_error`]).
    Revalidate,
}

impl Freshness {
    /// `stale_on_error`: how long past freshness the operator lets a stored response stand
    /// in for a failed upstream when the response itself says nothing (`stale-if-error`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        dirs: &Directives,
        targeted: bool,
        default_ttl: Option<u64>,
        stale_on_error: u64,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Self {
        Freshness {
            lifetime: lifetime(status, headers, dirs, targeted, default_ttl),
            initial_age: initial_age(headers, request_time, response_time),
            response_time,
            no_cache: dirs.no_cache == Some(Fields::All),
            no_stale: dirs.must_revalidate || dirs.proxy_revalidate || dirs.s_maxage.is_some(),
            stale_while_revalidate: Duration::from_secs(dirs.stale_while_revalidate.unwrap_or(0)),
            stale_if_error: Duration::from_secs(dirs.stale_if_error.unwrap_or(stale_on_error)),
        }
    }

    /// `current_age` (§4.2.3) at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.response_time).unwrap_or_default()
    }

    /// The `Age` header value at `now`: whole seconds, capped at 2^31.
    pub fn age_header(&self, now: SystemTime) -> u64 {
        self.age(now).as_secs().min(DELTA_MAX)
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.age(now)
    }

    /// Whether this request may be answered from the stored response now, in RFC 9111 §4
    /// order: the response's `no-cache`, then the request's `no-cache`, `max-age` and
    /// `min-fresh`, then freshness, `max-stale`, and `stale-while-revalidate`.
    pub fn reuse(&self, req: &Directives, now: SystemTime) -> Reuse {
        if self.no_cache || req.no_cache.is_some() {
            return Reuse::Revalidate;
        }
        let age = self.age(now);
        if req.max_age.is_some_and(|m| age > Duration::from_secs(m)) {
            return Reuse::Revalidate;
        }
        let left = self.lifetime.saturating_sub(age);
        if let Some(min) = req.min_fresh {
            return if self.lifetime > age && left >= Duration::from_secs(min) {
                Reuse::Fresh
            } else {
                Reuse::Revalidate
            };
        }
        if self.lifetime > age {
            return Reuse::Fresh;
        }
        if self.no_stale {
            return Reuse::Revalidate;
        }
        let staleness = age - self.lifetime;
        match req.max_stale {
            Some(None) => return Reuse::Fresh,
            Some(Some(s)) if staleness <= Duration::from_secs(s) => return Reuse::Fresh,
            _ => {}
        }
        if staleness < self.stale_while_revalidate {
            return Reuse::StaleWhileRevalidate;
        }
        Reuse::Revalidate
    }

    /// Whether the stored response may stand in for an origin that failed (5xx or no
    /// answer): within `stale-if-error` (RFC 5861 §4), or while still fresh.
    pub fn usable_on_error(&self, now: SystemTime) -> bool {
        if self.no_cache {
            return false;
        }
        let age = self.age(now);
        self.lifetime > age || (!self.no_stale && age - self.lifetime <= self.stale_if_error)
    }
}

/// Freshness lifetime (§4.2.1): `s-maxage`, `max-age`, `Expires - Date`, a configured
/// default, then the heuristic (10% of the time since `Last-Modified`, at most a day).
fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    dirs: &Directives,
    targeted: bool,
    default_ttl: Option<u64>,
) -> Duration {
    if let Some(s) = dirs.s_maxage.or(dirs.max_age) {
        return Duration::from_secs(s);
    }
    if !targeted && headers.contains_key(http::header::EXPIRES) {
        // An invalid Expires (or more than one) means "already expired" (§5.3).
        let mut lines = headers.get_all(http::header::EXPIRES).iter();
        let expires = match (lines.next(), lines.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse_date),
            _ => None,
        };
        let date = date(headers).unwrap_or(SystemTime::now());
        return expires.and_then(|e| e.duration_since(date).ok()).unwrap_or_default();
    }
    if let Some(ttl) = default_ttl {
        return Duration::from_secs(ttl);
    }
    if heuristically_cacheable(status) || dirs.public {
        let lm = headers.get(http::header::LAST_MODIFIED).and_then(|v| v.to_str().ok()).and_then(parse_date);
        if let (Some(lm), Some(date)) = (lm, date(headers).or(Some(SystemTime::now()))) {
            let since = date.duration_since(lm).unwrap_or_default();
            return (since / 10).min(Duration::from_secs(86_400));
        }
    }
    Duration::ZERO
}

/// `corrected_initial_age` (§4.2.3) from `Age`, `Date` and the request's round trip.
fn initial_age(headers: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> Duration {
    let apparent = date(headers).and_then(|d| response_time.duration_since(d).ok()).unwrap_or_default();
    let delay = response_time.duration_since(request_time).unwrap_or_default();
    let corrected = age_value(headers).map_or(Duration::ZERO, |a| Duration::from_secs(a) + delay);
    apparent.max(corrected)
}

/// The `Age` value: the first member of the first line, when it is delta-seconds
/// (§5.1: anything else is ignored; too large means 2^31).
pub fn age_value(headers: &HeaderMap) -> Option<u64> {
    let first = headers.get(http::header::AGE)?.to_str().ok()?.split(',').next()?.trim();
    (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()))
        .then(|| first.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
}

fn date(headers: &HeaderMap) -> Option<SystemTime> {
    headers.get(http::header::DATE)?.to_str().ok().and_then(parse_date)
}

/// An HTTP-date in any of its three forms (RFC 9110 §5.6.7); anything else is `None`.
pub fn parse_date(v: &str) -> Option<SystemTime> {
    super::date::parse(v)
}

/// Unix milliseconds, for the object journal.
pub fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs((T0 as i64 + secs) as u64)
    }

    fn date_at(secs: i64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn headers(list: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn fresh_for(status: u16, list: &[(&str, String)]) -> Freshness {
        let h = headers(list);
        let targeted = [HeaderName::from_static("cdn-cache-control")];
        let (d, t) = response_directives(&h, &targeted);
        Freshness::new(StatusCode::from_u16(status).unwrap(), &h, &d, t, None, 0, at(0), at(0))
    }

    #[test]
    fn lifetimes_from_rfc_9111() {
        let d = || ("date", date_at(0));
        type Row<'a> = (u16, Vec<(&'a str, String)>, u64);
        let table: &[Row] = &[
            (200, vec![d(), ("cache-control", "max-age=60".into())], 60),
            (200, vec![d(), ("cache-control", "max-age=3600, s-maxage=10".into())], 10),
            (200, vec![d(), ("cache-control", "s-maxage=10".into()), ("cache-control", "max-age=3600".into())], 10),
            (200, vec![d(), ("cache-control", "max-age=0".into()), ("expires", date_at(600))], 0),
            (200, vec![d(), ("expires", date_at(600))], 600),
            (200, vec![("date", date_at(-300)), ("expires", date_at(-100))], 200),
            (200, vec![d(), ("expires", "0".into())], 0),
            (200, vec![d(), ("expires", "Thu, 18 Aug 2050 02:01:18 UTC".into())], 0),
            (200, vec![d(), ("expires", "Thu, 18 Aug 50 02:01:18 GMT".into())], 0),
            (200, vec![d(), ("expires", "Thu, 18 Aug 2050 2:01:18 GMT".into())], 0),
            (200, vec![d(), ("expires", date_at(600)), ("expires", date_at(600))], 0),
            // Heuristic: 10% of the time since Last-Modified, only for the statuses allowed.
            (200, vec![d(), ("last-modified", date_at(-1000))], 100),
            (404, vec![d(), ("last-modified", date_at(-1000))], 100),
            (403, vec![d(), ("last-modified", date_at(-1000))], 0),
            (201, vec![d(), ("last-modified", date_at(-1000))], 0),
            (200, vec![d(), ("last-modified", date_at(-10_000_000))], 86_400),
            (200, vec![d()], 0),
            // RFC 9213: a valid targeted field wins over Cache-Control and Expires.
            (200, vec![d(), ("cache-control", "max-age=3600".into()), ("cdn-cache-control", "max-age=1".into())], 1),
            (200, vec![d(), ("cdn-cache-control", "max-age=0".into()), ("expires", date_at(600))], 0),
            (200, vec![d(), ("cache-control", "max-age=5".into()), ("cdn-cache-control", "max-age=\"10\"".into())], 5),
        ];
        for (status, list, want) in table {
            assert_eq!(fresh_for(*status, list).lifetime, Duration::from_secs(*want), "{status} {list:?}");
        }
    }

    #[test]
    fn age_as_rfc_9111_computes_it() {
        let ages: &[(&[&str], Option<u64>)] = &[
            (&["3600"], Some(3600)),
            (&["abc"], None),
            (&["-7200"], None),
            (&["7200.0"], None),
            (&["2147483649"], Some(DELTA_MAX)),
            (&["7200, 0"], Some(7200)),
            (&["0, 7200"], Some(0)),
            (&["0", "7200"], Some(0)),
            (&["7200;foo=bar"], None),
        ];
        for (lines, want) in ages {
            let h = headers(&lines.iter().map(|l| ("age", l.to_string())).collect::<Vec<_>>());
            assert_eq!(age_value(&h), *want, "{lines:?}");
        }
        // corrected_initial_age: the larger of the apparent age (clock skew) and Age plus
        // the response delay.
        let h = headers(&[("date", date_at(-30)), ("age", "10".into())]);
        assert_eq!(initial_age(&h, at(-2), at(0)), Duration::from_secs(30));
        let h = headers(&[("date", date_at(0)), ("age", "10".into())]);
        assert_eq!(initial_age(&h, at(-2), at(0)), Duration::from_secs(12));
        let f =
            fresh_for(200, &[("date", date_at(0)), ("cache-control", "max-age=3600".into()), ("age", "7200".into())]);
        assert!(!f.is_fresh(at(0)));
        assert_eq!(f.age_header(at(5)), 7205);
    }

    #[test]
    fn reuse_decisions() {
        let f = |cc: &str| fresh_for(200, &[("date", date_at(0)), ("cache-control", cc.into())]);
        let req = |cc: &str| request_directives(&headers(&[("cache-control", cc.into())]));
        let none = Directives::default();
        let table: &[(&str, Directives, i64, Reuse)] = &[
            ("max-age=10", none.clone(), 5, Reuse::Fresh),
            ("max-age=10", none.clone(), 10, Reuse::Revalidate),
            ("max-age=10, no-cache", none.clone(), 1, Reuse::Revalidate),
            ("max-age=10", req("no-cache"), 1, Reuse::Revalidate),
            ("max-age=10", req("max-age=2"), 5, Reuse::Revalidate),
            ("max-age=10", req("min-fresh=8"), 5, Reuse::Revalidate),
            ("max-age=10", req("min-fresh=3"), 5, Reuse::Fresh),
            ("max-age=10", req("max-stale=5"), 14, Reuse::Fresh),
            ("max-age=10", req("max-stale"), 1000, Reuse::Fresh),
            ("max-age=10, must-revalidate", req("max-stale"), 11, Reuse::Revalidate),
            ("max-age=10, stale-while-revalidate=5", none.clone(), 12, Reuse::StaleWhileRevalidate),
            ("max-age=10, stale-while-revalidate=5", none.clone(), 16, Reuse::Revalidate),
            ("s-maxage=10, stale-while-revalidate=5", none.clone(), 12, Reuse::Revalidate),
            ("max-age=10, proxy-revalidate, stale-while-revalidate=5", none.clone(), 12, Reuse::Revalidate),
        ];
        for (cc, req, t, want) in table {
            assert_eq!(f(cc).reuse(req, at(*t)), *want, "{cc} {req:?} at {t}");
        }
        let sie = f("max-age=10, stale-if-error=30");
        assert!(sie.usable_on_error(at(35)) && !sie.usable_on_error(at(41)));
        assert!(!f("max-age=10, must-revalidate, stale-if-error=30").usable_on_error(at(15)));
        assert!(!f("max-age=10").usable_on_error(at(11)));
        assert!(!f("max-age=10, no-cache, stale-if-error=30").usable_on_error(at(15)));
        let pragma = request_directives(&headers(&[("pragma", "no-cache".into())]));
        assert_eq!(f("max-age=10").reuse(&pragma, at(1)), Reuse::Revalidate);
    }

    #[test]
    fn storability() {
        let get = Method::GET;
        let check = |status: u16, list: &[(&str, &str)], req: &[(&str, &str)]| {
            let h = headers(&list.iter().map(|(k, v)| (*k, v.to_string())).collect::<Vec<_>>());
            let r = headers(&req.iter().map(|(k, v)| (*k, v.to_string())).collect::<Vec<_>>());
            let (d, t) = response_directives(&h, &[HeaderName::from_static("cdn-cache-control")]);
            storable(&get, &r, StatusCode::from_u16(status).unwrap(), &h, &d, t, None)
        };
        assert_eq!(check(200, &[("cache-control", "max-age=10")], &[]), Ok(()));
        assert_eq!(check(200, &[], &[]), Ok(()));
        assert_eq!(check(201, &[], &[]), Err("no freshness"));
        assert_eq!(check(201, &[("cache-control", "max-age=10")], &[]), Ok(()));
        assert_eq!(check(200, &[("cache-control", "max-age=10, no-store")], &[]), Err("no-store"));
        assert_eq!(check(200, &[("cache-control", "private, max-age=10")], &[]), Err("private"));
        assert_eq!(
            check(200, &[("cdn-cache-control", "no-store"), ("cache-control", "max-age=10")], &[]),
            Err("no-store")
        );
        assert_eq!(check(200, &[("cdn-cache-control", "max-age=10"), ("cache-control", "no-store")], &[]), Ok(()));
        assert_eq!(
            check(599, &[("cache-control", "max-age=10, no-store, must-understand")], &[]),
            Err("must-understand")
        );
        assert_eq!(check(200, &[("cache-control", "max-age=10, no-store, must-understand")], &[]), Ok(()));
        assert_eq!(check(200, &[("cache-control", "max-age=10")], &[("authorization", "x")]), Err("authorization"));
        assert_eq!(check(200, &[("cache-control", "s-maxage=10")], &[("authorization", "x")]), Ok(()));
        assert_eq!(check(206, &[("cache-control", "max-age=10")], &[]), Err("partial without Content-Range"));
    }
}
