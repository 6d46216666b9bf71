//! `getAlbumList2` (every list type) and `getRandomSongs`.
//!
//! An album's year is the year it was first released anywhere (the earliest
//! `release_at` of its tracks' rights), else the year it entered the catalog: the
//! catalog has no other date. "Starred" albums are those with a track the listener
//! likes (likes are per track); "highest" ranks by likes across listeners (there are no
//! ratings); "frequent" by all plays, "recent" by the listener's own last play.

use serde_json::{json, Value};
use sqlx::Row;

use super::browse::{self, db, ids};
use super::{Failure, Params};
use crate::catalog::User;
use crate::App;

const MAX_SIZE: usize = 500;

fn year_of(ms: i64) -> i64 {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).map_or(1970, |t| i64::from(t.year()))
}

/// `getAlbumList2`.
pub async fn album_list2(app: &App, user: &User, p: &Params) -> Result<Value, Failure> {
    let kind = p.required("type")?;
    let size = p.number("size", 10)?.clamp(0, MAX_SIZE as i64);
    let offset = p.number("offset", 0)?.max(0);
    let me = user.id.as_str();
    let album_ids = match kind {
        "random" => {
            ids(app, "SELECT id FROM albums ORDER BY RANDOM() LIMIT $1 OFFSET $2", &[], Some((size, offset))).await?
        }
        "newest" => {
            ids(app, "SELECT id FROM albums ORDER BY created_ms DESC, id LIMIT $1 OFFSET $2", &[], Some((size, offset)))
                .await?
        }
        "alphabeticalByName" => {
            ids(app, "SELECT id FROM albums ORDER BY title_key, id LIMIT $1 OFFSET $2", &[], Some((size, offset)))
                .await?
        }
        "alphabeticalByArtist" => {
            let sql = "SELECT al.id FROM albums al JOIN artists ar ON ar.id = al.artist_id \
                       ORDER BY ar.name_key, al.title_key, al.id LIMIT $1 OFFSET $2";
            ids(app, sql, &[], Some((size, offset))).await?
        }
        "frequent" => {
            let sql = "SELECT t.album_id FROM play_counts c JOIN tracks t ON t.id = c.track_id \
                       GROUP BY t.album_id ORDER BY SUM(c.plays) DESC, t.album_id LIMIT $1 OFFSET $2";
            ids(app, sql, &[], Some((size, offset))).await?
        }
        "recent" => {
            let sql = "SELECT t.album_id FROM play_events e JOIN tracks t ON t.id = e.track_id WHERE e.user_id = $1 \
                       GROUP BY t.album_id ORDER BY MAX(e.started_ms) DESC, t.album_id LIMIT $2 OFFSET $3";
            ids(app, sql, &[me], Some((size, offset))).await?
        }
        "starred" => {
            let sql = "SELECT t.album_id FROM likes l JOIN tracks t ON t.id = l.track_id WHERE l.user_id = $1 \
                       GROUP BY t.album_id ORDER BY MAX(l.created_ms) DESC, t.album_id LIMIT $2 OFFSET $3";
            ids(app, sql, &[me], Some((size, offset))).await?
        }
        "highest" => {
            let sql = "SELECT t.album_id FROM likes l JOIN tracks t ON t.id = l.track_id \
                       GROUP BY t.album_id ORDER BY COUNT(*) DESC, t.album_id LIMIT $1 OFFSET $2";
            ids(app, sql, &[], Some((size, offset))).await?
        }
        "byGenre" => {
            let genre = p.required("genre")?;
            let sql = "SELECT DISTINCT album_id FROM tracks WHERE genre = $1 ORDER BY album_id LIMIT $2 OFFSET $3";
            ids(app, sql, &[genre], Some((size, offset))).await?
        }
        "byYear" => {
            let (from, to) = (p.required("fromYear")?, p.required("toYear")?);
            let parse = |v: &str| v.parse::<i64>().map_err(|_| Failure::new(0, format!("year {v:?} is not a number")));
            let (from, to) = (parse(from)?, parse(to)?);
            let rows = sqlx::query(
                "SELECT al.id, al.created_ms, MIN(CASE WHEN r.release_at_ms > 0 THEN r.release_at_ms END) \
                 FROM albums al LEFT JOIN tracks t ON t.album_id = al.id LEFT JOIN rights r ON r.track_id = t.id \
                 GROUP BY al.id, al.created_ms",
            )
            .fetch_all(&app.pool)
            .await
            .map_err(db)?;
            let mut years: Vec<(i64, String)> = Vec::with_capacity(rows.len());
            for r in &rows {
                let released: Option<i64> = r.try_get(2).map_err(db)?;
                let year = year_of(released.unwrap_or(r.try_get::<i64, _>(1).map_err(db)?));
                if (from.min(to)..=from.max(to)).contains(&year) {
                    years.push((year, r.try_get(0).map_err(db)?));
                }
            }
            // fromYear > toYear lists newest first, as the spec has it.
            years.sort_by(|a, b| if from <= to { a.cmp(b) } else { b.0.cmp(&a.0).then(a.1.cmp(&b.1)) });
            years.into_iter().skip(offset as usize).take(size as usize).map(|(_, id)| id).collect()
        }
        other => return Err(Failure::new(0, format!("type {other:?} is not a list type"))),
    };
    let mut albums = Vec::with_capacity(album_ids.len());
    for id in &album_ids {
        albums.extend(browse::album_id3(app, id).await?);
    }
    Ok(json!({ "album": albums }))
}

/// `getRandomSongs?size=&genre=`: random songs, of one genre if given.
pub async fn random_songs(app: &App, p: &Params) -> Result<Value, Failure> {
    let size = p.number("size", 10)?.clamp(0, MAX_SIZE as i64);
    let song_ids = match p.get("genre").filter(|g| !g.is_empty()) {
        Some(g) => {
            ids(
                app,
                "SELECT id FROM tracks WHERE genre = $1 ORDER BY RANDOM() LIMIT $2 OFFSET $3",
                &[g],
                Some((size, 0)),
            )
            .await?
        }
        None => ids(app, "SELECT id FROM tracks ORDER BY RANDOM() LIMIT $1 OFFSET $2", &[], Some((size, 0))).await?,
    };
    let mut songs = Vec::with_capacity(song_ids.len());
    for id in &song_ids {
        songs.push(browse::song(app, id).await?);
    }
    Ok(json!({ "song": songs }))
}
