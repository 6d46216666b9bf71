//! What a device reads offline and an origin reads from its config: signed licenses and
//! renewals (JSON from the server, kept on the device), and KEK text. Never panics, and
//! nothing not signed with the server's key verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segue_core::drm::kek::Keks;
use segue_core::drm::license::{ServerKey, Signed, Trust};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Keks::parse("fuzz", &text);
    let _ = Trust::from_public(&text);
    let trust = Trust::from_public(&ServerKey::from_bytes(&[7u8; 32]).unwrap().public()).unwrap();
    let signed = Signed { kid: String::new(), payload: text.to_string(), signature: text.to_string() };
    assert!(trust.license(&signed).is_err() && trust.renewal(&signed).is_err());
    if let Ok(s) = serde_json::from_slice::<Signed>(data) {
        // A random payload cannot carry a valid Ed25519 signature.
        assert!(trust.license(&s).is_err() && trust.renewal(&s).is_err());
    }
});
