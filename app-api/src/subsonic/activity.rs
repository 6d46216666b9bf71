//! What a listener does through a Subsonic client: `scrobble` (a submission is a play,
//! counted exactly once; otherwise "now playing"), `getNowPlaying`, and stars
//! (`star`, `unstar`, `getStarred2`).
//!
//! A scrobble's event id is derived from the user, the track and the play's start
//! time, so a client that retries a scrobble is answered "duplicate", not counted
//! again. A play is as long as the track (clients scrobble a track they played
//! through), from the client device named by `c`.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::Row;

use super::browse::{self, db};
use super::{Failure, Params};
use crate::catalog::User;
use crate::App;

/// How long a "now playing" entry is shown after its last report.
const NOW_PLAYING_MS: i64 = 15 * 60_000;

/// Who is playing what now: user id -> (user name, track, since ms, client name).
pub type NowPlaying = moka::sync::Cache<String, (String, String, i64, String)>;

pub fn now_playing_cache() -> NowPlaying {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(std::time::Duration::from_millis(NOW_PLAYING_MS as u64))
        .build()
}

fn event_id(user: &str, track: &str, started_ms: i64) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("scrobble\0{user}\0{track}\0{started_ms}").as_bytes());
    let hex: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("subsonic-{hex}")
}

/// `scrobble?id=...&time=...&submission=`.
pub async fn scrobble(app: &Arc<App>, user: &User, p: &Params) -> Result<(), Failure> {
    let ids = p.all("id");
    if ids.is_empty() {
        return Err(Failure::missing("id"));
    }
    let times = p.all("time");
    let submission = p.flag("submission", true)?;
    let client = p.get("c").filter(|c| !c.is_empty()).unwrap_or("subsonic");
    let device: String = format!("subsonic:{client}").chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    let now = crate::now_ms();
    if !submission {
        let id = &ids[ids.len() - 1];
        browse::song(app, id).await?;
        app.now_playing.insert(user.id.clone(), (user.name.clone(), id.clone(), now, client.to_owned()));
        return Ok(());
    }
    let mut events = Vec::with_capacity(ids.len());
    for (k, id) in ids.iter().enumerate() {
        let track = crate::catalog::track(&app.pool, id)
            .await
            .map_err(Failure::from)?
            .ok_or_else(|| Failure::new(70, format!("The requested data was not found: no song {id:?}")))?;
        let started = match times.get(k).filter(|t| !t.is_empty()) {
            Some(t) => t.parse::<i64>().map_err(|_| Failure::new(0, format!("time {t:?} is not Unix milliseconds")))?,
            // No time: the play just ended; the minute keeps a retry the same event.
            None => (now - track.duration_ms).div_euclid(60_000) * 60_000,
        };
        events.push(json!({
            "event_id": event_id(&user.id, id, started), "track": id, "started_ms": started,
            "ms_played": track.duration_ms, "tier": "high", "device": device,
        }));
    }
    let batch = crate::api::PlayBatch { sent_ms: None, events };
    let answer = crate::api::play_events(app, user, batch).await.map_err(Failure::from)?;
    let refused: Vec<String> = answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "rejected")
        .map(|r| r["message"].as_str().unwrap_or("refused").to_owned())
        .collect();
    if let Some(why) = refused.first() {
        return Err(Failure::new(0, format!("play not counted: {why}")));
    }
    Ok(())
}

/// `getNowPlaying`: what listeners reported playing in the last 15 minutes.
pub async fn now_playing(app: &App) -> Result<Value, Failure> {
    let now = crate::now_ms();
    let mut entries = Vec::new();
    for (_, (name, track, since, client)) in app.now_playing.iter() {
        let Ok(mut song) = browse::song(app, &track).await else { continue };
        song["username"] = json!(name);
        song["minutesAgo"] = json!((now - since) / 60_000);
        song["playerId"] = json!(0);
        song["playerName"] = json!(client);
        entries.push(song);
    }
    Ok(json!({ "entry": entries }))
}

/// `star` and `unstar`: songs (`id`) are likes; albums and artists are stars.
pub async fn star(app: &App, user: &User, p: &Params, on: bool) -> Result<(), Failure> {
    let now = crate::now_ms();
    for id in p.all("id") {
        crate::playlists::set_like(app, user, id, on, now).await.map_err(Failure::from)?;
    }
    for (kind, param, table) in [("album", "albumId", "albums"), ("artist", "artistId", "artists")] {
        for id in p.all(param) {
            if on {
                let exists = sqlx::query(&format!("SELECT 1 FROM {table} WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&app.pool)
                    .await
                    .map_err(db)?;
                if exists.is_none() {
                    return Err(Failure::new(70, format!("The requested data was not found: no {kind} {id:?}")));
                }
                sqlx::query(
                    "INSERT INTO subsonic_stars (user_id, kind, item_id, created_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&user.id)
                .bind(kind)
                .bind(id)
                .bind(now)
                .execute(&app.pool)
                .await
                .map_err(db)?;
            } else {
                sqlx::query("DELETE FROM subsonic_stars WHERE user_id = $1 AND kind = $2 AND item_id = $3")
                    .bind(&user.id)
                    .bind(kind)
                    .bind(id)
                    .execute(&app.pool)
                    .await
                    .map_err(db)?;
            }
        }
    }
    if p.all("id").is_empty() && p.all("albumId").is_empty() && p.all("artistId").is_empty() {
        return Err(Failure::missing("id, albumId or artistId"));
    }
    Ok(())
}

/// `getStarred2`: the caller's starred artists and albums and liked songs, newest first,
/// each with `starred` (when).
pub async fn starred2(app: &App, user: &User) -> Result<Value, Failure> {
    let mut out = json!({ "artist": [], "album": [], "song": [] });
    for kind in ["artist", "album"] {
        let rows = sqlx::query(
            "SELECT item_id, created_ms FROM subsonic_stars WHERE user_id = $1 AND kind = $2 \
             ORDER BY created_ms DESC, item_id",
        )
        .bind(&user.id)
        .bind(kind)
        .fetch_all(&app.pool)
        .await
        .map_err(db)?;
        let mut list = Vec::new();
        for r in &rows {
            let (id, at): (String, i64) = (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
            let item = if kind == "artist" {
                browse::artist_id3(app, &id).await?
            } else {
                browse::album_id3(app, &id).await?
            };
            if let Some(mut v) = item {
                v["starred"] = json!(browse::iso(at));
                list.push(v);
            }
        }
        out[kind] = json!(list);
    }
    let rows =
        sqlx::query("SELECT track_id, created_ms FROM likes WHERE user_id = $1 ORDER BY created_ms DESC, track_id")
            .bind(&user.id)
            .fetch_all(&app.pool)
            .await
            .map_err(db)?;
    let mut songs = Vec::new();
    for r in &rows {
        let (id, at): (String, i64) = (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
        if let Ok(mut s) = browse::song(app, &id).await {
            s["starred"] = json!(browse::iso(at));
            songs.push(s);
        }
    }
    out["song"] = json!(songs);
    Ok(out)
}
