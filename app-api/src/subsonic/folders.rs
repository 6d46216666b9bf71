//! Browsing by folders, for clients that walk directories (DSub, older players): the
//! catalog seen as one music folder whose directories are artists, whose
//! subdirectories are albums, whose files are songs. The ids are the same as in the tag
//! endpoints, so a client mixing both sees one library.

use serde_json::{json, Value};
use sqlx::Row;

use super::browse::{self, db, iso};
use super::{Failure, Params};
use crate::App;

/// `getIndexes`: the artists by index letter (as `getArtists`), with `lastModified`; a
/// client passing `ifModifiedSince` at or after it gets no index (nothing changed).
pub async fn indexes(app: &App, p: &Params) -> Result<Value, Failure> {
    let changed: i64 = sqlx::query(
        "SELECT COALESCE(MAX(m), 0) FROM (SELECT MAX(updated_ms) AS m FROM tracks \
         UNION ALL SELECT MAX(created_ms) FROM albums UNION ALL SELECT MAX(created_ms) FROM artists) x",
    )
    .fetch_one(&app.pool)
    .await
    .map_err(db)?
    .try_get::<Option<i64>, _>(0)
    .map_err(db)?
    .unwrap_or(0);
    let since = p.number("ifModifiedSince", 0)?;
    let mut out = browse::artists(app).await?;
    out["lastModified"] = json!(changed);
    if since > 0 && since >= changed {
        if let Some(o) = out.as_object_mut() {
            o.remove("index");
        }
        return Ok(out);
    }
    // A folder index lists `Artist`s: id and name (the album counts are ID3 fields).
    for index in out["index"].as_array_mut().into_iter().flatten() {
        for artist in index["artist"].as_array_mut().into_iter().flatten() {
            *artist = json!({ "id": artist["id"], "name": artist["name"] });
        }
    }
    Ok(out)
}

/// `getMusicDirectory`: an artist's directory (their albums as subdirectories) or an
/// album's (its songs).
pub async fn directory(app: &App, id: &str) -> Result<Value, Failure> {
    if let Some(mut album) = browse::album_id3(app, id).await? {
        let songs = crate::catalog::album_tracks(&app.pool, id).await.map_err(Failure::from)?;
        return Ok(json!({
            "id": id, "parent": album["artistId"].take(), "name": album["name"].take(),
            "child": songs.iter().map(browse::child).collect::<Vec<_>>(),
        }));
    }
    let Some(artist) = browse::artist_id3(app, id).await? else {
        return Err(Failure::new(70, format!("The requested data was not found: no directory {id:?}")));
    };
    let rows = sqlx::query(
        "SELECT al.id, al.title, al.created_ms, COALESCE(SUM(t.samples * 1000 / t.sample_rate), 0), \
         MIN(t.genre) FROM albums al LEFT JOIN tracks t ON t.album_id = al.id WHERE al.artist_id = $1 \
         GROUP BY al.id, al.title, al.created_ms, al.title_key ORDER BY al.title_key",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .map_err(db)?;
    let mut children = Vec::with_capacity(rows.len());
    for r in &rows {
        let (album_id, title): (String, String) = (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
        let ms: i64 = r.try_get(3).map_err(db)?;
        let mut c = json!({
            "id": album_id, "parent": id, "isDir": true, "title": title, "album": title,
            "artist": artist["name"], "artistId": id, "coverArt": album_id,
            "created": iso(r.try_get(2).map_err(db)?), "duration": (ms + 500) / 1000, "mediaType": "album",
        });
        if let Some(g) = r.try_get::<Option<String>, _>(4).map_err(db)?.filter(|g| !g.is_empty()) {
            c["genre"] = json!(g);
        }
        children.push(c);
    }
    Ok(json!({ "id": id, "name": artist["name"], "child": children }))
}
