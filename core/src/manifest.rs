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
