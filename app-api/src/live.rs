//! Live playlist updates for editors (server-sent events): `GET /v1/playlists/ID/events`
//! sends the playlist's version at once and again whenever it changes, so every open
//! editor fetches the new list within a second of anyone's edit.
//!
//! An edit on this replica wakes the playlist's streams at once; edits applied by other
//! replicas are seen by a once-a-second check of the version (one indexed read per open
//! stream), so the stream needs no shared bus.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use segue_core::server::Body;
use tokio::sync::{broadcast, mpsc};

use crate::catalog::User;
use crate::error::Error;
use crate::App;

/// Streams open at once on this replica; past it, 503 (each holds a connection and a task).
const MAX_STREAMS: usize = 10_000;
/// How often a stream checks the version without being woken, and sends a comment to
/// keep proxies from closing an idle connection.
const CHECK: Duration = Duration::from_secs(1);
const KEEPALIVE_EVERY: u32 = 15;

pub struct Live {
    changed: broadcast::Sender<Arc<str>>,
    open: Arc<AtomicUsize>,
}

impl Default for Live {
    fn default() -> Self {
        Live { changed: broadcast::channel(1024).0, open: Arc::new(AtomicUsize::new(0)) }
    }
}

impl Live {
    /// A playlist changed here: wake its streams.
    pub fn playlist_changed(&self, id: &str) {
        let _ = self.changed.send(id.into());
    }
}

/// Counts an open stream for as long as it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The event stream of playlist `id`, for a user who may edit it.
pub async fn playlist_events(app: &Arc<App>, id: &str, user: &User) -> Result<Response<Body>, Error> {
    let first = crate::playlists::get(&app.pool, id, user).await?;
    let live = &app.live;
    if live.open.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        live.open.fetch_sub(1, Ordering::Relaxed);
        return Err(Error::Unavailable("too many live streams on this server; poll /ops instead".into()));
    }
    let open = Open(live.open.clone());
    let mut woken = live.changed.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let (app, id, user) = (app.clone(), id.to_owned(), user.clone());
    tokio::spawn(async move {
        let _open = open;
        let mut version = first.version;
        if tx.send(event(version)).await.is_err() {
            return;
        }
        let mut quiet = 0u32;
        loop {
            tokio::select! {
                got = woken.recv() => match got {
                    Ok(changed) if *changed != *id => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                    // This one, or missed wake-ups: check.
                    _ => {}
                },
                _ = tokio::time::sleep(CHECK) => {}
                _ = tx.closed() => return,
            }
            match crate::playlists::get(&app.pool, &id, &user).await {
                Ok(p) if p.version != version => {
                    version = p.version;
                    quiet = 0;
                    if tx.send(event(version)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {
                    quiet += 1;
                    if quiet >= KEEPALIVE_EVERY {
                        quiet = 0;
                        if tx.send(segue_core::web::KEEP_ALIVE).await.is_err() {
                            return;
                        }
                    }
                }
                // Deleted, or the user lost access: the stream ends.
                Err(Error::NotFound(_)) | Err(Error::Forbidden(_)) => {
                    let _ = tx.send(segue_core::web::event("gone", "{}")).await;
                    return;
                }
                Err(e) => tracing::debug!(playlist = id, error = %e, "live playlist check failed; retrying"),
            }
        }
    });
    Ok(segue_core::web::event_stream(rx))
}

fn event(version: i64) -> Bytes {
    segue_core::web::event("version", &format!("{{\"version\":{version}}}"))
}
