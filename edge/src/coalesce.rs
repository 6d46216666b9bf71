//! Request coalescing with read-while-writer: the first request for a missing slice starts
//! one upstream fetch (a *fill*) in its own task; every request for that slice, first or
//! later, reads the fill's chunks as they arrive. A client that goes away only stops
//! reading; the fill runs on for the others and lands in the cache. A failed fill fails
//! every reader visibly and leaves no entry behind, so the next request fetches afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::cache::ObjectInfo;
use crate::error::Error;

#[derive(Default)]
struct FillState {
    /// Object info learned from the response head (for fills that discover the object).
    head: Option<Result<Arc<ObjectInfo>, Error>>,
    chunks: Vec<Bytes>,
    done: Option<Result<(), Error>>,
}

pub struct Fill {
    pub started: Instant,
    /// Milliseconds after `started` of the last bytes (or head) received: a fill is judged
    /// stuck by how long it has made no progress, not by how long it has run.
    progress_ms: std::sync::atomic::AtomicU64,
    /// Written once per chunk by the fetching task, read by every waiter it wakes: a
    /// read-write lock, so a thousand woken waiters look at the new chunk side by side
    /// instead of one at a time.
    state: RwLock<FillState>,
    notify: Notify,
    /// The task fetching for this fill, aborted when a later request takes over.
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// The second slot's generation, when registered under one (`Coalescer::alias`).
    alias: std::sync::atomic::AtomicU64,
}

impl Fill {
    fn new() -> Self {
        Fill {
            started: Instant::now(),
            progress_ms: Default::default(),
            state: RwLock::new(FillState::default()),
            notify: Notify::new(),
            task: Mutex::new(None),
            alias: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, FillState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, FillState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_task(&self, task: tokio::task::AbortHandle) {
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Stop the fetching task (its socket and buffered chunks are released; its waiters
    /// are told by the task's drop guard).
    fn abort_task(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    pub fn set_alias(&self, generation: u64) {
        self.alias.store(generation, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn aliased(&self) -> Option<u64> {
        Some(self.alias.load(std::sync::atomic::Ordering::Relaxed)).filter(|g| *g != UNKNOWN)
    }

    fn progressed(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.progress_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the fill has gone without receiving anything.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.progress_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    pub fn set_head(&self, head: Result<Arc<ObjectInfo>, Error>) {
        self.progressed();
        self.lock().head = Some(head);
        self.notify.notify_waiters();
    }

    pub fn push(&self, chunk: Bytes) {
        self.progressed();
        self.lock().chunks.push(chunk);
        self.notify.notify_waiters();
    }

    pub fn finish(&self, result: Result<(), Error>) {
        let mut s = self.lock();
        if s.head.is_none() {
            if let Err(e) = &result {
                s.head = Some(Err(e.clone()));
            }
        }
        s.done = Some(result);
        drop(s);
        self.notify.notify_waiters();
    }

    pub fn is_done(&self) -> bool {
        self.read().done.is_some()
    }

    /// All chunks received so far (the writer calls this once it has them all).
    pub fn completed_bytes_now(&self) -> Option<Vec<Bytes>> {
        let s = self.read();
        (s.done.is_none()).then(|| s.chunks.clone())
    }

    /// Wait until something is known, checking `probe` under the lock each time.
    async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&FillState) -> Option<T>,
    ) -> Result<T, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the wake-up before looking, so a push between the look and the
            // wait is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = probe(&self.read()) {
                return Ok(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::UpstreamTimeout(format!("{what}: no bytes for {timeout:?}")));
            }
        }
    }

    /// Wait until the fill is done (however it ended); false when `timeout` passed first.
    pub async fn finished(&self, timeout: Duration) -> bool {
        self.wait(timeout, "fill", |s| s.done.as_ref().map(|_| ())).await.is_ok()
    }

    /// The object info, once the response head arrived. A fill of an already known object
    /// reports no head; once it is done, the caller is told to look in the cache.
    pub async fn head(&self, timeout: Duration, what: &str) -> Result<Arc<ObjectInfo>, Error> {
        self.wait(timeout, what, |s| {
            s.head.clone().or_else(|| s.done.as_ref().map(|_| Err(Error::Changed(what.to_owned()))))
        })
        .await?
    }

    /// Chunk `i`: `Ok(Some)` when it arrived, `Ok(None)` when the fill ended before it,
    /// `Err` when the fill failed or went quiet for `timeout`.
    pub async fn chunk(&self, i: usize, timeout: Duration, what: &str) -> Result<Option<Bytes>, Error> {
        self.wait(timeout, what, |s| {
            if let Some(c) = s.chunks.get(i) {
                return Some(Ok(Some(c.clone())));
            }
            match &s.done {
                Some(Ok(())) => Some(Ok(None)),
                Some(Err(e)) => Some(Err(e.clone())),
                None => None,
            }
        })
        .await?
    }
}

/// Fills in flight, by (object key, generation, slice index). Keying by generation means
/// a reader of one version of an object never reads the bytes of another's fill.
type Inflight = HashMap<(Arc<str>, u64, u64), Arc<Fill>>;

/// The generation of slots whose fill does not yet know the object version: discovery
/// (index 0) and the cache lock of an unsliced URL. Real generations are never 0.
pub const UNKNOWN: u64 = 0;

/// Independent shards, so fills of different objects never contend on one mutex.
const SHARDS: usize = 16;

pub struct Coalescer {
    shards: Vec<Mutex<Inflight>>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

pub enum Joined {
    /// This caller created the fill and must start its fetch.
    Started(Arc<Fill>),
    /// A fill was already running.
    Joined(Arc<Fill>),
    /// No fill was running and the data is in the cache after all (a fill finished
    /// between the caller's cache miss and this call): read the cache again.
    Ready,
}

impl Coalescer {
    /// The shard of an object: every slot of one object lives in one shard.
    fn lock(&self, object: &str) -> std::sync::MutexGuard<'_, Inflight> {
        use std::hash::BuildHasher;
        // A fixed-seed hasher is enough: shards only spread contention.
        let h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(object)
            as usize
            % SHARDS;
        self.shards[h].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the fill for a slot, or create it. A fill still running that has received
    /// nothing for `max_age` is replaced: exactly one caller (the one holding the lock)
    /// takes over.
    ///
    /// `cached` re-checks the cache under the lock before a new fill is created. A fill
    /// stores its data before it deregisters (under this lock), so a caller whose cache
    /// miss raced with a finishing fill sees the data here instead of fetching it again.
    pub fn join(
        &self,
        object: &Arc<str>,
        generation: u64,
        index: u64,
        max_age: Duration,
        cached: impl FnOnce() -> bool,
    ) -> Joined {
        let mut map = self.lock(object);
        let key = (object.clone(), generation, index);
        match map.get(&key) {
            Some(f) if f.idle() < max_age || f.is_done() => return Joined::Joined(f.clone()),
            Some(f) => {
                tracing::warn!(object = %object, index, idle = ?f.idle(), "fill made no progress; taking over");
                f.abort_task();
                metrics::counter!("edge_fill_takeovers_total").increment(1);
            }
            None if cached() => return Joined::Ready,
            None => {}
        }
        let f = Arc::new(Fill::new());
        map.insert(key, f.clone());
        Joined::Started(f)
    }

    /// Register a running fill under a second slot as well (a discovery fill, once it
    /// knows the version, is also that version's fill of slice 0), unless one is there.
    pub fn alias(&self, object: &Arc<str>, generation: u64, index: u64, fill: &Arc<Fill>) -> bool {
        let mut map = self.lock(object);
        match map.entry((object.clone(), generation, index)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(fill.clone());
                true
            }
        }
    }

    pub fn is_inflight(&self, object: &Arc<str>, generation: u64, index: u64) -> bool {
        self.lock(object).contains_key(&(object.clone(), generation, index))
    }

    /// Remove `fill` if it is still the registered one.
    pub fn remove(&self, object: &Arc<str>, generation: u64, index: u64, fill: &Arc<Fill>) {
        let mut map = self.lock(object);
        let key = (object.clone(), generation, index);
        if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            map.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
