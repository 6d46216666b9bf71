//! Serving one object from the store: method and token checks, then the shared object
//! response (`segue_core::respond`).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use segue_core::respond;
use segue_core::server::Body;
use segue_core::store::ObjectReader;
use segue_core::ObjectPath;

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

    let reader: Arc<dyn ObjectReader> = Arc::from(state.store.open(&path.key()).await.map_err(|e| match e {
        segue_core::Error::NotFound(_) => Error::NotFound(path.http_path()),
        e => Error::Store(e),
    })?);
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
