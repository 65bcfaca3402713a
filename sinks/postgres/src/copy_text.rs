//! Values in the text format of `COPY ... FROM STDIN`: what the staging tables are loaded with.
//!
//! Every value of the change record has a text form Postgres' input functions accept: ISO dates
//! and timestamps (with `T`, and `Z` for UTC), ISO-8601 intervals, `\x` hex bytea, array literals.
//! The one exception, the expanded years (`+021016-11-04`, `-004712-12-31`), which Postgres reads
//! as a time zone, is written back in Postgres' own form (`21016-11-04`, `4713-12-31 BC`).

use std::borrow::Cow;
use std::fmt::Write;

use cdc_core::time::split_year;
use cdc_core::Value;

/// Appends one value, escaped for COPY's text format.
pub fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("\\N"),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) => push_float(out, *f),
        Value::Date(s) | Value::Timestamp(s) | Value::TimestampTz(s) => {
            push_escaped(out, &postgres_years(s))
        }
        Value::Decimal(s) | Value::Time(s) | Value::Interval(s) => push_escaped(out, s),
        Value::Text(s) => push_escaped(out, s),
        Value::Json(raw) => push_escaped(out, raw.get()),
        Value::Bytes(bytes) => {
            // `\x` must itself be escaped in COPY text: `\\x`.
            out.push_str("\\\\x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
        }
        Value::Array(items) => {
            let mut literal = String::new();
            push_array_literal(&mut literal, items);
            push_escaped(out, &literal);
        }
    }
}

/// A date or timestamp of the record in a form Postgres' input reads as the same instant: an
/// expanded year (`+021016`, `-004712` = 4713 BC) unsigned, or counted BC with Postgres' suffix.
/// Everything else (four-digit years, the infinities) is already Postgres input.
fn postgres_years(s: &str) -> Cow<'_, str> {
    if !s.starts_with(['+', '-']) {
        return Cow::Borrowed(s);
    }
    match split_year(s) {
        Some((year, rest)) if year >= 1 => Cow::Owned(format!("{year:04}{rest}")),
        Some((year, rest)) => Cow::Owned(format!("{:04}{rest} BC", 1 - year)),
        None => Cow::Borrowed(s),
    }
}

fn push_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{f:?}");
    }
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

/// A Postgres array literal: `{1,NULL,"a b"}`, nested for more dimensions.
fn push_array_literal(out: &mut String, items: &[Value]) {
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => push_array_literal(out, inner),
            Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Value::UInt(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Float(f) => push_float(out, *f),
            other => {
                let mut text = String::new();
                match other {
                    Value::Bytes(bytes) => {
                        text.push_str("\\x");
                        for b in bytes {
                            let _ = write!(text, "{b:02x}");
                        }
                    }
                    Value::Json(raw) => text.push_str(raw.get()),
                    Value::Date(s) | Value::Timestamp(s) | Value::TimestampTz(s) => {
                        text.push_str(&postgres_years(s))
                    }
                    Value::Decimal(s) | Value::Text(s) | Value::Time(s) | Value::Interval(s) => {
                        text.push_str(s)
                    }
                    _ => {}
                }
                out.push('"');
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &Value) -> String {
        let mut s = String::new();
        push_value(&mut s, v);
        s
    }

    #[test]
    fn values_are_escaped_for_copy() {
        assert_eq!(text(&Value::Null), "\\N");
        assert_eq!(text(&Value::Text("a\tb\\c\nd".into())), "a\\tb\\\\c\\nd");
        assert_eq!(text(&Value::Bytes(vec![0, 255])), "\\\\x00ff");
        assert_eq!(text(&Value::Float(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(text(&Value::Float(1.5)), "1.5");
        assert_eq!(
            text(&Value::Array(vec![
                Value::Text("a \"b\"".into()),
                Value::Null,
                Value::Int(3)
            ])),
            "{\"a \\\\\"b\\\\\"\",NULL,3}"
        );
        assert_eq!(
            text(&Value::Array(vec![
                Value::Array(vec![Value::Int(1)]),
                Value::Array(vec![Value::Int(2)])
            ])),
            "{{1},{2}}"
        );
    }

    #[test]
    fn expanded_years_are_written_as_postgres_reads_them() {
        let date = |s: &str| text(&Value::Date(s.into()));
        assert_eq!(date("2026-11-26"), "2026-11-26");
        assert_eq!(date("-infinity"), "-infinity");
        assert_eq!(date("+021016-11-04"), "21016-11-04");
        assert_eq!(date("+000000-12-31"), "0001-12-31 BC");
        assert_eq!(date("-004712-12-31"), "4713-12-31 BC");
        assert_eq!(
            text(&Value::Timestamp("-004712-12-31T23:59:59.999999".into())),
            "4713-12-31T23:59:59.999999 BC"
        );
        assert_eq!(
            text(&Value::TimestampTz("+021016-11-04T13:51:30.123456Z".into())),
            "21016-11-04T13:51:30.123456Z"
        );
        assert_eq!(
            text(&Value::Array(vec![Value::Date("-000043-03-15".into())])),
            "{\"0044-03-15 BC\"}"
        );
    }
}
