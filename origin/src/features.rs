//! Audio features of a master, computed at ingest for recommendations: tempo, loudness
//! and dynamics, spectral shape, zero crossings, chroma and key, timbre (MFCC
//! statistics), and a fixed-size embedding of them all.
//!
//! Everything runs on the mono signal the low tier is encoded from (at most 22.05 kHz,
//! the rate librosa analyses at by default), in frames of 2048 samples every 512 with a
//! Hann window, like librosa's defaults, so the figures can be checked against it
//! (tests/features.rs).

use realfft::RealFftPlanner;

pub use segue_core::manifest::AudioFeatures;

const N_FFT: usize = 2048;
const HOP: usize = 512;
const N_MELS: usize = 40;
const N_MFCC: usize = 13;

/// Pitch classes from C.
pub const PITCH_CLASSES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];

/// Krumhansl–Kessler key profiles (major, minor), from C.
const MAJOR: [f64; 12] = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88];
const MINOR: [f64; 12] = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17];

fn hann(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos()).collect()
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// Triangular mel filters over the FFT bins, 0 Hz to Nyquist.
fn mel_filters(sr: u32, bins: usize) -> Vec<Vec<(usize, f32)>> {
    let nyquist = f64::from(sr) / 2.0;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let edges: Vec<f64> = (0..N_MELS + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64)).collect();
    let bin_hz = f64::from(sr) / N_FFT as f64;
    (0..N_MELS)
        .map(|m| {
            let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
            (0..bins)
                .filter_map(|b| {
                    let f = b as f64 * bin_hz;
                    let w = if f > left && f <= centre {
                        (f - left) / (centre - left)
                    } else if f > centre && f < right {
                        (right - f) / (right - centre)
                    } else {
                        0.0
                    };
                    (w > 0.0).then_some((b, w as f32))
                })
                .collect()
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn std_dev(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// Features of a decoded master: on its mono downmix at the low tier's rate (at most
/// 22.05 kHz), what packaging measures too.
pub fn of_master(master: &crate::master::Master) -> Result<AudioFeatures, crate::Error> {
    let mono = crate::package::low_tier_input(master)?;
    Ok(analyse(&mono[0], segue_core::Tier::Low.sample_rate(master.sample_rate)))
}

/// Features of `mono` at `sr` Hz.
pub fn analyse(mono: &[f32], sr: u32) -> AudioFeatures {
    let bins = N_FFT / 2 + 1;
    let window = hann(N_FFT);
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
    let mels = mel_filters(sr, bins);
    let bin_hz = f64::from(sr) / N_FFT as f64;
    // Each bin's pitch class, for bins between C1 and C8 (librosa's chroma ignores little
    // outside the musical range either).
    let pitch_class: Vec<Option<usize>> = (0..bins)
        .map(|b| {
            let f = b as f64 * bin_hz;
            (32.7..=4186.0).contains(&f).then(|| {
                let midi = 69.0 + 12.0 * (f / 440.0).log2();
                (midi.round() as i64).rem_euclid(12) as usize
            })
        })
        .collect();
    // Centred frames, as librosa pads (reflection there, zeros here).
    let pad = N_FFT / 2;
    let frames = if mono.is_empty() { 0 } else { 1 + mono.len() / HOP };
    let sample = |i: isize| -> f32 {
        if i < 0 {
            0.0
        } else {
            mono.get(i as usize).copied().unwrap_or(0.0)
        }
    };
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let (mut centroid, mut rolloff, mut flatness, mut zcr, mut rms_db) =
        (Vec::with_capacity(frames), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut chroma_sum = [0f64; 12];
    let mut mfcc_frames: Vec<[f64; N_MFCC]> = Vec::with_capacity(frames);
    let mut onset = Vec::with_capacity(frames);
    let mut prev_mel = vec![0f64; N_MELS];
    let mut magnitude = vec![0f64; bins];
    for f in 0..frames {
        let start = (f * HOP) as isize - pad as isize;
        let (mut crossings, mut energy) = (0usize, 0f64);
        let mut last = sample(start);
        for i in 0..N_FFT {
            let x = sample(start + i as isize);
            if (x >= 0.0) != (last >= 0.0) {
                crossings += 1;
            }
            last = x;
            energy += f64::from(x) * f64::from(x);
            input[i] = x * window[i];
        }
        zcr.push(crossings as f64 / N_FFT as f64);
        rms_db.push(10.0 * (energy / N_FFT as f64).max(1e-10).log10());
        if fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).is_err() {
            continue;
        }
        let (mut total, mut weighted, mut log_sum, mut power_sum) = (0f64, 0f64, 0f64, 0f64);
        let mut chroma = [0f64; 12];
        for (b, c) in spectrum.iter().enumerate() {
            let power = f64::from(c.norm_sqr());
            let mag = power.sqrt();
            magnitude[b] = mag;
            total += mag;
            weighted += mag * b as f64 * bin_hz;
            log_sum += power.max(1e-10).ln();
            power_sum += power.max(1e-10);
            if let Some(pc) = pitch_class[b] {
                chroma[pc] += power;
            }
        }
        let silent = total < 1e-9;
        centroid.push(if silent { 0.0 } else { weighted / total });
        let mut acc = 0.0;
        let edge = magnitude.iter().position(|m| {
            acc += m;
            acc >= 0.85 * total
        });
        rolloff.push(edge.map_or(0.0, |b| b as f64 * bin_hz));
        flatness.push((log_sum / bins as f64).exp() / (power_sum / bins as f64));
        let peak = chroma.iter().copied().fold(0.0, f64::max);
        if peak > 0.0 {
            for (s, c) in chroma_sum.iter_mut().zip(chroma) {
                *s += c / peak;
            }
        }
        // Log-mel energies: MFCCs (DCT-II) and the onset strength (positive flux).
        let mel: Vec<f64> = mels
            .iter()
            .map(|filter| {
                let e: f64 = filter.iter().map(|&(b, w)| f64::from(w) * magnitude[b] * magnitude[b]).sum();
                10.0 * e.max(1e-10).log10()
            })
            .collect();
        let flux: f64 = mel.iter().zip(&prev_mel).map(|(m, p)| (m - p).max(0.0)).sum();
        onset.push(if f == 0 { 0.0 } else { flux });
        prev_mel.clone_from(&mel);
        let mut c = [0f64; N_MFCC];
        for (k, ck) in c.iter_mut().enumerate() {
            *ck = mel
                .iter()
                .enumerate()
                .map(|(n, m)| m * (std::f64::consts::PI * k as f64 * (n as f64 + 0.5) / N_MELS as f64).cos())
                .sum::<f64>()
                * (2.0 / N_MELS as f64).sqrt();
        }
        mfcc_frames.push(c);
    }
    let chroma_total: f64 = chroma_sum.iter().sum();
    let chroma: Vec<f64> = chroma_sum.iter().map(|c| if chroma_total > 0.0 { c / chroma_total } else { 0.0 }).collect();
    let (key, minor) = key_of(&chroma);
    let mfcc_mean: Vec<f64> =
        (0..N_MFCC).map(|k| mean(&mfcc_frames.iter().map(|c| c[k]).collect::<Vec<_>>())).collect();
    let mfcc_std: Vec<f64> =
        (0..N_MFCC).map(|k| std_dev(&mfcc_frames.iter().map(|c| c[k]).collect::<Vec<_>>())).collect();
    let loudness_db = mean(&rms_db);
    let mut features = AudioFeatures {
        version: 1,
        tempo_bpm: tempo(&onset, f64::from(sr) / HOP as f64),
        loudness_db,
        dynamics_db: percentile(&rms_db, 0.95) - percentile(&rms_db, 0.10),
        centroid_hz: mean(&centroid),
        centroid_std_hz: std_dev(&centroid),
        rolloff_hz: mean(&rolloff),
        flatness: mean(&flatness),
        zcr: mean(&zcr),
        chroma,
        key: PITCH_CLASSES[key].to_owned(),
        mode: if minor { "minor".into() } else { "major".into() },
        mfcc_mean,
        mfcc_std,
        embedding: Vec::new(),
    };
    features.embedding = embedding(&features, key, minor);
    features
}

/// The key whose Krumhansl–Kessler profile correlates best with the chroma: (pitch
/// class, minor).
fn key_of(chroma: &[f64]) -> (usize, bool) {
    let corr = |profile: &[f64; 12], shift: usize| {
        let p: Vec<f64> = (0..12).map(|i| profile[(i + 12 - shift) % 12]).collect();
        let (mc, mp) = (mean(chroma), mean(&p));
        let num: f64 = chroma.iter().zip(&p).map(|(c, q)| (c - mc) * (q - mp)).sum();
        let den = (chroma.iter().map(|c| (c - mc).powi(2)).sum::<f64>()
            * p.iter().map(|q| (q - mp).powi(2)).sum::<f64>())
        .sqrt();
        if den > 0.0 {
            num / den
        } else {
            0.0
        }
    };
    let mut best = (0, false, f64::MIN);
    for shift in 0..12 {
        for (profile, minor) in [(&MAJOR, false), (&MINOR, true)] {
            let c = corr(profile, shift);
            if c > best.2 {
                best = (shift, minor, c);
            }
        }
    }
    (best.0, best.1)
}

/// Tempo from the onset strength envelope (`rate` frames per second): the lag of its
/// autocorrelation's peak between 40 and 240 BPM, weighted by a log-normal prior around
/// 120 BPM (as librosa's estimator), refined by parabolic interpolation.
fn tempo(onset: &[f64], rate: f64) -> f64 {
    let m = mean(onset);
    let env: Vec<f64> = onset.iter().map(|o| o - m).collect();
    let lag_of = |bpm: f64| 60.0 * rate / bpm;
    let (min_lag, max_lag) = (lag_of(240.0).floor() as usize, (lag_of(40.0).ceil() as usize).min(env.len() / 2));
    if env.len() < 4 || min_lag + 2 >= max_lag {
        return 0.0;
    }
    let ac = |lag: usize| env.iter().zip(&env[lag..]).map(|(a, b)| a * b).sum::<f64>() / (env.len() - lag) as f64;
    let values: Vec<f64> =
        (0..=max_lag + 1).map(|l| if l >= min_lag.saturating_sub(1) { ac(l) } else { 0.0 }).collect();
    let prior = |lag: f64| {
        let bpm = 60.0 * rate / lag;
        (-0.5 * ((bpm / 120.0).log2()).powi(2)).exp()
    };
    let best =
        (min_lag..=max_lag).max_by(|&a, &b| (values[a] * prior(a as f64)).total_cmp(&(values[b] * prior(b as f64))));
    let Some(l) = best else { return 0.0 };
    let (a, b, c) = (values[l - 1], values[l], values[l + 1]);
    let den = a - 2.0 * b + c;
    let shift = if den.abs() > 1e-12 { (0.5 * (a - c) / den).clamp(-0.5, 0.5) } else { 0.0 };
    let bpm = 60.0 * rate / (l as f64 + shift);
    (bpm * 10.0).round() / 10.0
}

/// The fixed-size embedding: every feature on a fixed, documented scale (centre and
/// spread of typical music), so that embeddings of tracks ingested months apart compare
/// without a pass over the catalog. 49 values.
fn embedding(f: &AudioFeatures, key: usize, minor: bool) -> Vec<f32> {
    let mut e = vec![
        (f.tempo_bpm - 120.0) / 30.0,
        (f.loudness_db + 20.0) / 10.0,
        (f.dynamics_db - 15.0) / 8.0,
        (f.centroid_hz - 2000.0) / 1000.0,
        (f.centroid_std_hz - 600.0) / 400.0,
        (f.rolloff_hz - 4000.0) / 2000.0,
        (f.flatness - 0.1) / 0.1,
        (f.zcr - 0.08) / 0.05,
    ];
    // Chroma relative to its mean, the key on the circle of fifths, the mode.
    e.extend(f.chroma.iter().map(|c| (c - 1.0 / 12.0) * 12.0));
    let fifths = (key * 7 % 12) as f64 * std::f64::consts::TAU / 12.0;
    e.extend([fifths.cos(), fifths.sin(), if minor { 1.0 } else { -1.0 }]);
    e.extend(f.mfcc_mean.iter().enumerate().map(|(k, c)| if k == 0 { (c + 200.0) / 100.0 } else { c / 20.0 }));
    e.extend(f.mfcc_std.iter().map(|c| (c - 10.0) / 10.0));
    e.iter().map(|x| x.clamp(-8.0, 8.0) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, secs: f32, sr: u32) -> Vec<f32> {
        (0..(secs * sr as f32) as usize)
            .map(|i| 0.5 * (std::f32::consts::TAU * freq * i as f32 / sr as f32).sin())
            .collect()
    }

    #[test]
    fn a_sine_has_its_centroid_at_its_frequency_and_a_chord_its_notes() {
        let f = analyse(&sine(1000.0, 3.0, 22_050), 22_050);
        assert!((f.centroid_hz - 1000.0).abs() < 30.0, "{}", f.centroid_hz);
        assert_eq!(f.embedding.len(), 49);
        // C major: C4, E4, G4.
        let sr = 22_050;
        let chord: Vec<f32> = sine(261.63, 3.0, sr)
            .iter()
            .zip(sine(329.63, 3.0, sr))
            .zip(sine(392.0, 3.0, sr))
            .map(|((a, b), c)| (a + b + c) / 3.0)
            .collect();
        let f = analyse(&chord, sr);
        let mut top: Vec<usize> = (0..12).collect();
        top.sort_by(|a, b| f.chroma[*b].total_cmp(&f.chroma[*a]));
        let mut names: Vec<&str> = top[..3].iter().map(|&i| PITCH_CLASSES[i]).collect();
        names.sort_unstable();
        assert_eq!(names, ["C", "E", "G"], "{:?}", f.chroma);
        assert_eq!((f.key.as_str(), f.mode.as_str()), ("C", "major"));
    }

    #[test]
    fn a_click_track_has_its_tempo() {
        let sr = 22_050u32;
        for bpm in [90.0f32, 120.0, 150.0] {
            let period = (60.0 / bpm * sr as f32) as usize;
            let mut clicks = vec![0f32; sr as usize * 20];
            for start in (0..clicks.len()).step_by(period) {
                for (i, s) in clicks[start..].iter_mut().take(200).enumerate() {
                    *s = 0.8 * (1.0 - i as f32 / 200.0) * if i % 2 == 0 { 1.0 } else { -1.0 };
                }
            }
            let f = analyse(&clicks, sr);
            assert!((f.tempo_bpm - f64::from(bpm)).abs() <= 2.0, "{bpm} BPM read as {}", f.tempo_bpm);
        }
        let silent = analyse(&vec![0.0; 22_050], sr);
        assert!(silent.embedding.iter().all(|x| x.is_finite()));
    }
}
