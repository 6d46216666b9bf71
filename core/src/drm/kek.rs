//! Key custody: content keys at rest are wrapped (AES-256-GCM) under a key-encryption key
//! (KEK), and stored as `keys/{cid}.json`. The KEKs come from a file or the environment,
//! never from the object store, so a copy of the store alone opens nothing.
//!
//! KEK text (file, or `SEGUE_KEK` with `,` between entries): one `ID:HEX` per line, 32
//! bytes of hex each, `#` comments allowed. The first is current: new keys are wrapped
//! under it. The others only unwrap, so rotation is: put a new KEK first, run `segue keys
//! rotate` (it rewraps every content key; audio is untouched), then drop the old one.

use std::collections::BTreeMap;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::cipher::ContentKey;
use super::{b64, random, unb64, DrmError};
use crate::ids::ContentId;
use crate::key::ObjectKey;

pub const ENV: &str = "SEGUE_KEK";

/// The store key of a content's wrapped key.
pub fn object_key(cid: &ContentId) -> ObjectKey {
    // A content id is hex: always a valid key segment.
    ObjectKey::new(format!("keys/{cid}.json")).unwrap_or_else(|_| unreachable!("content ids are hex"))
}

/// A content key as it rests: which KEK wraps it, the GCM nonce and the sealed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    pub version: u32,
    pub kek: String,
    pub nonce: String,
    pub wrapped: String,
}

/// The configured KEKs. `Debug` names the ids only.
pub struct Keks {
    current: String,
    keys: BTreeMap<String, Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Keks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keks").field("current", &self.current).field("ids", &self.keys.keys()).finish()
    }
}

impl Keks {
    /// Parse KEK text; `source` names it in errors (a file path, or the variable).
    pub fn parse(source: &str, text: &str) -> Result<Keks, String> {
        let mut keys = BTreeMap::new();
        let mut current = None;
        // Comments run to the end of a line; entries are split by lines and commas.
        let entries = text.lines().flat_map(|line| line.split('#').next().unwrap_or("").split(','));
        for (n, entry) in entries.enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |why: &str| format!("{source}: entry {}: {why}", n + 1);
            let (id, hex) = entry.split_once(':').ok_or_else(|| bad("expected ID:HEX"))?;
            let (id, hex) = (id.trim(), hex.trim());
            if id.is_empty()
                || id.len() > 32
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("the id must be 1-32 of A-Z a-z 0-9 - _"));
            }
            let mut key = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hex, key.as_mut_slice()).map_err(|_| bad("the key must be 64 hex digits"))?;
            if keys.insert(id.to_owned(), key).is_some() {
                return Err(bad("the id appears twice"));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        let current = current.ok_or_else(|| format!("{source}: no key-encryption key in it"))?;
        Ok(Keks { current, keys })
    }

    /// From `file` when set, else from `SEGUE_KEK`; `None` when neither is.
    pub fn load(file: &str) -> Result<Option<Keks>, String> {
        Keks::load_or_var(file, ENV)
    }

    /// From `file` when set, else from the variable `var`; `None` when neither is.
    pub fn load_or_var(file: &str, var: &str) -> Result<Option<Keks>, String> {
        if !file.is_empty() {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            return Keks::parse(file, &text).map(Some);
        }
        match std::env::var(var) {
            Ok(text) if !text.trim().is_empty() => Keks::parse(var, &text).map(Some),
            _ => Ok(None),
        }
    }

    /// [`Keks::load`] for a config: errors name `field` (the `kek_file` setting), or the
    /// variable when the setting is empty.
    pub fn load_for(file: &str, field: &str) -> Result<Option<Keks>, crate::config::FieldError> {
        Keks::load_for_var(file, field, ENV)
    }

    /// [`Keks::load_or_var`] for a config, errors naming `field` or `var`.
    pub fn load_for_var(file: &str, field: &str, var: &str) -> Result<Option<Keks>, crate::config::FieldError> {
        Keks::load_or_var(file, var).map_err(|message| crate::config::FieldError {
            field: if file.is_empty() { var.into() } else { field.into() },
            message,
        })
    }

    /// Write a file holding one new random KEK (mode 0600), unless `path` exists.
    pub fn create_file(path: &Path, id: &str) -> std::io::Result<bool> {
        if path.exists() {
            return Ok(false);
        }
        let key = Zeroizing::new(random::<32>());
        let text = Zeroizing::new(format!(
            "# Segue key-encryption keys: ID:HEX, the first is current (docs/OPERATING.md).\n{id}:{}\n",
            hex::encode(key.as_slice())
        ));
        crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)?;
        Ok(true)
    }

    pub fn current(&self) -> &str {
        &self.current
    }

    fn aad(cid: &ContentId) -> Vec<u8> {
        format!("segue content key v1\n{cid}").into_bytes()
    }

    /// Wrap `key` of `cid` under the current KEK. The content id is authenticated with
    /// it: a wrapped key copied to another content does not open.
    pub fn wrap(&self, cid: &ContentId, key: &ContentKey) -> WrappedKey {
        self.seal(&Self::aad(cid), key.expose())
    }

    pub fn unwrap(&self, cid: &ContentId, w: &WrappedKey) -> Result<ContentKey, DrmError> {
        let plain = self.open(&Self::aad(cid), w)?;
        ContentKey::from_bytes(&plain).ok_or_else(|| DrmError::Malformed("a content key is 16 bytes".into()))
    }

    /// Seal any small secret under the current KEK, bound to `aad` (what it belongs to:
    /// the same bytes must be given to open it).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> WrappedKey {
        let kek = &self.keys[&self.current];
        let nonce = random::<12>();
        let sealed = Aes256Gcm::new((&**kek).into())
            .encrypt(&nonce.into(), Payload { msg: plain, aad })
            // AES-GCM encryption fails only past 64 GiB.
            .unwrap_or_default();
        WrappedKey { version: 1, kek: self.current.clone(), nonce: b64(&nonce), wrapped: b64(&sealed) }
    }

    /// Open what [`Keks::seal`] sealed with the same `aad`, under whichever KEK it names.
    pub fn open(&self, aad: &[u8], w: &WrappedKey) -> Result<Zeroizing<Vec<u8>>, DrmError> {
        if w.version != 1 {
            return Err(DrmError::Malformed(format!("wrapped key version {} is not 1", w.version)));
        }
        let kek = self.keys.get(&w.kek).ok_or_else(|| DrmError::UnknownKek(w.kek.clone()))?;
        let nonce: [u8; 12] = unb64("nonce", &w.nonce)?
            .try_into()
            .map_err(|_| DrmError::Malformed("the nonce is not 12 bytes".into()))?;
        let sealed = unb64("wrapped key", &w.wrapped)?;
        Aes256Gcm::new((&**kek).into())
            .decrypt(&nonce.into(), Payload { msg: &sealed, aad })
            .map(Zeroizing::new)
            .map_err(|_| DrmError::Sealed("the wrapped key does not open under its KEK"))
    }

    /// Whether `w` is wrapped under the current KEK (else `segue keys rotate` rewraps it).
    pub fn is_current(&self, w: &WrappedKey) -> bool {
        w.kek == self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn keys_wrap_under_the_current_kek_and_unwrap_under_any() {
        let old = Keks::parse("t", &format!("k1:{A}\n")).unwrap();
        let cid = ContentId::digest(b"a");
        let key = ContentKey::generate();
        let w = old.wrap(&cid, &key);
        assert_eq!(old.unwrap(&cid, &w).unwrap(), key);
        // Rotation: k2 first, k1 still there to unwrap.
        let both = Keks::parse("t", &format!("# new, rotated\nk2:{B}, k1:{A}  # old, going")).unwrap();
        assert_eq!(both.current(), "k2");
        assert!(!both.is_current(&w));
        let rewrapped = both.wrap(&cid, &both.unwrap(&cid, &w).unwrap());
        assert_eq!(rewrapped.kek, "k2");
        let new_only = Keks::parse("t", &format!("k2:{B}")).unwrap();
        assert_eq!(new_only.unwrap(&cid, &rewrapped).unwrap(), key);
        assert_eq!(new_only.unwrap(&cid, &w), Err(DrmError::UnknownKek("k1".into())));
        // Bound to its content.
        assert!(matches!(both.unwrap(&ContentId::digest(b"b"), &rewrapped), Err(DrmError::Sealed(_))));
        // Nothing secret in Debug.
        assert!(!format!("{both:?}").contains("2222"));
    }

    #[test]
    fn bad_kek_text_names_the_entry() {
        assert!(Keks::parse("f", "").unwrap_err().contains("no key-encryption key"));
        assert!(Keks::parse("f", "k1:abcd").unwrap_err().contains("entry 1"));
        assert!(Keks::parse("f", &format!("k1:{A}\nk1:{B}")).unwrap_err().contains("twice"));
        assert!(Keks::parse("f", &format!("bad id:{A}")).unwrap_err().contains("the id"));
    }
}
