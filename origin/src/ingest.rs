//! Ingesting masters from files: find them, decode and package each, report per master.
//! Used by `segue ingest` and by the upload endpoint (one file at a time there).

use std::path::{Path, PathBuf};

use segue_core::store::ObjectStore;
use serde::Serialize;

use crate::error::Error;
use crate::master;
use crate::package::{self, Packaged};

/// What one master became, as `segue ingest --json` prints it (one object per line).
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub file: String,
    pub content_id: segue_core::ContentId,
    /// False when the audio was already stored and nothing was written.
    pub created: bool,
    pub duration_secs: f64,
    pub tiers: Vec<TierReport>,
    /// Tempo, key, spectral and timbre features and their embedding (none for content
    /// packaged before features existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<segue_core::manifest::AudioFeatures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TierReport {
    pub tier: segue_core::Tier,
    pub key: String,
    pub bytes: u64,
    pub samples: u64,
    pub sample_rate: u32,
    pub seek_key: String,
    pub kbps: f64,
}

impl IngestReport {
    pub fn new(file: &Path, p: &Packaged) -> Self {
        let m = &p.manifest;
        IngestReport {
            file: file.display().to_string(),
            content_id: m.content_id,
            created: p.created,
            duration_secs: m.duration_secs(),
            tiers: m
                .tiers
                .iter()
                .map(|(tier, t)| TierReport {
                    tier: *tier,
                    key: t.key.clone(),
                    bytes: t.bytes,
                    samples: t.samples,
                    sample_rate: t.sample_rate,
                    seek_key: t.seek_key.clone(),
                    kbps: t.kbps,
                })
                .collect(),
            features: m.features.clone(),
        }
    }
}

/// Expand files and folders into the masters to ingest: folders are walked recursively
/// for `.wav`, `.wave` and `.flac` files (sorted, so runs are reproducible); files named
/// explicitly are taken whatever their name. A path that does not exist is an error.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
        let bad = |e: std::io::Error| Error::Master {
            file: dir.display().to_string(),
            problem: format!("cannot read folder: {e}"),
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(bad)?.collect::<Result<_, _>>().map_err(bad)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                let ext = p.extension().and_then(|x| x.to_str()).map(str::to_ascii_lowercase);
                if matches!(ext.as_deref(), Some("wav" | "wave" | "flac")) {
                    out.push(p);
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::Master { file: p.display().to_string(), problem: "no such file or folder".into() });
        }
    }
    Ok(out)
}

/// Decode and package one master file.
pub async fn ingest_file(
    store: &dyn ObjectStore,
    keks: Option<&segue_core::drm::kek::Keks>,
    path: &Path,
) -> Result<IngestReport, Error> {
    let owned = path.to_owned();
    let master = tokio::task::spawn_blocking(move || master::decode_file(&owned))
        .await
        .map_err(|e| Error::Encode(format!("decoder task failed: {e}")))??;
    let packaged = package::package(store, master, keks).await?;
    Ok(IngestReport::new(path, &packaged))
}
