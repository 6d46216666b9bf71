//! A send timeout per response stream. On HTTP/2 a client that withholds WINDOW_UPDATE
//! stalls its streams without ever blocking a socket write, so the connection-level
//! send timeout never fires and each stalled stream holds its response (a cache reader,
//! buffers) forever. Every response body on a TLS connection is watched: one that the
//! connection has not asked for more of within the limit is dropped (its resources
//! freed; the stream is reset if it is ever polled again), and a connection whose every
//! open stream is stalled is closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use crate::server::{Body, BoxError};

pub struct ConnWatch {
    streams: Mutex<Vec<Weak<Stream>>>,
    limit: Duration,
    started: Instant,
}

struct Stream {
    /// Milliseconds after the connection's start of the last time the body was polled.
    polled_ms: AtomicU64,
    body: Mutex<Option<Body>>,
    timed_out: AtomicBool,
}

/// A watched response body.
pub struct Watched {
    stream: Arc<Stream>,
    watch: Arc<ConnWatch>,
}

impl ConnWatch {
    pub fn new(limit: Duration) -> Arc<Self> {
        Arc::new(ConnWatch { streams: Mutex::default(), limit, started: Instant::now() })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn wrap(self: &Arc<Self>, body: Body) -> Body {
        let stream = Arc::new(Stream {
            polled_ms: AtomicU64::new(self.now_ms()),
            body: Mutex::new(Some(body)),
            timed_out: AtomicBool::new(false),
        });
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&stream));
        http_body_util::BodyExt::boxed_unsync(Watched { stream, watch: self.clone() })
    }

    /// Watch the connection's streams; returns when the connection should be closed
    /// (it has open streams and every one of them is stalled).
    pub async fn run(self: Arc<Self>) {
        let tick = (self.limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let limit = self.limit.as_millis() as u64;
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now_ms();
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            streams.retain(|w| w.strong_count() > 0);
            let (mut open, mut stalled) = (0, 0);
            for s in streams.iter().filter_map(Weak::upgrade) {
                open += 1;
                if s.timed_out.load(Ordering::Relaxed) {
                    stalled += 1;
                } else if now.saturating_sub(s.polled_ms.load(Ordering::Relaxed)) > limit {
                    s.timed_out.store(true, Ordering::Relaxed);
                    // Free what the response holds now, not when the client comes back.
                    drop(s.body.lock().unwrap_or_else(|p| p.into_inner()).take());
                    metrics::counter!("http_stream_send_timeouts_total").increment(1);
                    stalled += 1;
                }
            }
            if open > 0 && stalled == open {
                tracing::info!(streams = open, "every stream stalled past the send timeout; closing the connection");
                return;
            }
        }
    }
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.stream.polled_ms.store(this.watch.now_ms(), Ordering::Relaxed);
        if this.stream.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err("the client did not read this response within the send timeout".into())));
        }
        let mut body = this.stream.body.lock().unwrap_or_else(|p| p.into_inner());
        match body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let body = self.stream.body.lock().unwrap_or_else(|p| p.into_inner());
        // A dropped (timed out) body is not at its end: the next poll resets the stream
        // rather than ending a truncated response cleanly.
        body.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let body = self.stream.body.lock().unwrap_or_else(|p| p.into_inner());
        body.as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}
