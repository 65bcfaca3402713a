//! Postgres array output (`{1,2,NULL}`, nested, quoted and escaped elements, dimension
//! prefixes) parsed into [`Value::Array`], each element decoded with the element's kind by
//! [`super`]'s decoder.

use std::borrow::Cow;

use cdc_core::Value;

use super::{decode_cow, ValueKind};

/// Deeper than Postgres allows (MAXDIM is 6) with room to spare; bounds the recursion on garbage.
const MAX_ARRAY_DEPTH: usize = 32;

/// A hand parser for array output: `{1,2,NULL}`, `{{1,2},{3,4}}`, `{"a b","c\"d"}`, optionally
/// behind a dimension prefix (`[0:1]={1,2}`) when lower bounds are not 1.
pub(super) struct ArrayParser<'a, 'k> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    element: &'k ValueKind,
    delimiter: u8,
}

impl<'a, 'k> ArrayParser<'a, 'k> {
    /// The array, or None if the text is not well-formed array output.
    pub(super) fn parse(element: &'k ValueKind, delimiter: u8, text: &'a str) -> Option<Value> {
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
