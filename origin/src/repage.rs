//! Re-paging a Vorbis stream by time. libvorbis cuts pages by bytes, so a page holds a
//! fixed amount of data whatever the bitrate: small pages at low bitrates cost ~30 bytes
//! of header each (8% of a 24 kbps tier at 1/8 s pages), and every page boundary is a
//! place where demuxers that seek by granule (ffmpeg, so mpv) can land up to a block late.
//! Here the same packets are laid out again in pages of a chosen length in audio, each
//! page's granule computed from the Vorbis block sizes and checked against every granule
//! libvorbis wrote, so the output decodes to exactly the same samples.

use lewton::audio::get_decoded_sample_count;
use lewton::header::{read_header_ident, read_header_setup};

use crate::ogg::{self, lacing_len, OggError, END_OF_STREAM};

/// Page lengths, in samples of output.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// The first audio page ends at the first packet that reaches this: a player decodes
    /// whole pages, so it is what the first sound waits for.
    pub first: u64,
    /// No page holds more (unless one packet does).
    pub max: u64,
}

/// The stream in `data`, its audio packets regrouped in pages as `paging` says (shorter
/// where 255 lacing values fill a page first). The header pages are kept byte for byte.
pub fn by_time(data: &[u8], paging: Paging) -> Result<Vec<u8>, RepageError> {
    let pages = ogg::pages(data)?;
    let packets = ogg::packets(data, &pages)?;
    let first_audio = ogg::first_audio_page(&pages)?;
    let headers = packets.iter().take_while(|p| p.page < first_audio).count();
    if headers != 3 {
        return Err(RepageError::Vorbis(format!("{headers} header packets, expected 3")));
    }
    let ident =
        read_header_ident(&packets[0].data).map_err(|e| RepageError::Vorbis(format!("identification: {e:?}")))?;
    let setup = read_header_setup(&packets[2].data, ident.audio_channels, (ident.blocksize_0, ident.blocksize_1))
        .map_err(|e| RepageError::Vorbis(format!("setup: {e:?}")))?;
    let audio = &packets[headers..];

    // Position after each packet: a packet outputs from the middle of the previous block
    // to the middle of its own, a quarter of each block size; the first only primes the
    // overlap. lewton reads the packet's mode (so its block size) but reports the window
    // span of one packet alone, which for a long block is always more than half a short
    // block and for a short block exactly that.
    let (short, long) = (1u64 << ident.blocksize_0, 1u64 << ident.blocksize_1);
    let mut granules = Vec::with_capacity(audio.len());
    let (mut at, mut previous) = (0u64, None);
    for (i, p) in audio.iter().enumerate() {
        let span = get_decoded_sample_count(&ident, &setup, &p.data)
            .map_err(|e| RepageError::Vorbis(format!("audio packet {i}: {e:?}")))?;
        let block = if span as u64 > short / 2 { long } else { short };
        if let Some(previous) = previous {
            at += previous / 4 + block / 4;
        }
        previous = Some(block);
        granules.push(at);
    }
    // Every granule libvorbis wrote must agree; the last is the stream's true end (the
    // final block is cut short there), which the new last page keeps.
    let end = pages.last().and_then(|p| p.granule).ok_or(OggError::NoAudio)?;
    for (i, p) in audio.iter().enumerate() {
        let is_last_on_page = audio.get(i + 1).is_none_or(|next| next.page != p.page);
        let written = pages[p.page].granule;
        if is_last_on_page && p.page + 1 < pages.len() && written != Some(granules[i]) {
            return Err(RepageError::Granule { packet: i, written, computed: granules[i] });
        }
    }
    let before_last = granules.len().checked_sub(2).map_or(0, |i| granules[i]);
    match granules.last_mut() {
        Some(last) if (before_last..=*last).contains(&end) => *last = end,
        _ => return Err(RepageError::Vorbis(format!("end granule {end} is outside the last packet"))),
    }

    let serial = u32::from_le_bytes([data[14], data[15], data[16], data[17]]);
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..pages[first_audio].offset as usize]);
    let mut sequence = first_audio as u32;
    let mut start = 0;
    while start < audio.len() {
        // Grow the page while the next packet fits in time and in lacing values; a page
        // always takes at least one packet.
        let base = if start == 0 { 0 } else { granules[start - 1] };
        let mut end = start;
        let mut lacing = 0;
        while end < audio.len() {
            let more = lacing_len(audio[end].data.len());
            if end > start && (lacing + more > 255 || granules[end] - base > paging.max) {
                break;
            }
            if more > 255 {
                return Err(RepageError::Vorbis(format!("audio packet of {} bytes", audio[end].data.len())));
            }
            lacing += more;
            end += 1;
            if start == 0 && granules[end - 1] >= paging.first {
                break;
            }
        }
        // The end of a stream is trimmed by its last page's granule, but a demuxer reads
        // a short first page as a late start instead (ffmpeg does): a stream that fits in
        // one page gets its last packet on a page of its own.
        if start == 0 && end == audio.len() && end > 1 {
            end -= 1;
        }
        let flags = if end == audio.len() { END_OF_STREAM } else { 0 };
        let body: Vec<&[u8]> = audio[start..end].iter().map(|p| p.data.as_slice()).collect();
        ogg::write_page(&mut out, serial, sequence, flags, granules[end - 1], &body);
        sequence += 1;
        start = end;
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepageError {
    #[error(transparent)]
    Ogg(#[from] OggError),
    #[error("Vorbis stream: {0}")]
    Vorbis(String),
    #[error("audio packet {packet}: libvorbis wrote granule {written:?}, block sizes give {computed}")]
    Granule { packet: usize, written: Option<u64>, computed: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::{NonZeroU32, NonZeroU8};
    use vorbis_rs::{VorbisBitrateManagementStrategy, VorbisEncoderBuilder};

    /// A chirp over noise with a click every 0.3 s (so libvorbis switches between long
    /// and short blocks), encoded with its byte-sized pages.
    fn encoded(rate: u32, secs: u32) -> Vec<u8> {
        let n = (rate * secs) as usize + 777;
        let mut seed = 1u32;
        let samples: Vec<f32> = (0..n)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let t = i as f32 / rate as f32;
                let click = if i % (rate as usize * 3 / 10) < 32 { 0.8 } else { 0.0 };
                0.3 * (t * 2000.0 * (1.0 + t)).sin() + 0.05 * ((seed >> 8) as f32 / 8_388_608.0 - 1.0) + click
            })
            .collect();
        let mut b = VorbisEncoderBuilder::new_with_serial(
            NonZeroU32::new(rate).unwrap(),
            NonZeroU8::new(1).unwrap(),
            Vec::new(),
            7,
        );
        b.bitrate_management_strategy(VorbisBitrateManagementStrategy::QualityVbr { target_quality: 0.3 });
        let mut enc = b.build().unwrap();
        for chunk in samples.chunks(4096) {
            enc.encode_audio_block([chunk]).unwrap();
        }
        enc.finish().unwrap()
    }

    fn decode(bytes: &[u8]) -> Vec<i16> {
        let mut r = lewton::inside_ogg::OggStreamReader::new(std::io::Cursor::new(bytes)).unwrap();
        let mut out = Vec::new();
        while let Some(p) = r.read_dec_packet_itl().unwrap() {
            out.extend(p);
        }
        out
    }

    #[test]
    fn pages_hold_up_to_the_limit_and_decode_to_the_same_samples() {
        let rate = 22_050;
        let original = encoded(rate, 10);
        let second = u64::from(rate);
        let repaged = by_time(&original, Paging { first: second / 2, max: second }).unwrap();
        let pages = ogg::pages(&repaged).unwrap();
        let audio: Vec<_> = pages.iter().filter(|p| p.granule != Some(0)).collect();
        let mut before = 0;
        for (i, p) in audio.iter().enumerate() {
            let g = p.granule.unwrap();
            let least = if i == 0 { second / 2 } else { second * 9 / 10 };
            assert!(
                g - before <= if i == 0 { second / 2 + 1024 } else { second },
                "page {i} holds {} samples",
                g - before
            );
            if i + 1 < audio.len() {
                assert!(g - before >= least, "page {i} holds only {} samples", g - before);
            }
            before = g;
        }
        assert_eq!(audio.len(), 11, "10.04 s in a first page of half a second, then pages of up to 1 s");
        assert_eq!(before, u64::from(rate) * 10 + 777, "the true end is kept");
        assert_eq!(repaged[repaged.len() - pages.last().unwrap().len as usize + 5], END_OF_STREAM);
        assert!(repaged.len() < original.len(), "fewer page headers");
        assert_eq!(decode(&repaged), decode(&original));
    }

    #[test]
    fn a_stream_shorter_than_a_page_ends_on_a_page_of_its_own() {
        let original = encoded(22_050, 0);
        let repaged = by_time(&original, Paging { first: 11_025, max: 22_050 }).unwrap();
        let pages = ogg::pages(&repaged).unwrap();
        let granules: Vec<_> = pages.iter().filter_map(|p| p.granule).filter(|&g| g > 0).collect();
        assert_eq!(granules.len(), 2, "{pages:?}");
        assert_eq!(granules[1], 777);
        // Decoders now trim the end (lewton, like ffmpeg, read the one page as a late start).
        let (once, before) = (decode(&repaged), decode(&original));
        assert_eq!(once.len(), 777, "decoded to the true length");
        assert_eq!(&once[..], &before[..777]);
    }

    #[test]
    fn a_granule_that_disagrees_with_the_block_sizes_is_refused() {
        let mut bytes = encoded(22_050, 3);
        let pages = ogg::pages(&bytes).unwrap();
        let p = pages.iter().find(|p| p.granule.is_some_and(|g| g > 0)).unwrap();
        let at = p.offset as usize;
        let g = p.granule.unwrap() + 64;
        bytes[at + 6..at + 14].copy_from_slice(&g.to_le_bytes());
        bytes[at + 22..at + 26].copy_from_slice(&[0; 4]);
        let crc = ogg::crc(&bytes[at..at + p.len as usize]);
        bytes[at + 22..at + 26].copy_from_slice(&crc.to_le_bytes());
        let paging = Paging { first: 11_025, max: 22_050 };
        assert!(matches!(by_time(&bytes, paging), Err(RepageError::Granule { .. })), "{:?}", by_time(&bytes, paging));
    }
}
