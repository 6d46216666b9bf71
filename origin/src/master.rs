//! Decoding masters: WAV (16/24-bit integer, 32-bit float) and FLAC, mono or stereo,
//! 8-192 kHz, into planar f32. Anything else is refused with the file and the problem.
//!
//! The content id is computed here, from the decoded audio: SHA-256 over the rate, the
//! channel count and every sample as a 24-bit integer. The same audio delivered as WAV
//! or FLAC (or re-released on another album) therefore gets the same id.

use std::io::Read;
use std::path::Path;

use segue_core::ContentId;
use sha2::{Digest, Sha256};

use crate::error::Error;

pub const MIN_RATE: u32 = 8_000;
pub const MAX_RATE: u32 = 192_000;

/// A decoded master.
#[derive(Clone)]
pub struct Master {
    pub sample_rate: u32,
    /// One Vec per channel (1 or 2), all the same length.
    pub channels: Vec<Vec<f32>>,
    pub content_id: ContentId,
}

impl Master {
    /// Samples per channel.
    pub fn frames(&self) -> u64 {
        self.channels.first().map_or(0, |c| c.len() as u64)
    }

    /// Build a master from planar samples in [-1, 1] (synthetic audio, tests).
    pub fn from_planar(name: &str, sample_rate: u32, channels: Vec<Vec<f32>>) -> Result<Self, Error> {
        let mut hasher = ContentHasher::new(sample_rate, channels.len() as u16);
        let frames = channels.first().map_or(0, Vec::len);
        for i in 0..frames {
            for ch in &channels {
                hasher.sample(float_to_24(ch[i]));
            }
        }
        let m = Master { sample_rate, content_id: hasher.finish(), channels };
        m.check(name)?;
        Ok(m)
    }

    fn check(&self, name: &str) -> Result<(), Error> {
        let bad = |problem: String| Err(Error::Master { file: name.to_owned(), problem });
        if !(1..=2).contains(&self.channels.len()) {
            return bad(format!("{} channels; only mono and stereo are supported", self.channels.len()));
        }
        if !(MIN_RATE..=MAX_RATE).contains(&self.sample_rate) {
            return bad(format!("sample rate {} Hz is outside {MIN_RATE}-{MAX_RATE}", self.sample_rate));
        }
        if self.frames() == 0 {
            return bad("contains no audio samples".into());
        }
        if self.channels.iter().any(|c| c.len() as u64 != self.frames()) {
            return bad("channels have different lengths".into());
        }
        Ok(())
    }
}

/// Decode the master at `path`, choosing the format by its first bytes.
pub fn decode_file(path: &Path) -> Result<Master, Error> {
    let name = path.display().to_string();
    let bad = |problem: String| Error::Master { file: name.clone(), problem };
    let mut file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut magic = [0u8; 12];
    let n = file.read(&mut magic).map_err(|e| bad(format!("cannot read: {e}")))?;
    drop(file);
    if n == 0 {
        return Err(bad("file is empty".into()));
    }
    if n >= 12 && &magic[..4] == b"RIFF" && &magic[8..12] == b"WAVE" {
        decode_wav(path, &name)
    } else if n >= 4 && &magic[..4] == b"fLaC" {
        decode_flac(path, &name)
    } else {
        Err(bad("not a WAV (RIFF/WAVE) or FLAC file".into()))
    }
}

fn decode_wav(path: &Path, name: &str) -> Result<Master, Error> {
    let bad = |problem: String| Error::Master { file: name.to_owned(), problem };
    let reader = hound::WavReader::open(path).map_err(|e| bad(format!("bad WAV: {e}")))?;
    let spec = reader.spec();
    let ch = spec.channels as usize;
    precheck(name, ch, spec.sample_rate)?;
    let expected = reader.duration() as usize;
    let mut hasher = ContentHasher::new(spec.sample_rate, spec.channels);
    let mut planar = vec![Vec::with_capacity(expected); ch];
    let mut push = |i: usize, s24: i32, f: f32| {
        hasher.sample(s24);
        planar[i % ch].push(f);
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => {
            for (i, s) in reader.into_samples::<i16>().enumerate() {
                let s = s.map_err(|e| bad(format!("truncated or corrupt WAV data: {e}")))?;
                push(i, i32::from(s) << 8, f32::from(s) / 32_768.0);
            }
        }
        (hound::SampleFormat::Int, 24) => {
            for (i, s) in reader.into_samples::<i32>().enumerate() {
                let s = s.map_err(|e| bad(format!("truncated or corrupt WAV data: {e}")))?;
                push(i, s, s as f32 / 8_388_608.0);
            }
        }
        (hound::SampleFormat::Float, 32) => {
            for (i, s) in reader.into_samples::<f32>().enumerate() {
                let s = s.map_err(|e| bad(format!("truncated or corrupt WAV data: {e}")))?;
                if !s.is_finite() {
                    return Err(bad(format!("sample {i} is not a finite number")));
                }
                push(i, float_to_24(s), s.clamp(-1.0, 1.0));
            }
        }
        (fmt, bits) => {
            return Err(bad(format!("{bits}-bit {fmt:?} WAV is not supported (16/24-bit integer or 32-bit float)")))
        }
    }
    finish(name, spec.sample_rate, planar, hasher, expected)
}

fn decode_flac(path: &Path, name: &str) -> Result<Master, Error> {
    let bad = |problem: String| Error::Master { file: name.to_owned(), problem };
    let mut reader = claxon::FlacReader::open(path).map_err(|e| bad(format!("bad FLAC: {e}")))?;
    let info = reader.streaminfo();
    let ch = info.channels as usize;
    precheck(name, ch, info.sample_rate)?;
    if !matches!(info.bits_per_sample, 16 | 24) {
        return Err(bad(format!("{}-bit FLAC is not supported (16 or 24-bit)", info.bits_per_sample)));
    }
    let shift = 24 - info.bits_per_sample;
    let scale = 1.0 / (1u32 << (info.bits_per_sample - 1)) as f32;
    let expected = info.samples.unwrap_or(0) as usize;
    let mut hasher = ContentHasher::new(info.sample_rate, info.channels as u16);
    let mut planar = vec![Vec::with_capacity(expected); ch];
    for (i, s) in reader.samples().enumerate() {
        let s = s.map_err(|e| bad(format!("truncated or corrupt FLAC data: {e}")))?;
        hasher.sample(s << shift);
        planar[i % ch].push(s as f32 * scale);
    }
    finish(name, info.sample_rate, planar, hasher, expected)
}

fn precheck(name: &str, channels: usize, rate: u32) -> Result<(), Error> {
    let bad = |problem: String| Err(Error::Master { file: name.to_owned(), problem });
    if !(1..=2).contains(&channels) {
        return bad(format!("{channels} channels; only mono and stereo are supported"));
    }
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return bad(format!("sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE}"));
    }
    Ok(())
}

fn finish(
    name: &str,
    rate: u32,
    planar: Vec<Vec<f32>>,
    hasher: ContentHasher,
    expected: usize,
) -> Result<Master, Error> {
    let m = Master { sample_rate: rate, content_id: hasher.finish(), channels: planar };
    if expected != 0 && m.frames() != expected as u64 {
        return Err(Error::Master {
            file: name.to_owned(),
            problem: format!("truncated: header promises {expected} samples per channel, data holds {}", m.frames()),
        });
    }
    m.check(name)?;
    Ok(m)
}

fn float_to_24(s: f32) -> i32 {
    (f64::from(s).clamp(-1.0, 1.0) * 8_388_607.0).round() as i32
}

/// Hashes samples in blocks: one SHA-256 update per sample would cost more than decoding.
struct ContentHasher {
    sha: Sha256,
    buf: Vec<u8>,
}

impl ContentHasher {
    fn new(rate: u32, channels: u16) -> Self {
        let mut sha = Sha256::new();
        sha.update(b"segue-pcm-v1");
        sha.update(rate.to_le_bytes());
        sha.update(channels.to_le_bytes());
        ContentHasher { sha, buf: Vec::with_capacity(64 * 1024) }
    }

    fn sample(&mut self, s24: i32) {
        self.buf.extend_from_slice(&s24.to_le_bytes()[..3]);
        if self.buf.len() >= 64 * 1024 - 3 {
            self.sha.update(&self.buf);
            self.buf.clear();
        }
    }

    fn finish(mut self) -> ContentId {
        self.sha.update(&self.buf);
        ContentId::from_bytes(self.sha.finalize().into())
    }
}
