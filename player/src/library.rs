//! The offline library: what `segue offline sync` keeps in a device directory, opened
//! for playback with no network at all.
//!
//! Layout of DIR:
//! - `device.key`: the device's X25519 secret (mode 0600), never sent anywhere;
//! - `device.json`: the device id, and the license server's public key;
//! - `licenses/{id}.json`: licenses as signed; `licenses/{id}.renewal.json` the latest renewal;
//! - `objects/{cid}/{tier}.ogg`: encrypted objects exactly as served (`.part` while
//!   downloading); `seek/{cid}/{tier}.json`: their seek tables;
//! - `clock`: the latest time this device has seen (Unix ms), so that a clock set back
//!   cannot stretch a license.
//!
//! Audio is decrypted in memory, only the bytes a read asks for: nothing decrypted is
//! ever written here.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use segue_core::drm::cipher::{ContentKey, ObjectCipher};
use segue_core::drm::license::{self, DeviceSecret, License, Renewal, Signed, Standing, Trust};
use segue_core::{ContentId, Tier};
use serde::{Deserialize, Serialize};

use crate::api::StreamInfo;
use crate::Error;

/// URLs of the library's objects start with this (`offline:objects/...`).
pub const SCHEME: &str = "offline:";

/// Bytes read (and decrypted) at a time.
const CHUNK: u64 = 64 << 10;

/// What `device.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    pub device_id: String,
    pub name: String,
    /// The app API it registered with.
    pub app_api: String,
    pub server_kid: String,
    pub server_public_key: String,
}

/// Paths in a device directory.
#[derive(Debug, Clone)]
pub struct DeviceDir(pub PathBuf);

impl DeviceDir {
    pub fn key(&self) -> PathBuf {
        self.0.join("device.key")
    }
    pub fn info(&self) -> PathBuf {
        self.0.join("device.json")
    }
    pub fn clock(&self) -> PathBuf {
        self.0.join("clock")
    }
    pub fn licenses(&self) -> PathBuf {
        self.0.join("licenses")
    }
    pub fn license(&self, id: &str) -> PathBuf {
        self.licenses().join(format!("{id}.json"))
    }
    pub fn renewal(&self, id: &str) -> PathBuf {
        self.licenses().join(format!("{id}.renewal.json"))
    }
    pub fn object_rel(cid: &ContentId, tier: Tier) -> String {
        format!("objects/{cid}/{tier}.ogg")
    }
    pub fn seek_rel(cid: &ContentId, tier: Tier) -> String {
        format!("seek/{cid}/{tier}.json")
    }

    pub fn read_info(&self) -> Result<DeviceInfo, Error> {
        let path = self.info();
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::Io(format!("{}: {e} (run `segue offline sync` first to set this device up)", path.display()))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }

    pub fn read_secret(&self) -> Result<DeviceSecret, Error> {
        let path = self.key();
        let bytes = std::fs::read(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        DeviceSecret::from_bytes(&bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }

    pub fn write(&self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        }
        segue_core::fsutil::write_atomic(path, bytes, mode).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }

    /// Every license file's id.
    pub fn license_ids(&self) -> Result<Vec<String>, Error> {
        let dir = self.licenses();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io(format!("{}: {e}", dir.display()))),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json").filter(|s| !s.ends_with(".renewal")).map(str::to_owned))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The latest time seen (0 before any), then `now` recorded if it is later.
    fn advance_clock(&self, now_ms: i64) -> Result<i64, Error> {
        let seen = std::fs::read_to_string(self.clock()).ok().and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(0);
        if now_ms > seen {
            self.write(&self.clock(), now_ms.to_string().as_bytes(), 0o600)?;
        }
        Ok(seen)
    }
}

/// A license as this device holds it: verified, its renewal applied.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub id: String,
    pub tier: Tier,
    pub expires_ms: i64,
    pub grace_ms: i64,
    pub tracks: Vec<String>,
    /// Tracks a renewal took back.
    pub revoked: Vec<String>,
}

/// One playable track.
struct Entry {
    cid: ContentId,
    tier: Tier,
    license: String,
    expires_ms: i64,
    grace_ms: i64,
}

pub struct Library {
    dir: DeviceDir,
    tracks: HashMap<String, Entry>,
    /// Track ids in license order (what `segue play --offline` plays when given none).
    order: Vec<String>,
    keys: HashMap<ContentId, ContentKey>,
    pub held: Vec<Held>,
    now_ms: i64,
    last_seen_ms: i64,
    decrypted: AtomicU64,
    warnings: Mutex<Vec<String>>,
}

/// Verify a license file against the server key and the device.
pub fn read_license(dir: &DeviceDir, trust: &Trust, device: &str, id: &str) -> Result<License, Error> {
    let path = dir.license(id);
    let bad = |e: &dyn std::fmt::Display| Error::Decode(format!("{}: {e}", path.display()));
    let signed: Signed = serde_json::from_slice(&std::fs::read(&path).map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    let lic = trust.license(&signed).map_err(|e| bad(&e))?;
    if lic.device != device || lic.id != id {
        return Err(bad(&"the license is for another device"));
    }
    Ok(lic)
}

fn read_renewal(dir: &DeviceDir, trust: &Trust, lic: &License) -> Option<Renewal> {
    let bytes = std::fs::read(dir.renewal(&lic.id)).ok()?;
    let signed: Signed = serde_json::from_slice(&bytes).ok()?;
    let r = trust.renewal(&signed).ok()?;
    (r.license == lic.id && r.device == lic.device).then_some(r)
}

fn date(ms: i64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("dir", &self.dir.0).field("tracks", &self.tracks.len()).finish()
    }
}

impl Library {
    /// Open `dir` at time `now_ms`: every license verified and its keys opened. A
    /// license that does not verify is left out (and named in the warnings).
    pub fn open(dir: &Path, now_ms: i64) -> Result<Library, Error> {
        let dir = DeviceDir(dir.to_owned());
        let info = dir.read_info()?;
        let secret = dir.read_secret()?;
        let trust =
            Trust::from_public(&info.server_public_key).map_err(|e| Error::Decode(format!("device.json: {e}")))?;
        let last_seen_ms = dir.advance_clock(now_ms)?;
        let mut lib = Library {
            dir: dir.clone(),
            tracks: HashMap::new(),
            order: Vec::new(),
            keys: HashMap::new(),
            held: Vec::new(),
            now_ms,
            last_seen_ms,
            decrypted: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
        };
        for id in dir.license_ids()? {
            let lic = match read_license(&dir, &trust, &info.device_id, &id) {
                Ok(l) => l,
                Err(e) => {
                    lib.warn(format!("license refused: {e}"));
                    continue;
                }
            };
            let keys = match lic.open_keys(&secret) {
                Ok(k) => k,
                Err(e) => {
                    lib.warn(format!("license {id}: {e}"));
                    continue;
                }
            };
            let renewal = read_renewal(&dir, &trust, &lic);
            let (expires_ms, grace_ms, revoked) = match renewal {
                Some(r) if r.expires_ms > lic.expires_ms || !r.revoked.is_empty() => {
                    (r.expires_ms, r.grace_ms, r.revoked)
                }
                _ => (lic.expires_ms, lic.grace_ms, Vec::new()),
            };
            for (t, key) in lic.tracks.iter().zip(keys) {
                if revoked.contains(&t.track) {
                    continue;
                }
                lib.keys.insert(t.content_id, key);
                let better = lib.tracks.get(&t.track).is_none_or(|e| e.expires_ms < expires_ms);
                if !lib.tracks.contains_key(&t.track) {
                    lib.order.push(t.track.clone());
                }
                if better {
                    let entry =
                        Entry { cid: t.content_id, tier: lic.tier, license: lic.id.clone(), expires_ms, grace_ms };
                    lib.tracks.insert(t.track.clone(), entry);
                }
            }
            lib.held.push(Held {
                id: lic.id.clone(),
                tier: lic.tier,
                expires_ms,
                grace_ms,
                tracks: lic.tracks.iter().map(|t| t.track.clone()).collect(),
                revoked,
            });
        }
        Ok(lib)
    }

    fn warn(&self, w: String) {
        tracing::warn!("{w}");
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }

    /// Warnings so far (licenses refused, grace periods running).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every playable track, in license order.
    pub fn tracks(&self) -> Vec<String> {
        self.order.iter().filter(|t| self.tracks.contains_key(*t)).cloned().collect()
    }

    /// Bytes of audio decrypted so far.
    pub fn decrypted(&self) -> u64 {
        self.decrypted.load(Ordering::Relaxed)
    }

    /// Whether a license of this standing lets the device play now.
    pub fn standing(&self, expires_ms: i64, grace_ms: i64) -> Standing {
        license::standing(expires_ms, grace_ms, self.now_ms, self.last_seen_ms)
    }

    /// What the engine plays for `track`: the library's URLs, once its license allows it.
    pub fn stream(&self, track: &str) -> Result<StreamInfo, Error> {
        let e = self.tracks.get(track).ok_or_else(|| {
            Error::Api(format!("{track}: no valid offline license on this device (sync it with `segue offline sync`)"))
        })?;
        match self.standing(e.expires_ms, e.grace_ms) {
            Standing::Valid { .. } => {}
            Standing::Grace { left_ms } => self.warn(format!(
                "license {} expired {}; playing in its grace period, {} h left: connect and run `segue offline renew`",
                e.license,
                date(e.expires_ms),
                left_ms / 3_600_000
            )),
            Standing::Expired { .. } => {
                return Err(Error::Api(format!(
                    "{track}: license {} expired {} and its {} h grace period is over: connect and run `segue offline renew`",
                    e.license,
                    date(e.expires_ms),
                    e.grace_ms / 3_600_000
                )))
            }
            Standing::ClockRolledBack { .. } => {
                return Err(Error::Api(format!(
                    "{track}: this device's clock reads {}, before {} already seen here: offline licenses count as \
                     expired until the clock is right (or `segue offline renew` online)",
                    date(self.now_ms),
                    date(self.last_seen_ms)
                )))
            }
        }
        let table = self.seek_table(&e.cid, e.tier)?;
        Ok(StreamInfo {
            track_id: track.to_owned(),
            tier: e.tier.to_string(),
            url: format!("{SCHEME}{}", DeviceDir::object_rel(&e.cid, e.tier)),
            fallback_url: None,
            seek_table_url: format!("{SCHEME}{}", DeviceDir::seek_rel(&e.cid, e.tier)),
            duration_ms: (table.total_samples * 1000 / u64::from(table.sample_rate.max(1))) as i64,
            samples: table.total_samples,
            sample_rate: table.sample_rate,
            session: None,
        })
    }

    fn seek_table(&self, cid: &ContentId, tier: Tier) -> Result<segue_core::seek_table::SeekTable, Error> {
        let path = self.dir.0.join(DeviceDir::seek_rel(cid, tier));
        let bytes = std::fs::read(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        segue_core::seek_table::SeekTable::from_json(&bytes)
            .map_err(|e| Error::Decode(format!("{}: {e}", path.display())))
    }

    /// The next chunk of the library object `rel` from byte `from` (to `to`, inclusive,
    /// or the end), decrypted when it is audio; `None` at the end.
    pub fn read(&self, rel: &str, from: u64, to: Option<u64>) -> Result<Option<Bytes>, Error> {
        let Some(mut buf) = read_piece(&self.dir.0.join(rel), None, from, to)? else { return Ok(None) };
        if let Some((cid, tier)) = object_of(rel) {
            let key =
                self.keys.get(&cid).ok_or_else(|| Error::Decode(format!("{rel}: no key for it on this device")))?;
            ObjectCipher::new(key, &cid, tier).apply(from, &mut buf);
            self.decrypted.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Ok(Some(Bytes::from(buf)))
    }
}

/// The next piece (at most 64 KiB) of the file at `path` from byte `from` to `to`
/// (inclusive) or its end; `len` is its length when known (else read from the file).
/// `None` past the end. Shared by the library and the on-device cache.
pub(crate) fn read_piece(path: &Path, len: Option<u64>, from: u64, to: Option<u64>) -> Result<Option<Vec<u8>>, Error> {
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let len = match len {
        Some(l) => l,
        None => file.metadata().map_err(io)?.len(),
    };
    let end = to.map_or(len, |t| (t + 1).min(len));
    if from >= end {
        return Ok(None);
    }
    let mut buf = vec![0u8; (end - from).min(CHUNK) as usize];
    file.read_exact_at(&mut buf, from).map_err(io)?;
    Ok(Some(buf))
}

/// The content and tier of an `objects/{cid}/{tier}.ogg` path.
fn object_of(rel: &str) -> Option<(ContentId, Tier)> {
    let rest = rel.strip_prefix("objects/")?;
    let (cid, file) = rest.split_once('/')?;
    Some((cid.parse().ok()?, file.strip_suffix(".ogg")?.parse().ok()?))
}
