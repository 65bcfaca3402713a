//! Column values as MySQL statement parameters: what the apply statements bind.
//!
//! ```text
//!  cdc_core::Value ──to_param──▶ mysql_async::Value (bound to a `?`, never spliced into SQL)
//! ```
//!
//! The change record's text forms become what MySQL accepts: `2026-11-26T13:45:00.123456` →
//! `2026-11-26 13:45:00.123456`, a UTC `...Z` loses its `Z` (the column holds UTC), booleans are
//! 1/0, bytes go raw (no base64), JSON documents and arrays as JSON text. What MySQL cannot hold
//! (NaN and infinite floats or numerics, infinite or BC dates) is a poison error naming the
//! table and column: retrying would fail the same way, and only this change is at fault.

use std::borrow::Cow;

use cdc_core::{PipelineError, Value};
use mysql_async::Value as Param;

/// A value MySQL cannot store.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("{0} cannot be stored in MySQL (it has no NaN or infinite numbers)")]
    NotFinite(String),
    #[error("date/time `{0}` is outside what MySQL can store (years 0000-9999 only; no infinity)")]
    Temporal(String),
}

impl ValueError {
    /// The poison error for `table`.`column`: this change cannot be written.
    pub fn at(self, table: &str, column: &str) -> PipelineError {
        PipelineError::poison("data", format!("cannot write {table}.{column}: {self}"))
            .with_column(Some(column.to_string()))
            .with_hint(format!(
            "change the value in the source, or stop replicating {table}.{column} (exclude the table), then restart"
        ))
    }
}

/// The parameter for one column value.
pub fn to_param(value: &Value) -> Result<Param, ValueError> {
    Ok(match value {
        Value::Null => Param::NULL,
        Value::Bool(b) => Param::Int(i64::from(*b)),
        Value::Int(i) => Param::Int(*i),
        Value::UInt(u) => Param::UInt(*u),
        Value::Float(f) => {
            if !f.is_finite() {
                return Err(ValueError::NotFinite(float_name(*f).into()));
            }
            Param::Double(*f)
        }
        Value::Decimal(d) => {
            let numeric = d
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                && d.bytes().any(|c| c.is_ascii_digit());
            if !numeric {
                return Err(ValueError::NotFinite(d.clone()));
            }
            Param::Bytes(d.as_bytes().to_vec())
        }
        Value::Text(s) | Value::Interval(s) | Value::Time(s) => Param::Bytes(s.as_bytes().to_vec()),
        Value::Json(raw) => Param::Bytes(raw.get().as_bytes().to_vec()),
        Value::Bytes(b) => Param::Bytes(b.clone()),
        Value::Date(s) => Param::Bytes(date_text(s)?.as_bytes().to_vec()),
        Value::Timestamp(s) | Value::TimestampTz(s) => Param::Bytes(datetime_text(s)?.into_bytes()),
        Value::Array(_) => Param::Bytes(
            serde_json::to_string(value)
                .unwrap_or_else(|_| "null".into())
                .into_bytes(),
        ),
    })
}

fn float_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// A date MySQL accepts: `YYYY-MM-DD` with a four-digit year. MySQL's year 0000 arrives in the
/// spec's expanded form (`+000000-01-01`) and goes back as `0000-01-01`; every other expanded
/// year is out of MySQL's range.
fn date_text(s: &str) -> Result<Cow<'_, str>, ValueError> {
    if let Some(rest) = s.strip_prefix("+000000-") {
        let plain = format!("0000-{rest}");
        let valid = date_text(&plain).is_ok();
        return match valid {
            true => Ok(Cow::Owned(plain)),
            false => Err(ValueError::Temporal(s.to_string())),
        };
    }
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if ok {
        Ok(Cow::Borrowed(s))
    } else {
        Err(ValueError::Temporal(s.to_string()))
    }
}

/// A `DATETIME` literal from the spec's timestamp text: `T` → space, a UTC `Z` dropped.
pub fn datetime_text(s: &str) -> Result<String, ValueError> {
    let naive = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = naive
        .split_once('T')
        .ok_or_else(|| ValueError::Temporal(s.to_string()))?;
    let date = date_text(date).map_err(|_| ValueError::Temporal(s.to_string()))?;
    if time.is_empty()
        || !time
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b':' || c == b'.')
    {
        return Err(ValueError::Temporal(s.to_string()));
    }
    Ok(format!("{date} {time}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: Param) -> String {
        match p {
            Param::Bytes(b) => String::from_utf8(b).unwrap(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn values_become_what_mysql_accepts() {
        assert_eq!(to_param(&Value::Null).unwrap(), Param::NULL);
        assert_eq!(to_param(&Value::Bool(true)).unwrap(), Param::Int(1));
        assert_eq!(to_param(&Value::Bool(false)).unwrap(), Param::Int(0));
        assert_eq!(
            to_param(&Value::UInt(u64::MAX)).unwrap(),
            Param::UInt(u64::MAX)
        );
        assert_eq!(to_param(&Value::Float(1.5)).unwrap(), Param::Double(1.5));
        assert_eq!(
            text(to_param(&Value::Decimal("-129.90".into())).unwrap()),
            "-129.90"
        );
        assert_eq!(
            text(to_param(&Value::Timestamp("2026-11-26T13:45:00.123456".into())).unwrap()),
            "2026-11-26 13:45:00.123456"
        );
        assert_eq!(
            text(to_param(&Value::TimestampTz("2026-11-26T12:45:00Z".into())).unwrap()),
            "2026-11-26 12:45:00"
        );
        assert_eq!(
            text(to_param(&Value::Date("2026-11-26".into())).unwrap()),
            "2026-11-26"
        );
        assert_eq!(
            text(to_param(&Value::Time("13:45:00.5".into())).unwrap()),
            "13:45:00.5"
        );
        assert_eq!(
            to_param(&Value::Bytes(vec![0, 255, 10])).unwrap(),
            Param::Bytes(vec![0, 255, 10]),
            "bytes go raw, not base64"
        );
        assert_eq!(
            text(to_param(&Value::json_from_text("{\"a\": [1, 2]}".into())).unwrap()),
            "{\"a\": [1, 2]}"
        );
        assert_eq!(
            text(
                to_param(&Value::Array(vec![
                    Value::Text("a\"b".into()),
                    Value::Null,
                    Value::Int(3)
                ]))
                .unwrap()
            ),
            "[\"a\\\"b\",null,3]"
        );
        assert_eq!(
            text(to_param(&Value::Text("it's \\ \u{1F600}".into())).unwrap()),
            "it's \\ \u{1F600}"
        );
    }

    #[test]
    fn what_mysql_cannot_hold_is_a_definite_error_naming_the_column() {
        for v in [
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Decimal("NaN".into()),
            Value::Decimal("Infinity".into()),
            Value::Decimal("-Infinity".into()),
            Value::Date("infinity".into()),
            Value::Date("0044-03-15 BC".into()),
            Value::Timestamp("-infinity".into()),
            Value::TimestampTz("10000-01-01T00:00:00Z".into()),
        ] {
            assert!(to_param(&v).is_err(), "{v:?}");
        }
        // MySQL's own year 0000 goes back as it came.
        assert_eq!(
            text(to_param(&Value::Date("+000000-01-01".into())).unwrap()),
            "0000-01-01"
        );
        assert_eq!(
            text(to_param(&Value::Timestamp("+000000-01-01T12:00:00".into())).unwrap()),
            "0000-01-01 12:00:00"
        );
        // Other expanded years are refused with the value named, never shortened.
        for (v, text) in [
            (Value::Date("-004712-12-31".into()), "-004712-12-31"),
            (
                Value::Timestamp("+021016-11-04T13:51:30.123456".into()),
                "+021016-11-04T13:51:30.123456",
            ),
            (
                Value::TimestampTz("-004712-12-31T23:59:59.999999Z".into()),
                "-004712-12-31T23:59:59.999999Z",
            ),
        ] {
            let err = to_param(&v).unwrap_err().at("db.t", "d").to_string();
            assert!(err.contains(text) && err.contains("db.t.d"), "{err}");
        }
        let err = to_param(&Value::Float(f64::NAN))
            .unwrap_err()
            .at("db.t", "x");
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains("db.t.x") && err.to_string().contains("NaN"),
            "{err}"
        );
        assert!(err.hint.is_some());
    }
}
