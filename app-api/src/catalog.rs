//! The catalog: artists, albums, tracks (with the audio facts read from the packaging
//! manifest), and users with hashed API keys. One set of queries for SQLite and
//! PostgreSQL (`segue_core::sql`).

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::error::Error;

pub async fn open(url: &str) -> Result<AnyPool, Error> {
    segue_core::sql::open(
        url,
        &[
            (1, "catalog", include_str!("../migrations/0001_catalog.sql")),
            (2, "rights", include_str!("../migrations/0002_rights.sql")),
            (3, "playlists", include_str!("../migrations/0003_playlists.sql")),
            (4, "plays", include_str!("../migrations/0004_plays.sql")),
            (5, "play_integrity", include_str!("../migrations/0005_play_integrity.sql")),
            (6, "royalty_periods", include_str!("../migrations/0006_royalty_periods.sql")),
            (7, "abuse_limits", include_str!("../migrations/0007_abuse_limits.sql")),
            (8, "play_sessions", include_str!("../migrations/0008_play_sessions.sql")),
            (9, "drm", include_str!("../migrations/0009_drm.sql")),
            (10, "audio_features", include_str!("../migrations/0010_audio_features.sql")),
            (11, "recs", include_str!("../migrations/0011_recs.sql")),
            (12, "discovery", include_str!("../migrations/0012_discovery.sql")),
            (13, "subsonic_stars", include_str!("../migrations/0013_subsonic_stars.sql")),
            (14, "subsonic_logins", include_str!("../migrations/0014_subsonic_logins.sql")),
            (15, "lyrics", include_str!("../migrations/0015_lyrics.sql")),
        ],
    )
    .await
    .map_err(Error::Database)
}

/// A new id: `prefix` and 12 hex digits from the kernel's generator.
pub fn new_id(prefix: &str) -> Result<String, Error> {
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| Error::Database(format!("/dev/urandom: {e}")))?;
    Ok(format!("{prefix}_{}", hex::encode(bytes)))
}

fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtistRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlbumRef {
    pub id: String,
    pub title: String,
    pub artist: ArtistRef,
}

#[derive(Debug, Clone, Serialize)]
pub struct Loudness {
    pub integrated_lufs: f64,
    pub true_peak_dbtp: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Track {
    pub id: String,
    pub title: String,
    pub artists: Vec<ArtistRef>,
    pub album: AlbumRef,
    pub disc_number: i64,
    pub track_number: i64,
    pub duration_ms: i64,
    pub genre: String,
    pub isrc: String,
    pub explicit: bool,
    pub content_id: String,
    /// Exact samples per channel of the master, and its rate: what gapless playback
    /// trims each tier's decode to.
    pub samples: i64,
    pub sample_rate: i64,
    pub loudness: Loudness,
}

/// What an admin sends to create a track.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTrack {
    pub content_id: String,
    pub title: String,
    pub artists: Vec<String>,
    pub album: String,
    /// The album's artist; default the first track artist.
    #[serde(default)]
    pub album_artist: Option<String>,
    #[serde(default = "one")]
    pub disc_number: i64,
    pub track_number: i64,
    #[serde(default)]
    pub genre: String,
    #[serde(default)]
    pub isrc: String,
    #[serde(default)]
    pub explicit: bool,
}

fn one() -> i64 {
    1
}

/// Fields an admin may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackEdit {
    pub title: Option<String>,
    pub disc_number: Option<i64>,
    pub track_number: Option<i64>,
    pub genre: Option<String>,
    pub isrc: Option<String>,
    pub explicit: Option<bool>,
}

fn check_text(field: &str, v: &str, max: usize) -> Result<(), Error> {
    if v.trim().is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!("{field} must be 1-{max} bytes of text")));
    }
    Ok(())
}

/// ISRC: two letters, three letters or digits, seven digits (hyphens allowed).
pub fn check_isrc(isrc: &str) -> Result<String, Error> {
    let s: String = isrc.chars().filter(|c| *c != '-').collect::<String>().to_ascii_uppercase();
    let b = s.as_bytes();
    let ok = b.len() == 12
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..5].iter().all(u8::is_ascii_alphanumeric)
        && b[5..].iter().all(u8::is_ascii_digit);
    if !ok {
        return Err(Error::BadRequest(format!("isrc {isrc:?} is not an ISRC (CC-XXX-YY-NNNNN)")));
    }
    Ok(s)
}

impl NewTrack {
    pub fn validate(&mut self) -> Result<(), Error> {
        self.content_id
            .parse::<segue_core::ContentId>()
            .map_err(|_| Error::BadRequest(format!("content_id {:?} is not 64 hex digits", self.content_id)))?;
        check_text("title", &self.title, 512)?;
        check_text("album", &self.album, 512)?;
        if self.artists.is_empty() || self.artists.len() > 20 {
            return Err(Error::BadRequest("artists must list 1-20 names".into()));
        }
        for (i, a) in self.artists.iter().enumerate() {
            check_text(&format!("artists[{i}]"), a, 256)?;
        }
        if let Some(a) = &self.album_artist {
            check_text("album_artist", a, 256)?;
        }
        check_numbers(self.disc_number, self.track_number)?;
        if self.genre.len() > 64 {
            return Err(Error::BadRequest("genre is over 64 bytes".into()));
        }
        if !self.isrc.is_empty() {
            self.isrc = check_isrc(&self.isrc)?;
        }
        Ok(())
    }
}

fn check_numbers(disc: i64, track: i64) -> Result<(), Error> {
    if !(1..=99).contains(&disc) {
        return Err(Error::BadRequest("disc_number must be 1-99".into()));
    }
    if !(1..=999).contains(&track) {
        return Err(Error::BadRequest("track_number must be 1-999".into()));
    }
    Ok(())
}

/// The id of the artist named `name` (any case), created if new.
async fn artist_id(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, now: i64) -> Result<String, Error> {
    let name = name.trim();
    if let Some(r) =
        sqlx::query("SELECT id FROM artists WHERE name_key = $1").bind(key(name)).fetch_optional(&mut **tx).await?
    {
        return Ok(r.try_get(0)?);
    }
    let id = new_id("art")?;
    sqlx::query("INSERT INTO artists (id, name, name_key, created_ms) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(name)
        .bind(key(name))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// Insert a validated track with the manifest's audio facts, in one transaction.
pub async fn create_track(
    pool: &AnyPool,
    t: &NewTrack,
    manifest: &segue_core::manifest::Manifest,
    now: i64,
) -> Result<String, Error> {
    let mut tx = segue_core::sql::begin_write(pool).await?;
    let mut artist_ids = Vec::new();
    for a in &t.artists {
        let id = artist_id(&mut tx, a, now).await?;
        if !artist_ids.contains(&id) {
            artist_ids.push(id);
        }
    }
    let album_artist = match &t.album_artist {
        Some(a) => artist_id(&mut tx, a, now).await?,
        None => artist_ids[0].clone(),
    };
    let album_id = match sqlx::query("SELECT id FROM albums WHERE artist_id = $1 AND title_key = $2")
        .bind(&album_artist)
        .bind(key(&t.album))
        .fetch_optional(&mut *tx)
        .await?
    {
        Some(r) => r.try_get::<String, _>(0)?,
        None => {
            let id = new_id("alb")?;
            sqlx::query("INSERT INTO albums (id, title, artist_id, title_key, created_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(t.album.trim())
                .bind(&album_artist)
                .bind(key(&t.album))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            id
        }
    };
    let taken = sqlx::query("SELECT id FROM tracks WHERE album_id = $1 AND disc_number = $2 AND track_number = $3")
        .bind(&album_id)
        .bind(t.disc_number)
        .bind(t.track_number)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(r) = taken {
        let other: String = r.try_get(0)?;
        return Err(Error::Conflict(format!(
            "{} already has disc {} track {}: {other}",
            t.album, t.disc_number, t.track_number
        )));
    }
    let id = new_id("trk")?;
    sqlx::query(
        "INSERT INTO tracks (id, title, album_id, disc_number, track_number, genre, isrc, explicit, content_id, \
         samples, sample_rate, loudness_lufs, true_peak_dbtp, created_ms, updated_ms, audio_features) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)",
    )
    .bind(&id)
    .bind(t.title.trim())
    .bind(&album_id)
    .bind(t.disc_number)
    .bind(t.track_number)
    .bind(&t.genre)
    .bind(&t.isrc)
    .bind(t.explicit as i64)
    .bind(&t.content_id)
    .bind(manifest.source.samples as i64)
    .bind(i64::from(manifest.source.sample_rate))
    .bind(manifest.loudness.integrated_lufs)
    .bind(manifest.loudness.true_peak_dbtp)
    .bind(now)
    .bind(manifest.features.as_ref().and_then(|f| serde_json::to_string(f).ok()).unwrap_or_default())
    .execute(&mut *tx)
    .await?;
    for (pos, a) in artist_ids.iter().enumerate() {
        sqlx::query("INSERT INTO track_artists (track_id, artist_id, position) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(a)
            .bind(pos as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id)
}

pub async fn edit_track(pool: &AnyPool, id: &str, e: &TrackEdit, now: i64) -> Result<(), Error> {
    let mut t = track(pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
    if let Some(v) = &e.title {
        check_text("title", v, 512)?;
        t.title = v.trim().to_owned();
    }
    if let Some(v) = e.disc_number {
        t.disc_number = v;
    }
    if let Some(v) = e.track_number {
        t.track_number = v;
    }
    check_numbers(t.disc_number, t.track_number)?;
    if let Some(v) = &e.genre {
        if v.len() > 64 {
            return Err(Error::BadRequest("genre is over 64 bytes".into()));
        }
        t.genre = v.clone();
    }
    if let Some(v) = &e.isrc {
        t.isrc = if v.is_empty() { String::new() } else { check_isrc(v)? };
    }
    if let Some(v) = e.explicit {
        t.explicit = v;
    }
    let clash = sqlx::query(
        "SELECT id FROM tracks WHERE album_id = $1 AND disc_number = $2 AND track_number = $3 AND id <> $4",
    )
    .bind(&t.album.id)
    .bind(t.disc_number)
    .bind(t.track_number)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    if clash.is_some() {
        return Err(Error::Conflict(format!("the album already has disc {} track {}", t.disc_number, t.track_number)));
    }
    sqlx::query(
        "UPDATE tracks SET title = $1, disc_number = $2, track_number = $3, genre = $4, isrc = $5, explicit = $6, \
         updated_ms = $7 WHERE id = $8",
    )
    .bind(&t.title)
    .bind(t.disc_number)
    .bind(t.track_number)
    .bind(&t.genre)
    .bind(&t.isrc)
    .bind(t.explicit as i64)
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

const TRACK_SELECT: &str = "SELECT t.*, al.title AS album_title, al.artist_id AS album_artist_id, \
     ar.name AS album_artist_name FROM tracks t JOIN albums al ON al.id = t.album_id \
     JOIN artists ar ON ar.id = al.artist_id";

async fn track_from(pool: &AnyPool, r: &AnyRow) -> Result<Track, Error> {
    let id: String = r.try_get("id")?;
    let artists = sqlx::query(
        "SELECT a.id, a.name FROM track_artists ta JOIN artists a ON a.id = ta.artist_id \
         WHERE ta.track_id = $1 ORDER BY ta.position",
    )
    .bind(&id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok(ArtistRef { id: r.try_get(0)?, name: r.try_get(1)? }))
    .collect::<Result<_, sqlx::Error>>()?;
    let samples: i64 = r.try_get("samples")?;
    let rate: i64 = r.try_get("sample_rate")?;
    Ok(Track {
        title: r.try_get("title")?,
        artists,
        album: AlbumRef {
            id: r.try_get("album_id")?,
            title: r.try_get("album_title")?,
            artist: ArtistRef { id: r.try_get("album_artist_id")?, name: r.try_get("album_artist_name")? },
        },
        disc_number: r.try_get("disc_number")?,
        track_number: r.try_get("track_number")?,
        duration_ms: samples * 1000 / rate.max(1),
        genre: r.try_get("genre")?,
        isrc: r.try_get("isrc")?,
        explicit: r.try_get::<i64, _>("explicit")? != 0,
        content_id: r.try_get("content_id")?,
        samples,
        sample_rate: rate,
        loudness: Loudness {
            integrated_lufs: r.try_get("loudness_lufs")?,
            true_peak_dbtp: r.try_get("true_peak_dbtp")?,
        },
        id,
    })
}

/// (id, length in ms) of the tracks among `ids` that exist.
pub async fn track_lengths(pool: &AnyPool, ids: &[&str]) -> Result<Vec<(String, i64)>, Error> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT id, samples, sample_rate FROM tracks WHERE id IN ({})", list.join(","));
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(pool).await? {
            let (samples, rate): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
            out.push((r.try_get(0)?, samples * 1000 / rate.max(1)));
        }
    }
    Ok(out)
}

pub async fn track(pool: &AnyPool, id: &str) -> Result<Option<Track>, Error> {
    let Some(r) = sqlx::query(&format!("{TRACK_SELECT} WHERE t.id = $1")).bind(id).fetch_optional(pool).await? else {
        return Ok(None);
    };
    Ok(Some(track_from(pool, &r).await?))
}

/// An album's tracks in disc and track order (none for an unknown album).
pub async fn album_tracks(pool: &AnyPool, id: &str) -> Result<Vec<Track>, Error> {
    let rows = sqlx::query(&format!("{TRACK_SELECT} WHERE t.album_id = $1 ORDER BY t.disc_number, t.track_number"))
        .bind(id)
        .fetch_all(pool)
        .await?;
    let mut tracks = Vec::with_capacity(rows.len());
    for r in &rows {
        tracks.push(track_from(pool, r).await?);
    }
    Ok(tracks)
}

/// An album with its tracks in disc and track order.
/// Whether album `id` exists (one indexed read; `album` loads its tracks too).
pub async fn album_exists(pool: &AnyPool, id: &str) -> Result<bool, Error> {
    Ok(sqlx::query("SELECT 1 FROM albums WHERE id = $1").bind(id).fetch_optional(pool).await?.is_some())
}

pub async fn album(pool: &AnyPool, id: &str) -> Result<Option<serde_json::Value>, Error> {
    let Some(head) = sqlx::query(
        "SELECT al.id, al.title, ar.id, ar.name FROM albums al JOIN artists ar ON ar.id = al.artist_id WHERE al.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let tracks = album_tracks(pool, id).await?;
    Ok(Some(serde_json::json!({
        "id": head.try_get::<String, _>(0)?,
        "title": head.try_get::<String, _>(1)?,
        "artist": { "id": head.try_get::<String, _>(2)?, "name": head.try_get::<String, _>(3)? },
        "duration_ms": tracks.iter().map(|t| t.duration_ms).sum::<i64>(),
        "tracks": tracks,
    })))
}

/// An artist with their albums.
pub async fn artist(pool: &AnyPool, id: &str) -> Result<Option<serde_json::Value>, Error> {
    let Some(a) = sqlx::query("SELECT id, name FROM artists WHERE id = $1").bind(id).fetch_optional(pool).await? else {
        return Ok(None);
    };
    let albums: Vec<serde_json::Value> =
        sqlx::query("SELECT id, title FROM albums WHERE artist_id = $1 ORDER BY title_key")
            .bind(id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok(serde_json::json!({ "id": r.try_get::<String, _>(0)?, "title": r.try_get::<String, _>(1)? })))
            .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(serde_json::json!({
        "id": a.try_get::<String, _>(0)?,
        "name": a.try_get::<String, _>(1)?,
        "albums": albums,
    })))
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub country: String,
    pub admin: bool,
    /// May post plays for other users (a partner's backend); no admin routes.
    pub gateway: bool,
}

impl User {
    /// Whether this caller may report plays of other users.
    pub fn posts_for_others(&self) -> bool {
        self.admin || self.gateway
    }
}

pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn new_token() -> Result<String, Error> {
    Ok(format!("{}{}", new_id("key")?, &new_id("x")?[2..]))
}

/// Replace a user's API key (the old one stops working at once); the new one, shown once.
pub async fn rotate_token(pool: &AnyPool, user_id: &str) -> Result<String, Error> {
    let token = new_token()?;
    let done = sqlx::query("UPDATE users SET token_sha256 = $1 WHERE id = $2")
        .bind(token_hash(&token))
        .bind(user_id)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no user {user_id:?}")));
    }
    Ok(token)
}

/// What identifies a user's active API key without revealing it: the start of its hash.
pub async fn token_fingerprint(pool: &AnyPool, user_id: &str) -> Result<String, Error> {
    let row = sqlx::query("SELECT token_sha256 FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user {user_id:?}")))?;
    Ok(row.try_get::<String, _>(0)?.chars().take(12).collect())
}

/// Create a user; returns it and its API key (shown once, stored hashed).
pub async fn create_user(
    pool: &AnyPool,
    name: &str,
    country: &str,
    admin: bool,
    gateway: bool,
    now: i64,
) -> Result<(User, String), Error> {
    check_text("name", name, 256)?;
    if !segue_core::geo::is_country_code(country) {
        return Err(Error::BadRequest(format!("country {country:?} must be an ISO 3166-1 alpha-2 code (SE, US, ...)")));
    }
    let id = new_id("usr")?;
    let token = new_token()?;
    sqlx::query(
        "INSERT INTO users (id, name, country, token_sha256, admin, gateway, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(name.trim())
    .bind(country)
    .bind(token_hash(&token))
    .bind(admin as i64)
    .bind(gateway as i64)
    .bind(now)
    .execute(pool)
    .await?;
    Ok((User { id, name: name.trim().to_owned(), country: country.to_owned(), admin, gateway }, token))
}

pub async fn user_by_token(pool: &AnyPool, token: &str) -> Result<Option<User>, Error> {
    let Some(r) = sqlx::query("SELECT id, name, country, admin, gateway FROM users WHERE token_sha256 = $1")
        .bind(token_hash(token))
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(user_at(&r, 0)?))
}

/// A user from `id, name, country, admin, gateway`, the row's columns from `at` on.
pub(crate) fn user_at(r: &AnyRow, at: usize) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get(at)?,
        name: r.try_get(at + 1)?,
        country: r.try_get(at + 2)?,
        admin: r.try_get::<i64, _>(at + 3)? != 0,
        gateway: r.try_get::<i64, _>(at + 4)? != 0,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn isrcs() {
        assert_eq!(super::check_isrc("us-rc1-76-07839").unwrap(), "USRC17607839");
        assert!(super::check_isrc("USRC1760783").is_err());
        assert!(super::check_isrc("1SRC17607839").is_err());
        assert!(super::check_isrc("USRC1760783X").is_err());
    }
}
