//! Serving recommendations from vectors in memory: the latest trained model's track
//! factors (collaborative) and every track's audio embedding (from ingest), reloaded
//! when a newer model is trained or the snapshot is a minute old.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row};

use crate::error::Error;

const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Snapshot {
    pub model: i64,
    pub cf: HashMap<String, Vec<f32>>,
    pub audio: HashMap<String, Vec<f32>>,
}

#[derive(Default)]
pub struct Vectors {
    current: RwLock<Option<(Instant, Arc<Snapshot>)>>,
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Vectors {
    pub async fn snapshot(&self, pool: &AnyPool) -> Result<Arc<Snapshot>, Error> {
        if let Some((at, s)) = self.current.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if at.elapsed() < MAX_AGE {
                return Ok(s.clone());
            }
        }
        let (model, cf) = super::train::track_vectors(pool).await?;
        let mut audio = HashMap::new();
        for r in sqlx::query("SELECT id, audio_features FROM tracks WHERE audio_features <> ''").fetch_all(pool).await?
        {
            let json: String = r.try_get(1)?;
            let f: Option<segue_core::manifest::AudioFeatures> = serde_json::from_str(&json).ok();
            if let Some(f) = f {
                audio.insert(r.try_get::<String, _>(0)?, unit(f.embedding));
            }
        }
        let cf = cf.into_iter().map(|(k, v)| (k, unit(v))).collect();
        let snap = Arc::new(Snapshot { model, cf, audio });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), snap.clone()));
        Ok(snap)
    }
}

impl Snapshot {
    /// Tracks most like `track`, best first, with their scores: the mean of the
    /// collaborative and audio cosines where both exist, else the one that does.
    pub fn similar(&self, track: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<(String, f32)>, Error> {
        let (cf, audio) = (self.cf.get(track), self.audio.get(track));
        if cf.is_none() && audio.is_none() {
            return Err(Error::NotFound(format!(
                "track {track:?} has neither plays in the trained model nor audio features"
            )));
        }
        let mut ids: Vec<&String> = self.audio.keys().chain(self.cf.keys()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut scored: Vec<(String, f32)> = ids
            .into_iter()
            .filter(|id| id.as_str() != track && keep(id))
            .filter_map(|id| {
                let c = cf.zip(self.cf.get(id)).map(|(a, b)| cosine(a, b));
                let a = audio.zip(self.audio.get(id)).map(|(a, b)| cosine(a, b));
                let score = match (c, a) {
                    (Some(c), Some(a)) => (c + a) / 2.0,
                    (Some(s), None) | (None, Some(s)) => s,
                    (None, None) => return None,
                };
                Some((id.clone(), score))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(scored)
    }
}
