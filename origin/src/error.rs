//! The origin's one error type and its one mapping to HTTP responses.

use http::StatusCode;
use segue_core::server::{error_response, Body};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadPath(&'static str),
    #[error("no object at {0}")]
    NotFound(String),
    #[error("{0} is not allowed here; use GET or HEAD")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Forbidden(#[from] segue_core::token::TokenError),
    /// A master that cannot be packaged: the file and what is wrong with it.
    #[error("{file}: {problem}")]
    Master { file: String, problem: String },
    /// Encoding failed on valid input: a bug or resource problem on our side.
    #[error("packaging failed: {0}")]
    Encode(String),
    /// A content key could not be read or unwrapped (never carries key material).
    #[error("content key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] segue_core::Error),
}

impl Error {
    pub fn into_response(self) -> http::Response<Body> {
        let (status, code) = match &self {
            Error::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Master { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_master"),
            Error::Encode(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encode_failed"),
            Error::Key(_) => (StatusCode::INTERNAL_SERVER_ERROR, "key_unavailable"),
            Error::Store(segue_core::Error::NotFound(_)) => (StatusCode::NOT_FOUND, "not_found"),
            // The object was replaced mid-request; a retry will see one consistent version.
            Error::Store(segue_core::Error::Changed(_)) => (StatusCode::SERVICE_UNAVAILABLE, "object_changed"),
            Error::Store(e) if e.is_retryable() => (StatusCode::BAD_GATEWAY, "store_unavailable"),
            Error::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        let mut resp = error_response(status, code, &self);
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}
