//! The slice cache: aligned slices of objects in a memory tier (foyer, weighed in bytes),
//! optionally beside an SSD tier (`ssd::SsdStore`, slots of one file read through the page
//! cache), plus what the edge knows about each object (length, validators, caching
//! headers) learned from its first fetch.
//!
//! Slices are queued for the SSD when they are inserted (so a `kill -9` loses at most the
//! write queue). While the SSD tier still has room every slice is; once it is full only
//! those asked for `ssd_admit_after` times, so one-hit wonders stay in memory and never
//! churn the disk. A slice read from the SSD is not copied into the memory tier: the page
//! cache already holds it, and memory then keeps what the SSD does not. Object records live in a journal next to the SSD files and beside each
//! object's slices, so a restarted edge serves what its SSD holds without asking
//! upstream (warm restart).

use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use foyer::{CacheBuilder, EvictionConfig, LfuConfig, LruConfig, S3FifoConfig};
use http::{HeaderMap, HeaderValue, StatusCode};
use segue_core::conditional::Validators;
use segue_core::control::PurgeSelector;

use crate::arena::Arena;
use crate::bans::{Ban, Bans};
use crate::config::Eviction;
use crate::http_cache::cache_control::Directives;
use crate::http_cache::freshness::{to_millis, Freshness, Reuse};
use crate::http_cache::vary::{self, Selecting};
use crate::journal::{Journal, Record};
use crate::ssd::SsdStore;

/// One stored response: its header fields, freshness and body length (the body itself
/// lives in the slice store under `key` and `generation`).
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The primary cache key: path and query (token parameters removed).
    pub primary: Arc<str>,
    /// This variant's key (the primary key, plus a suffix when `Vary` selects among
    /// responses): slices and fills are keyed by it.
    pub key: Arc<str>,
    /// The key shown in store-level messages (`ObjectMeta`): the path when it is a valid
    /// object key, else a neutral name. Computed once per version, not per request.
    pub store_key: segue_core::ObjectKey,
    /// The stored status: 200 for a representation (also one learned from 206 parts);
    /// another final status (404, 301, ...) is stored and served as it came.
    pub status: StatusCode,
    /// The stored header fields (RFC 9111 §3.1), without the framing of the message they
    /// came in (`Content-Length`, and `Content-Range` of a part).
    pub headers: HeaderMap,
    /// The representation's length (a part's `Content-Range` complete length).
    pub len: u64,
    /// Validators exactly as the upstream sent them (none invented).
    pub validators: Validators,
    /// The request fields `Vary` nominated, with the values that selected this response.
    pub vary: Selecting,
    pub freshness: Freshness,
    /// Slices of this version are cached under this generation; a new version of the
    /// object gets a new one, so stale slices are never mixed in.
    pub generation: u64,
    /// Soft-purged or invalidated: the next request revalidates upstream (and keeps the
    /// slices if the object is unchanged); while every upstream fails, it may still be
    /// served stale.
    pub stale: bool,
    /// Byte ranges `[start, end)` held, when the object was learned from parts; `None`
    /// when every byte was fetched (a missing slice is then an eviction, refetched).
    pub present: Option<Vec<(u64, u64)>>,
    /// Not to be stored (`no-store`, `private`): it answers the requests that waited for
    /// it, and neither it nor its slices are kept.
    pub transient: bool,
}

impl ObjectInfo {
    /// A stored 200 of `len` bytes for the path-and-query `key` (one variant, never
    /// stale), with the header fields it came with: what a fill learns from an upstream
    /// answer, for code that stores objects without fetching them (`segue sim`).
    pub fn new(key: &str, headers: HeaderMap, len: u64, freshness: Freshness) -> Self {
        let key: Arc<str> = key.into();
        ObjectInfo {
            primary: key.clone(),
            store_key: crate::fetch::store_key(&key),
            key,
            status: StatusCode::OK,
            validators: validators_of(&headers),
            headers,
            len,
            vary: Vec::new(),
            freshness,
            generation: 0,
            stale: false,
            present: None,
            transient: false,
        }
    }

    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header(http::header::CONTENT_TYPE).unwrap_or("application/octet-stream")
    }

    pub fn surrogate_keys(&self) -> impl Iterator<Item = &str> {
        self.header("surrogate-key").unwrap_or("").split_ascii_whitespace()
    }

    /// How this stored response may answer a request now; a soft-purged or invalidated
    /// one is always validated first.
    pub fn reuse(&self, req: &Directives, now: SystemTime) -> Reuse {
        if self.stale {
            Reuse::Revalidate
        } else {
            self.freshness.reuse(req, now)
        }
    }

    /// Fresh, and not marked stale by a purge or an invalidation.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        !self.stale && self.freshness.is_fresh(now)
    }

    /// Whether `[first, end)` is held (always for a fully fetched object).
    pub fn holds(&self, first: u64, end: u64) -> bool {
        match &self.present {
            None => true,
            Some(ranges) => missing(ranges, first, end).is_none(),
        }
    }
}

/// The smallest range `[a, b)` inside `[first, end)` covering every byte `ranges` lacks.
pub fn missing(ranges: &[(u64, u64)], first: u64, end: u64) -> Option<(u64, u64)> {
    let mut lo = None;
    let mut hi = first;
    let mut pos = first;
    for &(a, b) in ranges.iter().filter(|(a, b)| *b > first && *a < end) {
        if a > pos {
            lo.get_or_insert(pos);
            hi = a.min(end);
        }
        pos = pos.max(b);
    }
    if pos < end {
        lo.get_or_insert(pos);
        hi = end;
    }
    lo.map(|l| (l, hi))
}

/// `ranges` with `[a, b)` added, merged and sorted.
pub fn add_range(ranges: &[(u64, u64)], a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = ranges.to_vec();
    all.push((a, b));
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (a, b) in all {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SliceKey {
    pub object: Arc<str>,
    pub generation: u64,
    pub index: u64,
}

impl SliceKey {
    /// The key's 128-bit xxh3, stable across runs and builds: what the SSD stores slices
    /// under (a collision is as unlikely as a random 128-bit match).
    pub fn hash128(&self) -> u128 {
        let mut b = Vec::with_capacity(self.object.len() + 17);
        b.extend_from_slice(self.object.as_bytes());
        b.push(0xff);
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.index.to_le_bytes());
        twox_hash::XxHash3_128::oneshot(&b)
    }
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Mem,
    Ssd,
}

/// Pre-warmed objects remembered for SSD admission (a few albums' worth many times over).
const WANTED: u64 = 100_000;

/// Variants kept per URL.
const MAX_VARIANTS: usize = 16;
/// Per-entry bookkeeping the cache costs beyond the bytes themselves.
const ENTRY_OVERHEAD: usize = 160;

/// Where a primary key's records are kept in the slice tiers: generation 0 is never a
/// version's (see `generation_for`), so this cannot collide with a slice.
fn record_key(primary: &Arc<str>) -> SliceKey {
    SliceKey { object: primary.clone(), generation: 0, index: u64::MAX }
}

/// A cached slice's bytes, as stored in both tiers: usually the whole slice; a slice of
/// an object learned from parts may hold a run of bytes starting `start` bytes in.
#[derive(Debug, Clone)]
pub struct Slice {
    pub start: u64,
    pub data: Bytes,
}

impl Slice {
    /// The bytes `[from, to)` (offsets within the slice), if this slice holds them all.
    pub fn get(&self, from: u64, to: u64) -> Option<Bytes> {
        let end = self.start + self.data.len() as u64;
        (from >= self.start && to <= end && from < to)
            .then(|| self.data.slice((from - self.start) as usize..(to - self.start) as usize))
    }
}

/// Where the SSD tier lives and how big it may grow.
#[derive(Debug, Clone)]
pub struct SsdOptions {
    pub dir: PathBuf,
    pub bytes: u64,
    /// Requests a slice must have had before it is written to the SSD.
    pub admit_after: u8,
    /// Keep no bytes (and no files: `dir` is unused): the tier's slots, CLOCK and
    /// admission only, for `segue sim`.
    pub simulated: bool,
}

pub struct Cache {
    /// The memory tier.
    slices: foyer::Cache<SliceKey, Slice>,
    /// Where memory-tier slice bytes live (sent with `sendfile` on plain HTTP/1.1).
    arena: Arena,
    /// Primary key -> its stored variants (one unless `Vary` selects among several).
    objects: moka::sync::Cache<Arc<str>, Arc<Vec<Arc<ObjectInfo>>>>,
    journal: Option<Journal>,
    pub slice_size: u64,
    next_generation: AtomicU64,
    /// Requests per slice (approximate, decaying), for SSD admission.
    demand: Demand,
    /// Objects (key, generation) a pre-warm asked for: their slices are admitted to the
    /// SSD whatever the demand sketch says by then (it halves as traffic flows, and a
    /// job over a whole album takes a while).
    wanted: moka::sync::Cache<(Arc<str>, u64), ()>,
    admit_after: u8,
    /// The SSD tier, when configured and usable.
    ssd: Option<SsdStore>,
    /// The SSD directory, the tier's capacity, and the free space its filesystem must keep.
    ssd_space: Option<(PathBuf, u64, u64)>,
    /// Set while that filesystem is full: new slices then stay in memory.
    ssd_full: std::sync::atomic::AtomicBool,
    /// Purge rules, for records reloaded from the SSD after a purge.
    bans: Bans,
}

impl Cache {
    /// Build the tiers. With `ssd`, the SSD index and the object journal are recovered
    /// from its directory; if the directory cannot be used the edge runs memory-only and
    /// says so in the log (a POP keeps serving with a dead disk).
    pub async fn new(
        capacity_bytes: u64,
        slice_size: u64,
        eviction: Eviction,
        ssd: Option<SsdOptions>,
        index_objects: u64,
        zero_copy: bool,
    ) -> segue_core::Result<Self> {
        let eviction: EvictionConfig = match eviction {
            Eviction::TinyLfu => LfuConfig::default().into(),
            Eviction::Lru => LruConfig::default().into(),
            Eviction::S3Fifo => S3FifoConfig::default().into(),
        };
        // Each shard holds an equal part of the cap; a small cap gets fewer shards so each
        // still holds many slices (a shard smaller than a slice would keep one regardless).
        let shards = (capacity_bytes / (slice_size * 64)).clamp(1, 8) as usize;
        let slices = CacheBuilder::new(capacity_bytes as usize)
            .with_name("edge")
            .with_shards(shards)
            .with_eviction_config(eviction)
            .with_weighter(|k: &SliceKey, v: &Slice| v.data.len() + k.object.len() + ENTRY_OVERHEAD)
            .build();
        let mut admit_after = 1;
        let mut store = None;
        let mut journal = None;
        if let Some(opts) = ssd.as_ref().filter(|o| o.simulated) {
            admit_after = opts.admit_after.max(1);
            store = Some(
                SsdStore::simulated(opts.bytes, slice_size)
                    .map_err(|source| segue_core::Error::Io { path: "simulated SSD tier".into(), source })?,
            );
        } else if let Some(opts) = &ssd {
            admit_after = opts.admit_after.max(1);
            let started = std::time::Instant::now();
            let dir = opts.dir.clone();
            let (bytes, journal_path) = (opts.bytes, opts.dir.join("objects.journal"));
            let opened = tokio::task::spawn_blocking(move || {
                let opened = SsdStore::open(&dir, bytes, slice_size, zero_copy)?;
                let journal = Journal::open(&journal_path).map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>((opened, journal))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match opened {
                Ok((opened, j)) => {
                    tracing::info!(dir = %opts.dir.display(), objects = j.recovered.len(), slices = opened.recovered,
                        took_ms = started.elapsed().as_millis() as u64, "SSD tier recovered");
                    store = Some(opened.store);
                    journal = Some(j);
                }
                Err(e) => {
                    tracing::warn!(dir = %opts.dir.display(), error = %e,
                        "SSD tier unusable; serving from memory only");
                    metrics::counter!("edge_ssd_errors_total").increment(1);
                }
            }
        }
        // The memory index is the hot part of what the tiers hold: a record it evicts is
        // reloaded from the tiers (`load`), where each object's record is kept too.
        let objects: moka::sync::Cache<Arc<str>, Arc<Vec<Arc<ObjectInfo>>>> = moka::sync::Cache::new(index_objects);
        let bans = Bans::default();
        // Generations only ever grow, across restarts too (the clock seeds them), so a slice
        // left on the SSD by an object the journal lost is never read as another's.
        let mut max_generation = to_millis(SystemTime::now()) * 1000;
        if let Some(j) = &journal {
            for ban in &j.bans {
                bans.add(ban.clone());
            }
            for info in j.recovered.iter() {
                max_generation = max_generation.max(info.generation);
                let mut variants = objects.get(&info.primary).map(|v| v.as_ref().clone()).unwrap_or_default();
                variants.push(Arc::new(info.clone()));
                objects.insert(info.primary.clone(), Arc::new(variants));
            }
        }
        // The filesystem must keep room for a few slices beyond what the tier has written.
        let ssd_space = match (&ssd, &store) {
            (Some(o), Some(_)) if !o.simulated => {
                Some((o.dir.clone(), o.bytes, (16 << 20).min(o.bytes / 4).max(slice_size * 2)))
            }
            _ => None,
        };
        // Slots for every slice the memory tier can hold, with room for slices it has
        // evicted that responses still send; beyond that, slices stay on the heap.
        let arena = if zero_copy {
            Arena::new(slice_size as usize, (capacity_bytes / slice_size) as usize * 3 / 2 + 256)
        } else {
            Arena::default()
        };
        Ok(Cache {
            slices,
            arena,
            objects,
            journal,
            slice_size,
            next_generation: AtomicU64::new(max_generation + 1),
            demand: Demand::new(),
            wanted: moka::sync::Cache::builder()
                .max_capacity(WANTED)
                .time_to_live(std::time::Duration::from_secs(2 * 3600))
                .build(),
            admit_after,
            ssd: store,
            ssd_space,
            ssd_full: std::sync::atomic::AtomicBool::new(false),
            bans,
        })
        .inspect(Cache::check_ssd_space)
    }

    /// Look at the SSD filesystem's free space. When it cannot take another block while
    /// the SSD tier still has to grow (a shared or undersized disk), stop admitting new
    /// slices to the SSD (they stay in memory) and say so; resume when space returns.
    /// Reads of what is on the SSD go on either way.
    pub fn check_ssd_space(&self) {
        let Some((dir, capacity, reserve)) = &self.ssd_space else { return };
        let avail = match rustix::fs::statvfs(dir.as_path()) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot stat the SSD directory");
                return;
            }
        };
        let allocated: u64 = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("slices."))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                    .sum()
            })
            .unwrap_or(0);
        let full = avail < *reserve && allocated + reserve < *capacity;
        let was = self.ssd_full.swap(full, Ordering::Relaxed);
        metrics::gauge!("edge_ssd_full").set(if full { 1.0 } else { 0.0 });
        if full && !was {
            tracing::warn!(dir = %dir.display(), avail, "SSD directory is full; new slices stay in memory until space returns");
        } else if was && !full {
            tracing::info!(dir = %dir.display(), avail, "SSD directory has space again; admitting slices to the SSD");
        }
    }

    /// The first stored variant under a primary key (the sliced audio path keeps one).
    pub fn object(&self, primary: &str) -> Option<Arc<ObjectInfo>> {
        self.objects.get(primary).and_then(|v| v.first().cloned())
    }

    /// The stored response for this request: the variant whose `Vary`-nominated fields
    /// match the request's (RFC 9111 §4.1).
    pub fn lookup(&self, primary: &str, req: &HeaderMap) -> Option<Arc<ObjectInfo>> {
        self.objects.get(primary).and_then(|v| selected(&v, req))
    }

    /// Record a (new) object version; returns it with its generation. A stale entry for
    /// the same version (same length and ETag) is revalidated: it keeps its generation, so
    /// its cached slices stay valid.
    pub fn put_object(&self, mut info: ObjectInfo) -> Arc<ObjectInfo> {
        let old = self.objects.get(&info.primary).and_then(|v| v.iter().find(|o| o.key == info.key).cloned());
        info.generation = match old {
            Some(old)
                if old.len == info.len
                    && old.status == info.status
                    && old.validators.etag == info.validators.etag
                    && !info.validators.etag.is_empty() =>
            {
                if info.present.is_some() {
                    info.present = old.present.clone();
                }
                old.generation
            }
            _ => self.generation_for(&info),
        };
        info.stale = false;
        self.store(info)
    }

    /// Store `info` as is (its generation kept): a 304's update, a part added.
    pub fn store(&self, info: ObjectInfo) -> Arc<ObjectInfo> {
        if let Some(j) = &self.journal {
            j.append(&Record::from(&info));
        }
        let info = Arc::new(info);
        let mut variants: Vec<Arc<ObjectInfo>> =
            self.objects.get(&info.primary).map(|v| v.as_ref().clone()).unwrap_or_default();
        variants.retain(|o| o.key != info.key);
        variants.insert(0, info.clone());
        // Bound the variants per URL (a Vary on a high-cardinality field): oldest go.
        variants.truncate(MAX_VARIANTS);
        self.write_record(&info.primary, &variants);
        self.objects.insert(info.primary.clone(), Arc::new(variants));
        info
    }

    /// The primary key's records, kept in the slice tiers beside its slices (on the SSD
    /// with them): what `load` finds once the memory index has let the key go. An empty
    /// list stands for a dropped key (a removal alone could resurface after a restart).
    fn write_record(&self, primary: &Arc<str>, variants: &[Arc<ObjectInfo>]) {
        let records: Vec<Record> = variants.iter().map(|i| Record::from(i.as_ref())).collect();
        let Ok(data) = serde_json::to_vec(&records) else { return };
        self.put_record(primary, data.into());
    }

    /// A primary key's records, in memory and (unless it is full) on the SSD.
    fn put_record(&self, primary: &Arc<str>, data: Bytes) {
        let key = record_key(primary);
        if let Some(ssd) = self.ssd.as_ref().filter(|_| !self.ssd_full.load(Ordering::Relaxed)) {
            let hash = key.hash128();
            ssd.replace(hash, 0, data.clone());
        }
        self.slices.insert(key, Slice { start: 0, data });
    }

    /// A primary key's stored variants, from the memory index or else brought back into
    /// it from the tiers. Purges made since they were stored apply now.
    async fn variants(&self, primary: &str) -> Option<Arc<Vec<Arc<ObjectInfo>>>> {
        if let Some(v) = self.objects.get(primary) {
            return Some(v);
        }
        let key: Arc<str> = primary.into();
        let (slice, _) = self.slice(&record_key(&key)).await?;
        let records = serde_json::from_slice::<Vec<Record>>(&slice.data).ok()?;
        let mut banned = false;
        let variants: Vec<Arc<ObjectInfo>> = records
            .into_iter()
            .filter_map(Record::into_info)
            .filter_map(|i| {
                let judged = self.bans.judge(i).map(Arc::new);
                banned |= judged.is_none();
                judged
            })
            .collect();
        if banned {
            self.put_record(&key, Bytes::from_static(b"[]"));
        }
        if variants.is_empty() {
            return None;
        }
        metrics::counter!("edge_index_reloads_total").increment(1);
        // A version learned meanwhile wins over the reloaded records.
        Some(self.objects.entry(key).or_insert(Arc::new(variants)).into_value())
    }

    /// [`Cache::object`], reloading the key's records from the tiers when the memory
    /// index no longer has them (purges made since they were stored apply then).
    pub async fn load_object(&self, primary: &str) -> Option<Arc<ObjectInfo>> {
        self.variants(primary).await.and_then(|v| v.first().cloned())
    }

    /// [`Cache::lookup`], reloading like [`Cache::load_object`].
    pub async fn load_lookup(&self, primary: &str, req: &HeaderMap) -> Option<Arc<ObjectInfo>> {
        self.variants(primary).await.and_then(|v| selected(&v, req))
    }

    /// A generation never used before, for a version without a strong validator or whose
    /// length is not known yet.
    pub fn new_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Record a purge rule, for objects the memory index does not hold now (`load` judges
    /// them when they come back).
    pub fn ban(&self, selector: PurgeSelector) {
        let ban = Ban::now(selector);
        if let Some(j) = &self.journal {
            j.append(&Record::ban(&ban));
        }
        self.bans.add(ban);
    }

    /// The generation a new version's slices are stored under. With a strong ETag and a
    /// known length it is derived from them (and the variant and status): the same bytes
    /// always land under the same generation, so a version whose record was lost (evicted
    /// from every tier, or a journal line lost in a crash) finds its slices again when it
    /// is learned anew. Otherwise a fresh number, never reused (the clock seeds them).
    pub fn generation_for(&self, info: &ObjectInfo) -> u64 {
        if info.validators.etag.is_empty() || info.validators.weak || info.len == 0 {
            return self.new_generation();
        }
        let hasher = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let h = hasher.hash_one((info.key.as_ref(), info.status.as_u16(), info.validators.etag.as_str(), info.len));
        // The top bit keeps derived numbers apart from counted ones (clock-seeded, < 2^63).
        h | 1 << 63
    }

    /// Forget every variant stored under a primary key (their slices become unreachable
    /// and age out).
    pub fn drop_object(&self, primary: &str) {
        if let Some(j) = &self.journal {
            j.append(&Record::dropped(primary));
        }
        self.write_record(&primary.into(), &[]);
        self.objects.invalidate(primary);
    }

    /// Forget an object because this version of it changed upstream, unless it has been
    /// replaced already (a newer version learned meanwhile stays).
    pub fn drop_version(&self, info: &ObjectInfo) {
        let current = self.objects.get(&info.primary);
        if current.is_some_and(|v| v.iter().any(|o| o.key == info.key && o.generation == info.generation)) {
            self.drop_object(&info.primary);
        }
    }

    /// Every stored variant `pred` selects.
    pub fn objects_matching(&self, pred: impl Fn(&ObjectInfo) -> bool) -> Vec<Arc<ObjectInfo>> {
        self.objects.iter().flat_map(|(_, v)| v.as_ref().clone()).filter(|i| pred(i)).collect()
    }

    /// Hard purge: the object's slices leave both tiers and the object is forgotten.
    pub fn purge(&self, info: &ObjectInfo) {
        for index in 0..info.len.div_ceil(self.slice_size) {
            let key = SliceKey { object: info.key.clone(), generation: info.generation, index };
            if let Some(ssd) = &self.ssd {
                ssd.remove(key.hash128());
            }
            self.slices.remove(&key);
        }
        self.drop_object(&info.primary);
    }

    /// Soft purge: mark the object stale; the next request revalidates it upstream.
    pub fn mark_stale(&self, info: &ObjectInfo) {
        let mut stale = info.clone();
        stale.stale = true;
        self.store(stale);
    }

    /// Invalidate (RFC 9111 §4.4): every variant under `primary` must be validated before
    /// it is used again.
    pub fn invalidate(&self, primary: &str) -> usize {
        let Some(variants) = self.objects.get(primary) else { return 0 };
        for info in variants.iter().filter(|i| !i.stale) {
            self.mark_stale(info);
        }
        variants.len()
    }

    /// Objects known (memory index).
    pub fn object_count(&self) -> u64 {
        self.objects.run_pending_tasks();
        self.objects.iter().map(|(_, v)| v.len() as u64).sum()
    }

    /// An object that is wanted whole (pre-warm): for the next two hours its slices are
    /// admitted to the SSD as they are stored or read (the job reads every one).
    pub fn want(&self, info: &ObjectInfo) {
        if self.ssd.is_some() {
            self.wanted.insert((info.key.clone(), info.generation), ());
        }
    }

    /// A slice fetched ahead of a sequential reader: it will be asked for, so it counts
    /// as asked for often enough for the SSD. Without this a read-ahead slice lives only
    /// in memory until its reader comes, and on a busy POP memory turns over faster than
    /// a listener plays a slice: `segue sim` measured read-ahead fetching more bytes
    /// than listeners read.
    pub fn expect(&self, key: &SliceKey) {
        if self.ssd.is_some() {
            let hash = key.hash128() as u64;
            for _ in 0..self.admit_after {
                self.demand.note(hash);
            }
        }
    }

    /// Count one request for a slice (SSD admission looks at these).
    pub fn note_request(&self, key: &SliceKey) {
        if self.ssd.is_some() {
            self.demand.note(key.hash128() as u64);
        }
    }

    /// The slice, from memory or else the SSD, and which tier had it.
    pub async fn slice(&self, key: &SliceKey) -> Option<(Slice, Tier)> {
        if let Some(e) = self.slices.get(key) {
            let slice = e.value().clone();
            self.promote(key, &slice);
            return Some((slice, Tier::Mem));
        }
        let (start, data) = self.ssd.as_ref()?.get(key.hash128())?;
        Some((Slice { start, data }, Tier::Ssd))
    }

    /// Whether the slice is in memory now (exact; fills insert into memory).
    pub fn in_memory(&self, key: &SliceKey) -> bool {
        self.slices.contains(key)
    }

    /// Which tier would answer, without reading: memory (exact) or the SSD index (may
    /// rarely be a false positive, on a hash collision).
    pub fn tier_of(&self, key: &SliceKey) -> Option<Tier> {
        if self.slices.contains(key) {
            Some(Tier::Mem)
        } else if self.ssd.as_ref().is_some_and(|s| s.contains(key.hash128())) {
            Some(Tier::Ssd)
        } else {
            None
        }
    }

    /// Store a slice's bytes; `start` is where they begin within the slice (0 but for a
    /// part of an object learned from parts).
    pub fn put_slice(&self, key: SliceKey, start: u64, data: Bytes) {
        let data = self.arena.adopt(data);
        let slice = Slice { start, data };
        self.promote(&key, &slice);
        self.slices.insert(key, slice);
    }

    /// An exactly-sized copy of a slice's chunks, where the cache keeps slice bytes.
    pub fn own(&self, chunks: &[Bytes]) -> Bytes {
        self.arena.copy(chunks)
    }

    /// A slice admitted to the SSD is queued for it (once: the store skips what it has).
    fn promote(&self, key: &SliceKey, slice: &Slice) {
        let Some(ssd) = self.ssd.as_ref().filter(|_| !self.ssd_full.load(Ordering::Relaxed)) else { return };
        let hash = key.hash128();
        if self.wanted.contains_key(&(key.object.clone(), key.generation)) {
            ssd.insert_wanted(hash, slice.start, slice.data.clone());
        } else if ssd.has_room() || self.demand.count(hash as u64) >= self.admit_after {
            ssd.insert(hash, slice.start, slice.data.clone());
        }
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.slices.usage() as u64
    }

    /// Bytes of slices resident in the memory arena (included in `memory_bytes`, and
    /// also those of evicted slices a response is still sending).
    pub fn arena_bytes(&self) -> u64 {
        self.arena.resident_bytes()
    }

    /// Bytes written to and read from the SSD since start.
    pub fn ssd_io(&self) -> (u64, u64) {
        self.ssd.as_ref().map_or((0, 0), SsdStore::io)
    }

    /// Bytes of the slices on the SSD now.
    pub fn ssd_bytes(&self) -> u64 {
        self.ssd.as_ref().map_or(0, SsdStore::stored_bytes)
    }

    /// Slices on the SSD now.
    pub fn ssd_slices(&self) -> usize {
        self.ssd.as_ref().map_or(0, SsdStore::slices)
    }

    pub fn has_ssd(&self) -> bool {
        self.ssd.is_some()
    }

    /// Wait for queued SSD writes and the journal to reach the disk (graceful shutdown).
    pub async fn close(&self) {
        if let Some(ssd) = &self.ssd {
            ssd.flush().await;
        }
        if let Some(j) = &self.journal {
            j.sync().await;
        }
    }
}

/// The variant whose `Vary`-nominated fields match the request's.
fn selected(variants: &[Arc<ObjectInfo>], req: &HeaderMap) -> Option<Arc<ObjectInfo>> {
    variants.iter().find(|i| vary::matches(&i.vary, req)).cloned()
}

/// Approximate request counts per slice hash: a count-min sketch of 4 rows of 4-bit-ish
/// (u8, saturating) counters, halved every `RESET` notes so popularity decays.
struct Demand {
    rows: Vec<Vec<AtomicU8>>,
    notes: AtomicU64,
}

const DEMAND_WIDTH: usize = 1 << 16;
const RESET: u64 = 10 * DEMAND_WIDTH as u64;

impl Demand {
    fn new() -> Self {
        Demand {
            rows: (0..4).map(|_| (0..DEMAND_WIDTH).map(|_| AtomicU8::new(0)).collect()).collect(),
            notes: AtomicU64::new(0),
        }
    }

    fn slot(hash: u64, row: usize) -> usize {
        (hash.rotate_left(16 * row as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize % DEMAND_WIDTH
    }

    fn note(&self, hash: u64) {
        for (r, row) in self.rows.iter().enumerate() {
            let c = &row[Self::slot(hash, r)];
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1));
        }
        if self.notes.fetch_add(1, Ordering::Relaxed) % RESET == RESET - 1 {
            for row in &self.rows {
                for c in row {
                    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v / 2));
                }
            }
        }
    }

    fn count(&self, hash: u64) -> u8 {
        self.rows.iter().enumerate().map(|(r, row)| row[Self::slot(hash, r)].load(Ordering::Relaxed)).min().unwrap_or(0)
    }
}

/// The validators in stored header fields.
pub fn validators_of(headers: &HeaderMap) -> Validators {
    let text = |n| headers.get(n).and_then(|v: &HeaderValue| v.to_str().ok());
    Validators::from_headers(text(http::header::ETAG), text(http::header::LAST_MODIFIED))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stored 200 of `len` bytes with `etag` (none when empty), fresh for a minute.
    pub(crate) fn version(key: &str, etag: &str, len: u64) -> ObjectInfo {
        let mut headers = HeaderMap::new();
        if !etag.is_empty() {
            headers.insert(http::header::ETAG, HeaderValue::from_str(etag).unwrap());
        }
        let freshness = Freshness {
            lifetime: std::time::Duration::from_secs(60),
            initial_age: std::time::Duration::ZERO,
            response_time: SystemTime::now(),
            no_cache: false,
            no_stale: false,
            stale_while_revalidate: std::time::Duration::ZERO,
            stale_if_error: std::time::Duration::ZERO,
        };
        ObjectInfo::new(key, headers, len, freshness)
    }

    /// Once the SSD tier is full, a slice asked for once stays in memory, but one of an
    /// object a pre-warm wants goes to the SSD, however long after the want it is stored,
    /// and so does one read-ahead fetched for a reader on its way.
    #[tokio::test]
    async fn wanted_and_expected_slices_are_admitted_to_a_full_ssd() {
        let slice = 1u64 << 16;
        let ssd = SsdOptions { dir: PathBuf::new(), bytes: 4 * slice, admit_after: 2, simulated: true };
        let cache = Cache::new(1 << 20, slice, Eviction::Lru, Some(ssd), 100, false).await.unwrap();
        let on_ssd = |key: &SliceKey| cache.ssd.as_ref().unwrap().contains(key.hash128());
        let key = |o: &str, index| SliceKey { object: o.into(), generation: 7, index };
        for i in 0..4 {
            cache.put_slice(key("/a/old", i), 0, Bytes::from(vec![0u8; slice as usize]));
        }
        assert!(!cache.ssd.as_ref().unwrap().has_room());
        cache.put_slice(key("/a/once", 0), 0, Bytes::from(vec![0u8; slice as usize]));
        assert!(!on_ssd(&key("/a/once", 0)), "asked for once: memory only");
        let mut info = version("/a/new", "\"n\"", 2 * slice);
        info.generation = 7;
        cache.want(&info);
        for _ in 0..3 * RESET / 2 {
            cache.demand.note(1);
        }
        cache.put_slice(key("/a/new", 1), 0, Bytes::from(vec![0u8; slice as usize]));
        assert!(on_ssd(&key("/a/new", 1)), "wanted: on the SSD");
        // A slice fetched ahead of a sequential reader is admitted as it lands.
        cache.expect(&key("/a/ahead", 3));
        cache.put_slice(key("/a/ahead", 3), 0, Bytes::from(vec![0u8; slice as usize]));
        assert!(on_ssd(&key("/a/ahead", 3)), "expected: on the SSD");
    }

    /// A strongly validated version gets the same generation in any edge, any run (so its
    /// slices are found again once its record is lost); anything else a fresh one.
    #[tokio::test]
    async fn generations_derive_from_the_strong_validator_and_length() {
        let a = Cache::new(1 << 20, 1 << 16, Eviction::Lru, None, 100, true).await.unwrap();
        let b = Cache::new(1 << 20, 1 << 16, Eviction::Lru, None, 100, true).await.unwrap();
        let v1 = version("/a/x/high.ogg", "\"v1\"", 1000);
        assert_eq!(a.generation_for(&v1), b.generation_for(&v1));
        assert_ne!(a.generation_for(&v1), 0);
        for other in [
            version("/a/x/high.ogg", "\"v2\"", 1000),
            version("/a/x/high.ogg", "\"v1\"", 1001),
            version("/a/y/high.ogg", "\"v1\"", 1000),
        ] {
            assert_ne!(a.generation_for(&v1), a.generation_for(&other));
        }
        for unvalidated in [version("/a/x/high.ogg", "W/\"v1\"", 1000), version("/a/x/high.ogg", "", 1000)] {
            let (g1, g2) = (a.generation_for(&unvalidated), a.generation_for(&unvalidated));
            assert_ne!(g1, g2, "no strong validator: never reused");
            assert!(g1 < 1 << 63 && g1 != 0);
        }
    }
}
