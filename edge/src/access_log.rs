//! The access log: one JSON line per request (time, client, method, path without its
//! query, Range, status, body length, cache result, protocol, milliseconds), appended
//! to a file by a writer task so a slow disk never holds a request. When the queue is
//! full a line is dropped and counted (`edge_access_log_dropped_total`). Rotate with
//! copytruncate; the file is opened in append mode.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

/// Lines waiting for the writer at most.
const QUEUE: usize = 65_536;

pub struct AccessLog {
    tx: mpsc::Sender<String>,
}

#[derive(serde::Serialize)]
pub struct Entry<'a> {
    pub ts_ms: u64,
    pub peer: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub range: Option<&'a str>,
    pub status: u16,
    pub bytes: Option<u64>,
    pub cache: Option<&'a str>,
    pub protocol: &'a str,
    pub ms: f64,
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

    pub fn log(&self, entry: &Entry<'_>) {
        let mut line = serde_json::to_string(entry).unwrap_or_default();
        line.push('\n');
        if self.tx.try_send(line).is_err() {
            metrics::counter!("edge_access_log_dropped_total").increment(1);
        }
    }
}
