//! `segue-core`: the contracts every Segue role shares on the wire and on disk.
//! Nothing here is specific to one role; anything two roles must agree on lives here once.

#![deny(unsafe_code)] // allowed only in `zerocopy`, which hands mapped bytes to sendfile

pub mod client;
pub mod conditional;
pub mod config;
pub mod control;
pub mod drm;
pub mod error;
pub mod fsutil;
pub mod geo;
pub mod http3;
pub mod ids;
pub mod key;
pub mod limits;
pub mod manifest;
pub mod range;
pub mod respond;
pub mod seek_table;
pub mod server;
#[cfg(feature = "sql")]
pub mod sql;
pub mod stall_watch;
pub mod store;
pub mod telemetry;
pub mod tier;
pub mod tls;
pub mod token;
pub mod web;
pub mod zerocopy;

pub use error::{Error, Result};
pub use ids::{ContentId, TrackId};
pub use key::{ObjectKey, ObjectPath};
pub use tier::Tier;
