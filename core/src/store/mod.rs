//! Object stores: where packaged audio lives. A real seam with two real implementations,
//! the local filesystem (embedded default) and S3-compatible storage (at scale).
//!
//! Reads go through an [`ObjectReader`] opened on one version of an object, so every
//! range of a multi-range response comes from the same bytes; a store that cannot pin a
//! version (S3) makes each read conditional on the ETag and reports [`Error::Changed`].

use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::conditional::Validators;
use crate::error::{Error, Result};
use crate::key::ObjectKey;

pub mod fs;
pub mod s3;

pub use fs::FsStore;
pub use s3::{S3Settings, S3Store};

/// A stream of body chunks. An `Err` item means the body is incomplete.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub len: u64,
    pub validators: Validators,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Open the current version of `key` for ranged reads.
    async fn open(&self, key: &ObjectKey) -> Result<Box<dyn ObjectReader>>;

    /// Metadata of the current version of `key`.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        Ok(self.open(key).await?.meta().clone())
    }

    /// Store `body` under `key` atomically: readers see the old object or all of the new
    /// one, never a part. Returns once the object is durable.
    async fn put(&self, key: &ObjectKey, body: ByteStream) -> Result<ObjectMeta>;

    /// Remove `key`; removing a missing key succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Where the objects live, for logs (`file:///data`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
}

#[async_trait]
pub trait ObjectReader: Send + Sync {
    fn meta(&self) -> &ObjectMeta;

    /// Stream bytes `range` (half-open, within `0..len`) of the opened version.
    async fn read(&self, range: Range<u64>) -> Result<ByteStream>;
}

/// Readers refuse ranges outside the opened object rather than return short bodies.
fn check_range(meta: &ObjectMeta, range: &Range<u64>) -> Result<()> {
    if range.start > range.end || range.end > meta.len {
        return Err(Error::invalid("range", format!("{range:?} is outside 0..{}", meta.len)));
    }
    Ok(())
}

/// Convenience wrappers over [`ObjectStore::put`] for callers holding bytes or a file.
pub async fn put_bytes(store: &dyn ObjectStore, key: &ObjectKey, data: Bytes) -> Result<ObjectMeta> {
    store.put(key, Box::pin(futures_util::stream::once(async move { Ok(data) }))).await
}

pub async fn put_file(store: &dyn ObjectStore, key: &ObjectKey, path: &Path) -> Result<ObjectMeta> {
    let file = tokio::fs::File::open(path).await.map_err(|e| Error::io(path.display(), e))?;
    let name = path.display().to_string();
    let stream = futures_util::stream::unfold((file, name), |(mut file, name)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), (file, name))),
            Err(e) => Some((Err(Error::io(&name, e)), (file, name))),
        }
    });
    store.put(key, Box::pin(stream)).await
}

/// Read a whole object into memory (small objects only: manifests, seek tables).
pub async fn read_all(store: &dyn ObjectStore, key: &ObjectKey) -> Result<Bytes> {
    use futures_util::TryStreamExt;
    let reader = store.open(key).await?;
    let len = reader.meta().len;
    let chunks: Vec<Bytes> = reader.read(0..len).await?.try_collect().await?;
    Ok(chunks.concat().into())
}

/// Open the store a `--data-dir` value names: `s3://bucket[/prefix]` selects S3 (with
/// `s3` settings), anything else is a filesystem directory.
pub async fn open_store(location: &str, s3: &S3Settings) -> Result<Arc<dyn ObjectStore>> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Ok(Arc::new(S3Store::new(bucket, prefix, s3)?))
    } else {
        Ok(Arc::new(FsStore::new(location)?))
    }
}
