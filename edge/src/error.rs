//! The edge's one error type, and its one mapping to HTTP.

use http::StatusCode;
use segue_core::server::{error_response, Body};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadPath(&'static str),
    #[error("{0}")]
    Forbidden(#[from] segue_core::token::TokenError),
    /// The upstream answered with a final status we pass on (404, 403, ...).
    #[error("upstream answered {status} for {path}")]
    UpstreamStatus { status: u16, path: String },
    /// No upstream could be reached, or all failed: retrying later may help.
    #[error("no upstream could serve {path}: {detail}")]
    UpstreamUnavailable { path: String, detail: String },
    /// An upstream took too long.
    #[error("upstream timed out for {0}")]
    UpstreamTimeout(String),
    /// The request already passed through this POP: the parent configuration loops.
    #[error("request loop: {0} is already in Via")]
    Loop(String),
    /// Part of a release not yet dropped in this POP's region.
    #[error("embargoed until {}", embargo_time(*.0))]
    Embargoed(i64),
    /// The object changed upstream mid-response (validator or length mismatch).
    #[error("{0} changed upstream; retry")]
    Changed(String),
}

fn embargo_time(until: i64) -> String {
    if until == i64::MAX {
        return "further notice (its release was cancelled)".into();
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(until.max(0) as u64);
    httpdate::fmt_http_date(at)
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadPath(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) | Error::Embargoed(_) => StatusCode::FORBIDDEN,
            Error::UpstreamStatus { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            Error::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Changed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Loop(_) => StatusCode::LOOP_DETECTED,
        }
    }

    pub fn into_response(self) -> http::Response<Body> {
        let status = self.status();
        let code = match &self {
            Error::BadPath(_) => "bad_path",
            Error::Forbidden(_) => "forbidden",
            Error::Embargoed(_) => "embargoed",
            Error::UpstreamStatus { status: 404, .. } => "not_found",
            Error::UpstreamStatus { .. } => "upstream_status",
            Error::UpstreamUnavailable { .. } => "upstream_unavailable",
            Error::UpstreamTimeout(_) => "upstream_timeout",
            Error::Changed(_) => "object_changed",
            Error::Loop(_) => "loop_detected",
        };
        error_response(status, code, &self)
    }
}

impl From<Error> for segue_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Changed(p) => segue_core::Error::Changed(p),
            e => segue_core::Error::Store { message: e.to_string(), retryable: true },
        }
    }
}
