//! The play outbox: every play the listener heard, kept on the device until the app API
//! has acknowledged it.
//!
//! A play is written here (one file per play, written to a temp file, fsynced, renamed
//! into place, the directory fsynced) *before* it is sent, and leaves only after the app
//! API answered `accepted` or `duplicate`. A crash or a kill at any point leaves every
//! play either here or acknowledged; a play sent whose answer was lost is sent again and
//! answered `duplicate`, so it is counted once. Offline plays simply wait here.
//!
//! Each play's id is a UUIDv7 made on the device: unique without coordination, and
//! time-sortable, so the outbox sends the oldest plays first and the server's index on
//! event ids stays append-mostly. Plays the app API refuses for good (`rejected`,
//! `conflict`) are moved to `rejected/` with the reason, for the app to show or report,
//! instead of being resent forever.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// One play as the app API's `POST /v1/play-events` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayRecord {
    pub event_id: String,
    pub track: String,
    /// When playback started, by the device's clock (Unix ms).
    pub started_ms: i64,
    pub ms_played: i64,
    pub tier: String,
    pub device: String,
    pub skipped: bool,
    /// Where the listener was, when the app knows better than the account's home country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The stream session the track was fetched in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// What waits in the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// Plays not yet acknowledged.
    pub waiting: usize,
    /// Plays the app API refused for good, kept in `rejected/`.
    pub set_aside: usize,
}

/// The outbox directory of one device.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    device: String,
}

fn io(what: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("play outbox {}: {e}", what.display()))
}

/// A new play id: a UUIDv7 (48 bits of Unix ms, then random bits).
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Outbox {
    /// Open (creating) the outbox in `dir`. The device id is made once and kept in
    /// `dir/device-id`.
    pub fn open(dir: &Path) -> Result<Outbox, Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join("rejected")).map_err(|e| io(dir, e))?;
        let id_file = dir.join("device-id");
        let device = match std::fs::read_to_string(&id_file) {
            Ok(id) if valid_id(id.trim()) => id.trim().to_owned(),
            Ok(_) => return Err(Error::Io(format!("{}: not a device id", id_file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = format!("dev-{}", uuid::Uuid::now_v7().simple());
                segue_core::fsutil::write_atomic(&id_file, id.as_bytes(), 0o600).map_err(|e| io(&id_file, e))?;
                id
            }
            Err(e) => return Err(io(&id_file, e)),
        };
        Ok(Outbox { dir: dir.to_owned(), device })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This device's id, sent with every play.
    pub fn device(&self) -> &str {
        &self.device
    }

    fn path(&self, event_id: &str) -> PathBuf {
        self.dir.join(format!("{event_id}.json"))
    }

    /// Keep `play` durably (returns once it is on disk).
    pub fn add(&self, play: &PlayRecord) -> Result<(), Error> {
        if !valid_id(&play.event_id) {
            return Err(Error::Io(format!("play id {:?} is not a file-safe id", play.event_id)));
        }
        let path = self.path(&play.event_id);
        let bytes = serde_json::to_vec(play).map_err(|e| Error::Io(e.to_string()))?;
        segue_core::fsutil::write_atomic(&path, &bytes, 0o600).map_err(|e| io(&path, e))
    }

    /// The plays waiting, oldest first (UUIDv7 ids sort by time). A file that does not
    /// parse (a disk fault; writes are atomic) is moved to `rejected/` and named in the log.
    pub fn pending(&self) -> Result<Vec<PlayRecord>, Error> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let name = entry.map_err(|e| io(&self.dir, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json").filter(|id| valid_id(id)) {
                names.push(id.to_owned());
            }
        }
        names.sort();
        let mut plays = Vec::with_capacity(names.len());
        for id in names {
            let path = self.path(&id);
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<PlayRecord>(&bytes) {
                    Ok(p) if p.event_id == id => plays.push(p),
                    _ => {
                        tracing::warn!(file = %path.display(), "unreadable play in the outbox; moved to rejected/");
                        let _ = std::fs::rename(&path, self.dir.join("rejected").join(format!("{id}.unreadable")));
                    }
                },
                // Removed meanwhile by another sender: acknowledged.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
        Ok(plays)
    }

    /// Forget acknowledged plays.
    pub fn remove(&self, event_ids: &[&str]) -> Result<(), Error> {
        if event_ids.is_empty() {
            return Ok(());
        }
        for id in event_ids {
            let path = self.path(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io(&self.dir, e))
    }

    /// Move a play the app API refused for good to `rejected/`, with why.
    pub fn set_aside(&self, play: &PlayRecord, status: &str, reason: &str) -> Result<(), Error> {
        let kept = self.dir.join("rejected").join(format!("{}.json", play.event_id));
        let record = serde_json::json!({ "play": play, "status": status, "reason": reason });
        segue_core::fsutil::write_atomic(&kept, record.to_string().as_bytes(), 0o600).map_err(|e| io(&kept, e))?;
        self.remove(&[play.event_id.as_str()])
    }

    pub fn state(&self) -> Result<State, Error> {
        let count = |dir: &Path, ext: &str| -> Result<usize, Error> {
            let mut n = 0;
            for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
                let name = entry.map_err(|e| io(dir, e))?.file_name();
                n += usize::from(name.to_string_lossy().strip_suffix(ext).is_some_and(valid_id));
            }
            Ok(n)
        };
        Ok(State { waiting: count(&self.dir, ".json")?, set_aside: count(&self.dir.join("rejected"), ".json")? })
    }
}

/// Ids that are safe as file names and acceptable to the app API.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(outbox: &Outbox, track: &str) -> PlayRecord {
        PlayRecord {
            event_id: new_event_id(),
            track: track.into(),
            started_ms: 1_800_000_000_000,
            ms_played: 31_000,
            tier: "high".into(),
            device: outbox.device().into(),
            skipped: false,
            country: None,
            session: None,
        }
    }

    #[test]
    fn plays_wait_oldest_first_until_acknowledged_and_refused_ones_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let (a, b, c) = (play(&outbox, "t1"), play(&outbox, "t2"), play(&outbox, "t3"));
        assert!(a.event_id < b.event_id && b.event_id < c.event_id, "UUIDv7 ids sort by time");
        for p in [&c, &a, &b] {
            outbox.add(p).unwrap();
        }
        // Reopening (a restart) finds them, and the same device id.
        let again = Outbox::open(dir.path()).unwrap();
        assert_eq!(again.device(), outbox.device());
        assert_eq!(again.pending().unwrap(), vec![a.clone(), b.clone(), c.clone()]);
        again.remove(&[a.event_id.as_str()]).unwrap();
        again.set_aside(&b, "rejected", "unknown_track").unwrap();
        assert_eq!(again.pending().unwrap(), vec![c]);
        assert_eq!(again.state().unwrap(), State { waiting: 1, set_aside: 1 });
        // A torn or foreign file is moved out of the way, not sent and not fatal.
        std::fs::write(dir.path().join("0000-bad.json"), b"{not json").unwrap();
        assert_eq!(again.pending().unwrap().len(), 1);
        assert!(dir.path().join("rejected/0000-bad.unreadable").exists());
    }

    #[test]
    fn ids_that_could_escape_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let mut p = play(&outbox, "t1");
        p.event_id = "../../etc/x".into();
        assert!(outbox.add(&p).is_err());
    }
}
