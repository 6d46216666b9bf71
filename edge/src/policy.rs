//! Per-path-prefix rules (`[[paths]]` in edge.toml): how a request under a prefix is cached
//! and who may make it. The longest matching prefix wins; DESIGN.md: "audio-specific
//! behaviour is configured per path prefix", and nothing else hard-codes a path layout.

use std::sync::Arc;

use http::Method;
use segue_core::config::{ensure, FieldError};
use serde::Deserialize;

/// One `[[paths]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathPolicy {
    /// Path prefix this applies to, starting with `/`; `/` matches everything.
    pub prefix: String,
    /// Fetch and cache objects in aligned slices of `slice_kib` (one upstream request per
    /// slice, however many clients wait), for large range-read objects such as audio.
    /// Off: a miss forwards the client's request (its `Range` included) and the answer is
    /// stored as it comes. Default off.
    #[serde(default)]
    pub slice: bool,
    /// Require a signed URL (`?exp=&kid=&sig=`) when `[tokens] required`. Default off.
    #[serde(default)]
    pub tokens: bool,
    /// Methods accepted. GET and HEAD are served through the cache; any other listed
    /// method is forwarded uncached (and a success invalidates what the cache holds for
    /// the URL). `"*"` accepts every method. Others get 405. Default `["GET", "HEAD"]`,
    /// so an origin's upload endpoint is not reachable through a POP unless listed.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Freshness (seconds) given to storable responses that carry none (no `max-age`,
    /// `s-maxage` or `Expires`), instead of the RFC 9111 heuristic. Default 0: none.
    #[serde(default)]
    pub default_ttl_secs: u64,
    /// Seconds past its freshness a stored response may still be served when the upstream
    /// fails (no answer, connection closed, 5xx) and the response allows it (no
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`): RFC 9111 §4.2.4's
    /// "disconnected" case; a response's own `stale-if-error` takes precedence. Default
    /// 86400 (a day): an origin outage is not an outage for listeners.
    #[serde(default = "default_stale_on_error")]
    pub stale_on_error_secs: u64,
    /// The query parameters that select a response here, e.g. `["page", "sort"]`: the
    /// others are left out of the cache key and of the request upstream, so a client
    /// cannot mint new cache entries (and upstream fetches) by adding `&x=N`. `[]`: the
    /// query never selects anything (content-addressed paths). Unset (the default for
    /// other paths): every parameter selects, as RFC 9111 keys by the whole URI. The
    /// signed-URL parameters are never part of the key.
    #[serde(default)]
    pub key_params: Option<Vec<String>>,
    /// Freshness (seconds) given to a 404 or 410 that carries none, so requests for
    /// what does not exist (a mistyped or not yet published object) reach the upstream
    /// once per period, not once each. Default 0: as `default_ttl_secs`.
    #[serde(default)]
    pub negative_ttl_secs: u64,
}

fn default_stale_on_error() -> u64 {
    86_400
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

impl PathPolicy {
    pub fn new(prefix: &str, slice: bool, tokens: bool) -> Self {
        PathPolicy {
            prefix: prefix.into(),
            slice,
            tokens,
            methods: default_methods(),
            default_ttl_secs: 0,
            stale_on_error_secs: default_stale_on_error(),
            key_params: None,
            negative_ttl_secs: 0,
        }
    }

    /// The cache key of `path?query` under this rule.
    pub fn cache_key(&self, path: &str, query: Option<&str>) -> String {
        crate::http_cache::key::cache_key(path, query, self.key_params.as_deref())
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.methods.iter().any(|m| m == "*" || m.eq_ignore_ascii_case(method.as_str()))
    }

    pub fn default_ttl(&self) -> Option<u64> {
        (self.default_ttl_secs > 0).then_some(self.default_ttl_secs)
    }

    /// The freshness a response of `status` without its own gets.
    pub fn default_ttl_for(&self, status: http::StatusCode) -> Option<u64> {
        let negative = matches!(status, http::StatusCode::NOT_FOUND | http::StatusCode::GONE);
        if negative && self.negative_ttl_secs > 0 {
            return Some(self.negative_ttl_secs);
        }
        self.default_ttl()
    }
}

/// The shipped rules: audio and its encrypted variants sliced and signed, their query
/// never part of the key (the path names the content), a missing one remembered for
/// 10 s; everything else (seek tables,
/// manifests, artwork, other origins' paths) cached whole under the origin's rules, GET
/// and HEAD only.
pub fn defaults() -> Vec<PathPolicy> {
    let content = |prefix| PathPolicy {
        key_params: Some(Vec::new()),
        negative_ttl_secs: 10,
        ..PathPolicy::new(prefix, true, true)
    };
    vec![content("/a/"), content("/enc/")]
}

/// The rules as the request path uses them: longest prefix first, ending with a
/// catch-all `/` (the default rule when the config names none).
pub fn compile(rules: &[PathPolicy]) -> Vec<Arc<PathPolicy>> {
    let mut out: Vec<Arc<PathPolicy>> = rules.iter().cloned().map(Arc::new).collect();
    if !rules.iter().any(|r| r.prefix == "/") {
        out.push(Arc::new(PathPolicy::new("/", false, false)));
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    out
}

/// The rule for `path` among compiled rules: the longest matching prefix.
pub fn for_path(rules: &[Arc<PathPolicy>], path: &str) -> Arc<PathPolicy> {
    rules
        .iter()
        .find(|r| path.starts_with(r.prefix.as_str()))
        .cloned()
        .unwrap_or_else(|| Arc::new(PathPolicy::new("/", false, false)))
}

pub fn validate(rules: &[PathPolicy]) -> Result<(), FieldError> {
    for (i, r) in rules.iter().enumerate() {
        let field = |name: &str| format!("paths[{i}].{name}");
        ensure(r.prefix.starts_with('/'), &field("prefix"), "must start with '/'")?;
        ensure(
            !rules[..i].iter().any(|o| o.prefix == r.prefix),
            &field("prefix"),
            format!("{:?} is listed twice", r.prefix),
        )?;
        ensure(!r.methods.is_empty(), &field("methods"), "must list at least one method (GET, HEAD, ...)")?;
        for (j, m) in r.methods.iter().enumerate() {
            ensure(
                m == "*" || (Method::from_bytes(m.as_bytes()).is_ok() && !m.is_empty()),
                &format!("paths[{i}].methods[{j}]"),
                format!("{m:?} is not an HTTP method"),
            )?;
        }
        ensure(r.default_ttl_secs <= 365 * 86_400, &field("default_ttl_secs"), "must be 0-31536000")?;
        ensure(r.stale_on_error_secs <= 365 * 86_400, &field("stale_on_error_secs"), "must be 0-31536000")?;
        ensure(r.negative_ttl_secs <= 86_400, &field("negative_ttl_secs"), "must be 0-86400")?;
        for (j, p) in r.key_params.iter().flatten().enumerate() {
            ensure(
                !p.is_empty() && !p.contains(['&', '=', ' ']),
                &format!("paths[{i}].key_params[{j}]"),
                format!("{p:?} is not a query parameter name"),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_defaults_are_safe() {
        let mut rules = defaults();
        rules.push(PathPolicy { methods: vec!["*".into()], ..PathPolicy::new("/a/open/", false, false) });
        let rules = compile(&rules);
        assert!(for_path(&rules, "/a/x/high.ogg").slice);
        assert!(for_path(&rules, "/a/x/high.ogg").tokens);
        assert!(!for_path(&rules, "/a/open/x").slice);
        assert!(for_path(&rules, "/a/open/x").allows(&Method::DELETE));
        let other = for_path(&rules, "/seek/x/high.json");
        assert!(!other.slice && !other.tokens);
        assert!(other.allows(&Method::HEAD) && !other.allows(&Method::POST));
        assert!(!for_path(&rules, "/v1/masters").allows(&Method::POST));
    }

    #[test]
    fn bad_rules_name_their_field() {
        let bad = |r: PathPolicy| validate(&[r]).unwrap_err().field;
        assert_eq!(bad(PathPolicy::new("a/", false, false)), "paths[0].prefix");
        assert_eq!(bad(PathPolicy { methods: vec![], ..PathPolicy::new("/", false, false) }), "paths[0].methods");
        assert_eq!(
            bad(PathPolicy { methods: vec!["GE T".into()], ..PathPolicy::new("/", false, false) }),
            "paths[0].methods[0]"
        );
        let twice = validate(&[PathPolicy::new("/a/", true, true), PathPolicy::new("/a/", false, false)]);
        assert_eq!(twice.unwrap_err().field, "paths[1].prefix");
    }
}
