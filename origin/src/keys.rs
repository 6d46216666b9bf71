//! Content keys at the origin: made at packaging, kept wrapped under the KEK in the
//! store (`keys/{cid}.json`), unwrapped to encrypt `enc/` objects on the fly, handed
//! (still wrapped) to the license server, and rewrapped by `segue keys rotate`.

use std::sync::Arc;

use bytes::Bytes;
use segue_core::drm::cipher::ContentKey;
use segue_core::drm::kek::{self, Keks, WrappedKey};
use segue_core::store::{self, ObjectStore};
use segue_core::ContentId;

use crate::error::Error;

/// The wrapped key of `cid`, if it has one.
pub async fn wrapped(store: &dyn ObjectStore, cid: &ContentId) -> Result<Option<WrappedKey>, Error> {
    crate::package::read_json(store, &kek::object_key(cid)).await.map_err(|e| match e {
        Error::Encode(why) => Error::Key(format!("stored key of {cid} is unreadable: {why}")),
        e => e,
    })
}

async fn put(store: &dyn ObjectStore, cid: &ContentId, w: &WrappedKey) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(w).map_err(|e| Error::Key(format!("key of {cid}: {e}")))?;
    store::put_bytes(store, &kek::object_key(cid), Bytes::from(json)).await?;
    Ok(())
}

/// Give `cid` a content key unless it has one. Once made, a key never changes: edges may
/// hold bytes encrypted under it, and devices hold it in licenses.
pub async fn ensure(store: &dyn ObjectStore, keks: &Keks, cid: &ContentId) -> Result<bool, Error> {
    if wrapped(store, cid).await?.is_some() {
        return Ok(false);
    }
    put(store, cid, &keks.wrap(cid, &ContentKey::generate())).await?;
    Ok(true)
}

/// The content key of `cid`, unwrapped; `None` when it has none.
pub async fn content_key(store: &dyn ObjectStore, keks: &Keks, cid: &ContentId) -> Result<Option<ContentKey>, Error> {
    match wrapped(store, cid).await? {
        Some(w) => keks.unwrap(cid, &w).map(Some).map_err(|e| Error::Key(format!("key of {cid}: {e}"))),
        None => Ok(None),
    }
}

/// What `rotate` did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Rotation {
    pub rewrapped: u64,
    pub current: u64,
    pub created: u64,
}

/// Rewrap every content key not under the current KEK, and give every packaged content
/// without a key one. `progress` is called with (done, total) after each content.
pub async fn rotate(store: Arc<dyn ObjectStore>, keks: &Keks, progress: impl Fn(u64, u64)) -> Result<Rotation, Error> {
    let manifests = store.list("manifest/").await?;
    let mut cids: Vec<ContentId> = manifests
        .iter()
        .filter_map(|m| m.key.as_str().strip_prefix("manifest/")?.strip_suffix(".json")?.parse().ok())
        .collect();
    // Keys of content whose manifest is gone are rotated too: nothing may stay under an
    // old KEK that is about to be dropped.
    for k in store.list("keys/").await? {
        if let Some(cid) = k.key.as_str().strip_prefix("keys/").and_then(|r| r.strip_suffix(".json")) {
            if let Ok(cid) = cid.parse() {
                cids.push(cid);
            }
        }
    }
    cids.sort();
    cids.dedup();
    let total = cids.len() as u64;
    let mut done = Rotation::default();
    for (i, cid) in cids.iter().enumerate() {
        match wrapped(store.as_ref(), cid).await? {
            Some(w) if keks.is_current(&w) => done.current += 1,
            Some(w) => {
                let key = keks.unwrap(cid, &w).map_err(|e| Error::Key(format!("key of {cid}: {e}")))?;
                put(store.as_ref(), cid, &keks.wrap(cid, &key)).await?;
                done.rewrapped += 1;
            }
            None => {
                ensure(store.as_ref(), keks, cid).await?;
                done.created += 1;
            }
        }
        progress(i as u64 + 1, total);
    }
    Ok(done)
}
