//! The app API as the player uses it: a stream URL per track.

use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;

use crate::Error;

/// `GET /v1/tracks/ID/stream`: where and what to play.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamInfo {
    pub track_id: String,
    pub tier: String,
    /// A signed edge URL on a healthy POP of the listener's region.
    pub url: String,
    /// The same on a second POP.
    #[serde(default)]
    pub fallback_url: Option<String>,
    pub seek_table_url: String,
    pub duration_ms: i64,
    /// Exact samples per channel of the master, and its rate.
    pub samples: u64,
    pub sample_rate: u32,
}

/// The app API at `base` (`http://host:port`) with a user's key.
#[derive(Debug, Clone)]
pub struct AppApi {
    pub base: String,
    pub token: String,
    pub timeout: Duration,
}

impl AppApi {
    pub fn new(base: &str, token: &str) -> AppApi {
        AppApi {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Stream info for `track` at `tier`, in `country` (default: the user's).
    pub async fn stream(&self, track: &str, tier: &str, country: Option<&str>) -> Result<StreamInfo, Error> {
        let mut path = format!("/v1/tracks/{track}/stream?tier={tier}");
        if let Some(c) = country {
            path.push_str(&format!("&country={c}"));
        }
        let (status, body) =
            segue_core::client::call(&self.base, Method::GET, &path, Some(&self.token), None, self.timeout)
                .await
                .map_err(|e| Error::Api(format!("{}: {e}", self.base)))?;
        if status != StatusCode::OK {
            return Err(Error::Api(format!("{track}: {status} {}", String::from_utf8_lossy(&body).trim())));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Api(format!("{track}: not a stream answer: {e}")))
    }
}
