//! Request paths: parsing never panics, and whatever parses maps to a key that stays
//! inside the store root and back to the same path.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segue_core::{ObjectKey, ObjectPath};

fuzz_target!(|path: &str| {
    if let Ok(p) = ObjectPath::parse(path) {
        let key = p.key();
        assert!(ObjectKey::new(key.as_str()).is_ok());
        assert!(!key.as_str().contains(".."));
        assert_eq!(p.http_path(), path);
    }
    let _ = ObjectKey::new(path);
});
