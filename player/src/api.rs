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
    /// The stream session (in the URLs' `sid`), reported with the play.
    #[serde(default)]
    pub session: Option<String>,
}

impl StreamInfo {
    /// The seek table on the fallback POP: the same path on `fallback_url`'s host.
    pub fn seek_table_fallback(&self) -> Option<String> {
        let base = |u: &str| u.find("://").and_then(|s| u[s + 3..].find('/').map(|p| s + 3 + p));
        let fallback = self.fallback_url.as_deref()?;
        let (at, fb) = (base(&self.seek_table_url)?, base(fallback)?);
        Some(format!("{}{}", &fallback[..fb], &self.seek_table_url[at..]))
    }
}

/// Where stream answers come from: the app API, the offline library (no network), or
/// online with the library first (a track licensed offline plays from the device).
#[derive(Clone)]
pub enum Catalog {
    Online(AppApi),
    Offline(std::sync::Arc<crate::library::Library>),
    Device(AppApi, std::sync::Arc<crate::library::Library>),
}

impl Catalog {
    pub async fn stream(&self, track: &str, tier: &str, country: Option<&str>) -> Result<StreamInfo, Error> {
        match self {
            Catalog::Online(api) => api.stream(track, tier, country).await,
            // The license says the tier; a device holds the one it synced.
            Catalog::Offline(library) => library.stream(track),
            // A license that lapsed (or none) sends the track to the app API.
            Catalog::Device(api, library) => match library.stream(track) {
                Ok(info) => Ok(info),
                Err(_) => api.stream(track, tier, country).await,
            },
        }
    }
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

    /// A JSON call; a non-2xx answer is an error carrying the server's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        let body = body.map(|b| bytes::Bytes::from(b.to_string()));
        let (status, answer) =
            segue_core::client::call(&self.base, method.clone(), path, Some(&self.token), body, self.timeout)
                .await
                .map_err(|e| Error::Api(format!("{}: {e}", self.base)))?;
        let json: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        if !status.is_success() {
            let why = json["detail"]
                .as_str()
                .map_or_else(|| String::from_utf8_lossy(&answer).trim().to_owned(), str::to_owned);
            return Err(Error::Api(format!("{method} {path}: {status}: {why}")));
        }
        Ok(json)
    }

    /// A playlist's tracks as a queue: in a fresh shuffle (no artist twice in a row where
    /// possible), with `smart` one recommendation of its sound after every three.
    pub async fn shuffled_queue(&self, playlist: &str, smart: bool) -> Result<Vec<String>, Error> {
        let path = format!("/v1/playlists/{playlist}/shuffle{}", if smart { "?smart=true" } else { "" });
        let answer = self.call(Method::POST, &path, None).await?;
        let items = answer["items"].as_array().ok_or_else(|| Error::Api(format!("{path}: no items in {answer}")))?;
        Ok(items.iter().filter_map(|i| i["track_id"].as_str().map(str::to_owned)).collect())
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_seek_table_has_a_fallback_on_the_second_pop() {
        let info = super::StreamInfo {
            track_id: "t".into(),
            tier: "high".into(),
            url: "http://a:1/a/c/high.ogg?exp=1".into(),
            fallback_url: Some("http://b:2/a/c/high.ogg?exp=1".into()),
            seek_table_url: "http://a:1/seek/c/high.json".into(),
            duration_ms: 1,
            samples: 1,
            sample_rate: 44_100,
            session: None,
        };
        assert_eq!(info.seek_table_fallback().as_deref(), Some("http://b:2/seek/c/high.json"));
    }
}
