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
//!
//! Files: `temporal` (dates, times, timestamps and intervals, with the UTC arithmetic for
//! timestamptz offsets) and `array` (the array parser); the kinds, the type OID table and the
//! scalar decoders are here.

use std::borrow::Cow;

use cdc_core::Value;

mod array;
mod temporal;

#[cfg(test)]
mod tests;

use array::ArrayParser;
use temporal::{date_text, is_interval, is_time, timestamp_text, timestamptz_text, Temporal};

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
        ValueKind::Json => Value::json_from_str(&text),
        ValueKind::Bytea => match decode_bytea(&text) {
            Some(bytes) => Value::Bytes(bytes),
            None => Value::Text(text.into_owned()),
        },
        ValueKind::Date => match date_text(&text) {
            Some(Temporal::Rewritten(iso)) => Value::Date(iso),
            Some(Temporal::AsGiven) => Value::Date(text.into_owned()),
            None => Value::Text(text.into_owned()),
        },
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
        ValueKind::Numeric | ValueKind::Time | ValueKind::Interval => {
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
