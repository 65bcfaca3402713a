//! Dates, times, timestamps and intervals: recognizing the ISO output forms, and rewriting
//! dates and timestamps into the spec's ISO 8601 (`T` separator; timestamptz converted to UTC
//! with `Z`, using proleptic Gregorian day arithmetic; a year outside 0001–9999, BC ones
//! included, in the expanded form `+021016` / `-004712`, see [`cdc_core::time`]). Used by the
//! decoder in [`super`].

use cdc_core::time::{civil_from_days, days_from_civil, push_digits, push_year};

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

/// Postgres' BC marker, after a date or a timestamp.
fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(ad_form) => (ad_form, true),
        None => (s, false),
    }
}

/// A shape-checked date that needs no rewriting: a four-digit year of the common era.
fn is_plain_date(date: &str, bc: bool) -> bool {
    !bc && date.len() == 10 && !date.starts_with("0000")
}

/// (astronomical year, month, day) of a shape-checked date; `bc` counts its year BC (1 BC is
/// the year 0). `None` for a year 0 BC, which does not exist.
fn date_parts(date: &str, bc: bool) -> Option<(i64, i64, i64)> {
    let year_len = date.len() - 6;
    let year: i64 = date[..year_len].parse().ok()?;
    let month: i64 = date[year_len + 1..year_len + 3].parse().ok()?;
    let day: i64 = date[year_len + 4..].parse().ok()?;
    let year = match bc {
        true if year == 0 => return None,
        true => 1 - year,
        false => year,
    };
    Some((year, month, day))
}

/// Appends a shape-checked date in the spec's form: `2026-11-26`, `+021016-11-04`,
/// `-004712-12-31` (4713 BC).
fn push_iso_date(out: &mut String, date: &str, bc: bool) -> Option<()> {
    if is_plain_date(date, bc) {
        out.push_str(date);
        return Some(());
    }
    let (year, month, day) = date_parts(date, bc)?;
    push_year(out, year);
    out.push('-');
    push_digits(out, month, 2);
    out.push('-');
    push_digits(out, day, 2);
    Some(())
}

/// A valid date or timestamp's canonical text: the input itself (infinities, plain dates) or a
/// rewrite.
pub(super) enum Temporal {
    AsGiven,
    Rewritten(String),
}

/// A date column's text: ISO date output (`BC` and years past 9999 rewritten) or an infinity;
/// `None` if not date output.
pub(super) fn date_text(s: &str) -> Option<Temporal> {
    if is_infinity(s) {
        return Some(Temporal::AsGiven);
    }
    let (date, bc) = strip_bc(s);
    if !is_date(date) {
        return None;
    }
    if is_plain_date(date, bc) {
        return Some(Temporal::AsGiven);
    }
    let mut out = String::with_capacity(date.len() + 3);
    push_iso_date(&mut out, date, bc)?;
    Some(Temporal::Rewritten(out))
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

/// Splits ISO `date time...` output at its space.
fn split_date_time(s: &str) -> Option<(&str, &str)> {
    let (date, rest) = s.split_once(' ')?;
    is_date(date).then_some((date, rest))
}

/// `2026-11-26 13:45:00.123456` → `2026-11-26T13:45:00.123456`, `4713-12-31 23:59:59 BC` →
/// `-004712-12-31T23:59:59`; None if not timestamp output.
pub(super) fn timestamp_text(s: &str) -> Option<Temporal> {
    if is_infinity(s) {
        return Some(Temporal::AsGiven);
    }
    let (ad_form, bc) = strip_bc(s);
    let (date, time) = split_date_time(ad_form)?;
    if !is_time(time) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 3);
    push_iso_date(&mut out, date, bc)?;
    out.push('T');
    out.push_str(time);
    Some(Temporal::Rewritten(out))
}

/// `2026-11-26 12:45:00.123456+00` → `2026-11-26T12:45:00.123456Z`. With TimeZone=UTC the offset
/// is always zero; any other offset is converted to UTC all the same. BC and years past 9999
/// take the expanded form, as in dates.
pub(super) fn timestamptz_text(s: &str) -> Option<Temporal> {
    if let Some(iso) = utc_four_digit_year(s) {
        return Some(Temporal::Rewritten(iso));
    }
    if is_infinity(s) {
        return Some(Temporal::AsGiven);
    }
    let (ad_form, bc) = strip_bc(s);
    let (date, rest) = split_date_time(ad_form)?;
    // The time part has no sign in it, so the first one starts the offset.
    let sign_at = rest.find(['+', '-'])?;
    let (time, offset) = rest.split_at(sign_at);
    if !is_time(time) {
        return None;
    }
    let offset_secs = parse_offset(offset)?;
    if offset_secs == 0 {
        let mut out = String::with_capacity(date.len() + time.len() + 5);
        push_iso_date(&mut out, date, bc)?;
        out.push('T');
        out.push_str(time);
        out.push('Z');
        return Some(Temporal::Rewritten(out));
    }
    let (year, month, day) = date_parts(date, bc)?;
    shift_to_utc((year, month, day), time, offset_secs).map(Temporal::Rewritten)
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
        && !b.starts_with(b"0000")
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
/// `time` has been shape-checked; the fraction is carried over untouched.
fn shift_to_utc(
    (year, month, day): (i64, i64, i64),
    time: &str,
    offset_secs: i64,
) -> Option<String> {
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
    let mut out = String::with_capacity(time.len() + 20);
    // Shifting 0001-01-01 east can reach the year 0 (1 BC): the expanded form.
    push_year(&mut out, y);
    for (separator, n) in [
        ('-', m),
        ('-', d),
        ('T', tod / 3600),
        (':', tod / 60 % 60),
        (':', tod % 60),
    ] {
        out.push(separator);
        push_digits(&mut out, n, 2);
    }
    out.push_str(fraction);
    out.push('Z');
    Some(out)
}

/// ISO-8601 interval output starts with `P` (components carry their own signs: `P-1Y-2M`);
/// Postgres 17 adds the infinities.
pub(super) fn is_interval(s: &str) -> bool {
    s.starts_with('P') || is_infinity(s)
}
