//! `segue recs train`: implicit ALS over every play in the log (streams weigh 1, skips a
//! quarter), the factors stored as a new model in one transaction; the model before it
//! is kept, older ones removed.

use std::collections::HashMap;

use base64::Engine;
use serde::Serialize;
use sqlx::{AnyPool, Row};

use super::als::{self, Csr, Params};
use crate::error::Error;

#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    pub model: i64,
    pub users: usize,
    pub tracks: usize,
    pub plays: usize,
    pub factors: usize,
    pub seconds: f64,
}

pub fn encode(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode(s: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    (bytes.len() % 4 == 0)
        .then(|| bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Train on the play log and store the model. `progress(done, total)` per iteration.
pub async fn train(
    pool: &AnyPool,
    params: Params,
    now_ms: i64,
    progress: impl FnMut(usize) + Send + 'static,
) -> Result<Trained, Error> {
    let started = std::time::Instant::now();
    let rows = sqlx::query("SELECT user_id, track_id, skipped FROM play_events").fetch_all(pool).await?;
    let (mut users, mut tracks) = (HashMap::<String, u32>::new(), HashMap::<String, u32>::new());
    let mut triples = Vec::with_capacity(rows.len());
    for r in &rows {
        let (u, t): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        let skipped = r.try_get::<i64, _>(2)? != 0;
        let next_u = users.len() as u32;
        let ui = *users.entry(u).or_insert(next_u);
        let next_t = tracks.len() as u32;
        let ti = *tracks.entry(t).or_insert(next_t);
        triples.push((ui, ti, if skipped { 0.25 } else { 1.0 }));
    }
    if triples.is_empty() {
        return Err(Error::Conflict("no plays to train on yet".into()));
    }
    let (n_users, n_tracks, plays) = (users.len(), tracks.len(), triples.len());
    let model = tokio::task::spawn_blocking(move || {
        let by_user = Csr::from_triples(n_users, &triples);
        als::train(&by_user, n_tracks, &params, progress)
    })
    .await
    .map_err(|e| Error::Database(format!("training failed: {e}")))?;
    let mut tx = segue_core::sql::begin_write(pool).await?;
    let id: i64 =
        sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM rec_models").fetch_one(&mut *tx).await?.try_get(0)?;
    sqlx::query(
        "INSERT INTO rec_models (id, trained_ms, factors, users, tracks, plays, params) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(now_ms)
    .bind(params.factors as i64)
    .bind(n_users as i64)
    .bind(n_tracks as i64)
    .bind(plays as i64)
    .bind(format!("{params:?}"))
    .execute(&mut *tx)
    .await?;
    let vectors = users
        .iter()
        .map(|(name, &i)| ("user", name, model.user_vec(i as usize)))
        .chain(tracks.iter().map(|(name, &i)| ("track", name, model.item_vec(i as usize))));
    let vectors: Vec<_> = vectors.collect();
    for chunk in vectors.chunks(200) {
        let values: Vec<String> =
            (0..chunk.len()).map(|k| format!("($1, ${}, ${}, ${})", 3 * k + 2, 3 * k + 3, 3 * k + 4)).collect();
        let sql = format!("INSERT INTO rec_vectors (model_id, kind, id, vector) VALUES {}", values.join(","));
        let mut q = sqlx::query(&sql).bind(id);
        for (kind, name, v) in chunk {
            q = q.bind(*kind).bind(name.as_str()).bind(encode(v));
        }
        q.execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM rec_vectors WHERE model_id < $1").bind(id - 1).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM rec_models WHERE id < $1").bind(id - 1).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Trained {
        model: id,
        users: n_users,
        tracks: n_tracks,
        plays,
        factors: params.factors,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The latest model's track vectors, by track id.
pub async fn track_vectors(pool: &AnyPool) -> Result<(i64, HashMap<String, Vec<f32>>), Error> {
    let Some(id) = sqlx::query("SELECT MAX(id) FROM rec_models").fetch_one(pool).await?.try_get::<Option<i64>, _>(0)?
    else {
        return Ok((0, HashMap::new()));
    };
    let rows = sqlx::query("SELECT id, vector FROM rec_vectors WHERE model_id = $1 AND kind = 'track'")
        .bind(id)
        .fetch_all(pool)
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        if let Some(v) = decode(&r.try_get::<String, _>(1)?) {
            out.insert(r.try_get(0)?, v);
        }
    }
    Ok((id, out))
}
