//! The app-api's one error type, mapped to HTTP in one place.

use http::{Response, StatusCode};
use segue_core::server::{error_response, Body};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnknownContent(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Embargoed(String),
    /// A country the listener asked for that nothing says they are in.
    #[error("{0}")]
    CountryMismatch(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Lagging(String),
    /// A device or track limit of the license server.
    #[error("{0}")]
    DeviceLimit(String),
    #[error("{0}")]
    SubscriptionEnded(String),
    #[error("{0}")]
    Revoked(String),
    /// Over a rate limit: retry after this many seconds.
    #[error("too many requests for this key; retry in {0} s")]
    RateLimited(u64),
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
            Error::UnknownContent(_) => (StatusCode::BAD_REQUEST, "unknown_content"),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Embargoed(_) => (StatusCode::FORBIDDEN, "embargoed"),
            Error::CountryMismatch(_) => (StatusCode::FORBIDDEN, "country_mismatch"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Lagging(_) => (StatusCode::CONFLICT, "pipeline_lagging"),
            Error::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            Error::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Error::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::DeviceLimit(_) => (StatusCode::CONFLICT, "device_limit"),
            Error::SubscriptionEnded(_) => (StatusCode::FORBIDDEN, "subscription_ended"),
            Error::Revoked(_) => (StatusCode::FORBIDDEN, "revoked"),
        };
        let mut resp = error_response(status, code, self);
        if let Error::RateLimited(secs) = self {
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(*secs));
        }
        resp
    }
}
