//! Connection admission for every listener of a process: at most `max_total` open
//! connections in all and `max_per_ip` from one client address. A connection over
//! either cap is closed as soon as it is accepted (it never costs a TLS handshake or a
//! task), counted, and logged at most every 10 seconds, so a flood is visible without
//! flooding the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Client connections open in this process, over every listener (what a POP reports in
/// its heartbeat).
static OPEN: AtomicUsize = AtomicUsize::new(0);

pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

#[derive(Debug, Default)]
pub struct ConnLimits {
    /// 0: no cap.
    max_total: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Unix seconds of the last "limit reached" warning.
    warned: AtomicU64,
}

/// An admitted connection; its slot is released when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnLimits { max_total, max_per_ip, ..Default::default() })
    }

    /// Admit a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, protocol: &'static str) -> Option<Admitted> {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_total > 0 && open > self.max_total {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused("total", protocol, open - 1);
            return None;
        }
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = per_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                let n = *n;
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.refused("per_ip", protocol, n);
                return None;
            }
            *n += 1;
        }
        metrics::gauge!("http_connections_open").set(open as f64);
        OPEN.fetch_add(1, Ordering::Relaxed);
        Some(Admitted { limits: self.clone(), ip })
    }

    fn refused(&self, limit: &'static str, protocol: &'static str, open: usize) {
        metrics::counter!("http_connections_refused_total", "limit" => limit, "protocol" => protocol).increment(1);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.warned.load(Ordering::Relaxed);
        if now >= last + 10 && self.warned.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let max = if limit == "total" { self.max_total } else { self.max_per_ip };
            tracing::warn!(limit, max, open, "connection limit reached; refusing new connections");
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let l = &self.limits;
        let open = l.open.fetch_sub(1, Ordering::Relaxed) - 1;
        OPEN.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("http_connections_open").set(open as f64);
        if l.max_per_ip > 0 {
            let mut per_ip = l.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address_release_on_drop() {
        let l = ConnLimits::new(3, 2);
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = l.admit(a, "t").unwrap();
        let _a2 = l.admit(a, "t").unwrap();
        assert!(l.admit(a, "t").is_none(), "per address");
        let _b1 = l.admit(b, "t").unwrap();
        assert!(l.admit(b, "t").is_none(), "in all");
        drop(a1);
        assert!(l.admit(a, "t").is_some());
        assert!(ConnLimits::new(0, 0).admit(a, "t").is_some());
    }
}
