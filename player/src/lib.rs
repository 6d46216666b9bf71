//! The Segue player: the client library a listening app embeds.
//!
//! Given a queue of tracks it asks the app API for stream URLs (`api`), fetches the audio
//! by HTTP Range from the edge, falling back to the second POP on errors (`fetch`),
//! decodes Ogg Vorbis as the bytes arrive and trims it to the exact samples the seek table promises
//! (`decode`), one track per deck (`deck`), and plays the queue on two decks: gapless or crossfaded, prefetching the
//! next tracks' first bytes, fading out instead of cutting when the next track is late
//! (`engine`); `render` writes what it plays to a WAV file. Each play is kept in an
//! on-device outbox (`outbox`) before it is reported to the app API (`report`).

#![forbid(unsafe_code)]

pub mod adapt;
pub mod api;
pub mod cache;
mod convert;
mod deck;
pub mod decode;
pub mod engine;
pub mod fetch;
pub mod library;
pub mod meter;
pub mod outbox;
mod output;
pub mod render;
pub mod report;
pub mod sync;

/// The player's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The app API refused or failed (status and its JSON error when it sent one).
    #[error("app API: {0}")]
    Api(String),
    /// Every POP failed for a URL.
    #[error("fetch {url}: {detail}")]
    Fetch { url: String, detail: String },
    /// The audio or seek table is not what it should be.
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Io(String),
}
