//! Transactions the server sends before their commit (pgoutput protocol 2 with `streaming 'on'`,
//! Postgres 14+).
//!
//! ```text
//!  Stream Start xid ─▶ R/Y/I/U/D/T/M (each with its (sub)transaction's xid) ─▶ Stream Stop
//!     … other transactions, other stream blocks …
//!  Stream Commit xid ─▶ the spilled messages replayed as one protocol-1 transaction
//!  Stream Abort xid, subxid ─▶ the file removed (xid = subxid) or the subtransaction's changes
//!                              skipped at replay
//! ```
//!
//! Without streaming, the server holds a big transaction until its commit (spilling it to its own
//! disk past `logical_decoding_work_mem`) and only then decodes and sends it: a 3,000,000-row
//! insert reached the agent some 40 s after its COMMIT (docs/performance.md). Streamed, the
//! transaction crosses the network while it runs, and the agent spills it to a file of its own,
//! so its memory stays bounded whatever the transaction's size. Nothing of it goes down the
//! pipeline before its commit, and nothing of an aborted transaction or subtransaction ever
//! does: a target sees it exactly as a protocol-1 transaction (the exactly-once rule holds
//! because the checkpoint only ever passes a transaction's commit).
//!
//! The files are the agent's only: a crash loses them, and the server sends every transaction
//! not confirmed again (from its start, streamed again), so a run begins by removing them.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes of a spill file's write buffer.
const WRITE_BUFFER: usize = 256 << 10;

/// A transaction's messages spilled so far.
struct Spill {
    path: PathBuf,
    writer: BufWriter<File>,
    /// Subtransactions aborted (Stream Abort with a subxid of their own): their changes are
    /// skipped at replay.
    aborted: HashSet<u32>,
    /// Relation messages in the stream, by relation oid: the `epoch` of the session's relation
    /// cache when they arrived (see [`Replay::relations`]).
    relations: HashMap<u32, u64>,
}

/// The in-progress transactions of one streaming session, each in a file under `dir`.
pub(crate) struct StreamedTransactions {
    dir: PathBuf,
    open: HashMap<u32, Spill>,
}

impl StreamedTransactions {
    /// Prepares `dir`, removing the files of an earlier run: the server sends those
    /// transactions again.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        if dir.exists() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "spill") {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        std::fs::create_dir_all(&dir)?;
        Ok(StreamedTransactions {
            dir,
            open: HashMap::new(),
        })
    }

    /// Spills a message of the stream block of top-level transaction `xid`. `payload` is the
    /// message as sent: its tag, the xid of the (sub)transaction it belongs to, the rest.
    /// `epoch`: the session's relation cache epoch now (recorded for Relation messages).
    pub fn append(&mut self, xid: u32, payload: &[u8], epoch: u64) -> io::Result<()> {
        if payload.len() < 5 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a streamed message of {} bytes has no transaction id",
                    payload.len()
                ),
            ));
        }
        let spill = match self.open.entry(xid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let path = self.dir.join(format!("{xid}.spill"));
                let file = File::create(&path)?;
                e.insert(Spill {
                    path,
                    writer: BufWriter::with_capacity(WRITE_BUFFER, file),
                    aborted: HashSet::new(),
                    relations: HashMap::new(),
                })
            }
        };
        if payload[0] == b'R' && payload.len() >= 9 {
            let oid = u32::from_be_bytes([payload[5], payload[6], payload[7], payload[8]]);
            spill.relations.insert(oid, epoch);
        }
        // Record: length of what follows the xid, the (sub)xid, then the message without it
        // (so it decodes as protocol 1).
        let body_len = (payload.len() - 4) as u32;
        spill.writer.write_all(&body_len.to_be_bytes())?;
        spill.writer.write_all(&payload[1..5])?;
        spill.writer.write_all(&payload[..1])?;
        spill.writer.write_all(&payload[5..])
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> io::Result<()> {
        if subxid == xid {
            if let Some(spill) = self.open.remove(&xid) {
                drop(spill.writer);
                remove(&spill.path)?;
            }
        } else if let Some(spill) = self.open.get_mut(&xid) {
            spill.aborted.insert(subxid);
        }
        Ok(())
    }

    /// Stream Commit: the transaction's messages, to replay in order. `None` when nothing of it
    /// was streamed (possible when every change was to tables outside the publication).
    pub fn commit(&mut self, xid: u32) -> io::Result<Option<Replay>> {
        let Some(spill) = self.open.remove(&xid) else {
            return Ok(None);
        };
        let file = spill.writer.into_inner().map_err(|e| e.into_error())?;
        drop(file);
        let reader = BufReader::with_capacity(WRITE_BUFFER, File::open(&spill.path)?);
        Ok(Some(Replay {
            path: spill.path,
            reader,
            aborted: spill.aborted,
            relations: spill.relations,
            buf: Vec::new(),
        }))
    }

    /// Transactions streamed and not yet committed or aborted.
    #[cfg(test)]
    pub fn in_progress(&self) -> usize {
        self.open.len()
    }
}

impl Drop for StreamedTransactions {
    fn drop(&mut self) {
        for spill in self.open.values() {
            let _ = std::fs::remove_file(&spill.path);
        }
    }
}

/// A committed streamed transaction being read back; its file is removed when dropped.
pub(crate) struct Replay {
    path: PathBuf,
    reader: BufReader<File>,
    aborted: HashSet<u32>,
    relations: HashMap<u32, u64>,
    buf: Vec<u8>,
}

impl Replay {
    /// The next message (protocol-1 form), skipping the changes of aborted subtransactions.
    /// Relation and Type messages are never skipped: the server counts a relation's schema as
    /// sent for the whole transaction, whichever subtransaction carried it.
    pub fn next(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let mut head = [0u8; 8];
            match self.reader.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let subxid = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            self.buf.resize(len, 0);
            self.reader.read_exact(&mut self.buf)?;
            let schema = matches!(self.buf.first(), Some(b'R' | b'Y'));
            if schema || !self.aborted.contains(&subxid) {
                return Ok(Some(&self.buf));
            }
        }
    }

    /// The relation cache epoch at which each Relation message of the transaction arrived: a
    /// relation the session received a Relation message for *after* that (outside the stream)
    /// keeps the newer one when the replay is done.
    pub fn relations(&self) -> &HashMap<u32, u64> {
        &self.relations
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, xid: u32, rest: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&xid.to_be_bytes());
        m.extend_from_slice(rest);
        m
    }

    fn replayed(replay: &mut Replay) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = replay.next().unwrap() {
            out.push(m.to_vec());
        }
        out
    }

    #[test]
    fn a_committed_transaction_replays_without_its_aborted_subtransactions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StreamedTransactions::new(dir.path().join("spill")).unwrap();
        s.append(7, &message(b'R', 7, &42u32.to_be_bytes()), 3)
            .unwrap();
        s.append(7, &message(b'I', 7, b"one"), 3).unwrap();
        // Another transaction streams in between.
        s.append(9, &message(b'I', 9, b"other"), 3).unwrap();
        s.append(7, &message(b'R', 8, &43u32.to_be_bytes()), 4)
            .unwrap();
        s.append(7, &message(b'I', 8, b"sub"), 4).unwrap();
        s.append(7, &message(b'I', 7, b"two"), 4).unwrap();
        s.abort(7, 8).unwrap();
        assert_eq!(s.in_progress(), 2);
        let mut replay = s.commit(7).unwrap().unwrap();
        let mut r42 = vec![b'R'];
        r42.extend_from_slice(&42u32.to_be_bytes());
        let mut r43 = vec![b'R'];
        r43.extend_from_slice(&43u32.to_be_bytes());
        assert_eq!(
            replayed(&mut replay),
            [r42, b"Ione".to_vec(), r43, b"Itwo".to_vec()],
            "the subtransaction's change is skipped, its Relation message is not"
        );
        assert_eq!(replay.relations().get(&42), Some(&3));
        assert_eq!(replay.relations().get(&43), Some(&4));
        let path = dir.path().join("spill/7.spill");
        assert!(path.exists());
        drop(replay);
        assert!(!path.exists(), "the file goes with the replay");
        // The whole of transaction 9 aborted: nothing left, nothing to replay.
        s.abort(9, 9).unwrap();
        assert!(!dir.path().join("spill/9.spill").exists());
        assert!(s.commit(9).unwrap().is_none());
        assert_eq!(s.in_progress(), 0);
    }

    #[test]
    fn a_new_run_removes_the_files_of_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        let mut s = StreamedTransactions::new(spill.clone()).unwrap();
        s.append(5, &message(b'I', 5, b"x"), 0).unwrap();
        std::mem::forget(s); // a crash: nothing cleaned up
        assert!(spill.join("5.spill").exists());
        let _s = StreamedTransactions::new(spill.clone()).unwrap();
        assert!(!spill.join("5.spill").exists());
    }

    #[test]
    fn a_message_without_an_xid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StreamedTransactions::new(dir.path().to_path_buf()).unwrap();
        assert!(s.append(1, b"I\0", 0).is_err());
    }
}
