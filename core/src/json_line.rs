//! JSON text on one line: the form a JSON column's document takes in every record.
//!
//! Postgres' `json` keeps a document exactly as written, line breaks and tabs included
//! (`'{"a" :\n [1, 2]}'`), and MariaDB's JSON is text too. Written into a record as they are,
//! such documents would split a JSON Lines record over two lines. In valid JSON a raw control
//! character can only be insignificant whitespace between tokens, so replacing it by a space
//! keeps the value; inside a string it is not allowed at all, and its escape (`\n`, `\u001f`) is
//! the only spelling of what the source meant.
//!
//! ```text
//!  source text ──▶ one_line ──▶ record JSON (jsonl, Kafka, NATS, Debezium's string)
//! ```

use std::borrow::Cow;

/// `text` with every raw control character (below U+0020) replaced: by a space between tokens,
/// by its escape inside a string. Text without any is returned as it is, uncopied.
///
/// A space rather than nothing between tokens: dropping it could join two tokens of invalid
/// text (`[1\n2]`) into valid JSON of another value (`[12]`).
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !has_control(text.as_bytes()) {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if b < 0x20 {
            if in_string && !escaped {
                push_escape(b, &mut out);
            } else if in_string {
                // A backslash before a control character is invalid JSON whatever the control
                // character becomes; a space keeps it invalid (an escape would turn it into a
                // valid string of other characters).
                escaped = false;
                out.push(b' ');
            } else {
                out.push(b' ');
            }
            continue;
        }
        out.push(b);
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
    }
    // Only ASCII bytes were replaced or added, so the text is still UTF-8.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Whether `bytes` hold a control character. A branch-free fold per block, which the compiler
/// vectorizes: every JSON value of every record goes through here.
pub fn has_control(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .any(|block| block.iter().fold(false, |found, &b| found | (b < 0x20)))
}

/// A control character's JSON escape, as serde_json writes it.
fn push_escape(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
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
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
    }
}

#[cfg(test)]
mod tests;
