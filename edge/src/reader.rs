//! An `ObjectReader` over the slice cache: a byte range is served slice by slice, from
//! memory when the slice is cached, otherwise from the slice's fill as its bytes arrive
//! (starting the fill if nobody has). This is what lets the edge answer through the same
//! response code as the origin (`segue_core::respond`).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use segue_core::store::{ByteStream, ObjectMeta, ObjectReader};

use crate::cache::{ObjectInfo, SliceKey};
use crate::coalesce::{Fill, Joined};
use crate::error::Error;
use crate::{fetch, State};

pub struct EdgeReader {
    state: Arc<State>,
    info: Arc<ObjectInfo>,
    meta: ObjectMeta,
    /// The fill of the first slice, for an object whose slices are not stored.
    first: Option<Arc<Fill>>,
    /// Who is reading, to recognise a client going through the object range by range.
    client: Option<Client>,
}

/// The address a request came from (a request extension the handler sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(pub std::net::IpAddr);

/// Where each client's last range of each object ended. A range that starts there (or
/// at the object's start) is a sequential reader's, which read-ahead serves; a range
/// that starts anywhere else is a jump, and fetching past it would mostly fetch bytes
/// nobody asks for (on a random-range load, it cost a third of the upstream bytes).
///
/// A direct-mapped table of (client, object) tags and range ends, consulted on every
/// ranged request: two atomic loads and two stores, no allocation, no lock. Two pairs
/// that share a slot overwrite each other, which at worst makes one reader look like a
/// jump (no read-ahead past its range) or a jump look sequential (one slice fetched
/// ahead); both are only prefetch decisions.
pub struct Streams(Box<[(AtomicU64, AtomicU64)]>);

const STREAM_SLOTS: usize = 1 << 17;

impl Streams {
    pub fn new() -> Self {
        Streams((0..STREAM_SLOTS).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect())
    }

    /// Whether `client` reading `range` of `object` continues its last range (and note
    /// where this one ends).
    pub fn continues(&self, client: Option<Client>, object: &Arc<str>, range: &Range<u64>) -> bool {
        let Some(client) = client else { return range.start == 0 };
        // A tag of 0 marks an empty slot, so tags are never 0.
        let tag = std::hash::BuildHasher::hash_one(&TAGS, (client, object.as_ref())) | 1;
        let (t, end) = &self.0[(tag >> 40) as usize % STREAM_SLOTS];
        let follows =
            range.start == 0 || (t.load(Ordering::Relaxed) == tag && end.load(Ordering::Relaxed) == range.start);
        t.store(tag, Ordering::Relaxed);
        end.store(range.end, Ordering::Relaxed);
        follows
    }
}

/// Fixed keys: the table lives in memory only. A flood of requests can push other
/// readers' entries out, as it could from any bounded table; what that costs is
/// read-ahead, never a wrong byte.
static TAGS: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> =
    std::hash::BuildHasherDefault::new();

impl Default for Streams {
    fn default() -> Self {
        Self::new()
    }
}

impl EdgeReader {
    pub fn new(state: Arc<State>, info: Arc<ObjectInfo>) -> Self {
        let meta = ObjectMeta { key: info.store_key.clone(), len: info.len, validators: info.validators.clone() };
        EdgeReader { state, info, meta, first: None, client: None }
    }

    pub fn with_client(mut self, client: Option<Client>) -> Self {
        self.client = client;
        self
    }

    pub fn with_first_fill(mut self, first: Option<Arc<Fill>>) -> Self {
        self.first = first;
        self
    }
}

struct Cursor {
    state: Arc<State>,
    info: Arc<ObjectInfo>,
    pos: u64,
    end: u64,
    fill: Option<FillCursor>,
    first: Option<Arc<Fill>>,
    /// One past the last slice read-ahead was considered for (once per slice).
    ahead_done: u64,
    /// This range continues the client's previous one (or starts the object): slices
    /// past its end are fetched ahead too, not only those inside it.
    sequential: bool,
}

struct FillCursor {
    fill: Arc<Fill>,
    slice_start: u64,
    next_chunk: usize,
    /// Bytes of the slice delivered by the chunks read so far.
    filled: u64,
}

impl Cursor {
    /// A reader going through to the end of slice `index` will want the next ones, if
    /// they are inside its range or it reads sequentially (`Streams`): start their fills
    /// now, so a cold stream gets several slices per upstream round trip instead of one.
    /// Best effort: only while the upstream has spare capacity, never for what is cached
    /// or already being fetched.
    fn read_ahead(&self, index: u64) {
        let (state, info) = (&self.state, &self.info);
        let size = state.cache.slice_size;
        let slices = info.len.div_ceil(size);
        if state.read_ahead == 0 || info.transient || index + 1 >= slices {
            return;
        }
        let key = |index| SliceKey { object: info.key.clone(), generation: info.generation, index };
        // Within the range asked for, the reader wants the slices anyway; past it, only
        // a sequential reader will.
        let last = if self.sequential { slices - 1 } else { self.end.div_ceil(size).min(slices) - 1 };
        for next in index + 1..=(index + state.read_ahead).min(last) {
            let k = key(next);
            if state.cache.tier_of(&k).is_some() || state.coalescer.is_inflight(&info.key, info.generation, next) {
                continue;
            }
            if !state.upstreams.has_spare_capacity() {
                return;
            }
            let cached = || state.cache.in_memory(&k);
            if let Joined::Started(f) =
                state.coalescer.join(&info.key, info.generation, next, state.writer_max_age, cached)
            {
                metrics::counter!("edge_read_ahead_fills_total").increment(1);
                state.cache.expect(&k);
                fetch::spawn_fill(state, &f, info.key.clone(), info.generation, next, Some(info.clone()), None);
            }
        }
    }

    async fn next(&mut self) -> Option<Result<Bytes, segue_core::Error>> {
        let size = self.state.cache.slice_size;
        loop {
            if self.pos >= self.end {
                return None;
            }
            let index = self.pos / size;
            let slice_start = index * size;
            let slice_end = (slice_start + size).min(self.info.len);
            if let (None, 0, Some(first)) = (&self.fill, index, self.first.take()) {
                self.fill = Some(FillCursor { fill: first, slice_start, next_chunk: 0, filled: 0 });
            }
            if self.fill.is_none() {
                let key = SliceKey { object: self.info.key.clone(), generation: self.info.generation, index };
                self.state.cache.note_request(&key);
                if self.end >= slice_end && self.ahead_done < index + 1 {
                    self.ahead_done = index + 1;
                    self.read_ahead(index);
                }
                if let Some((s, _tier)) = self.state.cache.slice(&key).await {
                    let from = self.pos - slice_start;
                    let to = self.end.min(slice_end) - slice_start;
                    // A slice holding only part of what is asked (of an object learned
                    // from parts) is filled like a missing one.
                    if let Some(b) = s.get(from, to) {
                        self.pos = slice_start + to;
                        return Some(Ok(b));
                    }
                }
                let (max_age, generation) = (self.state.writer_max_age, self.info.generation);
                let cache = &self.state.cache;
                let fill = match self
                    .state
                    .coalescer
                    .join(&self.info.key, generation, index, max_age, || cache.in_memory(&key))
                {
                    Joined::Started(f) => {
                        let (k, i) = (self.info.key.clone(), Some(self.info.clone()));
                        fetch::spawn_fill(&self.state, &f, k, generation, index, i, None);
                        f
                    }
                    Joined::Joined(f) => f,
                    Joined::Ready => continue,
                };
                self.fill = Some(FillCursor { fill, slice_start, next_chunk: 0, filled: 0 });
            }
            let Some(fc) = self.fill.as_mut() else { continue };
            let what = self.info.key.to_string();
            match fc.fill.chunk(fc.next_chunk, self.state.reader_timeout, &what).await {
                Ok(Some(c)) => {
                    fc.next_chunk += 1;
                    let c_start = fc.slice_start + fc.filled;
                    fc.filled += c.len() as u64;
                    let c_end = c_start + c.len() as u64;
                    if fc.slice_start + fc.filled >= slice_end {
                        self.fill = None;
                    }
                    if c_end <= self.pos {
                        continue;
                    }
                    let from = (self.pos.max(c_start) - c_start) as usize;
                    let to = (self.end.min(c_end) - c_start) as usize;
                    self.pos = c_start + to as u64;
                    if self.pos >= self.end || c_end >= slice_end {
                        self.fill = None;
                    }
                    return Some(Ok(c.slice(from..to)));
                }
                // The fill ended before the bytes we need: never end a body early.
                Ok(None) => return Some(Err(Error::Changed(self.info.key.to_string()).into())),
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

#[async_trait]
impl ObjectReader for EdgeReader {
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    async fn read(&self, range: Range<u64>) -> segue_core::Result<ByteStream> {
        if range.start > range.end || range.end > self.info.len {
            return Err(segue_core::Error::Invalid {
                what: "range",
                detail: format!("{range:?} outside 0..{}", self.info.len),
            });
        }
        let cursor = Cursor {
            state: self.state.clone(),
            info: self.info.clone(),
            pos: range.start,
            end: range.end,
            fill: None,
            first: self.first.clone(),
            ahead_done: 0,
            sequential: self.state.streams.continues(self.client, &self.info.key, &range),
        };
        Ok(Box::pin(futures_util::stream::unfold(cursor, |mut c| async move { c.next().await.map(|item| (item, c)) })))
    }
}
