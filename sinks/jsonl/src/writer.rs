//! The output's own thread: encoding, `write(2)` and `fsync` off the async worker.
//!
//! ```text
//!  runtime ──batch of records──▶ writer thread: encode into 1 MiB ──write(2)──▶ file
//!     ▲                               │ (drops the records)
//!     └──── the emptied vector ◀──────┘
//! ```
//!
//! Measured on a 1 M-change MariaDB stream into a file, encoding, writing and dropping the records
//! were about a third of the agent's time, all of it on the one async worker that also reads and
//! decodes the stream. Here they overlap the decoding of the next batch on the second core. At
//! most [`IN_FLIGHT`] jobs wait for the thread (plus the one it works on), so a slow disk slows the
//! pipeline down instead of filling memory: the records of up to three batches are held here after
//! the runtime has counted them written.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use cdc_core::SourceMessage;
use tokio::sync::{mpsc, oneshot};

/// Batches of records handed over and not yet written.
const IN_FLIGHT: usize = 2;

/// Encoded bytes written at once.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// How far behind the file's end written pages are dropped from the page cache.
const DROP_BEHIND_BYTES: u64 = 32 << 20;

/// Where the thread writes.
pub(crate) enum Output {
    /// `end`: the file's length, where the next write lands.
    File {
        path: PathBuf,
        file: File,
        end: u64,
    },
    Stdout(io::Stdout),
}

enum Job {
    /// Records to encode and write, here rather than on the async worker.
    Records(Vec<SourceMessage>),
    /// Everything handed over before it is written, then made durable; the result goes back.
    Sync(oneshot::Sender<Result<(), Failure>>),
}

/// What failed (`"write"` or `"fsync"`), and why.
#[derive(Debug)]
pub(crate) struct Failure {
    pub what: &'static str,
    pub error: io::Error,
}

/// The sink's handle on its writer thread.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    /// The vectors of written records, emptied.
    written: std_mpsc::Receiver<Vec<SourceMessage>>,
    /// One of them, to hand back to the caller.
    spare_records: Option<Vec<SourceMessage>>,
    thread: Option<JoinHandle<()>>,
}

/// The writer thread is gone (it only ends early by panicking): the sink must be replaced, which
/// the runtime's retry does.
#[derive(Debug)]
pub(crate) struct WriterGone;

impl Writer {
    pub(crate) fn start(output: Output) -> io::Result<Writer> {
        let (jobs, rx) = mpsc::channel(IN_FLIGHT);
        let (written_tx, written) = std_mpsc::channel();
        let state = Thread {
            output,
            buffer: Vec::with_capacity(WRITE_CHUNK_BYTES + 64 * 1024),
            failed: None,
            written: written_tx,
        };
        let thread = std::thread::Builder::new()
            .name("jsonl-writer".into())
            .spawn(move || state.run(rx))?;
        Ok(Writer {
            jobs: Some(jobs),
            written,
            spare_records: None,
            thread: Some(thread),
        })
    }

    /// Hands the records to the thread to encode and write (waiting while [`IN_FLIGHT`] jobs are
    /// queued), leaving in `records` an empty
    /// vector of the thread's earlier ones (its allocation reused, see `Sink::write_owned`).
    pub(crate) async fn write_records(
        &mut self,
        records: &mut Vec<SourceMessage>,
    ) -> Result<(), WriterGone> {
        self.reuse_written();
        let empty = self.spare_records.take().unwrap_or_default();
        let full = std::mem::replace(records, empty);
        self.send(Job::Records(full)).await
    }

    /// Waits until every buffer handed over is written and durable.
    pub(crate) async fn sync(&mut self) -> Result<(), Failure> {
        let (reply, result) = oneshot::channel();
        if self.send(Job::Sync(reply)).await.is_err() {
            return Err(gone());
        }
        let result = result.await.unwrap_or_else(|_| Err(gone()));
        self.reuse_written();
        result
    }

    /// Keeps one of the vectors the thread has emptied, for the next call.
    fn reuse_written(&mut self) {
        while let Ok(records) = self.written.try_recv() {
            if self.spare_records.is_none() {
                self.spare_records = Some(records);
            }
        }
    }

    async fn send(&mut self, job: Job) -> Result<(), WriterGone> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).await.map_err(|_| WriterGone),
            None => Err(WriterGone),
        }
    }
}

pub(crate) fn gone() -> Failure {
    Failure {
        what: "write",
        error: io::Error::other("its writer thread stopped"),
    }
}

impl Drop for Writer {
    /// Waits for the thread to write what it was given: a sink opened on the same file next (a
    /// retry) must not find this one still appending to it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's side.
struct Thread {
    output: Output,
    /// Records encoded and not yet written.
    buffer: Vec<u8>,
    /// After a failed write the file's end is unknown: every later job fails, and the sink (and
    /// this thread) are replaced by the runtime's retry, which cuts any torn line on open.
    failed: Option<(io::ErrorKind, String)>,
    written: std_mpsc::Sender<Vec<SourceMessage>>,
}

impl Thread {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Records(records) => {
                    if self.failed.is_none() {
                        for message in &records {
                            if let SourceMessage::Change(event) = message {
                                cdc_core::json::write_event(event, &mut self.buffer);
                                self.buffer.push(b'\n');
                                if self.buffer.len() >= WRITE_CHUNK_BYTES {
                                    self.write_buffer();
                                }
                            }
                        }
                    }
                    // Dropped here, off the async worker (a tenth of the agent's time); the
                    // vector goes back empty, to be filled again.
                    let mut records = records;
                    records.clear();
                    let _ = self.written.send(records);
                }
                Job::Sync(reply) => {
                    self.write_buffer();
                    let _ = reply.send(self.sync());
                }
            }
        }
        self.write_buffer();
    }

    fn write_buffer(&mut self) {
        if self.failed.is_none() && !self.buffer.is_empty() {
            if let Err(e) = self.output.write(&self.buffer) {
                self.failed = Some((e.kind(), e.to_string()));
            }
        }
        self.buffer.clear();
    }

    fn sync(&mut self) -> Result<(), Failure> {
        match &self.failed {
            Some((kind, message)) => Err(Failure {
                what: "write",
                error: io::Error::new(*kind, message.clone()),
            }),
            None => self.output.sync().map_err(|error| Failure {
                what: "fsync",
                error,
            }),
        }
    }
}

impl Output {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::File { file, end, .. } => {
                file.write_all(bytes)?;
                start_writeback(file, *end, bytes.len());
                drop_behind(file, *end, *end + bytes.len() as u64);
                *end += bytes.len() as u64;
                Ok(())
            }
            Output::Stdout(out) => out.write_all(bytes),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Output::File { file, .. } => file.sync_data(),
            Output::Stdout(out) => out.flush(),
        }
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting, so the
/// next flush's fsync finds them (mostly) written instead of writing a whole interval's worth while
/// the pipeline waits. Advisory: an error only means the fsync does all the work.
fn start_writeback(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    sync_range(file, offset, len as u64, libc::SYNC_FILE_RANGE_WRITE);
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// For a write of bytes `start..end`: waits until the same span [`DROP_BEHIND_BYTES`] further
/// back is on disk (its writeback started long ago) and takes it out of the page cache. In whole
/// 4 KiB pages, so the spans of consecutive writes tile the file.
///
/// Why: an agent writing gigabytes of JSON lines beside a database would otherwise push the
/// database's pages out of the host's cache with pages nobody reads again. And on this VM, fresh
/// page cache is what the writer paid most for: a 5M-row snapshot (2 GB of lines) spent 40% of
/// the agent's CPU in the kernel copying into newly allocated pages (memory the guest had given
/// back to the host; a re-used page costs a third). Dropped pages are re-used by the next writes.
/// Advisory, like [`start_writeback`]: an error only leaves the pages cached.
fn drop_behind(file: &File, start: u64, end: u64) {
    let page_behind = |at: u64| at.saturating_sub(DROP_BEHIND_BYTES) & !4095;
    let (offset, len) = (page_behind(start), page_behind(end) - page_behind(start));
    if len == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        sync_range(
            file,
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
        // SAFETY: a plain syscall on a file descriptor this thread owns and keeps open.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// `sync_file_range(2)`; its result is ignored (the callers' work is advisory).
#[cfg(target_os = "linux")]
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor this thread owns and keeps open.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        );
    }
}
