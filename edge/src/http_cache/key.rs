//! The primary cache key (RFC 9111 §2): the target URI's path and query, without the
//! signed-URL parameters, so every client's differently signed URL for one object shares
//! one entry, and with only the parameters its path rule keeps (`key_params`), so nobody
//! can mint new entries of a content-addressed object by adding `&x=N`. The key is also
//! what a fill asks upstream for. `Vary` adds secondary keys (`vary.rs`).

/// Query parameters of a signed URL (`segue_core::token`): they authorise a request and
/// never select a response.
const TOKEN_PARAMS: [&str; 5] = ["exp", "kid", "sig", "nbf", "country"];

/// `keep`: the parameter names that select a response under this path (`None`: all).
pub fn cache_key(path: &str, query: Option<&str>, keep: Option<&[String]>) -> String {
    let name = |p: &&str| p.split('=').next().unwrap_or("").to_owned();
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !TOKEN_PARAMS.contains(&name(p).as_str()))
        .filter(|p| keep.is_none_or(|k| k.contains(&name(p))))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_parameters_never_split_the_cache() {
        let table = [
            ("/a/x/high.ogg", None, "/a/x/high.ogg"),
            ("/a/x/high.ogg", Some("exp=1&kid=k&sig=s"), "/a/x/high.ogg"),
            ("/a/x/high.ogg", Some("exp=1&kid=k&sig=s&country=SE&nbf=0"), "/a/x/high.ogg"),
            ("/list", Some("page=2&sig=s&sort=a"), "/list?page=2&sort=a"),
            ("/list", Some("page=1"), "/list?page=1"),
            ("/list", Some("&&"), "/list"),
            ("/list", Some("signature=x"), "/list?signature=x"),
        ];
        for (path, query, want) in table {
            assert_eq!(cache_key(path, query, None), want, "{path} {query:?}");
        }
    }

    #[test]
    fn path_rules_keep_only_the_parameters_they_name() {
        let none: &[String] = &[];
        let page = ["page".to_owned()];
        assert_eq!(cache_key("/a/x/high.ogg", Some("x=1&exp=1&sig=s"), Some(none)), "/a/x/high.ogg");
        assert_eq!(cache_key("/list", Some("x=1&page=2&sig=s&y"), Some(&page)), "/list?page=2");
        assert_eq!(cache_key("/list", Some("x=1"), Some(&page)), "/list");
    }
}
