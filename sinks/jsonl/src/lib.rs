//! JSON lines sink: one canonical change record per line, in source commit order.
//!
//! ```text
//!  runtime ──write(messages)──▶ writer thread: encode, append to the file (1 MiB at a time)
//!          ──flush()──▶ writer thread: fsync ──▶ durable
//! ```
//!
//! Exactly once into a file: on open the sink reads the last complete line back and reports its
//! (position, seq) as the resume point, so the runtime drops every change already written. A line
//! torn by a crash (no trailing newline) is cut off first. Written to stdout, the sink cannot read
//! back what it wrote: delivery is then at least once from the last checkpoint.

mod tail;
mod writer;

use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use cdc_core::event::resume_point_of_record;
use cdc_core::{PipelineError, ResumePoint, Sink, SourceMessage};

use writer::{Failure, Output, Writer, WriterGone};

pub struct JsonlSink {
    /// The file (None: stdout), for error messages.
    path: Option<PathBuf>,
    /// The output until the writer thread takes it (at open, or at the first write).
    output: Option<Output>,
    writer: Option<Writer>,
}

impl JsonlSink {
    /// `path` is a file to append to, or `-` for stdout.
    pub fn new(path: &str) -> Result<Self, PipelineError> {
        let (path, output) = if path == "-" {
            (None, Output::Stdout(io::stdout()))
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
            (Some(path.clone()), Output::File { path, file, end: 0 })
        };
        Ok(JsonlSink {
            path,
            output: Some(output),
            writer: None,
        })
    }

    fn writer(&mut self) -> Result<&mut Writer, PipelineError> {
        if self.writer.is_none() {
            let Some(output) = self.output.take() else {
                return Err(self.failure(writer::gone()));
            };
            let writer = Writer::start(output).map_err(|e| {
                PipelineError::transient(
                    "sink",
                    format!("cannot start the JSON lines writer thread: {e}"),
                )
            })?;
            self.writer = Some(writer);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| PipelineError::transient("sink", "no JSON lines writer"))
    }

    fn failure(&self, failure: Failure) -> PipelineError {
        match &self.path {
            Some(path) => file_error(failure.what, path, failure.error),
            None => PipelineError::transient(
                "sink",
                format!("{} to stdout: {}", failure.what, failure.error),
            ),
        }
    }
}

/// A file error, definite when no retry can fix it (see [`cdc_core::error::io_error_class`]):
/// the agent then stops with the path and the fix instead of retrying forever.
fn file_error(what: &str, path: &Path, e: io::Error) -> PipelineError {
    let message = format!("cannot {what} the JSON lines file {}: {e}", path.display());
    cdc_core::error::file_error("sink", "sink.path", message, &e)
}

#[async_trait]
impl Sink for JsonlSink {
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        let Some(Output::File { path, file, end }) = &mut self.output else {
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

    /// A copy goes to the writer thread (the runtime hands its records over whole instead).
    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
        self.write_owned(&mut messages.to_vec()).await
    }

    /// The records go to the writer thread whole: it encodes them there.
    async fn write_owned(
        &mut self,
        messages: &mut Vec<SourceMessage>,
    ) -> Result<(), PipelineError> {
        match self.writer()?.write_records(messages).await {
            Ok(()) => Ok(()),
            Err(WriterGone) => Err(self.failure(writer::gone())),
        }
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        // The fsync waits on the writer thread, not on the async worker.
        let result = self.writer()?.sync().await;
        result.map_err(|failure| self.failure(failure))
    }
}

#[cfg(test)]
mod tests;
