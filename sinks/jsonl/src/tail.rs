//! Reading back the end of a JSON lines file after a crash.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

const CHUNK: u64 = 64 * 1024;

/// Cuts off a torn last line (bytes after the last newline, left by a crash mid-write) and returns
/// the last complete line, if any.
pub(crate) fn cut_torn_line_and_read_last(file: &mut File) -> io::Result<Option<String>> {
    let len = file.metadata()?.len();
    let Some(last_newline) = rfind_newline(file, len)? else {
        if len > 0 {
            tracing::warn!(bytes = len, "cutting off a torn first line left by a crash");
            file.set_len(0)?;
        }
        return Ok(None);
    };
    if last_newline + 1 < len {
        tracing::warn!(
            bytes = len - last_newline - 1,
            "cutting off a torn last line left by a crash"
        );
        file.set_len(last_newline + 1)?;
    }
    let start = match rfind_newline(file, last_newline)? {
        Some(previous) => previous + 1,
        None => 0,
    };
    let mut line = vec![0; (last_newline - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    String::from_utf8(line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Offset of the last `\n` before `end`, scanning backwards in chunks.
fn rfind_newline(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    let mut chunk = vec![0u8; CHUNK as usize];
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let buf = &mut chunk[..(hi - lo) as usize];
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}
