//! The operator console (`control-plane/web/`): POPs by region, releases with live
//! pre-warm progress, purges with per-POP confirmation. Its files are served at `/` and
//! `/web/*` without authentication (they hold no data); every call it makes carries the
//! operator's control-plane token, like any API client, so a listener's key opens
//! nothing here.
//!
//! Live views are server-sent events: the status of a release or purge, sent whenever it
//! changes (checked twice a second; a status is a few small queries).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Response};
use segue_core::server::Body;
use segue_core::web::File;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::App;

const FILES: &[File] = &[
    File { path: "/", content_type: "text/html; charset=utf-8", bytes: include_bytes!("../web/index.html") },
    File {
        path: "/web/console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/console.js"),
    },
    File {
        path: "/web/console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../web/console.css"),
    },
    segue_core::web::EVENTS_JS,
];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// How often a live view checks for a change.
const CHECK: Duration = Duration::from_millis(500);
/// Checks without a change between keep-alive comments.
const KEEPALIVE_EVERY: u32 = 30;

pub fn serve(path: &str, request: &HeaderMap) -> Option<Response<Body>> {
    segue_core::web::serve(FILES, path, request, CSP)
}

/// What a live view follows.
#[derive(Clone, Copy)]
pub enum Watched {
    Release,
    Purge,
}

/// The status of a release or purge as events: now, then whenever it changes. A purge's
/// stream ends once every POP has answered.
pub async fn status_events(app: &Arc<App>, what: Watched, id: &str) -> Result<Response<Body>, Error> {
    let first = status(app, what, id).await?;
    let (tx, rx) = mpsc::channel(8);
    let (app, id) = (app.clone(), id.to_owned());
    let mut stopping = app.stopping.subscribe();
    tokio::spawn(async move {
        let mut last = first.to_string();
        if tx.send(segue_core::web::event("status", &last)).await.is_err() {
            return;
        }
        let mut quiet = 0;
        loop {
            if matches!(what, Watched::Purge)
                && serde_json::from_str::<serde_json::Value>(&last).is_ok_and(|v| v["ended"] == true)
            {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK) => {}
                _ = tx.closed() => return,
                _ = stopping.changed() => return,
            }
            let now = match status(&app, what, &id).await {
                Ok(v) => v.to_string(),
                Err(e) => {
                    tracing::debug!(id, error = %e, "live status check failed; retrying");
                    continue;
                }
            };
            let message = if now != last {
                quiet = 0;
                last = now;
                segue_core::web::event("status", &last)
            } else {
                quiet += 1;
                if quiet < KEEPALIVE_EVERY {
                    continue;
                }
                quiet = 0;
                segue_core::web::KEEP_ALIVE
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    Ok(segue_core::web::event_stream(rx))
}

async fn status(app: &Arc<App>, what: Watched, id: &str) -> Result<serde_json::Value, Error> {
    let v = match what {
        Watched::Release => serde_json::to_value(crate::api::release_status(app, id).await?),
        Watched::Purge => Ok(crate::api::purge_status(app, id).await?),
    };
    v.map_err(|e| Error::BadRequest(e.to_string()))
}
