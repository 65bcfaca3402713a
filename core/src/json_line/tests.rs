use serde_json::{json, Map, Value as Json};

use super::*;
use crate::event::{ChangeEvent, Op, Row, SourceKind, SourceMeta};
use crate::position::{Lsn, Position};
use crate::value::Value;

#[test]
fn line_breaks_between_tokens_become_spaces() {
    assert_eq!(one_line("{\"a\" :\n [1, 2]}"), "{\"a\" :  [1, 2]}");
    assert_eq!(one_line("[1,\r\n\t2]"), "[1,   2]");
    assert_eq!(one_line("[1\u{1}]"), "[1 ]");
}

#[test]
fn control_characters_inside_strings_are_escaped() {
    assert_eq!(one_line("\"a\tb\n\u{1f}\""), "\"a\\tb\\n\\u001f\"");
    // An escaped quote does not end the string; the break after the string is whitespace.
    assert_eq!(
        one_line("[\"x\\\"\n\",\n\"\\\\\"\n]"),
        "[\"x\\\"\\n\", \"\\\\\" ]"
    );
    // A backslash before a raw control character stays invalid.
    assert_eq!(one_line("\"a\\\nb\""), "\"a\\ b\"");
}

#[test]
fn text_without_control_characters_is_not_copied() {
    assert!(matches!(one_line("{\"a\": \"é 😀\"}"), Cow::Borrowed(_)));
    for len in 0..200 {
        let mut text = "x".repeat(len);
        assert!(!has_control(text.as_bytes()));
        if len > 0 {
            text.replace_range(len - 1..len, "\u{1f}");
            assert!(has_control(text.as_bytes()), "{len}");
        }
    }
}

#[test]
fn a_json_column_with_control_characters_in_strings_is_json() {
    // Postgres and MariaDB reject such text; should a source hold it, the escaped form is the
    // document meant.
    assert_eq!(
        serde_json::to_string(&Value::json_from_str("{\"a\":\"x\ty\"}")).unwrap(),
        "{\"a\":\"x\\ty\"}"
    );
    assert!(Value::json("[\"\n\"]".into()).is_ok());
    assert!(Value::json("[\"\\\n\"]".into()).is_err());
}

/// splitmix64: a small seeded generator, so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Characters a generated string is made of: every control character, the two that JSON escapes,
/// and characters of one to four UTF-8 bytes (U+2028 is a line break to JavaScript).
fn random_char(rng: &mut Rng) -> char {
    match rng.below(4) {
        0 => char::from(rng.below(0x20) as u8),
        1 => *rng.pick(&['"', '\\', '/', 'é', '€', '😀', '\u{2028}', '\u{7f}']),
        _ => char::from(b' ' + rng.below(95) as u8),
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Json {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Json::Null,
        1 => Json::Bool(rng.below(2) == 0),
        2 => json!(rng.next() as i64 >> rng.below(64)),
        // Few enough digits that serde_json's parser (without `float_roundtrip`) reads the
        // number back exactly.
        3 => json!((rng.next() as i64 >> 44) as f64 / 1024.0),
        4 => Json::String(random_string(rng)),
        5 => Json::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.below(4) {
                map.insert(random_string(rng), random_value(rng, depth - 1));
            }
            Json::Object(map)
        }
    }
}

fn random_string(rng: &mut Rng) -> String {
    (0..rng.below(8)).map(|_| random_char(rng)).collect()
}

/// Whitespace between tokens: JSON's own, and control characters no parser takes there.
fn random_gap(rng: &mut Rng, out: &mut String) {
    for _ in 0..rng.below(3) {
        const GAPS: [&str; 8] = [
            " ", "\n", "\r\n", "\t", "\u{1}", "\u{b}", "\u{1f}", "\n\n  ",
        ];
        out.push_str(rng.pick::<&str>(&GAPS));
    }
}

/// `value` as JSON text a source could hold: gaps between all tokens, and each control character
/// of a string either raw (as no valid JSON has it) or escaped.
fn render(rng: &mut Rng, value: &Json, out: &mut String) {
    random_gap(rng, out);
    match value {
        Json::String(s) => render_string(rng, s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    random_gap(rng, out);
                    out.push(',');
                }
                render(rng, item, out);
                random_gap(rng, out);
            }
            random_gap(rng, out);
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                random_gap(rng, out);
                render_string(rng, key, out);
                random_gap(rng, out);
                out.push(':');
                render(rng, item, out);
                random_gap(rng, out);
            }
            random_gap(rng, out);
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
    random_gap(rng, out);
}

fn render_string(rng: &mut Rng, s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 && rng.below(2) == 0 => out.push(c),
            c if (c as u32) < 0x20 || rng.below(8) == 0 => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn record_with(doc: Value) -> ChangeEvent {
    ChangeEvent {
        op: Op::Insert,
        source: SourceMeta {
            kind: SourceKind::Postgres,
            db: "db".into(),
            schema: "public".into(),
            table: "docs".into(),
            position: Position::Postgres { lsn: Lsn(42) },
            tx_id: Some(7),
            commit_ts: None,
            seq: 0,
            snapshot: false,
        },
        key: Some(Row(vec![("id".into(), Value::Int(1))])),
        before: None,
        after: Some(Row(vec![("id".into(), Value::Int(1)), ("doc".into(), doc)])),
        unchanged: vec![],
        table_schema: None,
    }
}

fn one_record_line(bytes: &[u8], what: &str, text: &str) -> Json {
    assert!(
        !bytes.iter().any(|&b| b < 0x20),
        "{what} has a raw control character for {text:?}: {}",
        String::from_utf8_lossy(bytes)
    );
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{what} for {text:?}: {e}"))
}

/// The property of the JSON Lines sink: whatever JSON text a source holds (line breaks and
/// control characters between tokens, raw control characters in strings), its record is one
/// line, and that line parses back to the document's value. The same for serde's form of the
/// record and for Debezium's envelope (the document's text in a string).
#[test]
fn every_json_text_becomes_one_line_with_the_same_value() {
    let mut rng = Rng(0x5EED_0019);
    for _ in 0..5000 {
        let value = random_value(&mut rng, 4);
        let mut text = String::new();
        render(&mut rng, &value, &mut text);
        let doc = Value::json_from_str(&text);
        assert!(matches!(doc, Value::Json(_)), "not taken as JSON: {text:?}");
        let event = record_with(doc);

        let mut line = Vec::new();
        crate::json::write_event(&event, &mut line);
        let record = one_record_line(&line, "the JSON lines record", &text);
        assert_eq!(record["after"]["doc"], value, "{text:?}");

        let serde = serde_json::to_vec(&event).expect("serializable");
        assert_eq!(serde, line, "serde's record differs for {text:?}");

        let mut debezium = Vec::new();
        crate::debezium::write_value_message(&event, "shop", 0, None, &mut debezium);
        let message = one_record_line(&debezium, "the Debezium message", &text);
        let inner = message["after"]["doc"].as_str().expect("a string");
        assert!(!has_control(inner.as_bytes()), "{inner:?}");
        let inner: Json = serde_json::from_str(inner).expect("the string is JSON");
        assert_eq!(inner, value, "{text:?}");
    }
}
