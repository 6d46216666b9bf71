//! Stream URLs: after the rights check, pick a healthy POP in the client's region (and a
//! second one as fallback) from the control plane, and sign the edge URL with the
//! shared key (core tokens: short expiry, not-before = the release time).
//!
//! POP choice: the control plane's healthy POPs of the client's region, ordered by a hash
//! of (user, track) so a listener sticks to one POP per track and load spreads. The
//! fallback is the next POP of the region, else a healthy POP of another region. POPs
//! reporting themselves saturated go last; when every POP of the region is saturated and
//! an `overflow_url` (a secondary CDN) is configured, it is the primary and the region's
//! first POP the fallback. The
//! list is asked for every `pop_cache_secs`; when the control plane is unreachable, the
//! last list it gave is used (for up to `STALE_POPS`); without one, the configured
//! `fallback_pops`.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Error;

/// A POP list from the control plane is usable this long when the control plane cannot be reached.
const STALE_POPS: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Deserialize)]
pub struct Pop {
    pub id: String,
    pub region: String,
    pub public_url: String,
    pub healthy: bool,
    /// Over its capacity (from its heartbeats).
    #[serde(default)]
    pub saturated: bool,
}

#[derive(Default)]
pub struct PopDirectory {
    last: Mutex<Option<(Instant, Vec<Pop>)>>,
}

impl PopDirectory {
    /// Healthy POPs known now, and where the list came from.
    async fn pops(&self, config: &Config) -> (Vec<Pop>, &'static str) {
        let cached = self.last.lock().ok().and_then(|l| l.clone());
        if let Some((at, pops)) = &cached {
            if at.elapsed() < Duration::from_secs(config.pop_cache_secs) {
                return (pops.clone(), "control_plane");
            }
        }
        if let Some(cp) = &config.control_plane {
            match fetch(cp, Duration::from_secs(config.request_timeout_secs)).await {
                Ok(pops) => {
                    let healthy: Vec<Pop> = pops.into_iter().filter(|p| p.healthy).collect();
                    if let Ok(mut l) = self.last.lock() {
                        *l = Some((Instant::now(), healthy.clone()));
                    }
                    if !healthy.is_empty() {
                        return (healthy, "control_plane");
                    }
                }
                Err(e) => {
                    metrics::counter!("app_control_plane_errors_total").increment(1);
                    tracing::warn!(error = %e, "control plane unreachable; using the last POP list or fallback_pops");
                    if let Some((_, pops)) = cached.filter(|(at, p)| at.elapsed() < STALE_POPS && !p.is_empty()) {
                        return (pops, "control_plane_cached");
                    }
                }
            }
        }
        let fallback = config
            .fallback_pops
            .iter()
            .enumerate()
            .map(|(i, url)| Pop {
                id: format!("fallback-{i}"),
                region: String::new(),
                public_url: url.clone(),
                healthy: true,
                saturated: false,
            })
            .collect();
        (fallback, "fallback_pops")
    }
}

async fn fetch(cp: &crate::config::ControlPlane, timeout: Duration) -> Result<Vec<Pop>, String> {
    #[derive(Deserialize)]
    struct Answer {
        pops: Vec<Pop>,
    }
    let (status, body) =
        segue_core::client::call(&cp.url, Method::GET, "/v1/pops", Some(&cp.token), None, timeout).await?;
    if !status.is_success() {
        return Err(format!("GET /v1/pops answered {status}"));
    }
    serde_json::from_slice::<Answer>(&body).map(|a| a.pops).map_err(|e| e.to_string())
}

/// Primary and fallback POP base URLs for `user` playing `track` from `region`.
pub async fn choose(
    dir: &PopDirectory,
    config: &Config,
    region: &str,
    user: &str,
    track: &str,
) -> Result<(String, Option<String>, &'static str), Error> {
    let (pops, source) = dir.pops(config).await;
    let in_region = |p: &&Pop| p.region == region || p.region.is_empty();
    let mut pops: Vec<&Pop> = pops.iter().collect();
    pops.sort_by(|a, b| a.id.cmp(&b.id));
    let free: Vec<&Pop> = pops.iter().copied().filter(|p| in_region(p) && !p.saturated).collect();
    let busy: Vec<&Pop> = pops.iter().copied().filter(|p| in_region(p) && p.saturated).collect();
    let other: Vec<&Pop> = pops.iter().copied().filter(|p| !in_region(p)).collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (user, track).hash(&mut h);
    let pick = h.finish() as usize;
    let mut ordered = rotate(&free, pick);
    ordered.extend(rotate(&busy, pick));
    ordered.extend(rotate(&other, pick));
    let mut urls: Vec<String> = ordered.into_iter().map(|p| p.public_url.trim_end_matches('/').to_owned()).collect();
    let mut source = source;
    if free.is_empty() && !busy.is_empty() && !config.overflow_url.is_empty() {
        urls.insert(0, config.overflow_url.trim_end_matches('/').to_owned());
        source = "overflow";
    }
    let mut urls = urls.into_iter();
    let primary = urls
        .next()
        .ok_or_else(|| Error::Unavailable("no healthy POP is known (control plane and fallback_pops)".into()))?;
    let fallback = urls.find(|u| *u != primary);
    Ok((primary, fallback, source))
}

fn rotate<'a>(v: &[&'a Pop], by: usize) -> Vec<&'a Pop> {
    if v.is_empty() {
        return Vec::new();
    }
    let k = by % v.len();
    v[k..].iter().chain(v[..k].iter()).copied().collect()
}

#[derive(Debug, Serialize)]
pub struct Stream {
    pub track_id: String,
    pub tier: String,
    pub url: String,
    pub fallback_url: Option<String>,
    pub seek_table_url: String,
    pub expires_at: u64,
    /// This stream's session: in the URLs' `sid`, and to be sent with the play event, so
    /// plays and CDN deliveries can be matched (`segue plays reconcile`).
    pub session: String,
    /// The country the URLs are bound to (where the listener is, for rights and for their
    /// plays); a POP refuses them from anywhere else.
    pub country: String,
    pub duration_ms: i64,
    /// Exact samples per channel and rate: decode, trim by the Ogg granule positions and
    /// stop at `samples` for gapless playback.
    pub samples: i64,
    pub sample_rate: i64,
    /// Vorbis carries encoder delay and end padding in its granule positions, so the
    /// client trims nothing beyond them.
    pub encoder_delay: i64,
    pub padding: i64,
    pub loudness: crate::catalog::Loudness,
    /// Where the POP list came from: control_plane, control_plane_cached, fallback_pops.
    pub pops_from: &'static str,
}

/// Sign `path` on `base` for GET with `exp` and `nbf`.
/// A new stream session of `user` in `country`: `s-RANDOM-CC-TAG`, the tag the signing
/// key's over the rest and the user, so a play that names it proves where it was
/// streamed (`session_country`) and a made-up or borrowed one proves nothing.
pub fn session_id(key: &segue_core::token::Key, user: &str, country: &str) -> Result<String, Error> {
    let random = crate::catalog::new_id("s")?;
    let random = random.trim_start_matches("s_");
    Ok(format!("s-{random}-{country}-{}", key.tag(&["session", random, country, user])))
}

/// The country of a session `session_id` made for `user`, if it is one.
pub fn session_country(key: &segue_core::token::Key, user: &str, session: &str) -> Option<String> {
    let mut parts = session.strip_prefix("s-")?.split('-');
    let (random, country, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !segue_core::geo::is_country_code(country) {
        return None;
    }
    let want = key.tag(&["session", random, country, user]);
    segue_core::token::constant_time_eq(want.as_bytes(), tag.as_bytes()).then(|| country.to_owned())
}

/// A signed URL for `path` on `base`, valid `[nbf, exp)` from `country` only (the edge
/// checks where the request comes from), carrying the stream session `sid` (signed too,
/// and written to the POP's access log for reconciliation).
pub fn signed(
    key: &segue_core::token::Key,
    base: &str,
    path: &str,
    exp: u64,
    nbf: Option<u64>,
    country: &str,
    session: &str,
) -> String {
    let claims = segue_core::token::Claims { exp, nbf, country: Some(country.to_owned()) };
    format!("{base}{path}?{}", key.sign_query("GET", path, &format!("sid={session}"), &claims))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_session_proves_its_country_only_to_its_user() {
        let key = segue_core::token::Key::from_hex("k", "00112233445566778899aabbccddeeff").unwrap();
        let s = super::session_id(&key, "usr_a", "SE").unwrap();
        assert!(s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{s}");
        assert_eq!(super::session_country(&key, "usr_a", &s).as_deref(), Some("SE"));
        assert_eq!(super::session_country(&key, "usr_b", &s), None, "another user's session");
        assert_eq!(super::session_country(&key, "usr_a", &s.replace("-SE-", "-US-")), None, "an edited country");
        assert_eq!(super::session_country(&key, "usr_a", "ses_planted"), None);
    }

    fn pop(id: &str, region: &str, saturated: bool) -> super::Pop {
        super::Pop {
            id: id.into(),
            region: region.into(),
            public_url: format!("http://{id}"),
            healthy: true,
            saturated,
        }
    }

    async fn choose(pops: Vec<super::Pop>, overflow: &str) -> (String, Option<String>, &'static str) {
        let dir = super::PopDirectory::default();
        *dir.last.lock().unwrap() = Some((std::time::Instant::now(), pops));
        let config = crate::config::Config { overflow_url: overflow.into(), ..Default::default() };
        super::choose(&dir, &config, "eu", "usr_a", "trk_1").await.unwrap()
    }

    #[tokio::test]
    async fn saturated_pops_go_last_and_the_overflow_cdn_takes_a_full_region() {
        let cdn = "http://cdn2";
        // One of two saturated: the other is primary, the saturated one the fallback.
        let (p, f, _) = choose(vec![pop("eu-1", "eu", true), pop("eu-2", "eu", false)], cdn).await;
        assert_eq!((p.as_str(), f.as_deref()), ("http://eu-2", Some("http://eu-1")));
        // Every POP of the region saturated: the overflow CDN, a POP of the region behind it.
        let full = vec![pop("eu-1", "eu", true), pop("eu-2", "eu", true), pop("us-1", "us", false)];
        let (p, f, source) = choose(full.clone(), cdn).await;
        assert_eq!((p.as_str(), source), (cdn, "overflow"));
        assert!(f.as_deref().is_some_and(|f| f.starts_with("http://eu-")), "{f:?}");
        // No overflow CDN configured: saturated POPs are still handed out.
        let (p, _, source) = choose(full, "").await;
        assert!(p.starts_with("http://eu-") && source == "control_plane", "{p} {source}");
    }
}
