//! Ogg Vorbis to PCM as the bytes arrive: pages are parsed (`ogg`) and packets decoded
//! (`lewton`) from whatever has been received so far, so playback starts after the first
//! pages rather than after the whole object. The deck trims to the exact samples of the
//! seek table: Vorbis ends on a whole block, and the last page's granule position says
//! how much of it is padding; the packager writes that count as `total_samples`.

use lewton::audio::{get_decoded_sample_count, read_audio_packet_generic, PreviousWindowRight};
use lewton::header::{read_header_comment, read_header_ident, read_header_setup, IdentHeader, SetupHeader};
use lewton::samples::InterleavedSamples;
use ogg::reading::{BasePacketReader, PageParser};

use crate::Error;

/// Interleaved 16-bit PCM.
#[derive(Debug, Clone, Default)]
pub struct Pcm {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
}

/// Pre-roll before a seek target: a Vorbis decoder started at a page needs the packet
/// before a sample to produce it (libvorbis uses 2048-sample long blocks at 44.1/48 kHz).
pub const PREROLL: u64 = 4096;

/// Bytes of an Ogg page header before its segment table.
const PAGE_HEADER: usize = 27;

/// An incremental Ogg Vorbis decoder: `push` bytes in stream order, get PCM out.
pub struct StreamDecoder {
    /// Received bytes not yet parsed (less than a whole page).
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`, for error messages.
    offset: u64,
    packets: BasePacketReader,
    ident: Option<IdentHeader>,
    comment: bool,
    setup: Option<SetupHeader>,
    pwr: PreviousWindowRight,
    /// Frames produced since the start (or since `seeked`).
    frames: u64,
    /// Stream position of the first frame produced: 0 from the start; after `seeked`,
    /// learned at the first packet after a page end.
    start: Option<u64>,
    /// Whether the last packet decoded was a long block (`None` right after a seek).
    previous_long: Option<bool>,
    /// Whether the first audio page end has been seen (from the start of the stream).
    first_page_seen: bool,
}

/// How far lewton's output runs ahead of the granule position after a packet whose
/// window span is `span` (`None` when it cannot tell: a long block right after a seek).
/// lewton returns the part of a long block that no window overlaps as soon as it has it:
/// before a short block, (long - short) / 4 samples ahead of the position the granule
/// counts (1472 samples, then 448 fewer at the short block). The span tells: a short
/// block spans half its size; a long one from its left window start (0, or (long -
/// short) / 4 after a short block) to its right one (the middle, or that much past it
/// before a short block). `previous_long` is the last packet's kind, updated.
fn ahead_of_granule(ident: &IdentHeader, span: u64, previous_long: &mut Option<bool>) -> Option<u64> {
    let (short, long) = (1u64 << ident.blocksize_0, 1u64 << ident.blocksize_1);
    let is_long = span > short / 2;
    let ahead = match (is_long, *previous_long) {
        (false, _) => Some(0),
        (true, Some(previous_long)) => {
            let left = if previous_long { 0 } else { (long - short) / 4 };
            Some((span + left).saturating_sub(long / 2))
        }
        (true, None) => None,
    };
    *previous_long = Some(is_long);
    ahead
}

impl Default for StreamDecoder {
    fn default() -> Self {
        StreamDecoder {
            pending: Vec::new(),
            offset: 0,
            packets: BasePacketReader::new(),
            ident: None,
            comment: false,
            setup: None,
            pwr: PreviousWindowRight::new(),
            frames: 0,
            start: Some(0),
            previous_long: None,
            first_page_seen: false,
        }
    }
}

impl StreamDecoder {
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Sample rate and channels, once the identification header is in.
    pub fn format(&self) -> Option<(u32, u16)> {
        self.ident.as_ref().map(|i| (i.audio_sample_rate, u16::from(i.audio_channels)))
    }

    /// Stream position (per channel) of the first frame produced, once known.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// Stream position just past the last frame produced, once known.
    pub fn position(&self) -> Option<u64> {
        self.start.map(|s| s + self.frames)
    }

    /// The bytes pushed next begin at a page somewhere in the stream (a seek), not
    /// right after the headers: the decoder forgets the previous block and learns its
    /// position again from the next page end.
    pub fn seeked(&mut self, offset: u64) {
        self.packets.update_after_seek();
        self.pending.clear();
        self.offset = offset;
        self.pwr = PreviousWindowRight::new();
        self.frames = 0;
        self.start = None;
        self.previous_long = None;
        self.first_page_seen = true;
    }

    /// Take `bytes`, the next bytes of the stream, and append to `out` the interleaved
    /// samples of every packet they complete.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<i16>) -> Result<(), Error> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(len) = self.page_len(at)? {
            let page = &self.pending[at..at + len];
            let mut header = [0u8; PAGE_HEADER];
            header.copy_from_slice(&page[..PAGE_HEADER]);
            let bad = |e: ogg::OggReadError| Error::Decode(format!("Ogg page at byte {}: {e}", self.offset));
            let (mut parser, segments) = PageParser::new(header).map_err(bad)?;
            let table_end = PAGE_HEADER + segments;
            parser.parse_segments(page[PAGE_HEADER..table_end].to_vec());
            let page = parser.parse_packet_data(page[table_end..].to_vec()).map_err(bad)?;
            self.packets.push_page(page).map_err(bad)?;
            at += len;
            self.offset += len as u64;
            while let Some(packet) = self.packets.read_packet() {
                self.packet(&packet, out)?;
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// The length of the whole page at `pending[at..]`, or `None` until it has arrived.
    fn page_len(&self, at: usize) -> Result<Option<usize>, Error> {
        let p = &self.pending[at..];
        if p.len() < PAGE_HEADER {
            return Ok(None);
        }
        if &p[..4] != b"OggS" {
            return Err(Error::Decode(format!("no Ogg page at byte {}", self.offset)));
        }
        let segments = usize::from(p[26]);
        if p.len() < PAGE_HEADER + segments {
            return Ok(None);
        }
        let body: usize = p[PAGE_HEADER..PAGE_HEADER + segments].iter().map(|s| usize::from(*s)).sum();
        let len = PAGE_HEADER + segments + body;
        Ok((p.len() >= len).then_some(len))
    }

    fn packet(&mut self, packet: &ogg::Packet, out: &mut Vec<i16>) -> Result<(), Error> {
        let header = |e: lewton::header::HeaderReadError| Error::Decode(format!("Vorbis headers: {e}"));
        let (Some(ident), true, Some(setup)) = (&self.ident, self.comment, &self.setup) else {
            match (&self.ident, self.comment) {
                (None, _) => self.ident = Some(read_header_ident(&packet.data).map_err(header)?),
                (Some(_), false) => {
                    read_header_comment(&packet.data).map_err(header)?;
                    self.comment = true;
                }
                (Some(i), true) => {
                    let setup = read_header_setup(&packet.data, i.audio_channels, (i.blocksize_0, i.blocksize_1));
                    self.setup = Some(setup.map_err(header)?);
                }
            }
            return Ok(());
        };
        let audio =
            |e: lewton::audio::AudioReadError| Error::Decode(format!("Vorbis audio near byte {}: {e}", self.offset));
        let decoded: InterleavedSamples<i16> =
            read_audio_packet_generic(ident, setup, &packet.data, &mut self.pwr).map_err(audio)?;
        let ch = usize::from(ident.audio_channels.max(1));
        self.frames += (decoded.samples.len() / ch) as u64;
        out.extend_from_slice(&decoded.samples);
        // Block sizes matter only until the position is known (the first page end, from
        // the start or after a seek); past it no packet needs them.
        let ahead = if self.start.is_none() || !self.first_page_seen {
            let span = get_decoded_sample_count(ident, setup, &packet.data).map_err(audio)? as u64;
            ahead_of_granule(ident, span, &mut self.previous_long)
        } else {
            Some(0)
        };
        // A page's granule position is the stream position at the end of its last
        // complete packet (-1 on a page where none ends). The last page's is the end of
        // the audio, short of the decoded frames by the last block's padding: no position
        // comes from it.
        let end = packet.absgp_page();
        if !packet.last_in_page() || end == u64::MAX {
            return Ok(());
        }
        if let (None, false, Some(ahead)) = (self.start, packet.last_in_stream(), ahead) {
            self.start = Some((end + ahead).saturating_sub(self.frames));
        }

        if !self.first_page_seen {
            self.first_page_seen = true;
            // From the start of a stream, a first granule position below the samples
            // decoded means the first ones are encoder priming, to drop (Vorbis I spec,
            // A.2). They were all decoded from this page, so they are still in `out`.
            let end = end + ahead.unwrap_or(0);
            if end < self.frames {
                let first = out.len().saturating_sub(self.frames as usize * ch);
                let drop = (self.frames - end) as usize * ch;
                out.drain(first..(first + drop).min(out.len()));
                self.frames = end;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 s of the demo music, packaged like the origin does: the high tier's bytes and
    /// seek table.
    fn packaged() -> (Vec<u8>, segue_core::seek_table::SeekTable) {
        packaged_secs(3)
    }

    fn packaged_secs(secs: u32) -> (Vec<u8>, segue_core::seek_table::SeekTable) {
        packaged_tier(secs, segue_core::Tier::High)
    }

    fn packaged_tier(secs: u32, tier: segue_core::Tier) -> (Vec<u8>, segue_core::seek_table::SeekTable) {
        let [l, r] = segue_origin::demo::music(1, 0, secs);
        let master = segue_origin::master::Master {
            sample_rate: 44_100,
            channels: vec![l, r],
            content_id: segue_core::ContentId::digest(b"decode test"),
        };
        let (tiers, _) = segue_origin::package::encode_all(&master).unwrap();
        let high = tiers.into_iter().find(|t| t.tier == tier).unwrap();
        (high.ogg, high.seek)
    }

    /// Reference: lewton's own reader over the whole object.
    fn lewton_whole(bytes: &[u8]) -> Vec<i16> {
        let mut r = lewton::inside_ogg::OggStreamReader::new(std::io::Cursor::new(bytes)).unwrap();
        let mut all = Vec::new();
        while let Some(p) = r.read_dec_packet_itl().unwrap() {
            all.extend(p);
        }
        all
    }

    #[test]
    fn bytes_in_any_chunking_decode_like_the_whole_object() {
        let (ogg, table) = packaged();
        let whole = lewton_whole(&ogg);
        for chunk in [1usize, 7, 4096, 65_536, ogg.len()] {
            let mut d = StreamDecoder::new();
            let mut out = Vec::new();
            for piece in ogg.chunks(chunk) {
                d.push(piece, &mut out).unwrap();
            }
            assert_eq!(d.format(), Some((44_100, 2)));
            // lewton's reader also trims the last packet to the last granule position;
            // here the seek table's count does that.
            assert!(out.len() >= whole.len() && out.len() - whole.len() < 4096, "chunks of {chunk}");
            assert!(out[..whole.len()] == whole[..], "chunks of {chunk}: the same samples");
        }
        // The seek table's count is what the decode yields, less the last block's padding.
        let mut out = Vec::new();
        StreamDecoder::new().push(&ogg, &mut out).unwrap();
        let frames = out.len() as u64 / 2;
        assert!(frames >= table.total_samples && frames - table.total_samples < 2048, "{frames} decoded");
    }

    #[test]
    fn after_a_seek_the_position_comes_from_the_page_ends() {
        // From every seek entry of every tier (block sizes change at some page ends,
        // where lewton hands out samples early), the position is exact.
        for tier in segue_core::Tier::ALL {
            let (ogg, table) = packaged_tier(6, tier);
            let ch = usize::from(tier.channels());
            let whole = lewton_whole(&ogg);
            // From the start, too: a first page ending early in lewton's count is not
            // encoder priming.
            let mut from_start = Vec::new();
            StreamDecoder::new().push(&ogg, &mut from_start).unwrap();
            assert!(from_start.len() >= whole.len() && from_start[..whole.len()] == whole[..], "{tier} from the start");
            for entry in &table.entries {
                let mut d = StreamDecoder::new();
                let mut out = Vec::new();
                d.push(&ogg[..table.header_bytes as usize], &mut out).unwrap();
                assert!(out.is_empty() && d.format().is_some());
                d.seeked(entry.offset);
                assert_eq!(d.start(), None);
                d.push(&ogg[entry.offset as usize..], &mut out).unwrap();
                // The last page: no position, the player steps back an entry.
                let Some(start) = d.start().map(|s| s as usize) else {
                    assert_eq!(entry, table.entries.last().unwrap(), "{tier}");
                    continue;
                };
                assert!(
                    start as u64 >= entry.granule && start as u64 <= entry.granule + 4096,
                    "{tier}: {start} vs {entry:?}"
                );
                let n = whole.len().saturating_sub(start * ch).min(out.len());
                assert!(
                    out[..n] == whole[start * ch..start * ch + n],
                    "{tier} from {entry:?}: the whole decode from {start}"
                );
            }
        }
    }

    #[test]
    fn a_first_page_ending_where_lewton_is_ahead_is_not_priming() {
        // The same packets re-paged so the first audio page ends on a long block before a
        // short one, where lewton hands out samples ahead of the granule position: the
        // decode from the start is the same.
        let (ogg, _) = packaged_secs(6);
        let mut want = Vec::new();
        StreamDecoder::new().push(&ogg, &mut want).unwrap();
        let mut reader = StreamDecoder::new();
        reader.push(&ogg[..8192], &mut Vec::new()).unwrap();
        let (ident, setup) = (reader.ident.as_ref().unwrap(), reader.setup.as_ref().unwrap());
        let pages = segue_origin::ogg::pages(&ogg).unwrap();
        let audio: Vec<_> =
            segue_origin::ogg::packets(&ogg, &pages).unwrap().into_iter().skip(3).map(|p| p.data).collect();
        let short = 1usize << ident.blocksize_0;
        let blocks: Vec<usize> = audio
            .iter()
            .map(|p| get_decoded_sample_count(ident, setup, p).unwrap())
            .map(|span| if span > short / 2 { 1 << ident.blocksize_1 } else { short })
            .collect();
        let k = (1..blocks.len() - 1).find(|&k| blocks[k] > short && blocks[k + 1] == short).expect("a transient");
        let granule: usize = (1..=k).map(|i| blocks[i - 1] / 4 + blocks[i] / 4).sum();
        let paging = segue_origin::repage::Paging { first: granule as u64, max: granule as u64 };
        let paged = segue_origin::repage::by_time(&ogg, paging).unwrap();
        let first = segue_origin::ogg::pages(&paged).unwrap().into_iter().find(|p| p.granule != Some(0)).unwrap();
        assert_eq!(first.granule, Some(granule as u64));
        let mut got = Vec::new();
        StreamDecoder::new().push(&paged, &mut got).unwrap();
        assert!(got == want);
    }

    #[test]
    fn a_first_granule_below_the_decoded_samples_trims_the_priming() {
        // The same packets re-paged with every granule position 300 lower: the first
        // 300 samples become priming that a player must drop.
        use ogg::writing::{PacketWriteEndInfo, PacketWriter};
        let (ogg, _) = packaged();
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(&ogg));
        let mut writer = PacketWriter::new(std::io::Cursor::new(Vec::new()));
        let mut index = 0;
        while let Some(p) = reader.read_packet().unwrap() {
            let end = if p.last_in_stream() {
                PacketWriteEndInfo::EndStream
            } else if p.last_in_page() || index == 0 || index == 2 {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            let absgp = if index < 3 { 0 } else { p.absgp_page().saturating_sub(300) };
            writer.write_packet(p.data.clone().into_boxed_slice(), p.stream_serial(), end, absgp).unwrap();
            index += 1;
        }
        let primed = writer.into_inner().into_inner();
        let (mut plain, mut trimmed) = (Vec::new(), Vec::new());
        StreamDecoder::new().push(&ogg, &mut plain).unwrap();
        StreamDecoder::new().push(&primed, &mut trimmed).unwrap();
        assert_eq!(trimmed.len(), plain.len() - 300 * 2);
        assert!(trimmed[..] == plain[300 * 2..], "the same audio without its first 300 samples");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(StreamDecoder::new().push(b"RIFF1234WAVEfmt and then some more bytes", &mut out).is_err());
        let (ogg, _) = packaged();
        let mut broken = ogg[..8192].to_vec();
        broken[100] ^= 0xff; // inside the first page: its checksum no longer matches
        assert!(StreamDecoder::new().push(&broken, &mut out).is_err());
    }
}
