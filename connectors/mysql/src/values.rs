//! Binlog values → the spec's lossless [`Value`]s.
//!
//! `mysql_common` decodes the binlog's binary forms but knows only what the table map says: it
//! cannot tell an unsigned column without `binlog_row_metadata=FULL`, an ENUM arrives as its
//! index, a SET as a bitmask, a TIMESTAMP as epoch seconds text. The column's [`ValueKind`] (from
//! the schema history) supplies the rest.
//!
//! Zero dates (`0000-00-00`, a DATETIME or TIMESTAMP of zero) are MySQL's "no date": they become
//! `null`, as Debezium does; a date with a zero month or day only is kept as text.

use base64::Engine as _;
use cdc_core::time::{format_utc_micros_short, push_digits, push_year};
use cdc_core::Value;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value as My;

use crate::schema::{Charset, ValueKind};

/// Decodes one column's value; `Err` names what is wrong.
pub fn decode(kind: &ValueKind, value: BinlogValue<'_>) -> Result<Value, String> {
    let value = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(doc) => {
            let json = serde_json::Value::try_from(doc)
                .map_err(|e| format!("undecodable binary JSON: {e}"))?;
            // Straight into raw JSON text: no second parse.
            return serde_json::value::to_raw_value(&json)
                .map(Value::Json)
                .map_err(|e| format!("binary JSON not representable as JSON: {e}"));
        }
        BinlogValue::JsonDiff(_) => return Err(
            "a partial JSON update (binlog_row_value_options=PARTIAL_JSON) carries no full value; \
                 set binlog_row_value_options='' on the server"
                .into(),
        ),
    };
    if value == My::NULL {
        return Ok(Value::Null);
    }
    match (kind, value) {
        (ValueKind::SignedInt(bits), My::Int(n)) => Ok(Value::Int(sign_extend(n as u64, *bits))),
        (ValueKind::SignedInt(bits), My::UInt(n)) => Ok(Value::Int(sign_extend(n, *bits))),
        (ValueKind::UnsignedInt(bits), My::Int(n)) => {
            let mask = if *bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            Ok(Value::UInt(n as u64 & mask))
        }
        (ValueKind::UnsignedInt(_), My::UInt(n)) => Ok(Value::UInt(n)),
        // An f32 widened bit for bit would print as 0.10000000149011612: go through its text.
        (ValueKind::Float | ValueKind::Double, My::Float(f)) => {
            Ok(Value::Float(f.to_string().parse().unwrap_or(f64::from(f))))
        }
        (ValueKind::Float | ValueKind::Double, My::Double(d)) => Ok(Value::Float(d)),
        (ValueKind::Decimal, My::Bytes(b)) => Ok(Value::Decimal(utf8(b)?)),
        (ValueKind::Text(charset), My::Bytes(b)) => text(*charset, b).map(Value::Text),
        (ValueKind::Bytes | ValueKind::Bit, My::Bytes(b)) => Ok(Value::Bytes(b)),
        (ValueKind::FixedBinary(len), My::Bytes(mut b)) => {
            if b.len() < *len {
                b.resize(*len, 0);
            }
            Ok(Value::Bytes(b))
        }
        (ValueKind::Geometry, My::Bytes(b)) => Ok(Value::Bytes(b.get(4..).unwrap_or(&[]).to_vec())),
        (ValueKind::Json, My::Bytes(b)) => json_value(utf8(b)?),
        (ValueKind::Enum(members), My::Int(i)) => Ok(Value::Text(match i {
            // Index 0 is the "invalid value" MySQL stores as ''.
            0 => String::new(),
            i => members.get(i as usize - 1).cloned().ok_or_else(|| {
                format!(
                    "ENUM index {i} but the column has {} members",
                    members.len()
                )
            })?,
        })),
        (ValueKind::Set(members), My::Bytes(mask)) => {
            let mut out = Vec::new();
            for (i, member) in members.iter().enumerate() {
                if mask
                    .get(i / 8)
                    .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
                {
                    out.push(Value::Text(member.clone()));
                }
            }
            Ok(Value::Array(out))
        }
        // mysql_common gives 1900 + the stored byte; the byte 0 is the year 0000.
        (ValueKind::Year, My::Bytes(b)) => match utf8(b)?.as_str() {
            "1900" => Ok(Value::Int(0)),
            y => y
                .parse()
                .map(Value::Int)
                .map_err(|_| format!("YEAR value {y:?}")),
        },
        (ValueKind::Year, My::Int(n)) => Ok(Value::Int(n)),
        (ValueKind::Date, My::Date(0, 0, 0, ..)) => Ok(Value::Null),
        (ValueKind::Date, My::Date(y, m, d, ..)) => {
            let mut date = String::with_capacity(10);
            push_date(&mut date, y, m, d);
            Ok(Value::Date(date))
        }
        (ValueKind::DateTime, My::Date(0, 0, 0, 0, 0, 0, 0)) => Ok(Value::Null),
        (ValueKind::DateTime, My::Date(y, mo, d, h, mi, s, us)) => {
            let mut text = String::with_capacity(26);
            push_date(&mut text, y, mo, d);
            text.push('T');
            push_digits(&mut text, i64::from(h), 2);
            text.push(':');
            push_digits(&mut text, i64::from(mi), 2);
            text.push(':');
            push_digits(&mut text, i64::from(s), 2);
            if us != 0 {
                text.push('.');
                push_digits(&mut text, i64::from(us % 1_000_000), 6);
            }
            Ok(Value::Timestamp(text))
        }
        (ValueKind::Time, My::Time(negative, days, h, m, s, us)) => Ok(Value::Time(format!(
            "{}{:02}:{m:02}:{s:02}{}",
            if negative { "-" } else { "" },
            days * 24 + u32::from(h),
            fraction(us)
        ))),
        (ValueKind::Timestamp, My::Bytes(b)) => timestamp(&utf8(b)?),
        (ValueKind::Timestamp, My::Int(secs)) => timestamp(&secs.to_string()),
        (kind, value) => Err(format!(
            "a {value:?} in the binlog for a column of kind {kind:?}"
        )),
    }
}

/// The low `bits` of `raw` as a two's complement number.
fn sign_extend(raw: u64, bits: u32) -> i64 {
    if bits >= 64 {
        return raw as i64;
    }
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

/// `YYYY-MM-DD`; MySQL's year 0000, the year before 0001 (the spec's astronomical numbering), is
/// outside 0001–9999, so it takes the expanded form: `+000000-01-01`.
fn push_date(out: &mut String, y: u16, m: u8, d: u8) {
    push_year(out, i64::from(y));
    out.push('-');
    push_digits(out, i64::from(m % 100), 2);
    out.push('-');
    push_digits(out, i64::from(d % 100), 2);
}

fn fraction(micros: u32) -> String {
    if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    }
}

/// `secs[.micros]` since the epoch, UTC; 0 is the zero TIMESTAMP.
fn timestamp(text: &str) -> Result<Value, String> {
    let (secs, micros) = text.split_once('.').unwrap_or((text, "0"));
    let secs: i64 = secs
        .parse()
        .map_err(|_| format!("TIMESTAMP value {text:?}"))?;
    // The fraction's digits, scaled to microseconds ("5" is 500000).
    let digits = micros.get(..micros.len().min(6)).unwrap_or("0");
    let micros: i64 = digits
        .parse::<i64>()
        .map_err(|_| format!("TIMESTAMP value {text:?}"))?
        * 10i64.pow(6 - digits.len() as u32);
    if secs == 0 && micros == 0 {
        return Ok(Value::Null);
    }
    // Whole seconds print without a fraction, like the other time types.
    Ok(Value::TimestampTz(format_utc_micros_short(
        secs * 1_000_000 + micros,
    )))
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
}

/// MariaDB's JSON is text as written (line breaks kept); [`Value::json`] validates it and the
/// record carries it on one line.
fn json_value(text: String) -> Result<Value, String> {
    Value::json(text).map_err(|e| format!("a JSON column holds text that is not JSON ({e})"))
}

fn text(charset: Charset, bytes: Vec<u8>) -> Result<String, String> {
    match charset {
        Charset::Latin1 => Ok(bytes.iter().map(|&b| cp1252(b)).collect()),
        Charset::Utf8 | Charset::Other => String::from_utf8(bytes).map_err(|e| {
            format!(
                "text that is not UTF-8 ({e}); columns in character sets other than utf8, utf8mb4, \
                 ascii and latin1 are not supported: base64 of the bytes is {}",
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes())
            )
        }),
    }
}

/// MySQL's latin1 is Windows-1252: ISO-8859-1 except for 0x80..0x9F.
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: My) -> BinlogValue<'static> {
        BinlogValue::Value(value)
    }

    #[test]
    fn unsigned_integers_decoded_as_signed_are_put_right() {
        assert_eq!(
            decode(&ValueKind::UnsignedInt(64), v(My::Int(-1))).unwrap(),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            decode(&ValueKind::UnsignedInt(8), v(My::Int(-1))).unwrap(),
            Value::UInt(255)
        );
        assert_eq!(
            decode(&ValueKind::UnsignedInt(24), v(My::Int(-2))).unwrap(),
            Value::UInt(16_777_214)
        );
        assert_eq!(
            decode(&ValueKind::SignedInt(64), v(My::Int(-5))).unwrap(),
            Value::Int(-5)
        );
        assert_eq!(
            decode(&ValueKind::SignedInt(24), v(My::Int(8_388_608))).unwrap(),
            Value::Int(-8_388_608)
        );
    }

    #[test]
    fn temporal_values_in_the_spec_forms() {
        assert_eq!(
            decode(&ValueKind::Time, v(My::Time(true, 1, 2, 3, 4, 500))).unwrap(),
            Value::Time("-26:03:04.000500".into())
        );
        assert_eq!(
            decode(
                &ValueKind::DateTime,
                v(My::Date(2026, 11, 26, 13, 45, 0, 123456))
            )
            .unwrap(),
            Value::Timestamp("2026-11-26T13:45:00.123456".into())
        );
        assert_eq!(
            decode(&ValueKind::DateTime, v(My::Date(0, 0, 0, 0, 0, 0, 0))).unwrap(),
            Value::Null
        );
        assert_eq!(
            decode(
                &ValueKind::Timestamp,
                v(My::Bytes(b"1764164700.5".to_vec()))
            )
            .unwrap(),
            Value::TimestampTz("2025-11-26T13:45:00.500000Z".into())
        );
        assert_eq!(
            decode(&ValueKind::Timestamp, v(My::Bytes(b"1764164700".to_vec()))).unwrap(),
            Value::TimestampTz("2025-11-26T13:45:00Z".into())
        );
        assert_eq!(
            decode(&ValueKind::Year, v(My::Bytes(b"1900".to_vec()))).unwrap(),
            Value::Int(0)
        );
    }

    /// MySQL's year 0000 is outside 0001–9999: the spec's expanded form (1 BC is `+000000`).
    /// Only the all-zero date is "no date".
    #[test]
    fn the_year_0000_takes_the_expanded_form() {
        assert_eq!(
            decode(&ValueKind::Date, v(My::Date(0, 1, 1, 0, 0, 0, 0))).unwrap(),
            Value::Date("+000000-01-01".into())
        );
        assert_eq!(
            decode(&ValueKind::Date, v(My::Date(9999, 12, 31, 0, 0, 0, 0))).unwrap(),
            Value::Date("9999-12-31".into())
        );
        assert_eq!(
            decode(&ValueKind::Date, v(My::Date(0, 0, 0, 0, 0, 0, 0))).unwrap(),
            Value::Null
        );
        assert_eq!(
            decode(&ValueKind::DateTime, v(My::Date(0, 1, 1, 12, 0, 0, 0))).unwrap(),
            Value::Timestamp("+000000-01-01T12:00:00".into())
        );
    }

    /// MariaDB's JSON is text as written: line breaks between tokens (and, should the text hold
    /// them, raw control characters inside strings, which `json_valid()` rejects).
    #[test]
    fn json_text_is_taken_with_its_line_breaks() {
        let doc = decode(
            &ValueKind::Json,
            v(My::Bytes(b"{\"a\" :\n [1, \"x\ty\"]}".to_vec())),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            "{\"a\" :  [1, \"x\\ty\"]}"
        );
        assert!(decode(&ValueKind::Json, v(My::Bytes(b"{oops".to_vec()))).is_err());
    }

    #[test]
    fn enums_sets_latin1_and_binary() {
        let members = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(
            decode(&ValueKind::Enum(members.clone()), v(My::Int(2))).unwrap(),
            Value::Text("b".into())
        );
        assert_eq!(
            decode(&ValueKind::Set(members), v(My::Bytes(vec![0b101]))).unwrap(),
            Value::Array(vec![Value::Text("a".into()), Value::Text("c".into())])
        );
        assert_eq!(
            decode(
                &ValueKind::Text(Charset::Latin1),
                v(My::Bytes(vec![0x80, 0xE9]))
            )
            .unwrap(),
            Value::Text("€é".into())
        );
        assert_eq!(
            decode(&ValueKind::FixedBinary(4), v(My::Bytes(vec![1, 2]))).unwrap(),
            Value::Bytes(vec![1, 2, 0, 0])
        );
        assert!(decode(&ValueKind::Text(Charset::Utf8), v(My::Bytes(vec![0xff]))).is_err());
        assert_eq!(
            decode(&ValueKind::Float, v(My::Float(0.1))).unwrap(),
            Value::Float(0.1)
        );
    }
}
