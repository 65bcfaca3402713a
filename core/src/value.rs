//! Lossless column values.
//!
//! Connectors decode each column into a [`Value`]; its JSON form is the spec's value table
//! (`../shared/spec/INTERFACE.md`). Temporal values are kept as their canonical text (already in
//! the spec's form), so nothing is lost to a lossy in-memory type.

use std::borrow::Cow;

use base64::Engine;
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::value::RawValue;

use crate::json_line::{has_control, one_line};

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// Written as a JSON number; NaN and the infinities as the strings `"NaN"`, `"Infinity"`,
    /// `"-Infinity"`.
    Float(f64),
    /// Every digit as text (`"129.90"`), or `"NaN"`.
    Decimal(String),
    Text(String),
    /// A JSON document (valid JSON, as the source wrote it), written as the value itself, on
    /// one line ([`crate::json_line`]).
    Json(Box<RawValue>),
    /// Written as base64.
    Bytes(Vec<u8>),
    /// `2026-11-26`, or `infinity` / `-infinity`.
    Date(String),
    /// `13:45:00.123456`.
    Time(String),
    /// Without time zone: `2026-11-26T13:45:00.123456`.
    Timestamp(String),
    /// UTC with `Z`: `2026-11-26T12:45:00.123456Z`.
    TimestampTz(String),
    /// ISO-8601 duration: `P1Y2M3DT4H5M6.5S`.
    Interval(String),
    Array(Vec<Value>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Decimal(a), Decimal(b))
            | (Text(a), Text(b))
            | (Date(a), Date(b))
            | (Time(a), Time(b))
            | (Timestamp(a), Timestamp(b))
            | (TimestampTz(a), TimestampTz(b))
            | (Interval(a), Interval(b)) => a == b,
            (Json(a), Json(b)) => a.get() == b.get(),
            (Bytes(a), Bytes(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// A JSON value from its text. Invalid JSON is kept as text rather than lost.
    pub fn json_from_text(text: String) -> Value {
        match parse_json(&text) {
            Ok(raw) => Value::Json(raw),
            Err(_) => Value::Text(text),
        }
    }

    /// [`Value::json_from_text`] of borrowed text: one allocation (the value's) when it is JSON.
    pub fn json_from_str(text: &str) -> Value {
        match parse_json(text) {
            Ok(raw) => Value::Json(raw),
            Err(_) => Value::Text(text.to_string()),
        }
    }

    /// A JSON value from text that must be JSON (a column whose type guarantees it); the text's
    /// allocation becomes the value's when it has no control characters to deal with.
    pub fn json(text: String) -> Result<Value, serde_json::Error> {
        if has_control(text.as_bytes()) {
            parse_json(&text).map(Value::Json)
        } else {
            RawValue::from_string(text).map(Value::Json)
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A rough count of the bytes this value holds, for the pipeline's memory budget.
    pub fn approx_size(&self) -> usize {
        16 + match self {
            Value::Decimal(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s)
            | Value::Interval(s) => heap(s.len()),
            Value::Json(raw) => heap(raw.get().len()),
            Value::Bytes(b) => heap(b.len()),
            Value::Array(items) => items.iter().map(Value::approx_size).sum(),
            _ => 0,
        }
    }
}

/// Bytes an allocation of `len` takes: the allocator's size classes are multiples of 16 for
/// the small sizes that most values have.
fn heap(len: usize) -> usize {
    len.next_multiple_of(16)
}

/// A JSON document, validated, as the source wrote it; text that is JSON but for raw control
/// characters inside its strings (the sources' JSON types reject them; this is the defence should
/// one not) as its escaped one-line form. Parsed from a borrow, so invalid JSON is still there for the caller to keep
/// (`RawValue::from_string` would consume the text).
fn parse_json(text: &str) -> Result<Box<RawValue>, serde_json::Error> {
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(raw) => Ok(raw),
        Err(e) => match one_line(text) {
            Cow::Owned(repaired) => RawValue::from_string(repaired).map_err(|_| e),
            Cow::Borrowed(_) => Err(e),
        },
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) if f.is_nan() => s.serialize_str("NaN"),
            Value::Float(f) if f.is_infinite() => {
                s.serialize_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Value::Float(f) => s.serialize_f64(*f),
            Value::Decimal(t)
            | Value::Text(t)
            | Value::Date(t)
            | Value::Time(t)
            | Value::Timestamp(t)
            | Value::TimestampTz(t)
            | Value::Interval(t) => s.serialize_str(t),
            // The document on one line, as every record carries it (crate::json_line).
            Value::Json(raw) => match one_line(raw.get()) {
                Cow::Borrowed(_) => raw.serialize(s),
                Cow::Owned(line) => RawValue::from_string(line)
                    .map_err(serde::ser::Error::custom)?
                    .serialize(s),
            },
            Value::Bytes(b) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn values_serialize_as_the_spec_says() {
        assert_eq!(json(&Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(json(&Value::Float(f64::NAN)), "\"NaN\"");
        assert_eq!(json(&Value::Float(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(json(&Value::Float(1.5)), "1.5");
        assert_eq!(json(&Value::Decimal("129.90".into())), "\"129.90\"");
        assert_eq!(json(&Value::Bytes(vec![0, 1, 2])), "\"AAEC\"");
        assert_eq!(
            json(&Value::json_from_text("{\"a\": [1, 2]}".into())),
            "{\"a\": [1, 2]}"
        );
        assert_eq!(
            json(&Value::Array(vec![Value::Int(1), Value::Null])),
            "[1,null]"
        );
    }

    #[test]
    fn text_that_is_not_json_is_kept_as_text() {
        for make in [
            |t: &str| Value::json_from_text(t.to_string()),
            Value::json_from_str,
        ] {
            assert_eq!(make(" [1, 2] "), Value::json_from_text("[1, 2]".into()));
            assert_eq!(make("{\"a\": 1"), Value::Text("{\"a\": 1".into()));
            assert_eq!(make("1 2"), Value::Text("1 2".into()));
        }
    }
}
