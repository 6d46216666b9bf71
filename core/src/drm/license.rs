//! Licenses and renewals: what the license server issues and a device checks offline.
//!
//! A license names a user, a device, a tier, its dates and its tracks, and carries their
//! content keys sealed to the device's X25519 key with HPKE (RFC 9180: DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256, AES-128-GCM; the license id and device id as the AAD), all
//! of it signed by the server (Ed25519) so a device verifies it with no network. A
//! renewal is a small signed statement: a license id, new dates and the tracks revoked
//! since; keys are never resent.
//!
//! On the wire and on the device, both travel as [`Signed`]: the payload's exact JSON
//! bytes (base64) and a signature over a kind-tagged message, so a renewal can never be
//! passed off as a license or the other way round.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::cipher::{ContentKey, KEY_LEN};
use super::{b64, unb64, DrmError};
use crate::ids::ContentId;
use crate::tier::Tier;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::AesGcm128;

const HPKE_INFO: &[u8] = b"segue license keys v1";

/// A device's X25519 key pair; the secret half never leaves the device.
pub struct DeviceSecret(<Kem as hpke::Kem>::PrivateKey);

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

impl DeviceSecret {
    pub fn generate() -> DeviceSecret {
        DeviceSecret(Kem::gen_keypair().0)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<DeviceSecret, DrmError> {
        <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes)
            .map(DeviceSecret)
            .map_err(|_| DrmError::Malformed("a device key is 32 bytes".into()))
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_bytes().to_vec())
    }

    /// The public half, base64, as registered with the license server.
    pub fn public(&self) -> String {
        b64(&Kem::sk_to_pk(&self.0).to_bytes())
    }
}

/// Check a registered device key: 32 bytes of base64 that X25519 accepts.
pub fn check_device_public(public: &str) -> Result<(), DrmError> {
    let bytes = unb64("public_key", public)?;
    <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes)
        .map(|_| ())
        .map_err(|_| DrmError::Malformed("public_key must be a 32-byte X25519 public key".into()))
}

/// The server's signing key.
pub struct ServerKey(SigningKey);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKey({})", self.key_id())
    }
}

impl ServerKey {
    pub fn generate() -> ServerKey {
        ServerKey(SigningKey::from_bytes(&super::random::<32>()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ServerKey, DrmError> {
        let secret: [u8; 32] = bytes.try_into().map_err(|_| DrmError::Malformed("a signing key is 32 bytes".into()))?;
        Ok(ServerKey(SigningKey::from_bytes(&secret)))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> String {
        b64(self.0.verifying_key().as_bytes())
    }

    pub fn key_id(&self) -> String {
        key_id(self.0.verifying_key().as_bytes())
    }

    fn sign(&self, kind: &str, payload: Vec<u8>) -> Signed {
        let sig = self.0.sign(&message(kind, &payload));
        Signed { kid: self.key_id(), payload: b64(&payload), signature: b64(&sig.to_bytes()) }
    }

    pub fn sign_license(&self, license: &License) -> Signed {
        // Serializing plain data cannot fail.
        self.sign(LICENSE, serde_json::to_vec(license).unwrap_or_default())
    }

    pub fn sign_renewal(&self, renewal: &Renewal) -> Signed {
        self.sign(RENEWAL, serde_json::to_vec(renewal).unwrap_or_default())
    }
}

fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

const LICENSE: &str = "license";
const RENEWAL: &str = "renewal";

fn message(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!("segue {kind} v1\n").into_bytes();
    m.extend_from_slice(payload);
    m
}

/// A signed license or renewal, as sent and as kept on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub kid: String,
    pub payload: String,
    pub signature: String,
}

/// The server's public key as a device keeps it.
#[derive(Debug, Clone)]
pub struct Trust(VerifyingKey);

impl Trust {
    pub fn from_public(public: &str) -> Result<Trust, DrmError> {
        let bytes: [u8; 32] = unb64("server key", public)?
            .try_into()
            .map_err(|_| DrmError::Malformed("the server key is not 32 bytes".into()))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Trust)
            .map_err(|_| DrmError::Malformed("the server key is not an Ed25519 key".into()))
    }

    fn open<T: serde::de::DeserializeOwned>(&self, kind: &str, s: &Signed) -> Result<T, DrmError> {
        if s.kid != key_id(self.0.as_bytes()) {
            return Err(DrmError::BadSignature("signed by another server key"));
        }
        let payload = unb64("payload", &s.payload)?;
        let sig: [u8; 64] = unb64("signature", &s.signature)?
            .try_into()
            .map_err(|_| DrmError::BadSignature("a signature is 64 bytes"))?;
        self.0
            .verify_strict(&message(kind, &payload), &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| DrmError::BadSignature("the payload was changed or not signed by this server"))?;
        serde_json::from_slice(&payload).map_err(|e| DrmError::Malformed(format!("{kind} payload: {e}")))
    }

    pub fn license(&self, s: &Signed) -> Result<License, DrmError> {
        self.open(LICENSE, s)
    }

    pub fn renewal(&self, s: &Signed) -> Result<Renewal, DrmError> {
        self.open(RENEWAL, s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicensedTrack {
    pub track: String,
    pub content_id: ContentId,
}

/// What a license says. Dates are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct License {
    pub version: u32,
    pub id: String,
    pub user: String,
    pub device: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// After `expires_ms`, how long the device may still play (and should renew).
    pub grace_ms: i64,
    pub tier: Tier,
    pub tracks: Vec<LicensedTrack>,
    /// HPKE encapsulated key (base64).
    pub enc: String,
    /// The tracks' content keys in `tracks` order, sealed (base64).
    pub sealed_keys: String,
}

impl License {
    fn aad(id: &str, device: &str) -> Vec<u8> {
        format!("{id}\n{device}").into_bytes()
    }

    /// Seal `keys` (one per track, in order) to the device's public key into `enc` and
    /// `sealed_keys`.
    pub fn seal_keys(&mut self, device_public: &str, keys: &[ContentKey]) -> Result<(), DrmError> {
        if keys.len() != self.tracks.len() {
            return Err(DrmError::Malformed("one key per track".into()));
        }
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&unb64("device key", device_public)?)
            .map_err(|_| DrmError::Malformed("the device key is not an X25519 key".into()))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(keys.len() * KEY_LEN));
        for k in keys {
            plain.extend_from_slice(k.expose());
        }
        let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
            &OpModeS::Base,
            &pk,
            HPKE_INFO,
            &plain,
            &Self::aad(&self.id, &self.device),
        )
        .map_err(|_| DrmError::Sealed("HPKE sealing failed"))?;
        self.enc = b64(&enc.to_bytes());
        self.sealed_keys = b64(&ct);
        Ok(())
    }

    /// The content keys, in `tracks` order, opened with the device's secret key.
    pub fn open_keys(&self, device: &DeviceSecret) -> Result<Vec<ContentKey>, DrmError> {
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&unb64("enc", &self.enc)?)
            .map_err(|_| DrmError::Malformed("enc is not an encapsulated key".into()))?;
        let plain = Zeroizing::new(
            hpke::single_shot_open::<Aead, Kdf, Kem>(
                &OpModeR::Base,
                &device.0,
                &enc,
                HPKE_INFO,
                &unb64("sealed_keys", &self.sealed_keys)?,
                &Self::aad(&self.id, &self.device),
            )
            .map_err(|_| DrmError::Sealed("the keys are sealed to another device"))?,
        );
        if plain.len() != self.tracks.len() * KEY_LEN {
            return Err(DrmError::Malformed("the sealed keys do not match the tracks".into()));
        }
        Ok(plain.chunks(KEY_LEN).filter_map(ContentKey::from_bytes).collect())
    }
}

/// A renewal: new dates for a license, and the tracks it no longer covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renewal {
    pub version: u32,
    pub license: String,
    pub device: String,
    pub renewed_ms: i64,
    pub expires_ms: i64,
    pub grace_ms: i64,
    /// Track ids whose rights ended since the license was issued: delete their keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
}

/// Whether a license lets a device play now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Valid {
        left_ms: i64,
    },
    /// Past expiry, inside the grace period: plays, and should renew.
    Grace {
        left_ms: i64,
    },
    Expired {
        since_ms: i64,
    },
    /// The clock reads earlier than a time the device has already seen.
    ClockRolledBack {
        by_ms: i64,
    },
}

/// How far back a clock may step (NTP corrections, time zones do not move UTC) before it
/// counts as set back.
pub const CLOCK_SLACK_MS: i64 = 5 * 60 * 1000;

pub fn standing(expires_ms: i64, grace_ms: i64, now_ms: i64, last_seen_ms: i64) -> Standing {
    if now_ms + CLOCK_SLACK_MS < last_seen_ms {
        return Standing::ClockRolledBack { by_ms: last_seen_ms - now_ms };
    }
    // A clock inside the slack counts from the latest time seen.
    let now = now_ms.max(last_seen_ms);
    if now <= expires_ms {
        Standing::Valid { left_ms: expires_ms - now }
    } else if now <= expires_ms.saturating_add(grace_ms) {
        Standing::Grace { left_ms: expires_ms + grace_ms - now }
    } else {
        Standing::Expired { since_ms: now - expires_ms.saturating_add(grace_ms) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn license(device: &str, n: usize) -> License {
        License {
            version: 1,
            id: "lic-1".into(),
            user: "u1".into(),
            device: device.into(),
            issued_ms: 0,
            expires_ms: 30 * 86_400_000,
            grace_ms: 48 * 3_600_000,
            tier: Tier::High,
            tracks: (0..n)
                .map(|i| LicensedTrack { track: format!("trk_{i}"), content_id: ContentId::digest(&[i as u8]) })
                .collect(),
            enc: String::new(),
            sealed_keys: String::new(),
        }
    }

    #[test]
    fn keys_open_only_on_their_device_and_signatures_cover_every_byte() {
        let (device, other) = (DeviceSecret::generate(), DeviceSecret::generate());
        let keys: Vec<ContentKey> = (0..3).map(|_| ContentKey::generate()).collect();
        let mut lic = license("dev-1", 3);
        lic.seal_keys(&device.public(), &keys).unwrap();
        let server = ServerKey::generate();
        let signed = server.sign_license(&lic);
        let trust = Trust::from_public(&server.public()).unwrap();
        let opened = trust.license(&signed).unwrap();
        assert_eq!(opened.open_keys(&device).unwrap(), keys);
        assert!(matches!(opened.open_keys(&other), Err(DrmError::Sealed(_))));
        // A license whose device field is changed no longer opens (the AAD), even when
        // re-signed by a forger's own key, and any flipped byte fails the signature.
        let mut moved = opened.clone();
        moved.device = "dev-2".into();
        assert!(moved.open_keys(&device).is_err());
        let mut payload = unb64("p", &signed.payload).unwrap();
        for at in [0, payload.len() / 2, payload.len() - 1] {
            payload[at] ^= 1;
            let tampered = Signed { payload: b64(&payload), ..signed.clone() };
            assert!(trust.license(&tampered).is_err(), "byte {at}");
            payload[at] ^= 1;
        }
        // A renewal is not a license.
        let renewal = Renewal {
            version: 1,
            license: "lic-1".into(),
            device: "dev-1".into(),
            renewed_ms: 1,
            expires_ms: 2,
            grace_ms: 3,
            revoked: vec![],
        };
        let r = server.sign_renewal(&renewal);
        assert_eq!(trust.renewal(&r).unwrap(), renewal);
        assert!(trust.license(&r).is_err());
        // Another server's key is refused.
        assert!(Trust::from_public(&ServerKey::generate().public()).unwrap().license(&signed).is_err());
    }

    #[test]
    fn expiry_grace_and_clock_rollback() {
        let day = 86_400_000;
        let (exp, grace) = (30 * day, 2 * day);
        assert!(matches!(standing(exp, grace, 29 * day, 0), Standing::Valid { .. }));
        assert_eq!(standing(exp, grace, 30 * day + 47 * 3_600_000, 0), Standing::Grace { left_ms: 3_600_000 });
        assert!(matches!(standing(exp, grace, 32 * day + 1, 0), Standing::Expired { .. }));
        assert!(matches!(standing(exp, grace, 10 * day, 31 * day), Standing::ClockRolledBack { .. }));
        // A small step back counts from the latest time seen.
        assert!(matches!(standing(exp, grace, 29 * day, 29 * day + 60_000), Standing::Valid { .. }));
    }
}
