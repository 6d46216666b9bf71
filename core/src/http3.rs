//! HTTP/3 over QUIC with quinn and h3: the server loop (requests become the same
//! `Request<ReqBody>` the TCP listeners hand to the handler, so one handler serves all
//! three protocols). The client side is in `client`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Frame;

use crate::error::Error;
use crate::server::{Body, BoxError, ReqBody, ServerOptions};
use crate::tls::CertSettings;

/// Concurrent request streams per QUIC connection.
const MAX_STREAMS: u32 = 256;
/// How long a draining connection whose requests are answered stays open for their
/// buffered bytes to reach the client.
const DRAIN_LINGER: Duration = Duration::from_secs(3);

fn quic_server_config(certs: &[CertSettings]) -> Result<quinn::ServerConfig, Error> {
    let tls = crate::tls::server_config_for(certs, &[b"h3"], true)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| Error::Config {
        file: "tls".into(),
        field: "tls_certs".into(),
        message: format!("not usable for QUIC: {e}"),
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        .max_concurrent_uni_streams(16u32.into())
        .max_idle_timeout(Duration::from_secs(30).try_into().ok());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Bind the UDP listener and print `listening on ADDR`.
pub fn bind(addr: SocketAddr, certs: &[CertSettings]) -> Result<quinn::Endpoint, Error> {
    let endpoint = quinn::Endpoint::server(quic_server_config(certs)?, addr)
        .map_err(|e| Error::Io { path: addr.to_string(), source: e })?;
    let local = endpoint.local_addr().map_err(|e| Error::Io { path: addr.to_string(), source: e })?;
    println!("listening on {local}");
    tracing::info!(%local, "listening (HTTP/3, UDP)");
    Ok(endpoint)
}

/// Re-read the certificates for new QUIC connections; open ones are untouched.
pub fn reload(endpoint: &quinn::Endpoint, certs: &[CertSettings]) -> Result<(), Error> {
    endpoint.set_server_config(Some(quic_server_config(certs)?));
    Ok(())
}

/// Serve `handler` on `endpoint` until `shutdown`, then close connections gracefully
/// within the grace period.
pub async fn serve<H, F>(endpoint: quinn::Endpoint, opts: ServerOptions, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request<ReqBody>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = &mut shutdown => break,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let peer = incoming.remote_address();
        let Ok(admitted) = crate::server::admit(&opts, peer, "h3") else {
            incoming.refuse();
            continue;
        };
        let (h, max_header, send_timeout) = (handler.clone(), opts.max_header_bytes as u64, opts.send_timeout);
        let stopping = stopping.clone();
        connections.spawn(async move {
            if let Err(e) = connection(incoming, h, max_header, send_timeout, stopping).await {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended with an error");
            }
            drop(admitted);
        });
    }
    // Drain: every connection sends GOAWAY, takes no new requests and ends once those in
    // flight are answered; after the grace period the endpoint closes what is left.
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.shutdown_grace, drained).await.is_err() {
        tracing::warn!(grace = ?opts.shutdown_grace, "HTTP/3 requests still running after the grace period; closing");
    }
    endpoint.close(0u32.into(), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

async fn connection<H, F>(
    incoming: quinn::Incoming,
    handler: Arc<H>,
    max_header: u64,
    send_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    H: Fn(Request<ReqBody>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let conn = incoming.await?;
    let peer = conn.remote_address();
    let quic = conn.clone();
    let mut h3 = h3::server::builder()
        .max_field_section_size(max_header)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await?;
    let mut requests = tokio::task::JoinSet::new();
    let mut draining = false;
    let mut failed = None;
    loop {
        let resolver = tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(r)) => r,
                Ok(None) => break,
                // After GOAWAY the connection may report its closing as an error; the
                // requests already running still get to finish below.
                Err(e) => {
                    failed = (!draining).then_some(e);
                    break;
                }
            },
            // The server is stopping (the only change ever sent), or gone.
            _ = stop.changed(), if !draining => {
                draining = true;
                // GOAWAY names the first stream not served: one past the last accepted
                // (`shutdown(0)` would name the last one and disown its request).
                h3.shutdown(1).await?;
                if requests.is_empty() {
                    break;
                }
                continue;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                if draining && requests.is_empty() {
                    break;
                }
                continue;
            }
        };
        let h = handler.clone();
        requests.spawn(async move {
            let (req, stream) = match resolver.resolve_request().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HTTP/3 request unreadable");
                    return;
                }
            };
            let (mut send, mut recv) = stream.split();
            // The request body, read by its own task as the handler consumes it.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
            tokio::spawn(async move {
                loop {
                    let item = match recv.recv_data().await {
                        Ok(Some(mut buf)) => Ok(Frame::data(buf.copy_to_bytes(buf.remaining()))),
                        Ok(None) => break,
                        Err(e) => Err(Box::new(e) as BoxError),
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            });
            let mut req = req.map(|()| BodyExt::boxed(ChannelBody(rx)));
            *req.version_mut() = http::Version::HTTP_3;
            let (parts, mut body) = h(req, peer).await.into_parts();
            if send.send_response(Response::from_parts(parts, ())).await.is_err() {
                return;
            }
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            // Flow control blocks a stream whose client stops reading;
                            // after the send timeout the stream is reset.
                            match tokio::time::timeout(send_timeout, send.send_data(data)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => return,
                                Err(_) => {
                                    crate::server::send_timed_out(peer, "h3");
                                    send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // Never end a failed body cleanly: reset the stream.
                        tracing::debug!(%peer, error = %e, "HTTP/3 body failed; resetting the stream");
                        send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                        return;
                    }
                }
            }
            let _ = send.finish().await;
        });
    }
    while requests.join_next().await.is_some() {}
    if draining {
        // A finished response may still sit in QUIC's send buffers: closing now would
        // discard it. Linger until the client closes (a client done reading does) or
        // for a few seconds, whichever is first.
        let _ = tokio::time::timeout(DRAIN_LINGER, quic.closed()).await;
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// A request body fed by a channel (the h3 stream is read by its own task).
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}
