//! `[subsonic] stream = "proxy"`: for players that cannot follow a redirect, the app API
//! fetches the signed edge URL itself and relays the answer as it arrives (never
//! buffered whole), passing the client's `Range` and `If-Range` through, so seeking
//! still costs one ranged request at the edge and the POP's cache still serves it.

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use segue_core::server::Body;

use super::Failure;

/// Request headers passed to the edge.
const FORWARDED: [HeaderName; 2] = [header::RANGE, header::IF_RANGE];
/// Response headers passed back to the player.
const RELAYED: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
];

/// GET `url` (an edge's `http://` URL) with the player's range headers; the edge's
/// status, the headers a player needs, and the body as a stream.
pub async fn relay(
    url: &str,
    from_client: &HeaderMap,
    timeout: std::time::Duration,
) -> Result<Response<Body>, Failure> {
    let unavailable = |e: String| {
        tracing::warn!(error = %e, "subsonic proxy: the edge did not answer");
        Failure::new(0, "the stream is unavailable; try again")
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Failure::new(0, "proxy mode reaches POPs over http:// only; use stream = \"redirect\""))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let connector =
        segue_core::client::Connector::http(&format!("http://{authority}")).map_err(|e| unavailable(e.to_string()))?;
    let mut req = Request::get(&path).header(header::HOST, authority);
    for name in FORWARDED {
        if let Some(v) = from_client.get(&name) {
            req = req.header(name, v);
        }
    }
    let req = req.body(()).map_err(|e| unavailable(e.to_string()))?;
    let answer = tokio::time::timeout(timeout, async {
        let mut conn = connector.connect().await?;
        conn.send(req).await
    })
    .await
    .map_err(|_| unavailable(format!("no answer within {timeout:?}")))?
    .map_err(|e| unavailable(e.to_string()))?;
    let (parts, body) = answer.into_parts();
    if parts.status.is_server_error() {
        return Err(unavailable(format!("the edge answered {}", parts.status)));
    }
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    for name in RELAYED {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    Ok(out)
}
