//! The bandwidth estimate the player picks tiers by: bytes over the time spent waiting
//! for them. Waits of concurrent fetches share one link, so their time is counted once
//! (the union of the waits, not their sum); time spent decoding between reads is not a
//! wait, so a slow decoder does not read as a slow network. Bytes and waits become
//! samples, summarised by a weighted median of the recent ones, each weighted by the
//! square root of its bytes. The median shrugs off one odd transfer; the weighting lets
//! big transfers, which measure the link rather than its latency, count for more; the cap
//! on total weight keeps only the recent past, so the estimate follows a network that
//! gets worse or better within a few hundred kilobytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Total weight (sum of square roots of sample bytes) kept: eight samples of 64 KiB, or
/// some 25 s of a link that brings 6 KB every half second.
const MAX_WEIGHT: f64 = 2000.0;
/// A sample closes after this much waiting or this many bytes (or when a transfer ends),
/// so a long download keeps the estimate current.
const SAMPLE_WAIT: Duration = Duration::from_millis(500);
const SAMPLE_BYTES: u64 = 256 << 10;
/// No estimate until the session has waited this long or received this much: the first
/// small transfers (a seek table over a fresh TLS connection, from a POP that missed)
/// measure round trips, not the link.
const FIRST_WAIT: Duration = Duration::from_secs(2);
const FIRST_BYTES: u64 = 512 << 10;

#[derive(Debug, Default)]
struct State {
    /// Fetches waiting now, and since when at least one has been.
    waiting: u32,
    since: Option<Instant>,
    /// The open sample: union of waits before `since`, and bytes.
    busy: Duration,
    bytes: u64,
    /// (weight, kbit/s), oldest first.
    samples: VecDeque<(f64, f64)>,
    weight: f64,
    /// Waiting and bytes of every closed sample.
    total_busy: Duration,
    total_bytes: u64,
}

impl State {
    fn busy(&self, now: Instant) -> Duration {
        self.busy + self.since.map_or(Duration::ZERO, |t| now.duration_since(t))
    }

    /// Close the open sample (its bytes over its waiting), starting the next.
    fn sample(&mut self, now: Instant) {
        let busy = self.busy(now);
        let secs = busy.as_secs_f64();
        self.total_busy += busy;
        self.total_bytes += self.bytes;
        if self.bytes > 0 && secs > 0.0 {
            let weight = (self.bytes as f64).sqrt();
            self.samples.push_back((weight, self.bytes as f64 * 8.0 / secs / 1000.0));
            self.weight += weight;
            while self.weight > MAX_WEIGHT && self.samples.len() > 1 {
                if let Some((w, _)) = self.samples.pop_front() {
                    self.weight -= w;
                }
            }
        }
        self.bytes = 0;
        self.busy = Duration::ZERO;
        self.since = self.since.map(|_| now);
    }
}

/// Shared by every fetch of a session.
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<Mutex<State>>);

impl Meter {
    /// A transfer starts; when it ends (or is dropped: a download abandoned at a skip),
    /// the open sample closes.
    pub fn start(&self) -> Transfer {
        Transfer(self.clone())
    }

    /// `n` bytes arrived.
    fn bytes(&self, n: u64) {
        if let Ok(mut s) = self.0.lock() {
            s.bytes += n;
            let now = Instant::now();
            if s.bytes >= SAMPLE_BYTES || s.busy(now) >= SAMPLE_WAIT {
                s.sample(now);
            }
        }
    }

    fn end(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.sample(Instant::now());
        }
    }

    /// The weighted median of the recent samples, kbit/s; `None` until the session has
    /// waited 2 s or received 512 KiB.
    pub fn estimate_kbps(&self) -> Option<f64> {
        let s = self.0.lock().ok()?;
        if s.total_busy < FIRST_WAIT && s.total_bytes < FIRST_BYTES {
            return None;
        }
        let mut sorted: Vec<(f64, f64)> = s.samples.iter().copied().collect();
        sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
        let half = sorted.iter().map(|(w, _)| w).sum::<f64>() / 2.0;
        let mut seen = 0.0;
        for (w, kbps) in &sorted {
            seen += w;
            if seen >= half {
                return Some(*kbps);
            }
        }
        None
    }
}

impl Meter {
    /// Bytes over the time spent waiting for them since the session began, kbit/s (0
    /// before any): the session's mean, concurrent waits counted once.
    pub fn mean_kbps(&self) -> f64 {
        let Ok(s) = self.0.lock() else { return 0.0 };
        let secs = (s.total_busy + s.busy(Instant::now())).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (s.total_bytes + s.bytes) as f64 * 8.0 / secs / 1000.0
    }
}

/// A running transfer.
#[derive(Debug)]
pub struct Transfer(Meter);

impl Transfer {
    /// Waiting for the network (a response head, the next chunk) until the guard drops.
    pub fn wait(&self) -> Wait {
        if let Ok(mut s) = self.0 .0.lock() {
            s.waiting += 1;
            if s.since.is_none() {
                s.since = Some(Instant::now());
            }
        }
        Wait(self.0.clone())
    }

    pub fn bytes(&self, n: u64) {
        self.0.bytes(n);
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A wait in progress.
#[derive(Debug)]
pub struct Wait(Meter);

impl Drop for Wait {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0 .0.lock() {
            s.waiting = s.waiting.saturating_sub(1);
            if s.waiting == 0 {
                let now = Instant::now();
                s.busy = s.busy(now);
                s.since = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(m: &Meter, bytes: u64, ms: u64) {
        let t = m.start();
        let w = t.wait();
        std::thread::sleep(Duration::from_millis(ms));
        drop(w);
        // Decoding between reads is not the network's time.
        std::thread::sleep(Duration::from_millis(ms));
        t.bytes(bytes);
    }

    /// Two transfers waiting at once for `ms`, then `each` bytes for each.
    fn together(m: &Meter, each: u64, ms: u64) {
        let (a, b) = (m.start(), m.start());
        let waits = (a.wait(), b.wait());
        std::thread::sleep(Duration::from_millis(ms));
        drop(waits);
        a.bytes(each);
        b.bytes(each);
    }

    #[test]
    fn the_session_mean_counts_concurrent_waits_once() {
        let (one, two) = (Meter::default(), Meter::default());
        assert_eq!(one.mean_kbps(), 0.0);
        // 40 KB over 200 ms of waiting: by one transfer, and by two at once.
        sample(&one, 40_000, 200);
        together(&two, 20_000, 200);
        let (single, double) = (one.mean_kbps(), two.mean_kbps());
        assert!(single > 0.0 && single <= 1600.0, "{single}");
        assert!(double > single * 0.75 && double <= 1600.0, "{double} vs {single}: the link, not half of it");
    }

    #[test]
    fn the_estimate_follows_the_link_and_counts_concurrent_transfers_once() {
        let m = Meter::default();
        assert_eq!(m.estimate_kbps(), None);
        // Two transfers at once, 40 KB in all over ~100 ms: ~3.2 Mbit/s, not twice that.
        together(&m, 20_000, 100);
        assert_eq!(m.estimate_kbps(), None, "40 KB in 100 ms: round trips more than the link");
        // Past 512 KiB: two at a time, 32 KB every 10 ms, is ~26 Mbit/s, not twice that.
        for _ in 0..20 {
            together(&m, 16_000, 10);
        }
        let est = m.estimate_kbps().unwrap();
        assert!(est < 26_000.0 && est > 10_000.0, "{est}");
        // A much faster link for a good many bytes: the median moves to it.
        for _ in 0..12 {
            sample(&m, 250_000, 5);
        }
        assert!(m.estimate_kbps().unwrap() > 100_000.0, "{:?}", m.estimate_kbps());
        // And back down when the link slows.
        for _ in 0..40 {
            sample(&m, 20_000, 20);
        }
        assert!(m.estimate_kbps().unwrap() < 10_000.0, "{:?}", m.estimate_kbps());
    }
}
