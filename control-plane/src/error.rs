//! The control plane's one error type, mapped to HTTP in one place.

use http::{Response, StatusCode};
use segue_core::server::{json_error, Body};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnknownRegion(String),
    #[error("{0}")]
    UnknownContent(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Upstream(String),
    #[error("database: {0}")]
    Database(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e.to_string())
    }
}

impl Error {
    pub fn response(&self) -> Response<Body> {
        let (status, code) = match self {
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::UnknownRegion(_) => (StatusCode::BAD_REQUEST, "unknown_region"),
            Error::UnknownContent(_) => (StatusCode::BAD_REQUEST, "unknown_content"),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            Error::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut r = json_error(status, code, &self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        r
    }
}
