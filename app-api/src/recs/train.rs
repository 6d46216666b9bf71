//! `segue recs train`: implicit ALS over every play in the log (streams weigh 1, skips a
//! quarter), the factors stored as a new model in one transaction; the model before it
//! is kept, older ones removed.

use std::collections::HashMap;

use base64::Engine;
use serde::Serialize;
use sqlx::{AnyPool, Row};

use super::als::{self, Csr, Params};
use super::cold::AudioMap;
use crate::error::Error;

#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    pub model: i64,
    pub users: usize,
    pub tracks: usize,
    pub plays: usize,
    pub factors: usize,
    /// Warm tracks the audio map was fit on (0: no map; too few tracks had both).
    pub audio_map_tracks: usize,
    /// Cold-start tracks shown in explore slots since the last training.
    pub explored_tracks: usize,
    /// Streams of them by listeners they were shown to.
    pub explore_streams: i64,
    pub seconds: f64,
}

/// How `rec_models.audio_map` holds the map.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMap {
    dims: usize,
    factors: usize,
    weights: String,
}

/// Ridge penalty of the audio map (embeddings are standardised, factors small).
const MAP_LAMBDA: f64 = 1.0;

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
    // The audio map, fit on the tracks that have both plays and an embedding.
    let pairs: Vec<(Vec<f32>, &[f32])> = super::embeddings(pool)
        .await?
        .into_iter()
        .filter_map(|(id, e)| Some((e, model.item_vec(*tracks.get(&id)? as usize))))
        .collect();
    let pair_refs: Vec<(&[f32], &[f32])> = pairs.iter().map(|(e, y)| (e.as_slice(), *y)).collect();
    let audio_map = AudioMap::fit(&pair_refs, MAP_LAMBDA);
    let audio_map_tracks = if audio_map.is_some() { pairs.len() } else { 0 };
    let audio_map = audio_map
        .map(|m| serde_json::to_string(&StoredMap { dims: m.dims, factors: m.factors, weights: encode(&m.weights) }))
        .transpose()
        .map_err(|e| Error::Database(format!("audio map: {e}")))?
        .unwrap_or_default();
    // Exploration's feedback: per track shown in an explore slot, the listeners shown it
    // and those of them who streamed it afterwards.
    let explored = sqlx::query(
        "SELECT d.track_id, COUNT(DISTINCT d.user_id), COUNT(DISTINCT p.user_id) FROM discover_weekly d \
         LEFT JOIN play_events p ON p.user_id = d.user_id AND p.track_id = d.track_id \
           AND p.skipped = 0 AND p.started_ms >= d.generated_ms \
         WHERE d.explore = 1 GROUP BY d.track_id",
    )
    .fetch_all(pool)
    .await?;
    let explore_streams = explored.iter().map(|r| r.try_get::<i64, _>(2)).sum::<Result<i64, _>>()?;
    let mut tx = segue_core::sql::begin_write(pool).await?;
    let id: i64 =
        sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM rec_models").fetch_one(&mut *tx).await?.try_get(0)?;
    sqlx::query(
        "INSERT INTO rec_models (id, trained_ms, factors, users, tracks, plays, params, audio_map) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(now_ms)
    .bind(params.factors as i64)
    .bind(n_users as i64)
    .bind(n_tracks as i64)
    .bind(plays as i64)
    .bind(serde_json::to_string(&params).unwrap_or_default())
    .bind(audio_map)
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
    for r in &explored {
        sqlx::query("INSERT INTO rec_explore (model_id, track_id, impressions, streams) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(r.try_get::<String, _>(0)?)
            .bind(r.try_get::<i64, _>(1)?)
            .bind(r.try_get::<i64, _>(2)?)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM rec_explore WHERE model_id < $1").bind(id - 1).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM rec_vectors WHERE model_id < $1").bind(id - 1).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM rec_models WHERE id < $1").bind(id - 1).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Trained {
        model: id,
        users: n_users,
        tracks: n_tracks,
        plays,
        factors: params.factors,
        audio_map_tracks,
        explored_tracks: explored.len(),
        explore_streams,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The model that serves: the latest one, with its track vectors, audio map and
/// exploration record.
pub struct Latest {
    pub id: i64,
    pub params: Params,
    pub audio_map: Option<AudioMap>,
    pub tracks: HashMap<String, Vec<f32>>,
    pub explore: HashMap<String, (u32, u32)>,
}

pub async fn latest(pool: &AnyPool) -> Result<Option<Latest>, Error> {
    let Some(row) = sqlx::query("SELECT id, params, audio_map FROM rec_models ORDER BY id DESC LIMIT 1")
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let id: i64 = row.try_get(0)?;
    // Models trained before parameters were stored as JSON serve with the defaults.
    let params = serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or_default();
    let audio_map = serde_json::from_str::<StoredMap>(&row.try_get::<String, _>(2)?).ok().and_then(|m| {
        let weights = decode(&m.weights)?;
        (weights.len() == (m.dims + 1) * m.factors).then_some(AudioMap { dims: m.dims, factors: m.factors, weights })
    });
    let mut tracks = HashMap::new();
    for r in sqlx::query("SELECT id, vector FROM rec_vectors WHERE model_id = $1 AND kind = 'track'")
        .bind(id)
        .fetch_all(pool)
        .await?
    {
        if let Some(v) = decode(&r.try_get::<String, _>(1)?) {
            tracks.insert(r.try_get(0)?, v);
        }
    }
    let mut explore = HashMap::new();
    for r in sqlx::query("SELECT track_id, impressions, streams FROM rec_explore WHERE model_id = $1")
        .bind(id)
        .fetch_all(pool)
        .await?
    {
        let (i, s): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
        explore.insert(r.try_get(0)?, (i.clamp(0, u32::MAX.into()) as u32, s.clamp(0, u32::MAX.into()) as u32));
    }
    Ok(Some(Latest { id, params, audio_map, tracks, explore }))
}
