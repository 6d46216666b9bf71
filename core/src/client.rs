//! The HTTP client every Segue tool shares (load generator, player, tests): one
//! `Connection` type over HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over TLS and HTTP/3 over
//! QUIC, so callers write one request loop and pick the protocol at run time.
//!
//! HTTP/2 and HTTP/3 connections multiplex: `Connection::share` hands out another
//! handle on the same connection for concurrent requests.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::server::BoxError;

/// A response body, whatever the protocol it arrived over.
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// HTTP/2's default (and smallest) maximum frame size.
const H2_DEFAULT_FRAME: u32 = 16 * 1024;

/// The wire protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 over plain TCP.
    Http1,
    /// HTTP/1.1 over TLS.
    Http1Tls,
    /// HTTP/2 over TLS (ALPN `h2`).
    Http2,
    /// HTTP/3 over QUIC.
    Http3,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::Http1, Protocol::Http1Tls, Protocol::Http2, Protocol::Http3];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http1Tls => "h1-tls",
            Protocol::Http2 => "h2",
            Protocol::Http3 => "h3",
        }
    }

    pub fn uses_tls(self) -> bool {
        self != Protocol::Http1
    }

    /// Several requests in flight on one connection.
    pub fn multiplexes(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Http3)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown protocol {s:?}: expected one of h1, h1-tls, h2, h3"))
    }
}

/// Where and how to connect: build once, then `connect` as often as needed.
#[derive(Clone)]
pub struct Connector {
    protocol: Protocol,
    /// HTTP/2: the largest frame this client accepts (SETTINGS_MAX_FRAME_SIZE).
    h2_max_frame: u32,
    addr: SocketAddr,
    /// `host[:port]` for Host / `:authority`.
    authority: Arc<str>,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    quic: Option<quinn::Endpoint>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("protocol", &self.protocol).field("addr", &self.addr).finish()
    }
}

/// The CA certificates in a PEM file, as a root store.
pub fn roots_from_pem(path: &Path) -> Result<rustls::RootCertStore, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable CA certificate", path.display()).into());
    }
    Ok(roots)
}

/// The address, host name and scheme (true: https) of `http[s]://host[:port][/...]`,
/// the host resolved now.
pub fn resolve(base_url: &str) -> Result<(SocketAddr, String, bool), BoxError> {
    let (rest, secure) = match (base_url.strip_prefix("http://"), base_url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => return Err(format!("{base_url:?} is not an http:// or https:// URL").into()),
    };
    let hostport = rest.split('/').next().unwrap_or(rest);
    let with_port = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:{}", if secure { 443 } else { 80 })
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(with_port.as_str())
        .map_err(|e| format!("{base_url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{base_url:?}: the host has no address"))?;
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    Ok((addr, host.to_owned(), secure))
}

impl Connector {
    /// `server_name` is the TLS name (SNI and certificate check) and the authority sent;
    /// `roots` are trusted for TLS (required unless `protocol` is plain HTTP/1.1).
    /// HTTP/3 binds a UDP socket, so call this inside a Tokio runtime.
    pub fn new(
        protocol: Protocol,
        addr: SocketAddr,
        server_name: &str,
        roots: Option<rustls::RootCertStore>,
    ) -> Result<Self, BoxError> {
        let authority: Arc<str> = if server_name.is_empty() {
            addr.to_string().into()
        } else {
            format!("{server_name}:{}", addr.port()).into()
        };
        let mut connector =
            Connector { protocol, addr, authority, tls: None, quic: None, h2_max_frame: H2_DEFAULT_FRAME };
        if !protocol.uses_tls() {
            return Ok(connector);
        }
        let roots = roots.ok_or("TLS needs trusted CA certificates")?;
        let name =
            ServerName::try_from(server_name.to_owned()).map_err(|e| format!("server name {server_name:?}: {e}"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if protocol == Protocol::Http3 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![match protocol {
            Protocol::Http1Tls => b"http/1.1".to_vec(),
            Protocol::Http2 => b"h2".to_vec(),
            _ => b"h3".to_vec(),
        }];
        if protocol == Protocol::Http3 {
            let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls.clone())?;
            use std::net::{Ipv4Addr, Ipv6Addr};
            let bind: SocketAddr = match (addr.is_ipv4(), addr.ip().is_loopback()) {
                (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
                (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
                (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let mut endpoint = quinn::Endpoint::client(bind)?;
            let mut transport = quinn::TransportConfig::default();
            // Audio bodies: windows large enough to keep a fast path full.
            transport.stream_receive_window((4u32 << 20).into()).receive_window((16u32 << 20).into());
            let mut config = quinn::ClientConfig::new(Arc::new(quic));
            config.transport_config(Arc::new(transport));
            endpoint.set_default_client_config(config);
            connector.quic = Some(endpoint);
        }
        connector.tls = Some((Arc::new(tls), name));
        Ok(connector)
    }

    /// HTTP/2: accept DATA frames of up to `bytes` (16 KiB to 16 MiB - 1, clamped). The
    /// default, 16 KiB, is what browsers accept; a server sends audio in fewer, larger
    /// frames to a client that accepts them.
    pub fn with_h2_max_frame(mut self, bytes: u32) -> Self {
        self.h2_max_frame = bytes.clamp(H2_DEFAULT_FRAME, (1 << 24) - 1);
        self
    }

    /// A plain HTTP/1.1 connector for `http://host:port` (a trailing path is ignored),
    /// resolving the host now.
    pub fn http(base_url: &str) -> Result<Self, BoxError> {
        Connector::for_url(base_url, None)
    }

    /// An HTTP/1.1 connector for `http://host:port` or, with `tls` (whom to trust, which
    /// client certificate to present), `https://host:port` (default port 443); a
    /// trailing path is ignored and the host is resolved now.
    pub fn for_url(base_url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, BoxError> {
        let (addr, host, secure) = resolve(base_url)?;
        let host = host.as_str();
        if !secure {
            return Connector::new(Protocol::Http1, addr, host, None);
        }
        let tls = tls.ok_or_else(|| format!("{base_url:?}: https needs a TLS client config"))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("server name {host:?}: {e}"))?;
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector {
            protocol: Protocol::Http1Tls,
            addr,
            authority: format!("{host}:{}", addr.port()).into(),
            tls: Some((Arc::new(tls), name)),
            quic: None,
            h2_max_frame: H2_DEFAULT_FRAME,
        })
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Open a new connection (TCP + TLS handshake, or a QUIC handshake).
    pub async fn connect(&self) -> Result<Connection, BoxError> {
        let authority = self.authority.clone();
        if let Some(endpoint) = &self.quic {
            let name = self.tls.as_ref().map(|(_, n)| n.to_str().into_owned()).unwrap_or_default();
            let conn = endpoint.connect(self.addr, &name)?.await?;
            let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
            // The driver ends when the connection closes (all senders dropped, or an error).
            tokio::spawn(async move {
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            });
            return Ok(Connection { authority, inner: Inner::H3(sender) });
        }
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let _ = tcp.set_nodelay(true);
        let Some((tls, name)) = &self.tls else {
            let (send, conn) = hyper::client::conn::http1::Builder::new()
                .read_buf_exact_size(Some(256 * 1024))
                .handshake(TokioIo::new(tcp))
                .await?;
            tokio::spawn(conn);
            return Ok(Connection { authority, inner: Inner::H1(send) });
        };
        let stream = tokio_rustls::TlsConnector::from(tls.clone()).connect(name.clone(), tcp).await?;
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if self.protocol == Protocol::Http2 {
            if alpn.as_deref() != Some(b"h2") {
                return Err("the server did not agree to HTTP/2 (ALPN)".into());
            }
            let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .max_frame_size(self.h2_max_frame)
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake(TokioIo::new(stream))
                .await?;
            tokio::spawn(conn);
            return Ok(Connection { authority, inner: Inner::H2(send) });
        }
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(256 * 1024))
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(conn);
        Ok(Connection { authority, inner: Inner::H1(send) })
    }
}

/// An open connection to one server.
pub struct Connection {
    authority: Arc<str>,
    inner: Inner,
}

enum Inner {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
    H3(h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>),
}

impl Connection {
    /// Another handle on the same connection, for a concurrent request (HTTP/2 and
    /// HTTP/3 only).
    pub fn share(&self) -> Option<Connection> {
        let inner = match &self.inner {
            Inner::H1(_) => return None,
            Inner::H2(s) => Inner::H2(s.clone()),
            Inner::H3(s) => Inner::H3(s.clone()),
        };
        Some(Connection { authority: self.authority.clone(), inner })
    }

    /// Send `req` (its URI a path and query; scheme and authority are filled in) and
    /// return the response with its body still streaming.
    pub async fn send(&mut self, req: Request<()>) -> Result<Response<ClientBody>, BoxError> {
        self.send_body(req.map(|()| Bytes::new())).await
    }

    /// `send` with a request body.
    pub async fn send_body(&mut self, req: Request<Bytes>) -> Result<Response<ClientBody>, BoxError> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        match &mut self.inner {
            Inner::H1(send) => {
                parts.uri = Uri::try_from(path)?;
                if !parts.headers.contains_key(header::HOST) {
                    parts.headers.insert(header::HOST, HeaderValue::from_str(&self.authority)?);
                }
                send.ready().await?;
                let resp = send.send_request(Request::from_parts(parts, Full::new(body))).await?;
                Ok(resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
            }
            Inner::H2(send) => {
                parts.uri = Uri::try_from(format!("https://{}{path}", self.authority))?;
                parts.version = http::Version::HTTP_2;
                send.ready().await?;
                let resp = send.send_request(Request::from_parts(parts, Full::new(body))).await?;
                Ok(resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
            }
            Inner::H3(send) => {
                parts.uri = Uri::try_from(format!("https://{}{path}", self.authority))?;
                parts.version = http::Version::HTTP_3;
                let mut stream = send.send_request(Request::from_parts(parts, ())).await?;
                if !body.is_empty() {
                    stream.send_data(body).await?;
                }
                stream.finish().await?;
                let resp = stream.recv_response().await?;
                let chunks = futures_util::stream::unfold(Some(stream), |state| async move {
                    let mut stream = state?;
                    match stream.recv_data().await {
                        Ok(Some(mut chunk)) => {
                            Some((Ok(Frame::data(chunk.copy_to_bytes(chunk.remaining()))), Some(stream)))
                        }
                        Ok(None) => None,
                        Err(e) => Some((Err(Box::new(e) as BoxError), None)),
                    }
                });
                Ok(resp.map(|()| StreamBody::new(chunks).boxed_unsync()))
            }
        }
    }
}

/// One request on a fresh connection: the response head and the whole body.
pub async fn fetch(connector: &Connector, req: Request<()>) -> Result<(Response<()>, Bytes), BoxError> {
    fetch_body(connector, req.map(|()| Bytes::new())).await
}

/// `fetch` with a request body.
pub async fn fetch_body(connector: &Connector, req: Request<Bytes>) -> Result<(Response<()>, Bytes), BoxError> {
    let mut conn = connector.connect().await?;
    let (parts, body) = conn.send_body(req).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((Response::from_parts(parts, ()), body))
}

/// One HTTP/1.1 request to `base` (`http://host:port`) + `path` on a fresh connection,
/// with `Authorization: Bearer token` when given and a JSON body when given, answered
/// within `timeout`: the status and the whole body. Errors are text naming the failure.
/// (Control traffic between Segue roles: heartbeats, control-plane and origin calls.)
pub async fn call(
    base: &str,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Bytes>,
    timeout: std::time::Duration,
) -> Result<(http::StatusCode, Bytes), String> {
    call_with(base, None, method, path, token, body, timeout).await
}

/// [`call`] to an `http://` or (with `tls`) `https://` base.
pub async fn call_with(
    base: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Bytes>,
    timeout: std::time::Duration,
) -> Result<(http::StatusCode, Bytes), String> {
    let (resp, body) = call_full(base, tls, method, path, token, body, timeout).await?;
    Ok((resp.status(), body))
}

/// [`call_with`], answering the whole response head (for headers such as `Retry-After`).
pub async fn call_full(
    base: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Bytes>,
    timeout: std::time::Duration,
) -> Result<(Response<()>, Bytes), String> {
    let exchange = async {
        let connector = Connector::for_url(base, tls).map_err(|e| e.to_string())?;
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(body.unwrap_or_default()).map_err(|e| e.to_string())?;
        fetch_body(&connector, req).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
}
