//! Range header resolution: never panics, and every range it returns lies inside the
//! object, with multipart framing that adds up.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segue_core::range::{resolve, Multipart, RangeOutcome, MAX_RANGES};

fuzz_target!(|input: (&str, u32)| {
    let (header, len) = input;
    let len = u64::from(len);
    if let RangeOutcome::Partial(ranges) = resolve(header, len) {
        assert!(!ranges.is_empty() && ranges.len() <= MAX_RANGES);
        for r in &ranges {
            assert!(r.first <= r.last && r.last < len, "{r:?} outside {len}");
        }
        let total: u64 = ranges.iter().map(|r| r.len()).sum();
        let mp = Multipart::new(1, "audio/ogg", len);
        assert!(mp.body_len(&ranges) > total);
        if ranges.len() > 1 {
            // Coalesced or not, parts never overlap, so the body is bounded by the object.
            assert!(total <= len);
        }
    }
});
