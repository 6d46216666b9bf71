//! The `songLyrics` extension (`getLyricsBySongId`) and the original `getLyrics` by
//! artist and title, from the lyrics admins set per track.

use serde_json::{json, Value};

use super::{Failure, Params};
use crate::App;

/// `getLyricsBySongId`: every language's lyrics of the song, line by line.
pub async fn by_song(app: &App, id: &str) -> Result<Value, Failure> {
    let t = crate::catalog::track(&app.pool, id)
        .await
        .map_err(Failure::from)?
        .ok_or_else(|| Failure::new(70, format!("The requested data was not found: no song {id:?}")))?;
    let artist = t.artists.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ");
    let all = crate::lyrics::of_track(&app.pool, id).await.map_err(Failure::from)?;
    let structured: Vec<Value> = all
        .iter()
        .map(|l| {
            let lines: Vec<Value> = l
                .lines
                .iter()
                .map(|line| match line.start_ms {
                    Some(ms) => json!({ "start": ms, "value": line.value }),
                    None => json!({ "value": line.value }),
                })
                .collect();
            let mut s = json!({ "lang": l.lang, "synced": l.synced, "line": lines,
                "displayArtist": artist, "displayTitle": t.title });
            if l.offset_ms != 0 {
                s["offset"] = json!(l.offset_ms);
            }
            s
        })
        .collect();
    Ok(json!({ "structuredLyrics": structured }))
}

/// `getLyrics?artist=&title=`: the plain text of the first song matching both (the
/// unsynced form; empty when there is none).
pub async fn by_name(app: &App, p: &Params) -> Result<Value, Failure> {
    let (artist, title) = (p.get("artist").unwrap_or(""), p.get("title").unwrap_or(""));
    let query = format!("{artist} {title}");
    let hits = app.search.search(query.trim(), &["track"], 10).map_err(Failure::from)?;
    for hit in hits {
        let matches = |want: &str, have: &str| want.is_empty() || have.eq_ignore_ascii_case(want.trim());
        if !matches(title, &hit.name) || !matches(artist, &hit.artist) {
            continue;
        }
        let all = crate::lyrics::of_track(&app.pool, &hit.id).await.map_err(Failure::from)?;
        if let Some(l) = all.first() {
            let text = l.lines.iter().map(|x| x.value.as_str()).collect::<Vec<_>>().join("\n");
            return Ok(json!({ "artist": hit.artist, "title": hit.name, "value": text }));
        }
    }
    Ok(json!({ "value": "" }))
}
