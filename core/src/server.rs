//! The HTTP/1.1 server loop every role uses: accept on a bound listener, serve each
//! connection with hyper under header-size, header-time and send-stall limits, and on
//! shutdown stop accepting, let in-flight requests finish for a grace period, then return.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of every Segue server.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
/// The request body type every handler sees, whatever the protocol (HTTP/1.1, HTTP/2 and
/// HTTP/3 requests all arrive as this, so one handler serves the three).
/// (`Sync` too, so handlers may hold `&Request` across an await.)
pub type ReqBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn boxed_request(req: Request<Incoming>) -> Request<ReqBody> {
    req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed())
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Request line plus headers larger than this are refused (431).
    pub max_header_bytes: usize,
    /// A client must send its whole header block within this time.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// A connection (or HTTP/2 or HTTP/3 stream) whose client reads nothing for this long
    /// is closed, so a client that stops reading cannot hold a connection forever.
    pub send_timeout: Duration,
    /// Caps on open connections, shared by every listener given the same one.
    pub limits: Option<Arc<crate::limits::ConnLimits>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            limits: None,
        }
    }
}

/// Serve `handler` on `listener` until `shutdown` resolves, then drain gracefully.
pub async fn serve<H, F>(listener: TcpListener, opts: ServerOptions, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request<ReqBody>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // hyper's minimum read buffer is 8 KiB; headers beyond it get 431.
        .max_buf_size(opts.max_header_bytes.max(8192))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = &mut shutdown => break,
        };
        let Ok(admitted) = admit(&opts, peer, "http/1.1") else { continue };
        let h = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let fut = h(boxed_request(req), peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder.serve_connection(TokioIo::new(send_stall_limited(stream, opts.send_timeout)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                connection_error(peer, "http/1.1", &e);
            }
            drop(admitted);
        });
    }
    drop(listener);
    drain(graceful, opts.shutdown_grace).await;
}

/// Whether a connection from `peer` may be served (`Err`: refused, to be dropped at once).
pub(crate) fn admit(
    opts: &ServerOptions,
    peer: SocketAddr,
    protocol: &'static str,
) -> Result<Option<crate::limits::Admitted>, ()> {
    match &opts.limits {
        None => Ok(None),
        Some(l) => l.admit(peer.ip(), protocol).map(Some).ok_or(()),
    }
}

/// The next connection, with Nagle off. Accept errors (EMFILE and friends) back off
/// instead of spinning. Cancel-safe: used in `select!` against shutdown.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection's writes fail with `TimedOut` once one has waited `limit` for the
/// client to read (nginx's `send_timeout`): a stalled reader frees its connection.
fn send_stall_limited(
    stream: tokio::net::TcpStream,
    limit: Duration,
) -> std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<crate::zerocopy::ZeroCopyStream>>> {
    let mut stream = tokio_io_timeout::TimeoutStream::new(crate::zerocopy::ZeroCopyStream::new(stream));
    stream.set_write_timeout(Some(limit));
    Box::pin(stream)
}

/// Log a connection that ended in error, counting clients cut off for not reading.
fn connection_error(peer: SocketAddr, protocol: &'static str, e: &(dyn std::error::Error + 'static)) {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            send_timed_out(peer, protocol);
            return;
        }
        source = err.source();
    }
    tracing::debug!(%peer, error = %e, "connection ended with an error");
}

/// A client that stopped reading was cut off.
pub(crate) fn send_timed_out(peer: SocketAddr, protocol: &'static str) {
    tracing::info!(%peer, protocol, "client stopped reading; closed after the send timeout");
    metrics::counter!("http_send_timeouts_total", "protocol" => protocol).increment(1);
}

/// Let in-flight requests finish for `grace`, then give up on them.
async fn drain(graceful: hyper_util::server::graceful::GracefulShutdown, grace: Duration) {
    tracing::info!("shutting down: draining connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "connections still open after the grace period; closing them");
    }
}

/// HTTP/2 limits on TLS listeners: enough concurrency and window for audio bodies, and
/// bounds that cut off clients abusing the protocol (stream floods, rapid resets).
const H2_MAX_STREAMS: u32 = 256;
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONN_WINDOW: u32 = 8 << 20;
const H2_MAX_PENDING_RESETS: usize = 32;
const H2_MAX_ERROR_RESETS: usize = 256;

/// Serve `handler` on a TLS listener: HTTP/2 or HTTP/1.1 by ALPN, the same handler as
/// the plain listener. The TLS handshake must finish within the header timeout. Each
/// connection takes the TLS config current at accept time, so a reload reaches new
/// connections and leaves established ones alone.
pub async fn serve_tls<H, F>(
    listener: TcpListener,
    tls: crate::tls::SharedConfig,
    opts: ServerOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<ReqBody>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(opts.max_header_bytes as u32)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(1 << 20)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = &mut shutdown => break,
        };
        let Ok(admitted) = admit(&opts, peer, "tls") else { continue };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.read().unwrap_or_else(|p| p.into_inner()).clone());
        let (h, builder, watcher, handshake, send_timeout) =
            (handler.clone(), builder.clone(), graceful.watcher(), opts.header_read_timeout, opts.send_timeout);
        tokio::spawn(async move {
            let stream = send_stall_limited(stream, send_timeout);
            let tls_stream = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let kind = match s.get_ref().1.handshake_kind() {
                        Some(rustls::HandshakeKind::Resumed) => "resumed",
                        _ => "full",
                    };
                    metrics::counter!("tls_handshakes_total", "kind" => kind).increment(1);
                    s
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    metrics::counter!("tls_handshake_failures_total").increment(1);
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    metrics::counter!("tls_handshake_failures_total").increment(1);
                    return;
                }
            };
            let stalls = crate::stall_watch::ConnWatch::new(send_timeout);
            let streams = stalls.clone();
            let service = hyper::service::service_fn(move |req| {
                let fut = h(boxed_request(req), peer);
                let streams = streams.clone();
                async move { Ok::<_, Infallible>(fut.await.map(|b| streams.wrap(b))) }
            });
            let conn = builder.serve_connection(TokioIo::new(tls_stream), service).into_owned();
            tokio::select! {
                result = watcher.watch(conn) => {
                    if let Err(e) = result {
                        connection_error(peer, "tls", &*e);
                    }
                }
                // Every stream stalled: dropping the connection closes it. Counted under
                // the listener's label like a socket write timeout: which of the two
                // fires first on a stalled HTTP/2 client is a race.
                () = stalls.run() => send_timed_out(peer, "tls"),
            }
            drop(admitted);
        });
    }
    drop(listener);
    drain(graceful, opts.shutdown_grace).await;
}

/// Bind `addr` and print the `listening on ADDR` line operators and tests wait for.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // Install the metrics recorder before the server records anything: what is recorded
    // before it exists is lost.
    crate::telemetry::metrics();
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    tracing::info!(%local, "listening");
    Ok(listener)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// `{"error": "...", "detail": "..."}` with `status`: the one error body shape of Segue.
pub fn json_error(status: StatusCode, error: &str, detail: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "detail": detail }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

/// `GET /metrics` in Prometheus text format.
pub fn metrics_response() -> Response<Body> {
    let mut resp = Response::new(full(crate::telemetry::metrics().render()));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}

/// `GET /healthz`.
pub fn health_response() -> Response<Body> {
    let mut resp = Response::new(full("ok\n"));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    resp
}

/// `status` with `v` as a JSON body.
pub fn json_response(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    }
}

/// Read a JSON request body of at most `max` bytes into `T`; the error says what is
/// wrong with it (too large, unreadable, not the expected JSON), for a 400 answer.
pub async fn read_json<T: serde::de::DeserializeOwned>(req: Request<ReqBody>, max: usize) -> Result<T, String> {
    let bytes = read_body(req, max).await?;
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Read a request body of at most `max` bytes; the error says what went wrong.
pub async fn read_body(req: Request<ReqBody>, max: usize) -> Result<Vec<u8>, String> {
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max {
                return Err(format!("body over {max} bytes"));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Whether the request's bearer token is one of `tokens`. Every token is compared, each in
/// constant time, so timing reveals neither which one nor how much of one matched.
pub fn bearer_matches(headers: &http::HeaderMap, tokens: &[String]) -> bool {
    let Some(given) = bearer(headers).filter(|g| !g.is_empty()) else { return false };
    tokens.iter().fold(false, |ok, t| ok | crate::token::constant_time_eq(t.as_bytes(), given.as_bytes()))
}

/// The value of `name` in a query string (no percent-decoding: Segue's own parameters
/// never need it).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The answer for a role's error: the JSON body, a warning in the log for server-side
/// failures, and the headers the status calls for (`WWW-Authenticate` on 401,
/// `Retry-After` on 503).
pub fn error_response(status: StatusCode, code: &str, error: &dyn std::fmt::Display) -> Response<Body> {
    if status.is_server_error() {
        tracing::warn!(error = %error, "request failed");
    }
    let mut r = json_error(status, code, &error.to_string());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}
