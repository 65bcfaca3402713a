//! What flows between a source and a sink, and the traits both implement.
//!
//! ```text
//!  Source::stream ──▶ EventSender ══bounded (events and bytes)══▶ runtime ──▶ Sink::write
//!        ▲               (drops what the sink already has)                      │
//!        └──── confirmed resume position ◀── checkpointer ◀── Sink::flush ◀─────┘
//! ```
//!
//! A source emits [`SourceMessage`]s in commit order: the changes of one transaction followed by
//! its [`SourceMessage::Commit`]. The runtime flushes a sink only at transaction boundaries, so a
//! durable position is always a whole number of source transactions.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::error::PipelineError;
use crate::event::ChangeEvent;
use crate::position::Position;

#[derive(Clone, Debug, PartialEq)]
pub enum SourceMessage {
    Change(ChangeEvent),
    /// The end of a source transaction.
    Commit {
        /// The transaction's position (the one its events carry).
        position: Position,
        /// Where the source must restart for the next transaction (Postgres: end of the commit
        /// record; MySQL: the event after the XID).
        resume_from: Position,
        commit_ts: Option<Arc<str>>,
    },
    /// Nothing is in flight up to here (a Postgres keepalive's WAL end): the checkpoint may advance
    /// even though no change was sent, so an idle slot does not pin WAL.
    Progress {
        resume_from: Position,
    },
}

impl SourceMessage {
    fn approx_size(&self) -> usize {
        match self {
            SourceMessage::Change(event) => event.approx_size(),
            _ => 64,
        }
    }
}

/// How far a sink (or the pipeline) has come: a transaction position, and within it the last
/// change's ordinal (`None`: the whole transaction).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    pub position: Position,
    pub seq: Option<u64>,
}

impl ResumePoint {
    /// True if a change at (`position`, `seq`) is at or before this point (already delivered).
    pub fn covers_change(&self, position: &Position, seq: u64) -> Result<bool, PipelineError> {
        covers(&self.position, self.seq, position, Some(seq))
    }

    /// True if the commit of the transaction at `position` was already delivered.
    pub fn covers_commit(&self, position: &Position) -> Result<bool, PipelineError> {
        covers(&self.position, self.seq, position, None)
    }
}

/// True if a change (`seq` Some) or a commit (`seq` None) at `position` is at or before the point
/// (`done`, `done_seq`): a whole transaction when `done_seq` is None.
fn covers(
    done: &Position,
    done_seq: Option<u64>,
    position: &Position,
    seq: Option<u64>,
) -> Result<bool, PipelineError> {
    Ok(match position.try_cmp(done).map_err(position_error)? {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => match (done_seq, seq) {
            (None, _) => true,
            (Some(done), Some(seq)) => seq <= done,
            (Some(_), None) => false,
        },
    })
}

/// The stream order before which every transaction is durable in the sink, for deciding which
/// snapshot chunks are done: the checkpoint's, or the sink's own resume point where that is
/// further (the checkpoint trails the sink by a flush and more under load, and a chunk the sink
/// already holds must not be copied again). `order` maps a position to the source's stream
/// order. A resume point inside a transaction (`seq` Some) covers only the transactions before
/// it: that one may hold a part of a chunk. Entries strictly below the result are durable.
pub fn durable_stream_order(
    checkpoint: Option<&Position>,
    sink: Option<&ResumePoint>,
    order: impl Fn(&Position) -> Option<u64>,
) -> Option<u64> {
    let from_checkpoint = checkpoint.and_then(&order);
    let from_sink = sink.and_then(|point| {
        let at = order(&point.position)?;
        Some(match point.seq {
            Some(_) => at,
            None => at.saturating_add(1),
        })
    });
    from_checkpoint.max(from_sink)
}

fn position_error(e: crate::position::PositionError) -> PipelineError {
    PipelineError::definite("config", e.to_string())
}

/// What the checkpointer records once a sink has made everything up to it durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Where the source restarts.
    pub resume_from: Position,
    /// The newest transaction made durable, if any.
    pub last_commit: Option<Position>,
    pub last_commit_ts: Option<String>,
}

/// Messages a source sends at once: passing batches instead of single changes keeps the cost of
/// the channel (and of waking the sink) off the per-row path.
pub const BATCH_MESSAGES: usize = 256;
/// Bytes of row data that close a batch early (wide rows).
const BATCH_BYTES: usize = 256 << 10;

/// A batch of messages with its share of the pipeline's memory budget, returned when the sink has
/// written it.
pub struct Envelope {
    messages: Vec<SourceMessage>,
    budget: Option<OwnedSemaphorePermit>,
}

/// Memory a batch holds in the pipeline; dropping it gives the bytes back to the source.
pub struct BudgetPermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Envelope {
    pub fn into_parts(self) -> (Vec<SourceMessage>, BudgetPermit) {
        (self.messages, BudgetPermit(self.budget))
    }
}

/// The source's end of the pipeline channel.
///
/// Bounded twice: by batch count (the channel) and by bytes (a semaphore of byte permits held
/// until the sink has written the batch), so a run of large rows cannot exhaust memory. It also
/// drops what the sink already has, so a source may replay from an older position after a
/// reconnect or restart without the sink seeing a change twice.
///
/// Changes are batched; a transaction boundary (commit or progress) always goes out at once, so
/// the sink never waits on a batch to learn that a transaction is complete.
pub struct EventSender {
    tx: mpsc::Sender<Envelope>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// What the sink has been sent (or already had).
    delivered: Option<ResumePoint>,
    pending: Vec<SourceMessage>,
    pending_bytes: usize,
}

/// The channel between a source and the sink runtime: at most about `max_messages` messages
/// and `max_bytes` bytes of row data in flight.
pub fn channel(
    max_messages: usize,
    max_bytes: usize,
    delivered: Option<ResumePoint>,
) -> (EventSender, mpsc::Receiver<Envelope>) {
    let (tx, rx) = mpsc::channel((max_messages / BATCH_MESSAGES).max(1));
    let budget_bytes = max_bytes.clamp(1024, Semaphore::MAX_PERMITS);
    (
        EventSender {
            tx,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            delivered,
            pending: Vec::with_capacity(BATCH_MESSAGES),
            pending_bytes: 0,
        },
        rx,
    )
}

/// The receiving side closed: the pipeline is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline is shutting down")]
pub struct ChannelClosed;

impl EventSender {
    /// Sends a message, waiting while the sink is behind. Messages the sink already has are
    /// dropped here.
    pub async fn send(&mut self, message: SourceMessage) -> Result<(), PipelineError> {
        if self.already_sent(&message)? {
            return Ok(());
        }
        let boundary = !matches!(message, SourceMessage::Change(_));
        self.pending_bytes += message.approx_size();
        self.pending.push(message);
        if boundary || self.pending.len() >= BATCH_MESSAGES || self.pending_bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands the pending batch to the sink side.
    pub async fn flush(&mut self) -> Result<(), PipelineError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let cost = self.pending_bytes.min(self.budget_bytes);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(cost as u32)
            .await
            .map_err(|_| closed())?;
        let reached = self.reached().map(|(position, seq)| ResumePoint {
            position: position.clone(),
            seq,
        });
        let messages = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_MESSAGES));
        self.pending_bytes = 0;
        self.tx
            .send(Envelope {
                messages,
                budget: Some(permit),
            })
            .await
            .map_err(|_| closed())?;
        if reached.is_some() {
            self.delivered = reached;
        }
        Ok(())
    }

    /// True if the message is at or before what was already sent (or pending).
    fn already_sent(&self, message: &SourceMessage) -> Result<bool, PipelineError> {
        let Some((done, done_seq)) = self.reached() else {
            return Ok(false);
        };
        match message {
            SourceMessage::Change(e) => {
                covers(done, done_seq, &e.source.position, Some(e.source.seq))
            }
            SourceMessage::Commit { position, .. } => covers(done, done_seq, position, None),
            SourceMessage::Progress { .. } => Ok(false),
        }
    }

    /// How far the pending batch reaches, else what was sent before it: (position, last change's
    /// ordinal; None for a whole transaction). Read off the messages rather than kept, so the
    /// hot path clones no position per change.
    fn reached(&self) -> Option<(&Position, Option<u64>)> {
        for message in self.pending.iter().rev() {
            match message {
                SourceMessage::Change(e) => return Some((&e.source.position, Some(e.source.seq))),
                SourceMessage::Commit { position, .. } => return Some((position, None)),
                SourceMessage::Progress { .. } => {}
            }
        }
        self.delivered.as_ref().map(|d| (&d.position, d.seq))
    }

    /// Bytes of the budget in use now (buffered, not yet written by the sink).
    pub fn buffered_bytes(&self) -> usize {
        self.budget_bytes - self.budget.available_permits()
    }

    /// A handle that reads [`EventSender::buffered_bytes`] from elsewhere (metrics).
    pub fn buffer_gauge(&self) -> BufferGauge {
        BufferGauge {
            budget: Arc::clone(&self.budget),
            total: self.budget_bytes,
        }
    }
}

/// The bytes of row data buffered between a source and its sink right now.
#[derive(Clone, Debug)]
pub struct BufferGauge {
    budget: Arc<Semaphore>,
    total: usize,
}

impl BufferGauge {
    pub fn bytes(&self) -> usize {
        self.total.saturating_sub(self.budget.available_permits())
    }
}

fn closed() -> PipelineError {
    PipelineError::transient("shutdown", ChannelClosed.to_string())
}

/// What a streaming source is given besides its output.
pub struct StreamContext {
    /// The newest resume position the checkpointer has made durable: the only one a source may
    /// confirm upstream.
    pub confirmed: watch::Receiver<Option<Position>>,
    /// Turns true on SIGINT/SIGTERM: stop reading, let the sink catch up, confirm, return `Ok`.
    pub shutdown: watch::Receiver<bool>,
    /// What the source tells the agent about the server while it streams.
    pub progress: Arc<SourceProgress>,
    /// What the sink said it holds when it opened (`Sink::open`): with the checkpoint, what
    /// decides which snapshot chunks are durable (see [`durable_stream_order`]).
    pub sink_resume: Option<ResumePoint>,
}

/// The source's view of the server, for `status` and metrics.
#[derive(Debug, Default)]
pub struct SourceProgress {
    head: Mutex<Option<Position>>,
    last_commit_sent: Mutex<Option<Position>>,
    streaming: AtomicBool,
    snapshotting: AtomicBool,
    /// Rows a snapshot expects to copy, by `schema.table`.
    snapshot_estimates: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Tables whose (chunked) snapshot is running now.
    snapshot_tables: Mutex<std::collections::BTreeSet<String>>,
    /// False when an interrupted snapshot starts its table over (one consistent transaction).
    snapshot_resumable: AtomicBool,
}

impl SourceProgress {
    /// The server's current end of log, as last reported by it.
    /// How many rows the snapshot of `table` (`schema.table`) expects to copy.
    pub fn set_snapshot_estimate(&self, table: String, rows: u64) {
        if let Ok(mut map) = self.snapshot_estimates.lock() {
            map.insert(table, rows);
        }
    }

    pub fn snapshot_estimates(&self) -> std::collections::BTreeMap<String, u64> {
        self.snapshot_estimates
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub fn set_head(&self, head: Position) {
        if let Ok(mut slot) = self.head.lock() {
            *slot = Some(head);
        }
    }

    pub fn head(&self) -> Option<Position> {
        self.head.lock().ok().and_then(|h| h.clone())
    }

    /// The newest transaction the source has sent down the pipeline.
    pub fn set_last_commit_sent(&self, position: Position) {
        if let Ok(mut slot) = self.last_commit_sent.lock() {
            *slot = Some(position);
        }
    }

    pub fn last_commit_sent(&self) -> Option<Position> {
        self.last_commit_sent.lock().ok().and_then(|p| p.clone())
    }

    /// True once the source is connected and reading the change stream.
    pub fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, AtomicOrdering::Relaxed);
    }

    pub fn is_streaming(&self) -> bool {
        self.streaming.load(AtomicOrdering::Relaxed)
    }

    /// True while the source copies existing rows.
    pub fn set_snapshotting(&self, snapshotting: bool) {
        self.snapshotting
            .store(snapshotting, AtomicOrdering::Relaxed);
    }

    /// True while the source copies existing rows (a whole-snapshot copy, or any table's chunks).
    pub fn is_snapshotting(&self) -> bool {
        self.snapshotting.load(AtomicOrdering::Relaxed)
            || self.snapshot_tables.lock().is_ok_and(|t| !t.is_empty())
    }

    /// Marks one table's chunked snapshot as running or finished.
    pub fn set_table_snapshotting(&self, table: &str, running: bool) {
        if let Ok(mut tables) = self.snapshot_tables.lock() {
            if running {
                tables.insert(table.to_string());
            } else {
                tables.remove(table);
            }
        }
    }

    /// The tables whose snapshot runs now (empty during a whole-snapshot copy: see
    /// [`SourceProgress::is_snapshotting`]).
    pub fn snapshotting_tables(&self) -> std::collections::BTreeSet<String> {
        self.snapshot_tables
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Whether a snapshot interrupted mid-table resumes at its next chunk.
    pub fn set_snapshot_resumable(&self, resumable: bool) {
        self.snapshot_resumable
            .store(resumable, AtomicOrdering::Relaxed);
    }

    pub fn snapshot_resumable(&self) -> bool {
        self.snapshot_resumable.load(AtomicOrdering::Relaxed)
    }
}

/// A change source: streams [`SourceMessage`]s in commit order.
#[async_trait]
pub trait Source: Send {
    /// Streams from `resume_from` (None: from where the source itself stands, e.g. the slot)
    /// until shutdown (then returns `Ok`) or an error.
    async fn stream(
        &mut self,
        resume_from: Option<Position>,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError>;
}

/// A change sink.
#[async_trait]
pub trait Sink: Send {
    /// Prepares the target and says how far it already is (`None`: it keeps no position).
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError>;

    /// Writes messages in order. May buffer; nothing is durable before [`Sink::flush`].
    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError>;

    /// [`Sink::write`], with the messages to take: a sink that keeps rows (a warehouse batch)
    /// takes them without copying, leaving the vector empty or swapping in one of its own. What
    /// is left in it is dropped by the caller, which refills the same vector: a batch vector
    /// (thousands of messages) freed and allocated again per write made glibc's allocator
    /// consolidate its free lists every time. The runtime calls this one.
    async fn write_owned(
        &mut self,
        messages: &mut Vec<SourceMessage>,
    ) -> Result<(), PipelineError> {
        self.write(messages).await
    }

    /// Makes everything written so far durable. Only called at a transaction boundary.
    async fn flush(&mut self) -> Result<(), PipelineError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lsn;

    fn pg(lsn: u64) -> Position {
        Position::Postgres { lsn: Lsn(lsn) }
    }

    fn order(position: &Position) -> Option<u64> {
        match position {
            Position::Postgres { lsn } => Some(lsn.0),
            _ => None,
        }
    }

    #[test]
    fn chunks_count_as_durable_up_to_the_further_of_checkpoint_and_sink() {
        let point = |lsn, seq| ResumePoint {
            position: pg(lsn),
            seq,
        };
        assert_eq!(durable_stream_order(None, None, order), None);
        assert_eq!(durable_stream_order(Some(&pg(100)), None, order), Some(100));
        // The sink holds more than the checkpoint says: its point wins.
        assert_eq!(
            durable_stream_order(Some(&pg(100)), Some(&point(500, None)), order),
            Some(501),
        );
        // Inside a transaction: that transaction may hold half a chunk, so only those before.
        assert_eq!(
            durable_stream_order(Some(&pg(100)), Some(&point(500, Some(3))), order),
            Some(500),
        );
        // A sink behind the checkpoint (it keeps nothing, or lost its file) changes nothing.
        assert_eq!(
            durable_stream_order(Some(&pg(900)), Some(&point(500, None)), order),
            Some(900),
        );
        assert_eq!(
            durable_stream_order(None, Some(&point(500, Some(0))), order),
            Some(500)
        );
    }
}
