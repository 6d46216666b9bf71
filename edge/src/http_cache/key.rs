//! The primary cache key (RFC 9111 §2): the target URI's path and query, without the
//! signed-URL parameters, so every client's differently signed URL for one object shares
//! one entry. `Vary` adds secondary keys (`vary.rs`).

/// Query parameters of a signed URL (`segue_core::token`): they authorise a request and
/// never select a response.
const TOKEN_PARAMS: [&str; 5] = ["exp", "kid", "sig", "nbf", "country"];

pub fn cache_key(path: &str, query: Option<&str>) -> String {
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !TOKEN_PARAMS.contains(&p.split('=').next().unwrap_or("")))
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
            assert_eq!(cache_key(path, query), want, "{path} {query:?}");
        }
    }
}
