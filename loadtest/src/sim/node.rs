//! One cache node of the simulated fleet (a POP or the shield): the edge's own `Cache`
//! (the foyer memory tier built exactly as the edge builds it, object records included)
//! and its sequential-reader table, driven through the same steps the edge's request
//! path takes, in the same order:
//!
//! 1. `load_object` (the memory index, or the record kept beside the slices);
//! 2. unknown object: a discovery fill of slice 0 (which stores the record when its head
//!    is in), joined by every request that comes meanwhile; known: `classify` with
//!    `tier_of` and the fills in flight (the edge's X-Cache);
//! 3. per slice of the range: `note_request`, read-ahead (when the range reaches the end
//!    of the slice: the next `read_ahead` slices, past the range only for a sequential
//!    reader, none cached or in flight), then `slice` (a hit), or join the fill in flight
//!    (coalescing), or start one;
//! 4. a fill stores its slice with `put_slice` when its last byte is in.
//!
//! Only the bytes are not real: every slice is a view of one static zero page range, so
//! the cache weighs what the edge's would while the simulator holds no audio.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use segue_edge::cache::{Cache, ObjectInfo, SliceKey, Tier};
use segue_edge::http_cache::freshness::Freshness;
use segue_edge::{Client, Streams};

/// The largest slice the simulator can stand in bytes for.
pub const MAX_SLICE: u64 = 4 << 20;
static ZEROS: [u8; MAX_SLICE as usize] = [0; MAX_SLICE as usize];

/// `len` bytes that weigh as much as a slice of audio and cost no memory.
pub fn zeros(len: u64) -> Bytes {
    Bytes::from_static(&ZEROS[..len.min(MAX_SLICE) as usize])
}

/// What the edge's rules for the audio path are.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub slice: u64,
    pub eviction: segue_edge::config::Eviction,
    pub read_ahead: u64,
    /// Requests a slice needs before the SSD tier takes it (once that tier is full).
    pub ssd_admit_after: u8,
}

/// An object of the catalog: its path (the cache key), length and the header fields the
/// origin sends with it.
pub struct Object {
    pub path: Arc<str>,
    pub len: u64,
    pub generation: u64,
    headers: HeaderMap,
    /// The record a real edge stored for it, when replaying that edge's trace.
    learned: Option<ObjectInfo>,
}

impl Object {
    pub fn new(path: &str, len: u64, etag: &str, probe: &Cache) -> Self {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        put("content-type", "audio/ogg");
        put("accept-ranges", "bytes");
        put("etag", &format!("\"{etag}\""));
        put("last-modified", "Sat, 05 Dec 2026 00:00:00 GMT");
        put("cache-control", "public, max-age=31536000, immutable");
        put("date", "Sat, 05 Dec 2026 00:00:00 GMT");
        put("content-range", &first_part(len, probe.slice_size));
        let mut o = Object { path: path.into(), len, generation: 0, headers, learned: None };
        o.generation = probe.generation_for(&o.info());
        o
    }

    /// The same object as a real edge recorded it (its header fields and freshness, as
    /// they weigh in the cache).
    pub fn learned(mut self, info: ObjectInfo, probe: &Cache) -> Self {
        self.len = info.len;
        self.learned = Some(info);
        self.generation = probe.generation_for(&self.info());
        self
    }

    fn info(&self) -> ObjectInfo {
        if let Some(info) = &self.learned {
            return info.clone();
        }
        let freshness = Freshness {
            lifetime: Duration::from_secs(365 * 86_400),
            initial_age: Duration::ZERO,
            response_time: SystemTime::now(),
            no_cache: false,
            no_stale: false,
            stale_while_revalidate: Duration::ZERO,
            // The audio path's `stale_on_error_secs` default.
            stale_if_error: Duration::from_secs(86_400),
        };
        ObjectInfo::new(&self.path, self.headers.clone(), self.len, freshness)
    }

    pub fn slices(&self, slice: u64) -> u64 {
        self.len.div_ceil(slice)
    }
}

/// The `Content-Range` of the first slice's part, as the discovery fill gets it.
fn first_part(len: u64, slice: u64) -> String {
    format!("bytes 0-{}/{len}", slice.min(len) - 1)
}

/// How the edge would have labelled a request (its `X-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    Hit,
    HitSsd,
    Coalesced,
    Miss,
}

impl Outcome {
    /// The edge's `X-Cache` value for it.
    pub fn x_cache(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT-MEM",
            Outcome::HitSsd => "HIT-SSD",
            Outcome::Coalesced => "COALESCED",
            Outcome::Miss => "MISS",
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub requests: u64,
    pub hits: u64,
    pub coalesced: u64,
    pub misses: u64,
    /// Slice reads, and those answered by the cache.
    pub slice_reads: u64,
    pub slice_hits: u64,
    /// Bytes of slice reads, and of those the cache answered.
    pub bytes: u64,
    pub hit_bytes: u64,
    /// Slice reads that joined a fill in flight.
    pub joins: u64,
    /// Upstream fetches (fills, discoveries and read-ahead included) and their bytes.
    pub fills: u64,
    pub fill_bytes: u64,
    /// Of the fills, those read-ahead started, and discoveries.
    pub read_ahead_fills: u64,
    pub discoveries: u64,
}

impl Stats {
    /// What was tallied since `before` (a snapshot of this).
    pub fn since(&self, before: &Stats) -> Stats {
        Stats {
            requests: self.requests - before.requests,
            hits: self.hits - before.hits,
            coalesced: self.coalesced - before.coalesced,
            misses: self.misses - before.misses,
            slice_reads: self.slice_reads - before.slice_reads,
            slice_hits: self.slice_hits - before.slice_hits,
            bytes: self.bytes - before.bytes,
            hit_bytes: self.hit_bytes - before.hit_bytes,
            joins: self.joins - before.joins,
            fills: self.fills - before.fills,
            fill_bytes: self.fill_bytes - before.fill_bytes,
            read_ahead_fills: self.read_ahead_fills - before.read_ahead_fills,
            discoveries: self.discoveries - before.discoveries,
        }
    }
}

/// Tallies at full scale: the catalog's scaled up by its sample, the album's reads by
/// the listeners' sample (its fills are not sampled: every POP fetches each slice once
/// however many listeners it has).
#[derive(Debug, Clone, Copy, Default)]
pub struct Full {
    pub requests: f64,
    pub hits: f64,
    pub slice_reads: f64,
    pub slice_hits: f64,
    pub bytes: f64,
    pub fill_bytes: f64,
    pub fills: f64,
    pub joins: f64,
    pub read_ahead_fills: f64,
    pub discoveries: f64,
}

impl Full {
    pub fn of(catalog: &Stats, album: &Stats, sample: f64, album_sample: f64) -> Full {
        let (c, a) = (1.0 / sample, 1.0 / album_sample);
        let f = |x: u64, k: f64| x as f64 * k;
        Full {
            requests: f(catalog.requests, c) + f(album.requests, a),
            hits: f(catalog.hits, c) + f(album.hits, a),
            slice_reads: f(catalog.slice_reads, c) + f(album.slice_reads, a),
            slice_hits: f(catalog.slice_hits, c) + f(album.slice_hits, a),
            bytes: f(catalog.bytes, c) + f(album.bytes, a),
            fill_bytes: f(catalog.fill_bytes, c) + album.fill_bytes as f64,
            fills: f(catalog.fills, c) + album.fills as f64,
            joins: f(catalog.joins, c) + f(album.joins, a),
            read_ahead_fills: f(catalog.read_ahead_fills, c) + album.read_ahead_fills as f64,
            discoveries: f(catalog.discoveries, c) + album.discoveries as f64,
        }
    }

    pub fn add(&mut self, o: &Full) {
        self.requests += o.requests;
        self.hits += o.hits;
        self.slice_reads += o.slice_reads;
        self.slice_hits += o.slice_hits;
        self.bytes += o.bytes;
        self.fill_bytes += o.fill_bytes;
        self.fills += o.fills;
        self.joins += o.joins;
        self.read_ahead_fills += o.read_ahead_fills;
        self.discoveries += o.discoveries;
    }

    /// The share of bytes sent that cost no upstream fetch.
    pub fn offload(&self) -> f64 {
        if self.bytes <= 0.0 {
            return 0.0;
        }
        (1.0 - self.fill_bytes / self.bytes).max(0.0)
    }
}

fn div(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        0.0
    } else {
        a / b
    }
}

impl Full {
    pub fn request_hit_ratio(&self) -> f64 {
        div(self.hits, self.requests)
    }

    pub fn slice_hit_ratio(&self) -> f64 {
        div(self.slice_hits, self.slice_reads)
    }
}

/// A client address for a listener or a child POP: never a socket, only the key the
/// sequential-reader table files readers under.
pub fn client(id: u64) -> Client {
    Client(IpAddr::V4(Ipv4Addr::from((id as u32) | 0x0a00_0000)))
}

/// A fill the node wants started: the slice `index` of `object`.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub object: u32,
    pub index: u64,
    pub discovery: bool,
}

pub struct Node {
    pub name: String,
    pub cache: Cache,
    streams: Streams,
    rules: Rules,
    /// Fills in flight: (object, slice) -> when their last byte is in (µs).
    inflight: HashMap<(u32, u64), u64>,
    /// Objects being discovered.
    discovering: HashMap<u32, u64>,
    /// Tallies for the catalog's objects, and for the dropped album's (objects below
    /// `album_until`), which are sampled differently.
    pub stats: Stats,
    pub album: Stats,
    pub album_until: u32,
}

/// One reader going through a range of an object, slice by slice.
#[derive(Debug, Clone)]
pub struct Reader {
    pub client: Client,
    pub object: u32,
    pub pos: u64,
    pub end: u64,
    sequential: bool,
    ahead_done: u64,
}

impl Node {
    /// A node with a memory tier of `mem_bytes` and, unless 0, an SSD tier of
    /// `ssd_bytes` (simulated: its slots, CLOCK and admission, no bytes kept).
    pub async fn new(name: String, mem_bytes: u64, ssd_bytes: u64, rules: Rules) -> Result<Node, String> {
        let ssd = (ssd_bytes > 0).then(|| segue_edge::cache::SsdOptions {
            dir: Default::default(),
            bytes: ssd_bytes,
            admit_after: rules.ssd_admit_after,
            simulated: true,
        });
        // The edge's own rule for its memory index.
        let config = segue_edge::Config {
            mem_cache_mb: mem_bytes >> 20,
            ssd_cache_mb: ssd_bytes >> 20,
            ssd_cache_dir: if ssd_bytes > 0 { "sim".into() } else { String::new() },
            ..Default::default()
        };
        let cache = Cache::new(mem_bytes, rules.slice, rules.eviction, ssd, config.index_objects(), false)
            .await
            .map_err(|e| format!("{name}: cannot build the cache: {e}"))?;
        Ok(Node {
            name,
            cache,
            streams: Streams::new(),
            rules,
            inflight: HashMap::new(),
            discovering: HashMap::new(),
            stats: Stats::default(),
            album: Stats::default(),
            album_until: 0,
        })
    }

    fn tally(&mut self, object: u32) -> &mut Stats {
        if object < self.album_until {
            &mut self.album
        } else {
            &mut self.stats
        }
    }

    fn key(&self, objects: &[Object], object: u32, index: u64) -> SliceKey {
        let o = &objects[object as usize];
        SliceKey { object: o.path.clone(), generation: o.generation, index }
    }

    /// A request for bytes `first..=last` of `object` arrives: the outcome the edge
    /// would label it with, whether it waits for the object's discovery (the reader
    /// starts once the object is known, as the edge's does), the reader that goes on to
    /// read its slices, and the fills it must start (a discovery first).
    pub async fn request(
        &mut self,
        objects: &[Object],
        client: Client,
        object: u32,
        first: u64,
        last: u64,
        wants: &mut Vec<Want>,
    ) -> (Outcome, bool, Reader) {
        self.tally(object).requests += 1;
        let o = &objects[object as usize];
        let known = self.cache.load_object(&o.path).await.is_some();
        let outcome = if known {
            self.classify(objects, object, first, last)
        } else if let std::collections::hash_map::Entry::Vacant(v) = self.discovering.entry(object) {
            v.insert(u64::MAX);
            self.inflight.insert((object, 0), u64::MAX);
            wants.push(Want { object, index: 0, discovery: true });
            self.tally(object).discoveries += 1;
            Outcome::Miss
        } else {
            Outcome::Coalesced
        };
        match outcome {
            Outcome::Hit | Outcome::HitSsd => self.tally(object).hits += 1,
            Outcome::Coalesced => self.tally(object).coalesced += 1,
            Outcome::Miss => self.tally(object).misses += 1,
        }
        let range = first..last + 1;
        let sequential = self.streams.continues(Some(client), &o.path, &range);
        (outcome, !known, Reader { client, object, pos: first, end: last + 1, sequential, ahead_done: 0 })
    }

    /// A HEAD request: the object's identity (a discovery if it is unknown), no body.
    pub async fn head(&mut self, objects: &[Object], object: u32, wants: &mut Vec<Want>) -> Outcome {
        self.tally(object).requests += 1;
        if self.cache.load_object(&objects[object as usize].path).await.is_some() {
            return Outcome::Hit;
        }
        if let std::collections::hash_map::Entry::Vacant(v) = self.discovering.entry(object) {
            v.insert(u64::MAX);
            self.inflight.insert((object, 0), u64::MAX);
            wants.push(Want { object, index: 0, discovery: true });
            self.tally(object).discoveries += 1;
            return Outcome::Miss;
        }
        Outcome::Coalesced
    }

    /// The edge's `classify` for a known object: a hit if every slice is cached,
    /// coalesced if the missing ones are all being fetched, a miss otherwise.
    fn classify(&self, objects: &[Object], object: u32, first: u64, last: u64) -> Outcome {
        let mut result = Outcome::Hit;
        for index in first / self.rules.slice..=last / self.rules.slice {
            match self.cache.tier_of(&self.key(objects, object, index)) {
                Some(Tier::Mem) => continue,
                Some(Tier::Ssd) => {
                    if result == Outcome::Hit {
                        result = Outcome::HitSsd;
                    }
                    continue;
                }
                None => {}
            }
            if self.inflight.contains_key(&(object, index)) {
                result = Outcome::Coalesced;
            } else {
                return Outcome::Miss;
            }
        }
        result
    }

    /// The reader's next slice: `Ok(None)` when it is cached, `Ok(Some(at))` when it
    /// waits for a fill in flight (done at `at`, `u64::MAX` while not yet scheduled),
    /// and the fills to start pushed on `wants`. Returns `None` past the range.
    pub async fn read(&mut self, objects: &[Object], r: &mut Reader, wants: &mut Vec<Want>) -> Option<Option<u64>> {
        if r.pos >= r.end {
            return None;
        }
        let size = self.rules.slice;
        let o = &objects[r.object as usize];
        let index = r.pos / size;
        let slice_start = index * size;
        let slice_end = (slice_start + size).min(o.len);
        let key = self.key(objects, r.object, index);
        self.cache.note_request(&key);
        if r.end >= slice_end && r.ahead_done < index + 1 {
            r.ahead_done = index + 1;
            self.read_ahead(objects, r, index, wants);
        }
        let bytes = r.end.min(slice_end) - r.pos;
        r.pos = r.end.min(slice_end);
        let t = self.tally(r.object);
        t.slice_reads += 1;
        t.bytes += bytes;
        if self.cache.slice(&key).await.is_some() {
            let t = self.tally(r.object);
            t.slice_hits += 1;
            t.hit_bytes += bytes;
            return Some(None);
        }
        if let Some(&at) = self.inflight.get(&(r.object, index)) {
            self.tally(r.object).joins += 1;
            return Some(Some(at));
        }
        self.inflight.insert((r.object, index), u64::MAX);
        wants.push(Want { object: r.object, index, discovery: false });
        Some(Some(u64::MAX))
    }

    fn read_ahead(&mut self, objects: &[Object], r: &Reader, index: u64, wants: &mut Vec<Want>) {
        let size = self.rules.slice;
        let slices = objects[r.object as usize].slices(size);
        if self.rules.read_ahead == 0 || index + 1 >= slices {
            return;
        }
        let last = if r.sequential { slices - 1 } else { r.end.div_ceil(size).min(slices) - 1 };
        for next in index + 1..=(index + self.rules.read_ahead).min(last) {
            let key = self.key(objects, r.object, next);
            if self.cache.tier_of(&key).is_some() || self.inflight.contains_key(&(r.object, next)) {
                continue;
            }
            self.inflight.insert((r.object, next), u64::MAX);
            self.cache.expect(&key);
            self.tally(r.object).read_ahead_fills += 1;
            wants.push(Want { object: r.object, index: next, discovery: false });
        }
    }

    /// A pre-warm wants the whole object: every slice counts as asked for often enough
    /// for the SSD tier (the edge's pre-warm job does the same).
    pub fn want(&self, objects: &[Object], object: u32) {
        let o = &objects[object as usize];
        let mut info = o.info();
        info.generation = o.generation;
        self.cache.want(&info);
    }

    /// A fill the node started is scheduled to be done at `at`.
    pub fn scheduled(&mut self, want: Want, at: u64) {
        self.tally(want.object).fills += 1;
        self.inflight.insert((want.object, want.index), at);
        if want.discovery {
            self.discovering.insert(want.object, at);
        }
    }

    pub fn count_fill_bytes(&mut self, object: u32, bytes: u64) {
        self.tally(object).fill_bytes += bytes;
    }

    /// When the object's discovery will be done, if one is in flight.
    pub fn discovered_at(&self, object: u32) -> Option<u64> {
        self.discovering.get(&object).copied()
    }

    /// When a fill in flight will be done (`u64::MAX` if not yet scheduled).
    pub fn fill_done_at(&self, object: u32, index: u64) -> Option<u64> {
        self.inflight.get(&(object, index)).copied()
    }

    /// A fill's last byte is in: the discovery's record first (stored when its head was
    /// in), then the slice.
    pub fn fill_done(&mut self, objects: &[Object], want: Want) {
        let o = &objects[want.object as usize];
        if want.discovery {
            self.discovering.remove(&want.object);
            self.cache.put_object(o.info());
        }
        self.inflight.remove(&(want.object, want.index));
        let size = self.rules.slice;
        let len = ((want.index * size + size).min(o.len) - want.index * size) as usize;
        let key = self.key(objects, want.object, want.index);
        self.cache.put_slice(key, 0, zeros(len as u64));
    }
}

pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
