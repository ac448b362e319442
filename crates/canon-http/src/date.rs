//! Calendar arithmetic and the HTTP-date (IMF-fixdate, RFC 9110 §5.6.7).
//!
//! Every response that carries a `Last-Modified` writes one HTTP-date, and
//! every record representation two RFC 3339 timestamps: the calendar and
//! the digits are done here, into stack buffers, rather than through the
//! formatting machinery (`httpdate` goes through `fmt` and allocates; this
//! is a tenth of its instructions). `httpdate` still parses dates.

use std::time::{SystemTime, UNIX_EPOCH};

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01:
/// Howard Hinnant's `civil_from_days`, in whole 400-year eras.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that February's leap day comes last.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * march_month + 2) / 5 + 1) as u32;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `n` as `width` decimal digits ending just before `end`
/// (leading zeros; higher digits dropped).
pub fn put_digits(text: &mut [u8], end: usize, width: usize, mut n: u32) {
    for place in (end - width..end).rev() {
        text[place] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The last second an HTTP-date can write (9999-12-31T23:59:59Z): its year
/// has four digits.
const LAST_SECOND: u64 = 253_402_300_799;

const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), in whole
/// seconds; times before the epoch are written as the epoch and times past
/// year 9999 as its last second (neither is a time Canon stores).
pub fn http_date_bytes(t: SystemTime) -> [u8; 29] {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).min(LAST_SECOND);
    let (days, in_day) = (secs / 86_400, (secs % 86_400) as u32);
    // Within four-digit years `days` fits an i64 and the year a u32.
    let days = i64::try_from(days).unwrap_or(0);
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    // 1970-01-01 was a Thursday, the first of `WEEKDAYS`.
    text[..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
    put_digits(&mut text, 7, 2, day);
    text[8..11].copy_from_slice(MONTHS[(month - 1) as usize % 12]);
    put_digits(&mut text, 16, 4, u32::try_from(year).unwrap_or(1970));
    put_digits(&mut text, 19, 2, in_day / 3600);
    put_digits(&mut text, 22, 2, in_day / 60 % 60);
    put_digits(&mut text, 25, 2, in_day % 60);
    text
}

/// [`http_date_bytes`] as a `String`.
pub fn http_date(t: SystemTime) -> String {
    // Only ASCII is written into an ASCII template.
    String::from_utf8_lossy(&http_date_bytes(t)).into_owned()
}

/// [`http_date_bytes`] as a header value, without an intermediate `String`.
pub fn http_date_value(t: SystemTime) -> http::HeaderValue {
    let text = http_date_bytes(t);
    // Letters, digits, spaces, commas and colons: always a valid value.
    http::HeaderValue::from_bytes(&text)
        .unwrap_or_else(|_| http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn http_dates_are_what_httpdate_writes() {
        // Every day of four centuries at a moving time of day, plus the
        // edges: leap days, century years, the epoch and the last second.
        let mut secs = 0u64;
        while secs < 13_000_000_000 {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(http_date(t), httpdate::fmt_http_date(t), "{secs}");
            secs += 86_400 + 3_607;
        }
        for secs in [
            0,
            59,
            951_782_400,
            951_868_799,
            4_107_542_400,
            68_256_000_000,
            LAST_SECOND,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(http_date(t), httpdate::fmt_http_date(t), "{secs}");
            assert_eq!(http_date_value(t).to_str().ok(), Some(http_date(t).as_str()));
        }
    }

    #[test]
    fn http_dates_out_of_range_are_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(http_date(before), "Thu, 01 Jan 1970 00:00:00 GMT");
        let after = UNIX_EPOCH + Duration::from_secs(LAST_SECOND + 86_400 * 400);
        assert_eq!(http_date(after), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn sub_second_parts_are_dropped() {
        let t = UNIX_EPOCH + Duration::from_millis(784_111_777_999);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
