//! The per-content manifest (`manifest/{cid}.json`, served at `/m/{cid}.json`): what was
//! packaged from one master. It is written last, so its presence means every object it
//! names is complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::ContentId;
use crate::tier::Tier;

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub content_id: ContentId,
    /// The decoded master the tiers were made from.
    pub source: SourceInfo,
    pub loudness: Loudness,
    pub tiers: BTreeMap<Tier, TierInfo>,
    /// Audio features for recommendations; absent in manifests packaged before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<AudioFeatures>,
}

/// What the origin measures of a master's sound at ingest (origin `features`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioFeatures {
    pub version: u32,
    pub tempo_bpm: f64,
    /// Mean frame RMS, dBFS, and the spread between loud and quiet frames (95th - 10th
    /// percentile), dB.
    pub loudness_db: f64,
    pub dynamics_db: f64,
    pub centroid_hz: f64,
    pub centroid_std_hz: f64,
    /// Frequency under which 85 % of the magnitude lies.
    pub rolloff_hz: f64,
    /// Spectral flatness (0 tonal .. 1 noise).
    pub flatness: f64,
    /// Zero crossings per sample.
    pub zcr: f64,
    /// Energy per pitch class from C, summing to 1.
    pub chroma: Vec<f64>,
    pub key: String,
    pub mode: String,
    pub mfcc_mean: Vec<f64>,
    pub mfcc_std: Vec<f64>,
    /// All of the above on fixed scales: the vector recommendations compare.
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub sample_rate: u32,
    pub channels: u16,
    /// Samples per channel.
    pub samples: u64,
}

/// EBU R128 measurements of the master, for loudness normalisation in players.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Loudness {
    /// Integrated loudness, LUFS (-200 for digital silence).
    pub integrated_lufs: f64,
    /// Highest true peak over all channels, dBTP (-200 for digital silence).
    pub true_peak_dbtp: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierInfo {
    /// Object key of the Ogg Vorbis file.
    pub key: String,
    pub bytes: u64,
    /// Exact samples per channel a full decode yields.
    pub samples: u64,
    pub sample_rate: u32,
    pub channels: u16,
    /// Object key of the seek table.
    pub seek_key: String,
    /// Measured average bitrate of the audio pages (headers excluded), kbit/s.
    pub kbps: f64,
}

impl Manifest {
    pub fn duration_secs(&self) -> f64 {
        self.source.samples as f64 / f64::from(self.source.sample_rate.max(1))
    }
}
