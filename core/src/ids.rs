//! Identifiers shared on the wire: content ids (SHA-256 of decoded audio) and track ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The identity of a piece of audio: lowercase hex SHA-256 (64 characters).
///
/// Content addressing means a re-release of the same audio maps to the same objects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId([u8; 32]);

impl ContentId {
    pub const HEX_LEN: usize = 64;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentId(bytes)
    }

    /// The content id of a byte string (used for synthetic and test content).
    pub fn digest(data: &[u8]) -> Self {
        ContentId(Sha256::digest(data).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for ContentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        // Lowercase only: one spelling per id keeps object keys and cache keys unique.
        if s.len() != Self::HEX_LEN || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid("content id", format!("{s:?} is not 64 lowercase hex digits")));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| Error::invalid("content id", e.to_string()))?;
        Ok(ContentId(out))
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

impl Serialize for ContentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A catalog track id: 1 to 64 characters of `[A-Za-z0-9_-]`, opaque to clients.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TrackId(String);

impl TrackId {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrackId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(Error::invalid(
                "track id",
                format!("{s:?} must be 1-{} characters of A-Z a-z 0-9 _ -", Self::MAX_LEN),
            ));
        }
        Ok(TrackId(s.to_owned()))
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrackId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for TrackId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_id_round_trips_and_rejects_bad_spellings() {
        let id = ContentId::digest(b"hello");
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ContentId>().unwrap(), id);
        assert!(s.to_uppercase().parse::<ContentId>().is_err());
        assert!(s[..63].parse::<ContentId>().is_err());
        assert!(format!("{}g", &s[..63]).parse::<ContentId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ContentId>(&json).unwrap(), id);
    }

    #[test]
    fn track_id_validation() {
        assert!("trk_01-A".parse::<TrackId>().is_ok());
        assert!("".parse::<TrackId>().is_err());
        assert!("a/b".parse::<TrackId>().is_err());
        assert!("x".repeat(65).parse::<TrackId>().is_err());
        assert!(serde_json::from_str::<TrackId>("\"../x\"").is_err());
    }
}
