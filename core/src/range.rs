//! Resolving a `Range` request header against a representation length (RFC 9110 §14).
//!
//! Parsing is `http-range-header`'s; what to serve is decided here, once, for every hop:
//! - A header that is not `bytes=` or is malformed (`bytes=abc`, `bytes=5-1`) is ignored
//!   and the full representation is served with 200 (RFC 9110 §14.2 lets a server ignore
//!   Range; clients keep working and nothing is amplified).
//! - Ranges starting at or past the end are dropped; if none is left (or the header is
//!   `bytes=-0`, or the representation is empty) the answer is 416 with `bytes */LEN`.
//! - A suffix longer than the representation means the whole representation (§14.1.3).
//! - Overlapping ranges are coalesced into ascending, merged ranges, which bounds the
//!   response to one copy of the object (§14.2 allows coalescing). Otherwise client order
//!   is kept.
//! - More than [`MAX_RANGES`] ranges: the header is ignored (200), a guard against
//!   many-small-ranges abuse.

use std::fmt;

use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};

pub const MAX_RANGES: usize = 64;

/// An inclusive byte range, `first..=last`, already checked against a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Half-open form, as object stores take it.
    pub fn to_std(self) -> std::ops::Range<u64> {
        self.first..self.last + 1
    }

    /// The `Content-Range` value for this range of a `total`-byte representation.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.first, self.last, total)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// What to answer to a request with a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Serve the whole representation (200).
    Full,
    /// Serve these ranges (206); one range is a plain body, several are multipart.
    Partial(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

/// The `Content-Range` value of a 416 response.
pub fn unsatisfied_content_range(total: u64) -> String {
    format!("bytes */{total}")
}

pub fn resolve(header: &str, total: u64) -> RangeOutcome {
    let parsed = match http_range_header::parse_range_header(header) {
        Ok(p) => p,
        // `bytes=-0` is well-formed but selects nothing.
        Err(RangeUnsatisfiableError::ZeroSuffix) => return RangeOutcome::Unsatisfiable,
        Err(_) => return RangeOutcome::Full,
    };
    if parsed.ranges.len() > MAX_RANGES {
        return RangeOutcome::Full;
    }
    let mut out = Vec::with_capacity(parsed.ranges.len());
    for r in &parsed.ranges {
        let range = match (r.start, r.end) {
            (StartPosition::Index(first), end) => {
                let last = match end {
                    EndPosition::Index(last) if last < first => return RangeOutcome::Full,
                    EndPosition::Index(last) => last,
                    EndPosition::LastByte => u64::MAX,
                };
                if first >= total {
                    continue;
                }
                ByteRange { first, last: last.min(total - 1) }
            }
            (StartPosition::FromLast(n), _) => {
                if total == 0 {
                    continue;
                }
                ByteRange { first: total.saturating_sub(n), last: total - 1 }
            }
        };
        out.push(range);
    }
    if out.is_empty() {
        return RangeOutcome::Unsatisfiable;
    }
    if overlaps(&out) {
        out = coalesce(out);
    }
    RangeOutcome::Partial(out)
}

fn overlaps(ranges: &[ByteRange]) -> bool {
    let mut sorted: Vec<_> = ranges.to_vec();
    sorted.sort_by_key(|r| r.first);
    sorted.windows(2).any(|w| w[1].first <= w[0].last)
}

fn coalesce(mut ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    ranges.sort_by_key(|r| r.first);
    let mut out: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if r.first <= prev.last.saturating_add(1) => prev.last = prev.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

/// Framing of a `multipart/byteranges` body (RFC 9110 §14.6).
#[derive(Debug, Clone)]
pub struct Multipart {
    boundary: String,
    content_type: String,
    total: u64,
}

impl Multipart {
    /// `seed` makes the boundary unique per response; it must not occur in the body, which
    /// a 16-hex-digit random-looking token after a fixed prefix makes vanishingly unlikely.
    pub fn new(seed: u64, content_type: &str, total: u64) -> Self {
        Multipart { boundary: format!("segue-{seed:016x}"), content_type: content_type.to_owned(), total }
    }

    pub fn content_type_header(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }

    /// The bytes before part `range`'s body.
    pub fn part_header(&self, range: &ByteRange) -> String {
        format!(
            "\r\n--{}\r\nContent-Type: {}\r\nContent-Range: {}\r\n\r\n",
            self.boundary,
            self.content_type,
            range.content_range(self.total)
        )
    }

    /// The bytes after the last part.
    pub fn trailer(&self) -> String {
        format!("\r\n--{}--\r\n", self.boundary)
    }

    /// Exact body length, so multipart responses carry Content-Length.
    pub fn body_len(&self, ranges: &[ByteRange]) -> u64 {
        ranges.iter().map(|r| self.part_header(r).len() as u64 + r.len()).sum::<u64>() + self.trailer().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange { first, last }
    }

    #[test]
    fn single_forms() {
        assert_eq!(resolve("bytes=0-99", 1000), RangeOutcome::Partial(vec![r(0, 99)]));
        assert_eq!(resolve("bytes=900-", 1000), RangeOutcome::Partial(vec![r(900, 999)]));
        assert_eq!(resolve("bytes=-100", 1000), RangeOutcome::Partial(vec![r(900, 999)]));
        assert_eq!(resolve("bytes=-5000", 1000), RangeOutcome::Partial(vec![r(0, 999)]));
        assert_eq!(resolve("bytes=990-5000", 1000), RangeOutcome::Partial(vec![r(990, 999)]));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(resolve("bytes=1000-", 1000), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve("bytes=-0", 1000), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve("bytes=0-0", 0), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve("bytes=-5", 0), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve("bytes=5-1", 1000), RangeOutcome::Full);
        assert_eq!(resolve("bytes=abc", 1000), RangeOutcome::Full);
        assert_eq!(resolve("items=0-1", 1000), RangeOutcome::Full);
        let many =
            format!("bytes={}", (0..65).map(|i| format!("{}-{}", i * 10, i * 10 + 1)).collect::<Vec<_>>().join(","));
        assert_eq!(resolve(&many, 10_000), RangeOutcome::Full);
    }

    #[test]
    fn multiple_ranges_keep_order_unless_they_overlap() {
        assert_eq!(resolve("bytes=500-599,0-9", 1000), RangeOutcome::Partial(vec![r(500, 599), r(0, 9)]));
        assert_eq!(resolve("bytes=0-9,2000-,20-29", 1000), RangeOutcome::Partial(vec![r(0, 9), r(20, 29)]));
        assert_eq!(resolve("bytes=50-99,0-60,-10", 1000), RangeOutcome::Partial(vec![r(0, 99), r(990, 999)]));
    }

    #[test]
    fn multipart_length_is_exact() {
        let m = Multipart::new(7, "audio/ogg", 1000);
        let ranges = [r(0, 9), r(100, 199)];
        let body: String =
            ranges.iter().map(|x| m.part_header(x) + &"x".repeat(x.len() as usize)).collect::<String>() + &m.trailer();
        assert_eq!(body.len() as u64, m.body_len(&ranges));
        assert!(m.content_type_header().starts_with("multipart/byteranges; boundary=segue-"));
    }
}
