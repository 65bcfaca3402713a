//! The change record's JSON written by hand, for the sinks that write every record (JSON lines).
//!
//! Byte for byte the record's serde form ([`ChangeEvent`]'s `Serialize`, tested below), without
//! serde's per-key escaping and map state: the record's own keys are constants here, so only the
//! data (names, text values) goes through the escaper. Measured on a snapshot into JSON lines,
//! serde's writer was about a fifth of the agent's CPU.

use base64::Engine;

use crate::event::{ChangeEvent, Row, SourceMeta};
use crate::json_line::one_line;
use crate::position::Position;
use crate::value::Value;

/// Appends `event`'s JSON record (no newline) to `out`.
pub fn write_event(event: &ChangeEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(event.op.as_str().as_bytes());
    out.extend_from_slice(b"\",\"source\":");
    write_source(&event.source, out);
    out.extend_from_slice(b",\"key\":");
    write_optional_row(event.key.as_ref(), out);
    out.extend_from_slice(b",\"before\":");
    write_optional_row(event.before.as_ref(), out);
    out.extend_from_slice(b",\"after\":");
    write_optional_row(event.after.as_ref(), out);
    out.extend_from_slice(b",\"unchanged\":[");
    for (i, name) in event.unchanged.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.json());
    }
    out.extend_from_slice(b"]}");
}

fn write_source(source: &SourceMeta, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(source.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"db\":");
    out.extend_from_slice(source.db.json());
    out.extend_from_slice(b",\"schema\":");
    out.extend_from_slice(source.schema.json());
    out.extend_from_slice(b",\"table\":");
    out.extend_from_slice(source.table.json());
    match &source.position {
        Position::Postgres { lsn } => {
            // An LSN's text is hex digits and a slash: nothing to escape. By hand: `write!` was
            // a twentieth of a snapshot's CPU.
            out.extend_from_slice(b",\"lsn\":\"");
            write_hex(lsn.0 >> 32, out);
            out.push(b'/');
            write_hex(lsn.0 & 0xFFFF_FFFF, out);
            out.push(b'"');
        }
        Position::Mysql { file, pos, gtid } => {
            out.extend_from_slice(b",\"file\":");
            write_str(file, out);
            out.extend_from_slice(b",\"pos\":");
            write_u64(*pos, out);
            if let Some(gtid) = gtid {
                out.extend_from_slice(b",\"gtid\":");
                write_str(gtid, out);
            }
        }
    }
    if let Some(tx_id) = source.tx_id {
        out.extend_from_slice(b",\"tx_id\":");
        write_u64(tx_id, out);
    }
    out.extend_from_slice(b",\"commit_ts\":");
    match &source.commit_ts {
        Some(ts) => write_str(ts, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"seq\":");
    write_u64(source.seq, out);
    if source.snapshot {
        out.extend_from_slice(b",\"snapshot\":true");
    }
    out.push(b'}');
}

/// Upper-case hex without leading zeros, as `{:X}`.
fn write_hex(n: u64, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xF) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_optional_row(row: Option<&Row>, out: &mut Vec<u8>) {
    write_row_with(row, out, write_value);
}

/// A row as a JSON object (`null` for none), each value written by `value`: the record's form,
/// or another envelope's (Debezium's JSON columns).
pub fn write_row_with(row: Option<&Row>, out: &mut Vec<u8>, value: fn(&Value, &mut Vec<u8>)) {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'{');
    for (i, (name, v)) in row.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.json());
        out.push(b':');
        value(v, out);
    }
    out.push(b'}');
}

/// A value as [`Value`]'s `Serialize` writes it.
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::UInt(u) => write_u64(*u, out),
        Value::Float(_) => {
            // NaN, the infinities and ryu's shortest form: serde's own writer, so they cannot
            // drift apart (floats are rare next to the rest).
            let _ = serde_json::to_writer(&mut *out, value);
        }
        Value::Decimal(t)
        | Value::Text(t)
        | Value::Date(t)
        | Value::Time(t)
        | Value::Timestamp(t)
        | Value::TimestampTz(t)
        | Value::Interval(t) => write_str(t, out),
        // On one line: a `json` document may hold raw line breaks between its tokens.
        Value::Json(raw) => out.extend_from_slice(one_line(raw.get()).as_bytes()),
        Value::Bytes(b) => {
            // Base64's alphabet needs no escaping.
            out.push(b'"');
            let start = out.len();
            let encoded = base64::encoded_len(b.len(), true);
            out.resize(start + encoded.unwrap_or(0), 0);
            match base64::engine::general_purpose::STANDARD.encode_slice(b, &mut out[start..]) {
                Ok(n) => out.truncate(start + n),
                Err(_) => {
                    out.truncate(start);
                    out.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(b)
                            .as_bytes(),
                    );
                }
            }
            out.push(b'"');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
    }
}

fn write_u64(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Bytes that JSON strings escape (as serde_json does: controls, quote, backslash; nothing else).
const fn escape_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
}

static ESCAPE: [bool; 256] = escape_table();

/// A JSON string, escaped exactly as serde_json escapes it.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most text (names, values) holds nothing to escape: checked eight bytes at a time, then
    // copied in one piece.
    if needs_escape(bytes) {
        write_escaped(bytes, out);
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
}

fn needs_escape(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if word_needs_escape(u64::from_le_bytes(w)) {
            return true;
        }
    }
    // The tail byte by byte: padding it into a word took a `memcpy` call of variable length.
    words.remainder().iter().any(|&b| ESCAPE[b as usize])
}

fn write_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\\` (bit tricks
/// from "Bit Twiddling Hacks": a byte below 0x20, or equal to one of two values; bytes of 0x80 and
/// above never match).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote | backslash) & HIGH != 0
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::event::{Op, SourceKind};
    use crate::position::Lsn;

    fn source(position: Position) -> SourceMeta {
        SourceMeta {
            kind: SourceKind::Postgres,
            db: "db \"quoted\"".into(),
            schema: "public".into(),
            table: "t\u{1}ab\\le".into(),
            position,
            tx_id: None,
            commit_ts: None,
            seq: 7,
            snapshot: false,
        }
    }

    fn row(values: Vec<(&str, Value)>) -> Row {
        Row(values
            .into_iter()
            .map(|(n, v)| (crate::name::Name::from(n), v))
            .collect())
    }

    fn every_value() -> Row {
        row(vec![
            ("null", Value::Null),
            ("t", Value::Bool(true)),
            ("f", Value::Bool(false)),
            ("min", Value::Int(i64::MIN)),
            ("max", Value::UInt(u64::MAX)),
            ("float", Value::Float(1.5e-7)),
            ("whole float", Value::Float(3.0)),
            ("nan", Value::Float(f64::NAN)),
            ("inf", Value::Float(f64::NEG_INFINITY)),
            ("dec", Value::Decimal("-12.3400".into())),
            (
                "text",
                Value::Text("a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}é😀/".into()),
            ),
            ("json", Value::json_from_text("{\"a\": [1, \"x\"]}".into())),
            ("bytes", Value::Bytes(vec![0, 255, 10, 34, 92])),
            ("empty bytes", Value::Bytes(vec![])),
            ("date", Value::Date("2026-11-27".into())),
            ("time", Value::Time("-838:59:59".into())),
            ("ts", Value::Timestamp("2026-11-27T05:00:00.5".into())),
            ("tstz", Value::TimestampTz("2026-11-27T05:00:00Z".into())),
            ("interval", Value::Interval("P1DT2H".into())),
            (
                "array",
                Value::Array(vec![
                    Value::Int(1),
                    Value::Null,
                    Value::Array(vec![Value::Text("\"".into())]),
                ]),
            ),
            ("empty array", Value::Array(vec![])),
        ])
    }

    fn assert_same_as_serde(event: &ChangeEvent) {
        let mut ours = Vec::new();
        write_event(event, &mut ours);
        let serde = serde_json::to_vec(event).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(serde).unwrap()
        );
    }

    #[test]
    fn every_shape_of_record_is_written_as_serde_writes_it() {
        let insert = ChangeEvent {
            op: Op::Insert,
            source: source(Position::Postgres {
                lsn: Lsn(0x16_B374_D848),
            }),
            key: Some(row(vec![("id", Value::Int(1))])),
            before: None,
            after: Some(every_value()),
            unchanged: vec![],
            table_schema: None,
        };
        assert_same_as_serde(&insert);

        let mut update = insert.clone();
        update.op = Op::Update;
        update.before = Some(every_value());
        update.unchanged = vec!["big".into(), "quote\"d".into()];
        update.source.tx_id = Some(u64::MAX);
        update.source.commit_ts = Some("2026-11-27T05:00:00.123456Z".into());
        update.source.snapshot = true;
        assert_same_as_serde(&update);

        let mut mysql = update.clone();
        mysql.op = Op::Delete;
        mysql.after = None;
        mysql.source.kind = SourceKind::Mysql;
        mysql.source.position = Position::Mysql {
            file: "binlog.000001".into(),
            pos: 4,
            gtid: Some("0-1-42".into()),
        };
        assert_same_as_serde(&mysql);
        mysql.source.position = Position::Mysql {
            file: "bin\"log".into(),
            pos: u64::MAX,
            gtid: None,
        };
        assert_same_as_serde(&mysql);

        let truncate = ChangeEvent {
            op: Op::Truncate,
            key: None,
            before: None,
            after: None,
            unchanged: vec![],
            ..insert
        };
        assert_same_as_serde(&truncate);
    }

    #[test]
    fn every_byte_is_escaped_as_serde_escapes_it() {
        let all: String = (0u8..=0x7f).map(char::from).collect();
        let mut ours = Vec::new();
        write_str(&all, &mut ours);
        assert_eq!(ours, serde_json::to_vec(&all).unwrap());
    }

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for n in [0u64, 9, 0x10, 0xABC, 0xFFFF_FFFF, 0x1_0000_0000, u64::MAX] {
            let mut ours = Vec::new();
            write_hex(n, &mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), format!("{n:X}"));
        }
    }

    /// Every escape at every offset of strings long enough for the eight-byte scan, next to
    /// multi-byte characters.
    #[test]
    fn escapes_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for special in [
                    '"', '\\', '\n', '\u{1}', '\u{1f}', 'é', '€', ' ', '~', '\u{7f}',
                ] {
                    let text: String = (0..len)
                        .map(|i| {
                            if i == at {
                                special
                            } else {
                                (b'a' + (i % 26) as u8) as char
                            }
                        })
                        .collect();
                    let mut ours = Vec::new();
                    write_str(&text, &mut ours);
                    assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
                }
            }
        }
    }
}
