//! JSON lines sink: one canonical change record per line, in source commit order.
//!
//! ```text
//!  runtime ──write(messages)──▶ in-memory buffer ──▶ file (append) ──flush()──▶ fsync ──▶ durable
//! ```
//!
//! Exactly once into a file: on open the sink reads the last complete line back and reports its
//! (position, seq) as the resume point, so the runtime drops every change already written. A line
//! torn by a crash (no trailing newline) is cut off first. Written to stdout, the sink cannot read
//! back what it wrote: delivery is then at least once from the last checkpoint.

mod tail;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use cdc_core::event::resume_point_of_record;
use cdc_core::{PipelineError, ResumePoint, Sink, SourceMessage};

/// Buffered bytes that trigger a write to the file between flushes.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

enum Output {
    /// `end`: the file's length, where the next write lands.
    File {
        path: PathBuf,
        file: File,
        end: u64,
    },
    Stdout(io::Stdout),
}

pub struct JsonlSink {
    output: Output,
    buffer: Vec<u8>,
}

impl JsonlSink {
    /// `path` is a file to append to, or `-` for stdout.
    pub fn new(path: &str) -> Result<Self, PipelineError> {
        let output = if path == "-" {
            Output::Stdout(io::stdout())
        } else {
            let path = PathBuf::from(path);
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(false)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| file_error("open", &path, e))?;
            Output::File { path, file, end: 0 }
        };
        Ok(JsonlSink {
            output,
            buffer: Vec::with_capacity(WRITE_CHUNK_BYTES + 64 * 1024),
        })
    }

    fn write_buffer(&mut self) -> Result<(), PipelineError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        match &mut self.output {
            Output::File { path, file, end } => {
                file.write_all(&self.buffer)
                    .map_err(|e| file_error("write", path, e))?;
                start_writeback(file, *end, self.buffer.len());
                *end += self.buffer.len() as u64;
            }
            Output::Stdout(out) => out
                .write_all(&self.buffer)
                .map_err(|e| PipelineError::transient("sink", format!("writing to stdout: {e}")))?,
        }
        self.buffer.clear();
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting, so the
/// next flush's fsync finds them (mostly) written instead of writing a whole interval's worth while
/// the pipeline waits. Advisory: an error only means the fsync does all the work.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor this sink owns and keeps open.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: usize) {}

fn file_error(what: &str, path: &Path, e: io::Error) -> PipelineError {
    let message = format!("cannot {what} the JSON lines file {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            PipelineError::definite("sink", message)
                .with_hint("check sink.path: its directory must exist and be writable")
        }
        _ => PipelineError::transient("sink", message),
    }
}

#[async_trait]
impl Sink for JsonlSink {
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        let Output::File { path, file, end } = &mut self.output else {
            return Ok(None);
        };
        let last_line = tail::cut_torn_line_and_read_last(file)
            .map_err(|e| file_error("read back", path, e))?;
        *end = file
            .seek(SeekFrom::End(0))
            .map_err(|e| file_error("seek in", path, e))?;
        let Some(line) = last_line else {
            return Ok(None);
        };
        match resume_point_of_record(&line) {
            Some(point) => {
                tracing::info!(path = %path.display(), position = %point.position, seq = ?point.seq, "resuming after the last record in the file");
                Ok(Some(point))
            }
            None => Err(PipelineError::definite(
                "sink",
                format!(
                    "the last line of {} is not a cdc-agent change record, so the sink cannot tell where to resume",
                    path.display()
                ),
            )
            .with_hint("point sink.path at a new file, or at a file this pipeline wrote")),
        }
    }

    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
        for message in messages {
            if let SourceMessage::Change(event) = message {
                cdc_core::json::write_event(event, &mut self.buffer);
                self.buffer.push(b'\n');
                if self.buffer.len() >= WRITE_CHUNK_BYTES {
                    self.write_buffer()?;
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        self.write_buffer()?;
        match &mut self.output {
            // fsync blocks for milliseconds: keep it off the async worker's event loop.
            Output::File { path, file, .. } => tokio::task::block_in_place(|| file.sync_data())
                .map_err(|e| file_error("fsync", path, e)),
            Output::Stdout(out) => out
                .flush()
                .map_err(|e| PipelineError::transient("sink", format!("flushing stdout: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests;
