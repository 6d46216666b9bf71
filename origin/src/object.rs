//! Serving one object from the store: method and token checks, then the shared object
//! response (`segue_core::respond`).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use segue_core::respond;
use segue_core::server::Body;
use std::ops::Range;

use segue_core::drm::cipher::{ContentKey, ObjectCipher};
use segue_core::store::{ByteStream, ObjectMeta, ObjectReader};
use segue_core::{ContentId, ObjectPath, Tier};

use crate::error::Error;
use crate::State;

pub async fn serve(
    state: &State,
    req: &Request<segue_core::server::ReqBody>,
    path: ObjectPath,
) -> Result<Response<Body>, Error> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(Error::MethodNotAllowed(method.to_string()));
    }
    if state.token_required {
        let country = req.headers().get(&state.country_header).and_then(|v| v.to_str().ok());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        state.verifier.verify(method.as_str(), req.uri().path(), req.uri().query(), now, country)?;
    }

    let reader: Arc<dyn ObjectReader> = match path {
        ObjectPath::Encrypted(cid, tier) => {
            let key = encryption_key(state, &cid).await?;
            let plain = open(state, ObjectPath::Audio(cid, tier), &path).await?;
            Arc::new(Encrypted::new(plain, key, &cid, tier))
        }
        _ => Arc::from(open(state, path, &path).await?),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, state.cache_control.clone());
    if state.surrogate_keys {
        let cid = path.content_id();
        let tags = match path.tier() {
            Some(t) => format!("{cid} {cid}/{t}"),
            None => cid.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&tags) {
            headers.insert("surrogate-key", v);
        }
    }
    let counter = metrics::counter!("origin_body_bytes_total");

    Ok(respond::object_response(method == Method::HEAD, req.headers(), reader, path.content_type(), headers, counter)
        .await?)
}

async fn open(state: &State, what: ObjectPath, asked: &ObjectPath) -> Result<Box<dyn ObjectReader>, Error> {
    state.store.open(&what.key()).await.map_err(|e| match e {
        segue_core::Error::NotFound(_) => Error::NotFound(asked.http_path()),
        e => Error::Store(e),
    })
}

/// The content key for an `enc/` request: from the cache, else unwrapped from the store.
async fn encryption_key(state: &State, cid: &ContentId) -> Result<ContentKey, Error> {
    let Some(keks) = &state.keks else {
        return Err(Error::NotFound(format!(
            "/enc/{cid}/..: encrypted variants are off on this origin (no [drm] kek_file or SEGUE_KEK)"
        )));
    };
    if let Some(k) = state.content_keys.get(cid) {
        return Ok(k);
    }
    let key = crate::keys::content_key(state.store.as_ref(), keks, cid)
        .await?
        .ok_or_else(|| Error::NotFound(format!("/enc/{cid}/..: this content has no key (run `segue keys rotate`)")))?;
    state.content_keys.insert(*cid, key.clone());
    Ok(key)
}

/// An `enc/` object: the plain object's bytes under AES-128-CTR, encrypted as they are
/// read (`segue_core::drm::cipher` has the layout). Same length, so ranges map one to
/// one; its own strong validator, derived from the plain one's.
struct Encrypted {
    plain: Box<dyn ObjectReader>,
    meta: ObjectMeta,
    key: ContentKey,
    cid: ContentId,
    tier: Tier,
}

impl Encrypted {
    fn new(plain: Box<dyn ObjectReader>, key: ContentKey, cid: &ContentId, tier: Tier) -> Self {
        let mut meta = plain.meta().clone();
        meta.key = ObjectPath::Encrypted(*cid, tier).key();
        if !meta.validators.etag.is_empty() {
            meta.validators.etag.push_str("-enc");
        }
        Encrypted { plain, meta, key, cid: *cid, tier }
    }
}

#[async_trait::async_trait]
impl ObjectReader for Encrypted {
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    async fn read(&self, range: Range<u64>) -> segue_core::Result<ByteStream> {
        use futures_util::StreamExt;
        let mut cipher = ObjectCipher::new(&self.key, &self.cid, self.tier);
        let mut offset = range.start;
        let stream = self.plain.read(range).await?;
        let encrypted = metrics::counter!("origin_encrypted_bytes_total");
        Ok(Box::pin(stream.map(move |chunk| {
            chunk.map(|b| {
                let mut out = bytes::BytesMut::from(&b[..]);
                cipher.apply(offset, &mut out);
                offset += out.len() as u64;
                encrypted.increment(out.len() as u64);
                out.freeze()
            })
        })))
    }
}
