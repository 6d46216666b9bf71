//! Fetching audio by HTTP Range from the edge, as a stream of chunks, with the second
//! POP as fallback, counting every byte that crosses the network. A download that fails
//! part way resumes from the next byte on the other POP rather than starting over.
//!
//! Connections are kept alive per POP: a request that read its body to the end gives
//! its connection back, and the next request to that POP (the rest of a prefetched track,
//! a skip, a seek) takes it instead of paying a new handshake. A connection the server
//! closed while it was idle is replaced once, transparently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use segue_core::client::{ClientBody, Connection, Connector, Protocol};

use crate::cache::{Cache, Local};
use crate::meter::{Meter, Transfer};
use crate::Error;

/// Kept-alive connections by POP (`http[s]://host:port`): idle HTTP/1.1 ones, or the one
/// HTTP/2 connection every request to that POP shares.
#[derive(Clone, Default)]
struct Pool(Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<Connection>>>>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

/// Idle connections kept per POP at most (a player has a handful of requests in flight).
const IDLE_PER_POP: usize = 4;

impl Pool {
    /// A connection for a request: an idle HTTP/1.1 one (taken out), or a handle on the
    /// shared HTTP/2 one (which stays).
    fn take(&self, base: &str) -> Option<Connection> {
        let mut pool = self.0.lock().ok()?;
        let conns = pool.get_mut(base)?;
        match conns.last()?.share() {
            Some(shared) => Some(shared),
            None => conns.pop(),
        }
    }

    fn put(&self, base: String, conn: Connection) {
        if let Ok(mut p) = self.0.lock() {
            let conns = p.entry(base).or_default();
            match conn.share() {
                // One HTTP/2 connection per POP: a new one replaces one that failed.
                Some(_) => *conns = vec![conn],
                None if conns.len() < IDLE_PER_POP => conns.push(conn),
                None => {}
            }
        }
    }
}

/// How to reach POPs over https: whom to trust, and HTTP/2 or HTTP/1.1 over TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    /// `None`: the system's trust store, read when the first https:// POP is reached
    /// (a session of http:// POPs never reads it).
    pub roots: Option<rustls::RootCertStore>,
    pub protocol: Protocol,
}

/// Fetches with a byte counter shared by the whole session.
#[derive(Debug, Clone)]
pub struct Fetcher {
    bytes: Arc<AtomicU64>,
    failovers: Arc<AtomicU64>,
    /// How long a request may wait for its response head or its next chunk.
    pub timeout: Option<Duration>,
    /// Where `offline:` URLs are read from (and decrypted), with no network.
    pub library: Option<Arc<crate::library::Library>>,
    /// Reuse connections (the default); false opens one per request.
    pub keep_alive: bool,
    pool: Pool,
    /// Connections opened.
    connections: Arc<AtomicU64>,
    /// The bandwidth estimate, from every transfer.
    meter: Meter,
    /// The on-device cache: objects it holds are read from it, not the edge.
    pub cache: Option<Arc<Cache>>,
    /// How to reach https:// POPs (none: https URLs fail with a clear error).
    pub tls: Option<Tls>,
    /// A connector per POP, built once: its TLS config keeps the session cache that
    /// lets a new connection resume instead of a full handshake.
    connectors: Arc<std::sync::Mutex<std::collections::HashMap<String, Connector>>>,
    /// The system's trust store once read (for `Tls { roots: None }`), shared by POPs.
    system_roots: Arc<std::sync::OnceLock<rustls::RootCertStore>>,
    /// One HTTP/2 connect at a time per POP.
    gates: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// The strong ETag each object path was served with (`None`: differing ones, or
    /// none), for the cache.
    etags: Arc<std::sync::Mutex<std::collections::HashMap<String, Option<String>>>>,
}

impl Default for Fetcher {
    fn default() -> Fetcher {
        Fetcher {
            bytes: Arc::default(),
            failovers: Arc::default(),
            timeout: None,
            library: None,
            keep_alive: true,
            pool: Pool::default(),
            connections: Arc::default(),
            meter: Meter::default(),
            cache: None,
            tls: None,
            connectors: Arc::default(),
            system_roots: Arc::default(),
            gates: Arc::default(),
            etags: Arc::default(),
        }
    }
}

/// The path of a URL, without its query.
pub(crate) fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split('?').next().unwrap_or(path)
}

/// `http[s]://host:port` and the path with its query, of a URL.
fn split(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => ("http", r),
        (_, Some(r)) => ("https", r),
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((format!("{scheme}://{host}"), if path.is_empty() { "/".into() } else { path.into() }))
}

impl Fetcher {
    /// A fetcher whose every response head and body chunk must arrive within `timeout`.
    pub fn with_timeout(timeout: Duration) -> Fetcher {
        Fetcher { timeout: Some(timeout), ..Fetcher::default() }
    }

    /// Bytes of audio and tables received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Throughput of the fetches so far, kbit/s (0 before any): bytes over the time
    /// spent waiting for them, fetches at the same time counted once.
    pub fn kbps(&self) -> f64 {
        self.meter.mean_kbps()
    }

    /// The recent bandwidth, kbit/s, by the weighted median of recent transfers (what
    /// tiers are chosen by); `None` before any.
    pub fn estimate_kbps(&self) -> Option<f64> {
        self.meter.estimate_kbps()
    }

    /// The strong ETag every response for `url`'s path carried, when they all carried
    /// the same one.
    pub fn etag(&self, url: &str) -> Option<String> {
        self.etags.lock().ok()?.get(path_of(url))?.clone()
    }

    fn saw_etag(&self, url: &str, etag: Option<&str>) {
        let strong = etag.filter(|e| e.starts_with('"')).map(str::to_owned);
        if let Ok(mut seen) = self.etags.lock() {
            seen.entry(path_of(url).to_owned())
                .and_modify(|e| {
                    if *e != strong {
                        *e = None;
                    }
                })
                .or_insert(strong);
        }
    }

    /// Times a fetch went to the other POP.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Connections opened so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The connector for POP `base`, built on first use.
    fn connector(&self, base: &str) -> Result<Connector, String> {
        if let Some(c) = self.connectors.lock().ok().and_then(|m| m.get(base).cloned()) {
            return Ok(c);
        }
        let (addr, host, secure) = segue_core::client::resolve(base).map_err(|e| e.to_string())?;
        let connector = match (&self.tls, secure) {
            (_, false) => Connector::new(Protocol::Http1, addr, &host, None),
            (Some(tls), true) => {
                let roots = match (&tls.roots, self.system_roots.get()) {
                    (Some(roots), _) | (None, Some(roots)) => roots.clone(),
                    (None, None) => {
                        let roots = segue_core::tls::trusted_roots("", "--ca-file")
                            .map_err(|e| format!("{base}: https needs trusted CA certificates (--ca-file): {e}"))?;
                        self.system_roots.get_or_init(|| roots).clone()
                    }
                };
                Connector::new(tls.protocol, addr, &host, Some(roots))
            }
            (None, true) => return Err(format!("{base}: https needs trusted CA certificates (--ca-file)")),
        }
        .map_err(|e| format!("{base}: {e}"))?;
        if let Ok(mut m) = self.connectors.lock() {
            m.insert(base.to_owned(), connector.clone());
        }
        Ok(connector)
    }

    /// A kept-alive connection to `base`, if there is one. HTTP/2 connects here, once:
    /// requests that start together (the seek table and the first audio) wait for the
    /// first one's connection and share it rather than each opening their own.
    async fn pooled(
        &self,
        base: &str,
        connector: &Connector,
    ) -> Result<Option<Connection>, segue_core::server::BoxError> {
        if let Some(conn) = self.pool.take(base) {
            return Ok(Some(conn));
        }
        if !connector.protocol().multiplexes() {
            return Ok(None);
        }
        let gate = self.gates.lock().map(|mut g| g.entry(base.to_owned()).or_default().clone());
        let gate = gate.map_err(|_| "the connection gate lock is poisoned")?;
        let _one = gate.lock().await;
        if let Some(conn) = self.pool.take(base) {
            return Ok(Some(conn));
        }
        let conn = self.connect(connector).await?;
        let shared = conn.share();
        self.pool.put(base.to_owned(), conn);
        Ok(shared)
    }

    async fn connect(&self, connector: &Connector) -> Result<Connection, segue_core::server::BoxError> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        connector.connect().await
    }

    /// A download of `url` from byte `from` to `to` (inclusive; `None`: to the end),
    /// going to `fallback` when `url` fails.
    pub fn download(&self, url: &str, fallback: Option<&str>, from: u64, to: Option<u64>) -> Download {
        let mut urls = vec![url.to_owned()];
        urls.extend(fallback.map(str::to_owned));
        let local = self.cache.as_ref().and_then(|c| c.lookup(url));
        Download {
            local,
            fetcher: self.clone(),
            urls,
            which: 0,
            next: from,
            end: to,
            body: None,
            conn: None,
            errors: Vec::new(),
            transfer: None,
        }
    }

    /// GET `url` whole (the bytes `range`, inclusive, when given); on an error or a 5xx,
    /// the rest from `fallback`.
    pub async fn get(&self, url: &str, fallback: Option<&str>, range: Option<(u64, u64)>) -> Result<Bytes, Error> {
        let (from, to) = range.map_or((0, None), |(a, b)| (a, Some(b)));
        let mut download = self.download(url, fallback, from, to);
        let mut all = BytesMut::new();
        while let Some(chunk) = download.next().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }
}

/// One object (or range of it) arriving chunk by chunk.
pub struct Download {
    /// The object's copy in the on-device cache, read instead of the network.
    local: Option<Local>,
    fetcher: Fetcher,
    /// The POP URLs to try, the stream answer's first.
    urls: Vec<String>,
    which: usize,
    /// The next byte wanted, and the last (inclusive) when known.
    next: u64,
    end: Option<u64>,
    body: Option<ClientBody>,
    /// The connection the body comes on, and its POP: back to the pool when the body ends.
    conn: Option<(String, Connection)>,
    /// Failures since the last byte arrived, one per URL tried.
    errors: Vec<String>,
    /// For the bandwidth estimate: running while a request is out.
    transfer: Option<Transfer>,
}

impl Download {
    /// The next chunk, or `None` at the end. A failed request, a 5xx, a stall longer
    /// than the timeout or a body cut short moves to the other POP from the next byte;
    /// when every POP has failed without a byte in between, the error names them all.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        if let Some(rel) = self.urls[0].strip_prefix(crate::library::SCHEME) {
            let library = self.fetcher.library.as_ref().ok_or_else(|| Error::Fetch {
                url: self.urls[0].clone(),
                detail: "offline URLs need an offline library".into(),
            })?;
            let chunk = library.read(rel, self.next, self.end)?;
            if let Some(c) = &chunk {
                self.next += c.len() as u64;
            }
            return Ok(chunk);
        }
        if let (Some(local), Some(cache)) = (&self.local, &self.fetcher.cache) {
            let chunk = cache.read(local, self.next, self.end)?;
            if let Some(c) = &chunk {
                self.next += c.len() as u64;
            }
            return Ok(chunk);
        }
        loop {
            if self.end.is_some_and(|e| self.next > e) {
                self.finish().await;
                return Ok(None);
            }
            if self.body.is_none() {
                let transfer = self.transfer.get_or_insert_with(|| self.fetcher.meter.start());
                let wait = transfer.wait();
                let opened = self.open().await;
                drop(wait);
                match opened {
                    Ok(Some(body)) => self.body = Some(body),
                    Ok(None) => return Ok(None),
                    Err(e) => {
                        self.fail(e)?;
                        continue;
                    }
                }
            }
            let Some(body) = self.body.as_mut() else { continue };
            let wait = self.transfer.as_ref().map(Transfer::wait);
            let frame = match self.fetcher.timeout {
                Some(t) => match tokio::time::timeout(t, body.frame()).await {
                    Ok(f) => f,
                    Err(_) => {
                        self.fail(format!("no data for {t:?}"))?;
                        continue;
                    }
                },
                None => body.frame().await,
            };
            drop(wait);
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    // Never more than asked for, whatever the server sends.
                    let want = self.end.map_or(u64::MAX, |e| e + 1 - self.next);
                    let data = data.slice(..(data.len() as u64).min(want) as usize);
                    self.next += data.len() as u64;
                    self.fetcher.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(t) = &self.transfer {
                        t.bytes(data.len() as u64);
                    }
                    self.errors.clear();
                    return Ok(Some(data));
                }
                Some(Err(e)) => self.fail(e.to_string())?,
                None if self.end.is_some_and(|e| self.next <= e) => {
                    self.fail(format!("the body ended at byte {}, before byte {}", self.next, self.end.unwrap_or(0)))?
                }
                None => {
                    self.finish().await;
                    return Ok(None);
                }
            }
        }
    }

    /// Every wanted byte is in: give the connection back once its body has ended (a
    /// connection with body bytes still to come cannot carry another request).
    async fn finish(&mut self) {
        self.transfer = None;
        let (Some(mut body), Some((base, conn))) = (self.body.take(), self.conn.take()) else { return };
        if !self.fetcher.keep_alive {
            return;
        }
        let ended = matches!(tokio::time::timeout(Duration::from_millis(100), body.frame()).await, Ok(None));
        if ended {
            self.fetcher.pool.put(base, conn);
        }
    }

    /// Send the request for the bytes still wanted: the body, or `None` when the
    /// server says there are none (416 on an open-ended range past the end).
    async fn open(&mut self) -> Result<Option<ClientBody>, String> {
        let (base, path) = split(&self.urls[self.which])?;
        let connector = self.fetcher.connector(&base)?;
        let mut req = Request::get(path);
        match self.end {
            Some(e) => req = req.header(header::RANGE, format!("bytes={}-{e}", self.next)),
            None if self.next > 0 => req = req.header(header::RANGE, format!("bytes={}-", self.next)),
            None => {}
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        let fetcher = &self.fetcher;
        let exchange = async {
            let again = copy(&req);
            let pooled = match fetcher.keep_alive {
                true => fetcher.pooled(&base, &connector).await?,
                false => None,
            };
            match pooled {
                Some(mut conn) => match conn.send(req).await {
                    Ok(resp) => Ok((conn, resp)),
                    // Closed by the server while idle: once more on a new connection.
                    Err(_) => {
                        let mut conn = fetcher.connect(&connector).await?;
                        let resp = conn.send(again).await?;
                        Ok((conn, resp))
                    }
                },
                None => {
                    let mut conn = fetcher.connect(&connector).await?;
                    let resp = conn.send(req).await?;
                    Ok::<_, segue_core::server::BoxError>((conn, resp))
                }
            }
        };
        let resp = match self.fetcher.timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| format!("no answer within {t:?}"))?,
            None => exchange.await,
        }
        .map_err(|e| e.to_string())?;
        let (conn, resp) = resp;
        if conn.share().is_some() {
            // HTTP/2: shared at once; nothing to give back when the body ends.
            if self.fetcher.keep_alive {
                self.fetcher.pool.put(base, conn);
            }
        } else {
            self.conn = Some((base, conn));
        }
        let (parts, body) = resp.into_parts();
        if parts.status.is_success() {
            let etag = parts.headers.get(header::ETAG).and_then(|v| v.to_str().ok());
            self.fetcher.saw_etag(&self.urls[self.which], etag);
        }
        match parts.status {
            StatusCode::PARTIAL_CONTENT => {
                // The range may end before the one asked for: the object is shorter.
                let range = parts.headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
                match range.and_then(content_range) {
                    Some((first, last)) if first == self.next => {
                        self.end = Some(self.end.map_or(last, |e| e.min(last)));
                        Ok(Some(body))
                    }
                    _ => Err(format!("206 with Content-Range {range:?} for a range from byte {}", self.next)),
                }
            }
            StatusCode::OK if self.next == 0 => {
                // Its length, so that a body cut short is noticed and resumed.
                let len = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if let Some(last) = len.and_then(|l| l.checked_sub(1)) {
                    self.end = Some(self.end.map_or(last, |e| e.min(last)));
                }
                Ok(Some(body))
            }
            StatusCode::OK => Err(format!("200 for a range from byte {}: the server ignored Range", self.next)),
            StatusCode::RANGE_NOT_SATISFIABLE if self.end.is_none() => Ok(None),
            s => {
                let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Err(format!("{s}: {}", String::from_utf8_lossy(&text[..text.len().min(200)]).trim()))
            }
        }
    }

    /// Note a failure of the current URL and move to the next one; an error once every
    /// URL has failed since the last byte.
    fn fail(&mut self, detail: String) -> Result<(), Error> {
        self.body = None;
        self.conn = None;
        self.transfer = None;
        let url = &self.urls[self.which];
        self.errors.push(format!("{url}: {detail}"));
        if self.errors.len() >= self.urls.len() {
            return Err(Error::Fetch { url: self.urls[0].clone(), detail: self.errors.join("; ") });
        }
        tracing::warn!(url, error = %detail, next = self.next, "fetch failed; going on from the other POP");
        self.fetcher.failovers.fetch_add(1, Ordering::Relaxed);
        self.which = (self.which + 1) % self.urls.len();
        Ok(())
    }
}

/// A GET's method, path and headers again (its body is empty), for a retry.
fn copy(req: &Request<()>) -> Request<()> {
    let mut again = Request::new(());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.headers_mut() = req.headers().clone();
    again
}

/// The first and last byte of a `Content-Range: bytes A-B/LEN` value.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (range, _len) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_ranges_parse() {
        assert_eq!(super::content_range("bytes 0-99/1000"), Some((0, 99)));
        assert_eq!(super::content_range("bytes 500-999/*"), Some((500, 999)));
        assert_eq!(super::content_range("bytes */1000"), None);
        assert_eq!(super::content_range("bytes 9-1/10"), None);
        assert_eq!(super::content_range("items 0-1/2"), None);
    }

    #[test]
    fn urls_split_into_base_and_path() {
        assert_eq!(
            super::split("http://127.0.0.1:8080/a/x/high.ogg?exp=1&sig=2").unwrap(),
            ("http://127.0.0.1:8080".into(), "/a/x/high.ogg?exp=1&sig=2".into())
        );
        assert_eq!(super::split("https://pop.example:8443").unwrap(), ("https://pop.example:8443".into(), "/".into()));
        assert!(super::split("ftp://x/").is_err());
        assert_eq!(super::path_of("https://p:1/a/c/high.ogg?sig=1"), "/a/c/high.ogg");
    }
}
