//! The filesystem store: object key `K` lives at `ROOT/K`, so operators can inspect,
//! back up and rsync it. Writes go to a `.`-prefixed temp file in the same directory,
//! are fsynced, renamed into place and the directory fsynced: a crash leaves the old
//! object or the new one, plus at worst a temp file that `list` ignores.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, ObjectMeta, ObjectReader, ObjectStore};
use crate::conditional::Validators;
use crate::error::{Error, Result};
use crate::key::ObjectKey;

/// Largest chunk one read hands to the body stream: a 256 KiB range is one read.
const READ_CHUNK: usize = 256 * 1024;

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Use `root` (created if missing) as the store's directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(root.display(), e))?;
        Ok(FsStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey segments are plain names (no '.', '..', separators), so this stays under root.
        self.root.join(key.as_str())
    }
}

fn meta_of(key: &ObjectKey, md: &std::fs::Metadata) -> ObjectMeta {
    let modified = md.modified().unwrap_or(UNIX_EPOCH);
    let nanos = modified.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    // Size and modification time, like nginx: every atomic replace gets a new mtime.
    let etag = format!("{:x}-{:x}", md.len(), nanos);
    ObjectMeta { key: key.clone(), len: md.len(), validators: Validators::strong(etag, modified) }
}

fn not_found_or_io(key: &ObjectKey, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) {
        Error::NotFound(key.to_string())
    } else {
        Error::io(path.display(), e)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store { message: format!("blocking task failed: {e}"), retryable: true })?
}

struct FsReader {
    file: Arc<File>,
    path: Arc<PathBuf>,
    meta: ObjectMeta,
}

#[async_trait]
impl ObjectReader for FsReader {
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    async fn read(&self, range: Range<u64>) -> Result<ByteStream> {
        super::check_range(&self.meta, &range)?;
        let (file, path) = (self.file.clone(), self.path.clone());
        // One chunk at a time: the next is read only when the body asks for it, so a slow
        // client holds at most one chunk, and the kernel's readahead covers sequential reads.
        let stream = futures_util::stream::try_unfold(range.start, move |pos| {
            let (file, path) = (file.clone(), path.clone());
            async move {
                if pos >= range.end {
                    return Ok(None);
                }
                let len = ((range.end - pos) as usize).min(READ_CHUNK);
                let chunk = read_chunk(file, path, pos, len).await?;
                Ok(Some((chunk, pos + len as u64)))
            }
        });
        Ok(Box::pin(stream))
    }
}

/// Read exactly `len` (<= READ_CHUNK) bytes at `pos` into a pooled buffer.
///
/// First an inline `preadv2(RWF_NOWAIT)`: bytes already in the page cache are copied
/// without blocking, so a hot object costs no thread hop. Whatever is not cached is read
/// on the blocking pool, where waiting on the disk does not stall the event loop.
async fn read_chunk(file: Arc<File>, path: Arc<PathBuf>, pos: u64, len: usize) -> Result<Bytes> {
    let mut buf = pool::take();
    let mut done = 0;
    if NOWAIT_WORKS.load(Ordering::Relaxed) {
        loop {
            let mut iov = [io::IoSliceMut::new(&mut buf[done..len])];
            match rustix::io::preadv2(&*file, &mut iov, pos + done as u64, rustix::io::ReadWriteFlags::NOWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    if done == len {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    // Filesystem or kernel without RWF_NOWAIT: stop trying.
                    NOWAIT_WORKS.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    if done < len {
        buf = blocking(move || {
            while done < len {
                match rustix::io::pread(&*file, &mut buf[done..len], pos + done as u64) {
                    Ok(0) => return Err(Error::Changed(path.display().to_string())),
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(Error::io(path.display(), e.into())),
                }
            }
            Ok(buf)
        })
        .await?;
    }
    Ok(pool::freeze(buf, len))
}

static NOWAIT_WORKS: AtomicBool = AtomicBool::new(true);

/// Reusable read buffers. A 256 KiB allocation per read means an mmap, page faults and
/// zeroed pages every time; recycled buffers skip all of that. A buffer returns to the
/// pool when hyper drops the last `Bytes` that points into it.
mod pool {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::READ_CHUNK;

    /// Enough for every in-flight read of a busy origin; beyond it buffers are freed.
    const MAX_POOLED: usize = 128;
    static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    pub fn take() -> Vec<u8> {
        let pooled = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pooled.unwrap_or_else(|| vec![0u8; READ_CHUNK])
    }

    struct Pooled {
        buf: Vec<u8>,
        len: usize,
    }

    impl AsRef<[u8]> for Pooled {
        fn as_ref(&self) -> &[u8] {
            &self.buf[..self.len]
        }
    }

    impl Drop for Pooled {
        fn drop(&mut self) {
            let buf = std::mem::take(&mut self.buf);
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < MAX_POOLED {
                pool.push(buf);
            }
        }
    }

    /// The first `len` bytes of `buf` as `Bytes`, without copying.
    pub fn freeze(buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Pooled { buf, len })
    }
}

fn reader(key: ObjectKey, file: File, path: PathBuf) -> Result<Box<dyn ObjectReader>> {
    // fstat on an open descriptor: the inode is in memory, this never waits on the disk.
    let md = file.metadata().map_err(|e| Error::io(path.display(), e))?;
    if !md.is_file() {
        return Err(Error::NotFound(key.to_string()));
    }
    let meta = meta_of(&key, &md);
    Ok(Box::new(FsReader { file: Arc::new(file), path: Arc::new(path), meta }))
}

static CACHED_OPEN_WORKS: AtomicBool = AtomicBool::new(true);

/// `openat2(RESOLVE_CACHED)` (Linux 5.12+): `None` when the answer is not in the dentry
/// cache (or the kernel lacks the call), so the caller opens on the blocking pool.
fn open_cached(path: &Path) -> Option<io::Result<File>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    if !CACHED_OPEN_WORKS.load(Ordering::Relaxed) {
        return None;
    }
    match rustix::fs::openat2(CWD, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::CACHED) {
        Ok(fd) => Some(Ok(File::from(fd))),
        Err(rustix::io::Errno::AGAIN) => None,
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL | rustix::io::Errno::PERM) => {
            CACHED_OPEN_WORKS.store(false, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Err(e.into())),
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[async_trait]
impl ObjectStore for FsStore {
    async fn open(&self, key: &ObjectKey) -> Result<Box<dyn ObjectReader>> {
        let path = self.path_of(key);
        // Like reads: an open that the dentry cache can answer runs inline; one that would
        // wait on the disk goes to the blocking pool.
        if let Some(file) = open_cached(&path) {
            let file = file.map_err(|e| not_found_or_io(key, &path, e))?;
            return reader(key.clone(), file, path);
        }
        let key = key.clone();
        blocking(move || {
            let file = File::open(&path).map_err(|e| not_found_or_io(&key, &path, e))?;
            reader(key, file, path)
        })
        .await
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream) -> Result<ObjectMeta> {
        let path = self.path_of(key);
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| Error::io(dir.display(), e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp.{}.{}", std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::Relaxed)));
        let write = async {
            let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| Error::io(tmp.display(), e))?;
            while let Some(chunk) = body.next().await {
                f.write_all(&chunk?).await.map_err(|e| Error::io(tmp.display(), e))?;
            }
            f.flush().await.map_err(|e| Error::io(tmp.display(), e))?;
            f.sync_all().await.map_err(|e| Error::io(tmp.display(), e))?;
            drop(f);
            tokio::fs::rename(&tmp, &path).await.map_err(|e| Error::io(path.display(), e))?;
            // The rename is durable only once the directory entry is.
            let d = tokio::fs::File::open(&dir).await.map_err(|e| Error::io(dir.display(), e))?;
            d.sync_all().await.map_err(|e| Error::io(dir.display(), e))?;
            Ok::<(), Error>(())
        };
        if let Err(e) = write.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.head(key).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let path = self.path_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path.display(), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir.display(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else { continue };
        let rel = rel.to_string_lossy();
        // Temp files and anything that is not a valid key (operator's notes, lost+found).
        let Ok(key) = ObjectKey::new(rel.as_ref()) else { continue };
        let ft = entry.file_type().map_err(|e| Error::io(path.display(), e))?;
        if ft.is_dir() {
            // Only descend where keys under the prefix can be.
            let as_dir = format!("{rel}/");
            if prefix.starts_with(&as_dir) || as_dir.starts_with(prefix) {
                walk(root, &path, prefix, out)?;
            }
        } else if ft.is_file() && key.as_str().starts_with(prefix) {
            let md = entry.metadata().map_err(|e| Error::io(path.display(), e))?;
            out.push(meta_of(&key, &md));
        }
    }
    Ok(())
}

impl FsStore {
    /// Temp files older than `max_age` left by a crash mid-write; removed at start-up.
    pub fn sweep_temp_files(&self, max_age: std::time::Duration) -> Result<usize> {
        fn sweep(dir: &Path, cutoff: SystemTime, n: &mut usize) -> io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let ft = entry.file_type()?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if ft.is_dir() {
                    sweep(&entry.path(), cutoff, n)?;
                } else if name.starts_with('.') && name.contains(".tmp.") && entry.metadata()?.modified()? < cutoff {
                    std::fs::remove_file(entry.path())?;
                    *n += 1;
                }
            }
            Ok(())
        }
        let cutoff = SystemTime::now() - max_age;
        let mut n = 0;
        sweep(&self.root, cutoff, &mut n).map_err(|e| Error::io(self.root.display(), e))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    async fn read_all(store: &FsStore, key: &ObjectKey, r: Range<u64>) -> Vec<u8> {
        let reader = store.open(key).await.unwrap();
        let chunks: Vec<Bytes> = reader.read(r).await.unwrap().try_collect().await.unwrap();
        chunks.concat()
    }

    // Uncached data (evicted pages) and kernels without RWF_NOWAIT or RESOLVE_CACHED take
    // the blocking path;
    // both must return the same bytes as the inline path. (nextest runs each test in its
    // own process, so flipping the global here affects no other test.)
    #[tokio::test]
    async fn uncached_and_no_nowait_reads_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path()).unwrap();
        let key = ObjectKey::new("audio/x/high.ogg").unwrap();
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 + i / 251) as u8).collect();
        crate::store::put_bytes(&store, &key, Bytes::from(data.clone())).await.unwrap();
        let ranges = [0..1_000_003u64, 262_143..262_145, 999_000..1_000_003, 5..5];
        for r in ranges.clone() {
            let f = File::open(dir.path().join(key.as_str())).unwrap();
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
            assert_eq!(read_all(&store, &key, r.clone()).await, &data[r.start as usize..r.end as usize]);
        }
        NOWAIT_WORKS.store(false, Ordering::Relaxed);
        CACHED_OPEN_WORKS.store(false, Ordering::Relaxed);
        for r in ranges {
            assert_eq!(read_all(&store, &key, r.clone()).await, &data[r.start as usize..r.end as usize]);
        }
        let missing = ObjectKey::new("audio/y/high.ogg").unwrap();
        assert!(matches!(store.open(&missing).await.err(), Some(Error::NotFound(_))));
    }
}
