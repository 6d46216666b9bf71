//! Ogg Vorbis to PCM (lewton), trimmed to the exact samples of the seek table: Vorbis
//! ends on a whole block, and the last page's granule position says how much of it is
//! padding; the packager writes that count as the seek table's `total_samples`.

use crate::Error;

/// Interleaved 16-bit PCM.
#[derive(Debug, Clone, Default)]
pub struct Pcm {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
}

impl Pcm {
    /// Samples per channel.
    pub fn frames(&self) -> u64 {
        self.samples.len() as u64 / u64::from(self.channels.max(1))
    }
}

/// Decode a whole Ogg Vorbis object and keep its first `total_samples` per channel.
pub fn decode(bytes: &[u8], total_samples: u64) -> Result<Pcm, Error> {
    let mut reader = lewton::inside_ogg::OggStreamReader::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::Decode(format!("Vorbis headers: {e}")))?;
    let channels = u16::from(reader.ident_hdr.audio_channels);
    let sample_rate = reader.ident_hdr.audio_sample_rate;
    let keep = total_samples as usize * usize::from(channels);
    let mut samples = Vec::with_capacity(keep);
    while let Some(packet) = reader.read_dec_packet_itl().map_err(|e| Error::Decode(format!("Vorbis audio: {e}")))? {
        samples.extend(packet);
        if samples.len() >= keep {
            break;
        }
    }
    if samples.len() < keep {
        return Err(Error::Decode(format!(
            "the stream decodes to {} samples per channel, the seek table promises {total_samples}",
            samples.len() / usize::from(channels.max(1))
        )));
    }
    samples.truncate(keep);
    Ok(Pcm { sample_rate, channels, samples })
}
