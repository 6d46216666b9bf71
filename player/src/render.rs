//! Rendering a queue back to back: each track's decode is trimmed to its exact samples,
//! so consecutive cuts of one piece join with no gap and no overlap.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::AppApi;
use crate::decode::{decode, decode_from, Pcm, PREROLL};
use crate::fetch::Fetcher;
use crate::Error;

/// What a render did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tracks: usize,
    pub frames: u64,
    pub sample_rate: u32,
    pub channels: u16,
    /// From the start to the first track's first decoded samples.
    pub time_to_first_audio_ms: f64,
    pub bytes_fetched: u64,
    pub failovers: u64,
    /// Samples per channel missing or extra at the track boundaries (0: gapless).
    pub gap_samples: u64,
    pub seconds: f64,
}

/// Fetch, decode and join `tracks` at `tier`, the first from `start_ms` into it; write a
/// WAV to `out`.
pub async fn render(
    api: &AppApi,
    tracks: &[String],
    tier: &str,
    country: Option<&str>,
    start_ms: u64,
    out: &Path,
) -> Result<Report, Error> {
    let started = Instant::now();
    let fetcher = Fetcher::with_timeout(Duration::from_secs(30));
    let mut all = Pcm::default();
    let mut first_audio = None;
    let mut gap = 0u64;
    for (i, track) in tracks.iter().enumerate() {
        let info = api.stream(track, tier, country).await?;
        let table_bytes = fetcher.get(&info.seek_table_url, None, None).await?;
        let table = segue_core::seek_table::SeekTable::from_json(&table_bytes)
            .map_err(|e| Error::Decode(format!("{track}: {e}")))?;
        let start = if i == 0 { start_ms * u64::from(table.sample_rate) / 1000 } else { 0 };
        let pcm = if start == 0 {
            let audio = fetcher.get(&info.url, info.fallback_url.as_deref(), None).await?;
            decode(&audio, table.total_samples).map_err(|e| Error::Decode(format!("{track}: {e}")))?
        } else {
            seek(&fetcher, &info, &table, start).await.map_err(|e| Error::Decode(format!("{track}: {e}")))?
        };
        first_audio.get_or_insert_with(|| started.elapsed());
        if all.samples.is_empty() {
            (all.sample_rate, all.channels) = (pcm.sample_rate, pcm.channels);
        } else if (all.sample_rate, all.channels) != (pcm.sample_rate, pcm.channels) {
            return Err(Error::Decode(format!(
                "{track}: {} Hz x{} after {} Hz x{}: a queue renders at one format",
                pcm.sample_rate, pcm.channels, all.sample_rate, all.channels
            )));
        }
        gap += pcm.frames().abs_diff(table.total_samples - start.min(table.total_samples));
        all.samples.extend_from_slice(&pcm.samples);
    }
    write_wav(out, &all)?;
    Ok(Report {
        tracks: tracks.len(),
        frames: all.frames(),
        sample_rate: all.sample_rate,
        channels: all.channels,
        time_to_first_audio_ms: first_audio.unwrap_or_default().as_secs_f64() * 1000.0,
        bytes_fetched: fetcher.bytes(),
        failovers: fetcher.failovers(),
        gap_samples: gap,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Play `info` from sample `target`: the header pages, then the bytes from the seek
/// entry before it (never the bytes before that entry); decode and discard up to
/// `target`. An entry too late to reach it (a long block) makes it step back one.
pub async fn seek(
    fetcher: &Fetcher,
    info: &crate::api::StreamInfo,
    table: &segue_core::seek_table::SeekTable,
    target: u64,
) -> Result<Pcm, Error> {
    if target >= table.total_samples {
        return Err(Error::Decode(format!("seek to sample {target} is past the end ({})", table.total_samples)));
    }
    let fallback = info.fallback_url.as_deref();
    let header = fetcher.get(&info.url, fallback, Some((0, table.header_bytes - 1))).await?;
    let mut from = target.saturating_sub(PREROLL);
    loop {
        let offset = table.entry_for(from).map_or(table.header_bytes, |e| e.offset);
        let tail = fetcher.get(&info.url, fallback, Some((offset, table.total_bytes - 1))).await?;
        let mut data = header.to_vec();
        data.extend_from_slice(&tail);
        if let Some(pcm) = decode_from(&data, target, table.total_samples)? {
            return Ok(pcm);
        }
        if offset == table.header_bytes || from == 0 {
            return Err(Error::Decode(format!("no seek entry reaches sample {target}")));
        }
        from = from.saturating_sub(PREROLL);
    }
}

/// Write 16-bit PCM as WAV, atomically (temp file + rename).
pub fn write_wav(path: &Path, pcm: &Pcm) -> Result<(), Error> {
    let spec = hound::WavSpec {
        channels: pcm.channels.max(1),
        sample_rate: pcm.sample_rate.max(1),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(pcm.samples.len() * 2 + 44));
    {
        let mut w = hound::WavWriter::new(&mut bytes, spec).map_err(|e| Error::Io(e.to_string()))?;
        let mut w16 = w.get_i16_writer(pcm.samples.len() as u32);
        for s in &pcm.samples {
            w16.write_sample(*s);
        }
        w16.flush().map_err(|e| Error::Io(e.to_string()))?;
        w.finalize().map_err(|e| Error::Io(e.to_string()))?;
    }
    segue_core::fsutil::write_atomic(path, bytes.get_ref(), 0o644)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}
