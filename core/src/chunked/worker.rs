//! The copy workers. Each has a connection of its own (a [`ChunkReader`]) and copies chunks of
//! the tables asked for: a table nobody copies yet first, else it joins the table with the
//! fewest workers, so one big table is copied by all of them.
//!
//! A worker alone on a table reads chunk after chunk with `LIMIT n` after the previous chunk's
//! last key. When several share a table, the one claiming the next chunk first asks the server
//! where it ends (the key `n` rows on, an index-only read), so the next worker can claim the
//! chunk after it while this one reads: the chunks' reads, and their decoding, overlap.
//!
//! A resumed copy may also have holes: key ranges behind its frontier that an earlier run never
//! made durable. They are claimed first, each read as one bounded chunk.
//!
//! A chunk is at most `chunk_rows` rows and about [`CHUNK_BYTES`] of them: each worker sizes its
//! next chunk by the rows it has read so far, starting at [`FIRST_CHUNK_ROWS`], so the chunks
//! held in memory (up to four a worker) stay bounded in bytes whatever the row width.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Semaphore};

use super::{ChunkRead, ChunkReader, ChunkSpan, Cursor, Key, TablePlan, WorkerReport, WorkerSetup};
use crate::{ChangeEvent, PipelineError};

/// Bytes of rows (as [`ChangeEvent::approx_size`] counts them) a chunk aims at. Chunks wait in
/// memory for their high watermark, up to four a worker (see `ChunkedSnapshot::new`), on top of
/// the pipeline's channel: 8 of 2 MiB at most with the default two workers. Measured on a
/// 1 M-row table of ~800-byte rows (about 1.7 KiB each in memory) with two workers: 10,000-row
/// chunks peaked at 83-120 MiB of agent RSS, 4 MiB ones at 63-101 MiB (0.82 of COPY's rate),
/// these (about 1,600 of those rows) at 52-62 MiB (0.64 of COPY's rate: each chunk costs its
/// watermarks' commit flush and round trips). Narrow rows (~500 of these bytes) make chunks of
/// about 4,000 rows.
pub const CHUNK_BYTES: usize = 2 << 20;

/// Rows of a table's first chunk, before the size of its rows is known: a table of very wide
/// rows must not be read `chunk_rows` at a time even once.
pub const FIRST_CHUNK_ROWS: usize = 500;

/// Sizes a worker's chunks: `chunk_rows` at most, and about [`CHUNK_BYTES`].
struct ChunkSizer {
    max_rows: usize,
    rows: u64,
    bytes: u64,
}

impl ChunkSizer {
    fn new(max_rows: usize) -> Self {
        ChunkSizer {
            max_rows: max_rows.max(1),
            rows: 0,
            bytes: 0,
        }
    }

    /// Rows of the next chunk.
    fn limit(&self) -> usize {
        if self.rows == 0 || self.bytes == 0 {
            return self.max_rows.min(FIRST_CHUNK_ROWS);
        }
        let average = (self.bytes / self.rows).max(1);
        usize::try_from(CHUNK_BYTES as u64 / average)
            .unwrap_or(usize::MAX)
            .clamp(1, self.max_rows)
    }

    /// A chunk was read: its rows count in the average (the table's, as read by this worker).
    fn read(&mut self, events: &[ChangeEvent]) {
        self.rows += events.len() as u64;
        self.bytes += events.iter().map(|e| e.approx_size() as u64).sum::<u64>();
    }
}

/// One copy of a table (a generation), shared by the workers on it and the session.
pub(super) struct TableCopy {
    pub table: String,
    pub generation: u64,
    /// Where the next chunk starts; `Done` once every chunk is claimed. Held while a chunk is
    /// claimed: across the boundary query, or a lone worker's whole read.
    frontier: tokio::sync::Mutex<Cursor>,
    /// Ranges (from, through] behind the frontier still to copy (see [`TablePlan::holes`]).
    holes: Mutex<VecDeque<(Cursor, Key)>>,
    workers: AtomicUsize,
    claimed: AtomicU64,
    /// Every chunk is claimed: the frontier is `Done` and no hole is left.
    exhausted: AtomicBool,
    /// The frontier reached `Done` (holes may be left).
    frontier_done: AtomicBool,
    /// A newer copy of the table replaced this one.
    cancelled: AtomicBool,
    /// Chunks the session has sent on.
    sent: AtomicU64,
}

impl TableCopy {
    pub fn new(plan: &TablePlan) -> Self {
        TableCopy {
            table: plan.table.clone(),
            generation: plan.generation,
            frontier: tokio::sync::Mutex::new(plan.cursor.clone()),
            holes: Mutex::new(plan.holes.iter().cloned().collect()),
            workers: AtomicUsize::new(0),
            claimed: AtomicU64::new(0),
            exhausted: AtomicBool::new(plan.finished()),
            frontier_done: AtomicBool::new(plan.cursor == Cursor::Done),
            cancelled: AtomicBool::new(false),
            sent: AtomicU64::new(0),
        }
    }

    /// The session sent one of this copy's chunks on: true if it was the last.
    pub fn chunk_sent(&self) -> bool {
        let sent = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        // `claimed` is final once `exhausted` is set (both under the frontier lock, in order).
        self.exhausted.load(Ordering::SeqCst) && sent == self.claimed.load(Ordering::SeqCst)
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn open_for_work(&self) -> bool {
        !self.exhausted.load(Ordering::SeqCst) && !self.cancelled.load(Ordering::SeqCst)
    }

    /// Records a claimed chunk ending at `to`; called with the frontier lock held.
    fn claim(&self, frontier: &mut Cursor, to: &Cursor) {
        *frontier = to.clone();
        self.claimed.fetch_add(1, Ordering::SeqCst);
        if *to == Cursor::Done {
            self.frontier_done.store(true, Ordering::SeqCst);
            self.update_exhausted();
        }
    }

    /// Claims the next hole, if any: (from, through].
    fn claim_hole(&self) -> Option<(Cursor, Key)> {
        let Ok(mut holes) = self.holes.lock() else {
            return None;
        };
        let hole = holes.pop_front()?;
        // Counted before the last hole leaves the list: `claimed` is final once `exhausted`.
        self.claimed.fetch_add(1, Ordering::SeqCst);
        let none_left = holes.is_empty();
        drop(holes);
        if none_left {
            self.update_exhausted();
        }
        Some(hole)
    }

    fn update_exhausted(&self) {
        let no_holes = self.holes.lock().map(|h| h.is_empty()).unwrap_or(true);
        if no_holes && self.frontier_done.load(Ordering::SeqCst) {
            self.exhausted.store(true, Ordering::SeqCst);
        }
    }
}

/// The copies to work on, and how many workers are running (changed under the same lock, so a
/// copy added while the last worker quits still gets one).
#[derive(Default)]
pub(super) struct WorkQueue {
    pub copies: Vec<Arc<TableCopy>>,
    pub workers: usize,
}

pub(super) struct Worker {
    pub setup: Arc<WorkerSetup>,
    pub run_id: String,
    pub counter: Arc<AtomicU64>,
    pub queue: Arc<Mutex<WorkQueue>>,
    pub chunks_in_memory: Arc<Semaphore>,
    pub tx: mpsc::Sender<WorkerReport>,
}

impl Worker {
    pub async fn run(self) {
        let mut reader = self.setup.readers.reader();
        while let Some(copy) = self.next_copy() {
            let copied = self.copy(reader.as_mut(), &copy).await;
            copy.workers.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = copied {
                if let Ok(mut queue) = self.queue.lock() {
                    queue.workers = queue.workers.saturating_sub(1);
                }
                let _ = self.tx.send(WorkerReport::Failed(e)).await;
                break;
            }
        }
        reader.close().await;
    }

    /// The copy to work on next (counted as one more worker on it), or `None`: the worker quits.
    fn next_copy(&self) -> Option<Arc<TableCopy>> {
        let Ok(mut queue) = self.queue.lock() else {
            return None;
        };
        queue.copies.retain(|c| !c.cancelled.load(Ordering::SeqCst));
        let next = queue
            .copies
            .iter()
            .filter(|c| c.open_for_work())
            .min_by_key(|c| c.workers.load(Ordering::SeqCst))
            .cloned();
        match &next {
            Some(copy) => {
                let workers = copy.workers.fetch_add(1, Ordering::SeqCst) + 1;
                if workers > 1 {
                    tracing::info!(table = %copy.table, workers, "snapshot workers share the table's chunks");
                }
            }
            None => queue.workers = queue.workers.saturating_sub(1),
        }
        next
    }

    async fn copy(
        &self,
        reader: &mut dyn ChunkReader,
        copy: &TableCopy,
    ) -> Result<(), PipelineError> {
        let opened = reader.open_table(&copy.table).await?;
        if let Some(rows) = opened.estimate {
            self.setup
                .progress
                .set_snapshot_estimate(copy.table.clone(), rows);
        }
        // Without a unique key there is no order to split or resume in: one chunk.
        let mut sizer = ChunkSizer::new(self.setup.chunk_rows);
        // The previous chunk's high watermark, written together with the next chunk's low one.
        let mut high: Option<String> = None;
        while copy.open_for_work() {
            let permit = match Arc::clone(&self.chunks_in_memory).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // Chunks in memory are at the limit: the previous one's high watermark must
                    // go out now, or the session could never release them.
                    if let Some(high) = high.take() {
                        reader.watermark(&high).await?;
                    }
                    Arc::clone(&self.chunks_in_memory)
                        .acquire_owned()
                        .await
                        .map_err(|_| PipelineError::transient("shutdown", "snapshot stopped"))?
                }
            };
            let id = format!(
                "{}-{}",
                self.run_id,
                self.counter.fetch_add(1, Ordering::Relaxed)
            );
            let low = format!("low {id} {}", copy.table);
            if let Some((from, through)) = copy.claim_hole() {
                write_low(reader, &mut high, low).await?;
                let rows = reader.read_chunk(&from, Some(&through), 0).await?;
                let chunk = ChunkRead {
                    id: id.clone(),
                    span: ChunkSpan {
                        table: copy.table.clone(),
                        generation: copy.generation,
                        from,
                        to: Cursor::After(through),
                        rows: rows.events.len() as u64,
                    },
                    events: rows.events,
                    _permit: permit,
                };
                if self.tx.send(WorkerReport::Chunk(chunk)).await.is_err() {
                    return Ok(()); // the session ended
                }
                high = Some(format!("high {id} {}", copy.table));
                continue;
            }
            let limit = if opened.keyed { sizer.limit() } else { 0 };
            let mut frontier = copy.frontier.lock().await;
            let from = frontier.clone();
            if from == Cursor::Done {
                break;
            }
            let shared = limit > 0 && copy.workers.load(Ordering::SeqCst) > 1;
            let (events, to) = if shared {
                // Claim the chunk up to the key `limit` rows on, and let the next worker go.
                let through = reader.boundary(&from, limit).await?;
                let to = through.clone().map_or(Cursor::Done, Cursor::After);
                copy.claim(&mut frontier, &to);
                drop(frontier);
                write_low(reader, &mut high, low).await?;
                let rows = reader.read_chunk(&from, through.as_deref(), 0).await?;
                (rows.events, to)
            } else {
                write_low(reader, &mut high, low).await?;
                let rows = reader.read_chunk(&from, None, limit).await?;
                let to = match rows.last_key {
                    Some(last) if limit > 0 && rows.events.len() >= limit => Cursor::After(last),
                    _ => Cursor::Done,
                };
                copy.claim(&mut frontier, &to);
                drop(frontier);
                (rows.events, to)
            };
            sizer.read(&events);
            let read = events.len() as u64;
            let chunk = ChunkRead {
                id: id.clone(),
                span: ChunkSpan {
                    table: copy.table.clone(),
                    generation: copy.generation,
                    from,
                    to,
                    rows: read,
                },
                events,
                _permit: permit,
            };
            if self.tx.send(WorkerReport::Chunk(chunk)).await.is_err() {
                return Ok(()); // the session ended
            }
            high = Some(format!("high {id} {}", copy.table));
        }
        if let Some(high) = high {
            reader.watermark(&high).await?;
        }
        Ok(())
    }
}

/// Writes a chunk's low watermark, after the previous chunk's high one in the same transaction
/// (one round trip and one commit flush for both).
async fn write_low(
    reader: &mut dyn ChunkReader,
    high: &mut Option<String>,
    low: String,
) -> Result<(), PipelineError> {
    match high.take() {
        Some(high) => reader.watermarks(&[high, low]).await,
        None => reader.watermark(&low).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Op, Row, Value};

    /// A snapshot row with one text column of `width` bytes.
    fn row(width: usize) -> ChangeEvent {
        let mut event = crate::testing::pg_change(Op::Insert, "t", 1, 1, 0);
        event.after = Some(Row(vec![(
            crate::name::Name::new("v"),
            Value::Text("x".repeat(width)),
        )]));
        event
    }

    #[test]
    fn chunks_start_small_then_follow_the_row_width_up_to_chunk_rows() {
        let mut sizer = ChunkSizer::new(5_000);
        assert_eq!(sizer.limit(), FIRST_CHUNK_ROWS);
        // Narrow rows (about 230 bytes counted, 9,000 in CHUNK_BYTES): the configured rows are
        // the limit.
        sizer.read(&vec![row(10); 500]);
        assert_eq!(sizer.limit(), 5_000);

        // Wide rows: about CHUNK_BYTES of them.
        let mut sizer = ChunkSizer::new(10_000);
        let wide = vec![row(4000); 100];
        let bytes: usize = wide.iter().map(ChangeEvent::approx_size).sum();
        sizer.read(&wide);
        assert_eq!(sizer.limit(), CHUNK_BYTES / (bytes / 100));
        assert!(sizer.limit() < 1000);

        // Rows wider than a whole chunk: one at a time.
        let mut sizer = ChunkSizer::new(10_000);
        sizer.read(&[row(CHUNK_BYTES * 2)]);
        assert_eq!(sizer.limit(), 1);

        // A small chunk_rows is kept from the first chunk on.
        assert_eq!(ChunkSizer::new(100).limit(), 100);
    }
}
