//! What a scenario sees, on one clock: every range its listeners fetched (when, how long
//! to the first byte, from which POP, hit or not, failed or not), the origin's counters
//! polled from outside, and the scenario's own marks (a drop, a kill). Folded into
//! per-second rows at the end.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One range request a listener made.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the watch started, when the request was sent.
    pub t: f64,
    pub ttfb_ms: f64,
    pub ok: bool,
    pub hit: bool,
    /// The POP's `X-Cache` label (HIT-MEM, HIT-SSD, MISS, STALE, REVALIDATED, ...).
    pub cache: String,
    pub bytes: u64,
    /// The POP's base URL.
    pub pop: String,
    /// The content id of the object.
    pub cid: String,
    /// Why it failed (empty when it did not).
    pub error: String,
    /// The first range of a track (what a listener waits for after pressing play).
    pub first: bool,
}

/// A moment the scenario marks on the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    pub t: f64,
    pub what: String,
}

pub struct Watch {
    start: Instant,
    samples: Mutex<Vec<Sample>>,
    /// (t, content requests, body bytes) of the origin, as polled.
    origin: Mutex<Vec<(f64, u64, u64)>>,
    marks: Mutex<Vec<Mark>>,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: f64,
    pub origin_requests: u64,
    pub origin_bytes: u64,
    pub ranges: u64,
    pub errors: u64,
    pub hits: u64,
    pub ttfb_p50_ms: f64,
    pub ttfb_p99_ms: f64,
    /// Ranges answered, by POP (base URL).
    pub per_pop: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub marks: Vec<Mark>,
    pub seconds: Vec<Second>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OriginTotals {
    /// Content requests (objects, manifests, seek tables; not health checks or scrapes).
    pub requests: u64,
    pub bytes: u64,
    /// Polls that found the origin down.
    pub unreachable_polls: u64,
}

/// Sum of a metric's samples whose labels contain `label`, in a Prometheus text page.
pub fn metric(page: &str, name: &str, label: &str) -> u64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    pub fn new() -> Watch {
        Watch { start: Instant::now(), samples: Mutex::default(), origin: Mutex::default(), marks: Mutex::default() }
    }

    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn at(&self, i: Instant) -> f64 {
        i.saturating_duration_since(self.start).as_secs_f64()
    }

    pub fn record(&self, s: Sample) {
        if let Ok(mut v) = self.samples.lock() {
            v.push(s);
        }
    }

    pub fn mark(&self, what: impl Into<String>) {
        self.mark_at(self.now(), what);
    }

    /// A mark at `t` seconds (a moment planned ahead, such as a drop).
    pub fn mark_at(&self, t: f64, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(t, what, "scenario");
        if let Ok(mut v) = self.marks.lock() {
            v.push(Mark { t, what });
            v.sort_by(|a, b| a.t.total_cmp(&b.t));
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Poll the origin's `/metrics` every `every` until `stop` is set. A poll the origin
    /// does not answer is kept as a gap.
    pub async fn poll_origin(&self, origin: &str, every: Duration, stop: &tokio::sync::watch::Receiver<bool>) {
        let mut stop = stop.clone();
        loop {
            let t = self.now();
            let answer = segue_core::client::call(origin, http::Method::GET, "/metrics", None, None, every * 5).await;
            let row = match answer {
                Ok((status, page)) if status.is_success() => {
                    let page = String::from_utf8_lossy(&page);
                    (
                        t,
                        metric(&page, "origin_requests_total", "kind=\"content\""),
                        metric(&page, "origin_body_bytes_total", ""),
                    )
                }
                _ => (t, u64::MAX, u64::MAX),
            };
            if let Ok(mut v) = self.origin.lock() {
                v.push(row);
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// The origin's content requests and bytes between `from` and `to` (seconds on this
    /// watch's clock), from the polls nearest before each. A restarted origin's counters
    /// start again from zero: each run of polls between gaps is counted on its own.
    pub fn origin_between(&self, from: f64, to: f64) -> (u64, u64) {
        let rows = self.origin.lock().map(|v| v.clone()).unwrap_or_default();
        let (mut req, mut bytes) = (0, 0);
        let mut last: Option<(u64, u64)> = None;
        let mut after_gap = false;
        for (t, r, b) in rows {
            if r == u64::MAX {
                last = None;
                after_gap = true;
                continue;
            }
            if t > to {
                break;
            }
            // After a gap the origin may have restarted: its counters began at zero.
            let before = last.or(after_gap.then_some((0, 0)));
            if let Some((lr, lb)) = before {
                if t > from {
                    // A counter that went down is a restarted origin: count from zero.
                    req += if r >= lr { r - lr } else { r };
                    bytes += if b >= lb { b - lb } else { b };
                }
            }
            last = Some((r, b));
        }
        (req, bytes)
    }

    /// The first poll after `t` that found the origin answering, following one that did
    /// not: when an origin killed at `t` was back.
    pub fn origin_back_after(&self, t: f64) -> Option<f64> {
        let rows = self.origin.lock().map(|v| v.clone()).unwrap_or_default();
        let mut was_down = false;
        for (at, r, _) in rows.into_iter().filter(|(at, _, _)| *at >= t) {
            if r == u64::MAX {
                was_down = true;
            } else if was_down {
                return Some(at);
            }
        }
        None
    }

    pub fn origin_totals(&self) -> OriginTotals {
        let (requests, bytes) = self.origin_between(f64::MIN, f64::MAX);
        let unreachable_polls =
            self.origin.lock().map(|v| v.iter().filter(|(_, r, _)| *r == u64::MAX).count() as u64).unwrap_or(0);
        OriginTotals { requests, bytes, unreachable_polls }
    }

    /// Per-second rows from 0 to now.
    pub fn timeline(&self) -> Timeline {
        let samples = self.samples();
        let end = self.now().ceil().max(1.0) as usize;
        let mut seconds = Vec::with_capacity(end);
        for i in 0..end {
            let (a, b) = (i as f64, i as f64 + 1.0);
            let here: Vec<&Sample> = samples.iter().filter(|s| s.t >= a && s.t < b).collect();
            let mut ttfb: Vec<f64> = here.iter().filter(|s| s.ok).map(|s| s.ttfb_ms).collect();
            ttfb.sort_by(f64::total_cmp);
            let (origin_requests, origin_bytes) = self.origin_between(a, b);
            let mut per_pop = std::collections::BTreeMap::new();
            for s in here.iter().filter(|s| s.ok) {
                *per_pop.entry(s.pop.clone()).or_insert(0) += 1;
            }
            seconds.push(Second {
                t: a,
                origin_requests,
                origin_bytes,
                ranges: here.len() as u64,
                errors: here.iter().filter(|s| !s.ok).count() as u64,
                hits: here.iter().filter(|s| s.ok && s.hit).count() as u64,
                ttfb_p50_ms: pct(&ttfb, 0.5),
                ttfb_p99_ms: pct(&ttfb, 0.99),
                per_pop,
            });
        }
        Timeline { marks: self.marks.lock().map(|m| m.clone()).unwrap_or_default(), seconds }
    }
}

/// How many of `samples` that succeeded carried each X-Cache label.
pub fn x_cache<'a>(samples: &[&'a Sample]) -> std::collections::BTreeMap<&'a str, u64> {
    let mut labels = std::collections::BTreeMap::new();
    for s in samples.iter().filter(|s| s.ok) {
        *labels.entry(s.cache.as_str()).or_insert(0) += 1;
    }
    labels
}

/// Percentiles of the time to first byte of `samples` that succeeded.
pub fn ttfb(samples: &[&Sample]) -> crate::Percentiles {
    crate::Percentiles::of(samples.iter().filter(|s| s.ok).map(|s| (s.ttfb_ms * 1000.0) as u64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_counts_survive_a_restart_and_gaps() {
        let w = Watch::new();
        {
            let mut o = w.origin.lock().unwrap();
            // Up, 5 requests, down (gap), back from zero with 3 more.
            o.extend([(0.0, 10, 1000), (1.0, 15, 1500), (2.0, u64::MAX, u64::MAX), (3.0, 1, 100), (4.0, 3, 300)]);
        }
        assert_eq!(w.origin_between(f64::MIN, f64::MAX), (8, 800));
        assert_eq!(w.origin_between(0.5, 1.5), (5, 500));
        assert_eq!(w.origin_between(1.5, 3.5), (1, 100));
        assert_eq!(w.origin_totals().unreachable_polls, 1);
    }

    #[test]
    fn metric_sums_matching_lines() {
        let page = "origin_requests_total{method=\"GET\",status=\"200\",kind=\"content\"} 4\n\
                    origin_requests_total{method=\"GET\",status=\"200\",kind=\"health\"} 9\n\
                    origin_requests_total{method=\"GET\",status=\"206\",kind=\"content\"} 3\n\
                    origin_body_bytes_total 1234\n";
        assert_eq!(metric(page, "origin_requests_total", "kind=\"content\""), 7);
        assert_eq!(metric(page, "origin_body_bytes_total", ""), 1234);
    }
}
