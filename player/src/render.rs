//! Rendering a queue to a WAV file through the engine.

use std::path::Path;

use crate::decode::Pcm;
use crate::engine::{Engine, OnPlay, Stats};
use crate::Error;

/// Play `tracks` through `engine` and write the output to `out` as WAV; `on_play` is
/// told of each play as it ends.
pub async fn render(
    mut engine: Engine,
    tracks: &[String],
    out: &Path,
    on_play: Option<OnPlay>,
) -> Result<Stats, Error> {
    if let Some(f) = on_play {
        engine = engine.on_play(f);
    }
    let mut samples = Vec::new();
    let stats = engine.play(tracks, |chunk| samples.extend_from_slice(chunk)).await?;
    write_wav(out, &Pcm { sample_rate: stats.sample_rate, channels: stats.channels, samples })?;
    Ok(stats)
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
