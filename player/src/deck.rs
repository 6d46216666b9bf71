//! A deck: one track loading in the background (stream URL, seek table, audio by Range,
//! decoded as it arrives) while the engine plays what has been decoded so far. The
//! engine asks a deck for frames; it waits only when they have not arrived yet.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{Catalog, StreamInfo};
use crate::convert::Convert;
use crate::decode::{StreamDecoder, PREROLL};
use crate::fetch::{Download, Fetcher};
use crate::Error;

/// What to load: a track of the queue at a tier, from a position.
#[derive(Clone)]
pub(crate) struct Source {
    pub catalog: Catalog,
    pub fetcher: Fetcher,
    pub tier: String,
    pub country: Option<String>,
}

/// The first bytes of a track, prefetched, and the stream answer they came from.
pub(crate) type Head = (StreamInfo, Bytes);

/// What the loader sends the deck.
enum Event {
    /// The format, and the exact frames the deck will hold.
    Start {
        rate: u32,
        channels: u16,
        total: u64,
    },
    Pcm(Vec<i16>),
    /// The stream answer: its session (when it has one) and tier.
    Stream {
        session: Option<String>,
        tier: String,
        url: String,
    },
    /// What a seek within this track can reuse.
    Known(Known),
    End,
    Failed(Error),
}

/// What a deck learned that a seek within its track reuses instead of fetching again:
/// the stream answer, the seek table and the header pages.
#[derive(Clone)]
pub(crate) struct Known {
    info: StreamInfo,
    table: std::sync::Arc<segue_core::seek_table::SeekTable>,
    header: Bytes,
}

/// Where a deck starts from.
enum Start {
    /// A prefetched head (the task fetching it), or nothing.
    Head(Option<JoinHandle<Option<Head>>>),
    /// What a deck of the same track knew.
    Known(Option<Known>),
}

pub(crate) struct Deck {
    pub track: String,
    events: mpsc::UnboundedReceiver<Event>,
    loader: JoinHandle<()>,
    /// Sample rate and channels, once known.
    pub format: Option<(u32, u16)>,
    /// Exact frames of the track from where it starts (the seek table's count, less
    /// the seek), once known.
    pub total: u64,
    /// Decoded so far, interleaved, never past `total`.
    pub samples: Vec<i16>,
    /// The stream session and tier (from the stream answer), once known.
    pub session: Option<String>,
    pub tier: String,
    /// The object's URL (the stream answer's first).
    pub url: Option<String>,
    /// Its stream answer, seek table and header pages, once known.
    pub known: Option<Known>,
    failed: Option<Error>,
}

impl Drop for Deck {
    fn drop(&mut self) {
        self.loader.abort();
    }
}

impl Deck {
    /// Start loading `track` at `src.tier` from `start_ms` in, from its prefetched head
    /// when there is one (the task fetching it, with the stream answer it used),
    /// converted to `format` (rate, channels) when given: the format the queue plays at.
    pub fn open(
        src: &Source,
        track: &str,
        head: Option<JoinHandle<Option<Head>>>,
        start_ms: u64,
        format: Option<(u32, u16)>,
    ) -> Deck {
        Deck::start(src, track, Start::Head(head), start_ms, format)
    }

    /// Seek within this deck's track: a new deck from `start_ms` in that reuses what this
    /// one knows (when it knows it) and fetches only the bytes from the seek entry on.
    pub fn seek(&self, src: &Source, start_ms: u64, format: Option<(u32, u16)>) -> Deck {
        Deck::start(src, &self.track, Start::Known(self.known.clone()), start_ms, format)
    }

    fn start(src: &Source, track: &str, from: Start, start_ms: u64, format: Option<(u32, u16)>) -> Deck {
        let (tx, events) = mpsc::unbounded_channel();
        let tier = src.tier.clone();
        let (src, name) = (src.clone(), track.to_owned());
        let loader = tokio::spawn(async move {
            let mut out = Out { tx, format, convert: None, keep: None };
            let loaded = match from {
                Start::Known(Some(k)) => {
                    let (session, tier, url) = (k.info.session.clone(), k.info.tier.clone(), k.info.url.clone());
                    let _ = out.tx.send(Event::Stream { session, tier, url });
                    let _ = out.tx.send(Event::Known(k.clone()));
                    seek(&src, &k.info, &k.table, Some(k.header), start_ms, &mut out).await
                }
                Start::Known(None) => load(&src, &name, None, start_ms, &mut out).await,
                Start::Head(head) => {
                    let head = match head {
                        Some(h) => h.await.ok().flatten(),
                        None => None,
                    };
                    load(&src, &name, head, start_ms, &mut out).await
                }
            };
            if let Err(e) = loaded {
                let _ = out.tx.send(Event::Failed(e));
            }
        });
        Deck {
            track: track.to_owned(),
            events,
            loader,
            format: None,
            total: 0,
            samples: Vec::new(),
            session: None,
            tier,
            url: None,
            known: None,
            failed: None,
        }
    }

    fn channels(&self) -> usize {
        self.format.map_or(1, |(_, c)| usize::from(c.max(1)))
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        (self.samples.len() / self.channels()) as u64
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Start { rate, channels, total } => {
                self.format = Some((rate, channels));
                self.total = total;
            }
            Event::Pcm(pcm) => {
                let room = (self.total as usize * self.channels()).saturating_sub(self.samples.len());
                self.samples.extend_from_slice(&pcm[..pcm.len().min(room)]);
            }
            Event::End => {
                if self.frames() < self.total {
                    self.failed = Some(Error::Decode(format!(
                        "{}: the stream decodes to {} samples per channel, the seek table promises {}",
                        self.track,
                        self.frames(),
                        self.total
                    )));
                }
            }
            Event::Known(k) => self.known = Some(k),
            Event::Stream { session, tier, url } => (self.session, self.tier, self.url) = (session, tier, Some(url)),
            Event::Failed(e) => self.failed = Some(e),
        }
    }

    /// Take what the loader has sent, without waiting.
    fn poll(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.apply(event);
        }
    }

    /// Whether `frames` (or the whole track, when shorter) are decoded.
    fn holds(&self, frames: u64) -> bool {
        self.format.is_some() && self.frames() >= frames.min(self.total)
    }

    /// Whether `frames` (or the whole track, when shorter) can be played without
    /// waiting; also true when the load failed, so the caller's `want` reports it.
    pub fn ready(&mut self, frames: u64) -> bool {
        self.poll();
        self.failed.is_some() || self.holds(frames)
    }

    /// Wait until `frames` (or the whole track, when shorter) are decoded.
    pub async fn want(&mut self, frames: u64) -> Result<(), Error> {
        loop {
            if let Some(e) = self.failed.take() {
                self.failed = Some(Error::Decode(format!("{}: loading failed", self.track)));
                return Err(e);
            }
            if self.holds(frames) {
                return Ok(());
            }
            match self.events.recv().await {
                Some(event) => self.apply(event),
                None => self.failed = Some(Error::Decode(format!("{}: its loader stopped", self.track))),
            }
        }
    }

    /// `want`, for a deck joining a queue that plays at `format`.
    pub async fn want_as(&mut self, frames: u64, format: (u32, u16)) -> Result<(), Error> {
        self.want(frames).await?;
        match self.format {
            Some(f) if f == format => Ok(()),
            _ => {
                let ((r, c), (rate, channels)) = (self.format.unwrap_or_default(), format);
                Err(Error::Decode(format!(
                    "{}: {r} Hz x{c} after {rate} Hz x{channels}: a queue plays at one format",
                    self.track
                )))
            }
        }
    }
}

/// Where a loader sends what it decodes: to the deck, converted to the queue's format
/// when the track's differs (a low-tier track in a queue of high ones).
struct Out {
    tx: mpsc::UnboundedSender<Event>,
    /// The queue's format, when the deck must play at it.
    format: Option<(u32, u16)>,
    convert: Option<Convert>,
    /// The object's bytes so far, while the on-device cache may want it.
    keep: Option<Keep>,
}

/// A whole object being gathered for the on-device cache as it streams.
struct Keep {
    cache: std::sync::Arc<crate::cache::Cache>,
    fetcher: crate::fetch::Fetcher,
    url: String,
    table: Bytes,
    total: u64,
    bytes: Vec<u8>,
}

impl Out {
    /// The next bytes of the object arrived: once it is whole, offer it to the cache
    /// (before its last samples go to the deck, so a session ending at once still
    /// waits for the write).
    fn kept(&mut self, bytes: &[u8]) {
        let Some(keep) = self.keep.as_mut() else { return };
        keep.bytes.extend_from_slice(bytes);
        if (keep.bytes.len() as u64) < keep.total {
            return;
        }
        if let Some(keep) = self.keep.take().filter(|k| k.bytes.len() as u64 == k.total) {
            match keep.fetcher.etag(&keep.url) {
                Some(etag) => keep.cache.offer(&keep.url, keep.bytes.into(), keep.table, etag),
                None => tracing::debug!(url = keep.url, "not cached: no single strong ETag"),
            }
        }
    }

    /// The track's format and exact frames are known; false once the deck is gone.
    fn start(&mut self, rate: u32, channels: u16, total: u64) -> Result<bool, Error> {
        let (rate, channels, total) = match self.format {
            Some(to) if to != (rate, channels) => {
                let convert = Convert::new((rate, channels), to, total)?;
                let frames = convert.frames();
                self.convert = Some(convert);
                (to.0, to.1, frames)
            }
            _ => (rate, channels, total),
        };
        Ok(self.tx.send(Event::Start { rate, channels, total }).is_ok())
    }

    /// Send decoded samples on (false once the deck is gone: stop loading).
    fn send(&mut self, pcm: &mut Vec<i16>) -> Result<bool, Error> {
        if let Some(c) = self.convert.as_mut() {
            let mut out = Vec::with_capacity(pcm.len() * 2);
            c.push(pcm, &mut out)?;
            *pcm = out;
        }
        Ok(pcm.is_empty() || self.tx.send(Event::Pcm(std::mem::take(pcm))).is_ok())
    }

    /// The track has been decoded to its end.
    fn end(&mut self) -> Result<(), Error> {
        if let Some(c) = self.convert.as_mut() {
            let mut tail = Vec::new();
            c.finish(&mut tail)?;
            let _ = self.tx.send(Event::Pcm(tail));
        }
        let _ = self.tx.send(Event::End);
        Ok(())
    }
}

/// Bytes decoded at a time: a big network read is decoded (and its samples sent) in
/// slices, so the first audio never waits for the decoding of a whole read.
const SLICE: usize = 16 << 10;

/// Push slices of `bytes` until `enough`: the bytes not pushed yet.
fn push_until(
    decoder: &mut StreamDecoder,
    bytes: Bytes,
    pcm: &mut Vec<i16>,
    enough: impl Fn(&StreamDecoder) -> bool,
) -> Result<Bytes, Error> {
    let mut at = 0;
    while at < bytes.len() && !enough(decoder) {
        let end = (at + SLICE).min(bytes.len());
        decoder.push(&bytes[at..end], pcm)?;
        at = end;
    }
    Ok(bytes.slice(at..))
}

/// Push `bytes` through `decoder` a slice at a time, sending the samples of each; false
/// once the deck is gone. It yields between slices: a read of 256 KiB is over ten seconds
/// of audio to decode, and a deck dropped meanwhile (a seek, a skip) stops at the next
/// slice instead of holding a worker thread the new deck needs.
async fn feed(decoder: &mut StreamDecoder, bytes: &[u8], out: &mut Out) -> Result<bool, Error> {
    let mut pcm = Vec::new();
    for slice in bytes.chunks(SLICE) {
        decoder.push(slice, &mut pcm)?;
        if !out.send(&mut pcm)? {
            return Ok(false);
        }
        tokio::task::yield_now().await;
    }
    Ok(true)
}

/// Decode `rest` (received, not pushed yet), then every chunk of `download`, to the deck.
async fn stream(
    download: Option<Download>,
    decoder: &mut StreamDecoder,
    rest: Bytes,
    out: &mut Out,
    track: &str,
) -> Result<(), Error> {
    let bad = |e: Error| Error::Decode(format!("{track}: {e}"));
    if !feed(decoder, &rest, out).await.map_err(bad)? {
        return Ok(());
    }
    if let Some(mut download) = download {
        while let Some(chunk) = download.next().await? {
            out.kept(&chunk);
            if !feed(decoder, &chunk, out).await.map_err(bad)? {
                return Ok(());
            }
        }
    }
    out.end().map_err(bad)
}

async fn load(src: &Source, track: &str, head: Option<Head>, start_ms: u64, out: &mut Out) -> Result<(), Error> {
    let (info, head) = match head {
        Some((info, bytes)) => (info, Some(bytes)),
        None => (src.catalog.stream(track, &src.tier, src.country.as_deref()).await?, None),
    };
    let _ =
        out.tx.send(Event::Stream { session: info.session.clone(), tier: info.tier.clone(), url: info.url.clone() });
    let table = async {
        let bytes = src.fetcher.get(&info.seek_table_url, info.seek_table_fallback().as_deref(), None).await?;
        let table =
            segue_core::seek_table::SeekTable::from_json(&bytes).map_err(|e| Error::Decode(format!("{track}: {e}")))?;
        Ok::<_, Error>((table, bytes))
    };
    if start_ms > 0 {
        let table = table.await?.0;
        return seek(src, &info, &table, None, start_ms, out).await;
    }
    let fallback = info.fallback_url.as_deref();
    let mut decoder = StreamDecoder::new();
    let mut pcm = Vec::new();
    let has_format = |d: &StreamDecoder| d.format().is_some();
    // The seek table (for the exact length) and the first audio at once: the first
    // sample waits for one round trip, not two. The object's bytes are kept in order for
    // the on-device cache.
    let mut kept: Vec<u8> = Vec::new();
    let kept_ref = &mut kept;
    let first_audio = async {
        let kept = kept_ref;
        if let Some(head) = &head {
            return Ok((None, push_until(&mut decoder, head.clone(), &mut pcm, has_format)?));
        }
        let mut download = src.fetcher.download(&info.url, fallback, 0, None);
        let mut rest = Bytes::new();
        while !has_format(&decoder) {
            match download.next().await? {
                Some(chunk) => {
                    kept.extend_from_slice(&chunk);
                    rest = push_until(&mut decoder, chunk, &mut pcm, has_format)?;
                }
                None => break,
            }
        }
        Ok::<_, Error>((Some(download), rest))
    };
    let (table, first) = tokio::join!(table, first_audio);
    let ((table, table_bytes), (download, rest)) = (table?, first.map_err(|e| Error::Decode(format!("{track}: {e}")))?);
    let (rate, channels) = decoder.format().ok_or_else(|| Error::Decode(format!("{track}: no Vorbis headers")))?;
    let first = head.as_deref().unwrap_or(&kept);
    if let Some(header) = first.get(..table.header_bytes as usize) {
        let known = Known { info: info.clone(), table: table.clone().into(), header: Bytes::copy_from_slice(header) };
        let _ = out.tx.send(Event::Known(known));
    }
    if let Some(cache) = src.fetcher.cache.as_ref().filter(|c| !c.holds(&info.url)) {
        out.keep = Some(Keep {
            cache: cache.clone(),
            fetcher: src.fetcher.clone(),
            url: info.url.clone(),
            table: table_bytes,
            total: table.total_bytes,
            bytes: Vec::new(),
        });
        out.kept(head.as_deref().unwrap_or(&kept));
    }
    if !out.start(rate, channels, table.total_samples)? || !out.send(&mut pcm)? {
        return Ok(());
    }
    let have = head.as_ref().map_or(0, |h| h.len() as u64);
    let download = match download {
        Some(d) => Some(d),
        None if have >= table.total_bytes => None,
        None => Some(src.fetcher.download(&info.url, fallback, have, Some(table.total_bytes - 1))),
    };
    stream(download, &mut decoder, rest, out, track).await
}

/// Play `info` from `start_ms` in: the header pages, then the bytes from the seek entry
/// before it (never the bytes before that entry), discarding the decode up to the exact
/// sample. An entry too late to reach it (a long block) makes it step back one.
async fn seek(
    src: &Source,
    info: &StreamInfo,
    table: &segue_core::seek_table::SeekTable,
    header: Option<Bytes>,
    start_ms: u64,
    out: &mut Out,
) -> Result<(), Error> {
    let target = start_ms.saturating_mul(u64::from(table.sample_rate)) / 1000;
    let track = &info.track_id;
    if target >= table.total_samples {
        return Err(Error::Decode(format!(
            "{track}: a seek to {start_ms} ms is past the end ({} ms)",
            table.total_samples * 1000 / u64::from(table.sample_rate.max(1))
        )));
    }
    let fallback = info.fallback_url.as_deref();
    let header = match header {
        Some(h) => h,
        None => {
            let header = src.fetcher.get(&info.url, fallback, Some((0, table.header_bytes - 1))).await?;
            let known = Known { info: info.clone(), table: table.clone().into(), header: header.clone() };
            let _ = out.tx.send(Event::Known(known));
            header
        }
    };
    let bad = |e: Error| Error::Decode(format!("{track}: {e}"));
    let mut from = target.saturating_sub(PREROLL);
    loop {
        let offset = table.entry_for(from).map_or(table.header_bytes, |e| e.offset);
        let mut decoder = StreamDecoder::new();
        let mut pcm = Vec::new();
        decoder.push(&header, &mut pcm).map_err(bad)?;
        let (rate, channels) = decoder.format().ok_or_else(|| bad(Error::Decode("no Vorbis headers".into())))?;
        decoder.seeked(offset);
        let mut download = src.fetcher.download(&info.url, fallback, offset, Some(table.total_bytes - 1));
        // Decode until the position is known and past the target: the first page end
        // after the entry can come before the target (pages hold up to a second).
        let reached = |d: &StreamDecoder| d.position().is_some_and(|p| p > target);
        let mut rest = Bytes::new();
        while !reached(&decoder) {
            match download.next().await? {
                Some(chunk) => rest = push_until(&mut decoder, chunk, &mut pcm, reached).map_err(bad)?,
                None => break,
            }
        }
        // The stream ended first (a seek into the last page): an entry earlier.
        let start = decoder.start().unwrap_or(u64::MAX);
        if start > target {
            if offset == table.header_bytes || from == 0 {
                return Err(bad(Error::Decode(format!("no seek entry reaches sample {target}"))));
            }
            from = from.saturating_sub(PREROLL);
            continue;
        }
        let skip = ((target - start) as usize * usize::from(channels)).min(pcm.len());
        pcm.drain(..skip);
        if !out.start(rate, channels, table.total_samples - target)? || !out.send(&mut pcm)? {
            return Ok(());
        }
        return stream(Some(download), &mut decoder, rest, out, track).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deck fed by hand instead of a loader.
    fn fed(events: Vec<Event>) -> Deck {
        let (tx, rx) = mpsc::unbounded_channel();
        for e in events {
            tx.send(e).unwrap();
        }
        Deck {
            track: "t".into(),
            events: rx,
            loader: tokio::spawn(async {}),
            format: None,
            total: 0,
            samples: Vec::new(),
            session: None,
            tier: "high".into(),
            url: None,
            known: None,
            failed: None,
        }
    }

    #[tokio::test]
    async fn a_stream_shorter_than_the_seek_table_is_an_error() {
        let start = Event::Start { rate: 44_100, channels: 2, total: 100 };
        let mut short = fed(vec![start, Event::Pcm(vec![0; 50 * 2]), Event::End]);
        let err = short.want(100).await.unwrap_err().to_string();
        assert!(err.contains("decodes to 50 samples per channel, the seek table promises 100"), "{err}");

        let start = Event::Start { rate: 44_100, channels: 2, total: 100 };
        let mut long = fed(vec![start, Event::Pcm(vec![1; 150 * 2]), Event::End]);
        long.want(100).await.unwrap();
        assert_eq!(long.frames(), 100, "trimmed to the seek table's count");
        assert!(long.want_as(100, (48_000, 2)).await.is_err(), "another format cannot join the queue");
    }
}
