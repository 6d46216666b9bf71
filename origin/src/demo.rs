//! The demo catalog `segue up` creates on first start: deterministic synthetic music
//! (chords, bass, percussion-like noise bursts), packaged into the five Ogg Vorbis tiers
//! with seek tables and manifests. No download; the same bytes every time.
//!
//! It includes one continuous piece cut into four tracks at sample-exact boundaries (a
//! gapless album) and one standalone track. The signal is a function of time, so each
//! tier is synthesized directly at its own rate; real masters go through `segue ingest`.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU8};

use bytes::Bytes;
use segue_core::manifest::{Manifest, SourceInfo, TierInfo, MANIFEST_VERSION};
use segue_core::store::{self, ObjectStore};
use segue_core::{ContentId, ObjectKey, Tier};
use sha2::{Digest, Sha256};
use vorbis_rs::{VorbisBitrateManagementStrategy, VorbisEncoderBuilder};

use crate::ogg;

pub const SOURCE_RATE: u32 = 44_100;

/// One demo track, as `segue up` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoTrack {
    pub title: String,
    pub album: String,
    pub track_no: u32,
    pub content_id: ContentId,
    pub samples: u64,
    /// Whether this run packaged it (false: it was already in the store).
    pub created: bool,
}

/// A piece of synthetic music and the sample span of it a track covers.
#[derive(Clone, Copy)]
struct Cut {
    piece: u64,
    start_sec: u32,
    secs: u32,
}

/// Make sure the demo catalog is in `store`; package what is missing.
/// `secs_per_track` sets the length (tests use a few seconds, `segue up` 20).
pub async fn ensure(store: &dyn ObjectStore, secs_per_track: u32) -> Result<Vec<DemoTrack>, segue_core::Error> {
    let mut plan = Vec::new();
    for i in 0..4u32 {
        let cut = Cut { piece: 1, start_sec: i * secs_per_track, secs: secs_per_track };
        plan.push((format!("Continuum, part {}", i + 1), "Continuum (gapless)".to_string(), i + 1, cut));
    }
    plan.push(("Standalone".to_string(), "Singles".to_string(), 1, Cut { piece: 2, start_sec: 0, secs: secs_per_track }));

    let mut out = Vec::new();
    for (title, album, track_no, cut) in plan {
        let content_id = content_id(cut);
        let samples = u64::from(cut.secs) * u64::from(SOURCE_RATE);
        let manifest_key = ObjectKey::manifest(&content_id);
        let exists = match store.head(&manifest_key).await {
            Ok(_) => true,
            Err(segue_core::Error::NotFound(_)) => false,
            Err(e) => return Err(e),
        };
        if !exists {
            package(store, cut, content_id).await?;
        }
        out.push(DemoTrack { title, album, track_no, content_id, samples, created: !exists });
    }
    Ok(out)
}

async fn package(store: &dyn ObjectStore, cut: Cut, cid: ContentId) -> Result<(), segue_core::Error> {
    // Tiers encode in parallel on the blocking pool; libvorbis is CPU-bound.
    let jobs: Vec<_> = Tier::ALL
        .into_iter()
        .map(|tier| tokio::task::spawn_blocking(move || encode_tier(cut, tier).map(|d| (tier, d))))
        .collect();
    let mut tiers = BTreeMap::new();
    for job in jobs {
        let joined = job.await.map_err(|e| segue_core::Error::Store { message: format!("encoder task: {e}"), retryable: false })?;
        let (tier, data) = joined.map_err(|e| segue_core::Error::Store { message: format!("encode: {e}"), retryable: false })?;
        let rate = tier.sample_rate(SOURCE_RATE);
        let table = ogg::seek_table(&data, tier, rate)
            .map_err(|e| segue_core::Error::Store { message: format!("seek table: {e}"), retryable: false })?;
        let (key, seek_key) = (ObjectKey::audio(&cid, tier), ObjectKey::seek(&cid, tier));
        let bytes = data.len() as u64;
        store::put_bytes(store, &key, Bytes::from(data)).await?;
        store::put_bytes(store, &seek_key, Bytes::from(table.to_json())).await?;
        let secs = table.duration_secs().max(1e-9);
        tiers.insert(
            tier,
            TierInfo {
                key: key.to_string(),
                bytes,
                samples: table.total_samples,
                sample_rate: rate,
                channels: tier.channels(),
                seek_key: seek_key.to_string(),
                kbps: (bytes as f64 * 8.0 / secs / 1000.0 * 10.0).round() / 10.0,
            },
        );
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        content_id: cid,
        source: SourceInfo { sample_rate: SOURCE_RATE, channels: 2, samples: u64::from(cut.secs) * u64::from(SOURCE_RATE) },
        tiers,
    };
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    // Last: the manifest makes the content visible.
    store::put_bytes(store, &ObjectKey::manifest(&cid), Bytes::from(json)).await?;
    Ok(())
}

/// The content id of a cut: SHA-256 over its 16-bit source-rate PCM.
fn content_id(cut: Cut) -> ContentId {
    let mut h = Sha256::new();
    h.update(b"segue-pcm-v1");
    h.update(SOURCE_RATE.to_le_bytes());
    h.update(2u16.to_le_bytes());
    let [l, r] = synthesize(cut, SOURCE_RATE, 2);
    for (a, b) in l.iter().zip(r.iter()) {
        h.update(((a * 32767.0) as i16).to_le_bytes());
        h.update(((b * 32767.0) as i16).to_le_bytes());
    }
    ContentId::from_bytes(h.finalize().into())
}

fn encode_tier(cut: Cut, tier: Tier) -> Result<Vec<u8>, vorbis_rs::VorbisError> {
    let rate = tier.sample_rate(SOURCE_RATE);
    let channels = tier.channels();
    let [l, r] = synthesize(cut, rate, channels);
    let mono = channels == 1;
    let bitrate = tier.kbps() * 1000;
    // Pages of about 1/8 s at the nominal rate keep seek points well under a second
    // apart even when easy material encodes far below nominal.
    let page_bytes = (bitrate / 8 / 8).clamp(256, 4096) as u16;
    let serial = (u64::from(tier.kbps()) ^ cut.piece.rotate_left(16) ^ u64::from(cut.start_sec)) as i32;
    let mut builder = VorbisEncoderBuilder::new_with_serial(
        NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN),
        NonZeroU8::new(channels as u8).unwrap_or(NonZeroU8::MIN),
        Vec::new(),
        serial,
    );
    builder
        .bitrate_management_strategy(VorbisBitrateManagementStrategy::Vbr {
            target_bitrate: NonZeroU32::new(bitrate).unwrap_or(NonZeroU32::MIN),
        })
        .minimum_page_data_size(Some(page_bytes))
        .comment_tag("ENCODER", "segue demo")?;
    let mut enc = builder.build()?;
    for start in (0..l.len()).step_by(1024) {
        let end = (start + 1024).min(l.len());
        if mono {
            enc.encode_audio_block([&l[start..end]])?;
        } else {
            enc.encode_audio_block([&l[start..end], &r[start..end]])?;
        }
    }
    enc.finish()
}

/// Music-like, deterministic signal at `rate`: [left, right] (mono puts the mix in left).
fn synthesize(cut: Cut, rate: u32, channels: u16) -> [Vec<f32>; 2] {
    const CHORDS: [[f64; 3]; 4] = [[261.63, 329.63, 392.00], [220.00, 261.63, 329.63], [174.61, 220.00, 261.63], [196.00, 246.94, 293.66]];
    let n = (u64::from(cut.secs) * u64::from(rate)) as usize;
    let first = u64::from(cut.start_sec) * u64::from(rate);
    let transpose = if cut.piece == 2 { 1.122 } else { 1.0 };
    let (mut l, mut r) = (Vec::with_capacity(n), Vec::with_capacity(if channels == 2 { n } else { 0 }));
    for i in 0..n as u64 {
        let t = (first + i) as f64 / f64::from(rate);
        let chord = CHORDS[((t / 2.0) as usize) % 4];
        let beat = t.fract() * 2.0 % 1.0; // two beats a second
        let env = (-beat * 4.0).exp();
        let mut pad = 0.0;
        for (k, f) in chord.iter().enumerate() {
            let f = f * transpose;
            pad += (std::f64::consts::TAU * f * t).sin() * 0.18 + (std::f64::consts::TAU * f * 2.0 * t).sin() * 0.05 * (k as f64 + 1.0) / 3.0;
        }
        let bass = (std::f64::consts::TAU * chord[0] * transpose / 2.0 * t).sin() * 0.25 * env;
        // Hash-based noise burst on each beat: deterministic "hi-hat".
        let mut x = (first + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ cut.piece;
        x ^= x >> 29;
        let noise = ((x & 0xffff) as f64 / 32768.0 - 1.0) * 0.08 * (-beat * 30.0).exp();
        let lfo = 0.5 + 0.5 * (std::f64::consts::TAU * 0.25 * t).sin();
        let left = pad * (0.6 + 0.4 * lfo) + bass + noise;
        let right = pad * (1.0 - 0.4 * lfo) + bass + noise * 0.7;
        if channels == 2 {
            l.push((left * 0.8) as f32);
            r.push((right * 0.8) as f32);
        } else {
            l.push(((left + right) * 0.4) as f32);
        }
    }
    [l, r]
}
