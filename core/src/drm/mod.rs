//! Offline listening under DRM: the contracts every role shares.
//!
//! - [`cipher`]: how an `enc/` object is the plain Ogg file under AES-128-CTR, so that any
//!   byte offset decrypts on its own (the origin encrypts, the player decrypts).
//! - [`kek`]: key custody. Content keys rest wrapped under a key-encryption key, which
//!   rotates without touching audio.
//! - [`license`]: what the license server signs and seals to a device, and what the
//!   device verifies offline.

pub mod cipher;
pub mod kek;
pub mod license;

use base64::Engine;

/// Why a key, license or renewal was refused. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrmError {
    #[error("{0}")]
    Malformed(String),
    #[error("the signature does not verify: {0}")]
    BadSignature(&'static str),
    #[error("cannot open: {0}")]
    Sealed(&'static str),
    #[error("no key-encryption key {0:?} is configured")]
    UnknownKek(String),
}

/// Base64 (standard alphabet, padded) for keys, signatures and sealed blobs in JSON.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(what: &str, s: &str) -> Result<Vec<u8>, DrmError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| DrmError::Malformed(format!("{what} is not base64: {e}")))
}

/// `N` random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS generator failing means the machine cannot do cryptography at all.
    getrandom::fill(&mut out).unwrap_or_else(|e| panic!("the OS random generator failed: {e}"));
    out
}
