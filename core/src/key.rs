//! Object keys in the store and the HTTP paths that mirror them.
//!
//! Keys: `audio/{cid}/{tier}.ogg`, `seek/{cid}/{tier}.json`, `manifest/{cid}.json`,
//! `enc/{cid}/{tier}.ogg`. Paths: `/a/..`, `/seek/..`, `/m/..`, `/enc/..` with the same tail.

use std::fmt;

use crate::error::Error;
use crate::ids::ContentId;
use crate::tier::Tier;

/// A validated relative object key: `/`-separated segments of `[A-Za-z0-9._-]` that do not
/// start with `.`, at most 1024 bytes. Valid keys are safe to join onto a directory, and
/// never collide with the filesystem store's `.`-prefixed temp files.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub const MAX_LEN: usize = 1024;

    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        if key.is_empty() || key.len() > Self::MAX_LEN {
            return Err(Error::invalid("object key", format!("length must be 1-{} bytes", Self::MAX_LEN)));
        }
        for seg in key.split('/') {
            let ok = !seg.is_empty()
                && !seg.starts_with('.')
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(Error::invalid("object key", format!("{key:?} has a bad segment {seg:?}")));
            }
        }
        Ok(ObjectKey(key))
    }

    pub fn audio(cid: &ContentId, tier: Tier) -> Self {
        ObjectKey(format!("audio/{cid}/{tier}.ogg"))
    }

    pub fn seek(cid: &ContentId, tier: Tier) -> Self {
        ObjectKey(format!("seek/{cid}/{tier}.json"))
    }

    pub fn manifest(cid: &ContentId) -> Self {
        ObjectKey(format!("manifest/{cid}.json"))
    }

    pub fn encrypted(cid: &ContentId, tier: Tier) -> Self {
        ObjectKey(format!("enc/{cid}/{tier}.ogg"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}

/// What an HTTP path names, once parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectPath {
    Audio(ContentId, Tier),
    Seek(ContentId, Tier),
    Manifest(ContentId),
    Encrypted(ContentId, Tier),
}

/// Why a request path does not name an object.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Unsafe or malformed (traversal, encoded separators, NUL, ...): the client is wrong (400).
    Unsafe(&'static str),
    /// Well-formed but names nothing we serve (404).
    NoSuchObject,
}

impl ObjectPath {
    pub fn content_id(&self) -> &ContentId {
        match self {
            ObjectPath::Audio(c, _) | ObjectPath::Seek(c, _) | ObjectPath::Encrypted(c, _) => c,
            ObjectPath::Manifest(c) => c,
        }
    }

    pub fn tier(&self) -> Option<Tier> {
        match self {
            ObjectPath::Audio(_, t) | ObjectPath::Seek(_, t) | ObjectPath::Encrypted(_, t) => Some(*t),
            ObjectPath::Manifest(_) => None,
        }
    }

    pub fn key(&self) -> ObjectKey {
        match self {
            ObjectPath::Audio(c, t) => ObjectKey::audio(c, *t),
            ObjectPath::Seek(c, t) => ObjectKey::seek(c, *t),
            ObjectPath::Manifest(c) => ObjectKey::manifest(c),
            ObjectPath::Encrypted(c, t) => ObjectKey::encrypted(c, *t),
        }
    }

    pub fn http_path(&self) -> String {
        match self {
            ObjectPath::Audio(c, t) => format!("/a/{c}/{t}.ogg"),
            ObjectPath::Seek(c, t) => format!("/seek/{c}/{t}.json"),
            ObjectPath::Manifest(c) => format!("/m/{c}.json"),
            ObjectPath::Encrypted(c, t) => format!("/enc/{c}/{t}.ogg"),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            ObjectPath::Audio(..) | ObjectPath::Encrypted(..) => "audio/ogg",
            ObjectPath::Seek(..) | ObjectPath::Manifest(..) => "application/json",
        }
    }

    /// Parse the path part of a request target (no query).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        check_path_safety(path)?;
        let rest = path.strip_prefix('/').ok_or(PathError::Unsafe("path must start with '/'"))?;
        let mut segs = rest.split('/');
        let (first, second, third) = (segs.next(), segs.next(), segs.next());
        if segs.next().is_some() {
            return Err(PathError::NoSuchObject);
        }
        let cid = |s: &str| s.parse::<ContentId>().map_err(|_| PathError::NoSuchObject);
        let tier_file = |s: &str, ext: &str| -> Result<Tier, PathError> {
            let name = s.strip_suffix(ext).ok_or(PathError::NoSuchObject)?;
            name.parse::<Tier>().map_err(|_| PathError::NoSuchObject)
        };
        match (first, second, third) {
            (Some("a"), Some(c), Some(f)) => Ok(ObjectPath::Audio(cid(c)?, tier_file(f, ".ogg")?)),
            (Some("seek"), Some(c), Some(f)) => Ok(ObjectPath::Seek(cid(c)?, tier_file(f, ".json")?)),
            (Some("enc"), Some(c), Some(f)) => Ok(ObjectPath::Encrypted(cid(c)?, tier_file(f, ".ogg")?)),
            (Some("m"), Some(f), None) => {
                let c = f.strip_suffix(".json").ok_or(PathError::NoSuchObject)?;
                Ok(ObjectPath::Manifest(cid(c)?))
            }
            _ => Err(PathError::NoSuchObject),
        }
    }
}

/// Refuse request paths that try to escape or smuggle separators, whatever route they
/// would match. Object paths never need percent-encoding, so any `%` is refused too:
/// that closes `%2e%2e`, `%2f`, `%5c` and `%00` in one rule.
pub fn check_path_safety(path: &str) -> Result<(), PathError> {
    if path.bytes().any(|b| b == 0 || b == b'\\' || b < 0x20 || b == 0x7f) {
        return Err(PathError::Unsafe("path contains a control character or backslash"));
    }
    if path.contains('%') {
        return Err(PathError::Unsafe("percent-encoded bytes are not allowed in object paths"));
    }
    if path.split('/').any(|s| s == ".." || s == ".") {
        return Err(PathError::Unsafe("dot segments are not allowed in object paths"));
    }
    if path.contains("//") {
        return Err(PathError::Unsafe("empty path segments are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid() -> ContentId {
        ContentId::digest(b"x")
    }

    #[test]
    fn paths_map_to_keys_and_back() {
        let c = cid();
        for p in [
            ObjectPath::Audio(c, Tier::High),
            ObjectPath::Seek(c, Tier::Low),
            ObjectPath::Manifest(c),
            ObjectPath::Encrypted(c, Tier::VeryHigh),
        ] {
            assert_eq!(ObjectPath::parse(&p.http_path()).unwrap(), p);
            assert!(ObjectKey::new(p.key().as_str()).is_ok());
        }
        assert_eq!(ObjectPath::Audio(c, Tier::High).key().as_str(), format!("audio/{c}/high.ogg"));
    }

    #[test]
    fn unsafe_paths_are_refused_and_unknown_ones_are_not_found() {
        let c = cid();
        for bad in [
            format!("/a/{c}/../x"),
            "/a/%2e%2e/etc/passwd".to_string(),
            format!("/a/{c}%2Fhigh.ogg"),
            "/a/x\0y".to_string(),
            "/a\\b".to_string(),
            format!("/a//{c}/high.ogg"),
        ] {
            assert!(matches!(ObjectPath::parse(&bad), Err(PathError::Unsafe(_))), "{bad:?}");
        }
        for missing in [
            format!("/a/{c}/ultra.ogg"),
            format!("/a/{c}/high.mp3"),
            "/a/abc/high.ogg".to_string(),
            "/".to_string(),
            format!("/m/{c}"),
            format!("/a/{c}/high.ogg/more"),
        ] {
            assert_eq!(ObjectPath::parse(&missing), Err(PathError::NoSuchObject), "{missing:?}");
        }
    }

    #[test]
    fn object_keys_refuse_traversal() {
        for bad in ["", "/abs", "a//b", "a/../b", "a/./b", "a/b\\c", "a/b c", "..", "a/", "a/.tmp"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::new("audio/x/high.ogg").is_ok());
    }
}
