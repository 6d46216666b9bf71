//! The one error type of `segue-core`.
//!
//! Variants say who failed and whether a retry may help: a proxy deciding between
//! another upstream and a stale copy needs exactly that.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that should be an id, tier or object key is not one.
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },

    /// A URL token was missing, malformed, expired, or did not verify.
    #[error("token rejected: {0}")]
    Token(#[from] crate::token::TokenError),

    /// A config file could not be read, parsed or validated.
    #[error("{file}: {field}: {message}")]
    Config { file: PathBuf, field: String, message: String },

    /// The object does not exist in the store.
    #[error("object not found: {0}")]
    NotFound(String),

    /// The object changed between two reads of one request (validator mismatch).
    #[error("object changed while being read: {0}")]
    Changed(String),

    /// A local I/O error (filesystem store, temp files).
    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: std::io::Error },

    /// The remote object store failed; `retryable` says whether trying again may help.
    #[error("object store error: {message}")]
    Store { message: String, retryable: bool },
}

impl Error {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { what, detail: detail.into() }
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), source }
    }

    /// Whether another attempt (or another upstream) might succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { retryable, .. } => *retryable,
            Error::Changed(_) | Error::Io { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
