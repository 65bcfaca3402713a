//! Decoding of pgoutput protocol messages (protocol version 1, and the stream control messages
//! of version 2: [`decode_stream`]), borrowed from the XLogData payload.
//!
//! ```text
//!  CopyData 'w' (XLogData) ─▶ payload ─▶ decode() ─▶ Message::{Begin, Relation, Insert, ..., Commit}
//! ```
//!
//! Tuple values stay as byte slices into the payload; the source turns them into change events
//! with the relation cache. See the Postgres docs, "Logical Replication Message Formats".

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(pub String);

#[derive(Debug, PartialEq, Eq)]
pub enum TupleValue<'a> {
    Null,
    /// An unchanged TOASTed value the server did not send.
    Unchanged,
    Text(&'a [u8]),
}

pub type Tuple<'a> = Vec<TupleValue<'a>>;

#[derive(Debug, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Part of the replica identity (pgoutput's key flag).
    pub is_key: bool,
    pub name: &'a str,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// Which old tuple an update or delete carries.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum OldKind {
    /// 'K': replica identity columns only.
    Key,
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Begin {
        final_lsn: u64,
        /// Microseconds since 2000-01-01 UTC.
        commit_ts: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_ts: i64,
    },
    Origin {
        lsn: u64,
        name: &'a str,
    },
    Relation {
        oid: u32,
        namespace: &'a str,
        name: &'a str,
        replica_identity: u8,
        columns: Vec<RelationColumn<'a>>,
    },
    Type {
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    Insert {
        relation: u32,
        new: Tuple<'a>,
    },
    Update {
        relation: u32,
        old: Option<(OldKind, Tuple<'a>)>,
        new: Tuple<'a>,
    },
    Delete {
        relation: u32,
        old: (OldKind, Tuple<'a>),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    Message {
        transactional: bool,
        lsn: u64,
        prefix: &'a str,
        content: &'a [u8],
    },
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(format!(
                "needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    fn cstr(&mut self) -> Result<&'a str, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| DecodeError("a name is not UTF-8".into()))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Tuple<'a>, DecodeError> {
        let n = self.i16()?;
        let mut values = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' => {
                    let len = self.i32()?;
                    if len < 0 {
                        return Err(DecodeError(format!("negative value length {len}")));
                    }
                    TupleValue::Text(self.take(len as usize)?)
                }
                other => {
                    return Err(DecodeError(format!(
                        "tuple value kind {:?} (binary mode is not requested)",
                        other as char
                    )))
                }
            });
        }
        Ok(values)
    }
    fn old_kind(tag: u8) -> Option<OldKind> {
        match tag {
            b'K' => Some(OldKind::Key),
            b'O' => Some(OldKind::Full),
            _ => None,
        }
    }
}

/// The control messages of a transaction streamed before its commit (protocol 2). The changes
/// inside a stream block are protocol-1 messages with the (sub)transaction's xid after the tag.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamMessage {
    Start {
        xid: u32,
    },
    Stop,
    Commit(StreamCommit),
    /// `subxid == xid`: the whole transaction.
    Abort {
        xid: u32,
        subxid: u32,
    },
}

/// Stream Commit: the streamed transaction `xid` committed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct StreamCommit {
    pub xid: u32,
    pub commit_lsn: u64,
    pub end_lsn: u64,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
}

/// A stream control message, or `None` for any other message.
pub fn decode_stream(payload: &[u8]) -> Result<Option<StreamMessage>, DecodeError> {
    let mut c = Cursor { buf: payload };
    Ok(Some(match c.u8()? {
        b'S' => StreamMessage::Start { xid: c.u32()? },
        b'E' => StreamMessage::Stop,
        b'c' => {
            let xid = c.u32()?;
            let _flags = c.u8()?;
            StreamMessage::Commit(StreamCommit {
                xid,
                commit_lsn: c.u64()?,
                end_lsn: c.u64()?,
                commit_ts: c.i64()?,
            })
        }
        b'A' => StreamMessage::Abort {
            xid: c.u32()?,
            subxid: c.u32()?,
        },
        _ => return Ok(None),
    }))
}

/// Decodes one pgoutput message.
pub fn decode(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut c = Cursor { buf: payload };
    let tag = c.u8()?;
    Ok(match tag {
        b'B' => Message::Begin {
            final_lsn: c.u64()?,
            commit_ts: c.i64()?,
            xid: c.u32()?,
        },
        b'C' => {
            let _flags = c.u8()?;
            Message::Commit {
                commit_lsn: c.u64()?,
                end_lsn: c.u64()?,
                commit_ts: c.i64()?,
            }
        }
        b'O' => Message::Origin {
            lsn: c.u64()?,
            name: c.cstr()?,
        },
        b'R' => {
            let oid = c.u32()?;
            let namespace = c.cstr()?;
            let name = c.cstr()?;
            let replica_identity = c.u8()?;
            let n = c.i16()?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                columns.push(RelationColumn {
                    is_key: c.u8()? & 1 == 1,
                    name: c.cstr()?,
                    type_oid: c.u32()?,
                    type_modifier: c.i32()?,
                });
            }
            Message::Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            }
        }
        b'Y' => Message::Type {
            oid: c.u32()?,
            namespace: c.cstr()?,
            name: c.cstr()?,
        },
        b'I' => {
            let relation = c.u32()?;
            expect(&mut c, b'N')?;
            Message::Insert {
                relation,
                new: c.tuple()?,
            }
        }
        b'U' => {
            let relation = c.u32()?;
            let tag = c.u8()?;
            let (old, new_tag) = match Cursor::old_kind(tag) {
                Some(kind) => {
                    let old = c.tuple()?;
                    (Some((kind, old)), c.u8()?)
                }
                None => (None, tag),
            };
            if new_tag != b'N' {
                return Err(DecodeError(format!(
                    "update without a new tuple (tag {:?})",
                    new_tag as char
                )));
            }
            Message::Update {
                relation,
                old,
                new: c.tuple()?,
            }
        }
        b'D' => {
            let relation = c.u32()?;
            let tag = c.u8()?;
            let kind = Cursor::old_kind(tag).ok_or_else(|| {
                DecodeError(format!(
                    "delete without an old tuple (tag {:?})",
                    tag as char
                ))
            })?;
            Message::Delete {
                relation,
                old: (kind, c.tuple()?),
            }
        }
        b'T' => {
            let n = c.u32()?;
            let options = c.u8()?;
            let mut relations = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                relations.push(c.u32()?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'M' => {
            let transactional = c.u8()? & 1 == 1;
            let lsn = c.u64()?;
            let prefix = c.cstr()?;
            let len = c.u32()? as usize;
            Message::Message {
                transactional,
                lsn,
                prefix,
                content: c.take(len)?,
            }
        }
        other => {
            return Err(DecodeError(format!(
                "unknown message type {:?}",
                other as char
            )))
        }
    })
}

fn expect(c: &mut Cursor<'_>, tag: u8) -> Result<(), DecodeError> {
    let got = c.u8()?;
    if got != tag {
        return Err(DecodeError(format!(
            "expected tuple tag {:?}, got {:?}",
            tag as char, got as char
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_control_messages() {
        let mut commit = vec![b'c'];
        commit.extend_from_slice(&7u32.to_be_bytes());
        commit.push(0);
        commit.extend_from_slice(&0x10u64.to_be_bytes());
        commit.extend_from_slice(&0x20u64.to_be_bytes());
        commit.extend_from_slice(&5i64.to_be_bytes());
        assert_eq!(
            decode_stream(&commit).unwrap(),
            Some(StreamMessage::Commit(StreamCommit {
                xid: 7,
                commit_lsn: 0x10,
                end_lsn: 0x20,
                commit_ts: 5
            }))
        );
        let mut abort = vec![b'A'];
        abort.extend_from_slice(&7u32.to_be_bytes());
        abort.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            decode_stream(&abort).unwrap(),
            Some(StreamMessage::Abort { xid: 7, subxid: 9 })
        );
        assert_eq!(
            decode_stream(&[b'S', 0, 0, 0, 7, 1]).unwrap(),
            Some(StreamMessage::Start { xid: 7 })
        );
        assert_eq!(decode_stream(b"E").unwrap(), Some(StreamMessage::Stop));
        assert_eq!(
            decode_stream(b"I").unwrap(),
            None,
            "a change is not a control message"
        );
        assert!(
            decode_stream(&commit[..10]).is_err(),
            "a short commit is an error"
        );
    }

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some("\u{0}u") => b.push(b'u'),
                Some(s) => {
                    b.push(b't');
                    b.extend((s.len() as i32).to_be_bytes());
                    b.extend(s.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn decodes_begin_and_commit() {
        let mut b = vec![b'B'];
        b.extend(0x16B3748u64.to_be_bytes());
        b.extend(42i64.to_be_bytes());
        b.extend(755u32.to_be_bytes());
        assert_eq!(
            decode(&b).unwrap(),
            Message::Begin {
                final_lsn: 0x16B3748,
                commit_ts: 42,
                xid: 755
            }
        );
        let mut c = vec![b'C', 0];
        c.extend(1u64.to_be_bytes());
        c.extend(2u64.to_be_bytes());
        c.extend(3i64.to_be_bytes());
        assert_eq!(
            decode(&c).unwrap(),
            Message::Commit {
                commit_lsn: 1,
                end_lsn: 2,
                commit_ts: 3
            }
        );
    }

    #[test]
    fn decodes_relation_and_update_with_old_key() {
        let mut r = vec![b'R'];
        r.extend(16384u32.to_be_bytes());
        r.extend(b"public\0orders\0d");
        r.extend(2i16.to_be_bytes());
        r.push(1);
        r.extend(b"id\0");
        r.extend(20u32.to_be_bytes());
        r.extend((-1i32).to_be_bytes());
        r.push(0);
        r.extend(b"note\0");
        r.extend(25u32.to_be_bytes());
        r.extend((-1i32).to_be_bytes());
        let Message::Relation { columns, name, .. } = decode(&r).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(name, "orders");
        assert!(columns[0].is_key && !columns[1].is_key);

        let mut u = vec![b'U'];
        u.extend(16384u32.to_be_bytes());
        u.push(b'K');
        u.extend(tuple(&[Some("1"), None]));
        u.push(b'N');
        u.extend(tuple(&[Some("2"), Some("\u{0}u")]));
        assert_eq!(
            decode(&u).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some((OldKind::Key, vec![TupleValue::Text(b"1"), TupleValue::Null])),
                new: vec![TupleValue::Text(b"2"), TupleValue::Unchanged],
            }
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(b"B\0\0").is_err());
        let mut i = vec![b'I'];
        i.extend(1u32.to_be_bytes());
        i.push(b'N');
        i.extend(1i16.to_be_bytes());
        i.push(b't');
        i.extend(100i32.to_be_bytes());
        i.extend(b"short");
        assert!(decode(&i).is_err());
        assert!(decode(b"Z").is_err());
    }
}
