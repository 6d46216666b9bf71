//! Purge rules kept after a purge ("bans", as Varnish calls them). A purge reaches every
//! object in the memory index at once, but the index holds only the hot part of what the
//! SSD holds: an object whose record is reloaded from the SSD later is judged against
//! the rules made after it was stored, and dropped (hard) or marked stale (soft) then.

use std::sync::RwLock;
use std::time::SystemTime;

use segue_core::control::PurgeSelector;
use serde::{Deserialize, Serialize};

use crate::cache::ObjectInfo;
use crate::http_cache::freshness::to_millis;

/// Rules kept; older ones fold into one (`Bans::add`).
const MAX_BANS: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ban {
    pub selector: PurgeSelector,
    /// When the purge was made: objects stored (or revalidated) before it are affected.
    pub at_ms: u64,
}

impl Ban {
    pub fn now(selector: PurgeSelector) -> Self {
        Ban { selector, at_ms: to_millis(SystemTime::now()) }
    }

    fn hits(&self, info: &ObjectInfo) -> bool {
        to_millis(info.freshness.response_time) <= self.at_ms && selects(&self.selector, info)
    }
}

/// Whether a purge selector names this object: a content id anywhere in its path
/// (`/a/CID/...`, `/seek/CID/...`, `/m/CID.json`, `/enc/CID/...`), a path prefix, or a
/// surrogate key it was served with.
pub fn selects(p: &PurgeSelector, info: &ObjectInfo) -> bool {
    match (&p.content_id, &p.prefix, &p.tag) {
        (Some(cid), _, _) => {
            let path = info.primary.split('?').next().unwrap_or("");
            path.split('/').any(|seg| seg == cid || seg.strip_prefix(cid.as_str()).is_some_and(|r| r.starts_with('.')))
        }
        (_, Some(prefix), _) => info.primary.starts_with(prefix.as_str()),
        (_, _, Some(tag)) => info.surrogate_keys().any(|k| k == tag.trim()),
        _ => false,
    }
}

#[derive(Default)]
pub struct Bans {
    list: RwLock<Vec<Ban>>,
}

impl Bans {
    /// Keep a rule. Past `MAX_BANS`, the oldest fold into one soft rule over every path
    /// up to the newest of them: objects that old are revalidated when reloaded, which is
    /// always safe and costs a conditional request.
    pub fn add(&self, ban: Ban) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.push(ban);
        if list.len() > MAX_BANS {
            let excess = list.len() - MAX_BANS + 1;
            let newest = list.drain(..excess).map(|b| b.at_ms).max().unwrap_or(0);
            let everything = PurgeSelector { prefix: Some("/".into()), soft: true, ..Default::default() };
            list.insert(0, Ban { selector: everything, at_ms: newest });
        }
    }

    pub fn all(&self) -> Vec<Ban> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What one rule says about `info`: kept (maybe marked stale), or `None` (dropped).
    pub fn judge_one(ban: &Ban, mut info: ObjectInfo) -> Option<ObjectInfo> {
        if ban.hits(&info) {
            if !ban.selector.soft {
                return None;
            }
            info.stale = true;
        }
        Some(info)
    }

    /// What the rules made since `info` was stored say about it (`None`: dropped).
    pub fn judge(&self, mut info: ObjectInfo) -> Option<ObjectInfo> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        let mut soft = false;
        for ban in list.iter().filter(|b| b.hits(&info)) {
            if !ban.selector.soft {
                return None;
            }
            soft = true;
        }
        if soft {
            info.stale = true;
        }
        Some(info)
    }
}
