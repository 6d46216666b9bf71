//! The SSD tier: slices in fixed-size slots of one file, read back as views of a
//! read-only shared mapping of that file.
//!
//! A slice read from the SSD is then bytes in the kernel's page cache, not a copy: plain
//! HTTP/1.1 sends it with `sendfile` straight from the file (`segue_core::zerocopy`), and
//! TLS, HTTP/2 and HTTP/3 encrypt from the mapping. The page cache is the memory above
//! the SSD, as it is for nginx; the edge's own memory tier keeps what the SSD does not.
//!
//! Layout, in the SSD directory:
//! - `slices.dat`: slot `i` at `i * stride` (the slice size rounded up to a page), sparse.
//! - `slices.idx`: a 4 KiB superblock (layout version, stride, slot count), then a
//!   64-byte header per slot: the slice key's 128-bit hash, where its bytes start within
//!   the slice, their length, their xxh3 checksum, a write sequence number, and a check
//!   of the header itself.
//!
//! One writer thread writes the data, then the header; the index (memory) learns the slot
//! only after both. Eviction is CLOCK over slots: a slot read since the hand last passed
//! gets a second chance, and a slot some response is still sending from (a live view) is
//! never reused. A reused slot's pages are punched out first, so bytes the kernel still
//! holds for a `sendfile` keep their content and the new slice lands in fresh pages.
//!
//! A `kill -9` loses nothing written (the page cache has it); a power cut may leave data
//! and header out of step, so every slot recovered at start is checked against its
//! checksum on its first read and dropped if it does not match.

#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use segue_core::zerocopy::{punch_hole, write_all_at, Mapping};

const PAGE: usize = 4096;
const SUPERBLOCK: u64 = PAGE as u64;
const HEADER: usize = 64;
const MAGIC: &[u8; 8] = b"SEGUESSD";
const VERSION: u32 = 1;
const HEADER_MAGIC: u32 = 0x5347_5331;
/// Writes queued beyond this are dropped (the slice stays in memory, and a later hit
/// queues it again): a slow disk must not hold up responses or grow memory.
const QUEUE: usize = 256;

/// Most slots the CLOCK hand passes for one slice written.
const SWEEP: u32 = 4096;

/// A slot holds a slice readable through the index.
const USED: u8 = 1;
/// Read since the CLOCK hand last passed.
const REFERENCED: u8 = 2;
/// Its checksum was checked (or it was written by this process).
const VERIFIED: u8 = 4;
/// Taken by the writer for a slice being written.
const WRITING: u8 = 8;

/// What memory holds per slot (32 bytes; the checksum stays in the header on disk and is
/// read back for the one check a recovered slot gets).
#[derive(Clone, Copy, Default)]
struct Meta {
    hash: u128,
    start: u32,
    len: u32,
    pins: u32,
    flags: u8,
}

/// The index's keys are xxh3 hashes already: hashing them again is wasted work.
#[derive(Default, Clone, Copy)]
struct KeyHash;

#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else in anyway.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

/// The index key of a slice key hash.
fn short(hash: u128) -> u64 {
    hash as u64
}

struct State {
    /// Key hash (its low 64 bits) -> slot; the slot's `Meta` has all 128 to confirm.
    index: HashMap<u64, u32, KeyHash>,
    meta: Vec<Meta>,
    /// Slots with no slice and no view (`flags == 0 && pins == 0`), each exactly once.
    free: Vec<u32>,
    /// Slices queued for writing, so a popular one is queued once.
    pending: HashSet<u128, KeyHash>,
    hand: u32,
    seq: u64,
}

/// The files a store keeps its slices in.
struct Device {
    /// Before `data`: dropped (and unregistered) first, once no view is left.
    mapping: Mapping,
    data: OwnedFd,
    headers: OwnedFd,
}

struct Inner {
    /// `None` for a simulated store (`segue sim`): the same slots, index and CLOCK, with
    /// no bytes kept; reads give zeros of the slice's length.
    device: Option<Device>,
    /// A simulated store's reads: zeros, one stride long.
    zeros: Bytes,
    stride: usize,
    state: Mutex<State>,
    free_slots: AtomicU64,
    written: AtomicU64,
    read: AtomicU64,
}

enum Op {
    Write {
        hash: u128,
        start: u32,
        data: Bytes,
        /// Start with a second chance (a pre-warmed slice).
        referenced: bool,
    },
    /// The slot's slice was removed: clear its header unless the slot holds another now.
    Clear {
        slot: u32,
    },
    Flush(std::sync::mpsc::Sender<()>),
}

/// The SSD slice store; cheap to share (`Arc` inside).
pub struct SsdStore {
    inner: Arc<Inner>,
    /// The writer thread's queue; `None` for a simulated store, which writes (its index)
    /// at once, so a simulation is deterministic.
    tx: Option<SyncSender<Op>>,
}

/// What `open` found.
pub struct Opened {
    pub store: SsdStore,
    /// Slices recovered from an earlier run.
    pub recovered: usize,
}

/// A slice's bytes in the SSD mapping; the last view dropping unpins the slot.
struct View {
    inner: Arc<Inner>,
    slot: u32,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the slot lies inside the mapping; a pinned slot is never written (the
        // writer only takes unpinned ones).
        match &self.inner.device {
            Some(d) => unsafe { d.mapping.bytes(self.slot as usize * self.inner.stride, self.len) },
            None => &[],
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        let m = &mut st.meta[self.slot as usize];
        m.pins -= 1;
        if m.pins == 0 && m.flags == 0 {
            st.free.push(self.slot);
            self.inner.free_slots.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl SsdStore {
    /// Open (or create) the store in `dir` for `bytes` of slices of `slice_size`. A store
    /// left with another layout (slice size or capacity changed) is started empty.
    pub fn open(dir: &Path, bytes: u64, slice_size: u64, zero_copy: bool) -> std::io::Result<Opened> {
        let stride = (slice_size as usize).next_multiple_of(PAGE);
        let slots = u32::try_from(bytes / stride as u64).unwrap_or(u32::MAX);
        if slots == 0 {
            return Err(std::io::Error::other("the SSD cap is smaller than one slice"));
        }
        std::fs::create_dir_all(dir)?;
        remove_foyer_files(dir);
        let open = |name: &str| -> std::io::Result<OwnedFd> {
            let f =
                std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(name))?;
            Ok(OwnedFd::from(f))
        };
        let (data, headers) = (open("slices.dat")?, open("slices.idx")?);
        let mut superblock = [0u8; PAGE];
        superblock[..8].copy_from_slice(MAGIC);
        superblock[8..12].copy_from_slice(&VERSION.to_le_bytes());
        superblock[12..16].copy_from_slice(&slots.to_le_bytes());
        superblock[16..24].copy_from_slice(&(stride as u64).to_le_bytes());
        let mut found = [0u8; PAGE];
        let n = rustix::io::pread(&headers, &mut found, 0)?;
        if n < PAGE || found != superblock {
            if n > 0 {
                tracing::warn!(dir = %dir.display(), "SSD store has another layout (slice size or cap changed); starting it empty");
            }
            rustix::fs::ftruncate(&headers, 0)?;
            rustix::fs::ftruncate(&data, 0)?;
            write_all_at(&headers, &mut [IoSlice::new(&superblock)], 0)?;
        }
        rustix::fs::ftruncate(&headers, SUPERBLOCK + slots as u64 * HEADER as u64)?;
        let len = stride * slots as usize;
        rustix::fs::ftruncate(&data, len as u64)?;

        let mut st = State {
            index: HashMap::default(),
            meta: vec![Meta::default(); slots as usize],
            free: Vec::new(),
            pending: HashSet::default(),
            hand: 0,
            seq: 0,
        };
        let mut seqs = vec![0u64; slots as usize];
        let mut buf = vec![0u8; 16384 * HEADER];
        let mut slot = 0u32;
        while slot < slots {
            let want = ((slots - slot) as usize).min(16384) * HEADER;
            let got = read_full_at(&headers, &mut buf[..want], SUPERBLOCK + slot as u64 * HEADER as u64)?;
            for h in buf[..got].chunks_exact(HEADER) {
                if let Some((hash, start, len, _, seq)) = parse_header(h, stride) {
                    let keep = match st.index.get(&short(hash)) {
                        Some(&other) if seqs[other as usize] > seq => false,
                        Some(&other) => {
                            st.meta[other as usize] = Meta::default();
                            true
                        }
                        None => true,
                    };
                    if keep {
                        st.index.insert(short(hash), slot);
                        st.meta[slot as usize] = Meta { hash, start, len, pins: 0, flags: USED };
                        seqs[slot as usize] = seq;
                    }
                    st.seq = st.seq.max(seq);
                }
                slot += 1;
            }
            if got < want {
                break;
            }
        }
        st.free = (0..slots).rev().filter(|&s| st.meta[s as usize].flags == 0).collect();
        let recovered = st.index.len();

        // Sending by reference is safe only if a reused slot can be punched out first.
        let punch = punch_hole(&data, (len - PAGE) as u64, PAGE as u64).is_ok();
        if !punch && zero_copy {
            tracing::warn!(dir = %dir.display(), "the SSD filesystem cannot punch holes; SSD hits are sent by copying");
        }
        let mapping = Mapping::new(data.as_fd(), len, zero_copy && punch)?;
        let free_slots = AtomicU64::new(st.free.len() as u64);
        let inner = Arc::new(Inner {
            device: Some(Device { mapping, data, headers }),
            zeros: Bytes::new(),
            stride,
            state: Mutex::new(st),
            free_slots,
            written: AtomicU64::new(0),
            read: AtomicU64::new(0),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = inner.clone();
        std::thread::Builder::new().name("ssd-writer".into()).spawn(move || writer.run(rx))?;
        Ok(Opened { store: SsdStore { inner, tx: Some(tx) }, recovered })
    }

    /// A store with the slots, index, CLOCK and admission of one of `bytes`, keeping no
    /// bytes (`segue sim` runs the edge's tiers at fleet scale with it).
    pub fn simulated(bytes: u64, slice_size: u64) -> std::io::Result<SsdStore> {
        let stride = (slice_size as usize).next_multiple_of(PAGE);
        let slots = u32::try_from(bytes / stride as u64).unwrap_or(u32::MAX);
        if slots == 0 {
            return Err(std::io::Error::other("the SSD cap is smaller than one slice"));
        }
        let st = State {
            index: HashMap::default(),
            meta: vec![Meta::default(); slots as usize],
            free: (0..slots).rev().collect(),
            pending: HashSet::default(),
            hand: 0,
            seq: 0,
        };
        let inner = Arc::new(Inner {
            device: None,
            zeros: Bytes::from(vec![0u8; stride]),
            stride,
            free_slots: AtomicU64::new(slots as u64),
            state: Mutex::new(st),
            written: AtomicU64::new(0),
            read: AtomicU64::new(0),
        });
        Ok(SsdStore { inner, tx: None })
    }

    /// The slice stored under `hash`: its start within the slice and a view of its bytes.
    /// A slot recovered from an earlier run is checked against its checksum first.
    pub fn get(&self, hash: u128) -> Option<(u64, Bytes)> {
        let inner = &self.inner;
        let (slot, m) = {
            let mut st = inner.lock();
            let slot = *st.index.get(&short(hash))?;
            let m = &mut st.meta[slot as usize];
            if m.hash != hash {
                return None;
            }
            m.flags |= REFERENCED;
            if inner.device.is_none() {
                inner.read.fetch_add(m.len as u64, Ordering::Relaxed);
                return Some((m.start as u64, inner.zeros.slice(..m.len as usize)));
            }
            m.pins += 1;
            (slot, *m)
        };
        let bytes = Bytes::from_owner(View { inner: inner.clone(), slot, len: m.len as usize });
        if let (0, Some(device)) = (m.flags & VERIFIED, &inner.device) {
            let mut header = [0u8; HEADER];
            let checksum = read_full_at(&device.headers, &mut header, inner.header_offset(slot))
                .ok()
                .and_then(|_| parse_header(&header, inner.stride))
                .filter(|h| h.0 == hash)
                .map(|h| h.3);
            if checksum != Some(twox_hash::XxHash3_64::oneshot(&bytes)) {
                drop(bytes);
                metrics::counter!("edge_ssd_corrupt_total").increment(1);
                tracing::warn!(slot, "SSD slice failed its checksum; dropped");
                self.remove(hash);
                return None;
            }
            inner.lock().meta[slot as usize].flags |= VERIFIED;
        }
        inner.read.fetch_add(m.len as u64, Ordering::Relaxed);
        Some((m.start as u64, bytes))
    }

    pub fn contains(&self, hash: u128) -> bool {
        self.inner.lock().holds(hash)
    }

    /// Queue a slice for writing (once: not if it is stored or queued already). Dropped,
    /// and counted, when the writer is that far behind.
    pub fn insert(&self, hash: u128, start: u64, data: Bytes) {
        self.queue(hash, start, data, false, false);
    }

    /// [`SsdStore::insert`] for a slice a pre-warm wants: it starts with the second
    /// chance a read would give it, so the CLOCK hand passes it once before it can go
    /// (a pre-warm lands well before anyone reads it).
    pub fn insert_wanted(&self, hash: u128, start: u64, data: Bytes) {
        self.queue(hash, start, data, false, true);
    }

    /// Queue bytes that replace whatever is stored under `hash` (an object's records):
    /// writes land in queue order, so the last one queued is what stays.
    pub fn replace(&self, hash: u128, start: u64, data: Bytes) {
        self.queue(hash, start, data, true, false);
    }

    fn queue(&self, hash: u128, start: u64, data: Bytes, replace: bool, referenced: bool) {
        if data.len() > self.inner.stride || start > u32::MAX as u64 {
            return;
        }
        {
            let mut st = self.inner.lock();
            if !replace && (st.pending.contains(&hash) || st.holds(hash)) {
                return;
            }
            st.pending.insert(hash);
        }
        let Some(tx) = &self.tx else {
            self.inner.write(hash, start as u32, &data, referenced);
            return;
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            tx.try_send(Op::Write { hash, start: start as u32, data, referenced })
        {
            self.inner.lock().pending.remove(&hash);
            metrics::counter!("edge_ssd_write_drops_total").increment(1);
        }
    }

    /// Forget a slice (a purge): unreadable now, its header cleared on disk soon after.
    pub fn remove(&self, hash: u128) {
        let slot = {
            let mut st = self.inner.lock();
            if !st.holds(hash) {
                return;
            }
            let Some(slot) = st.index.remove(&short(hash)) else { return };
            st.release(slot, &self.inner.free_slots);
            slot
        };
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Op::Clear { slot });
        }
    }

    /// Whether never-used (or freed) slots are left: admission takes every slice then.
    pub fn has_room(&self) -> bool {
        self.inner.free_slots.load(Ordering::Relaxed) > 0
    }

    /// Slices stored now.
    pub fn slices(&self) -> usize {
        self.inner.lock().index.len()
    }

    /// Bytes the stored slices take: slots times their size (an object's last slice may
    /// use less of its slot). O(1), so a heartbeat never holds the index lock long.
    pub fn stored_bytes(&self) -> u64 {
        self.slices() as u64 * self.inner.stride as u64
    }

    /// Bytes written to and served from the store since it was opened.
    pub fn io(&self) -> (u64, u64) {
        (self.inner.written.load(Ordering::Relaxed), self.inner.read.load(Ordering::Relaxed))
    }

    /// Wait until every queued write is on disk (written and synced).
    pub async fn flush(&self) {
        let Some(op) = self.tx.clone() else { return };
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = tokio::task::spawn_blocking(move || {
            if op.send(Op::Flush(tx)).is_ok() {
                let _ = rx.recv();
            }
        })
        .await;
    }
}

impl State {
    fn holds(&self, hash: u128) -> bool {
        self.index.get(&short(hash)).is_some_and(|&slot| self.meta[slot as usize].hash == hash)
    }

    /// A slot's slice is gone (evicted or removed): the slot is free once no view pins it.
    fn release(&mut self, slot: u32, free_slots: &AtomicU64) {
        let m = &mut self.meta[slot as usize];
        m.flags = 0;
        if m.pins == 0 {
            self.free.push(slot);
            free_slots.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A slot for a new slice: a free one, else the first the CLOCK hand finds unread
    /// since its last pass and not pinned (its slice is evicted). `None` if every slot is
    /// pinned or being written.
    fn take(&mut self, free_slots: &AtomicU64) -> Option<(u32, bool)> {
        while let Some(slot) = self.free.pop() {
            free_slots.fetch_sub(1, Ordering::Relaxed);
            let m = &mut self.meta[slot as usize];
            if m.flags == 0 && m.pins == 0 {
                m.flags = WRITING;
                return Some((slot, m.len > 0));
            }
        }
        // The hand moves at most SWEEP slots per slice written, so the lock is held for
        // a bounded time on a tier of millions of slots where most were read lately; if
        // every slot it passed had been read, the first of them goes.
        let slots = self.meta.len() as u32;
        let mut second_chance = None;
        for _ in 0..(2 * slots).min(SWEEP) {
            let slot = self.hand;
            self.hand = (self.hand + 1) % slots;
            let m = &mut self.meta[slot as usize];
            if m.flags & USED == 0 || m.pins > 0 {
                continue;
            }
            if m.flags & REFERENCED != 0 {
                m.flags &= !REFERENCED;
                second_chance.get_or_insert(slot);
                continue;
            }
            return Some((self.evict(slot), true));
        }
        second_chance.map(|slot| (self.evict(slot), true))
    }

    /// Take a slot's slice out of the index, and the slot for a new one.
    fn evict(&mut self, slot: u32) -> u32 {
        let m = &mut self.meta[slot as usize];
        let hash = m.hash;
        m.flags = WRITING;
        if self.index.get(&short(hash)) == Some(&slot) {
            self.index.remove(&short(hash));
        }
        metrics::counter!("edge_ssd_evictions_total").increment(1);
        slot
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn header_offset(&self, slot: u32) -> u64 {
        SUPERBLOCK + slot as u64 * HEADER as u64
    }

    /// The writer thread: one op at a time, in queue order.
    fn run(self: Arc<Self>, rx: Receiver<Op>) {
        let Some(device) = &self.device else { return };
        while let Ok(op) = rx.recv() {
            match op {
                Op::Write { hash, start, data, referenced } => self.write(hash, start, &data, referenced),
                Op::Clear { slot } => {
                    // Only the writer takes slots, so an unused slot cannot be taken meanwhile.
                    let unused = self.lock().meta[slot as usize].flags & (USED | WRITING) == 0;
                    if unused {
                        let _ = write_all_at(
                            &device.headers,
                            &mut [IoSlice::new(&[0u8; HEADER])],
                            self.header_offset(slot),
                        );
                    }
                }
                Op::Flush(done) => {
                    let _ = rustix::fs::fdatasync(&device.data);
                    let _ = rustix::fs::fdatasync(&device.headers);
                    let _ = done.send(());
                }
            }
        }
    }

    fn write(&self, hash: u128, start: u32, data: &[u8], referenced: bool) {
        let (slot, reused, seq) = {
            let mut st = self.lock();
            let Some((slot, reused)) = st.take(&self.free_slots) else {
                st.pending.remove(&hash);
                metrics::counter!("edge_ssd_write_drops_total").increment(1);
                return;
            };
            st.seq += 1;
            (slot, reused, st.seq)
        };
        let offset = slot as u64 * self.stride as u64;
        let written = (|| {
            let Some(device) = &self.device else { return Ok(()) };
            let checksum = twox_hash::XxHash3_64::oneshot(data);
            let header = make_header(hash, start, data.len() as u32, checksum, seq);
            if reused {
                // Fresh pages for the new bytes: a send may still hold the old ones.
                punch_hole(&device.data, offset, self.stride as u64)?;
            }
            write_all_at(&device.data, &mut [IoSlice::new(data)], offset)?;
            write_all_at(&device.headers, &mut [IoSlice::new(&header)], self.header_offset(slot))
        })();
        let mut st = self.lock();
        st.pending.remove(&hash);
        match written {
            Ok(()) => {
                if let Some(old) = st.index.insert(short(hash), slot) {
                    st.release(old, &self.free_slots);
                }
                let flags = USED | VERIFIED | if referenced { REFERENCED } else { 0 };
                st.meta[slot as usize] = Meta { hash, start, len: data.len() as u32, pins: 0, flags };
                self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                st.meta[slot as usize].len = 0;
                st.release(slot, &self.free_slots);
                metrics::counter!("edge_ssd_errors_total").increment(1);
                tracing::debug!(error = %e, "SSD write failed");
            }
        }
    }
}

/// Edges before this store kept the SSD tier in foyer's files (`foyer-storage-*`) in the
/// same directory. Their slices cannot be read here and their space is needed.
fn remove_foyer_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("foyer") && e.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(file = %e.path().display(), "removed a previous SSD tier's file"),
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a previous SSD tier's file")
                }
            }
        }
    }
}

fn make_header(hash: u128, start: u32, len: u32, checksum: u64, seq: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..24].copy_from_slice(&hash.to_le_bytes());
    h[24..28].copy_from_slice(&start.to_le_bytes());
    h[32..40].copy_from_slice(&checksum.to_le_bytes());
    h[40..48].copy_from_slice(&seq.to_le_bytes());
    let check = twox_hash::XxHash3_64::oneshot(&h[..48]);
    h[48..56].copy_from_slice(&check.to_le_bytes());
    h
}

/// A header's (hash, start, len, checksum, seq), if it is one and intact.
fn parse_header(h: &[u8], stride: usize) -> Option<(u128, u32, u32, u64, u64)> {
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
    if u32_at(0) != HEADER_MAGIC || u64_at(48) != twox_hash::XxHash3_64::oneshot(&h[..48]) {
        return None;
    }
    let len = u32_at(4);
    let hash = u128::from_le_bytes(h[8..24].try_into().ok()?);
    (len as usize <= stride && len > 0).then(|| (hash, u32_at(24), len, u64_at(32), u64_at(40)))
}

fn read_full_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::pread(fd, &mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_written(s: &SsdStore, n: usize) {
        for _ in 0..200 {
            if s.slices() >= n && s.inner.lock().pending.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the writer did not catch up");
    }

    #[test]
    fn slices_come_back_after_a_reopen_and_a_corrupt_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("foyer-storage-0"), b"an older edge's tier").unwrap();
        let slice = 64 << 10;
        let datas: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 1; slice - i as usize * 1000]).collect();
        {
            let s = SsdStore::open(dir.path(), 16 * slice as u64, slice as u64, true).unwrap().store;
            for (i, d) in datas.iter().enumerate() {
                s.insert(i as u128 + 10, i as u64 * 7, Bytes::from(d.clone()));
            }
            wait_written(&s, 4);
            assert!(!dir.path().join("foyer-storage-0").exists(), "the old tier's files are removed");
            let (start, b) = s.get(12).unwrap();
            assert_eq!((start, &b[..]), (14, &datas[2][..]));
        }
        // Flip one byte of slot 1's data behind the store's back.
        let path = dir.path().join("slices.dat");
        let mut raw = std::fs::read(&path).unwrap();
        raw[slice + 100] ^= 0xff;
        std::fs::write(&path, raw).unwrap();
        let opened = SsdStore::open(dir.path(), 16 * slice as u64, slice as u64, true).unwrap();
        assert_eq!(opened.recovered, 4);
        let s = opened.store;
        assert_eq!(&s.get(10).unwrap().1[..], &datas[0][..]);
        assert!(s.get(11).is_none(), "the corrupt slice is not served");
        assert!(!s.contains(11), "and is forgotten");
        assert_eq!(&s.get(13).unwrap().1[..], &datas[3][..]);
        // Another layout starts empty.
        drop(s);
        let other = SsdStore::open(dir.path(), 8 * slice as u64, slice as u64, true).unwrap();
        assert_eq!(other.recovered, 0);
    }

    #[test]
    fn clock_evicts_unread_slices_first_and_never_a_pinned_one() {
        let dir = tempfile::tempdir().unwrap();
        let slice = 16 << 10;
        let s = SsdStore::open(dir.path(), 3 * slice as u64, slice as u64, true).unwrap().store;
        for h in 1..=3u128 {
            s.insert(h, 0, Bytes::from(vec![h as u8; slice]));
        }
        wait_written(&s, 3);
        assert!(!s.has_room());
        // 1 is pinned by a live view, 2 was read; 3 is the one to go.
        let pinned = s.get(1).unwrap().1;
        drop(s.get(2));
        s.insert(4, 0, Bytes::from(vec![4u8; slice]));
        wait_written(&s, 3);
        assert!(s.contains(4) && s.contains(1) && s.contains(2) && !s.contains(3));
        assert!(pinned.iter().all(|&b| b == 1), "a pinned slot keeps its bytes");
        // Next round: 2's second chance is used up, 1 is still pinned.
        s.insert(5, 0, Bytes::from(vec![5u8; slice]));
        wait_written(&s, 3);
        assert!(s.contains(1) && !s.contains(2) && s.contains(5));
        assert!(pinned.iter().all(|&b| b == 1));
    }

    /// A pre-warmed slice starts with a second chance: the CLOCK hand passes it once
    /// where it takes a slice written the ordinary way.
    #[test]
    fn a_wanted_slice_survives_one_lap_of_the_hand() {
        let slice = 16 << 10;
        for wanted in [false, true] {
            let s = SsdStore::simulated(3 * slice as u64, slice as u64).unwrap();
            let put = |h: u128| s.insert(h, 0, Bytes::from(vec![0u8; slice]));
            (1..=3).for_each(put);
            if wanted {
                s.insert_wanted(4, 0, Bytes::from(vec![0u8; slice]));
            } else {
                put(4);
            }
            assert!(s.contains(4) && !s.contains(1));
            // Three more slices: the hand comes round to 4's slot on the third.
            (5..=7).for_each(put);
            assert_eq!(s.contains(4), wanted, "wanted: {wanted}");
        }
    }

    /// A simulated store (no files) keeps and evicts exactly the slices a real one does,
    /// for the same inserts and reads (views dropped at once), and reads give zeros of
    /// the stored length.
    #[test]
    fn a_simulated_store_evicts_like_the_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let slice = 16 << 10;
        let real = SsdStore::open(dir.path(), 40 * slice as u64, slice as u64, true).unwrap().store;
        let sim = SsdStore::simulated(40 * slice as u64, slice as u64).unwrap();
        let mut x = 7u64;
        for step in 0..600u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let h = u128::from((x >> 33) % 90 + 1);
            if step % 3 == 0 {
                assert_eq!(real.get(h).map(|g| g.1.len()), sim.get(h).map(|g| g.1.len()), "step {step}");
            } else {
                let len = slice - (h as usize % 5) * 100;
                real.insert(h, 0, Bytes::from(vec![1u8; len]));
                sim.insert(h, 0, Bytes::from(vec![1u8; len]));
                wait_written(&real, real.slices().min(39));
                while !real.inner.lock().pending.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            let held = |s: &SsdStore| (1..=90u128).filter(|&h| s.contains(h)).collect::<Vec<_>>();
            assert_eq!(held(&real), held(&sim), "step {step}");
        }
        assert_eq!(sim.slices(), 40);
        let (_, zeros) = sim.get((1..=90u128).find(|&h| sim.contains(h)).unwrap()).unwrap();
        assert!(!zeros.is_empty() && zeros.iter().all(|&b| b == 0));
    }

    /// On a big tier where every slice was read lately, one write moves the hand a
    /// bounded distance and evicts the first slice it passed, not after a full sweep.
    #[test]
    fn a_tier_read_all_over_evicts_within_a_bounded_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let slice = 4096usize;
        let n = 2 * SWEEP as u128 + 10;
        let s = SsdStore::open(dir.path(), n as u64 * slice as u64, slice as u64, true).unwrap().store;
        for h in 1..=n {
            s.insert(h, 0, Bytes::from(vec![h as u8; 100]));
            if h % 200 == 0 {
                wait_written(&s, h as usize);
            }
        }
        wait_written(&s, n as usize);
        for h in 1..=n {
            assert!(s.get(h).is_some());
        }
        s.insert(n + 1, 0, Bytes::from(vec![7u8; 100]));
        wait_written(&s, n as usize);
        assert!(s.contains(n + 1), "the new slice was written");
        assert!(!s.contains(1), "the first slice the hand passed went");
        assert!(s.contains(SWEEP as u128 + 1), "slices beyond the sweep kept their second chance");
        let st = s.inner.lock();
        assert_eq!(st.meta[SWEEP as usize + 1].flags & REFERENCED, REFERENCED, "the hand stopped within the sweep");
    }

    /// A slot reused while a `sendfile` of its old bytes is still in the kernel: the peer
    /// still gets the old bytes (the slot's pages were punched out before the rewrite).
    #[tokio::test]
    async fn a_slot_rewritten_while_its_bytes_are_in_flight_does_not_change_them() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let slice = 256 << 10;
        let s = SsdStore::open(dir.path(), slice as u64, slice as u64, true).unwrap().store;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = segue_core::zerocopy::ZeroCopyStream::new(server);

        s.insert(1, 0, Bytes::from(vec![0xAAu8; 200_000]));
        wait_written(&s, 1);
        let first = s.get(1).unwrap().1;
        server.write_all(&first).await.unwrap();
        drop(first);
        // The one slot is taken for another slice while the peer has read nothing.
        s.insert(2, 0, Bytes::from(vec![0x55u8; 200_000]));
        wait_written(&s, 1);
        assert!(s.contains(2) && !s.contains(1));
        server.write_all(&s.get(2).unwrap().1).await.unwrap();
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 400_000);
        assert!(got[..200_000].iter().all(|&b| b == 0xAA), "the first send kept its bytes");
        assert!(got[200_000..].iter().all(|&b| b == 0x55));
    }
}
