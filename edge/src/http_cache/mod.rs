//! The HTTP caching rules, each in its own room (the way `pingora-cache` splits them):
//! the cache key, directive parsing, freshness and storability, validation and 304
//! updates, `Vary`, and invalidation by unsafe methods. Pure functions of header fields and times; the
//! request path in `serve.rs` applies them.

pub mod cache_control;
pub mod date;
pub mod freshness;
pub mod invalidate;
pub mod key;
pub mod validate;
pub mod vary;
