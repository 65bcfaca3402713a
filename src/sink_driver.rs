//! Drives a sink and keeps the checkpoint: the half of the pipeline behind the channel.
//!
//! ```text
//!  channel ─▶ Sink::write ─▶ (at a transaction boundary, every flush interval) Sink::flush
//!                                   ─▶ state store (fsync) ─▶ `confirmed` ─▶ source confirms upstream
//! ```
//!
//! The rule of the architecture lives here: a position is recorded and confirmed only after the
//! sink has made every change up to it durable, and the checkpoint never moves backwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cdc_core::{Checkpoint, Envelope, PipelineError, Position, Sink, SourceMessage};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::status::LiveStatus;
use crate::store::{PipelineMeta, StateStore, TableCount};

/// Batches taken from the channel per write.
const BATCH: usize = 16;

pub struct SinkDriver {
    pub sink: Box<dyn Sink>,
    pub store: Arc<StateStore>,
    pub pipeline: String,
    pub meta: PipelineMeta,
    pub confirmed: watch::Sender<Option<Position>>,
    pub live: Arc<LiveStatus>,
    pub flush_interval: Duration,
    /// The checkpoint already recorded: a new one is saved only if it moves forward.
    pub saved: Option<Checkpoint>,
}

impl SinkDriver {
    /// Runs until the source side closes the channel, then flushes what ends on a transaction
    /// boundary. Returns the sink's error, if any: the runtime decides whether to retry.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Envelope>) -> Result<(), PipelineError> {
        let mut envelopes = Vec::with_capacity(BATCH);
        let mut messages = Vec::with_capacity(BATCH);
        let mut permits = Vec::with_capacity(BATCH);
        let mut pending: Option<Checkpoint> = None;
        let mut at_boundary = true;
        let mut last_flush = Instant::now();
        let mut counts = TableCounts::default();
        loop {
            let flush_due = last_flush + self.flush_interval;
            let received = tokio::select! {
                n = rx.recv_many(&mut envelopes, BATCH) => n,
                _ = tokio::time::sleep_until(flush_due), if pending.is_some() && at_boundary => {
                    self.flush(pending.take(), &mut counts).await?;
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
                for message in batch {
                    match &message {
                        SourceMessage::Change(event) => {
                            at_boundary = false;
                            counts.count(event);
                        }
                        SourceMessage::Commit {
                            position,
                            resume_from,
                            commit_ts,
                        } => {
                            at_boundary = true;
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
            let batch = std::mem::replace(&mut messages, Vec::with_capacity(BATCH * 256));
            self.sink.write_owned(batch).await?;
            // The bytes are written (or buffered by the sink): the source may read on.
            permits.clear();
            if at_boundary && pending.is_some() && last_flush.elapsed() >= self.flush_interval {
                self.flush(pending.take(), &mut counts).await?;
                last_flush = Instant::now();
            }
        }
        if at_boundary && pending.is_some() {
            self.flush(pending.take(), &mut counts).await?;
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        checkpoint: Option<Checkpoint>,
        counts: &mut TableCounts,
    ) -> Result<(), PipelineError> {
        self.sink.flush().await?;
        let counts = counts.take();
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
        let _ = self.confirmed.send(Some(checkpoint.resume_from.clone()));
        self.saved = Some(checkpoint);
        Ok(())
    }
}

/// Changes per (table, snapshot) since the last flush. The last table is remembered so that a
/// run of changes to one table costs no lookup or allocation per change.
#[derive(Default)]
struct TableCounts {
    current: Option<(Arc<str>, Arc<str>, bool, u64)>,
    done: BTreeMap<(String, bool), u64>,
}

impl TableCounts {
    fn count(&mut self, event: &cdc_core::ChangeEvent) {
        let s = &event.source;
        if let Some((schema, table, snapshot, n)) = &mut self.current {
            if Arc::ptr_eq(schema, &s.schema)
                && Arc::ptr_eq(table, &s.table)
                && *snapshot == s.snapshot
            {
                *n += 1;
                return;
            }
        }
        self.settle();
        self.current = Some((Arc::clone(&s.schema), Arc::clone(&s.table), s.snapshot, 1));
    }

    fn settle(&mut self) {
        if let Some((schema, table, snapshot, n)) = self.current.take() {
            *self
                .done
                .entry((format!("{schema}.{table}"), snapshot))
                .or_default() += n;
        }
    }

    fn take(&mut self) -> BTreeMap<(String, bool), u64> {
        self.settle();
        std::mem::take(&mut self.done)
    }
}
