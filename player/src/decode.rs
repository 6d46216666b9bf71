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

/// Pre-roll before a seek target: a Vorbis decoder started at a page needs the packet
/// before a sample to produce it (libvorbis uses 2048-sample long blocks at 44.1/48 kHz).
pub const PREROLL: u64 = 4096;

/// Decode `data` (the header pages, then the pages from a seek entry on) and return the
/// samples from `target` to `total_samples`, per channel. The position of what the
/// decoder yields is learned from the first page's granule position; `None` when the
/// entry was not early enough to reach `target` (start from an earlier one).
pub fn decode_from(data: &[u8], target: u64, total_samples: u64) -> Result<Option<Pcm>, Error> {
    let mut reader = lewton::inside_ogg::OggStreamReader::new(std::io::Cursor::new(data))
        .map_err(|e| Error::Decode(format!("Vorbis headers: {e}")))?;
    let channels = u16::from(reader.ident_hdr.audio_channels);
    let sample_rate = reader.ident_hdr.audio_sample_rate;
    let ch = usize::from(channels.max(1));
    let want = total_samples.saturating_sub(target) as usize * ch;
    let mut samples: Vec<i16> = Vec::with_capacity(want);
    // Sample index of samples[0], once a page end has told us.
    let mut first: Option<u64> = None;
    while let Some(packet) = reader.read_dec_packet_itl().map_err(|e| Error::Decode(format!("Vorbis audio: {e}")))? {
        samples.extend(packet);
        if first.is_none() {
            if let Some(end) = reader.get_last_absgp() {
                let start = end.saturating_sub((samples.len() / ch) as u64);
                if start > target {
                    return Ok(None);
                }
                samples.drain(..((target - start) as usize * ch).min(samples.len()));
                first = Some(target);
            }
        }
        if first.is_some() && samples.len() >= want {
            break;
        }
    }
    if first.is_none() || samples.len() < want {
        return Err(Error::Decode(format!(
            "decoding from the seek entry yields {} samples per channel after {target}, the seek table promises {}",
            samples.len() / ch,
            total_samples.saturating_sub(target)
        )));
    }
    samples.truncate(want);
    Ok(Some(Pcm { sample_rate, channels, samples }))
}
