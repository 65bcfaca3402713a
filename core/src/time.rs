//! UTC timestamps in the spec's text form, without a calendar crate.

/// Microseconds since the Unix epoch of a UTC text timestamp such as
/// `2026-11-26T11:02:36.123456Z` (fraction optional). `None` for anything else.
pub fn parse_utc_micros(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
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
    if !(0..=9999).contains(&y) {
        // Years outside four digits: rare enough for `format!`.
        let mut out = format!("{y:04}-");
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
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01
            -86_400_000_000 * 366 * 3000,
        ] {
            let secs = micros.div_euclid(1_000_000);
            let frac = micros.rem_euclid(1_000_000);
            let sod = secs.rem_euclid(86_400);
            let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
            let by_format = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
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
}
