//! The OpenSubsonic API (`/rest/*`), for the players that speak it (DSub, Symfonium,
//! Feishin, Supersonic...), served from the same catalog, users and keys as `/v1`.
//!
//! The conventions clients rely on: every endpoint answers with and without `.view`;
//! parameters come from the query or, for POST, a form body (the `formPost`
//! extension); `f=json` answers JSON, anything else XML (Subsonic's default); failures
//! are HTTP 200 with `status: "failed"` and a Subsonic error code (even where the
//! success would have been audio); boolean parameters are case-insensitive.
//!
//! Authentication: `apiKey=` (the `apiKeyAuthentication` extension), or the legacy
//! password schemes for older players (see `auth`).

mod activity;
pub mod auth;
mod browse;
pub mod cover;
mod folders;
mod lists;
mod lyrics;
mod playlists;
mod proxy;
mod search;
mod xml;

pub use activity::{now_playing_cache, NowPlaying};

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::catalog::User;
use crate::error::Error;
use crate::App;
use segue_core::server::{Body, ReqBody};

/// The Subsonic API version these answers follow.
pub const API_VERSION: &str = "1.16.1";
/// Where a client can send its user to learn about API keys (error 42's `helpUrl`).
pub const HELP_URL: &str = "https://github.com/segue-music/segue/blob/main/docs/OPERATING.md#subsonic-clients";
/// The largest form body read (parameters only).
const MAX_FORM: usize = 64 << 10;

/// A Subsonic error: its code and message (the spec's wording where it has one).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: u16,
    pub message: String,
    pub help_url: Option<&'static str>,
}

impl Failure {
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), help_url: None }
    }

    pub fn missing(name: &str) -> Failure {
        Failure::new(10, format!("Required parameter is missing: {name}"))
    }
}

/// The app API's errors in Subsonic's codes.
impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e {
            Error::NotFound(m) => Failure::new(70, format!("The requested data was not found: {m}")),
            Error::Unauthorized => Failure::new(44, "Invalid API key"),
            Error::Forbidden(m) | Error::Embargoed(m) | Error::CountryMismatch(m) => {
                Failure::new(50, format!("User is not authorized for the given operation: {m}"))
            }
            Error::BadRequest(m) => Failure::new(10, m),
            other => Failure::new(0, other.to_string()),
        }
    }
}

/// The merged parameters of a call: the query string, then a form body's.
pub struct Params(HashMap<String, Vec<String>>);

impl Params {
    fn parse(into: &mut HashMap<String, Vec<String>>, text: &str) {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            into.entry(decode(k)).or_default().push(decode(v));
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn required(&self, name: &str) -> Result<&str, Failure> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| Failure::missing(name))
    }

    /// A whole number; absent or empty is `default`.
    pub fn number(&self, name: &str, default: i64) -> Result<i64, Failure> {
        match self.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Failure::new(0, format!("{name} {v:?} is not a number"))),
        }
    }

    /// A boolean: `true`/`false` in any case; absent is `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, Failure> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Failure::new(0, format!("{name} {v:?} is not true or false"))),
        }
    }
}

/// Read a call's parameters: the query, and for POST a form body.
async fn params(req: Request<ReqBody>) -> Result<Params, Failure> {
    let mut map = HashMap::new();
    if let Some(q) = req.uri().query() {
        Params::parse(&mut map, q);
    }
    if req.method() == Method::POST {
        let form = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = segue_core::server::read_body(req, MAX_FORM).await.map_err(|e| Failure::new(0, e))?;
        if form {
            Params::parse(&mut map, &String::from_utf8_lossy(&body));
        }
    }
    Ok(Params(map))
}

/// `/rest/NAME` or `/rest/NAME.view`: NAME, if the path is one.
pub fn endpoint(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/rest/")?;
    let name = name.strip_suffix(".view").unwrap_or(name);
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Serve one `/rest/` call.
pub async fn handle(app: &Arc<App>, name: &str, req: Request<ReqBody>, peer: std::net::SocketAddr) -> Response<Body> {
    let mut json_format = segue_core::server::query_param(req.uri().query(), "f") == Some("json");
    let method = req.method().clone();
    let located = app.geo.country(peer.ip(), req.headers());
    let answer = async {
        if method != Method::GET && method != Method::POST {
            return Err(Failure::new(0, format!("{method} is not GET or POST")));
        }
        let client_headers = req.headers().clone();
        let p = params(req).await?;
        // `f` may come in a form body too.
        json_format = p.get("f") == Some("json");
        check_version(p.get("v"))?;
        let user = auth::authenticate(app, &p).await?;
        app.rate_limits.request(&user).map_err(Failure::from)?;
        match call(app, name, &user, &p, located).await? {
            Answer::Proxy(url) => {
                let timeout = std::time::Duration::from_secs(app.config.request_timeout_secs);
                Ok(Answer::Relayed(proxy::relay(&url, &client_headers, timeout).await?))
            }
            other => Ok(other),
        }
    }
    .await;
    metrics::counter!("app_subsonic_requests_total", "status" => if answer.is_ok() { "ok" } else { "failed" })
        .increment(1);
    match answer {
        Ok(Answer::Payload(payload)) => render(payload, None, json_format),
        Ok(Answer::Redirect(url)) => redirect(&url),
        Ok(Answer::Relayed(r)) => r,
        // `call` answers a URL to proxy only for the block above to relay it.
        Ok(Answer::Proxy(url)) => redirect(&url),
        Ok(Answer::Image(png)) => {
            let mut r = Response::new(segue_core::server::full(png));
            let headers = r.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("image/png"));
            // A cover depends only on its id and size: clients and caches keep it.
            headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=604800"));
            r
        }
        Err(f) => {
            tracing::info!(endpoint = name, code = f.code, message = %f.message, "subsonic call failed");
            render(Map::new(), Some(&f), json_format)
        }
    }
}

/// The client's protocol version `v`: another major version cannot be spoken (20: the
/// client's is older, 30: newer). Minor versions are compatible both ways, as clients
/// expect.
fn check_version(v: Option<&str>) -> Result<(), Failure> {
    let Some(major) = v.and_then(|v| v.split('.').next()).and_then(|m| m.trim().parse::<u32>().ok()) else {
        return Ok(());
    };
    match major {
        0 => Err(Failure::new(20, "Incompatible Subsonic REST protocol version. Client must upgrade")),
        1 => Ok(()),
        _ => Err(Failure::new(30, "Incompatible Subsonic REST protocol version. Server must upgrade")),
    }
}

/// What a call answers: a payload in the envelope, or audio elsewhere.
enum Answer {
    Payload(Map<String, Value>),
    /// A 302 to a signed edge URL: clients replay it as GET, with their `Range`, and the
    /// URL carries its own authorisation.
    Redirect(String),
    /// A picture (`getCoverArt`).
    Image(bytes::Bytes),
    /// Audio to fetch from this signed edge URL and relay (`[subsonic] stream = "proxy"`).
    Proxy(String),
    /// The edge's answer, relayed.
    Relayed(Response<Body>),
}

fn redirect(url: &str) -> Response<Body> {
    let mut r = Response::new(segue_core::server::full(Vec::new()));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = http::HeaderValue::from_str(url) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

/// The tier for a client's `maxBitRate` (kbps; 0 or absent: no limit) and `format`
/// (`raw`: the best stored): the best tier within the limit, the lowest when none is.
fn tier_for(p: &Params, download: bool) -> Result<segue_core::Tier, Failure> {
    use segue_core::Tier;
    let max: u32 = match p.get("maxBitRate").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => v.parse().map_err(|_| Failure::new(0, format!("maxBitRate {v:?} is not a number")))?,
    };
    if download || p.get("format") == Some("raw") {
        return Ok(Tier::VeryHigh);
    }
    if max == 0 {
        return Ok(Tier::High);
    }
    Ok(Tier::ALL.into_iter().filter(|t| t.kbps() <= max).max_by_key(|t| t.kbps()).unwrap_or(Tier::Low))
}

/// The OpenSubsonic extensions served, with their versions.
fn extensions() -> Value {
    json!([
        { "name": "apiKeyAuthentication", "versions": [1] },
        { "name": "formPost", "versions": [1] },
        { "name": "songLyrics", "versions": [1] },
    ])
}

async fn call(app: &Arc<App>, name: &str, user: &User, p: &Params, located: Option<String>) -> Result<Answer, Failure> {
    let mut out = Map::new();
    match name {
        "stream" | "download" => {
            let id = p.required("id")?;
            let tier = tier_for(p, name == "download")?;
            let country = crate::rights::listener_country(user, None, located).map_err(Failure::from)?;
            // A track the listener may not play where they are is not there for them.
            let s = crate::api::stream_url(app, user, id, tier, &country).await.map_err(|e| match e {
                Error::Forbidden(m) | Error::Embargoed(m) => {
                    Failure::new(70, format!("The requested data was not found: {m}"))
                }
                other => Failure::from(other),
            })?;
            return Ok(match app.config.subsonic.stream {
                crate::config::StreamMode::Redirect => Answer::Redirect(s.url),
                crate::config::StreamMode::Proxy => Answer::Proxy(s.url),
            });
        }
        "ping" => {}
        "tokenInfo" => {
            out.insert("tokenInfo".into(), json!({ "username": user.name }));
        }
        "getLicense" => {
            out.insert("license".into(), json!({ "valid": true }));
        }
        "getOpenSubsonicExtensions" => {
            out.insert("openSubsonicExtensions".into(), extensions());
        }
        "getMusicFolders" => {
            out.insert("musicFolders".into(), json!({ "musicFolder": [{ "id": 1, "name": "Segue" }] }));
        }
        "getUser" => {
            out.insert(
                "user".into(),
                json!({
                    "username": user.name, "scrobblingEnabled": true, "adminRole": user.admin,
                    "settingsRole": false, "downloadRole": true, "uploadRole": false, "playlistRole": true,
                    "coverArtRole": false, "commentRole": false, "podcastRole": false, "streamRole": true,
                    "jukeboxRole": false, "shareRole": false, "videoConversionRole": false, "folder": [1],
                }),
            );
        }
        "getArtists" => {
            out.insert("artists".into(), browse::artists(app).await?);
        }
        "getArtist" => {
            out.insert("artist".into(), browse::artist(app, p.required("id")?).await?);
        }
        "getAlbum" => {
            out.insert("album".into(), browse::album(app, p.required("id")?).await?);
        }
        "getSong" => {
            out.insert("song".into(), browse::song(app, p.required("id")?).await?);
        }
        "getAlbumList2" => {
            out.insert("albumList2".into(), lists::album_list2(app, user, p).await?);
        }
        "getRandomSongs" => {
            out.insert("randomSongs".into(), lists::random_songs(app, p).await?);
        }
        "scrobble" => activity::scrobble(app, user, p).await?,
        "getNowPlaying" => {
            out.insert("nowPlaying".into(), activity::now_playing(app).await?);
        }
        "star" | "unstar" => activity::star(app, user, p, name == "star").await?,
        "getStarred2" => {
            out.insert("starred2".into(), activity::starred2(app, user).await?);
        }
        "getPlaylists" => {
            out.insert("playlists".into(), playlists::list(app, user).await?);
        }
        "getPlaylist" => {
            out.insert("playlist".into(), playlists::get(app, user, p.required("id")?).await?);
        }
        "createPlaylist" => {
            out.insert("playlist".into(), playlists::create(app, user, p).await?);
        }
        "updatePlaylist" => playlists::update(app, user, p).await?,
        "deletePlaylist" => playlists::delete(app, user, p.required("id")?).await?,
        "search3" => {
            out.insert("searchResult3".into(), search::search3(app, p).await?);
        }
        "getLyricsBySongId" => {
            out.insert("lyricsList".into(), lyrics::by_song(app, p.required("id")?).await?);
        }
        "getLyrics" => {
            out.insert("lyrics".into(), lyrics::by_name(app, p).await?);
        }
        "getCoverArt" => return Ok(Answer::Image(cover::cover(app, p).await?)),
        "getIndexes" => {
            out.insert("indexes".into(), folders::indexes(app, p).await?);
        }
        "getMusicDirectory" => {
            out.insert("directory".into(), folders::directory(app, p.required("id")?).await?);
        }
        "getGenres" => {
            out.insert("genres".into(), browse::genres(app).await?);
        }
        _ => return Err(Failure::new(0, format!("unknown endpoint {name:?}"))),
    }
    Ok(Answer::Payload(out))
}

/// The `subsonic-response` envelope around `payload` (or `failure`), as JSON or XML.
fn render(payload: Map<String, Value>, failure: Option<&Failure>, json_format: bool) -> Response<Body> {
    let mut body = Map::new();
    body.insert("status".into(), json!(if failure.is_some() { "failed" } else { "ok" }));
    body.insert("version".into(), json!(API_VERSION));
    body.insert("type".into(), json!("segue"));
    body.insert("serverVersion".into(), json!(env!("CARGO_PKG_VERSION")));
    body.insert("openSubsonic".into(), json!(true));
    if let Some(f) = failure {
        let mut e = json!({ "code": f.code, "message": f.message });
        if let Some(u) = f.help_url {
            e["helpUrl"] = json!(u);
        }
        body.insert("error".into(), e);
    }
    body.extend(payload);
    let (content_type, bytes) = if json_format {
        ("application/json", serde_json::to_vec(&json!({ "subsonic-response": body })).unwrap_or_default())
    } else {
        let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        xml::element(&mut xml, "subsonic-response", &body, Some("http://subsonic.org/restapi"));
        ("text/xml; charset=utf-8", xml.into_bytes())
    };
    let mut r = Response::new(segue_core::server::full(bytes));
    *r.status_mut() = StatusCode::OK;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_answer_with_and_without_view() {
        assert_eq!(endpoint("/rest/ping.view"), Some("ping"));
        assert_eq!(endpoint("/rest/ping"), Some("ping"));
        assert_eq!(endpoint("/rest/"), None);
        assert_eq!(endpoint("/rest/a/b"), None);
        assert_eq!(endpoint("/v1/ping"), None);
    }

    #[test]
    fn parameters_merge_and_decode() {
        let mut m = HashMap::new();
        Params::parse(&mut m, "id=a&id=b&query=hello+world%21&flag=TRUE");
        let p = Params(m);
        assert_eq!(p.all("id"), ["a", "b"]);
        assert_eq!(p.get("query"), Some("hello world!"));
        assert_eq!(p.flag("flag", false), Ok(true));
        assert_eq!(p.flag("absent", true), Ok(true));
        assert!(p.flag("query", false).is_err());
        assert_eq!(p.required("nope").unwrap_err().code, 10);
    }
}
