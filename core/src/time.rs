//! UTC timestamps and years in the spec's text form, without a calendar crate.
//!
//! Years 0001–9999 are four digits; a year outside them takes ISO 8601's expanded form, a sign
//! and (at least) six digits with astronomical numbering: 1 BC is `+000000`, 4713 BC `-004712`,
//! 21016 AD `+021016`. java.time and JavaScript's `Date` parse that form; Postgres' own
//! (`4713-12-31 BC`, an unsigned `21016`) is what strict ISO 8601 parsers reject or misread.

/// The first year written in four digits; the years before it take the expanded form.
const FIRST_PLAIN_YEAR: i64 = 1;
/// The last year written in four digits.
const LAST_PLAIN_YEAR: i64 = 9999;
/// Digits of an expanded year (more only for the years past 999999 Postgres' dates reach).
const EXPANDED_YEAR_DIGITS: u32 = 6;

/// Appends a (proleptic Gregorian, astronomical) year as the spec writes it: `2026`, or outside
/// 0001–9999 `+021016`, `+000000` (1 BC), `-004712` (4713 BC).
pub fn push_year(out: &mut String, year: i64) {
    if (FIRST_PLAIN_YEAR..=LAST_PLAIN_YEAR).contains(&year) {
        push_digits(out, year, 4);
        return;
    }
    out.push(if year < 0 { '-' } else { '+' });
    let magnitude = year.unsigned_abs();
    let digits = magnitude.checked_ilog10().unwrap_or(0) + 1;
    push_digits(out, year, digits.max(EXPANDED_YEAR_DIGITS));
}

/// The year at the start of a date in the spec's form (`2026-`, `+021016-`, `-004712-`) and the
/// rest of the text from its `-`. `None` when the text does not start with a year so written.
pub fn split_year(text: &str) -> Option<(i64, &str)> {
    let (negative, digits_from) = match text.as_bytes().first()? {
        b'-' => (true, 1),
        b'+' => (false, 1),
        _ => (false, 0),
    };
    let digits = text[digits_from..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    let expanded = digits_from == 1;
    if digits < 4 || (expanded && digits < EXPANDED_YEAR_DIGITS as usize) || digits > 10 {
        return None;
    }
    let end = digits_from + digits;
    let year: i64 = text[digits_from..end].parse().ok()?;
    Some((if negative { -year } else { year }, &text[end..]))
}

/// Microseconds since the Unix epoch of a UTC text timestamp such as
/// `2026-11-26T11:02:36.123456Z` (fraction optional; an expanded year allowed). `None` for
/// anything else.
pub fn parse_utc_micros(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (year, rest) = split_year(text)?;
    let (date, time) = rest.strip_prefix('-')?.split_once('T')?;
    let mut d = date.splitn(2, '-');
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let m: i64 = t.next()?.parse().ok()?;
    let s: i64 = t.next()?.parse().ok()?;
    let mut micros: i64 = 0;
    for (i, c) in frac.chars().take(6).enumerate() {
        micros += c.to_digit(10)? as i64 * 10i64.pow(5 - i as u32);
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + h * 3600 + m * 60 + s) * 1_000_000) + micros)
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Formats microseconds since the Unix epoch as `2026-11-26T11:02:36.123456Z`.
pub fn format_utc_micros(micros: i64) -> String {
    format_utc(micros, true)
}

/// [`format_utc_micros`] without the fraction when it is zero (`2026-11-26T11:02:36Z`), as the
/// spec prints whole-second times.
pub fn format_utc_micros_short(micros: i64) -> String {
    format_utc(micros, false)
}

/// Digits written by hand into a buffer on the stack, then copied once: `format!` was a tenth of
/// the CPU of a binlog of timestamp columns, and a `push` per digit with a division by a
/// variable power of ten most of the rest.
fn format_utc(micros: i64, always_fraction: bool) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u64;
    let (y, mo, d) = civil_from_days(days);
    if !(FIRST_PLAIN_YEAR..=LAST_PLAIN_YEAR).contains(&y) {
        // Years outside four digits: rare enough for the general path.
        let mut out = String::with_capacity(32);
        push_year(&mut out, y);
        out.push('-');
        push_digits(&mut out, mo, 2);
        out.push('-');
        push_digits(&mut out, d, 2);
        out.push('T');
        let rest = format_utc_time(sod, frac, always_fraction);
        out.push_str(std::str::from_utf8(&rest.0[..rest.1]).unwrap_or_default());
        return out;
    }
    let mut buf = [0u8; 27];
    put_digits(&mut buf[0..4], y as u64);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], mo as u64);
    buf[7] = b'-';
    put_digits(&mut buf[8..10], d as u64);
    buf[10] = b'T';
    let (time, len) = format_utc_time(sod, frac, always_fraction);
    buf[11..11 + len].copy_from_slice(&time[..len]);
    String::from(std::str::from_utf8(&buf[..11 + len]).unwrap_or_default())
}

/// `HH:MM:SS[.ffffff]Z` of a second of the day and its microseconds, and its length.
fn format_utc_time(sod: u64, frac: u64, always_fraction: bool) -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    put_digits(&mut buf[0..2], sod / 3600);
    buf[2] = b':';
    put_digits(&mut buf[3..5], sod / 60 % 60);
    buf[5] = b':';
    put_digits(&mut buf[6..8], sod % 60);
    let mut len = 8;
    if always_fraction || frac != 0 {
        buf[8] = b'.';
        put_digits(&mut buf[9..15], frac);
        len = 15;
    }
    buf[len] = b'Z';
    (buf, len + 1)
}

/// The low `slot.len()` decimal digits of `n`, with leading zeros (divisions by the constant
/// 10, which compile to multiplications).
pub fn put_digits(slot: &mut [u8], mut n: u64) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `n` (0 ≤ n < 10^width) as exactly `width` digits: `{n:0width$}` without `format!`'s cost.
pub fn push_digits(out: &mut String, n: i64, width: u32) {
    let mut digits = [b'0'; 20];
    let width = (width as usize).min(digits.len());
    put_digits(&mut digits[..width], n.unsigned_abs());
    out.push_str(std::str::from_utf8(&digits[..width]).unwrap_or_default());
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_round_trips() {
        let t = "2026-11-26T11:02:36.123456Z";
        let micros = parse_utc_micros(t).unwrap();
        assert_eq!(format_utc_micros(micros), t);
        assert_eq!(parse_utc_micros("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(
            parse_utc_micros("2000-01-01T00:00:00.5Z"),
            Some(946_684_800_500_000)
        );
        assert_eq!(parse_utc_micros("nonsense"), None);
    }

    #[test]
    fn utc_text_is_what_format_would_print() {
        for micros in [
            0i64,
            1,
            -1,
            999_999,
            1_000_000,
            1_764_230_400_000_000,
            -62_135_596_800_000_000, // 0001-01-01
            -62_135_596_800_000_001, // 1 BC
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01
            -86_400_000_000 * 366 * 3000,
        ] {
            let secs = micros.div_euclid(1_000_000);
            let frac = micros.rem_euclid(1_000_000);
            let sod = secs.rem_euclid(86_400);
            let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
            let year = if (1..=9999).contains(&y) {
                format!("{y:04}")
            } else {
                format!("{y:+07}")
            };
            let by_format = format!(
                "{year}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
                sod / 3600,
                sod / 60 % 60,
                sod % 60
            );
            assert_eq!(format_utc_micros(micros), by_format);
            let short = format_utc_micros_short(micros);
            if frac == 0 {
                assert_eq!(short, by_format.replace(".000000Z", "Z"));
            } else {
                assert_eq!(short, by_format);
            }
        }
    }

    #[test]
    fn years_outside_four_digits_take_the_expanded_form() {
        let year = |y: i64| {
            let mut out = String::new();
            push_year(&mut out, y);
            out
        };
        assert_eq!(year(2026), "2026");
        assert_eq!(year(1), "0001");
        assert_eq!(year(9999), "9999");
        assert_eq!(year(10_000), "+010000");
        assert_eq!(year(21_016), "+021016");
        assert_eq!(year(5_874_897), "+5874897");
        assert_eq!(year(0), "+000000");
        assert_eq!(year(-4712), "-004712");
        for y in [-4712, -1, 0, 1, 999, 2026, 9999, 10_000, 294_276, 5_874_897] {
            let text = format!("{}-01-01", year(y));
            assert_eq!(split_year(&text), Some((y, "-01-01")), "{text}");
        }
        assert_eq!(split_year("21016-11-04"), Some((21_016, "-11-04")));
        assert_eq!(split_year("+2026-11-04"), None, "a sign needs six digits");
        assert_eq!(split_year("026-11-04"), None);
        assert_eq!(split_year("infinity"), None);
        assert_eq!(split_year("-infinity"), None);
    }

    #[test]
    fn expanded_utc_text_parses() {
        for micros in [
            -62_135_596_800_000_001i64,
            -210_866_803_200_000_000, // 4714-11-24 BC
            601_000_000_000_000_000,
        ] {
            let text = format_utc_micros(micros);
            assert!(text.starts_with(['+', '-']), "{text}");
            assert_eq!(parse_utc_micros(&text), Some(micros), "{text}");
        }
    }
}
