//! Reading the page structure of an Ogg stream: enough to find page starts, granule
//! positions and where the Vorbis header pages end, which is what a seek table needs.

use segue_core::seek_table::{SeekEntry, SeekTable, SEEK_TABLE_VERSION};
use segue_core::Tier;

/// One Ogg page: where it starts, how long it is, and its granule position
/// (`None` when no packet ends on the page, encoded as -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    pub len: u64,
    pub granule: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OggError {
    #[error("no Ogg page at byte {0}")]
    NoCapture(u64),
    #[error("page at byte {0} is truncated")]
    Truncated(u64),
    #[error("page at byte {0} fails its CRC")]
    BadCrc(u64),
    #[error("stream has no audio pages after its headers")]
    NoAudio,
    #[error("stream ends inside a packet")]
    UnfinishedPacket,
}

const HEADER_LEN: usize = 27;

/// Split a whole Ogg stream into pages, checking every page's CRC.
pub fn pages(data: &[u8]) -> Result<Vec<Page>, OggError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let at = pos as u64;
        let head = data.get(pos..pos + HEADER_LEN).ok_or(OggError::Truncated(at))?;
        if &head[..4] != b"OggS" {
            return Err(OggError::NoCapture(at));
        }
        let nsegs = head[26] as usize;
        let table = data.get(pos + HEADER_LEN..pos + HEADER_LEN + nsegs).ok_or(OggError::Truncated(at))?;
        let body: usize = table.iter().map(|&b| b as usize).sum();
        let len = HEADER_LEN + nsegs + body;
        let page = data.get(pos..pos + len).ok_or(OggError::Truncated(at))?;
        let stored = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
        if crc(page) != stored {
            return Err(OggError::BadCrc(at));
        }
        let g = i64::from_le_bytes(head[6..14].try_into().unwrap_or([0xff; 8]));
        out.push(Page { offset: at, len: len as u64, granule: (g >= 0).then_some(g as u64) });
        pos += len;
    }
    Ok(out)
}

/// One packet of a stream and the index of the page it ends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub data: Vec<u8>,
    pub page: usize,
}

/// The packets of a single-stream Ogg file, joined across pages, in order.
pub fn packets(data: &[u8], pages: &[Page]) -> Result<Vec<Packet>, OggError> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        let at = page.offset as usize;
        let nsegs = data[at + 26] as usize;
        let lacing = &data[at + HEADER_LEN..at + HEADER_LEN + nsegs];
        let mut body = at + HEADER_LEN + nsegs;
        for &len in lacing {
            current.extend_from_slice(&data[body..body + len as usize]);
            body += len as usize;
            // A lacing value under 255 ends a packet; 255 means it goes on.
            if len < 255 {
                out.push(Packet { data: std::mem::take(&mut current), page: index });
            }
        }
    }
    if !current.is_empty() {
        return Err(OggError::UnfinishedPacket);
    }
    Ok(out)
}

/// Header type flag of a stream's last page.
pub const END_OF_STREAM: u8 = 0x04;

/// Append one page holding whole `packets` to `out`: `granule` is the position after the
/// last of them. Panics in debug builds only if the packets need more than 255 lacing
/// values; callers size pages with [`lacing_len`].
pub fn write_page(out: &mut Vec<u8>, serial: u32, sequence: u32, flags: u8, granule: u64, packets: &[&[u8]]) {
    let start = out.len();
    let lacing: usize = packets.iter().map(|p| lacing_len(p.len())).sum();
    debug_assert!(lacing <= 255, "{lacing} lacing values on one page");
    out.extend_from_slice(b"OggS");
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(lacing as u8);
    for p in packets {
        out.extend(std::iter::repeat_n(255u8, p.len() / 255));
        out.push((p.len() % 255) as u8);
    }
    for p in packets {
        out.extend_from_slice(p);
    }
    let crc = crc(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

/// Lacing values a packet of `len` bytes takes on a page (a multiple of 255 ends with 0).
pub fn lacing_len(len: usize) -> usize {
    len / 255 + 1
}

/// Index of the first audio page: header pages are the leading pages with granule 0
/// (libvorbis ends the headers on a page boundary).
pub fn first_audio_page(pages: &[Page]) -> Result<usize, OggError> {
    pages.iter().position(|p| p.granule != Some(0)).ok_or(OggError::NoAudio)
}

/// CRC-32 of an Ogg page (polynomial 0x04c11db7, not reflected) with the CRC field as zero.
pub fn crc(page: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04c1_1db7 } else { r << 1 };
            }
            *slot = r;
        }
        t
    });
    let mut c = 0u32;
    for (i, &b) in page.iter().enumerate() {
        let b = if (22..26).contains(&i) { 0 } else { b };
        c = (c << 8) ^ table[((c >> 24) as u8 ^ b) as usize];
    }
    c
}

/// Build the seek table of a Vorbis stream: every audio page that follows a
/// granule-bearing page is an entry, keyed by the granule reached before it.
pub fn seek_table(data: &[u8], tier: Tier, sample_rate: u32) -> Result<SeekTable, OggError> {
    let pages = pages(data)?;
    let first_audio = first_audio_page(&pages)?;
    let header_bytes = pages[first_audio].offset;
    let total_samples = pages.last().and_then(|p| p.granule).unwrap_or(0);
    let mut entries = Vec::new();
    let mut reached = 0u64;
    for p in &pages[first_audio..] {
        if entries.last().is_none_or(|e: &SeekEntry| reached > e.granule) {
            entries.push(SeekEntry { granule: reached, offset: p.offset });
        }
        if let Some(g) = p.granule {
            reached = g;
        }
    }
    Ok(SeekTable {
        version: SEEK_TABLE_VERSION,
        tier,
        sample_rate,
        total_samples,
        header_bytes,
        total_bytes: data.len() as u64,
        entries,
    })
}
