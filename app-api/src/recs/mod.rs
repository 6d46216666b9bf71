//! Recommendations: implicit-feedback matrix factorisation over plays (`als`), and the
//! seeded synthetic listening data it is measured on (`synth`), and the batch job that
//! trains on the play log and stores the factors (`train`).

pub mod als;
pub mod cold;
pub mod discover;
pub mod serve;
pub mod smart_shuffle;
pub mod synth;
pub mod train;

use sqlx::{AnyPool, Row};

/// Every track's audio embedding from ingest (tracks packaged before features existed,
/// or with unreadable features, have none): what training fits the audio map on and
/// serving compares sounds by.
pub async fn embeddings(pool: &AnyPool) -> Result<Vec<(String, Vec<f32>)>, crate::error::Error> {
    let mut out = Vec::new();
    for r in sqlx::query("SELECT id, audio_features FROM tracks WHERE audio_features <> ''").fetch_all(pool).await? {
        if let Ok(f) = serde_json::from_str::<segue_core::manifest::AudioFeatures>(&r.try_get::<String, _>(1)?) {
            out.push((r.try_get(0)?, f.embedding));
        }
    }
    Ok(out)
}
