//! Backend messages: framing (taking complete tagged messages off the connection's read buffer,
//! cancel-safely) and parsing the bodies the connection needs (errors and notices, row
//! descriptions, data rows). `postgres_protocol`'s backend parser is not used because it does not
//! know CopyBothResponse (`'W'`).

use std::io;

use bytes::{Buf, Bytes};
use tokio::io::AsyncReadExt;

use super::error::protocol;
use super::{Connection, ServerError, WireError, MIN_READ_SPACE, READ_RESERVE};

/// Bounds-checked reader over a message body: a malformed message is an error, not a panic.
#[derive(Clone)]
pub(super) struct BodyReader<'a> {
    buf: &'a [u8],
}

impl<'a> BodyReader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        BodyReader { buf }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(protocol("truncated backend message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string, without the NUL.
    pub(super) fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| protocol("unterminated string in backend message"))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// ErrorResponse and NoticeResponse share this layout: (field type byte, string)*, then 0.
pub(super) fn parse_error_fields(body: &[u8]) -> Result<ServerError, WireError> {
    let mut r = BodyReader::new(body);
    let mut severity_localized = None;
    let mut err = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    loop {
        let field = r.u8()?;
        if field == 0 {
            break;
        }
        // Lossy: errors raised before client_encoding applies may be in the server encoding,
        // and a garbled character beats losing the error.
        let value = String::from_utf8_lossy(r.cstr()?).into_owned();
        match field {
            b'V' => err.severity = value,
            b'S' => severity_localized = Some(value),
            b'C' => err.code = value,
            b'M' => err.message = value,
            b'D' => err.detail = Some(value),
            b'H' => err.hint = Some(value),
            _ => {}
        }
    }
    if err.severity.is_empty() {
        err.severity = severity_localized.unwrap_or_else(|| "ERROR".into());
    }
    Ok(err)
}

pub(super) fn parse_row_description(body: &[u8]) -> Result<Vec<String>, WireError> {
    let mut r = BodyReader::new(body);
    let n = r.i16()?;
    let mut columns = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
        // table oid, attnum, type oid, typlen, typmod, format: not needed for text results.
        r.take(4 + 2 + 4 + 2 + 4 + 2)?;
        columns.push(name);
    }
    Ok(columns)
}

/// The fields of one DataRow, read in order straight from the message body: a caller that
/// decodes each field at once needs no owned copy of the row.
#[derive(Clone)]
pub struct RowFields<'a> {
    reader: BodyReader<'a>,
    left: usize,
    index: usize,
    columns: &'a [String],
    /// The whole message as text, when it is valid UTF-8 (no NULL and no length byte of 0x80 or
    /// more): a field is then a slice of it, with no check of its own.
    text: Option<&'a str>,
    body_len: usize,
}

impl<'a> RowFields<'a> {
    pub(super) fn parse(body: &'a [u8], columns: &'a [String]) -> Result<Self, WireError> {
        let mut reader = BodyReader::new(body);
        let n = reader.i16()?;
        Ok(RowFields {
            reader,
            left: n.max(0) as usize,
            index: 0,
            columns,
            // One pass over the row instead of one call per field: field by field, the
            // validation of short values cost more than decoding some of them.
            text: std::str::from_utf8(body).ok(),
            body_len: body.len(),
        })
    }

    /// The next field as text (`Some(None)` for NULL); `None` past the last one.
    pub fn next_field(&mut self) -> Result<Option<Option<&'a str>>, WireError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let index = self.index;
        self.index += 1;
        let len = self.reader.i32()?;
        if len < 0 {
            return Ok(Some(None));
        }
        let start = self.body_len - self.reader.buf.len();
        let value = self.reader.take(len as usize)?;
        // A slice of valid text is valid if it starts and ends on character boundaries
        // (`str::get` checks them).
        if let Some(text) = self.text.and_then(|t| t.get(start..start + value.len())) {
            return Ok(Some(Some(text)));
        }
        let value = std::str::from_utf8(value).map_err(|_| {
            let column = self.columns.get(index).map_or("?", String::as_str);
            protocol(format!("value of column {column:?} is not valid UTF-8"))
        })?;
        Ok(Some(Some(value)))
    }

    /// The rest of the row as owned text.
    pub fn into_owned(mut self) -> Result<Vec<Option<String>>, WireError> {
        let mut row = Vec::with_capacity(self.left);
        while let Some(field) = self.next_field()? {
            row.push(field.map(str::to_string));
        }
        Ok(row)
    }
}

impl Connection {
    /// The next backend message other than NoticeResponse, ParameterStatus and
    /// NotificationResponse, which can arrive at any time and are handled here.
    ///
    /// Cancel-safe (see `read_copy_data`).
    pub(super) async fn read_message(&mut self) -> Result<(u8, Bytes), WireError> {
        loop {
            while let Some((tag, body)) = self.take_message()? {
                match tag {
                    b'N' => match parse_error_fields(&body) {
                        Ok(notice) => tracing::debug!(%notice, "server notice"),
                        Err(e) => tracing::debug!("unparsable server notice: {e}"),
                    },
                    b'S' => {
                        let mut r = BodyReader::new(&body);
                        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
                        let value = String::from_utf8_lossy(r.cstr()?).into_owned();
                        self.parameters.insert(name, value);
                    }
                    b'A' => tracing::debug!("ignoring a LISTEN/NOTIFY notification"),
                    _ => return Ok((tag, body)),
                }
            }
            self.fill_read_buf().await?;
        }
    }

    /// Takes one complete message (tag, body) off the read buffer, if there is one.
    fn take_message(&mut self) -> Result<Option<(u8, Bytes)>, WireError> {
        if self.read_buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.read_buf[0];
        let len = i32::from_be_bytes([
            self.read_buf[1],
            self.read_buf[2],
            self.read_buf[3],
            self.read_buf[4],
        ]);
        if len < 4 {
            return Err(protocol(format!(
                "invalid length {len} for backend message {:?}",
                tag as char
            )));
        }
        let total = 1 + len as usize;
        if self.read_buf.len() < total {
            // Make room for the whole message at once rather than growing per read.
            self.read_buf.reserve(total - self.read_buf.len());
            return Ok(None);
        }
        self.read_buf.advance(5);
        // The only copy of the payload is the socket read into read_buf; split_to + freeze
        // hand out that same memory.
        let body = self.read_buf.split_to(total - 5).freeze();
        Ok(Some((tag, body)))
    }

    async fn fill_read_buf(&mut self) -> Result<(), WireError> {
        if self.read_buf.capacity() - self.read_buf.len() < MIN_READ_SPACE {
            self.read_buf.reserve(READ_RESERVE);
        }
        let n = self.stream.read_buf(&mut self.read_buf).await?;
        if n == 0 {
            return Err(WireError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_parse() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0\0";
        let e = parse_error_fields(body).unwrap();
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "42P01");
        assert_eq!(e.message, "relation \"x\" does not exist");
        assert!(
            parse_error_fields(b"C42P01").is_err(),
            "truncated must be an error"
        );
    }

    /// A DataRow body: the field count, then each field's length (-1: NULL) and bytes.
    fn data_row(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (fields.len() as i16).to_be_bytes().to_vec();
        for field in fields {
            match field {
                Some(bytes) => {
                    body.extend((bytes.len() as i32).to_be_bytes());
                    body.extend(*bytes);
                }
                None => body.extend((-1i32).to_be_bytes()),
            }
        }
        body
    }

    fn fields(body: &[u8]) -> Result<Vec<Option<String>>, WireError> {
        let columns = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        RowFields::parse(body, &columns)?.into_owned()
    }

    #[test]
    fn row_fields_are_text_whether_the_row_is_checked_whole_or_field_by_field() {
        let long = "x".repeat(200); // its length's low byte is 0xC8: the row is not UTF-8 whole
        let cases: [&[Option<&[u8]>]; 3] = [
            &[Some(b"42"), Some("d\u{e9}j\u{e0}".as_bytes()), Some(b"")],
            &[Some(b"42"), None, Some("\u{1F600}".as_bytes())],
            &[Some(long.as_bytes()), Some(b"1"), None],
        ];
        for (i, case) in cases.iter().enumerate() {
            let expected: Vec<Option<String>> = case
                .iter()
                .map(|f| f.map(|b| String::from_utf8(b.to_vec()).unwrap()))
                .collect();
            assert_eq!(fields(&data_row(case)).unwrap(), expected, "case {i}");
        }
        // A field of 195 bytes (length byte 0xC3) that starts with 0xA9: with its length byte it
        // makes "\u{e9}", so the row is valid UTF-8 as a whole, but the field alone is not.
        let mut torn = vec![0xA9];
        torn.extend([b'a'; 194]);
        let body = data_row(&[Some(&torn), Some(b"a"), Some(b"b")]);
        assert!(std::str::from_utf8(&body).is_ok());
        assert!(
            fields(&body).is_err(),
            "a field that is not UTF-8 is an error"
        );
        let bad = data_row(&[Some(b"ok"), Some(&[0xFF, 0xFE]), None]);
        let e = fields(&bad).unwrap_err().to_string();
        assert!(e.contains("\"b\"") && e.contains("UTF-8"), "{e}");
    }
}
