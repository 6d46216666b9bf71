//! The object journal: one JSON line per object version learned or dropped (and per
//! purge rule), appended as they happen, replayed and compacted at start, so a restarted
//! edge knows what its SSD holds without asking upstream (warm restart).

use std::io::{BufRead, Write};
use std::path::Path;
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

/// Object records, one JSON line each, appended as objects are learned or dropped. At
/// start the journal is read (a torn last line from a crash is skipped), the newest
/// record per key kept, and the compacted journal written atomically (temp + rename).
/// Appends are queued to a writer thread (a slow disk never holds a request; a full
/// queue drops the record, whose object is then fetched again after a restart), which
/// also compacts the file the same way once it has grown past twice its compacted size.
pub(crate) struct Journal {
    tx: std::sync::mpsc::SyncSender<Op>,
    pub(crate) recovered: Vec<ObjectInfo>,
    /// The purge rules, which also judge records reloaded from the SSD later.
    pub(crate) bans: Vec<Ban>,
}

enum Op {
    Line(Vec<u8>),
    /// Flush and fsync, then say so.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// Records waiting for the writer at most.
const QUEUE: usize = 65_536;
/// The file is compacted once past this and twice its size after the last compaction.
const COMPACT_MIN: u64 = 64 << 20;

/// What a journal file holds: the newest record of every variant not since removed (or
/// purged by a later rule), the rules, and how many lines could not be read.
fn replay(path: &Path) -> std::io::Result<(Vec<ObjectInfo>, Bans, u64)> {
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
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok((latest.into_values().flat_map(|v| v.into_values()).collect(), bans, skipped))
}

/// Replace the file with just `recovered` and `bans` (temp file, fsync, rename); its size.
fn rewrite(path: &Path, recovered: &[ObjectInfo], bans: &Bans) -> std::io::Result<u64> {
    let tmp = path.with_extension("journal.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let kept = bans.all();
    for record in recovered.iter().map(Record::from).chain(kept.iter().map(Record::ban)) {
        let line = serde_json::to_string(&record).unwrap_or_default();
        writeln!(out, "{line}")?;
    }
    let f = out.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    let size = f.metadata()?.len();
    std::fs::rename(&tmp, path)?;
    Ok(size)
}

impl Journal {
    pub(crate) fn open(path: &Path) -> foyer::Result<Self> {
        Journal::open_compacting_at(path, COMPACT_MIN)
    }

    fn open_compacting_at(path: &Path, compact_min: u64) -> foyer::Result<Self> {
        let (recovered, bans, skipped) = replay(path).map_err(foyer::Error::io_error)?;
        if skipped > 0 {
            // A torn last line after a crash, or records an older edge wrote: those
            // objects are simply fetched again.
            tracing::warn!(path = %path.display(), skipped, "skipped unreadable object journal lines");
        }
        let size = rewrite(path, &recovered, &bans).map_err(foyer::Error::io_error)?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(foyer::Error::io_error)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("edge-journal".into())
            .spawn(move || write_loop(&path, file, size, compact_min, rx))
            .map_err(foyer::Error::io_error)?;
        Ok(Journal { tx, recovered, bans: bans.all() })
    }

    /// Queue a record for the writer thread.
    pub(crate) fn append(&self, r: &Record) {
        let Ok(mut line) = serde_json::to_vec(r) else { return };
        line.push(b'\n');
        if self.tx.try_send(Op::Line(line)).is_err() {
            metrics::counter!("edge_journal_dropped_total").increment(1);
        }
    }

    /// Everything queued so far is on disk when this returns (graceful shutdown).
    pub(crate) async fn sync(&self) {
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.tx.send(Op::Sync(ack)).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), done).await;
        }
    }
}

/// The writer thread: one `write` per batch of queued records (O_APPEND, so a crash tears
/// at most the last line), and a compaction when the file has doubled.
fn write_loop(
    path: &Path,
    mut file: std::fs::File,
    mut base: u64,
    compact_min: u64,
    rx: std::sync::mpsc::Receiver<Op>,
) {
    let mut size = base;
    let mut batch = Vec::new();
    while let Ok(op) = rx.recv() {
        let mut acks = Vec::new();
        let mut next = Some(op);
        while let Some(op) = next.take().or_else(|| rx.try_recv().ok()) {
            match op {
                Op::Line(l) => batch.extend_from_slice(&l),
                Op::Sync(ack) => acks.push(ack),
            }
        }
        if !batch.is_empty() {
            match file.write_all(&batch) {
                Ok(()) => size += batch.len() as u64,
                Err(e) => {
                    metrics::counter!("edge_ssd_errors_total").increment(1);
                    tracing::warn!(error = %e, "object journal write failed; these objects will be refetched after a restart");
                }
            }
            batch.clear();
        }
        if !acks.is_empty() {
            let _ = file.sync_all();
            for ack in acks {
                let _ = ack.send(());
            }
        }
        if size > compact_min.max(2 * base) {
            let started = std::time::Instant::now();
            let compacted = replay(path)
                .and_then(|(recovered, bans, _)| rewrite(path, &recovered, &bans))
                .and_then(|new| std::fs::OpenOptions::new().append(true).open(path).map(|f| (new, f)));
            match compacted {
                Ok((new, f)) => {
                    tracing::info!(
                        from = size,
                        to = new,
                        took_ms = started.elapsed().as_millis() as u64,
                        "object journal compacted"
                    );
                    metrics::counter!("edge_journal_compactions_total").increment(1);
                    (file, size, base) = (f, new, new);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "object journal compaction failed; appending on");
                    base = size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, generation: u64) -> Record {
        Record::from(&ObjectInfo { generation, ..crate::cache::tests::version(key, "\"v\"", 1000) })
    }

    /// A running edge re-learning the same objects over and over keeps its journal
    /// bounded (compacted by the writer thread), and nothing newest is lost by it.
    #[tokio::test]
    async fn the_journal_compacts_while_running_and_keeps_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.journal");
        let j = Journal::open_compacting_at(&path, 64 << 10).unwrap();
        for round in 0..400u64 {
            for k in 0..10 {
                j.append(&record(&format!("/a/{k}/high.ogg"), round * 100 + k));
            }
            if round % 50 == 0 {
                j.sync().await;
            }
        }
        j.append(&Record::dropped("/a/3/high.ogg"));
        j.sync().await;
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 256 << 10, "the journal grew to {size} bytes");
        drop(j);
        let (recovered, _, skipped) = replay(&path).unwrap();
        assert_eq!((recovered.len(), skipped), (9, 0));
        for info in &recovered {
            let k: u64 = info.primary.split('/').nth(2).unwrap().parse().unwrap();
            assert_eq!(info.generation, 399 * 100 + k, "{}", info.primary);
        }
    }
}
