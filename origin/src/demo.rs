//! The demo catalog `segue up` creates on first start: deterministic synthetic music
//! (chords, bass, percussion-like noise bursts), packaged into the five Ogg Vorbis tiers
//! with seek tables and manifests. No download; the same bytes every time.
//!
//! It includes one continuous piece cut into four tracks at sample-exact boundaries (a
//! gapless album) and one standalone track. Each is packaged by the same pipeline as
//! `segue ingest`, so the demo exercises exactly what real masters go through.

use segue_core::store::ObjectStore;
use segue_core::ContentId;

use crate::error::Error;
use crate::master::Master;
use crate::package;

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
pub async fn ensure(
    store: &dyn ObjectStore,
    keks: Option<&segue_core::drm::kek::Keks>,
    secs_per_track: u32,
) -> Result<Vec<DemoTrack>, Error> {
    let mut plan = Vec::new();
    for i in 0..4u32 {
        let cut = Cut { piece: 1, start_sec: i * secs_per_track, secs: secs_per_track };
        plan.push((format!("Continuum, part {}", i + 1), "Continuum (gapless)".to_string(), i + 1, cut));
    }
    plan.push((
        "Standalone".to_string(),
        "Singles".to_string(),
        1,
        Cut { piece: 2, start_sec: 0, secs: secs_per_track },
    ));

    let mut out = Vec::new();
    for (title, album, track_no, cut) in plan {
        let master = tokio::task::spawn_blocking(move || {
            Master::from_planar(
                &format!("demo piece {} at {} s", cut.piece, cut.start_sec),
                SOURCE_RATE,
                music(cut.piece, cut.start_sec, cut.secs).to_vec(),
            )
        })
        .await
        .map_err(|e| Error::Encode(format!("demo synthesis: {e}")))??;
        let samples = master.frames();
        let packaged = package::package(store, master, keks).await?;
        out.push(DemoTrack {
            title,
            album,
            track_no,
            content_id: packaged.manifest.content_id,
            samples,
            created: packaged.created,
        });
    }
    Ok(out)
}

/// Music-like, deterministic stereo signal at the source rate: chords of rich harmonic
/// tones with vibrato, a bass line, hash-noise percussion and a decorrelated noise bed
/// (room tone). Real music is dense across the spectrum; a few sine waves would encode
/// at a fraction of any tier's bitrate and say nothing about the encoder settings.
///
/// `secs` seconds of piece `piece` (1 or 2) from `start_sec`, stereo at [`SOURCE_RATE`].
/// Consecutive cuts of one piece join sample-exactly: the signal is a function of the
/// absolute sample index.
pub fn music(piece: u64, start_sec: u32, secs: u32) -> [Vec<f32>; 2] {
    let cut = Cut { piece, start_sec, secs };
    use std::f64::consts::TAU;
    const CHORDS: [[f64; 3]; 4] =
        [[261.63, 329.63, 392.00], [220.00, 261.63, 329.63], [174.61, 220.00, 261.63], [196.00, 246.94, 293.66]];
    let rate = SOURCE_RATE;
    let n = (u64::from(cut.secs) * u64::from(rate)) as usize;
    let first = u64::from(cut.start_sec) * u64::from(rate);
    let transpose = if cut.piece == 2 { 1.122 } else { 1.0 };
    // Deterministic white noise from the absolute sample index and a stream number.
    let noise = |i: u64, stream: u64| {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ cut.piece;
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    let (mut l, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // A short decaying FIR turns white noise into a softer bed per channel. It depends
    // only on absolute sample indices (no filter state), so cuts join sample-exactly.
    let bed = |abs: u64, stream: u64| {
        (0..12u64).map(|k| noise(abs.wrapping_sub(k), stream) * 0.85f64.powi(k as i32)).sum::<f64>() * 0.15
    };
    for i in 0..n as u64 {
        let abs = first + i;
        let t = abs as f64 / f64::from(rate);
        let chord = CHORDS[((t / 2.0) as usize) % 4];
        let beat = (t * 2.0).fract(); // two beats a second
        let env = (-beat * 3.0).exp();
        let vibrato = 1.0 + 0.004 * (TAU * 5.5 * t).sin();
        let (mut pad_l, mut pad_r) = (0.0, 0.0);
        for (k, f) in chord.iter().enumerate() {
            let f = f * transpose * vibrato;
            // Sawtooth-like tone: 12 harmonics at 1/h amplitude.
            let mut tone = 0.0;
            for h in 1..=12u32 {
                tone += (TAU * f * f64::from(h) * t + k as f64).sin() / f64::from(h);
            }
            let pan = 0.3 + 0.2 * k as f64;
            pad_l += tone * 0.07 * (1.0 - pan);
            pad_r += tone * 0.07 * pan;
        }
        let bass_f = chord[0] * transpose / 2.0;
        let bass = ((TAU * bass_f * t).sin() + 0.5 * (TAU * bass_f * 2.0 * t).sin()) * 0.22 * env;
        let hat = noise(abs, 1) * 0.25 * (-(t * 4.0).fract() * 25.0).exp();
        let snare = noise(abs, 2)
            * 0.3
            * (-((t * 2.0 + 0.5).fract()) * 12.0).exp()
            * f64::from(u8::from(((t * 2.0) as u64) % 2 == 1));
        let (bed_l, bed_r) = (bed(abs, 3), bed(abs, 4));
        let left = pad_l + bass + hat * 0.8 + snare + bed_l * 0.35 + noise(abs, 5) * 0.02;
        let right = pad_r + bass + hat + snare * 0.8 + bed_r * 0.35 + noise(abs, 6) * 0.02;
        l.push((left * 0.7).clamp(-1.0, 1.0) as f32);
        r.push((right * 0.7).clamp(-1.0, 1.0) as f32);
    }
    [l, r]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gapless_cuts_join_into_the_continuous_piece_sample_exactly() {
        let whole = music(1, 0, 8);
        let cuts: Vec<[Vec<f32>; 2]> = (0..4).map(|i| music(1, i * 2, 2)).collect();
        for ch in 0..2 {
            let joined: Vec<f32> = cuts.iter().flat_map(|c| c[ch].iter().copied()).collect();
            assert_eq!(joined, whole[ch]);
        }
        assert_ne!(music(2, 0, 1)[0], music(1, 0, 1)[0], "the single is a different piece");
    }
}
