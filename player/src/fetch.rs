//! Fetching audio by HTTP Range from the edge, with the second POP as fallback, counting
//! every byte that crosses the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use segue_core::client::Connector;

use crate::Error;

/// Fetches with a byte counter shared by the whole session.
#[derive(Debug, Clone, Default)]
pub struct Fetcher {
    bytes: Arc<AtomicU64>,
    /// Microseconds spent in fetches, for the bandwidth estimate.
    busy_us: Arc<AtomicU64>,
    failovers: Arc<AtomicU64>,
    pub timeout: Option<Duration>,
}

/// `http://host:port` and the path with its query, of a URL.
fn split(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((format!("http://{host}"), if path.is_empty() { "/".into() } else { path.into() }))
}

impl Fetcher {
    /// A fetcher whose every request must be answered within `timeout`.
    pub fn with_timeout(timeout: Duration) -> Fetcher {
        Fetcher { timeout: Some(timeout), ..Fetcher::default() }
    }

    /// Bytes of audio and tables received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Throughput of the fetches so far, kbit/s (0 before any).
    pub fn kbps(&self) -> f64 {
        let us = self.busy_us.load(Ordering::Relaxed);
        if us == 0 {
            return 0.0;
        }
        self.bytes() as f64 * 8.0 / (us as f64 / 1e6) / 1000.0
    }

    /// Times a fetch went to the fallback POP.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// GET `url` (the bytes `range`, inclusive, when given); on an error or a 5xx, the same
    /// from `fallback`.
    pub async fn get(&self, url: &str, fallback: Option<&str>, range: Option<(u64, u64)>) -> Result<Bytes, Error> {
        match self.once(url, range).await {
            Ok(b) => Ok(b),
            Err(first) => match fallback {
                Some(f) => {
                    tracing::warn!(url, error = %first, "fetch failed; trying the fallback POP");
                    self.failovers.fetch_add(1, Ordering::Relaxed);
                    self.once(f, range).await.map_err(|detail| Error::Fetch {
                        url: url.to_owned(),
                        detail: format!("{first}; fallback: {detail}"),
                    })
                }
                None => Err(Error::Fetch { url: url.to_owned(), detail: first }),
            },
        }
    }

    async fn once(&self, url: &str, range: Option<(u64, u64)>) -> Result<Bytes, String> {
        let (base, path) = split(url)?;
        let connector = Connector::http(&base).map_err(|e| e.to_string())?;
        let mut req = Request::get(path);
        if let Some((a, b)) = range {
            req = req.header(header::RANGE, format!("bytes={a}-{b}"));
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let exchange = segue_core::client::fetch(&connector, req);
        let (resp, body) = match self.timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| format!("no answer within {t:?}"))?,
            None => exchange.await,
        }
        .map_err(|e| e.to_string())?;
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        self.busy_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match resp.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(body),
            s => Err(format!("{s}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]).trim())),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_split_into_base_and_path() {
        assert_eq!(
            super::split("http://127.0.0.1:8080/a/x/high.ogg?exp=1&sig=2").unwrap(),
            ("http://127.0.0.1:8080".into(), "/a/x/high.ogg?exp=1&sig=2".into())
        );
        assert!(super::split("https://x/").is_err());
    }
}
