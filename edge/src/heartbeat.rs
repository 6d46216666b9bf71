//! Registration with the control plane: a heartbeat every few seconds carrying this
//! POP's identity, addresses and cache figures. The answer lists the content embargoed in
//! this POP's region (a release not yet dropped there), which `State::embargoed` enforces
//! on every request, cached or not.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{header, Method, Request};
use serde::Deserialize;

use crate::config::{Config, ControlPlaneSettings};
use crate::State;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    embargoes: Vec<Embargo>,
}

#[derive(Deserialize)]
struct Embargo {
    content_id: String,
    until: i64,
}

/// What one heartbeat says, fixed at start.
struct Identity {
    id: String,
    public_url: String,
    admin_url: String,
}

/// Send heartbeats until the edge is gone. The first goes out at once.
pub fn spawn(state: &Arc<State>, config: &Config, cp: ControlPlaneSettings) {
    let identity = Identity {
        id: config.via_name(),
        public_url: if cp.public_url.is_empty() { format!("http://{}", config.listen) } else { cp.public_url.clone() },
        admin_url: match (&cp.admin_url, config.admin_listen) {
            (u, _) if !u.is_empty() => u.clone(),
            (_, Some(a)) => format!("http://{a}"),
            _ => String::new(),
        },
    };
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let every = Duration::from_secs(cp.heartbeat_secs);
        let mut failing = false;
        loop {
            match beat(&weak, &cp, &identity).await {
                Some(Ok(())) => {
                    if failing {
                        tracing::info!(control_plane = cp.url, "control plane reachable again");
                    }
                    failing = false;
                }
                Some(Err(e)) => {
                    if !failing {
                        tracing::warn!(control_plane = cp.url, error = %e, "heartbeat failed; keeping the last embargo list");
                    }
                    failing = true;
                    metrics::counter!("edge_heartbeat_failures_total").increment(1);
                }
                None => break,
            }
            tokio::time::sleep(every).await;
        }
    });
}

async fn beat(weak: &Weak<State>, cp: &ControlPlaneSettings, me: &Identity) -> Option<Result<(), String>> {
    let state = weak.upgrade()?;
    let requests = state.served.load(Ordering::Relaxed);
    let hits = state.hits.load(Ordering::Relaxed);
    let (ssd_written, _) = state.cache.ssd_io();
    let body = serde_json::json!({
        "id": me.id,
        "region": cp.region,
        "version": env!("CARGO_PKG_VERSION"),
        "public_url": me.public_url,
        "admin_url": me.admin_url,
        "mem_bytes": state.cache.memory_bytes(),
        "ssd_bytes": ssd_written,
        "hit_ratio": if requests == 0 { 0.0 } else { hits as f64 / requests as f64 },
        "healthy": true,
    });
    drop(state);
    let result = async {
        let connector = segue_core::client::Connector::http(&cp.url).map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/pops/heartbeat")
            .header(header::AUTHORIZATION, format!("Bearer {}", cp.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string().into())
            .map_err(|e| e.to_string())?;
        let (resp, bytes) =
            tokio::time::timeout(Duration::from_secs(10), segue_core::client::fetch_body(&connector, req))
                .await
                .map_err(|_| "no answer within 10 s".to_string())?
                .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}: {}", resp.status(), String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice::<Answer>(&bytes).map_err(|e| format!("bad answer: {e}"))
    }
    .await;
    Some(result.map(|answer| {
        if let Some(state) = weak.upgrade() {
            let map: HashMap<String, i64> = answer.embargoes.into_iter().map(|e| (e.content_id, e.until)).collect();
            state.set_embargoes(map);
        }
    }))
}
