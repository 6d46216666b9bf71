//! HTTP-dates (RFC 9110 §5.6.7) as caches must read them: the three forms, exactly
//! (a stray space, a one-digit hour or another time zone makes a date invalid, and an
//! invalid `Expires` means "already expired"), but without failing a date over the case of
//! its names or a weekday that does not match (deployed servers send both).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

pub fn parse(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    imf_fixdate(v).or_else(|| rfc850(v)).or_else(|| asctime(v))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(v: &str) -> Option<SystemTime> {
    let (day_name, rest) = v.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, zone] = parts[..] else { return None };
    (DAYS.contains(&day_name.to_ascii_lowercase().as_str()) && zone.eq_ignore_ascii_case("GMT")).then_some(())?;
    at(digits(year, 4)?, month_of(month)?, digits(day, 2)?, time)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete; a two-digit year more than 50 years ahead
/// is in the past century, RFC 9110 §5.6.7).
fn rfc850(v: &str) -> Option<SystemTime> {
    let (day_name, rest) = v.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [date, time, zone] = parts[..] else { return None };
    (LONG_DAYS.contains(&day_name.to_ascii_lowercase().as_str()) && zone.eq_ignore_ascii_case("GMT")).then_some(())?;
    let dparts: Vec<&str> = date.split('-').collect();
    let [day, month, year] = dparts[..] else { return None };
    let yy = digits(year, 2)?;
    let now_year = 1970 + SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() / 31_556_952;
    let mut full = (now_year / 100) * 100 + yy;
    if full > now_year + 50 {
        full -= 100;
    }
    at(full, month_of(month)?, digits(day, 2)?, time)
}

/// `Sun Nov  6 08:49:37 1994` (the day padded with a space).
fn asctime(v: &str) -> Option<SystemTime> {
    let (day_name, rest) = v.split_at_checked(4)?;
    (DAYS.contains(&day_name.trim_end().to_ascii_lowercase().as_str()) && day_name.ends_with(' ')).then_some(())?;
    let (month, rest) = rest.split_at_checked(4)?;
    let (day, rest) = rest.split_at_checked(3)?;
    let day = day.strip_suffix(' ')?;
    let day = day.strip_prefix(' ').map_or(digits(day, 2), |d| digits(d, 1))?;
    let (time, year) = rest.split_once(' ')?;
    at(digits(year, 4)?, month_of(month.strip_suffix(' ')?)?, day, time)
}

fn digits(s: &str, n: usize) -> Option<u64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

fn month_of(s: &str) -> Option<u64> {
    MONTHS.iter().position(|m| m.eq_ignore_ascii_case(s)).map(|i| i as u64 + 1)
}

/// `HH:MM:SS` on the given day, as a time.
fn at(year: u64, month: u64, day: u64, time: &str) -> Option<SystemTime> {
    let t: Vec<&str> = time.split(':').collect();
    let [h, m, s] = t[..] else { return None };
    let (h, m, s) = (digits(h, 2)?, digits(m, 2)?, digits(s, 2)?);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let month_days = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if year < 1970
        || !(1..=12).contains(&month)
        || day == 0
        || day > month_days[month as usize - 1]
        || h > 23
        || m > 59
        || s > 60
    {
        return None;
    }
    let days: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum::<u64>()
        + month_days[..month as usize - 1].iter().sum::<u64>()
        + day
        - 1;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_and_nothing_looser() {
        let aug18 = httpdate::parse_http_date("Thu, 18 Aug 2050 02:01:18 GMT").ok();
        let valid = [
            "Thu, 18 Aug 2050 02:01:18 GMT",
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            "Mon, 18 Aug 2050 02:01:18 GMT",
        ];
        for v in valid {
            assert_eq!(parse(v), aug18, "{v}");
        }
        assert_eq!(parse("Thu Aug  8 02:01:18 2050"), httpdate::parse_http_date("Mon, 08 Aug 2050 02:01:18 GMT").ok());
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").ok());
        assert_eq!(
            parse("Sunday, 06-Nov-94 08:49:37 GMT"),
            httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").ok()
        );
        assert_eq!(parse("Thursday, 18-Aug-50 02:01:18 GMT"), aug18);
        assert_eq!(
            parse("Tue, 19 Jan 2038 03:14:08 GMT").map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs()),
            Some(1 << 31)
        );
        let invalid = [
            "0",
            "",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:01:18 GMT",
        ];
        for v in invalid {
            assert_eq!(parse(v), None, "{v:?}");
        }
    }
}
