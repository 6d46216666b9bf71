//! Packaging a decoded master: five Ogg Vorbis tiers encoded in parallel, a seek table
//! per tier, exact sample counts, loudness, and the manifest, written last.
//!
//! Crash safety: every object is written atomically by the store, tiers and seek tables
//! first, the manifest last. Content is visible (listed, cataloged, skipped on re-ingest)
//! only through its manifest, so a crash at any point leaves either the previous state or
//! complete, valid objects that the next ingest of the same master completes.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU8};

use bytes::Bytes;
use segue_core::drm::kek::Keks;
use segue_core::manifest::{Loudness, Manifest, SourceInfo, TierInfo, MANIFEST_VERSION};
use segue_core::seek_table::SeekTable;
use segue_core::store::{self, ObjectStore};
use segue_core::{ObjectKey, Tier};
use vorbis_rs::{VorbisBitrateManagementStrategy, VorbisEncoderBuilder};

use crate::error::Error;
use crate::master::Master;
use crate::ogg;

/// The result of packaging one master.
#[derive(Debug, Clone)]
pub struct Packaged {
    pub manifest: Manifest,
    /// False when the content was already stored and nothing was written.
    pub created: bool,
}

/// One encoded tier, ready to store.
pub struct EncodedTier {
    pub tier: Tier,
    pub channels: u16,
    pub ogg: Vec<u8>,
    pub seek: SeekTable,
}

/// Package `master` into `store`, unless its content is already there. With `keks`, the
/// content also gets a content key (wrapped), before its manifest makes it visible.
pub async fn package(store: &dyn ObjectStore, master: Master, keks: Option<&Keks>) -> Result<Packaged, Error> {
    let cid = master.content_id;
    // One packaging per content id at a time in this process: the same audio arriving
    // twice at once (WAV and FLAC of one master in one `segue ingest`) is encoded once,
    // and the second caller finds the manifest.
    let lock = inflight_lock(cid);
    let _held = lock.lock().await;
    let result = package_locked(store, master, keks).await;
    drop(_held);
    release_inflight(cid, lock);
    result
}

type InflightMap = std::collections::HashMap<segue_core::ContentId, std::sync::Arc<tokio::sync::Mutex<()>>>;
static INFLIGHT: std::sync::LazyLock<std::sync::Mutex<InflightMap>> = std::sync::LazyLock::new(Default::default);

fn inflight_lock(cid: segue_core::ContentId) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    INFLIGHT.lock().unwrap_or_else(|p| p.into_inner()).entry(cid).or_default().clone()
}

fn release_inflight(cid: segue_core::ContentId, lock: std::sync::Arc<tokio::sync::Mutex<()>>) {
    let mut map = INFLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    // Two references: the map's and ours. More means another caller still waits on it.
    if std::sync::Arc::strong_count(&lock) == 2 {
        map.remove(&cid);
    }
}

async fn package_locked(store: &dyn ObjectStore, master: Master, keks: Option<&Keks>) -> Result<Packaged, Error> {
    let cid = master.content_id;
    if let Some(keks) = keks {
        crate::keys::ensure(store, keks, &cid).await?;
    }
    if let Some(existing) = read_manifest(store, &cid).await? {
        return Ok(Packaged { manifest: existing, created: false });
    }
    let (tiers_encoded, loudness, features, master) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let loudness = loudness(&master)?;
        let (encoded, features) = encode_all(&master)?;
        Ok((encoded, loudness, features, master))
    })
    .await
    .map_err(|e| Error::Encode(format!("encoder task failed: {e}")))??;

    let mut tiers = BTreeMap::new();
    for t in tiers_encoded {
        let (key, seek_key) = (ObjectKey::audio(&cid, t.tier), ObjectKey::seek(&cid, t.tier));
        let bytes = t.ogg.len() as u64;
        store::put_bytes(store, &key, Bytes::from(t.ogg)).await?;
        store::put_bytes(store, &seek_key, Bytes::from(t.seek.to_json())).await?;
        // Bitrate of the audio pages: the ~4 KB of Vorbis headers are a fixed cost that
        // would otherwise dominate short tracks.
        let secs = t.seek.duration_secs().max(1e-9);
        let audio_bytes = bytes - t.seek.header_bytes;
        tiers.insert(
            t.tier,
            TierInfo {
                key: key.to_string(),
                bytes,
                samples: t.seek.total_samples,
                sample_rate: t.seek.sample_rate,
                channels: t.channels,
                seek_key: seek_key.to_string(),
                kbps: (audio_bytes as f64 * 8.0 / secs / 100.0).round() / 10.0,
            },
        );
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        content_id: cid,
        source: SourceInfo {
            sample_rate: master.sample_rate,
            channels: master.channels.len() as u16,
            samples: master.frames(),
        },
        loudness,
        tiers,
        features: Some(features),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Encode(format!("manifest: {e}")))?;
    store::put_bytes(store, &ObjectKey::manifest(&cid), Bytes::from(json)).await?;
    Ok(Packaged { manifest, created: true })
}

/// The stored manifest of `cid`, if the content is complete in `store`.
pub async fn read_manifest(store: &dyn ObjectStore, cid: &segue_core::ContentId) -> Result<Option<Manifest>, Error> {
    read_json(store, &ObjectKey::manifest(cid)).await.map_err(|e| match e {
        Error::Encode(why) => Error::Encode(format!("stored manifest of {cid} is unreadable: {why}")),
        e => e,
    })
}

/// A small JSON object of the store, `None` when it is not there; unparsable is `Encode`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &ObjectKey,
) -> Result<Option<T>, Error> {
    match store::read_all(store, key).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Encode(e.to_string())),
        Err(segue_core::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Encode every tier, one thread each (libvorbis is single-threaded per stream), and
/// measure the audio features on the low tier's input meanwhile.
pub fn encode_all(master: &Master) -> Result<(Vec<EncodedTier>, crate::features::AudioFeatures), Error> {
    // The low tier's mono 22.05 kHz input is made once, before the threads start.
    let low_input = low_tier_input(master)?;
    let low_rate = Tier::Low.sample_rate(master.sample_rate);
    std::thread::scope(|s| {
        let features = s.spawn(|| crate::features::analyse(&low_input[0], low_rate));
        let handles: Vec<_> = Tier::ALL
            .into_iter()
            .map(|tier| {
                let low = &low_input;
                s.spawn(move || match tier {
                    Tier::Low => encode_tier(tier, Tier::Low.sample_rate(master.sample_rate), low),
                    _ => encode_tier(tier, master.sample_rate, &master.channels),
                })
            })
            .collect();
        let tiers = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Encode("encoder thread panicked".into()))))
            .collect::<Result<Vec<_>, _>>()?;
        let features = features.join().map_err(|_| Error::Encode("feature analysis panicked".into()))?;
        Ok((tiers, features))
    })
}

/// Samples per channel the low tier must decode to: the master's length at 22.05 kHz,
/// rounded to the nearest sample.
pub fn low_tier_frames(frames: u64, source_rate: u32) -> u64 {
    let out = u64::from(Tier::Low.sample_rate(source_rate));
    (frames * out + u64::from(source_rate) / 2) / u64::from(source_rate)
}

pub(crate) fn low_tier_input(master: &Master) -> Result<Vec<Vec<f32>>, Error> {
    let mono: Vec<f32> = match master.channels.as_slice() {
        [m] => m.clone(),
        [l, r] => l.iter().zip(r).map(|(a, b)| 0.5 * (a + b)).collect(),
        _ => return Err(Error::Encode("masters are mono or stereo".into())),
    };
    let out_rate = Tier::Low.sample_rate(master.sample_rate);
    let want = low_tier_frames(master.frames(), master.sample_rate) as usize;
    if out_rate == master.sample_rate {
        return Ok(vec![mono]);
    }
    Ok(vec![resample(&mono, master.sample_rate, out_rate, want)?])
}

/// Band-limited resampling (FFT-based, rubato) to exactly `want` samples: the filter's
/// delay is trimmed from the front and the tail flushed, so no time shift is introduced.
fn resample(input: &[f32], from: u32, to: u32, want: usize) -> Result<Vec<f32>, Error> {
    use rubato::{FftFixedInOut, Resampler};
    let err = |e: &dyn std::fmt::Display| Error::Encode(format!("resampler: {e}"));
    let mut r = FftFixedInOut::<f32>::new(from as usize, to as usize, 1024, 1).map_err(|e| err(&e))?;
    let delay = r.output_delay();
    let mut out = Vec::with_capacity(want + delay + 4096);
    let mut pos = 0;
    while pos + r.input_frames_next() <= input.len() {
        let n = r.input_frames_next();
        let chunk = r.process(&[&input[pos..pos + n]], None).map_err(|e| err(&e))?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    if pos < input.len() {
        let chunk = r.process_partial(Some(&[&input[pos..]]), None).map_err(|e| err(&e))?;
        out.extend_from_slice(&chunk[0]);
    }
    while out.len() < want + delay {
        let chunk = r.process_partial::<&[f32]>(None, None).map_err(|e| err(&e))?;
        if chunk[0].is_empty() {
            break;
        }
        out.extend_from_slice(&chunk[0]);
    }
    out.drain(..delay.min(out.len()));
    out.resize(want, 0.0);
    Ok(out)
}

/// Encode one tier from planar input at `rate`, then check the result against what
/// clients will rely on: a valid seek table and the exact sample count.
fn encode_tier(tier: Tier, rate: u32, input: &[Vec<f32>]) -> Result<EncodedTier, Error> {
    let err = |what: &str, e: &dyn std::fmt::Display| Error::Encode(format!("{tier}: {what}: {e}"));
    let frames = input.first().map_or(0, Vec::len);
    let rate_nz = NonZeroU32::new(rate).ok_or_else(|| Error::Encode("sample rate 0".into()))?;
    let channels = NonZeroU8::new(input.len() as u8).ok_or_else(|| Error::Encode("no channels".into()))?;
    let build = |target_quality| {
        // A fixed serial per tier keeps packaging deterministic (same master, same bytes).
        let serial = 0x5e60_0000 | tier.kbps() as i32;
        let mut builder =
            VorbisEncoderBuilder::new_with_serial(rate_nz, channels, Vec::with_capacity(frames / 4), serial);
        builder.bitrate_management_strategy(VorbisBitrateManagementStrategy::QualityVbr { target_quality });
        builder.comment_tag("ENCODER", "segue")?;
        builder.build()
    };
    // libvorbis has no setup at every quality for every rate (8 kHz stops short of the top
    // tiers): there the tier gets the best quality it has, and the manifest records the
    // bitrate reached.
    let mut enc = match build(quality(tier)) {
        Ok(enc) => enc,
        Err(_) => (0..=10).rev().find_map(|q| build(q as f32 / 10.0).ok()).ok_or_else(|| {
            Error::Encode(format!("{tier}: libvorbis has no setup for {rate} Hz, {channels} channels"))
        })?,
    };
    const BLOCK: usize = 4096;
    for start in (0..frames).step_by(BLOCK) {
        let end = (start + BLOCK).min(frames);
        let block: Vec<&[f32]> = input.iter().map(|c| &c[start..end]).collect();
        enc.encode_audio_block(&block).map_err(|e| err("encode", &e))?;
    }
    let ogg = enc.finish().map_err(|e| err("finish", &e))?;
    // Pages of up to a second: seek entries (one per page) stay at most a second apart,
    // and page headers cost ~0.2 kbit/s. The first is half a second, so the first sound
    // waits for half as many bytes.
    let paging = crate::repage::Paging { first: u64::from(rate) / 2, max: u64::from(rate) };
    let ogg = crate::repage::by_time(&ogg, paging).map_err(|e| err("paging", &e))?;
    let seek = ogg::seek_table(&ogg, tier, rate).map_err(|e| err("seek table", &e))?;
    seek.validate().map_err(|e| err("seek table", &e))?;
    if seek.total_samples != frames as u64 {
        return Err(Error::Encode(format!("{tier}: encoded {} samples, expected {frames}", seek.total_samples)));
    }
    Ok(EncodedTier { tier, channels: input.len() as u16, ogg, seek })
}

/// libvorbis (aoTuV) quality of each tier, as vorbis_rs takes it (oggenc's -q / 10).
///
/// Quality mode encodes each block once; ABR (libvorbis's bitrate manager) encodes the
/// residue at every one of its bitrate levels and picks one, which costs four times the
/// CPU. These values put a 44.1 kHz stereo master within 5% of each nominal bitrate on
/// the reference masters (docs/BENCHMARKS.md "Tier qualities"), except `normal`, which
/// sits just under the step libvorbis takes at quality 0.2 (its next residue setup): on
/// dense masters that step jumps from 6% under 96 kbit/s to 10% over it.
fn quality(tier: Tier) -> f32 {
    match tier {
        Tier::Low => -0.09,
        Tier::Normal => 0.199,
        Tier::Standard => 0.33,
        Tier::High => 0.5,
        Tier::VeryHigh => 0.878,
    }
}

/// EBU R128 integrated loudness and true peak of the master.
fn loudness(master: &Master) -> Result<Loudness, Error> {
    use ebur128::{EbuR128, Mode};
    let err = |e: ebur128::Error| Error::Encode(format!("loudness: {e}"));
    let ch = master.channels.len() as u32;
    let mut meter = EbuR128::new(ch, master.sample_rate, Mode::I | Mode::TRUE_PEAK).map_err(err)?;
    let planar: Vec<&[f32]> = master.channels.iter().map(Vec::as_slice).collect();
    meter.add_frames_planar_f32(&planar).map_err(err)?;
    let integrated = meter.loudness_global().map_err(err)?;
    let mut peak = 0.0f64;
    for c in 0..ch {
        peak = peak.max(meter.true_peak(c).map_err(err)?);
    }
    let db = |x: f64| if x > 0.0 { 20.0 * x.log10() } else { f64::NEG_INFINITY };
    let round = |x: f64| if x.is_finite() { (x * 100.0).round() / 100.0 } else { -200.0 };
    Ok(Loudness { integrated_lufs: round(integrated), true_peak_dbtp: round(db(peak)) })
}
