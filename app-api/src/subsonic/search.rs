//! `search3`: artists, albums and songs matching a query, on the same tantivy index as
//! `/v1/search`, each kind paged by its own count and offset. An empty query (`""`,
//! as clients send to sync a library) lists the whole library in name order, paged.

use serde_json::{json, Value};

use super::browse;
use super::{Failure, Params};
use crate::App;

/// The most of one kind a page may ask for.
const MAX_COUNT: usize = 500;

fn page(p: &Params, kind: &str) -> Result<(usize, usize), Failure> {
    let count_of = |name: String, default: i64| -> Result<usize, Failure> {
        let n = p.number(&name, default)?;
        usize::try_from(n).map_err(|_| Failure::new(0, format!("{name} \"{n}\" is not a number")))
    };
    Ok((count_of(format!("{kind}Count"), 20)?.min(MAX_COUNT), count_of(format!("{kind}Offset"), 0)?))
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
            let sql = format!("SELECT id FROM {table} LIMIT $1 OFFSET $2");
            browse::ids(app, &sql, &[], Some((count as i64, offset as i64))).await?
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
