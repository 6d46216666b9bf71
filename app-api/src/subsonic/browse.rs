//! Browsing by tags (the ID3 endpoints): artists by index letter, an artist's albums,
//! an album's songs, one song, genres. The shapes are the spec's `ArtistID3`,
//! `AlbumID3`, `Child` and `Genre`; optional fields are left out rather than null.

use serde_json::{json, Value};
use sqlx::Row;

use super::Failure;
use crate::catalog::{self, Track};
use crate::App;

/// Articles clients drop when sorting artists into index letters.
const IGNORED_ARTICLES: &str = "The El La Los Las Le Les";

fn not_found(what: &str, id: &str) -> Failure {
    Failure { code: 70, message: format!("The requested data was not found: no {what} {id:?}"), help_url: None }
}

/// Unix ms as RFC 3339, as Subsonic dates are.
pub fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A track as a Subsonic `Child`.
pub fn child(t: &Track) -> Value {
    let mut c = json!({
        "id": t.id, "parent": t.album.id, "isDir": false, "title": t.title,
        "album": t.album.title, "albumId": t.album.id,
        "artist": t.artists.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", "),
        "artistId": t.artists.first().map_or(t.album.artist.id.as_str(), |a| a.id.as_str()),
        "track": t.track_number, "discNumber": t.disc_number, "coverArt": t.album.id,
        "contentType": "audio/ogg", "suffix": "ogg", "duration": (t.duration_ms + 500) / 1000,
        "bitRate": 160, "type": "music", "mediaType": "song", "isVideo": false,
        "explicitStatus": if t.explicit { "explicit" } else { "clean" },
        "artists": t.artists.iter().map(|a| json!({ "id": a.id, "name": a.name })).collect::<Vec<_>>(),
        "replayGain": {
            // dB to a hundredth and a linear peak to a millionth: what the measurement holds.
            "trackGain": ((-18.0 - t.loudness.integrated_lufs) * 100.0).round() / 100.0,
            "trackPeak": (10f64.powf(t.loudness.true_peak_dbtp / 20.0) * 1e6).round() / 1e6,
        },
    });
    if !t.genre.is_empty() {
        c["genre"] = json!(t.genre);
    }
    if !t.isrc.is_empty() {
        c["isrc"] = json!([t.isrc]);
    }
    c
}

/// `getArtists`: every artist with albums, grouped by the first letter of the name
/// without its article.
pub async fn artists(app: &App) -> Result<Value, Failure> {
    let rows = sqlx::query(
        "SELECT ar.id, ar.name, COUNT(al.id) FROM artists ar JOIN albums al ON al.artist_id = ar.id \
         GROUP BY ar.id, ar.name ORDER BY ar.name_key",
    )
    .fetch_all(&app.pool)
    .await
    .map_err(|e| Failure::from(crate::error::Error::from(e)))?;
    let mut index: Vec<(String, Vec<Value>)> = Vec::new();
    for r in &rows {
        let (id, name, albums): (String, String, i64) =
            (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?, r.try_get(2).map_err(db)?);
        let sort = IGNORED_ARTICLES
            .split(' ')
            .find_map(|a| name.strip_prefix(a).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or(&name);
        let letter = sort
            .chars()
            .next()
            .filter(|c| c.is_alphabetic())
            .map_or_else(|| "#".to_owned(), |c| c.to_uppercase().collect());
        let artist = json!({ "id": id, "name": name, "albumCount": albums, "coverArt": format!("ar-{id}") });
        match index.iter_mut().find(|(l, _)| *l == letter) {
            Some((_, list)) => list.push(artist),
            None => index.push((letter, vec![artist])),
        }
    }
    index.sort_by(|a, b| (a.0 == "#").cmp(&(b.0 == "#")).then(a.0.cmp(&b.0)));
    let index: Vec<Value> = index.into_iter().map(|(name, artist)| json!({ "name": name, "artist": artist })).collect();
    Ok(json!({ "ignoredArticles": IGNORED_ARTICLES, "index": index }))
}

pub fn db(e: sqlx::Error) -> Failure {
    Failure::from(crate::error::Error::from(e))
}

/// An album's `AlbumID3` fields from its songs.
fn album_fields(id: &str, title: &str, artist: (&str, &str), created_ms: i64, songs: &[Track]) -> Value {
    let mut a = json!({
        "id": id, "name": title, "artist": artist.1, "artistId": artist.0, "coverArt": id,
        "songCount": songs.len(), "duration": songs.iter().map(|t| (t.duration_ms + 500) / 1000).sum::<i64>(),
        "created": iso(created_ms),
    });
    if let Some(g) = songs.iter().map(|t| t.genre.as_str()).find(|g| !g.is_empty()) {
        a["genre"] = json!(g);
    }
    a
}

/// `getAlbum`: the album with its songs in disc and track order.
pub async fn album(app: &App, id: &str) -> Result<Value, Failure> {
    let (mut a, songs) = album_and_songs(app, id).await?.ok_or_else(|| not_found("album", id))?;
    a["song"] = json!(songs.iter().map(child).collect::<Vec<_>>());
    Ok(a)
}

/// The first column of a query's rows (ids): `binds` bound first, then `page` as
/// (limit, offset).
pub async fn ids(app: &App, sql: &str, binds: &[&str], page: Option<(i64, i64)>) -> Result<Vec<String>, Failure> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    if let Some((limit, offset)) = page {
        q = q.bind(limit).bind(offset);
    }
    q.fetch_all(&app.pool).await.map_err(db)?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(db)
}

async fn album_songs(app: &App, id: &str) -> Result<Vec<Track>, Failure> {
    catalog::album_tracks(&app.pool, id).await.map_err(Failure::from)
}

/// `getArtist`: the artist with their albums.
pub async fn artist(app: &App, id: &str) -> Result<Value, Failure> {
    let name: String = sqlx::query("SELECT name FROM artists WHERE id = $1")
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("artist", id))?
        .try_get(0)
        .map_err(db)?;
    let rows = sqlx::query("SELECT id, title, created_ms FROM albums WHERE artist_id = $1 ORDER BY title_key")
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .map_err(db)?;
    let mut albums = Vec::with_capacity(rows.len());
    for r in &rows {
        let (album_id, title, created): (String, String, i64) =
            (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?, r.try_get(2).map_err(db)?);
        let songs = album_songs(app, &album_id).await?;
        albums.push(album_fields(&album_id, &title, (id, &name), created, &songs));
    }
    Ok(json!({ "id": id, "name": name, "albumCount": albums.len(), "coverArt": format!("ar-{id}"), "album": albums }))
}

/// `getSong`.
pub async fn song(app: &App, id: &str) -> Result<Value, Failure> {
    let t = catalog::track(&app.pool, id).await.map_err(Failure::from)?.ok_or_else(|| not_found("song", id))?;
    Ok(child(&t))
}

/// `getGenres`: each genre with its song and album counts.
pub async fn genres(app: &App) -> Result<Value, Failure> {
    let rows = sqlx::query(
        "SELECT genre, COUNT(*), COUNT(DISTINCT album_id) FROM tracks WHERE genre <> '' GROUP BY genre ORDER BY genre",
    )
    .fetch_all(&app.pool)
    .await
    .map_err(db)?;
    let genres = rows
        .iter()
        .map(|r| {
            Ok(json!({ "value": r.try_get::<String, _>(0)?, "songCount": r.try_get::<i64, _>(1)?,
                "albumCount": r.try_get::<i64, _>(2)? }))
        })
        .collect::<Result<Vec<Value>, sqlx::Error>>()
        .map_err(db)?;
    Ok(json!({ "genre": genres }))
}

/// One artist's `ArtistID3` (no albums), if it exists.
pub async fn artist_id3(app: &App, id: &str) -> Result<Option<Value>, Failure> {
    let row = sqlx::query(
        "SELECT ar.name, (SELECT COUNT(*) FROM albums al WHERE al.artist_id = ar.id) FROM artists ar WHERE ar.id = $1",
    )
    .bind(id)
    .fetch_optional(&app.pool)
    .await
    .map_err(db)?;
    row.map(|r| {
        Ok(json!({ "id": id, "name": r.try_get::<String, _>(0)?, "albumCount": r.try_get::<i64, _>(1)?,
            "coverArt": format!("ar-{id}") }))
    })
    .transpose()
    .map_err(db)
}

/// One album's `AlbumID3` (no songs), if it exists.
pub async fn album_id3(app: &App, id: &str) -> Result<Option<Value>, Failure> {
    Ok(album_and_songs(app, id).await?.map(|(a, _)| a))
}

async fn album_and_songs(app: &App, id: &str) -> Result<Option<(Value, Vec<Track>)>, Failure> {
    let Some(head) = sqlx::query(
        "SELECT al.title, al.created_ms, ar.id, ar.name FROM albums al JOIN artists ar ON ar.id = al.artist_id \
         WHERE al.id = $1",
    )
    .bind(id)
    .fetch_optional(&app.pool)
    .await
    .map_err(db)?
    else {
        return Ok(None);
    };
    let songs = album_songs(app, id).await?;
    let (title, created, artist_id, artist): (String, i64, String, String) = (
        head.try_get(0).map_err(db)?,
        head.try_get(1).map_err(db)?,
        head.try_get(2).map_err(db)?,
        head.try_get(3).map_err(db)?,
    );
    Ok(Some((album_fields(id, &title, (&artist_id, &artist), created, &songs), songs)))
}
