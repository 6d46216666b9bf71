//! Smart shuffle: a playlist's shuffle (`playlists::shuffled`, no artist twice in a row
//! where possible) with one recommendation after every `every` tracks: the playable
//! tracks not in the playlist whose sound is nearest the playlist's (the mean of its
//! tracks' unit audio embeddings), each placed where its artist differs from both
//! neighbours. The playlist itself is not changed.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::discover::{playable, CANDIDATES};
use crate::error::Error;
use crate::playlists::{self, Playlist};
use crate::App;

/// The default spacing: one recommendation per three tracks.
pub const EVERY: usize = 3;

pub async fn smart_shuffled(app: &App, p: &Playlist, country: &str, every: usize, now: i64) -> Result<Value, Error> {
    let mut out = playlists::shuffled(&app.pool, p).await?;
    let snap = app.recs.snapshot(&app.pool).await?;
    let members: HashSet<&str> = p.items.iter().map(|i| i.track_id.as_str()).collect();
    let indices: Vec<u32> = members.iter().filter_map(|t| snap.index_of(t)).collect();
    let wanted = p.items.len() / every.max(1);
    let picks = match snap.audio_profile(&indices) {
        Some(profile) if wanted > 0 => {
            let near = snap.by_sound(&profile, CANDIDATES, |i| !members.contains(snap.ids[i as usize].as_str()));
            playable(app, &snap, near.into_iter(), country, now, CANDIDATES.min(wanted * 4)).await?
        }
        _ => Vec::new(),
    };
    let artist_of = |t: &str| snap.index_of(t).map(|i| snap.artist[i as usize]);
    let items = out["items"].as_array().cloned().unwrap_or_default();
    let mut merged: Vec<Value> = Vec::with_capacity(items.len() + wanted);
    let mut left: Vec<(u32, f32)> = picks;
    let mut inserted = 0;
    for (k, item) in items.iter().enumerate() {
        merged.push(item.clone());
        if (k + 1) % every.max(1) != 0 || left.is_empty() {
            continue;
        }
        let before = item["track_id"].as_str().and_then(artist_of);
        let after = items.get(k + 1).and_then(|n| n["track_id"].as_str()).and_then(artist_of);
        // The nearest in sound whose artist differs from both neighbours, else the nearest.
        let at = left
            .iter()
            .position(|(t, _)| {
                let a = Some(snap.artist[*t as usize]);
                a != before && a != after
            })
            .unwrap_or(0);
        let (t, score) = left.remove(at);
        merged.push(json!({ "track_id": snap.ids[t as usize], "recommended": true, "score": score }));
        inserted += 1;
    }
    out["items"] = Value::Array(merged);
    out["recommended"] = json!(inserted);
    out["model"] = json!(snap.model);
    Ok(out)
}
