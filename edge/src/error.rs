//! The edge's one error type, and its one mapping to HTTP.

use http::StatusCode;
use segue_core::server::{error_response, Body};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadPath(&'static str),
    #[error("{0}")]
    Forbidden(#[from] segue_core::token::TokenError),
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
    /// The rights to this content in this country were withdrawn after the URL was signed.
    #[error("the rights to stream this in {0} were withdrawn")]
    Withdrawn(String),
    /// The object changed upstream mid-response (validator or length mismatch).
    #[error("{0} changed upstream; retry")]
    Changed(String),
    /// The path's policy does not accept this method.
    #[error("{method} is not allowed here (allowed: {allow})")]
    MethodNotAllowed { method: String, allow: String },
    /// `Cache-Control: only-if-cached` and nothing usable is stored (RFC 9111 §5.2.1.7).
    #[error("{0} is not in the cache (only-if-cached)")]
    NotCached(String),
    /// The upstream's own answer (a redirect, 4xx, 5xx) to a fill several requests wait
    /// on: passed to each of them as it came, never replaced by the edge's JSON.
    #[error("upstream answered {} for {}", .0.status, .0.path)]
    Upstream(std::sync::Arc<Passthrough>),
}

/// An upstream answer kept whole (its body is small: an error page, a redirect).
#[derive(Debug)]
pub struct Passthrough {
    pub path: String,
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl Error {
    /// Whether a stale copy may stand in (RFC 5861 stale-if-error): the upstream failed,
    /// as opposed to answering.
    pub fn is_upstream_failure(&self) -> bool {
        match self {
            Error::UpstreamUnavailable { .. } | Error::UpstreamTimeout(_) => true,
            Error::Upstream(p) => p.status.is_server_error(),
            _ => false,
        }
    }
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
            Error::Forbidden(_) | Error::Embargoed(_) | Error::Withdrawn(_) => StatusCode::FORBIDDEN,
            Error::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Changed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Loop(_) => StatusCode::LOOP_DETECTED,
            Error::Upstream(p) => p.status,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotCached(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn into_response(self) -> http::Response<Body> {
        if let Error::Upstream(p) = &self {
            let mut r = http::Response::new(segue_core::server::full(p.body.clone()));
            *r.status_mut() = p.status;
            *r.headers_mut() = p.headers.clone();
            return r;
        }
        let status = self.status();
        let code = match &self {
            Error::BadPath(_) => "bad_path",
            Error::Forbidden(_) => "forbidden",
            Error::Embargoed(_) => "embargoed",
            Error::Withdrawn(_) => "rights_withdrawn",
            Error::UpstreamUnavailable { .. } => "upstream_unavailable",
            Error::UpstreamTimeout(_) => "upstream_timeout",
            Error::Changed(_) => "object_changed",
            Error::Loop(_) => "loop_detected",
            Error::Upstream(_) => "upstream_status",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::NotCached(_) => "not_cached",
        };
        // Upstream failures are logged whole; clients never learn upstream addresses.
        let public = match &self {
            Error::UpstreamUnavailable { path, .. } => {
                tracing::debug!(error = %self, "answered an upstream failure");
                format!("no upstream could serve {path}")
            }
            Error::UpstreamTimeout(_) => {
                tracing::debug!(error = %self, "answered an upstream timeout");
                "the upstream took too long to answer".to_owned()
            }
            e => e.to_string(),
        };
        let mut r = error_response(status, code, &public);
        if let Error::MethodNotAllowed { allow, .. } = &self {
            if let Ok(v) = http::HeaderValue::from_str(allow) {
                r.headers_mut().insert(http::header::ALLOW, v);
            }
        }
        r
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
