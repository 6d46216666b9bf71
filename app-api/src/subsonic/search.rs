//! `search3`: artists, albums and songs matching a query, on the same tantivy index as
//! `/v1/search`, each kind paged by its own count and offset. An empty query (`""`,
//! as clients send to sync a library) lists the whole library in name order, paged.

use serde_json::{json, Value};
use sqlx::Row;

use super::browse::{self, db};
use super::{Failure, Params};
use crate::App;

/// The most of one kind a page may ask for.
const MAX_COUNT: usize = 500;

fn page(p: &Params, kind: &str) -> Result<(usize, usize), Failure> {
    let number = |name: String, default: usize| -> Result<usize, Failure> {
        match p.get(&name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Failure::new(0, format!("{name} {v:?} is not a number"))),
        }
    };
    let count = number(format!("{kind}Count"), 20)?.min(MAX_COUNT);
    Ok((count, number(format!("{kind}Offset"), 0)?))
}

pub async fn search3(app: &App, p: &Params) -> Result<Value, Failure> {
    let raw = p.get("query").unwrap_or_default().trim();
    let query = raw.trim_matches('"').trim();
    let mut out = json!({ "artist": [], "album": [], "song": [] });
    for (kind, field, table) in [
        ("artist", "artist", "artists ORDER BY name_key"),
        ("album", "album", "albums ORDER BY title_key"),
        ("song", "track", "tracks ORDER BY title, id"),
    ] {
        let (count, offset) = page(p, kind)?;
        if count == 0 {
            continue;
        }
        let ids: Vec<String> = if query.is_empty() {
            sqlx::query(&format!("SELECT id FROM {table} LIMIT $1 OFFSET $2"))
                .bind(count as i64)
                .bind(offset as i64)
                .fetch_all(&app.pool)
                .await
                .map_err(db)?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(db)?
        } else {
            let hits = app.search.search(query, &[field], offset.saturating_add(count)).map_err(Failure::from)?;
            hits.into_iter().skip(offset).take(count).map(|h| h.id).collect()
        };
        let mut list = Vec::with_capacity(ids.len());
        for id in &ids {
            let item = match kind {
                "artist" => browse::artist_id3(app, id).await?,
                "album" => browse::album_id3(app, id).await?,
                _ => Some(browse::song(app, id).await?),
            };
            list.extend(item);
        }
        out[kind] = json!(list);
    }
    Ok(out)
}
