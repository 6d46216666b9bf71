//! Token verification on arbitrary query strings: never panics, and never accepts a
//! query that was not signed with the key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segue_core::token::{Key, Verifier};

fuzz_target!(|input: (&str, &str, u64)| {
    let (path, query, now) = input;
    let key = Key::new("k1", vec![42u8; 32]).unwrap();
    let v = Verifier::new([key], 30);
    // A random query cannot carry a valid HMAC.
    assert!(v.verify("GET", path, Some(query), now, Some("SE")).is_err());
});
