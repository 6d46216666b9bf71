//! The access log: one JSON line per request (time, client, method, path without its
//! query (tokens are secrets), the stream session of a signed URL, Range, status, body bytes really sent, whether the response was cut short,
//! cache result, protocol, milliseconds to the head and to the end), written when the
//! response ends (sent whole, failed, or abandoned by the client), appended to a file by
//! a writer task so a slow disk never holds a request. When the queue is full a line is
//! dropped and counted (`edge_access_log_dropped_total`). Rotate with copytruncate; the
//! file is opened in append mode.

use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Frame;
use segue_core::server::{Body, BoxError};

use tokio::sync::mpsc;

/// Lines waiting for the writer at most.
const QUEUE: usize = 65_536;

pub struct AccessLog {
    tx: mpsc::Sender<String>,
}

#[derive(serde::Serialize)]
pub struct Entry {
    pub ts_ms: u64,
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    /// The stream session of a signed URL (`sid`): not a secret, what reconciling plays
    /// with deliveries matches on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes sent (handed to the connection).
    pub bytes: u64,
    /// The body ended before all of it was sent: the client went away, or the response
    /// failed mid-body (an upstream died) and was cut off.
    pub aborted: bool,
    pub cache: Option<String>,
    pub protocol: &'static str,
    /// Milliseconds to the response head, and to the end of the body.
    pub head_ms: f64,
    pub ms: f64,
}

/// A response body that writes its access log line when it ends or is dropped.
pub struct Logged {
    inner: Body,
    log: Arc<AccessLog>,
    entry: Option<Entry>,
    started: Instant,
    /// The length the response promised, when it did.
    expected: Option<u64>,
    ended: bool,
}

impl Logged {
    pub fn new(inner: Body, log: Arc<AccessLog>, entry: Entry, started: Instant, expected: Option<u64>) -> Self {
        Logged { inner, log, entry: Some(entry), started, expected, ended: false }
    }

    fn write(&mut self, failed: bool) {
        if let Some(mut e) = self.entry.take() {
            let complete = match self.expected {
                Some(n) => e.bytes >= n,
                None => self.ended,
            };
            e.aborted = failed || !complete;
            e.ms = self.started.elapsed().as_secs_f64() * 1000.0;
            self.log.log(&e);
        }
    }
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(e)) = (f.data_ref(), this.entry.as_mut()) {
                    e.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.write(true),
            Poll::Ready(None) => {
                this.ended = true;
                this.write(false);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.ended |= hyper::body::Body::is_end_stream(&self.inner);
        self.write(false);
    }
}

impl AccessLog {
    /// Open (append, create) `path` and start the writer task.
    pub fn open(path: &str) -> std::io::Result<AccessLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
            while let Some(line) = rx.recv().await {
                let _ = out.write_all(line.as_bytes());
                // Take what else is queued, then flush once: lines reach the file within
                // a batch, not one write per request.
                while let Ok(more) = rx.try_recv() {
                    let _ = out.write_all(more.as_bytes());
                }
                if let Err(e) = out.flush() {
                    tracing::warn!(error = %e, "access log write failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let _ = out.flush();
        });
        Ok(AccessLog { tx })
    }

    pub fn log(&self, entry: &Entry) {
        let mut line = serde_json::to_string(entry).unwrap_or_default();
        line.push('\n');
        if self.tx.try_send(line).is_err() {
            metrics::counter!("edge_access_log_dropped_total").increment(1);
        }
    }
}
