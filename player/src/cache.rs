//! The on-device cache of the most-played tracks: the objects and seek tables exactly as
//! the edge serves them, so a repeat of a favourite needs no network but the app API's
//! stream answer (rights and the play's session still come from there). Bounded in
//! bytes; what stays is chosen by play count (LFU): a track is kept while there is room,
//! and takes the place of tracks played fewer times than it, never of one played as often.
//!
//! It shares the device directory with the offline library (`library`): the library's
//! encrypted objects count against the same bound and are never evicted here. Like the
//! library's, cached audio is never on disk in the clear. Layout:
//! - `cache/key`: this device's cache key (mode 0600), made on first use;
//! - `cache/{cid}/{tier}.ogg` and `cache/{cid}/{tier}.json`: the object, under AES-128-CTR
//!   with the cache key (same length, readable at any offset), and its seek table, each
//!   written to a temp file, fsynced and renamed into place;
//! - `cache/index.json` (written the same way): per object its length, ETag and
//!   checksums, and the play counts of every object seen (cached or not).
//!
//! An object goes in only whole: its length what the seek table and the server said, every
//! response for it with the same strong ETag. Before the first read in a process, its
//! files are checked against the index (length and XXH3); one that fails is dropped and
//! the track comes from the network again.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use segue_core::drm::cipher::{ContentKey, ObjectCipher};
use segue_core::{ContentId, Tier};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Play counts kept for objects not in the cache, at most.
const MAX_COUNTS: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    object_len: u64,
    table_len: u64,
    etag: String,
    object_xxh3: u64,
    table_xxh3: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Count {
    plays: u64,
    last_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// By `{cid}/{tier}`.
    entries: BTreeMap<String, Entry>,
    counts: BTreeMap<String, Count>,
}

impl Index {
    fn used(&self) -> u64 {
        self.entries.values().map(|e| e.object_len + e.table_len).sum()
    }

    fn plays(&self, key: &str) -> u64 {
        self.counts.get(key).map_or(0, |c| c.plays)
    }
}

/// A cached file to read from: the object (with what its cipher needs) or its seek table.
#[derive(Debug, Clone)]
pub struct Local {
    path: PathBuf,
    pub len: u64,
    object: Option<(ContentId, Tier)>,
}

pub struct Cache {
    dir: PathBuf,
    /// `cache/lock`, locked for as long as this process has the cache open.
    _lock: std::fs::File,
    key: ContentKey,
    max_bytes: u64,
    /// Bytes of the offline library's objects: counted, never evicted.
    pinned: u64,
    index: Mutex<Index>,
    /// Keys whose files were checked in this process.
    verified: Mutex<HashSet<String>>,
    /// Writes of objects offered, awaited before the session ends.
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    hits: AtomicU64,
    bytes_read: AtomicU64,
    stored: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish()
    }
}

/// What a URL names: the `{cid}/{tier}` key, whether it is the seek table, and the
/// content and tier.
fn key_of(url: &str) -> Option<(String, bool, ContentId, Tier)> {
    let path = crate::fetch::path_of(url);
    let (table, rest) = match (path.strip_prefix("/a/"), path.strip_prefix("/seek/")) {
        (Some(r), _) => (false, r.strip_suffix(".ogg")?),
        (_, Some(r)) => (true, r.strip_suffix(".json")?),
        _ => return None,
    };
    let (cid, tier) = rest.split_once('/')?;
    let (cid, tier) = (cid.parse::<ContentId>().ok()?, tier.parse::<Tier>().ok()?);
    Some((format!("{cid}/{tier}"), table, cid, tier))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else { return 0 };
    read.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Cache {
    /// The cache in device directory `device_dir`, holding at most `max_bytes` with the
    /// offline library's objects; `None` while another process has it open.
    pub fn open(device_dir: &Path, max_bytes: u64) -> Result<Option<Cache>, Error> {
        let dir = device_dir.join("cache");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        // One process at a time: another's sweep would delete the objects this one is
        // writing (not yet in the index), and their index writes would undo each other.
        let lock_path = dir.join("lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Io(format!("{}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::Io(format!("{}: {e}", lock_path.display()))),
        }
        let path = dir.join("index.json");
        let index = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "the cache index does not parse; starting empty");
                Index::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(Error::Io(format!("{}: {e}", path.display()))),
        };
        let pinned = dir_bytes(&device_dir.join("objects")) + dir_bytes(&device_dir.join("seek"));
        let key_path = dir.join("key");
        let key = match std::fs::read(&key_path) {
            Ok(bytes) => ContentKey::from_bytes(&bytes)
                .ok_or_else(|| Error::Io(format!("{}: not a 16-byte key", key_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ContentKey::generate();
                segue_core::fsutil::write_atomic(&key_path, key.expose(), 0o600)
                    .map_err(|e| Error::Io(format!("{}: {e}", key_path.display())))?;
                key
            }
            Err(e) => return Err(Error::Io(format!("{}: {e}", key_path.display()))),
        };
        let cache = Cache {
            dir,
            _lock: lock,
            key,
            max_bytes,
            pinned,
            index: Mutex::new(index),
            verified: Mutex::default(),
            pending: Mutex::default(),
            hits: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            stored: AtomicU64::new(0),
        };
        cache.sweep();
        Ok(Some(cache))
    }

    fn files(&self, key: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{key}.ogg")), self.dir.join(format!("{key}.json")))
    }

    /// Remove files the index does not name (a crash between a file and the index).
    fn sweep(&self) {
        let keep: HashSet<PathBuf> = match self.index.lock() {
            Ok(i) => i
                .entries
                .keys()
                .flat_map(|k| <[PathBuf; 2]>::from(self.files(k)))
                .chain([self.dir.join("key"), self.dir.join("lock")])
                .collect(),
            Err(_) => return,
        };
        let Ok(dirs) = std::fs::read_dir(&self.dir) else { return };
        // Only the per-content folders: index.json, key and lock sit at the top.
        for d in dirs.flatten().filter(|d| d.file_type().is_ok_and(|t| t.is_dir())) {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if !keep.contains(&f.path()) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
            let _ = std::fs::remove_dir(d.path());
        }
    }

    fn save(&self, index: &Index) -> Result<(), Error> {
        let path = self.dir.join("index.json");
        let bytes = serde_json::to_vec(index).map_err(|e| Error::Io(e.to_string()))?;
        segue_core::fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }

    /// The cached file for `url` (an object or seek table URL), when its object is here
    /// and (once per process) its files check out.
    pub fn lookup(&self, url: &str) -> Option<Local> {
        let (key, table, cid, tier) = key_of(url)?;
        let entry = self.index.lock().ok()?.entries.get(&key)?.clone();
        let (object, seek) = self.files(&key);
        let fresh = !self.verified.lock().ok()?.contains(&key);
        if fresh {
            let check = |p: &Path, len: u64, sum: u64| {
                std::fs::read(p).is_ok_and(|b| b.len() as u64 == len && twox_hash::XxHash3_64::oneshot(&b) == sum)
            };
            if !check(&object, entry.object_len, entry.object_xxh3) || !check(&seek, entry.table_len, entry.table_xxh3)
            {
                tracing::warn!(key, "a cached object does not match its index entry; dropped");
                self.drop_entry(&key);
                return None;
            }
            self.verified.lock().ok()?.insert(key.clone());
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(match table {
            true => Local { path: seek, len: entry.table_len, object: None },
            false => Local { path: object, len: entry.object_len, object: Some((cid, tier)) },
        })
    }

    /// Whether the object at `url` is in the index (unchecked).
    pub fn holds(&self, url: &str) -> bool {
        key_of(url).is_some_and(|(k, ..)| self.index.lock().is_ok_and(|i| i.entries.contains_key(&k)))
    }

    fn drop_entry(&self, key: &str) {
        if let Ok(mut index) = self.index.lock() {
            index.entries.remove(key);
            let _ = self.save(&index);
        }
        let (object, seek) = self.files(key);
        let _ = std::fs::remove_file(object);
        let _ = std::fs::remove_file(seek);
    }

    /// The next chunk of `local` from byte `from` (to `to` inclusive, or its end).
    pub fn read(&self, local: &Local, from: u64, to: Option<u64>) -> Result<Option<Bytes>, Error> {
        let Some(mut buf) = crate::library::read_piece(&local.path, Some(local.len), from, to)? else {
            return Ok(None);
        };
        if let Some((cid, tier)) = &local.object {
            ObjectCipher::new(&self.key, cid, *tier).apply(from, &mut buf);
        }
        self.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(Some(Bytes::from(buf)))
    }

    /// A play of the object at `url` was heard (a skip early on does not count).
    pub fn played(&self, url: &str) {
        let Some((key, ..)) = key_of(url) else { return };
        let Ok(mut index) = self.index.lock() else { return };
        let count = index.counts.entry(key).or_default();
        count.plays += 1;
        count.last_ms = now_ms();
        if index.counts.len() > MAX_COUNTS {
            // Forget the least played object that is not cached.
            let victim = index
                .counts
                .iter()
                .filter(|(k, _)| !index.entries.contains_key(*k))
                .min_by_key(|(_, c)| (c.plays, c.last_ms))
                .map(|(k, _)| k.clone());
            if let Some(v) = victim {
                index.counts.remove(&v);
            }
        }
        if let Err(e) = self.save(&index) {
            tracing::warn!(error = %e, "the cache index was not saved");
        }
    }

    /// The whole object at `url` and its seek table arrived (all with strong ETag
    /// `etag`), during a play: keep it if the bound allows, written in the background.
    pub fn offer(self: &std::sync::Arc<Self>, url: &str, object: Bytes, table: Bytes, etag: String) {
        let Some((key, false, cid, tier)) = key_of(url) else { return };
        // This play counts (it is under way), and only once: the write may run after the
        // play has ended and been counted.
        let Ok(mine) = self.index.lock().map(|i| i.plays(&key) + 1) else { return };
        let cache = self.clone();
        let write = tokio::task::spawn_blocking(move || {
            let mut sealed = object.to_vec();
            ObjectCipher::new(&cache.key, &cid, tier).apply(0, &mut sealed);
            if let Err(e) = cache.store(&key, &sealed, &table, etag, mine) {
                tracing::warn!(key, error = %e, "not cached");
            }
        });
        if let Ok(mut p) = self.pending.lock() {
            p.push(write);
        }
    }

    /// Keep `object` if tracks played fewer than `mine` times can make room for it.
    fn store(&self, key: &str, object: &[u8], table: &[u8], etag: String, mine: u64) -> Result<(), Error> {
        let size = (object.len() + table.len()) as u64;
        let mut index = self.index.lock().map_err(|_| Error::Io("the cache index lock is poisoned".into()))?;
        if index.entries.contains_key(key) {
            return Ok(());
        }
        let room = self.max_bytes.saturating_sub(self.pinned);
        let mut victims: Vec<(String, u64, u64, i64)> = index
            .entries
            .iter()
            .map(|(k, e)| {
                let c = index.counts.get(k).copied().unwrap_or_default();
                (k.clone(), e.object_len + e.table_len, c.plays, c.last_ms)
            })
            .filter(|v| v.2 < mine)
            .collect();
        victims.sort_by_key(|v| (v.2, v.3));
        let mut used = index.used();
        let mut evict = Vec::new();
        for (k, bytes, ..) in victims {
            if used + size <= room {
                break;
            }
            used -= bytes;
            evict.push(k);
        }
        if used + size > room {
            tracing::debug!(key, size, "not cached: tracks played more often fill the cache");
            return Ok(());
        }
        for k in &evict {
            index.entries.remove(k);
            let (o, t) = self.files(k);
            let _ = std::fs::remove_file(o);
            let _ = std::fs::remove_file(t);
        }
        let (o, t) = self.files(key);
        let io = |p: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", p.display()));
        if let Some(parent) = o.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        segue_core::fsutil::write_atomic(&o, object, 0o600).map_err(|e| io(&o, e))?;
        segue_core::fsutil::write_atomic(&t, table, 0o600).map_err(|e| io(&t, e))?;
        let entry = Entry {
            object_len: object.len() as u64,
            table_len: table.len() as u64,
            etag,
            object_xxh3: twox_hash::XxHash3_64::oneshot(object),
            table_xxh3: twox_hash::XxHash3_64::oneshot(table),
        };
        index.entries.insert(key.to_owned(), entry);
        self.save(&index)?;
        self.verified.lock().map_err(|_| Error::Io("poisoned".into()))?.insert(key.to_owned());
        self.stored.fetch_add(1, Ordering::Relaxed);
        tracing::info!(key, size, evicted = evict.len(), "cached");
        Ok(())
    }

    /// Wait for the writes offered so far.
    pub async fn settle(&self) {
        let pending = self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        for w in pending {
            let _ = w.await;
        }
    }

    /// Requests served from the device instead of the edge, bytes read, and objects
    /// stored, so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.bytes_read.load(Ordering::Relaxed),
            self.stored.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_objects_and_seek_tables() {
        let c = "c0ffee".repeat(10) + "0123";
        let k = |u: &str| key_of(u).map(|(k, table, ..)| (k, table));
        assert_eq!(k(&format!("http://p:1/a/{c}/high.ogg?exp=1&sig=x")), Some((format!("{c}/high"), false)));
        assert_eq!(k(&format!("http://p:1/seek/{c}/low.json")), Some((format!("{c}/low"), true)));
        assert_eq!(k("http://p:1/a/../high.ogg"), None);
        assert_eq!(k(&format!("http://p:1/a/{c}/ultra.ogg")), None);
        assert_eq!(k(&format!("http://p:1/enc/{c}/high.ogg")), None);
    }

    #[tokio::test]
    async fn the_most_played_stay_and_a_damaged_file_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = std::sync::Arc::new(Cache::open(dir.path(), 150).unwrap().unwrap());
        let (ca, cb) = ("a".repeat(64), "b".repeat(64));
        let (a, b) = (&format!("http://p/a/{ca}/high.ogg"), &format!("http://p/a/{cb}/high.ogg"));
        let offer = |url: &str, fill: u8| {
            cache.offer(url, Bytes::from(vec![fill; 100]), Bytes::from_static(b"{}"), "e".into());
        };
        offer(a, 1);
        cache.settle().await;
        cache.played(a);
        cache.played(a);
        // b has been played less than a: no room is made for it.
        for _ in 0..2 {
            offer(b, 2);
            cache.settle().await;
            assert!(cache.lookup(b).is_none());
            cache.played(b);
        }
        // Its third play outnumbers a's two.
        offer(b, 2);
        cache.settle().await;
        let local = cache.lookup(b).expect("b cached");
        assert!(cache.lookup(a).is_none(), "a evicted");
        assert_eq!(cache.read(&local, 98, None).unwrap().unwrap().as_ref(), &[2, 2]);
        assert_eq!(cache.counts().2, 2);

        // Not while it is open (another player, or this one twice).
        assert!(Cache::open(dir.path(), 150).unwrap().is_none(), "the cache is locked");
        drop(local);
        drop(cache);
        // Another process finds b, checks it, and drops it once damaged.
        let again = Cache::open(dir.path(), 150).unwrap().expect("unlocked when closed");
        assert!(again.lookup(&format!("http://p/seek/{cb}/high.json")).is_some());
        let stored = std::fs::read(dir.path().join(format!("cache/{cb}/high.ogg"))).unwrap();
        assert!(stored.len() == 100 && stored != [2u8; 100], "not in the clear");
        std::fs::write(dir.path().join(format!("cache/{cb}/high.ogg")), [9u8; 100]).unwrap();
        drop(again);
        let third = Cache::open(dir.path(), 150).unwrap().unwrap();
        assert!(third.lookup(b).is_none(), "a damaged object is not served");
        assert!(!dir.path().join(format!("cache/{cb}/high.ogg")).exists());
    }
}
