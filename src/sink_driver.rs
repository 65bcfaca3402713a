//! Drives a sink and keeps the checkpoint: the half of the pipeline behind the channel.
//!
//! ```text
//!  channel ─▶ Masker (column filters, masks) ─▶ Sink::write
//!          ─▶ (at a transaction boundary: nothing more waiting, or the flush
//!              interval passed) Sink::flush
//!                                   ─▶ state store (fsync) ─▶ `confirmed` ─▶ source confirms upstream
//! ```
//!
//! Group commit: a flush starts as soon as the driver has written everything the channel holds
//! and stands at a transaction boundary, so a light load is durable within milliseconds of its
//! commit. Changes that arrive during a flush wait in the channel and go into the next one, so
//! under a heavy load each flush takes more: batches grow with the load, no setting needed.
//! Under a load that never lets the channel empty, the flush interval bounds the wait.
//!
//! The rule of the architecture lives here: a position is recorded and confirmed only after the
//! sink has made every change up to it durable, and the checkpoint never moves backwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cdc_core::{Checkpoint, Envelope, PipelineError, Position, Sink, SourceMessage};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::status::LiveStatus;
use crate::store::{PipelineMeta, StateStore, TableCount};

/// Batches taken from the channel per write.
const BATCH: usize = 16;
/// Messages per write, at most.
const BATCH_CAPACITY: usize = BATCH * cdc_core::pipeline::BATCH_MESSAGES;

pub struct SinkDriver {
    pub sink: Box<dyn Sink>,
    pub store: Arc<StateStore>,
    pub pipeline: String,
    pub meta: PipelineMeta,
    pub confirmed: watch::Sender<Option<Position>>,
    pub live: Arc<LiveStatus>,
    pub metrics: Arc<Metrics>,
    pub flush_interval: Duration,
    /// The checkpoint already recorded: a new one is saved only if it moves forward.
    pub saved: Option<Checkpoint>,
    /// The `[[table]]` rules: every change passes here, snapshot rows and streamed changes
    /// alike, before the sink sees it.
    pub masker: cdc_core::columns::Masker,
}

impl SinkDriver {
    /// Runs until the source side closes the channel, then flushes what ends on a transaction
    /// boundary. Returns the sink's error, if any: the runtime decides whether to retry.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Envelope>) -> Result<(), PipelineError> {
        let mut envelopes = Vec::with_capacity(BATCH);
        let mut messages = Vec::with_capacity(BATCH_CAPACITY);
        let mut permits = Vec::with_capacity(BATCH);
        let mut pending: Option<Checkpoint> = None;
        let mut at_boundary = true;
        let mut last_flush = Instant::now();
        let mut counts = TableCounts::default();
        let mut read = TableCounts::default();
        // Commit times of the transactions received and not yet durable (for the latency
        // histogram), bounded: past the cap the rest go unobserved.
        let mut commit_times: Vec<i64> = Vec::new();
        let masking = !self.masker.is_empty();
        loop {
            let flush_due = last_flush + self.flush_interval;
            let received = tokio::select! {
                n = rx.recv_many(&mut envelopes, BATCH) => n,
                _ = tokio::time::sleep_until(flush_due), if pending.is_some() && at_boundary => {
                    self.flush(pending.take(), &mut counts, &mut commit_times).await?;
                    last_flush = Instant::now();
                    continue;
                }
            };
            if received == 0 {
                break;
            }
            for envelope in envelopes.drain(..) {
                let (batch, permit) = envelope.into_parts();
                permits.push(permit);
                for mut message in batch {
                    if masking {
                        if let SourceMessage::Change(event) = &mut message {
                            self.masker.apply(event)?;
                        }
                    }
                    match &message {
                        SourceMessage::Change(event) => {
                            at_boundary = false;
                            counts.count(event);
                            read.count(event);
                        }
                        SourceMessage::Commit {
                            position,
                            resume_from,
                            commit_ts,
                        } => {
                            at_boundary = true;
                            if commit_times.len() < MAX_LATENCY_SAMPLES {
                                if let Some(micros) = commit_ts
                                    .as_deref()
                                    .and_then(cdc_core::time::parse_utc_micros)
                                {
                                    commit_times.push(micros);
                                }
                            }
                            pending = Some(Checkpoint {
                                resume_from: resume_from.clone(),
                                last_commit: Some(position.clone()),
                                last_commit_ts: commit_ts.as_deref().map(str::to_string),
                            });
                        }
                        SourceMessage::Progress { resume_from } => {
                            let previous = pending.as_ref().or(self.saved.as_ref());
                            pending = Some(Checkpoint {
                                resume_from: resume_from.clone(),
                                last_commit: previous.and_then(|c| c.last_commit.clone()),
                                last_commit_ts: previous.and_then(|c| c.last_commit_ts.clone()),
                            });
                        }
                    }
                    messages.push(message);
                }
            }
            self.metrics.add_read(&by_table_and_op(&read.take()));
            self.metrics.set_in_flight(commit_times.len() as u64);
            self.sink.write_owned(&mut messages).await?;
            // Refilled next time: the allocation is kept (see `Sink::write_owned`).
            messages.clear();
            if messages.capacity() == 0 {
                messages.reserve(BATCH_CAPACITY);
            }
            // The bytes are written (or buffered by the sink): the source may read on.
            permits.clear();
            let idle = rx.is_empty();
            if at_boundary
                && pending.is_some()
                && (idle || last_flush.elapsed() >= self.flush_interval)
            {
                self.flush(pending.take(), &mut counts, &mut commit_times)
                    .await?;
                last_flush = Instant::now();
            }
        }
        if at_boundary && pending.is_some() {
            self.flush(pending.take(), &mut counts, &mut commit_times)
                .await?;
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        checkpoint: Option<Checkpoint>,
        counts: &mut TableCounts,
        commit_times: &mut Vec<i64>,
    ) -> Result<(), PipelineError> {
        self.sink.flush().await?;
        let now = cdc_core::time::now_micros();
        self.metrics.observe_latency(
            commit_times
                .drain(..)
                .map(|ts| (now - ts) as f64 / 1_000_000.0),
        );
        self.metrics.set_in_flight(0);
        let detailed = counts.take();
        self.metrics.add_applied(&by_table_and_op(&detailed));
        let mut counts: BTreeMap<(String, bool), u64> = BTreeMap::new();
        for ((table, snapshot, _), n) in detailed {
            *counts.entry((table, snapshot)).or_default() += n;
        }
        self.live.count_events(&counts);
        for ((table, snapshot), n) in counts.iter() {
            self.meta.events_total += n;
            let entry = match self.meta.tables.iter().position(|t| &t.table == table) {
                Some(i) => &mut self.meta.tables[i],
                None => {
                    self.meta.tables.push(TableCount {
                        table: table.clone(),
                        ..Default::default()
                    });
                    let last = self.meta.tables.len() - 1;
                    &mut self.meta.tables[last]
                }
            };
            entry.events_total += n;
            if *snapshot {
                entry.rows_snapshotted += n;
            }
        }
        let Some(checkpoint) = checkpoint else {
            return Ok(());
        };
        if let Some(saved) = &self.saved {
            let forward = checkpoint
                .resume_from
                .try_cmp(&saved.resume_from)
                .map_err(|e| PipelineError::definite("config", e.to_string()))?;
            if forward.is_le() {
                return Ok(());
            }
        }
        let store_error =
            |e: crate::store::StoreError| PipelineError::definite("state", e.to_string());
        self.store
            .save_meta_unsynced(&self.pipeline, &self.meta)
            .map_err(store_error)?;
        self.store
            .save_checkpoint(&self.pipeline, &checkpoint)
            .await
            .map_err(store_error)?;
        tracing::debug!(resume_from = %checkpoint.resume_from, "checkpoint saved");
        self.live.set_confirmed(&checkpoint);
        self.metrics.checkpoint_saved();
        let _ = self.confirmed.send(Some(checkpoint.resume_from.clone()));
        self.saved = Some(checkpoint);
        Ok(())
    }
}

/// Changes per (table, snapshot) since the last flush. The last table is remembered so that a
/// run of changes to one table costs no lookup or allocation per change.
#[derive(Default)]
struct TableCounts {
    current: Option<Run>,
    done: BTreeMap<(String, bool, &'static str), u64>,
}

/// A run of changes to one table, of one op, snapshot or not.
struct Run {
    schema: cdc_core::Name,
    table: cdc_core::Name,
    snapshot: bool,
    op: &'static str,
    n: u64,
}

/// Latency observations kept between two flushes at most.
const MAX_LATENCY_SAMPLES: usize = 4096;

/// Counts by (table, op), snapshot reads and streamed changes together.
fn by_table_and_op(
    counts: &BTreeMap<(String, bool, &'static str), u64>,
) -> BTreeMap<(String, &'static str), u64> {
    let mut out = BTreeMap::new();
    for ((table, _, op), n) in counts {
        *out.entry((table.clone(), *op)).or_default() += n;
    }
    out
}

impl TableCounts {
    fn count(&mut self, event: &cdc_core::ChangeEvent) {
        let s = &event.source;
        let op = event.op.as_str();
        if let Some(run) = &mut self.current {
            if run.schema == s.schema
                && run.table == s.table
                && run.snapshot == s.snapshot
                && run.op == op
            {
                run.n += 1;
                return;
            }
        }
        self.settle();
        self.current = Some(Run {
            schema: s.schema,
            table: s.table,
            snapshot: s.snapshot,
            op,
            n: 1,
        });
    }

    fn settle(&mut self) {
        if let Some(run) = self.current.take() {
            *self
                .done
                .entry((
                    format!("{}.{}", run.schema, run.table),
                    run.snapshot,
                    run.op,
                ))
                .or_default() += run.n;
        }
    }

    fn take(&mut self) -> BTreeMap<(String, bool, &'static str), u64> {
        self.settle();
        std::mem::take(&mut self.done)
    }
}
