//! Change-record values → DuckDB values, for the staging tables the appender fills.
//!
//! ```text
//!  cdc_core::Value ──StageKind::encode──▶ duckdb Value ──Appender──▶ temp staging table
//!  (spec text forms: "2026-11-26",          (days, micros,              (typed column, or VARCHAR
//!   "P1Y2M", "129.90", ...)                  months/days/micros)          cast by the merge)
//! ```
//!
//! Temporal values arrive in the spec's text forms and are parsed here into DuckDB's own
//! representation (days and microseconds since the epoch, months/days/microseconds), so the
//! appender takes them as they are. Decimals, UUIDs, JSON and other text-typed values are staged
//! as VARCHAR and cast by the merge statement: DuckDB parses them exactly (decimals up to 38
//! digits, which `rust_decimal` cannot hold).
//!
//! A value a typed staging column cannot take (a form the parsers here do not know) does not
//! fail the batch: the column is staged as VARCHAR for that batch and DuckDB's cast decides.
//! Values DuckDB has no representation for (a NaN numeric in a DECIMAL, an infinite interval,
//! a multi-dimensional array) stop the table with a definite error and a fix.

use cdc_core::time::{civil_from_days, days_from_civil};
use cdc_core::{ColumnType, Value};
use duckdb::types::{TimeUnit, Value as Duck};

/// DuckDB's infinite date and timestamp (its `date_t::infinity()`, `timestamp_t::infinity()`);
/// minus infinity is their negation.
const DATE_INFINITY: i32 = i32::MAX;
const TIMESTAMP_INFINITY: i64 = i64::MAX;
/// The years DuckDB's TIMESTAMP covers (it stops at 294247 AD and 290308 BC): a value outside
/// them is refused with the value named (`Unencodable::Unfit`).
const TIMESTAMP_YEARS: std::ops::RangeInclusive<i64> = -290_307..=294_246;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// How one column is loaded into the staging table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageKind {
    Bool,
    /// Every signed integer width, staged as BIGINT (the merge casts to the target width).
    Int,
    UInt,
    Float32,
    Float64,
    /// A numeric into a DECIMAL target: staged as text, cast exactly by DuckDB.
    Decimal,
    /// Anything kept as text: text, uuid, json, other types, or any value of a VARCHAR target.
    Text,
    Blob,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    List(Box<StageKind>),
}

/// Why a value was not encoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Unencodable {
    /// This staging type cannot take it; staging the column as text may.
    TryText,
    /// DuckDB has no representation for it in the target column.
    Unfit(String),
}

impl StageKind {
    /// The staging kind of a column of source type `t` whose target column has type `target`
    /// (in `duckdb_columns()` spelling; `None` when not known).
    pub fn for_column(t: &ColumnType, target: Option<&str>) -> StageKind {
        if target == Some("VARCHAR") {
            return StageKind::Text;
        }
        match t {
            ColumnType::Bool => StageKind::Bool,
            ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => StageKind::Int,
            ColumnType::UInt64 => StageKind::UInt,
            ColumnType::Float32 if target != Some("DOUBLE") => StageKind::Float32,
            ColumnType::Float32 | ColumnType::Float64 => StageKind::Float64,
            ColumnType::Decimal { .. } => StageKind::Decimal,
            ColumnType::Bytes => StageKind::Blob,
            ColumnType::Date => StageKind::Date,
            ColumnType::Time => StageKind::Time,
            ColumnType::Timestamp => StageKind::Timestamp,
            ColumnType::TimestampTz => StageKind::TimestampTz,
            ColumnType::Interval => StageKind::Interval,
            ColumnType::Array(inner) => {
                let element = target.and_then(|t| t.strip_suffix("[]"));
                StageKind::List(Box::new(StageKind::for_column(inner, element)))
            }
            ColumnType::Text { .. } | ColumnType::Json | ColumnType::Uuid => StageKind::Text,
            ColumnType::Other { .. } => StageKind::Text,
        }
    }

    /// The staging column's type.
    pub fn sql_type(&self) -> String {
        match self {
            StageKind::Bool => "BOOLEAN".into(),
            StageKind::Int => "BIGINT".into(),
            StageKind::UInt => "UBIGINT".into(),
            StageKind::Float32 => "FLOAT".into(),
            StageKind::Float64 => "DOUBLE".into(),
            StageKind::Decimal | StageKind::Text => "VARCHAR".into(),
            StageKind::Blob => "BLOB".into(),
            StageKind::Date => "DATE".into(),
            StageKind::Time => "TIME".into(),
            StageKind::Timestamp => "TIMESTAMP".into(),
            StageKind::TimestampTz => "TIMESTAMP WITH TIME ZONE".into(),
            StageKind::Interval => "INTERVAL".into(),
            StageKind::List(inner) => format!("{}[]", inner.sql_type()),
        }
    }

    /// The same column staged as text (lists keep their shape, elements become text).
    pub fn as_text(&self) -> StageKind {
        match self {
            StageKind::List(_) => StageKind::List(Box::new(StageKind::Text)),
            _ => StageKind::Text,
        }
    }

    pub fn encode(&self, value: &Value) -> Result<Duck, Unencodable> {
        use StageKind as K;
        use Unencodable::TryText;
        Ok(match (self, value) {
            (_, Value::Null) => Duck::Null,
            (K::Text, v) => Duck::Text(text_form(v)),
            (K::Bool, Value::Bool(b)) => Duck::Boolean(*b),
            (K::Int, Value::Int(i)) => Duck::BigInt(*i),
            (K::Int, Value::UInt(u)) => Duck::BigInt(i64::try_from(*u).map_err(|_| TryText)?),
            (K::UInt, Value::UInt(u)) => Duck::UBigInt(*u),
            (K::UInt, Value::Int(i)) => Duck::UBigInt(u64::try_from(*i).map_err(|_| TryText)?),
            (K::Float32, Value::Float(f)) => Duck::Float(*f as f32),
            (K::Float64, Value::Float(f)) => Duck::Double(*f),
            (K::Decimal, Value::Decimal(d)) => {
                if matches!(d.as_str(), "NaN" | "Infinity" | "-Infinity") {
                    return Err(Unencodable::Unfit(format!(
                        "the numeric {d} has no DECIMAL value in DuckDB"
                    )));
                }
                Duck::Text(d.clone())
            }
            (K::Decimal, Value::Int(_) | Value::UInt(_)) => Duck::Text(text_form(value)),
            (K::Blob, Value::Bytes(b)) => Duck::Blob(b.clone()),
            (K::Date, Value::Date(s)) => Duck::Date32(parse_date(s).ok_or(TryText)?),
            (K::Time, Value::Time(s)) => {
                Duck::Time64(TimeUnit::Microsecond, parse_time(s).ok_or(TryText)?)
            }
            (K::Timestamp, Value::Timestamp(s)) | (K::TimestampTz, Value::TimestampTz(s)) => {
                encode_timestamp(s)?
            }
            (K::Interval, Value::Interval(s)) => {
                if s.ends_with("infinity") {
                    return Err(Unencodable::Unfit(format!(
                        "the interval {s} has no INTERVAL value in DuckDB"
                    )));
                }
                let (months, days, micros) = parse_interval(s).ok_or(TryText)?;
                Duck::Interval {
                    months,
                    days,
                    nanos: micros.checked_mul(1000).ok_or(TryText)?,
                }
            }
            (K::List(inner), Value::Array(items)) => Duck::List(
                items
                    .iter()
                    .map(|item| match item {
                        Value::Array(_) => Err(Unencodable::Unfit(
                            "a multi-dimensional array has no LIST value of this column's type"
                                .into(),
                        )),
                        other => inner.encode(other),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(TryText),
        })
    }
}

/// The spec's text form of a value: strings as they are, JSON as its text, everything else as
/// its JSON form (numbers, booleans, base64 bytes, arrays).
pub fn text_form(value: &Value) -> String {
    match value {
        Value::Decimal(s)
        | Value::Text(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::TimestampTz(s)
        | Value::Interval(s) => s.clone(),
        Value::Json(raw) => raw.get().to_string(),
        other => match serde_json::to_value(other) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(json) => json.to_string(),
            Err(_) => String::new(),
        },
    }
}

/// Days since 1970-01-01 of `2026-11-26`, `+021016-11-04`, `-000043-03-15` (44 BC; also in
/// Postgres' `0044-03-15 BC`), `infinity` or `-infinity`.
pub fn parse_date(s: &str) -> Option<i32> {
    match s {
        "infinity" => return Some(DATE_INFINITY),
        "-infinity" => return Some(-DATE_INFINITY),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    let days = civil_days(s, bc)?;
    i32::try_from(days)
        .ok()
        .filter(|d| d.unsigned_abs() < DATE_INFINITY as u32)
}

/// Microseconds since midnight of `13:45:00.123456` (Postgres allows `24:00:00`, and so does
/// DuckDB).
pub fn parse_time(s: &str) -> Option<i64> {
    let micros = time_of_day(s)?;
    (micros <= MICROS_PER_DAY).then_some(micros)
}

/// A timestamp for a TIMESTAMP / TIMESTAMPTZ staging column: what [`parse_timestamp`] reads, and
/// a value of a year DuckDB's TIMESTAMP cannot hold refused with the value named, rather than
/// handed to a cast that might read it otherwise.
fn encode_timestamp(s: &str) -> Result<Duck, Unencodable> {
    if let Some(micros) = parse_timestamp(s) {
        return Ok(Duck::Timestamp(TimeUnit::Microsecond, micros));
    }
    let (date, bc) = strip_bc(s);
    let date = date.split(['T', ' ']).next().unwrap_or(date);
    match civil_days(date, bc) {
        Some(days) if !TIMESTAMP_YEARS.contains(&civil_from_days(days).0) => {
            Err(Unencodable::Unfit(format!(
                "the timestamp {s} is outside DuckDB's TIMESTAMP range (290308 BC to 294246 AD)"
            )))
        }
        _ => Err(Unencodable::TryText),
    }
}

/// Microseconds since the epoch (UTC for the `Z` and offset forms) of the spec's timestamp
/// forms: `2026-11-26T13:45:00.123456`, `2026-11-26T12:45:00Z`, expanded years (`+021016-…`,
/// `-004712-…`), Postgres' `0044-03-15 12:00:00 BC` and `0044-03-15 12:00:00+00 BC`, and the
/// infinities.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    match s {
        "infinity" => return Some(TIMESTAMP_INFINITY),
        "-infinity" => return Some(-TIMESTAMP_INFINITY),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    // The date ends at the first 'T' or ' ' (a negative ISO year starts with '-').
    let split = s.find(['T', ' '])?;
    let (date, rest) = (&s[..split], &s[split + 1..]);
    let (time, offset_secs) = split_offset(rest)?;
    let days = civil_days(date, bc)?;
    if !TIMESTAMP_YEARS.contains(&civil_from_days(days).0) {
        return None;
    }
    let local = days
        .checked_mul(MICROS_PER_DAY)?
        .checked_add(time_of_day(time)?)?;
    local.checked_sub(offset_secs.checked_mul(1_000_000)?)
}

/// Months, days and microseconds of an ISO-8601 duration as Postgres writes it:
/// `P1Y2M3DT4H5M6.5S`, components signed on their own (`P-1Y-2M3DT-4H`), `PT0S` for zero.
pub fn parse_interval(s: &str) -> Option<(i32, i32, i64)> {
    let (negated, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let body = s.strip_prefix('P')?;
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in body.chars() {
        match c {
            'T' if number.is_empty() && !in_time => in_time = true,
            '0'..='9' | '.' | '-' | '+' => number.push(c),
            unit => {
                if number.is_empty() {
                    return None;
                }
                let text = std::mem::take(&mut number);
                any = true;
                match (in_time, unit) {
                    (false, 'Y') => months = months.checked_add(whole(&text)?.checked_mul(12)?)?,
                    (false, 'M') => months = months.checked_add(whole(&text)?)?,
                    (false, 'W') => days = days.checked_add(whole(&text)?.checked_mul(7)?)?,
                    (false, 'D') => days = days.checked_add(whole(&text)?)?,
                    (true, 'H') => {
                        micros = micros.checked_add(whole(&text)?.checked_mul(3_600_000_000)?)?
                    }
                    (true, 'M') => {
                        micros = micros.checked_add(whole(&text)?.checked_mul(60_000_000)?)?
                    }
                    (true, 'S') => micros = micros.checked_add(seconds_micros(&text)?)?,
                    _ => return None,
                }
            }
        }
    }
    if !number.is_empty() || !any {
        return None;
    }
    if negated {
        months = months.checked_neg()?;
        days = days.checked_neg()?;
        micros = micros.checked_neg()?;
    }
    Some((
        i32::try_from(months).ok()?,
        i32::try_from(days).ok()?,
        micros,
    ))
}

fn whole(text: &str) -> Option<i64> {
    text.parse().ok()
}

/// `-6.5` seconds → -6,500,000 microseconds (at most six fraction digits).
fn seconds_micros(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let micros = fraction_micros(frac)?;
    let total = secs.checked_mul(1_000_000)?.checked_add(micros)?;
    Some(if negative { -total } else { total })
}

/// `.123` → 123000 microseconds; more than six digits are not a Postgres value.
fn fraction_micros(frac: &str) -> Option<i64> {
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut micros = 0i64;
    for (i, b) in frac.bytes().enumerate() {
        micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
    }
    Some(micros)
}

fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

/// Days since the epoch of `YYYY-MM-DD` (more year digits allowed; the expanded `+021016` /
/// `-004712`, astronomical: `-000001` is 2 BC); `bc`: the year is counted BC (1 BC is ISO year 0),
/// Postgres' own form, as records written before the expanded form carry it.
fn civil_days(date: &str, bc: bool) -> Option<i64> {
    let (negative, date) = match date.as_bytes().first() {
        Some(b'-' | b'+') if bc => return None,
        Some(b'-') => (true, &date[1..]),
        Some(b'+') => (false, &date[1..]),
        _ => (false, date),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() < 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let digits = |t: &str| -> Option<i64> {
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (mut year, month, day) = (digits(y)?, digits(m)?, digits(d)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if negative {
        year = -year;
    }
    if bc {
        if year == 0 {
            return None;
        }
        year = 1 - year;
    }
    if year.abs() > 10_000_000 {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `13:45:00.123456` → microseconds since midnight (24:00:00 allowed).
fn time_of_day(s: &str) -> Option<i64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let b = hms.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let two = |at: usize| -> Option<i64> {
        let t = &hms[at..at + 2];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (h, m, sec) = (two(0)?, two(3)?, two(6)?);
    let micros = fraction_micros(frac)?;
    if h > 24 || m > 59 || sec > 59 || (h == 24 && (m, sec, micros) != (0, 0, 0)) {
        return None;
    }
    Some((h * 3600 + m * 60 + sec) * 1_000_000 + micros)
}

/// Splits `12:00:00.5Z` or `12:00:00+05:30` into the time and its offset east of UTC, in seconds
/// (none: 0).
fn split_offset(rest: &str) -> Option<(&str, i64)> {
    if let Some(time) = rest.strip_suffix('Z') {
        return Some((time, 0));
    }
    let Some(at) = rest.find(['+', '-']) else {
        return Some((rest, 0));
    };
    let (time, offset) = rest.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].split(':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    let seconds: i64 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    if hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some((time, sign * (hours * 3600 + minutes * 60 + seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    #[test]
    fn dates_parse_with_infinities_and_bc() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-11-26"), Some(20_783));
        assert_eq!(parse_date("infinity"), Some(i32::MAX));
        assert_eq!(parse_date("-infinity"), Some(-i32::MAX));
        // 1 BC is ISO year 0.
        assert_eq!(
            parse_date("0001-01-01 BC"),
            Some(days_from_civil(0, 1, 1) as i32)
        );
        assert_eq!(
            parse_date("0044-03-15 BC"),
            Some(days_from_civil(-43, 3, 15) as i32)
        );
        assert_eq!(
            parse_date("10000-01-01"),
            Some(days_from_civil(10_000, 1, 1) as i32)
        );
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("2026-1-01"), None);
        // The spec's expanded years, astronomical.
        assert_eq!(
            parse_date("-000043-03-15"),
            Some(days_from_civil(-43, 3, 15) as i32)
        );
        assert_eq!(
            parse_date("+000000-01-01"),
            Some(days_from_civil(0, 1, 1) as i32)
        );
        assert_eq!(
            parse_date("-004712-12-31"),
            Some(days_from_civil(-4712, 12, 31) as i32)
        );
        assert_eq!(
            parse_date("+021016-11-04"),
            Some(days_from_civil(21_016, 11, 4) as i32)
        );
        assert_eq!(
            parse_date("+5874897-12-31"),
            Some(days_from_civil(5_874_897, 12, 31) as i32)
        );
        assert_eq!(parse_date("+2026-11-04 BC"), None);
    }

    #[test]
    fn expanded_years_are_exact_or_refused_by_name() {
        let ts = StageKind::Timestamp;
        assert_eq!(
            ts.encode(&Value::Timestamp("-004712-12-31T23:59:59.999999".into())),
            Ok(Duck::Timestamp(
                TimeUnit::Microsecond,
                days_from_civil(-4712, 12, 31) * DAY + DAY - 1
            ))
        );
        assert_eq!(
            StageKind::TimestampTz
                .encode(&Value::TimestampTz("+021016-11-04T13:51:30.123456Z".into())),
            Ok(Duck::Timestamp(
                TimeUnit::Microsecond,
                days_from_civil(21_016, 11, 4) * DAY + 49_890_123_456
            ))
        );
        // Postgres' timestamps reach 294276 AD, DuckDB's 294247.
        let beyond = "+294276-12-31T23:59:59.999999";
        match ts.encode(&Value::Timestamp(beyond.into())) {
            Err(Unencodable::Unfit(why)) => assert!(why.contains(beyond), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn times_and_timestamps_parse_to_micros() {
        assert_eq!(parse_time("00:00:00"), Some(0));
        assert_eq!(parse_time("13:45:00.123456"), Some(49_500_123_456));
        assert_eq!(parse_time("13:45:00.5"), Some(49_500_500_000));
        assert_eq!(parse_time("24:00:00"), Some(DAY));
        assert_eq!(parse_time("24:00:01"), None);
        assert_eq!(parse_time("1:00:00"), None);

        assert_eq!(parse_timestamp("1970-01-02T00:00:00.000001"), Some(DAY + 1));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.5Z"), Some(-500_000));
        assert_eq!(
            parse_timestamp("2026-11-26T12:45:00.123456Z"),
            Some(20_783 * DAY + 45_900_123_456)
        );
        assert_eq!(parse_timestamp("infinity"), Some(i64::MAX));
        assert_eq!(parse_timestamp("-infinity"), Some(-i64::MAX));
        let bc = days_from_civil(-43, 3, 15) * DAY + 12 * 3_600_000_000;
        assert_eq!(parse_timestamp("0044-03-15 12:00:00 BC"), Some(bc));
        assert_eq!(parse_timestamp("0044-03-15 12:00:00+00 BC"), Some(bc));
        assert_eq!(
            parse_timestamp("0044-03-15 12:00:00+01:30 BC"),
            Some(bc - 5_400_000_000)
        );
        assert_eq!(
            parse_timestamp("-0001-12-31T23:00:00Z"),
            Some(days_from_civil(-1, 12, 31) * DAY + 23 * 3_600_000_000)
        );
        assert_eq!(parse_timestamp("294277-01-01T00:00:00"), None);
        assert_eq!(parse_timestamp("2026-11-26"), None);
    }

    #[test]
    fn iso_intervals_parse_to_months_days_micros() {
        assert_eq!(
            parse_interval("P1Y2M3DT4H5M6.5S"),
            Some((14, 3, 14_706_500_000))
        );
        assert_eq!(parse_interval("PT0S"), Some((0, 0, 0)));
        assert_eq!(parse_interval("P2W"), Some((0, 14, 0)));
        assert_eq!(
            parse_interval("P-1Y-2M3DT-4H-5M-6.5S"),
            Some((-14, 3, -14_706_500_000))
        );
        assert_eq!(parse_interval("PT-0.000001S"), Some((0, 0, -1)));
        assert_eq!(parse_interval("-P1D"), Some((0, -1, 0)));
        assert_eq!(parse_interval("P"), None);
        assert_eq!(parse_interval("1 day"), None);
        assert_eq!(parse_interval("P1X"), None);
    }

    #[test]
    fn values_encode_for_their_staging_kind() {
        let kind = |t: ColumnType| StageKind::for_column(&t, None);
        assert_eq!(
            kind(ColumnType::Int16).encode(&Value::Int(7)),
            Ok(Duck::BigInt(7))
        );
        assert_eq!(
            kind(ColumnType::UInt64).encode(&Value::UInt(u64::MAX)),
            Ok(Duck::UBigInt(u64::MAX))
        );
        let f = kind(ColumnType::Float64)
            .encode(&Value::Float(f64::NAN))
            .unwrap();
        assert!(matches!(f, Duck::Double(x) if x.is_nan()));
        let decimal = kind(ColumnType::Decimal {
            precision: Some(38),
            scale: Some(2),
        });
        assert_eq!(
            decimal.encode(&Value::Decimal(
                "123456789012345678901234567890123456.78".into()
            )),
            Ok(Duck::Text("123456789012345678901234567890123456.78".into()))
        );
        assert!(matches!(
            decimal.encode(&Value::Decimal("NaN".into())),
            Err(Unencodable::Unfit(_))
        ));
        assert_eq!(
            kind(ColumnType::Date).encode(&Value::Date("weird".into())),
            Err(Unencodable::TryText)
        );
        assert_eq!(
            kind(ColumnType::Interval).encode(&Value::Interval("P1M".into())),
            Ok(Duck::Interval {
                months: 1,
                days: 0,
                nanos: 0
            })
        );
        let list = kind(ColumnType::Array(Box::new(ColumnType::Text {
            max_len: None,
        })));
        assert_eq!(list.sql_type(), "VARCHAR[]");
        assert_eq!(
            list.encode(&Value::Array(vec![Value::Text("a".into()), Value::Null])),
            Ok(Duck::List(vec![Duck::Text("a".into()), Duck::Null]))
        );
        assert!(matches!(
            list.encode(&Value::Array(vec![Value::Array(vec![])])),
            Err(Unencodable::Unfit(_))
        ));
        // A VARCHAR target takes the spec's text form of anything.
        let text = StageKind::for_column(&ColumnType::Int32, Some("VARCHAR"));
        assert_eq!(text.encode(&Value::Int(5)), Ok(Duck::Text("5".into())));
        assert_eq!(
            text.encode(&Value::Array(vec![Value::Int(1), Value::Null])),
            Ok(Duck::Text("[1,null]".into()))
        );
        assert_eq!(
            text.encode(&Value::Bytes(vec![0, 1, 2])),
            Ok(Duck::Text("AAEC".into()))
        );
        assert_eq!(
            text.encode(&Value::json_from_text("{\"a\": 1}".into())),
            Ok(Duck::Text("{\"a\": 1}".into()))
        );
    }
}
