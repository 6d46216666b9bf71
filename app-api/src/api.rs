//! The HTTP API. Users (their API keys) read the catalog; admins (config tokens or
//! admin users) write it and create users. `/openapi.json` describes every route.
//!
//! ```text
//! GET   /v1/tracks/ID            user     a track: artists, album, numbers, audio facts
//! GET   /v1/albums/ID            user     an album and its tracks in order
//! GET   /v1/artists/ID           user     an artist and their albums
//! GET   /v1/me                   user     who the key belongs to
//! GET   /v1/search?q=&types=&limit=  user  tracks, albums, artists; prefix and typo tolerant
//! POST  /v1/admin/tracks         admin    create from a packaged content id
//! GET   /v1/tracks/ID/stream?tier=&country=  user  rights check, then country-bound signed edge URLs
//! PATCH /v1/admin/tracks/ID      admin    edit
//! PUT   /v1/admin/tracks/ID/rights           admin  grant rights in countries
//! GET   /v1/admin/tracks/ID/rights           admin  list them
//! DELETE /v1/admin/tracks/ID/rights/CC       admin  withdraw one
//! POST  /v1/admin/users          admin    create a user; its API key is shown once
//! POST  /v1/playlists            user     create (collaborative or not)
//! GET   /v1/playlists/ID         editor   items in order, version
//! PATCH /v1/playlists/ID         owner    rename
//! DELETE /v1/playlists/ID        owner
//! POST  /v1/playlists/ID/ops     editor   {version, ops: [add|remove|move]} rebased (OT)
//! GET   /v1/playlists/ID/ops?since=V  editor  changes since V
//! PUT   /v1/playlists/ID/editors/USER  owner  share a collaborative playlist
//! GET   /v1/me/playlists, GET /v1/me/likes, PUT|DELETE /v1/me/likes/TRACK
//! POST  /v1/play-events          user     a batch of plays; per event accepted|duplicate|rejected
//! GET   /v1/admin/plays/counts?from=&to=&track=&country=  admin  per track, day, country
//! GET   /v1/admin/plays/status   admin    log head (seq, hash), pipeline lag
//! PUT|GET /v1/admin/tracks/ID/shares  admin  rights holders' shares (basis points)
//! POST  /v1/admin/fraud/scan?month=   admin  flag accounts
//! GET   /v1/admin/fraud?month=&status=  admin  flags
//! POST  /v1/admin/fraud/review   admin    clear or confirm an account's flags
//! GET   /v1/admin/royalties?month=&pool=&currency=&format=&as_of=&force=&close=  admin  the report
//! ```

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use segue_core::server::{json_response, Body, ReqBody};

use crate::catalog::{self, NewTrack, TrackEdit, User};
use crate::error::Error;
use crate::playlists;
use crate::{now_ms, App};

const MAX_BODY: usize = 1 << 20;
/// A full batch of play events (up to 10,000 of a few hundred bytes).
const MAX_PLAY_BODY: usize = 8 << 20;

fn required(query: Option<&str>, name: &str) -> Result<String, Error> {
    segue_core::server::query_param(query, name)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::BadRequest(format!("{name} is required")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlayBatch {
    /// The device's clock when it sent the batch, Unix ms: how wrong it is corrects the
    /// events' `started_ms`.
    #[serde(default)]
    pub(crate) sent_ms: Option<i64>,
    pub(crate) events: Vec<serde_json::Value>,
}

#[derive(serde::Serialize)]
struct PlayResult {
    event_id: String,
    #[serde(flatten)]
    outcome: crate::plays::Outcome,
}

/// Check each event, log the good ones durably, and say what became of each.
pub(crate) async fn play_events(app: &Arc<App>, user: &User, batch: PlayBatch) -> Result<serde_json::Value, Error> {
    use crate::play_store::Applied;
    use crate::plays::{self, Outcome};
    let max = app.config.plays.max_batch;
    if batch.events.len() > max {
        return Err(Error::BadRequest(format!(
            "{} events in one batch; at most {max} (plays.max_batch)",
            batch.events.len()
        )));
    }
    app.rate_limits.play_events(user, batch.events.len())?;
    let parsed: Vec<(String, Result<plays::PlayEvent, plays::Rejection>)> = batch
        .events
        .into_iter()
        .map(|v| {
            let id = v.get("event_id").and_then(|i| i.as_str()).unwrap_or_default().to_owned();
            (id, plays::parse(v, &user.id, user.posts_for_others()))
        })
        .collect();
    let wanted: Vec<&str> = parsed.iter().filter_map(|(_, e)| e.as_ref().ok().map(|e| e.track.as_str())).collect();
    let lengths = app.track_lengths(&wanted).await?;
    let now = now_ms();
    let limits = plays::Limits {
        now_ms: now,
        max_future_ms: app.config.plays.max_future_secs as i64 * 1000,
        max_age_ms: app.config.plays.max_age_days as i64 * 86_400_000,
        clock_offset_ms: plays::clock_offset(now, batch.sent_ms, app.config.plays.clock_tolerance_secs as i64 * 1000),
    };
    let mut results = Vec::with_capacity(parsed.len());
    let mut checked = Vec::with_capacity(parsed.len());
    for (id, event) in parsed {
        checked.push(event.and_then(|e| {
            let length = lengths.get(&e.track).copied();
            // A listener's play happened where its stream session was signed for (a
            // session is bound to the user), else in the account's country; what the
            // client says is not taken on its own.
            if user.posts_for_others() {
                return plays::check(e, &user.id, plays::Place::Told, length, &limits);
            }
            let session = e.session.as_deref().zip(app.signing.as_ref());
            let streamed = session.and_then(|(s, key)| crate::stream::session_country(key, &user.id, s));
            let place = plays::Place::Known(streamed.as_deref().unwrap_or(&user.country));
            plays::check(e, &user.id, place, length, &limits)
        }));
        results.push(PlayResult { event_id: id, outcome: Outcome::Accepted });
    }
    let mut good = Vec::new();
    let mut good_at = Vec::new();
    for (at, c) in checked.into_iter().enumerate() {
        match c {
            Ok(p) => {
                good_at.push(at);
                good.push(p);
            }
            Err(r) => results[at].outcome = Outcome::Rejected { reason: r.reason, message: r.message },
        }
    }
    let fresh = if good.is_empty() { Vec::new() } else { app.plays.append(good).await? };
    for (at, verdict) in good_at.into_iter().zip(fresh) {
        match verdict {
            Applied::New => {}
            Applied::Duplicate => results[at].outcome = Outcome::Duplicate,
            Applied::Conflict => {
                results[at].outcome = Outcome::Conflict {
                    message: "this event id was logged before with a different payload; the first one counts".into(),
                }
            }
            Applied::Refused(r) => results[at].outcome = Outcome::Rejected { reason: r.reason, message: r.message },
        }
    }
    let mut tally = [0u64; 4];
    for r in &results {
        if let Outcome::Rejected { reason, .. } = &r.outcome {
            metrics::counter!("plays_rejected_total", "reason" => *reason).increment(1);
        }
        tally[match r.outcome {
            Outcome::Accepted => 0,
            Outcome::Duplicate => 1,
            Outcome::Conflict { .. } => 2,
            Outcome::Rejected { .. } => 3,
        }] += 1;
    }
    for (n, label) in tally.iter().zip(["accepted", "duplicate", "conflict", "rejected"]) {
        metrics::counter!("plays_events_total", "outcome" => label).increment(*n);
    }
    Ok(serde_json::json!({
        "accepted": tally[0], "duplicates": tally[1], "conflicts": tally[2], "rejected": tally[3],
        "clock_offset_ms": limits.clock_offset_ms, "results": results,
    }))
}

pub async fn handle(app: Arc<App>, req: Request<ReqBody>, peer: std::net::SocketAddr) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = route(&app, req, peer).await.unwrap_or_else(|e| e.response());
    metrics::counter!("app_requests_total", "status" => resp.status().as_str().to_owned()).increment(1);
    if method != Method::GET || !resp.status().is_success() {
        tracing::info!(%method, path, status = resp.status().as_u16(), "request");
    }
    resp
}

/// Who is calling: an admin token from the config, or a user's API key.
async fn caller(app: &App, headers: &http::HeaderMap) -> Result<User, Error> {
    let token = segue_core::server::bearer(headers).ok_or(Error::Unauthorized)?;
    if app.config.admin_tokens.iter().any(|t| segue_core::token::constant_time_eq(t.as_bytes(), token.as_bytes())) {
        return Ok(User {
            id: "admin".into(),
            name: "admin token".into(),
            country: String::new(),
            admin: true,
            gateway: false,
        });
    }
    catalog::user_by_token(&app.pool, token).await?.ok_or(Error::Unauthorized)
}

fn admin_only(user: &User) -> Result<(), Error> {
    if user.admin {
        Ok(())
    } else {
        Err(Error::Forbidden("this needs an admin token".into()))
    }
}

/// A `limit` query parameter: 1-100, default 20.
fn limit(given: Option<&str>) -> Result<usize, Error> {
    match given {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| Error::BadRequest(format!("limit {l:?} must be 1-100"))),
        None => Ok(20),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<ReqBody>) -> Result<T, Error> {
    segue_core::server::read_json(req, MAX_BODY).await.map_err(Error::BadRequest)
}

async fn route(app: &Arc<App>, req: Request<ReqBody>, peer: std::net::SocketAddr) -> Result<Response<Body>, Error> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return Ok(segue_core::server::health_response()),
        (&Method::GET, "/metrics") => return Ok(segue_core::server::metrics_response()),
        (&Method::GET, "/openapi.json") => return Ok(json_response(StatusCode::OK, &crate::openapi::document())),
        (&Method::GET | &Method::HEAD, p) if p == "/" || p.starts_with("/web/") || p == "/index.html" => {
            if let Some(file) = crate::web::serve(p, req.headers()) {
                return Ok(file);
            }
        }
        _ => {}
    }
    // The Subsonic API authenticates and answers errors its own way.
    if let Some(name) = crate::subsonic::endpoint(&path) {
        return Ok(crate::subsonic::handle(app, name, req, peer).await);
    }
    let user = caller(app, req.headers()).await?;
    app.rate_limits.request(&user)?;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "me"]) => Ok(json_response(StatusCode::OK, &user)),
        (&Method::POST, ["v1", "play-events"]) => {
            let batch: PlayBatch =
                segue_core::server::read_json(req, MAX_PLAY_BODY).await.map_err(Error::BadRequest)?;
            Ok(json_response(StatusCode::OK, &play_events(app, &user, batch).await?))
        }
        (&Method::GET, ["v1", "admin", "plays", "counts"]) => {
            admin_only(&user)?;
            let query = req.uri().query();
            let param = |name: &'static str| segue_core::server::query_param(query, name).filter(|v| !v.is_empty());
            let day = |name: &'static str, default: &'static str| -> Result<String, Error> {
                let d = param(name).unwrap_or(default);
                let ok = crate::plays::is_day(d);
                if ok {
                    Ok(d.to_owned())
                } else {
                    Err(Error::BadRequest(format!("{name} {d:?} is not YYYY-MM-DD")))
                }
            };
            let (from, to) = (day("from", "0000-01-01")?, day("to", "9999-12-31")?);
            let rows = crate::play_store::counts(&app.pool, param("track"), param("country"), &from, &to).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "counts": rows })))
        }
        (&Method::GET, ["v1", "admin", "plays", "status"]) => {
            admin_only(&user)?;
            let (seq, hash) = crate::play_store::head(&app.pool).await?;
            let lag = app.plays.lag().await?;
            let log = match app.config.plays.log {
                crate::config::PlayLogKind::Embedded => "embedded",
                crate::config::PlayLogKind::Nats => "nats",
            };
            let conflicts = crate::play_store::conflict_count(&app.pool).await?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "log": log, "seq": seq, "hash": hash, "lag": lag, "conflicts": conflicts }),
            ))
        }
        (&Method::PUT, ["v1", "admin", "tracks", id, "shares"]) => {
            admin_only(&user)?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Shares {
                shares: Vec<crate::royalty::Share>,
            }
            let body: Shares = read_json(req).await?;
            catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
            crate::royalty::set_shares(&app.pool, id, &body.shares, now_ms()).await?;
            tracing::info!(track = id, holders = body.shares.len(), by = user.id, "shares set");
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "shares": body.shares })))
        }
        (&Method::GET, ["v1", "admin", "tracks", id, "shares"]) => {
            admin_only(&user)?;
            let shares = crate::royalty::shares(&app.pool, id).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "shares": shares })))
        }
        (&Method::POST, ["v1", "admin", "fraud", "scan"]) => {
            admin_only(&user)?;
            let month = required(req.uri().query(), "month")?;
            let new = crate::fraud::scan(&app.pool, &month, &app.config.plays.fraud, now_ms()).await?;
            let flags = crate::fraud::list(&app.pool, &month, None).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "month": month, "new": new, "flags": flags })))
        }
        (&Method::GET, ["v1", "admin", "fraud"]) => {
            admin_only(&user)?;
            let query = req.uri().query();
            let month = required(query, "month")?;
            let status = segue_core::server::query_param(query, "status").filter(|s| !s.is_empty());
            let flags = crate::fraud::list(&app.pool, &month, status).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "month": month, "flags": flags })))
        }
        (&Method::POST, ["v1", "admin", "fraud", "review"]) => {
            admin_only(&user)?;
            let review: crate::fraud::Review = read_json(req).await?;
            let n = crate::fraud::review(&app.pool, &review, &user.id, now_ms()).await?;
            tracing::info!(
                account = review.user,
                month = review.month,
                verdict = review.verdict,
                by = user.id,
                "flags reviewed"
            );
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "user": review.user, "month": review.month, "verdict": review.verdict, "flags": n }),
            ))
        }
        (&Method::GET, ["v1", "admin", "royalties"]) => {
            admin_only(&user)?;
            let query = req.uri().query();
            let pool = required(query, "pool")?;
            let format = segue_core::server::query_param(query, "format").unwrap_or("json");
            if !matches!(format, "json" | "csv") {
                return Err(Error::BadRequest(format!("format {format:?} must be json or csv")));
            }
            let as_of = match segue_core::server::query_param(query, "as_of").filter(|v| !v.is_empty()) {
                Some(v) => Some(v.parse().map_err(|_| Error::BadRequest(format!("as_of {v:?} is not a seq")))?),
                None => None,
            };
            let request = crate::royalty::Request {
                month: required(query, "month")?,
                pool_minor: crate::royalty::parse_money(&pool)
                    .ok_or_else(|| Error::BadRequest(format!("pool {pool:?} is not an amount like 1000.00")))?,
                currency: segue_core::server::query_param(query, "currency").unwrap_or("EUR").to_owned(),
                as_of,
                force: matches!(segue_core::server::query_param(query, "force"), Some("1" | "true")),
                close: matches!(segue_core::server::query_param(query, "close"), Some("1" | "true")),
            };
            let report = crate::royalty::run(&app.pool, &app.config, &app.plays, &request).await?;
            let (body, kind) =
                if format == "csv" { (report.csv(), "text/csv") } else { (report.json(), "application/json") };
            let mut resp = http::Response::new(segue_core::server::full(body));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
            Ok(resp)
        }
        (&Method::GET, ["v1", "search"]) => {
            let query = req.uri().query();
            let param = |name: &str| {
                segue_core::server::query_param(query, name).map(|v| {
                    percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned()
                })
            };
            let q = param("q").ok_or_else(|| Error::BadRequest("q is required".into()))?;
            let types = param("types").unwrap_or_default();
            let kinds: Vec<&str> = types.split(',').filter(|t| !t.is_empty()).collect();
            if let Some(bad) = kinds.iter().find(|k| !matches!(**k, "track" | "album" | "artist")) {
                return Err(Error::BadRequest(format!("types: {bad:?} is not track, album or artist")));
            }
            let limit = limit(param("limit").as_deref())?;
            let started = std::time::Instant::now();
            let hits = app.search.search(&q, &kinds, limit)?;
            metrics::histogram!("app_search_seconds").record(started.elapsed().as_secs_f64());
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "q": q, "hits": hits })))
        }
        (&Method::GET, ["v1", "tracks", id]) => {
            let t = catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
            Ok(json_response(StatusCode::OK, &t))
        }
        (&Method::GET, ["v1", "tracks", id, "radio"]) => {
            let limit = limit(segue_core::server::query_param(req.uri().query(), "limit"))?;
            catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
            let country = crate::rights::listener_country(&user, None, app.geo.country(peer.ip(), req.headers()))?;
            let snap = app.recs.snapshot(&app.pool).await?;
            let similar = snap.similar(id, crate::recs::discover::CANDIDATES)?;
            let picked =
                crate::recs::discover::playable(app, &snap, similar.iter().copied(), &country, now_ms(), limit).await?;
            let picked: Vec<_> = picked
                .into_iter()
                .map(|(t, score)| serde_json::json!({ "track_id": snap.ids[t as usize], "score": score }))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "track_id": id, "model": snap.model, "country": country, "tracks": picked }),
            ))
        }
        (&Method::GET | &Method::POST, ["v1", "me", "api-key"]) => {
            if user.id == "admin" {
                return Err(Error::Forbidden("admin tokens live in the config, not in the database".into()));
            }
            if method == Method::GET {
                let fingerprint = catalog::token_fingerprint(&app.pool, &user.id).await?;
                return Ok(json_response(StatusCode::OK, &serde_json::json!({ "fingerprint": fingerprint })));
            }
            let key = catalog::rotate_token(&app.pool, &user.id).await?;
            tracing::info!(user = user.id, "api key rotated by its user");
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "api_key": key })))
        }
        (&Method::POST, ["v1", "admin", "users", id, "api-key"]) => {
            admin_only(&user)?;
            let key = catalog::rotate_token(&app.pool, id).await?;
            tracing::info!(user = id, by = user.id, "api key revoked and replaced");
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "api_key": key })))
        }
        (&Method::PUT, ["v1", "me", "subsonic-login"]) => {
            let new: crate::subsonic::auth::NewLogin = read_json(req).await?;
            Ok(json_response(StatusCode::OK, &crate::subsonic::auth::set(app, &user, new, now_ms()).await?))
        }
        (&Method::DELETE, ["v1", "me", "subsonic-login"]) => {
            crate::subsonic::auth::remove(app, &user).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "removed": true })))
        }
        (&Method::GET, ["v1", "me", "discover-weekly"]) => {
            let country = crate::rights::listener_country(&user, None, app.geo.country(peer.ip(), req.headers()))?;
            let list = crate::recs::discover::discover_weekly(app, &user, &country, now_ms()).await?;
            Ok(json_response(StatusCode::OK, &list))
        }
        (&Method::GET, ["v1", "me", "daily-mixes"]) => {
            let country = crate::rights::listener_country(&user, None, app.geo.country(peer.ip(), req.headers()))?;
            let mixes = crate::recs::discover::daily_mixes(app, &user, &country, now_ms()).await?;
            Ok(json_response(StatusCode::OK, &mixes))
        }
        (&Method::GET, ["v1", "tracks", id, "stream"]) => {
            let query = req.uri().query();
            let tier = segue_core::server::query_param(query, "tier").unwrap_or("high");
            let tier: segue_core::Tier = tier.parse().map_err(|_| {
                Error::BadRequest(format!(
                    "tier {tier:?} is not one of {}",
                    segue_core::Tier::ALL.map(|t| t.as_str()).join(", ")
                ))
            })?;
            let located = app.geo.country(peer.ip(), req.headers());
            let asked = segue_core::server::query_param(query, "country");
            let country = crate::rights::listener_country(&user, asked, located)?;
            let stream = stream_url(app, &user, id, tier, &country).await?;
            Ok(json_response(StatusCode::OK, &stream))
        }
        (&Method::PUT, ["v1", "admin", "tracks", id, "rights"]) => {
            admin_only(&user)?;
            let grant: crate::rights::Grant = read_json(req).await?;
            let rights = app.rights.grant(&app.pool, id, &grant, now_ms()).await?;
            if let Some(track) = catalog::track(&app.pool, id).await? {
                for c in &grant.countries {
                    crate::rights::lift_withdrawal(&app.config, &track.content_id, c).await;
                }
            }
            tracing::info!(track = id, countries = grant.countries.len(), by = user.id, "rights granted");
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "rights": rights })))
        }
        (&Method::PUT | &Method::DELETE, ["v1", "admin", "tracks", id, "lyrics", lang]) => {
            admin_only(&user)?;
            crate::lyrics::check_lang(lang)?;
            catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
            if method == Method::DELETE {
                if !crate::lyrics::remove(&app.pool, id, lang).await? {
                    return Err(Error::NotFound(format!("track {id:?} has no lyrics in {lang:?}")));
                }
                return Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "removed": lang })));
            }
            let new: crate::lyrics::NewLyrics = read_json(req).await?;
            let lyrics = crate::lyrics::parse(lang, &new.text)?;
            crate::lyrics::put(&app.pool, id, &lyrics, now_ms()).await?;
            tracing::info!(track = id, lang, synced = lyrics.synced, by = user.id, "lyrics set");
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "lyrics": lyrics })))
        }
        (&Method::GET, ["v1", "tracks", id, "lyrics"]) => {
            catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
            let lyrics = crate::lyrics::of_track(&app.pool, id).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "lyrics": lyrics })))
        }
        (&Method::GET, ["v1", "admin", "tracks", id, "rights"]) => {
            admin_only(&user)?;
            let rights = app.rights.list(&app.pool, id).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "rights": rights })))
        }
        (&Method::DELETE, ["v1", "admin", "tracks", id, "rights", country]) => {
            admin_only(&user)?;
            crate::rights::check_country(country)?;
            let track =
                catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
            // POPs first: once the right is gone here no new URL is signed, and the
            // withdrawal stops the ones already out.
            crate::rights::push_withdrawal(&app.config, &track.content_id, country, now_ms()).await?;
            if !app.rights.revoke(&app.pool, id, country).await? {
                return Err(Error::NotFound(format!("track {id:?} has no right in {country}")));
            }
            tracing::info!(track = id, country, by = user.id, "right withdrawn");
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": id, "withdrawn": country })))
        }
        (&Method::POST, ["v1", "playlists"]) => {
            let new: playlists::NewPlaylist = read_json(req).await?;
            let p = playlists::create(&app.pool, &user, &new, now_ms()).await?;
            Ok(json_response(StatusCode::CREATED, &p))
        }
        (&Method::GET, ["v1", "playlists", id]) => {
            Ok(json_response(StatusCode::OK, &playlists::get(&app.pool, id, &user).await?))
        }
        (&Method::PATCH, ["v1", "playlists", id]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Rename {
                name: String,
            }
            let r: Rename = read_json(req).await?;
            Ok(json_response(StatusCode::OK, &playlists::rename(&app.pool, id, &user, &r.name, now_ms()).await?))
        }
        (&Method::DELETE, ["v1", "playlists", id]) => {
            playlists::delete(&app.pool, id, &user, now_ms()).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": id })))
        }
        (&Method::POST, ["v1", "playlists", id, "ops"]) => {
            let edit: playlists::Edit = read_json(req).await?;
            let result = playlists::edit(&app.pool, id, &user, &edit, now_ms()).await?;
            metrics::counter!("app_playlist_ops_total").increment(result.applied.len() as u64);
            app.live.playlist_changed(id);
            Ok(json_response(StatusCode::OK, &result))
        }
        (&Method::POST, ["v1", "playlists", id, "shuffle"]) => {
            let query = req.uri().query();
            let smart = match segue_core::server::query_param(query, "smart") {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => return Err(Error::BadRequest(format!("smart {v:?} is not true or false"))),
            };
            let every =
                match segue_core::server::query_param(query, "every") {
                    None => crate::recs::smart_shuffle::EVERY,
                    Some(v) => v.parse::<usize>().ok().filter(|n| (1..=50).contains(n)).ok_or_else(|| {
                        Error::BadRequest(format!("every {v:?} is not a number of tracks from 1 to 50"))
                    })?,
                };
            let p = playlists::get(&app.pool, id, &user).await?;
            if !smart {
                return Ok(json_response(StatusCode::OK, &playlists::shuffled(&app.pool, &p).await?));
            }
            let country = crate::rights::listener_country(&user, None, app.geo.country(peer.ip(), req.headers()))?;
            let out = crate::recs::smart_shuffle::smart_shuffled(app, &p, &country, every, now_ms()).await?;
            Ok(json_response(StatusCode::OK, &out))
        }
        (&Method::GET, ["v1", "playlists", id, "events"]) => crate::live::playlist_events(app, id, &user).await,
        (&Method::GET, ["v1", "playlists", id, "ops"]) => {
            let since = segue_core::server::query_param(req.uri().query(), "since").unwrap_or("0");
            let since: i64 =
                since.parse().map_err(|_| Error::BadRequest(format!("since {since:?} is not a version")))?;
            Ok(json_response(StatusCode::OK, &playlists::ops_since(&app.pool, id, &user, since).await?))
        }
        (&Method::PUT, ["v1", "playlists", id, "editors", editor]) => {
            playlists::add_editor(&app.pool, id, &user, editor).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "playlist": id, "editor": editor })))
        }
        (&Method::GET, ["v1", "me", "playlists"]) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "playlists": playlists::mine(&app.pool, &user).await? }),
        )),
        (&Method::GET, ["v1", "me", "likes"]) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "likes": playlists::likes(&app.pool, &user).await? }),
        )),
        (&Method::PUT | &Method::DELETE, ["v1", "me", "likes", track]) => {
            playlists::set_like(app, &user, track, method == Method::PUT, now_ms()).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "track_id": track, "liked": method == Method::PUT })))
        }
        (&Method::GET, ["v1", "albums", id]) => {
            let a = catalog::album(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no album {id:?}")))?;
            Ok(json_response(StatusCode::OK, &a))
        }
        (&Method::GET, ["v1", "albums", id, "cover"]) => {
            if !catalog::album_exists(&app.pool, id).await? {
                return Err(Error::NotFound(format!("no album {id:?}")));
            }
            let size =
                segue_core::server::query_param(req.uri().query(), "size").and_then(|s| s.parse().ok()).unwrap_or(512);
            let png = crate::subsonic::cover::cached(app, (*id).to_owned(), size)
                .await
                .map_err(|e| Error::Database(format!("cover art: {e}")))?;
            let mut r = Response::new(segue_core::server::full(png));
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("image/png"));
            r.headers_mut()
                .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("private, max-age=604800"));
            Ok(r)
        }
        (&Method::GET, ["v1", "artists", id]) => {
            let a =
                catalog::artist(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no artist {id:?}")))?;
            Ok(json_response(StatusCode::OK, &a))
        }
        (&Method::POST, ["v1", "admin", "tracks"]) => {
            admin_only(&user)?;
            let mut new: NewTrack = read_json(req).await?;
            new.validate()?;
            let manifest = app.manifest(&new.content_id).await?;
            let id = catalog::create_track(&app.pool, &new, &manifest, now_ms()).await?;
            tracing::info!(track = id, content_id = new.content_id, by = user.id, "track created");
            let t = catalog::track(&app.pool, &id).await?.ok_or_else(|| Error::NotFound(id.clone()))?;
            app.search.put(crate::search::Entry::for_track(&t, 0))?;
            Ok(json_response(StatusCode::CREATED, &t))
        }
        (&Method::PATCH, ["v1", "admin", "tracks", id]) => {
            admin_only(&user)?;
            let edit: TrackEdit = read_json(req).await?;
            catalog::edit_track(&app.pool, id, &edit, now_ms()).await?;
            tracing::info!(track = id, by = user.id, "track edited");
            let t = catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
            let likes = playlists::like_count(&app.pool, id).await?;
            app.search.put(crate::search::Entry::for_track(&t, likes))?;
            Ok(json_response(StatusCode::OK, &t))
        }
        (&Method::POST, ["v1", "admin", "users"]) => {
            admin_only(&user)?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct NewUser {
                name: String,
                country: String,
                #[serde(default)]
                admin: bool,
                #[serde(default)]
                gateway: bool,
            }
            let u: NewUser = read_json(req).await?;
            let (created, token) =
                catalog::create_user(&app.pool, &u.name, &u.country, u.admin, u.gateway, now_ms()).await?;
            tracing::info!(
                user = created.id,
                admin = created.admin,
                gateway = created.gateway,
                by = user.id,
                "user created"
            );
            Ok(json_response(StatusCode::CREATED, &serde_json::json!({ "user": created, "api_key": token })))
        }
        (&Method::GET, ["v1", "drm", "server-key"]) => Ok(json_response(StatusCode::OK, &app.drm.public())),
        (&Method::POST, ["v1", "drm", "devices"]) => {
            let d: crate::drm::NewDevice = read_json(req).await?;
            let device = crate::drm::register(&app.pool, &app.config.drm, &user, &d, now_ms()).await?;
            Ok(json_response(StatusCode::CREATED, &device))
        }
        (&Method::GET, ["v1", "drm", "devices"]) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "devices": crate::drm::devices(&app.pool, &user).await? }),
        )),
        (&Method::DELETE, ["v1", "drm", "devices", id]) => {
            crate::drm::remove(&app.pool, &user, id, now_ms()).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "removed": id })))
        }
        (&Method::POST, ["v1", "drm", "licenses"]) => {
            let located = app.geo.country(peer.ip(), req.headers());
            let r: crate::drm::LicenseRequest = read_json(req).await?;
            let started = std::time::Instant::now();
            let issued = crate::drm::issue(app, &user, &r, located, now_ms()).await?;
            metrics::histogram!("drm_license_issue_seconds").record(started.elapsed().as_secs_f64());
            Ok(json_response(StatusCode::CREATED, &issued))
        }
        (&Method::GET, ["v1", "drm", "licenses", id, "downloads"]) => {
            Ok(json_response(StatusCode::OK, &crate::drm::downloads(app, &user, id, now_ms()).await?))
        }
        (&Method::POST, ["v1", "drm", "renewals"]) => {
            let r: crate::drm::RenewRequest = read_json(req).await?;
            Ok(json_response(StatusCode::OK, &crate::drm::renew(app, &user, &r.licenses, now_ms()).await?))
        }
        (&Method::PUT, ["v1", "admin", "users", id, "subscription"]) => {
            admin_only(&user)?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Subscription {
                ends_ms: i64,
            }
            let sub: Subscription = read_json(req).await?;
            crate::drm::set_subscription(&app.pool, id, sub.ends_ms).await?;
            tracing::info!(user = id, ends_ms = sub.ends_ms, by = user.id, "subscription set");
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "user": id, "ends_ms": sub.ends_ms })))
        }
        (_, ["v1", "tracks" | "albums" | "artists" | "me" | "search" | "admin" | "playlists" | "drm", ..]) => {
            Ok(segue_core::server::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{method} {path}"),
            ))
        }
        _ => Err(Error::NotFound(format!("no route {path}"))),
    }
}

/// Rights check, POP choice and signing for one stream request.
pub(crate) async fn stream_url(
    app: &Arc<App>,
    user: &User,
    id: &str,
    tier: segue_core::Tier,
    country: &str,
) -> Result<crate::stream::Stream, Error> {
    let track = catalog::track(&app.pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
    let now = now_ms();
    let right = app.rights.check(&app.pool, id, country, now).await?;
    let release_at = right.release_at_ms;
    let key =
        app.signing.as_ref().ok_or_else(|| Error::Unavailable("stream URLs need [signing] in the config".into()))?;
    let region = app.config.region_of(country);
    let (primary, fallback, pops_from) = crate::stream::choose(&app.pops, &app.config, region, &user.id, id).await?;
    // Never valid past the right's end.
    let exp = ((now / 1000) as u64 + app.config.signing.ttl_secs).min((right.valid_until_ms / 1000).max(0) as u64);
    // Not-before = the release time: an edge refuses the URL before it, cached bytes or not.
    let nbf = (release_at > 0).then_some((release_at / 1000) as u64);
    let path = format!("/a/{}/{tier}.ogg", track.content_id);
    let session = crate::stream::session_id(key, &user.id, country)?;
    metrics::counter!("app_stream_urls_total", "source" => pops_from).increment(1);
    Ok(crate::stream::Stream {
        track_id: track.id.clone(),
        tier: tier.as_str().to_owned(),
        url: crate::stream::signed(key, &primary, &path, exp, nbf, country, &session),
        fallback_url: fallback.map(|f| crate::stream::signed(key, &f, &path, exp, nbf, country, &session)),
        session,
        country: country.to_owned(),
        seek_table_url: format!("{primary}/seek/{}/{tier}.json", track.content_id),
        expires_at: exp,
        duration_ms: track.duration_ms,
        samples: track.samples,
        sample_rate: track.sample_rate,
        encoder_delay: 0,
        padding: 0,
        loudness: track.loudness,
        pops_from,
    })
}
