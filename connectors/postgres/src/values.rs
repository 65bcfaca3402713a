//! Column values: pgoutput tuple text → [`cdc_core::Value`].
//!
//! pgoutput sends each column of a row (in `Insert`, `Update` and `Delete` messages) in the type's
//! text output form. This module sits between the message decoder (`wire`) and the rest of the
//! agent: given the column's type OID (from the `Relation` message) [`builtin_kind`] says how to
//! decode it, and [`decode_text`] turns the text into the canonical value of the spec's value table.
//!
//! The walsender session is started with `DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3` and `bytea_output=hex`, so the text forms
//! handled here are exactly those styles. Decoding never fails: text that does not look as the
//! kind says (a custom type reusing a built-in OID's name, a GUC overridden by a role, ...) is
//! kept as [`Value::Text`], so nothing is lost.
//!
//! This runs once per column of every streamed row, so the common paths borrow the input and make
//! at most the one allocation the resulting value needs.

use std::borrow::Cow;
use std::fmt::Write as _;

use cdc_core::Value;

/// How a column's text is decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    Int,
    Float,
    Numeric,
    Text,
    Json,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    /// A Postgres array; `delimiter` is the element type's `typdelim` (`,` for all built-ins but
    /// `box`, which uses `;`).
    Array {
        element: Box<ValueKind>,
        delimiter: u8,
    },
}

/// The kind for a built-in type OID (scalars and their array types), None if not built in.
///
/// OIDs are pg_type's fixed ones for built-in types. Types created at run time (enums, domains,
/// composites, extension types) get no kind here; callers decode those as text.
pub fn builtin_kind(type_oid: u32) -> Option<ValueKind> {
    if let Some(kind) = scalar_kind(type_oid) {
        return Some(kind);
    }
    let (element, delimiter) = match type_oid {
        1000 => (ValueKind::Bool, b','),
        // int2[], int4[], int8[], oid[], xid[], cid[], xid8[]
        1005 | 1007 | 1016 | 1028 | 1011 | 1012 | 271 => (ValueKind::Int, b','),
        1021 | 1022 => (ValueKind::Float, b','),
        1231 => (ValueKind::Numeric, b','),
        199 | 3807 => (ValueKind::Json, b','),
        1001 => (ValueKind::Bytea, b','),
        1182 => (ValueKind::Date, b','),
        1183 => (ValueKind::Time, b','),
        1115 => (ValueKind::Timestamp, b','),
        1185 => (ValueKind::TimestampTz, b','),
        1187 => (ValueKind::Interval, b','),
        // box is the one built-in type whose array delimiter is not a comma: its text form
        // "(1,1),(0,0)" contains commas itself.
        1020 => (ValueKind::Text, b';'),
        // text[], varchar[], bpchar[], name[], char[], uuid[], inet[], cidr[], macaddr[],
        // macaddr8[], timetz[], money[], xml[], bit[], varbit[], tsvector[], tsquery[],
        // point[], lseg[], path[], polygon[], line[], circle[], pg_lsn[], tid[], regproc[],
        // regclass[], regtype[], jsonpath[]
        1009 | 1015 | 1014 | 1003 | 1002 | 2951 | 1041 | 651 | 1040 | 775 | 1270 | 791 | 143
        | 1561 | 1563 | 3643 | 3645 | 1017 | 1018 | 1019 | 1027 | 629 | 719 | 3221 | 1010
        | 1008 | 2210 | 2211 | 4073 => (ValueKind::Text, b','),
        _ => return None,
    };
    Some(ValueKind::Array {
        element: Box::new(element),
        delimiter,
    })
}

fn scalar_kind(type_oid: u32) -> Option<ValueKind> {
    Some(match type_oid {
        16 => ValueKind::Bool,
        // int2, int4, int8, oid, xid, cid, xid8
        21 | 23 | 20 | 26 | 28 | 29 | 5069 => ValueKind::Int,
        700 | 701 => ValueKind::Float,
        1700 => ValueKind::Numeric,
        114 | 3802 => ValueKind::Json,
        17 => ValueKind::Bytea,
        1082 => ValueKind::Date,
        1083 => ValueKind::Time,
        1114 => ValueKind::Timestamp,
        1184 => ValueKind::TimestampTz,
        1186 => ValueKind::Interval,
        // text, varchar, bpchar, name, char, uuid, inet, cidr, macaddr, macaddr8, xml, money,
        // bit, varbit, timetz (the spec has no zoned-time form, so the server's text it is),
        // tsvector, tsquery, point, lseg, path, box, polygon, line, circle, pg_lsn, tid,
        // regproc, regclass, regtype, jsonpath, int2vector, oidvector, txid_snapshot,
        // pg_snapshot, unknown
        25 | 1043 | 1042 | 19 | 18 | 2950 | 869 | 650 | 829 | 774 | 142 | 790 | 1560 | 1562
        | 1266 | 3614 | 3615 | 600 | 601 | 602 | 603 | 604 | 628 | 718 | 3220 | 27 | 24 | 2205
        | 2206 | 4072 | 22 | 30 | 2970 | 5038 | 705 => ValueKind::Text,
        _ => return None,
    })
}

/// Decodes one non-null value from its text form. Never fails: text that does not parse as the
/// kind says is kept as Value::Text.
pub fn decode_text(kind: &ValueKind, text: &str) -> Value {
    decode_cow(kind, Cow::Borrowed(text))
}

/// [`decode_text`] for text that may already be owned (an unescaped array element), so the kinds
/// that keep the text can reuse its allocation instead of copying it.
fn decode_cow(kind: &ValueKind, text: Cow<'_, str>) -> Value {
    match kind {
        ValueKind::Bool => match &*text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => Value::Text(text.into_owned()),
        },
        ValueKind::Int => decode_int(text),
        ValueKind::Float => decode_float(text),
        ValueKind::Numeric if is_numeric(&text) => Value::Decimal(text.into_owned()),
        ValueKind::Text => Value::Text(text.into_owned()),
        ValueKind::Json => Value::json_from_text(text.into_owned()),
        ValueKind::Bytea => match decode_bytea(&text) {
            Some(bytes) => Value::Bytes(bytes),
            None => Value::Text(text.into_owned()),
        },
        ValueKind::Date if is_date_value(&text) => Value::Date(text.into_owned()),
        ValueKind::Time if is_time(&text) => Value::Time(text.into_owned()),
        ValueKind::Timestamp => match timestamp_text(&text) {
            Some(Temporal::Rewritten(iso)) => Value::Timestamp(iso),
            Some(Temporal::AsGiven) => Value::Timestamp(text.into_owned()),
            None => Value::Text(text.into_owned()),
        },
        ValueKind::TimestampTz => match timestamptz_text(&text) {
            Some(Temporal::Rewritten(iso)) => Value::TimestampTz(iso),
            Some(Temporal::AsGiven) => Value::TimestampTz(text.into_owned()),
            None => Value::Text(text.into_owned()),
        },
        ValueKind::Interval if is_interval(&text) => Value::Interval(text.into_owned()),
        ValueKind::Array { element, delimiter } => {
            match ArrayParser::parse(element, *delimiter, &text) {
                Some(array) => array,
                None => Value::Text(text.into_owned()),
            }
        }
        // A kind's guard did not match: not the form the kind promises.
        ValueKind::Numeric | ValueKind::Date | ValueKind::Time | ValueKind::Interval => {
            Value::Text(text.into_owned())
        }
    }
}

fn decode_int(text: Cow<'_, str>) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Int(i);
    }
    // xid8 (and anything else unsigned 64-bit) can exceed i64::MAX.
    if let Ok(u) = text.parse::<u64>() {
        return Value::UInt(u);
    }
    Value::Text(text.into_owned())
}

fn decode_float(text: Cow<'_, str>) -> Value {
    // Postgres spells the specials this way; matched first so that the looser spellings Rust's
    // parser also takes ("inf", "nan") are not what defines them.
    let f = match &*text {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        s => match s.parse::<f64>() {
            Ok(f) => f,
            Err(_) => return Value::Text(text.into_owned()),
        },
    };
    Value::Float(f)
}

/// Numeric output: an optional sign, digits with an optional fraction (an exponent is accepted
/// too although Postgres never prints one), or one of the specials.
fn is_numeric(s: &str) -> bool {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return true;
    }
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let int_digits = count_digits(b, i);
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = count_digits(b, i);
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(b.get(i), Some(b'-' | b'+')));
        let exp_digits = count_digits(b, i);
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

/// bytea in hex output (`\x0aff`), or, should a role override `bytea_output`, the legacy escape
/// format (printable bytes as themselves, `\\` for a backslash, `\ooo` octal for the rest).
fn decode_bytea(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if let Some(hex) = b.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(hex.len() / 2);
        for pair in hex.chunks_exact(2) {
            out.push((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?);
        }
        return Some(out);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1..i + 4) {
            Some([b'\\', ..]) => {
                out.push(b'\\');
                i += 2;
            }
            Some(&[h @ b'0'..=b'3', m @ b'0'..=b'7', l @ b'0'..=b'7']) => {
                out.push(((h - b'0') << 6) | ((m - b'0') << 3) | (l - b'0'));
                i += 4;
            }
            // "\\" can be the last two bytes, too short for the three-byte window above.
            _ if b.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn count_digits(b: &[u8], from: usize) -> usize {
    b.get(from..).map_or(0, |rest| {
        rest.iter().take_while(|c| c.is_ascii_digit()).count()
    })
}

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
fn is_date_value(s: &str) -> bool {
    is_infinity(s) || is_date(s.strip_suffix(" BC").unwrap_or(s))
}

/// ISO time output: `HH:MM:SS` with an optional fraction.
fn is_time(s: &str) -> bool {
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
enum Temporal {
    AsGiven,
    Rewritten(String),
}

/// Splits ISO `date time...` output at its space.
fn split_date_time(s: &str) -> Option<(&str, &str)> {
    let (date, rest) = s.split_once(' ')?;
    is_date(date).then_some((date, rest))
}

/// `2026-11-26 13:45:00.123456` → `2026-11-26T13:45:00.123456`; None if not timestamp output.
fn timestamp_text(s: &str) -> Option<Temporal> {
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
fn timestamptz_text(s: &str) -> Option<Temporal> {
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
fn is_interval(s: &str) -> bool {
    s.starts_with('P') || is_infinity(s)
}

/// Deeper than Postgres allows (MAXDIM is 6) with room to spare; bounds the recursion on garbage.
const MAX_ARRAY_DEPTH: usize = 32;

/// A hand parser for array output: `{1,2,NULL}`, `{{1,2},{3,4}}`, `{"a b","c\"d"}`, optionally
/// behind a dimension prefix (`[0:1]={1,2}`) when lower bounds are not 1.
struct ArrayParser<'a, 'k> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    element: &'k ValueKind,
    delimiter: u8,
}

impl<'a, 'k> ArrayParser<'a, 'k> {
    /// The array, or None if the text is not well-formed array output.
    fn parse(element: &'k ValueKind, delimiter: u8, text: &'a str) -> Option<Value> {
        let mut p = ArrayParser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            element,
            delimiter,
        };
        p.skip_ws();
        p.skip_dimensions()?;
        let array = p.array(0)?;
        p.skip_ws();
        (p.pos == p.bytes.len()).then_some(array)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Skips `[lo:hi]...=`; the bounds only say where indexing starts, which JSON arrays lack.
    fn skip_dimensions(&mut self) -> Option<()> {
        if self.peek() != Some(b'[') {
            return Some(());
        }
        while self.peek() == Some(b'[') {
            self.pos += 1;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, b':' | b'-' | b'+'))
            {
                self.pos += 1;
            }
            if self.peek()? != b']' {
                return None;
            }
            self.pos += 1;
            self.skip_ws();
        }
        if self.peek()? != b'=' {
            return None;
        }
        self.pos += 1;
        self.skip_ws();
        Some(())
    }

    /// One `{...}` level, at `self.pos`.
    fn array(&mut self, depth: usize) -> Option<Value> {
        if depth >= MAX_ARRAY_DEPTH || self.peek()? != b'{' {
            return None;
        }
        self.pos += 1;
        self.skip_ws();
        let mut items = Vec::new();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(Value::Array(items));
        }
        loop {
            self.skip_ws();
            let item = match self.peek()? {
                b'{' => self.array(depth + 1)?,
                b'"' => decode_cow(self.element, self.quoted()?),
                _ => match self.unquoted()? {
                    None => Value::Null,
                    Some(text) => decode_cow(self.element, text),
                },
            };
            items.push(item);
            self.skip_ws();
            let c = self.peek()?;
            self.pos += 1;
            if c == b'}' {
                return Some(Value::Array(items));
            }
            if c != self.delimiter {
                return None;
            }
        }
    }

    /// A double-quoted element; borrowed unless it has backslash escapes to remove.
    fn quoted(&mut self) -> Option<Cow<'a, str>> {
        self.pos += 1; // the opening quote
        let start = self.pos;
        let mut owned: Option<String> = None;
        let mut segment = start;
        loop {
            match self.peek()? {
                b'"' => {
                    let tail = &self.text[segment..self.pos];
                    self.pos += 1;
                    return Some(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let s = owned.get_or_insert_with(|| String::with_capacity(self.pos - start));
                    s.push_str(&self.text[segment..self.pos]);
                    self.pos += 1;
                    self.push_escaped(s)?;
                    segment = self.pos;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// An unquoted element up to the delimiter or `}`; None for the NULL marker. Postgres quotes
    /// anything with special characters on output, but its input rules (escapes, trailing
    /// whitespace dropped) are honored anyway.
    fn unquoted(&mut self) -> Option<Option<Cow<'a, str>>> {
        let start = self.pos;
        let mut owned: Option<String> = None;
        let mut segment = start;
        // Escaped characters are kept even if they are whitespace.
        let mut keep = 0;
        loop {
            match self.peek()? {
                c if c == self.delimiter || c == b'}' => break,
                b'{' | b'"' => return None,
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.text[segment..self.pos]);
                    self.pos += 1;
                    self.push_escaped(s)?;
                    keep = s.len();
                    segment = self.pos;
                }
                _ => self.pos += 1,
            }
        }
        let tail = &self.text[segment..self.pos];
        match owned {
            None => {
                let text = tail.trim_end_matches(|c: char| c.is_ascii_whitespace());
                if text.is_empty() {
                    return None; // "{1,,2}": Postgres rejects empty unquoted elements
                }
                // Postgres reads the marker case-insensitively, and only when unquoted.
                if text.eq_ignore_ascii_case("NULL") {
                    return Some(None);
                }
                Some(Some(Cow::Borrowed(text)))
            }
            Some(mut s) => {
                s.push_str(tail);
                let trimmed = s.trim_end_matches(|c: char| c.is_ascii_whitespace()).len();
                s.truncate(trimmed.max(keep));
                Some(Some(Cow::Owned(s)))
            }
        }
    }

    /// The character after a backslash (at `self.pos`), taken literally.
    fn push_escaped(&mut self, out: &mut String) -> Option<()> {
        let c = self.text.get(self.pos..)?.chars().next()?;
        out.push(c);
        self.pos += c.len_utf8();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: ValueKind, text: &str) -> Value {
        decode_text(&kind, text)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    fn kind(oid: u32) -> ValueKind {
        builtin_kind(oid).unwrap_or_else(|| panic!("oid {oid} has no kind"))
    }

    fn array_of(element: ValueKind) -> ValueKind {
        ValueKind::Array {
            element: Box::new(element),
            delimiter: b',',
        }
    }

    fn ints(items: &[i64]) -> Value {
        Value::Array(items.iter().map(|&i| Value::Int(i)).collect())
    }

    #[test]
    fn scalar_oids_map_to_their_kinds() {
        assert_eq!(kind(16), ValueKind::Bool);
        for oid in [21, 23, 20, 26, 28, 5069] {
            assert_eq!(kind(oid), ValueKind::Int, "oid {oid}");
        }
        assert_eq!(kind(700), ValueKind::Float);
        assert_eq!(kind(701), ValueKind::Float);
        assert_eq!(kind(1700), ValueKind::Numeric);
        for oid in [
            25, 1043, 1042, 19, 18, 2950, 869, 650, 829, 774, 142, 790, 1560, 1562, 1266, 3614,
            3615, 603,
        ] {
            assert_eq!(kind(oid), ValueKind::Text, "oid {oid}");
        }
        assert_eq!(kind(114), ValueKind::Json);
        assert_eq!(kind(3802), ValueKind::Json);
        assert_eq!(kind(17), ValueKind::Bytea);
        assert_eq!(kind(1082), ValueKind::Date);
        assert_eq!(kind(1083), ValueKind::Time);
        assert_eq!(kind(1114), ValueKind::Timestamp);
        assert_eq!(kind(1184), ValueKind::TimestampTz);
        assert_eq!(kind(1186), ValueKind::Interval);
    }

    #[test]
    fn array_oids_map_to_their_element_kinds() {
        let cases = [
            (1000, ValueKind::Bool),
            (1005, ValueKind::Int),
            (1007, ValueKind::Int),
            (1016, ValueKind::Int),
            (1028, ValueKind::Int),
            (1021, ValueKind::Float),
            (1022, ValueKind::Float),
            (1231, ValueKind::Numeric),
            (1009, ValueKind::Text),
            (1015, ValueKind::Text),
            (1014, ValueKind::Text),
            (1003, ValueKind::Text),
            (2951, ValueKind::Text),
            (1041, ValueKind::Text),
            (651, ValueKind::Text),
            (1040, ValueKind::Text),
            (199, ValueKind::Json),
            (3807, ValueKind::Json),
            (1001, ValueKind::Bytea),
            (1182, ValueKind::Date),
            (1183, ValueKind::Time),
            (1115, ValueKind::Timestamp),
            (1185, ValueKind::TimestampTz),
            (1187, ValueKind::Interval),
            (1270, ValueKind::Text),
            (791, ValueKind::Text),
            (143, ValueKind::Text),
        ];
        for (oid, element) in cases {
            assert_eq!(kind(oid), array_of(element), "oid {oid}");
        }
        assert_eq!(
            kind(1020),
            ValueKind::Array {
                element: Box::new(ValueKind::Text),
                delimiter: b';'
            }
        );
    }

    #[test]
    fn unknown_oids_have_no_kind() {
        assert_eq!(builtin_kind(0), None);
        assert_eq!(builtin_kind(16_385), None); // a user-defined enum, say
        assert_eq!(builtin_kind(u32::MAX), None);
    }

    #[test]
    fn booleans() {
        assert_eq!(d(ValueKind::Bool, "t"), Value::Bool(true));
        assert_eq!(d(ValueKind::Bool, "f"), Value::Bool(false));
        assert_eq!(d(ValueKind::Bool, "yes"), text("yes"));
        assert_eq!(d(ValueKind::Bool, ""), text(""));
    }

    #[test]
    fn integers_exact_to_both_ends() {
        assert_eq!(d(ValueKind::Int, "0"), Value::Int(0));
        assert_eq!(d(ValueKind::Int, "-42"), Value::Int(-42));
        assert_eq!(d(ValueKind::Int, "-32768"), Value::Int(-32768));
        assert_eq!(
            d(ValueKind::Int, "-9223372036854775808"),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            d(ValueKind::Int, "9223372036854775807"),
            Value::Int(i64::MAX)
        );
        // xid8 past i64::MAX
        assert_eq!(
            d(ValueKind::Int, "9223372036854775808"),
            Value::UInt(9_223_372_036_854_775_808)
        );
        assert_eq!(
            d(ValueKind::Int, "18446744073709551615"),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            d(ValueKind::Int, "18446744073709551616"),
            text("18446744073709551616")
        );
        assert_eq!(
            d(ValueKind::Int, "-9223372036854775809"),
            text("-9223372036854775809")
        );
        assert_eq!(d(ValueKind::Int, "4294967295"), Value::Int(4_294_967_295)); // max oid/xid
        assert_eq!(d(ValueKind::Int, "12a"), text("12a"));
        assert_eq!(d(ValueKind::Int, ""), text(""));
    }

    #[test]
    fn floats_and_their_specials() {
        assert_eq!(d(ValueKind::Float, "1.5"), Value::Float(1.5));
        assert_eq!(d(ValueKind::Float, "-0.25"), Value::Float(-0.25));
        assert_eq!(d(ValueKind::Float, "1e-300"), Value::Float(1e-300));
        assert_eq!(
            d(ValueKind::Float, "1.7976931348623157e+308"),
            Value::Float(f64::MAX)
        );
        // extra_float_digits=3 prints enough digits to round-trip exactly.
        assert_eq!(
            d(ValueKind::Float, "0.30000000000000004"),
            Value::Float(0.1 + 0.2)
        );
        match d(ValueKind::Float, "NaN") {
            Value::Float(f) => assert!(f.is_nan()),
            other => panic!("{other:?}"),
        }
        assert_eq!(d(ValueKind::Float, "Infinity"), Value::Float(f64::INFINITY));
        assert_eq!(
            d(ValueKind::Float, "-Infinity"),
            Value::Float(f64::NEG_INFINITY)
        );
        assert_eq!(d(ValueKind::Float, "one"), text("one"));
    }

    #[test]
    fn numerics_keep_every_digit() {
        for s in [
            "129.90",
            "0",
            "-0.001",
            "12345678901234567890123456789.000000000000000001",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            assert_eq!(d(ValueKind::Numeric, s), Value::Decimal(s.to_owned()));
        }
        assert_eq!(d(ValueKind::Numeric, "1.2.3"), text("1.2.3"));
        assert_eq!(d(ValueKind::Numeric, "-"), text("-"));
        assert_eq!(d(ValueKind::Numeric, ""), text(""));
    }

    #[test]
    fn text_as_given() {
        assert_eq!(
            d(ValueKind::Text, "héllo ✓ 日本語 😀"),
            text("héllo ✓ 日本語 😀")
        );
        assert_eq!(d(ValueKind::Text, ""), text(""));
        assert_eq!(d(ValueKind::Text, "NULL"), text("NULL"));
        assert_eq!(
            d(kind(2950), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
        assert_eq!(d(kind(1266), "13:45:00+05:30"), text("13:45:00+05:30"));
    }

    #[test]
    fn json_is_the_document_itself() {
        let v = d(ValueKind::Json, r#"{"a": [1, 2], "b": "ü"}"#);
        assert_eq!(
            serde_json::to_string(&v).ok().as_deref(),
            Some(r#"{"a": [1, 2], "b": "ü"}"#)
        );
        assert!(matches!(d(ValueKind::Json, "42"), Value::Json(_)));
        assert!(matches!(d(ValueKind::Json, "null"), Value::Json(_)));
        assert_eq!(d(ValueKind::Json, "{oops"), text("{oops"));
    }

    #[test]
    fn bytea_hex_and_escape_formats() {
        assert_eq!(d(ValueKind::Bytea, r"\x"), Value::Bytes(vec![]));
        assert_eq!(
            d(ValueKind::Bytea, r"\x00ff10"),
            Value::Bytes(vec![0, 255, 16])
        );
        assert_eq!(
            d(ValueKind::Bytea, r"\xDEADbeef"),
            Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(d(ValueKind::Bytea, r"\x0"), text(r"\x0"));
        assert_eq!(d(ValueKind::Bytea, r"\xzz"), text(r"\xzz"));
        // Legacy escape format.
        assert_eq!(d(ValueKind::Bytea, ""), Value::Bytes(vec![]));
        assert_eq!(
            d(ValueKind::Bytea, r"ab\000\377\\"),
            Value::Bytes(vec![b'a', b'b', 0, 255, b'\\'])
        );
        assert_eq!(
            d(ValueKind::Bytea, r"\\\\x"),
            Value::Bytes(vec![b'\\', b'\\', b'x'])
        );
        assert_eq!(d(ValueKind::Bytea, r"bad\9"), text(r"bad\9"));
        assert_eq!(d(ValueKind::Bytea, r"end\"), text(r"end\"));
    }

    #[test]
    fn dates() {
        for s in [
            "2026-11-26",
            "infinity",
            "-infinity",
            "0044-03-15 BC",
            "10000-01-01",
        ] {
            assert_eq!(d(ValueKind::Date, s), Value::Date(s.to_owned()));
        }
        assert_eq!(d(ValueKind::Date, "11/26/2026"), text("11/26/2026"));
        assert_eq!(d(ValueKind::Date, "2026-11-26x"), text("2026-11-26x"));
    }

    #[test]
    fn times() {
        for s in ["13:45:00", "13:45:00.123456", "24:00:00"] {
            assert_eq!(d(ValueKind::Time, s), Value::Time(s.to_owned()));
        }
        assert_eq!(d(ValueKind::Time, "13:45"), text("13:45"));
        assert_eq!(d(ValueKind::Time, "13:45:00."), text("13:45:00."));
    }

    #[test]
    fn timestamps_get_the_iso_separator() {
        let ts = |s: &str| Value::Timestamp(s.to_owned());
        assert_eq!(
            d(ValueKind::Timestamp, "2026-11-26 13:45:00.123456"),
            ts("2026-11-26T13:45:00.123456")
        );
        assert_eq!(
            d(ValueKind::Timestamp, "2026-11-26 13:45:00"),
            ts("2026-11-26T13:45:00")
        );
        assert_eq!(
            d(ValueKind::Timestamp, "10000-01-01 00:00:00"),
            ts("10000-01-01T00:00:00")
        );
        assert_eq!(d(ValueKind::Timestamp, "infinity"), ts("infinity"));
        assert_eq!(d(ValueKind::Timestamp, "-infinity"), ts("-infinity"));
        assert_eq!(
            d(ValueKind::Timestamp, "0044-03-15 12:00:00 BC"),
            ts("0044-03-15 12:00:00 BC")
        );
        assert_eq!(d(ValueKind::Timestamp, "2026-11-26"), text("2026-11-26"));
        assert_eq!(
            d(ValueKind::Timestamp, "2026-11-26 13:45:00+00"),
            text("2026-11-26 13:45:00+00")
        );
    }

    #[test]
    fn timestamptz_in_utc() {
        let tz = |s: &str| Value::TimestampTz(s.to_owned());
        let k = ValueKind::TimestampTz;
        assert_eq!(
            d(k.clone(), "2026-11-26 12:45:00.123456+00"),
            tz("2026-11-26T12:45:00.123456Z")
        );
        assert_eq!(
            d(k.clone(), "2026-11-26 12:45:00+00"),
            tz("2026-11-26T12:45:00Z")
        );
        assert_eq!(
            d(k.clone(), "2026-11-26 12:45:00.5+00:00"),
            tz("2026-11-26T12:45:00.5Z")
        );
        assert_eq!(
            d(k.clone(), "2026-11-26 12:45:00-00:00:00"),
            tz("2026-11-26T12:45:00Z")
        );
        assert_eq!(d(k.clone(), "infinity"), tz("infinity"));
        assert_eq!(d(k.clone(), "-infinity"), tz("-infinity"));
        assert_eq!(
            d(k.clone(), "0044-03-15 12:00:00+00 BC"),
            tz("0044-03-15 12:00:00+00 BC")
        );
    }

    #[test]
    fn timestamptz_with_other_offsets_is_converted_to_utc() {
        let tz = |s: &str| Value::TimestampTz(s.to_owned());
        let k = ValueKind::TimestampTz;
        assert_eq!(
            d(k.clone(), "2026-11-26 18:15:00.123456+05:30"),
            tz("2026-11-26T12:45:00.123456Z")
        );
        assert_eq!(
            d(k.clone(), "2026-11-26 18:15:00+0530"),
            tz("2026-11-26T12:45:00Z")
        );
        // Back across a year boundary.
        assert_eq!(
            d(k.clone(), "2026-01-01 02:00:00+05:30"),
            tz("2025-12-31T20:30:00Z")
        );
        // Forward across a month boundary.
        assert_eq!(
            d(k.clone(), "2026-04-30 20:00:00.25-08"),
            tz("2026-05-01T04:00:00.25Z")
        );
        // Leap days, and a century that is not a leap year.
        assert_eq!(
            d(k.clone(), "2024-03-01 01:00:00+02"),
            tz("2024-02-29T23:00:00Z")
        );
        assert_eq!(
            d(k.clone(), "2000-02-28 23:00:00-02"),
            tz("2000-02-29T01:00:00Z")
        );
        assert_eq!(
            d(k.clone(), "2100-03-01 00:30:00+01"),
            tz("2100-02-28T23:30:00Z")
        );
        // Historic offsets carry seconds (LMT).
        assert_eq!(
            d(k.clone(), "1850-06-01 12:00:00+00:53:28"),
            tz("1850-06-01T11:06:32Z")
        );
        assert_eq!(
            d(k.clone(), "1970-01-01 00:00:00+01"),
            tz("1969-12-31T23:00:00Z")
        );
    }

    #[test]
    fn malformed_timestamptz_is_text() {
        for s in [
            "2026-11-26 12:45:00",
            "2026-11-26 12:45:00+5",
            "2026-11-26 12:45:00+00:0",
            "2026-11-26T12:45:00Z",
            "2026-13-26 12:45:00+01",
            "2026-11-26 12:45:00+99",
            "",
        ] {
            assert_eq!(d(ValueKind::TimestampTz, s), text(s), "{s:?}");
        }
    }

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

    #[test]
    fn intervals() {
        for s in [
            "P1Y2M3DT4H5M6.5S",
            "PT0S",
            "P-1Y-2M",
            "PT-0.000001S",
            "infinity",
        ] {
            assert_eq!(d(ValueKind::Interval, s), Value::Interval(s.to_owned()));
        }
        assert_eq!(
            d(ValueKind::Interval, "1 year 2 mons"),
            text("1 year 2 mons")
        );
    }

    #[test]
    fn flat_arrays_with_nulls() {
        let k = kind(1007);
        assert_eq!(
            d(k.clone(), "{1,2,NULL}"),
            Value::Array(vec![Value::Int(1), Value::Int(2), Value::Null])
        );
        assert_eq!(d(k.clone(), "{}"), Value::Array(vec![]));
        assert_eq!(d(k.clone(), " { 1 , 2 } "), ints(&[1, 2]));
        assert_eq!(d(k.clone(), "{null}"), Value::Array(vec![Value::Null]));
        assert_eq!(
            d(kind(1016), "{-9223372036854775808,9223372036854775807}"),
            ints(&[i64::MIN, i64::MAX])
        );
        assert_eq!(
            d(kind(1000), "{t,f,NULL}"),
            Value::Array(vec![Value::Bool(true), Value::Bool(false), Value::Null])
        );
    }

    #[test]
    fn nested_arrays() {
        let k = kind(1007);
        assert_eq!(
            d(k.clone(), "{{1,2},{3,4}}"),
            Value::Array(vec![ints(&[1, 2]), ints(&[3, 4])])
        );
        assert_eq!(
            d(k.clone(), "{{{1},{2}},{{3},{NULL}}}"),
            Value::Array(vec![
                Value::Array(vec![ints(&[1]), ints(&[2])]),
                Value::Array(vec![ints(&[3]), Value::Array(vec![Value::Null])]),
            ])
        );
        let text_k = kind(1009);
        assert_eq!(
            d(text_k, r#"{{"a,b",NULL},{"}","{"}}"#),
            Value::Array(vec![
                Value::Array(vec![text("a,b"), Value::Null]),
                Value::Array(vec![text("}"), text("{")]),
            ])
        );
    }

    #[test]
    fn quoted_elements_and_escapes() {
        let k = kind(1009);
        assert_eq!(
            d(k.clone(), r#"{"a b","c\"d",NULL,"NULL"}"#),
            Value::Array(vec![text("a b"), text("c\"d"), Value::Null, text("NULL")])
        );
        assert_eq!(
            d(k.clone(), r#"{"back\\slash","","  padded  "}"#),
            Value::Array(vec![text(r"back\slash"), text(""), text("  padded  ")])
        );
        assert_eq!(
            d(k.clone(), r#"{héllo,"日本 語","\😀x",ü\ }"#),
            Value::Array(vec![
                text("héllo"),
                text("日本 語"),
                text("😀x"),
                text("ü "),
            ])
        );
        assert_eq!(
            d(k.clone(), r"{a\,b,c\\d  }"),
            Value::Array(vec![text("a,b"), text(r"c\d")])
        );
    }

    #[test]
    fn arrays_decode_elements_with_the_element_kind() {
        assert_eq!(
            d(
                kind(1115),
                r#"{"2026-11-26 13:45:00.123456","2026-11-27 00:00:00",infinity}"#
            ),
            Value::Array(vec![
                Value::Timestamp("2026-11-26T13:45:00.123456".into()),
                Value::Timestamp("2026-11-27T00:00:00".into()),
                Value::Timestamp("infinity".into()),
            ])
        );
        assert_eq!(
            d(kind(1185), r#"{"2026-11-26 12:45:00+00",NULL}"#),
            Value::Array(vec![
                Value::TimestampTz("2026-11-26T12:45:00Z".into()),
                Value::Null
            ])
        );
        assert_eq!(
            d(kind(1001), r#"{"\\x0102","\\x"}"#),
            Value::Array(vec![Value::Bytes(vec![1, 2]), Value::Bytes(vec![])])
        );
        assert_eq!(
            d(kind(1231), "{1.50,NaN,-Infinity}"),
            Value::Array(vec![
                Value::Decimal("1.50".into()),
                Value::Decimal("NaN".into()),
                Value::Decimal("-Infinity".into()),
            ])
        );
        let floats = d(kind(1022), "{1.5,NaN,-Infinity}");
        assert_eq!(
            floats,
            Value::Array(vec![
                Value::Float(1.5),
                Value::Float(f64::NAN),
                Value::Float(f64::NEG_INFINITY),
            ])
        );
        let json = d(kind(3807), r#"{"{\"a\": 1}",NULL,"[1, 2]"}"#);
        assert_eq!(
            serde_json::to_string(&json).ok().as_deref(),
            Some(r#"[{"a": 1},null,[1, 2]]"#)
        );
        assert_eq!(
            d(kind(1187), "{P1D,PT0S}"),
            Value::Array(vec![
                Value::Interval("P1D".into()),
                Value::Interval("PT0S".into())
            ])
        );
    }

    #[test]
    fn box_arrays_split_on_semicolons() {
        assert_eq!(
            d(kind(1020), "{(1,1),(0,0);(3,3),(2,2)}"),
            Value::Array(vec![text("(1,1),(0,0)"), text("(3,3),(2,2)")])
        );
    }

    #[test]
    fn dimension_prefixes_are_skipped() {
        let k = kind(1007);
        assert_eq!(d(k.clone(), "[0:1]={1,2}"), ints(&[1, 2]));
        assert_eq!(d(k.clone(), "[-2:-1]={1,2}"), ints(&[1, 2]));
        assert_eq!(
            d(k.clone(), "[1:2][1:1]={{1},{2}}"),
            Value::Array(vec![ints(&[1]), ints(&[2])])
        );
    }

    #[test]
    fn malformed_arrays_are_text() {
        let k = kind(1007);
        for s in [
            "",
            "1,2",
            "{1,2",
            "{1,,2}",
            "{,}",
            "{1,2}x",
            r#"{"abc}"#,
            r#"{"a\"}"#,
            "{{1,2}",
            "[0:1]{1,2}",
            "[0:1={1,2}",
            r"{1\",
        ] {
            assert_eq!(d(k.clone(), s), text(s), "{s:?}");
        }
        let too_deep = format!("{}{}", "{".repeat(64), "}".repeat(64));
        assert_eq!(d(k, &too_deep), text(&too_deep));
    }

    #[test]
    fn unparseable_elements_stay_text_inside_the_array() {
        assert_eq!(
            d(kind(1007), "{1,x,99999999999999999999}"),
            Value::Array(vec![Value::Int(1), text("x"), text("99999999999999999999"),])
        );
    }
}
