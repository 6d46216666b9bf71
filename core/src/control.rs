//! Control plane <-> edge messages (DESIGN "Contracts"): POPs register and heartbeat,
//! pull their jobs (pre-warm, purge) in the heartbeat's answer, and report job progress
//! in the next heartbeat. All JSON over HTTP, `POST /v1/pops/heartbeat` with a bearer
//! token per POP.
//!
//! The heartbeat is also a long poll: with `wait_ms` > 0 the control plane holds the
//! answer until a job for this POP appears or the wait ends, so a purge reaches every
//! POP within one round trip instead of one heartbeat period.

use serde::{Deserialize, Serialize};

/// What a POP sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The POP's name (unique; its `Via` name).
    pub id: String,
    pub region: String,
    #[serde(default)]
    pub version: String,
    /// Where clients reach this POP.
    pub public_url: String,
    /// Where operators reach its admin API (informational; empty when it has none).
    #[serde(default)]
    pub admin_url: String,
    #[serde(default)]
    pub mem_bytes: u64,
    #[serde(default)]
    pub ssd_bytes: u64,
    /// Requests answered from cache / requests, since start.
    #[serde(default)]
    pub hit_ratio: f64,
    /// Requests answered since the POP started, and those answered with a 5xx: the control
    /// plane turns successive reports into rates.
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Client connections open now, and the egress over the last interval (Mbit/s).
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub egress_mbps: f64,
    /// Over its configured capacity (connections or egress): the app API then sends new
    /// streams elsewhere (another POP of the region, or the overflow CDN).
    #[serde(default)]
    pub saturated: bool,
    /// Progress of every job the POP was handed and still remembers.
    #[serde(default)]
    pub jobs: Vec<JobReport>,
    /// Hold the answer up to this long when there is no job to hand out.
    #[serde(default)]
    pub wait_ms: u64,
}

fn yes() -> bool {
    true
}

/// What the control plane answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// Content embargoed in the POP's region now.
    #[serde(default)]
    pub embargoes: Vec<Embargo>,
    /// Jobs the POP should be running: new ones to start, and ones already handed out
    /// that are not finished (a POP that restarted starts them again; the id makes a
    /// repeat idempotent).
    #[serde(default)]
    pub jobs: Vec<Job>,
    /// Rights withdrawn: URLs for this content bound to this country stop working, cached
    /// bytes or not, though they were signed before the withdrawal.
    #[serde(default)]
    pub withdrawn: Vec<Withdrawal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub content_id: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Unix seconds after which no URL signed before the withdrawal is valid anyway (their
    /// longest lifetime), so the entry can go.
    pub until: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Embargo {
    pub content_id: String,
    /// Unix seconds when it opens (`i64::MAX`: until further notice).
    pub until: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique per job and POP-independent, e.g. `release:ID` or `purge:ID`.
    pub id: String,
    #[serde(flatten)]
    pub work: Work,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Fetch these objects whole through the cache (and onto the SSD).
    Prewarm { paths: Vec<String> },
    /// Remove (or mark stale) what matches.
    Purge { selector: PurgeSelector },
}

/// What a purge removes: exactly one of the three, on the edge admin API too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Mark stale (revalidate on next request) instead of removing.
    #[serde(default)]
    pub soft: bool,
}

impl PurgeSelector {
    /// Exactly one selector, well formed; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.content_id, &self.prefix, &self.tag) {
            (Some(c), None, None) => {
                c.parse::<crate::ContentId>().map(|_| ()).map_err(|_| format!("content_id {c:?} is not 64 hex digits"))
            }
            (None, Some(p), None) if p.starts_with('/') && p.len() <= 1024 => Ok(()),
            (None, Some(p), None) => Err(format!("prefix {p:?} must start with '/' (at most 1024 bytes)")),
            (None, None, Some(t)) if !t.trim().is_empty() && t.len() <= 256 && !t.trim().contains(' ') => Ok(()),
            (None, None, Some(t)) => Err(format!("tag {t:?} must be one word")),
            _ => Err("give exactly one of content_id, prefix (starting with '/') or tag".into()),
        }
    }

    /// The selector's value, for logs.
    pub fn what(&self) -> &str {
        self.content_id.as_deref().or(self.prefix.as_deref()).or(self.tag.as_deref()).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub id: String,
    pub state: JobState,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_with_their_kind() {
        let job = Job { id: "release:r1".into(), work: Work::Prewarm { paths: vec!["/a/x/high.ogg".into()] } };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(text, r#"{"id":"release:r1","kind":"prewarm","paths":["/a/x/high.ogg"]}"#);
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        let purge = Job {
            id: "purge:p1".into(),
            work: Work::Purge { selector: PurgeSelector { tag: Some("abc".into()), ..Default::default() } },
        };
        let text = serde_json::to_string(&purge).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), purge);
    }

    #[test]
    fn selectors_need_exactly_one_well_formed_value() {
        let s = |c: Option<&str>, p: Option<&str>, t: Option<&str>| PurgeSelector {
            content_id: c.map(Into::into),
            prefix: p.map(Into::into),
            tag: t.map(Into::into),
            soft: false,
        };
        assert!(s(Some(&"ab".repeat(32)), None, None).validate().is_ok());
        assert!(s(None, Some("/a/"), None).validate().is_ok());
        assert!(s(None, None, Some("cid/high")).validate().is_ok());
        assert!(s(Some("xyz"), None, None).validate().is_err());
        assert!(s(None, Some("a/"), None).validate().is_err());
        assert!(s(None, None, Some("two words")).validate().is_err());
        assert!(s(None, None, None).validate().is_err());
        assert!(s(Some(&"ab".repeat(32)), Some("/a/"), None).validate().is_err());
    }
}
