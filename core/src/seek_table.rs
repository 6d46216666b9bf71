//! The seek table published beside every audio tier (`seek/{cid}/{tier}.json`).
//!
//! A client fetches `[0, header_bytes)` once (the Vorbis identification, comment and
//! setup headers), then for a seek to sample `s` it fetches from the offset of the last
//! entry whose `granule <= s - 2048` (one long block before `s`: a decoder started at a
//! page outputs nothing for its first packet; the first entry when none is), decodes,
//! learns its position from the granule position of the first page end that follows,
//! and discards up to `s`. docs/API.md, "Seek tables", has the whole rule. Pages hold up
//! to a second of audio and entries are page starts, so a seek downloads at most about a
//! second (and a block) of audio it skips.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::tier::Tier;

pub const SEEK_TABLE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeekTable {
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    pub tier: Tier,
    /// Samples per second per channel of this tier's encoding.
    pub sample_rate: u32,
    /// Exact number of samples per channel a full decode yields (end padding trimmed).
    pub total_samples: u64,
    /// Bytes of the Ogg pages holding the three Vorbis header packets.
    pub header_bytes: u64,
    /// Total bytes of the audio object.
    pub total_bytes: u64,
    pub entries: Vec<SeekEntry>,
}

/// One seek point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeekEntry {
    /// Samples per channel completed by the pages before `offset` (the previous page's
    /// granule position). A Vorbis decoder started at `offset` needs one packet of overlap
    /// before it outputs audio, so a seek to sample `s` starts from the last entry whose
    /// `granule <= s - 2048` (the rule in the module comment), never simply `<= s`.
    pub granule: u64,
    /// Byte offset of an Ogg page start ("OggS" capture pattern).
    pub offset: u64,
}

impl SeekTable {
    /// Parse and validate a seek table from JSON. Input is untrusted (it crosses the network).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let table: SeekTable =
            serde_json::from_slice(bytes).map_err(|e| Error::invalid("seek table", e.to_string()))?;
        table.validate()?;
        Ok(table)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of integers and enums cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), Error> {
        let bad = |detail: String| Err(Error::invalid("seek table", detail));
        if self.version != SEEK_TABLE_VERSION {
            return bad(format!("version {} is not supported (expected {SEEK_TABLE_VERSION})", self.version));
        }
        if !(8_000..=192_000).contains(&self.sample_rate) {
            return bad(format!("sample_rate {} is outside 8000-192000", self.sample_rate));
        }
        if self.header_bytes == 0 || self.header_bytes > self.total_bytes {
            return bad(format!(
                "header_bytes {} must be in 1..=total_bytes ({})",
                self.header_bytes, self.total_bytes
            ));
        }
        let max_gap = u64::from(self.sample_rate);
        let mut prev: Option<SeekEntry> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.offset < self.header_bytes || e.offset >= self.total_bytes {
                return bad(format!("entries[{i}].offset {} is outside the audio pages", e.offset));
            }
            if e.granule > self.total_samples {
                return bad(format!("entries[{i}].granule {} is past total_samples", e.granule));
            }
            let gap_from = prev.map_or(0, |p| p.granule);
            if let Some(p) = prev {
                if e.granule <= p.granule || e.offset <= p.offset {
                    return bad(format!("entries[{i}] does not increase"));
                }
            }
            if e.granule - gap_from > max_gap {
                return bad(format!("entries[{i}] is more than one second after the previous point"));
            }
            prev = Some(*e);
        }
        let last = prev.map_or(0, |p| p.granule);
        if self.total_samples - last > max_gap {
            return bad("the last entry is more than one second before the end".into());
        }
        Ok(())
    }

    /// The entry to start decoding from for sample `sample`: the last one at or before it.
    pub fn entry_for(&self, sample: u64) -> Option<&SeekEntry> {
        let idx = self.entries.partition_point(|e| e.granule <= sample);
        idx.checked_sub(1).map(|i| &self.entries[i])
    }

    pub fn duration_secs(&self) -> f64 {
        self.total_samples as f64 / f64::from(self.sample_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SeekTable {
        SeekTable {
            version: 1,
            tier: Tier::High,
            sample_rate: 44_100,
            total_samples: 100_000,
            header_bytes: 4_000,
            total_bytes: 50_000,
            entries: vec![
                SeekEntry { granule: 0, offset: 4_000 },
                SeekEntry { granule: 40_000, offset: 20_000 },
                SeekEntry { granule: 80_000, offset: 40_000 },
            ],
        }
    }

    #[test]
    fn round_trips_and_looks_up() {
        let t = table();
        let back = SeekTable::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
        assert_eq!(t.entry_for(0).unwrap().offset, 4_000);
        assert_eq!(t.entry_for(39_999).unwrap().offset, 4_000);
        assert_eq!(t.entry_for(40_000).unwrap().offset, 20_000);
        assert_eq!(t.entry_for(99_999).unwrap().offset, 40_000);
    }

    #[test]
    fn rejects_inconsistent_tables() {
        let mut t = table();
        t.version = 2;
        assert!(t.validate().is_err());
        let mut t = table();
        t.entries[1].offset = 100;
        assert!(t.validate().is_err());
        let mut t = table();
        t.entries[2].granule = 30_000;
        assert!(t.validate().is_err());
        let mut t = table();
        t.entries.remove(1); // 0 -> 80_000 is more than one second at 44.1 kHz
        assert!(t.validate().is_err());
        let mut t = table();
        t.entries[2].offset = 60_000;
        assert!(t.validate().is_err());
        assert!(SeekTable::from_json(b"{\"version\":1}").is_err());
        assert!(SeekTable::from_json(b"\xff").is_err());
    }
}
