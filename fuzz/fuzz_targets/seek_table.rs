//! Seek-table parsing: untrusted JSON never panics; what parses is valid and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segue_core::seek_table::SeekTable;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = SeekTable::from_json(data) {
        assert!(t.validate().is_ok());
        let again = SeekTable::from_json(&t.to_json()).expect("round trip");
        assert_eq!(again, t);
        let _ = t.entry_for(t.total_samples / 2);
    }
});
