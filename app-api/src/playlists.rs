//! Playlists (plain and collaborative) and likes. Edits go through `ot`: each operation
//! names the version it was made against and is rebased over what was committed since.
//! A commit is optimistic: it writes the new list only if the version is still the one
//! it read (else it reads again and rebases again), and logs each change in the same
//! transaction, so the list and its log never disagree.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::catalog::{new_id, User};
use crate::error::Error;
use crate::ot::{self, Applied, Item, Op, Refusal};

/// Most operations in one request, and items in one playlist.
const MAX_OPS: usize = 100;
const MAX_ITEMS: usize = 10_000;
/// Commits that lose a race read again this many times.
const RETRIES: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct Playlist {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub collaborative: bool,
    pub version: i64,
    pub items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlaylist {
    pub name: String,
    #[serde(default)]
    pub collaborative: bool,
}

/// `POST /v1/playlists/ID/ops`: operations, each against `version`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub version: i64,
    pub ops: Vec<Op>,
}

#[derive(Debug, Serialize)]
pub struct EditResult {
    pub version: i64,
    pub applied: Vec<Applied>,
    pub items: Vec<Item>,
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::BadRequest("name must be 1-256 bytes of text".into()));
    }
    Ok(())
}

pub async fn create(pool: &AnyPool, owner: &User, p: &NewPlaylist, now: i64) -> Result<Playlist, Error> {
    check_name(&p.name)?;
    let id = new_id("pls")?;
    sqlx::query(
        "INSERT INTO playlists (id, owner_id, name, collaborative, version, items, deleted, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, 0, '[]', 0, $5, $5)",
    )
    .bind(&id)
    .bind(&owner.id)
    .bind(p.name.trim())
    .bind(p.collaborative as i64)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(Playlist {
        id,
        name: p.name.trim().to_owned(),
        owner_id: owner.id.clone(),
        collaborative: p.collaborative,
        version: 0,
        items: Vec::new(),
    })
}

async fn load(pool: &AnyPool, id: &str) -> Result<Playlist, Error> {
    let r = sqlx::query("SELECT * FROM playlists WHERE id = $1 AND deleted = 0")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no playlist {id:?}")))?;
    let items: String = r.try_get("items")?;
    Ok(Playlist {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        owner_id: r.try_get("owner_id")?,
        collaborative: r.try_get::<i64, _>("collaborative")? != 0,
        version: r.try_get("version")?,
        items: serde_json::from_str(&items).map_err(|e| Error::Database(format!("playlist {id}: items: {e}")))?,
    })
}

async fn is_editor(pool: &AnyPool, p: &Playlist, user: &User) -> Result<bool, Error> {
    if p.owner_id == user.id {
        return Ok(true);
    }
    if !p.collaborative {
        return Ok(false);
    }
    Ok(sqlx::query("SELECT 1 FROM playlist_editors WHERE playlist_id = $1 AND user_id = $2")
        .bind(&p.id)
        .bind(&user.id)
        .fetch_optional(pool)
        .await?
        .is_some())
}

/// A playlist its owner or an editor asks for (others see 404: playlists are private
/// until the owner adds editors).
pub async fn get(pool: &AnyPool, id: &str, user: &User) -> Result<Playlist, Error> {
    let p = load(pool, id).await?;
    if !is_editor(pool, &p, user).await? && !user.admin {
        return Err(Error::NotFound(format!("no playlist {id:?}")));
    }
    Ok(p)
}

pub async fn mine(pool: &AnyPool, user: &User) -> Result<Vec<serde_json::Value>, Error> {
    Ok(sqlx::query(
        "SELECT id, name, collaborative, version FROM playlists WHERE deleted = 0 AND (owner_id = $1 OR id IN \
         (SELECT playlist_id FROM playlist_editors WHERE user_id = $1)) ORDER BY created_ms",
    )
    .bind(&user.id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(serde_json::json!({
            "id": r.try_get::<String, _>(0)?,
            "name": r.try_get::<String, _>(1)?,
            "collaborative": r.try_get::<i64, _>(2)? != 0,
            "version": r.try_get::<i64, _>(3)?,
        }))
    })
    .collect::<Result<_, sqlx::Error>>()?)
}

/// Apply an editor's operations, each rebased from `edit.version` over what was
/// committed since (and over the earlier operations of the same request).
pub async fn edit(pool: &AnyPool, id: &str, user: &User, edit: &Edit, now: i64) -> Result<EditResult, Error> {
    if edit.ops.is_empty() || edit.ops.len() > MAX_OPS {
        return Err(Error::BadRequest(format!("ops must list 1-{MAX_OPS} operations")));
    }
    // Added tracks must exist.
    for op in &edit.ops {
        if let Op::Add { track_id, .. } = op {
            let known = sqlx::query("SELECT 1 FROM tracks WHERE id = $1").bind(track_id).fetch_optional(pool).await?;
            if known.is_none() {
                return Err(Error::BadRequest(format!("unknown track {track_id:?}")));
            }
        }
    }
    for _ in 0..RETRIES {
        let p = load(pool, id).await?;
        if !is_editor(pool, &p, user).await? {
            return Err(Error::Forbidden(format!("{} may not edit playlist {id}", user.id)));
        }
        if edit.version < 0 || edit.version > p.version {
            return Err(Error::Conflict(format!(
                "playlist {id} has no version {} (it is at version {})",
                edit.version, p.version
            )));
        }
        let log: Vec<Applied> =
            sqlx::query("SELECT applied FROM playlist_ops WHERE playlist_id = $1 AND version > $2 ORDER BY version")
                .bind(id)
                .bind(edit.version)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    let text: String = r.try_get(0)?;
                    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
                })
                .collect::<Result<_, sqlx::Error>>()?;
        let mut seen = p.items.clone();
        for a in log.iter().rev() {
            ot::unapply(&mut seen, a);
        }
        let mut list = p.items.clone();
        let mut log = log;
        let mut applied = Vec::with_capacity(edit.ops.len());
        for op in &edit.ops {
            ot::validate(op, &seen).map_err(refusal)?;
            let rebased = ot::rebase(op, &seen, &log).map_err(refusal)?;
            let item_id = new_id("itm")?;
            let a = ot::commit(&mut list, &rebased, || item_id).map_err(refusal)?;
            if list.len() > MAX_ITEMS {
                return Err(Error::BadRequest(format!("a playlist holds at most {MAX_ITEMS} items")));
            }
            log.push(a.clone());
            applied.push(a);
        }
        // Commit only if nobody committed since we read.
        let new_version = p.version + applied.len() as i64;
        let items = serde_json::to_string(&list).map_err(|e| Error::Database(e.to_string()))?;
        let mut tx = segue_core::sql::begin_write(pool).await?;
        let won = sqlx::query(
            "UPDATE playlists SET version = $1, items = $2, updated_ms = $3 WHERE id = $4 AND version = $5 AND deleted = 0",
        )
        .bind(new_version)
        .bind(&items)
        .bind(now)
        .bind(id)
        .bind(p.version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if won == 0 {
            tx.rollback().await?;
            continue;
        }
        for (k, a) in applied.iter().enumerate() {
            sqlx::query(
                "INSERT INTO playlist_ops (playlist_id, version, user_id, applied, created_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(p.version + 1 + k as i64)
            .bind(&user.id)
            .bind(serde_json::to_string(a).map_err(|e| Error::Database(e.to_string()))?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        return Ok(EditResult { version: new_version, applied, items: list });
    }
    Err(Error::Unavailable(format!("playlist {id} is too busy; try again")))
}

fn refusal(r: Refusal) -> Error {
    match r {
        Refusal::Conflict(m) => Error::Conflict(m),
        Refusal::Invalid(m) => Error::BadRequest(m),
    }
}

/// What changed since `since`, for an editor catching up.
pub async fn ops_since(pool: &AnyPool, id: &str, user: &User, since: i64) -> Result<serde_json::Value, Error> {
    let p = get(pool, id, user).await?;
    if since < 0 || since > p.version {
        return Err(Error::Conflict(format!("playlist {id} has no version {since} (it is at {})", p.version)));
    }
    let ops: Vec<serde_json::Value> = sqlx::query(
        "SELECT version, user_id, applied FROM playlist_ops WHERE playlist_id = $1 AND version > $2 ORDER BY version",
    )
    .bind(id)
    .bind(since)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        let applied: String = r.try_get(2)?;
        Ok(serde_json::json!({
            "version": r.try_get::<i64, _>(0)?,
            "user_id": r.try_get::<String, _>(1)?,
            "applied": serde_json::from_str::<serde_json::Value>(&applied).unwrap_or_default(),
        }))
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(serde_json::json!({ "id": id, "version": p.version, "ops": ops }))
}

pub async fn rename(pool: &AnyPool, id: &str, user: &User, name: &str, now: i64) -> Result<Playlist, Error> {
    check_name(name)?;
    let p = get(pool, id, user).await?;
    if p.owner_id != user.id {
        return Err(Error::Forbidden("only the owner renames a playlist".into()));
    }
    sqlx::query("UPDATE playlists SET name = $1, updated_ms = $2 WHERE id = $3")
        .bind(name.trim())
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?;
    load(pool, id).await
}

pub async fn delete(pool: &AnyPool, id: &str, user: &User, now: i64) -> Result<(), Error> {
    let p = get(pool, id, user).await?;
    if p.owner_id != user.id {
        return Err(Error::Forbidden("only the owner deletes a playlist".into()));
    }
    sqlx::query("UPDATE playlists SET deleted = 1, updated_ms = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn add_editor(pool: &AnyPool, id: &str, user: &User, editor: &str) -> Result<(), Error> {
    let p = get(pool, id, user).await?;
    if p.owner_id != user.id {
        return Err(Error::Forbidden("only the owner adds editors".into()));
    }
    if !p.collaborative {
        return Err(Error::Conflict(format!("playlist {id} is not collaborative")));
    }
    let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1").bind(editor).fetch_optional(pool).await?;
    if exists.is_none() {
        return Err(Error::BadRequest(format!("unknown user {editor:?}")));
    }
    sqlx::query("INSERT INTO playlist_editors (playlist_id, user_id) VALUES ($1, $2) ON CONFLICT (playlist_id, user_id) DO NOTHING")
        .bind(id)
        .bind(editor)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn like(pool: &AnyPool, user: &User, track: &str, on: bool, now: i64) -> Result<(), Error> {
    if on {
        if sqlx::query("SELECT 1 FROM tracks WHERE id = $1").bind(track).fetch_optional(pool).await?.is_none() {
            return Err(Error::NotFound(format!("no track {track:?}")));
        }
        sqlx::query("INSERT INTO likes (user_id, track_id, created_ms) VALUES ($1, $2, $3) ON CONFLICT (user_id, track_id) DO NOTHING")
            .bind(&user.id)
            .bind(track)
            .bind(now)
            .execute(pool)
            .await?;
    } else {
        sqlx::query("DELETE FROM likes WHERE user_id = $1 AND track_id = $2")
            .bind(&user.id)
            .bind(track)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// How many users like `track`.
/// Like or unlike for `user`, and re-rank the track in search: likes are the
/// popularity search ranks by. What `/v1/me/likes` and Subsonic stars both do.
pub async fn set_like(app: &crate::App, user: &User, track: &str, on: bool, now: i64) -> Result<(), Error> {
    like(&app.pool, user, track, on, now).await?;
    if let Some(t) = crate::catalog::track(&app.pool, track).await? {
        let likes = like_count(&app.pool, track).await?;
        app.search.put(crate::search::Entry::for_track(&t, likes))?;
    }
    Ok(())
}

pub async fn like_count(pool: &AnyPool, track: &str) -> Result<u64, Error> {
    let r = sqlx::query("SELECT COUNT(*) FROM likes WHERE track_id = $1").bind(track).fetch_one(pool).await?;
    Ok(r.try_get::<i64, _>(0)?.max(0) as u64)
}

pub async fn likes(pool: &AnyPool, user: &User) -> Result<Vec<String>, Error> {
    Ok(sqlx::query("SELECT track_id FROM likes WHERE user_id = $1 ORDER BY created_ms DESC, track_id")
        .bind(&user.id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?)
}

/// `POST /v1/playlists/ID/shuffle`: the playlist's items in a new random order with no
/// artist (a track's first) twice in a row whenever that is possible (`shuffle`). The
/// playlist itself is not changed.
pub async fn shuffled(pool: &AnyPool, p: &Playlist) -> Result<serde_json::Value, Error> {
    let ids: Vec<&str> = p.items.iter().map(|i| i.track_id.as_str()).collect();
    let mut first_artist = std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT track_id, artist_id FROM track_artists WHERE position = 0 AND track_id IN ({})",
            list.join(",")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(pool).await? {
            first_artist.insert(r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?);
        }
    }
    let artists: Vec<&str> = ids.iter().map(|t| first_artist.get(*t).map_or(*t, String::as_str)).collect();
    let mut rng = {
        use rand::SeedableRng;
        rand::rngs::SmallRng::from_seed(segue_core::drm::random::<32>())
    };
    let order = crate::shuffle::shuffle(&artists, &mut rng);
    let items: Vec<&Item> = order.iter().map(|&i| &p.items[i]).collect();
    Ok(serde_json::json!({
        "playlist": p.id,
        "version": p.version,
        "items": items,
        "adjacencies": crate::shuffle::adjacencies(&artists, &order),
    }))
}
