//! Playlists for Subsonic clients, mapped onto the collaborative playlists of `/v1`:
//! every change is an operation against the version read just before it, so an edit
//! from a Subsonic client merges with edits made meanwhile in the app.

use serde_json::{json, Value};
use sqlx::Row;

use super::browse::{self, db};
use super::{Failure, Params};
use crate::catalog::User;
use crate::ot::Op;
use crate::playlists::{self, Edit, NewPlaylist, Playlist};
use crate::App;

/// A playlist's Subsonic fields (and its songs, with `entries`).
async fn describe(app: &App, p: &Playlist, entries: bool) -> Result<Value, Failure> {
    let row = sqlx::query(
        "SELECT p.created_ms, p.updated_ms, u.name FROM playlists p LEFT JOIN users u ON u.id = p.owner_id WHERE p.id = $1",
    )
    .bind(&p.id)
    .fetch_one(&app.pool)
    .await
    .map_err(db)?;
    let mut songs = Vec::with_capacity(p.items.len());
    for item in &p.items {
        // A track removed from the catalog since is left out.
        if let Ok(s) = browse::song(app, &item.track_id).await {
            songs.push(s);
        }
    }
    let mut v = json!({
        "id": p.id, "name": p.name, "owner": row.try_get::<Option<String>, _>(2).map_err(db)?.unwrap_or_default(),
        "public": false, "songCount": songs.len(),
        "duration": songs.iter().map(|s| s["duration"].as_i64().unwrap_or(0)).sum::<i64>(),
        "created": browse::iso(row.try_get(0).map_err(db)?), "changed": browse::iso(row.try_get(1).map_err(db)?),
    });
    if entries {
        v["entry"] = json!(songs);
    }
    Ok(v)
}

/// `getPlaylists`: the caller's own playlists and those they edit.
pub async fn list(app: &App, user: &User) -> Result<Value, Failure> {
    let mut out = Vec::new();
    for p in playlists::mine(&app.pool, user).await.map_err(Failure::from)? {
        let id = p["id"].as_str().unwrap_or_default();
        let p = playlists::get(&app.pool, id, user).await.map_err(Failure::from)?;
        out.push(describe(app, &p, false).await?);
    }
    Ok(json!({ "playlist": out }))
}

/// `getPlaylist?id=`.
pub async fn get(app: &App, user: &User, id: &str) -> Result<Value, Failure> {
    let p = playlists::get(&app.pool, id, user).await.map_err(Failure::from)?;
    describe(app, &p, true).await
}

/// Apply `ops` against the playlist as it is now.
async fn apply(app: &App, user: &User, id: &str, ops: Vec<Op>) -> Result<(), Failure> {
    if ops.is_empty() {
        return Ok(());
    }
    let p = playlists::get(&app.pool, id, user).await.map_err(Failure::from)?;
    let edit = Edit { version: p.version, ops };
    playlists::edit(&app.pool, id, user, &edit, crate::now_ms()).await.map_err(Failure::from)?;
    app.live.playlist_changed(id);
    Ok(())
}

/// `createPlaylist?name=&songId=...`, or with `playlistId` its songs replaced.
pub async fn create(app: &App, user: &User, p: &Params) -> Result<Value, Failure> {
    let songs = p.all("songId");
    let id = match p.get("playlistId").filter(|v| !v.is_empty()) {
        Some(id) => {
            let current = playlists::get(&app.pool, id, user).await.map_err(Failure::from)?;
            let mut ops: Vec<Op> = current.items.iter().map(|i| Op::Remove { item_id: i.item_id.clone() }).collect();
            ops.extend(songs.iter().map(|s| Op::Add { track_id: s.clone(), index: current.items.len() }));
            let edit = Edit { version: current.version, ops };
            playlists::edit(&app.pool, id, user, &edit, crate::now_ms()).await.map_err(Failure::from)?;
            app.live.playlist_changed(id);
            id.to_owned()
        }
        None => {
            let name = p.required("name")?;
            let new = NewPlaylist { name: name.to_owned(), collaborative: false };
            let created = playlists::create(&app.pool, user, &new, crate::now_ms()).await.map_err(Failure::from)?;
            let adds = songs.iter().map(|s| Op::Add { track_id: s.clone(), index: 0 }).collect();
            apply(app, user, &created.id, adds).await?;
            created.id
        }
    };
    get(app, user, &id).await
}

/// `updatePlaylist?playlistId=&name=&songIdToAdd=...&songIndexToRemove=...`.
pub async fn update(app: &App, user: &User, p: &Params) -> Result<(), Failure> {
    let id = p.required("playlistId")?;
    if let Some(name) = p.get("name").filter(|n| !n.is_empty()) {
        playlists::rename(&app.pool, id, user, name, crate::now_ms()).await.map_err(Failure::from)?;
    }
    let current = playlists::get(&app.pool, id, user).await.map_err(Failure::from)?;
    let mut ops = Vec::new();
    for i in p.all("songIndexToRemove") {
        let at: usize = i.parse().map_err(|_| Failure::new(0, format!("songIndexToRemove {i:?} is not an index")))?;
        let item = current
            .items
            .get(at)
            .ok_or_else(|| Failure::new(70, format!("The requested data was not found: no song at index {at}")))?;
        ops.push(Op::Remove { item_id: item.item_id.clone() });
    }
    let end = current.items.len();
    ops.extend(p.all("songIdToAdd").iter().map(|s| Op::Add { track_id: s.clone(), index: end }));
    let edit = Edit { version: current.version, ops };
    if !edit.ops.is_empty() {
        playlists::edit(&app.pool, id, user, &edit, crate::now_ms()).await.map_err(Failure::from)?;
        app.live.playlist_changed(id);
    }
    Ok(())
}

/// `deletePlaylist?id=`.
pub async fn delete(app: &App, user: &User, id: &str) -> Result<(), Failure> {
    playlists::delete(&app.pool, id, user, crate::now_ms()).await.map_err(Failure::from)
}
