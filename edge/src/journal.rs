//! The object journal: one JSON line per object version learned or dropped (and per
//! purge rule), appended as they happen, replayed and compacted at start, so a restarted
//! edge knows what its SSD holds without asking upstream (warm restart).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::bans::{Ban, Bans};
use crate::cache::{validators_of, ObjectInfo};
use crate::http_cache::freshness::{from_millis, to_millis, Freshness};
use crate::http_cache::vary::Selecting;

/// One line of the object journal: an object version, the removal of every variant
/// under a primary key, or a purge rule (`key` empty).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<RecordObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ban: Option<Ban>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RecordObject {
    variant: String,
    status: u16,
    headers: Vec<(String, String)>,
    len: u64,
    vary: Selecting,
    generation: u64,
    lifetime_ms: u64,
    initial_age_ms: u64,
    response_time_ms: u64,
    no_cache: bool,
    no_stale: bool,
    swr_secs: u64,
    sie_secs: u64,
    stale: bool,
    present: Option<Vec<(u64, u64)>>,
}

impl From<&ObjectInfo> for Record {
    fn from(i: &ObjectInfo) -> Self {
        let f = &i.freshness;
        Record {
            key: i.primary.to_string(),
            ban: None,
            object: Some(RecordObject {
                variant: i.key.to_string(),
                status: i.status.as_u16(),
                headers: i
                    .headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect(),
                len: i.len,
                vary: i.vary.clone(),
                generation: i.generation,
                lifetime_ms: f.lifetime.as_millis() as u64,
                initial_age_ms: f.initial_age.as_millis() as u64,
                response_time_ms: to_millis(f.response_time),
                no_cache: f.no_cache,
                no_stale: f.no_stale,
                swr_secs: f.stale_while_revalidate.as_secs(),
                sie_secs: f.stale_if_error.as_secs(),
                stale: i.stale,
                present: i.present.clone(),
            }),
        }
    }
}

impl Record {
    pub(crate) fn dropped(key: &str) -> Self {
        Record { key: key.to_owned(), object: None, ban: None }
    }

    pub(crate) fn ban(ban: &Ban) -> Self {
        Record { key: String::new(), object: None, ban: Some(ban.clone()) }
    }

    pub(crate) fn into_info(self) -> Option<ObjectInfo> {
        let o = self.object?;
        let mut headers = HeaderMap::new();
        for (k, v) in o.headers {
            headers.append(HeaderName::from_bytes(k.as_bytes()).ok()?, HeaderValue::from_str(&v).ok()?);
        }
        let validators = validators_of(&headers);
        Some(ObjectInfo {
            store_key: crate::fetch::store_key(&self.key),
            primary: self.key.into(),
            key: o.variant.into(),
            status: StatusCode::from_u16(o.status).ok()?,
            headers,
            len: o.len,
            validators,
            vary: o.vary,
            freshness: Freshness {
                lifetime: Duration::from_millis(o.lifetime_ms),
                initial_age: Duration::from_millis(o.initial_age_ms),
                response_time: from_millis(o.response_time_ms),
                no_cache: o.no_cache,
                no_stale: o.no_stale,
                stale_while_revalidate: Duration::from_secs(o.swr_secs),
                stale_if_error: Duration::from_secs(o.sie_secs),
            },
            generation: o.generation,
            stale: o.stale,
            present: o.present,
            transient: false,
        })
    }
}

/// Object records, one JSON line each, appended as objects are learned or dropped.
/// At start the journal is read (a torn last line from a crash is skipped), the newest
/// record per key kept, and the compacted journal written atomically (temp + rename).
pub(crate) struct Journal {
    file: Mutex<std::fs::File>,
    pub(crate) recovered: Vec<ObjectInfo>,
    /// The purge rules, which also judge records reloaded from the SSD later.
    pub(crate) bans: Vec<Ban>,
}

impl Journal {
    pub(crate) fn open(path: &Path) -> foyer::Result<Self> {
        // Per primary key, its variants by variant key (a removal clears them all).
        let mut latest: std::collections::HashMap<String, std::collections::HashMap<String, ObjectInfo>> =
            Default::default();
        let mut skipped = 0u64;
        let bans = Bans::default();
        match std::fs::File::open(path) {
            Ok(f) => {
                for line in std::io::BufReader::new(f).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Record>(&line) {
                        Ok(Record { ban: Some(ban), .. }) => {
                            // The rule applies to what was recorded before it.
                            for variants in latest.values_mut() {
                                let judged = std::mem::take(variants)
                                    .into_iter()
                                    .filter_map(|(k, info)| Bans::judge_one(&ban, info).map(|i| (k, i)));
                                *variants = judged.collect();
                            }
                            latest.retain(|_, v| !v.is_empty());
                            bans.add(ban);
                        }
                        Ok(r) => {
                            let key = r.key.clone();
                            match r.into_info() {
                                Some(info) => {
                                    latest.entry(key).or_default().insert(info.key.to_string(), info);
                                }
                                None => {
                                    latest.remove(&key);
                                }
                            }
                        }
                        Err(_) => skipped += 1,
                    }
                }
                if skipped > 0 {
                    // A torn last line after a crash, or records an older edge wrote: those
                    // objects are simply fetched again.
                    tracing::warn!(path = %path.display(), skipped, "skipped unreadable object journal lines");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(foyer::Error::io_error(e)),
        }
        let recovered: Vec<ObjectInfo> = latest.into_values().flat_map(|v| v.into_values()).collect();
        let tmp = path.with_extension("journal.tmp");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(foyer::Error::io_error)?);
            let kept = bans.all();
            let records = recovered.iter().map(Record::from).chain(kept.iter().map(Record::ban));
            for record in records {
                let line = serde_json::to_string(&record).unwrap_or_default();
                writeln!(out, "{line}").map_err(foyer::Error::io_error)?;
            }
            let f = out.into_inner().map_err(|e| foyer::Error::io_error(e.into_error()))?;
            f.sync_all().map_err(foyer::Error::io_error)?;
        }
        std::fs::rename(&tmp, path).map_err(foyer::Error::io_error)?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(foyer::Error::io_error)?;
        Ok(Journal { file: Mutex::new(file), recovered, bans: bans.all() })
    }

    /// One `write` per record (O_APPEND), so a crash tears at most the last line.
    pub(crate) fn append(&self, r: &Record) {
        let Ok(mut line) = serde_json::to_vec(r) else { return };
        line.push(b'\n');
        let Ok(mut f) = self.file.lock() else { return };
        if let Err(e) = f.write_all(&line) {
            metrics::counter!("edge_ssd_errors_total").increment(1);
            tracing::warn!(error = %e, "object journal write failed; this object will be refetched after a restart");
        }
    }

    pub(crate) fn sync(&self) {
        if let Ok(f) = self.file.lock() {
            let _ = f.sync_all();
        }
    }
}
