//! The filesystem store: object key `K` lives at `ROOT/K`, so operators can inspect,
//! back up and rsync it. Writes go to a `.`-prefixed temp file in the same directory,
//! are fsynced, renamed into place and the directory fsynced: a crash leaves the old
//! object or the new one, plus at worst a temp file that `list` ignores.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, ObjectMeta, ObjectReader, ObjectStore};
use crate::conditional::Validators;
use crate::error::{Error, Result};
use crate::key::ObjectKey;

/// Largest chunk one read hands to the body stream. Large enough that a 256 KiB range is
/// one read and one hop off the blocking pool.
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
    ObjectMeta { key: key.clone(), len: md.len(), validators: Validators { etag, last_modified: modified } }
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
    file: Arc<Mutex<File>>,
    path: PathBuf,
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
        if range.end - range.start <= READ_CHUNK as u64 {
            // The common case (a slice or a small range): one hop to the blocking pool.
            let chunk = blocking(move || read_chunk(&file, &path, range.start, (range.end - range.start) as usize)).await?;
            return Ok(Box::pin(futures_util::stream::once(async move { Ok(chunk) })));
        }
        // Larger ranges: one blocking task reads ahead into a small channel, so a slow
        // client applies back-pressure instead of the whole range piling up in memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(2);
        tokio::task::spawn_blocking(move || {
            let mut pos = range.start;
            while pos < range.end {
                let want = ((range.end - pos) as usize).min(READ_CHUNK);
                let item = read_chunk(&file, &path, pos, want);
                pos += want as u64;
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return; // reader gone, or error delivered
                }
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })))
    }
}

/// Read exactly `len` bytes at `pos`. Seek + `read_to_end` on a `Take` fills a fresh
/// buffer without zeroing it first, which `pread` into a slice would need; the mutex keeps
/// the shared cursor consistent. A short read means the file shrank under us.
fn read_chunk(file: &Mutex<File>, path: &Path, pos: u64, len: usize) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
    f.seek(SeekFrom::Start(pos)).map_err(|e| Error::io(path.display(), e))?;
    (&mut *f).take(len as u64).read_to_end(&mut buf).map_err(|e| Error::io(path.display(), e))?;
    if buf.len() != len {
        return Err(Error::Changed(path.display().to_string()));
    }
    Ok(Bytes::from(buf))
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[async_trait]
impl ObjectStore for FsStore {
    async fn open(&self, key: &ObjectKey) -> Result<Box<dyn ObjectReader>> {
        let path = self.path_of(key);
        let key = key.clone();
        blocking(move || {
            let file = File::open(&path).map_err(|e| not_found_or_io(&key, &path, e))?;
            let md = file.metadata().map_err(|e| Error::io(path.display(), e))?;
            if !md.is_file() {
                return Err(Error::NotFound(key.to_string()));
            }
            let meta = meta_of(&key, &md);
            Ok(Box::new(FsReader { file: Arc::new(Mutex::new(file)), path, meta }) as Box<dyn ObjectReader>)
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
                } else if name.starts_with('.') && name.contains(".tmp.") {
                    if entry.metadata()?.modified()? < cutoff {
                        std::fs::remove_file(entry.path())?;
                        *n += 1;
                    }
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
