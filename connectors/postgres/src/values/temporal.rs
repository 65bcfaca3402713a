//! Dates, times, timestamps and intervals: recognizing the ISO output forms, and rewriting
//! timestamps into ISO 8601 (`T` separator; timestamptz converted to UTC with `Z`, using
//! proleptic Gregorian day arithmetic). Used by the decoder in [`super`].

use std::fmt::Write as _;

use super::count_digits;

fn is_infinity(s: &str) -> bool {
    matches!(s, "infinity" | "-infinity")
}

/// ISO date output: `YYYY-MM-DD` (more year digits past 9999).
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let year = count_digits(b, 0);
    year >= 1
        && b.len() == year + 6
        && b[year] == b'-'
        && b[year + 3] == b'-'
        && count_digits(b, year + 1) == 2
        && count_digits(b, year + 4) == 2
}

/// A date column: ISO date, an infinity, or a BC date, which is kept as Postgres prints it
/// ("0044-03-15 BC") rather than renumbered into ISO's astronomical years.
pub(super) fn is_date_value(s: &str) -> bool {
    is_infinity(s) || is_date(s.strip_suffix(" BC").unwrap_or(s))
}

/// ISO time output: `HH:MM:SS` with an optional fraction.
pub(super) fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8
        || count_digits(b, 0) != 2
        || b[2] != b':'
        || count_digits(b, 3) != 2
        || b[5] != b':'
        || count_digits(b, 6) != 2
    {
        return false;
    }
    match b.get(8) {
        None => true,
        Some(b'.') => b.len() > 9 && count_digits(b, 9) == b.len() - 9,
        Some(_) => false,
    }
}

/// A valid timestamp's canonical text: the input itself (infinities, BC values) or a rewrite.
pub(super) enum Temporal {
    AsGiven,
    Rewritten(String),
}

/// Splits ISO `date time...` output at its space.
fn split_date_time(s: &str) -> Option<(&str, &str)> {
    let (date, rest) = s.split_once(' ')?;
    is_date(date).then_some((date, rest))
}

/// `2026-11-26 13:45:00.123456` → `2026-11-26T13:45:00.123456`; None if not timestamp output.
pub(super) fn timestamp_text(s: &str) -> Option<Temporal> {
    if is_infinity(s) {
        return Some(Temporal::AsGiven);
    }
    // BC has no ISO spelling without renumbering years; kept as given, like BC dates.
    if let Some(ad_form) = s.strip_suffix(" BC") {
        let (_, time) = split_date_time(ad_form)?;
        return is_time(time).then_some(Temporal::AsGiven);
    }
    let (date, time) = split_date_time(s)?;
    if !is_time(time) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    out.push_str(date);
    out.push('T');
    out.push_str(time);
    Some(Temporal::Rewritten(out))
}

/// `2026-11-26 12:45:00.123456+00` → `2026-11-26T12:45:00.123456Z`. With TimeZone=UTC the offset
/// is always zero; any other offset is converted to UTC all the same.
pub(super) fn timestamptz_text(s: &str) -> Option<Temporal> {
    if let Some(iso) = utc_four_digit_year(s) {
        return Some(Temporal::Rewritten(iso));
    }
    if is_infinity(s) {
        return Some(Temporal::AsGiven);
    }
    let bc = s.strip_suffix(" BC");
    let (date, rest) = split_date_time(bc.unwrap_or(s))?;
    // The time part has no sign in it, so the first one starts the offset.
    let sign_at = rest.find(['+', '-'])?;
    let (time, offset) = rest.split_at(sign_at);
    if !is_time(time) {
        return None;
    }
    let offset_secs = parse_offset(offset)?;
    if bc.is_some() {
        // Kept as given, like BC dates and timestamps.
        return Some(Temporal::AsGiven);
    }
    if offset_secs == 0 {
        let mut out = String::with_capacity(date.len() + time.len() + 2);
        out.push_str(date);
        out.push('T');
        out.push_str(time);
        out.push('Z');
        return Some(Temporal::Rewritten(out));
    }
    shift_to_utc(date, time, offset_secs).map(Temporal::Rewritten)
}

/// The form nearly every value takes (the agent's sessions run with TimeZone=UTC):
/// `YYYY-MM-DD HH:MM:SS[.ffffff]+00`, checked byte by byte and rewritten with one copy. The
/// general path below splits and searches the text; on a snapshot it cost more than any other
/// value's decoding.
pub(super) fn utc_four_digit_year(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let fraction = b.get(19..b.len().checked_sub(3)?)?;
    let digits = |at: &[usize]| at.iter().all(|&i| b[i].is_ascii_digit());
    let shaped = b.ends_with(b"+00")
        && digits(&[0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
        && (b[4], b[7], b[10], b[13], b[16]) == (b'-', b'-', b' ', b':', b':')
        && match fraction {
            [] => true,
            [b'.', rest @ ..] => !rest.is_empty() && rest.iter().all(u8::is_ascii_digit),
            _ => false,
        };
    if !shaped {
        return None;
    }
    let mut out = String::with_capacity(s.len() - 1);
    out.push_str(&s[..10]);
    out.push('T');
    out.push_str(&s[11..s.len() - 3]);
    out.push('Z');
    Some(out)
}

/// A UTC offset as printed after a time: `+HH`, `+HH:MM`, `+HH:MM:SS` (historic zones have
/// seconds), or `+HHMM`; in signed seconds east of UTC.
fn parse_offset(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let negative = match b.first()? {
        b'+' => false,
        b'-' => true,
        _ => return None,
    };
    let two = |at: usize| -> Option<i64> {
        match b.get(at..at + 2)? {
            &[h @ b'0'..=b'9', l @ b'0'..=b'9'] => Some(i64::from((h - b'0') * 10 + (l - b'0'))),
            _ => None,
        }
    };
    let hours = two(1)?;
    let (minutes, seconds) = match b.len() {
        3 => (0, 0),
        5 => (two(3)?, 0),
        6 if b[3] == b':' => (two(4)?, 0),
        9 if b[3] == b':' && b[6] == b':' => (two(4)?, two(7)?),
        _ => return None,
    };
    if hours >= 24 || minutes >= 60 || seconds >= 60 {
        return None;
    }
    let secs = hours * 3600 + minutes * 60 + seconds;
    Some(if negative { -secs } else { secs })
}

/// Local date and time at `offset_secs` east of UTC → the UTC instant in ISO form with `Z`.
/// `date` and `time` have been shape-checked; the fraction is carried over untouched.
fn shift_to_utc(date: &str, time: &str, offset_secs: i64) -> Option<String> {
    let year_len = date.len() - 6;
    let year: i64 = date[..year_len].parse().ok()?;
    let month: i64 = date[year_len + 1..year_len + 3].parse().ok()?;
    let day: i64 = date[year_len + 4..].parse().ok()?;
    let hour: i64 = time[0..2].parse().ok()?;
    let minute: i64 = time[3..5].parse().ok()?;
    let second: i64 = time[6..8].parse().ok()?;
    let fraction = &time[8..];
    let in_range = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !in_range {
        return None;
    }
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let utc = local - offset_secs;
    let (y, m, d) = civil_from_days(utc.div_euclid(86_400));
    let tod = utc.rem_euclid(86_400);
    let mut out = String::with_capacity(date.len() + time.len() + 3);
    // Shifting 0001-01-01 east can reach year 0 (1 BC); ISO writes years before it negative.
    if y < 0 {
        out.push('-');
    }
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z",
        y.unsigned_abs(),
        m,
        d,
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        fraction
    );
    Some(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March so the leap day is the last day of the "year".
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// ISO-8601 interval output starts with `P` (components carry their own signs: `P-1Y-2M`);
/// Postgres 17 adds the infinities.
pub(super) fn is_interval(s: &str) -> bool {
    s.starts_with('P') || is_infinity(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_day_arithmetic_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(days_from_civil(1, 1, 1) - 1), (0, 12, 31));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, dd), days);
        }
    }
}
