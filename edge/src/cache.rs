//! The memory tier: aligned slices of objects, weighed in bytes, plus what the edge knows
//! about each object (length, validators, caching headers) learned from its first fetch.
//!
//! moka's W-TinyLFU admission keeps one-hit wonders from flushing popular slices, which
//! is what Zipf-distributed track popularity needs (docs/BENCHMARKS.md compares it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;

/// What the edge knows about one object version.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The cache key: path and query (token parameters removed).
    pub key: Arc<str>,
    /// The key shown in store-level messages (`ObjectMeta`): the path when it is a valid
    /// object key, else a neutral name. Computed once per version, not per request.
    pub store_key: segue_core::ObjectKey,
    pub len: u64,
    /// Strong validator without quotes; empty if the upstream sent none.
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: Option<HeaderValue>,
    pub cache_control: Option<HeaderValue>,
    pub surrogate_key: Option<HeaderValue>,
    /// Slices of this version are cached under this generation; a new version of the
    /// object gets a new one, so stale slices are never mixed in.
    pub generation: u64,
    pub fetched_at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SliceKey {
    pub object: Arc<str>,
    pub generation: u64,
    pub index: u64,
}

/// Per-entry bookkeeping moka and the maps cost beyond the bytes themselves.
const ENTRY_OVERHEAD: u64 = 160;

pub struct Cache {
    slices: moka::sync::Cache<SliceKey, Bytes>,
    objects: moka::sync::Cache<Arc<str>, Arc<ObjectInfo>>,
    pub slice_size: u64,
    next_generation: AtomicU64,
}

impl Cache {
    pub fn new(capacity_bytes: u64, slice_size: u64, eviction: crate::config::Eviction) -> Self {
        let policy = match eviction {
            crate::config::Eviction::TinyLfu => moka::policy::EvictionPolicy::tiny_lfu(),
            crate::config::Eviction::Lru => moka::policy::EvictionPolicy::lru(),
        };
        Cache {
            slices: moka::sync::Cache::builder()
                .max_capacity(capacity_bytes)
                .eviction_policy(policy)
                .weigher(|k: &SliceKey, v: &Bytes| {
                    (v.len() as u64 + k.object.len() as u64 + ENTRY_OVERHEAD).min(u64::from(u32::MAX)) as u32
                })
                .build(),
            // Metadata is small; bounded by count.
            objects: moka::sync::Cache::new(200_000),
            slice_size,
            next_generation: AtomicU64::new(1),
        }
    }

    pub fn object(&self, key: &str) -> Option<Arc<ObjectInfo>> {
        self.objects.get(key)
    }

    /// Record a (new) object version; returns it with its generation.
    pub fn put_object(&self, mut info: ObjectInfo) -> Arc<ObjectInfo> {
        info.generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(info);
        self.objects.insert(info.key.clone(), info.clone());
        info
    }

    /// Forget an object version (its slices become unreachable and age out).
    pub fn drop_object(&self, key: &str) {
        self.objects.invalidate(key);
    }

    pub fn slice(&self, key: &SliceKey) -> Option<Bytes> {
        self.slices.get(key)
    }

    pub fn contains_slice(&self, key: &SliceKey) -> bool {
        self.slices.contains_key(key)
    }

    pub fn put_slice(&self, key: SliceKey, data: Bytes) {
        self.slices.insert(key, data);
    }

    /// Bytes held (moka's weighted size, after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        self.slices.run_pending_tasks();
        self.slices.weighted_size()
    }

    pub fn slice_count(&self) -> u64 {
        self.slices.entry_count()
    }
}
