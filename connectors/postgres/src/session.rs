//! One replication connection's streaming session: XLogData decoded into change events,
//! keepalives answered, and the confirmed position fed back to the server.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use cdc_core::chunked::ChunkedSnapshot;
use cdc_core::{
    ChangeEvent, EventSender, Lsn, Name, Op, PipelineError, Position, Row, SourceKind,
    SourceMessage, SourceMeta, SourceProgress, StreamContext, Value,
};
use tokio::sync::watch;

use crate::chunked::WATERMARK_PREFIX;
use crate::errors::classify;
use crate::pgoutput::{self, Message, OldKind, StreamCommit, StreamMessage, Tuple, TupleValue};
use crate::schema::Relation;
use crate::source::PostgresSource;
use crate::streamed::StreamedTransactions;
use crate::values::decode_text;
use crate::wire::Connection;

/// How often the standby status update goes out; well under any sane wal_sender_timeout.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);
/// Every how many feedback ticks the publication is checked for tables with a column list that
/// left it ([`PostgresSource::restore_published_tables`]).
const PUBLICATION_CHECK_TICKS: u64 = 10;
/// How long a shutdown waits for the sink to make the last transactions durable.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The transaction being decoded.
struct OpenTransaction {
    position: Position,
    xid: u32,
    commit_ts: Arc<str>,
    seq: u64,
}

/// One replication connection's worth of state.
pub(crate) struct Session {
    repl: Connection,
    /// The chunked snapshot's workers and windows (watermark method only).
    snapshot: Option<ChunkedSnapshot>,
    relations: HashMap<u32, Arc<Relation>>,
    /// Bumped at each Relation message the cache takes; `relation_set_at` keeps, per relation,
    /// the epoch of its entry (see [`Session::replay_streamed`]).
    relation_epoch: u64,
    relation_set_at: HashMap<u32, u64>,
    /// Transactions sent before their commit, when the server streams them (protocol 2).
    streamed: Option<StreamedTransactions>,
    /// Inside a stream block: its top-level transaction.
    stream_block: Option<u32>,
    open: Option<OpenTransaction>,
    /// The newest WAL position received from the server.
    received: Lsn,
    /// The newest resume position sent down the pipeline (commit end or keepalive).
    forwarded: Lsn,
    /// What the checkpointer has made durable: the only position confirmed to the server.
    confirmed: watch::Receiver<Option<Position>>,
}

impl Session {
    pub(crate) fn new(
        repl: Connection,
        snapshot: Option<ChunkedSnapshot>,
        streamed: Option<StreamedTransactions>,
        start: Lsn,
        confirmed: watch::Receiver<Option<Position>>,
    ) -> Self {
        Session {
            repl,
            snapshot,
            relations: HashMap::new(),
            relation_epoch: 0,
            relation_set_at: HashMap::new(),
            streamed,
            stream_block: None,
            open: None,
            received: start,
            forwarded: start,
            confirmed,
        }
    }

    pub(crate) async fn run(
        &mut self,
        source: &mut PostgresSource,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        let mut feedback = tokio::time::interval(FEEDBACK_INTERVAL);
        feedback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let user = source.params.user.clone();
        let mut shutdown = context.shutdown.clone();
        let heartbeat_every = source.config.heartbeat_interval;
        let mut heartbeat =
            tokio::time::interval(heartbeat_every.unwrap_or(Duration::from_secs(3600)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat_failed = false;
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                biased;
                _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    return self.drain_and_close(context).await;
                }
                _ = heartbeat.tick(), if heartbeat_every.is_some() => {
                    // WAL of our own in this database: its keepalive then lets the slot advance
                    // even when nothing else is written here. Not fatal (a standby cannot write).
                    let sent = source
                        .catalog
                        .query("SELECT pg_logical_emit_message(false, 'cdc-agent-heartbeat', '')")
                        .await;
                    match sent {
                        Ok(_) => heartbeat_failed = false,
                        Err(e) if !heartbeat_failed => {
                            heartbeat_failed = true;
                            tracing::warn!(error = %e, "heartbeat write failed; the slot advances only with other writes");
                        }
                        Err(_) => {}
                    }
                }
                report = ChunkedSnapshot::next_report(&mut self.snapshot) => {
                    if let Some(snapshot) = self.snapshot.as_mut() {
                        snapshot.on_report(report)?;
                    }
                }
                _ = feedback.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(PUBLICATION_CHECK_TICKS) {
                        // A look at the catalog: a failure is retried at the next look, not a
                        // reason to stop streaming.
                        if let Err(e) = source.restore_published_tables().await {
                            tracing::warn!(error = %e, "checking the publication's tables failed");
                        }
                    }
                    if let Some(snapshot) = self.snapshot.as_mut() {
                        snapshot.poll_requests()?;
                    }
                    // Asking for a reply gets a keepalive back at once: its WAL end lets an idle
                    // pipeline confirm (and the slot release WAL) every second.
                    self.send_feedback(true).await?;
                }
                data = self.repl.read_copy_data() => {
                    let data = data.map_err(|e| classify(e, "reading the replication stream", &user))?;
                    let Some(data) = data else {
                        return Err(PipelineError::transient("connection", "the server ended the replication stream"));
                    };
                    self.handle(data, source, out, context).await?;
                }
            }
        }
    }

    async fn handle(
        &mut self,
        data: Bytes,
        source: &mut PostgresSource,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        match data.first() {
            Some(b'w') if data.len() >= 25 => {
                // The server's WAL end, for lag: once per transaction (at its commit) is enough.
                if matches!(data.get(25), Some(b'C' | b'c')) {
                    let wal_end = u64::from_be_bytes(data[9..17].try_into().unwrap_or_default());
                    context
                        .progress
                        .set_head(Position::Postgres { lsn: Lsn(wal_end) });
                }
                let start = u64::from_be_bytes(data[1..9].try_into().unwrap_or_default());
                self.received = self.received.max(Lsn(start));
                self.apply(&data[25..], source, out, &context.progress)
                    .await
            }
            Some(b'k') if data.len() >= 18 => {
                let wal_end = Lsn(u64::from_be_bytes(
                    data[1..9].try_into().unwrap_or_default(),
                ));
                let reply = data[17] == 1;
                context
                    .progress
                    .set_head(Position::Postgres { lsn: wal_end });
                self.received = self.received.max(wal_end);
                // Nothing is in flight between transactions: everything before the server's WAL
                // end has been sent, so it may be confirmed once what came before is durable.
                if self.open.is_none() && wal_end > self.forwarded {
                    self.forwarded = wal_end;
                    self.forward(
                        out,
                        SourceMessage::Progress {
                            resume_from: Position::Postgres { lsn: wal_end },
                        },
                    )
                    .await?;
                }
                if reply {
                    self.send_feedback(false).await?;
                }
                Ok(())
            }
            other => Err(PipelineError::transient(
                "decode",
                format!(
                    "unexpected replication message {:?} ({} bytes)",
                    other.map(|b| *b as char),
                    data.len()
                ),
            )),
        }
    }

    async fn apply(
        &mut self,
        payload: &[u8],
        source: &mut PostgresSource,
        out: &mut EventSender,
        progress: &SourceProgress,
    ) -> Result<(), PipelineError> {
        if let Some(streamed) = self.streamed.as_mut() {
            match pgoutput::decode_stream(payload).map_err(decode_error)? {
                Some(StreamMessage::Start { xid }) => {
                    self.stream_block = Some(xid);
                    return Ok(());
                }
                Some(StreamMessage::Stop) => {
                    self.stream_block = None;
                    return Ok(());
                }
                Some(StreamMessage::Abort { xid, subxid }) => {
                    return streamed.abort(xid, subxid).map_err(spill_error);
                }
                Some(StreamMessage::Commit(commit)) => {
                    return self.replay_streamed(commit, source, out, progress).await;
                }
                None => {
                    if let Some(xid) = self.stream_block {
                        return streamed
                            .append(xid, payload, self.relation_epoch)
                            .map_err(spill_error);
                    }
                }
            }
        }
        let message = pgoutput::decode(payload).map_err(decode_error)?;
        self.apply_message(message, source, out, progress).await
    }

    /// Stream Commit: the transaction's spilled messages go down the pipeline as one
    /// transaction, between a Begin and a Commit at its commit position, exactly as protocol 1
    /// would have sent it.
    ///
    /// The relation cache: the replay's Relation messages describe the relations as the
    /// transaction saw them, and the server counts them as sent once it commits. But a Relation
    /// message that reached the session outside the stream *after* one of the stream's (a later
    /// schema, sent for another transaction) is the newer: that relation's entry is put back.
    async fn replay_streamed(
        &mut self,
        commit: StreamCommit,
        source: &mut PostgresSource,
        out: &mut EventSender,
        progress: &SourceProgress,
    ) -> Result<(), PipelineError> {
        let StreamCommit {
            xid,
            commit_lsn,
            end_lsn,
            commit_ts,
        } = commit;
        let replay = match self.streamed.as_mut() {
            Some(streamed) => streamed.commit(xid).map_err(spill_error)?,
            None => None,
        };
        self.apply_message(
            Message::Begin {
                final_lsn: commit_lsn,
                commit_ts,
                xid,
            },
            source,
            out,
            progress,
        )
        .await?;
        if let Some(mut replay) = replay {
            let before = self.relations.clone();
            let set_before = self.relation_set_at.clone();
            let started = std::time::Instant::now();
            let mut last_feedback = started;
            let mut messages: u64 = 0;
            tracing::debug!(xid, commit = %Lsn(commit_lsn), "a streamed transaction committed: replaying it");
            while let Some(message) = replay.next().map_err(spill_error)? {
                messages += 1;
                let message = pgoutput::decode(message).map_err(decode_error)?;
                self.apply_message(message, source, out, progress).await?;
                // A replay of millions of changes reads nothing from the server meanwhile: it
                // must still hear from us within wal_sender_timeout.
                if last_feedback.elapsed() >= FEEDBACK_INTERVAL {
                    self.send_feedback(false).await?;
                    last_feedback = std::time::Instant::now();
                }
            }
            tracing::debug!(
                xid,
                messages,
                seconds = started.elapsed().as_secs_f64(),
                "streamed transaction replayed"
            );
            for (&oid, &arrived) in replay.relations() {
                if set_before.get(&oid).is_some_and(|&set| set > arrived) {
                    if let Some(newer) = before.get(&oid) {
                        self.relations.insert(oid, Arc::clone(newer));
                        self.relation_set_at.insert(oid, set_before[&oid]);
                    }
                }
            }
        }
        self.apply_message(
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
            },
            source,
            out,
            progress,
        )
        .await
    }

    async fn apply_message(
        &mut self,
        message: Message<'_>,
        source: &mut PostgresSource,
        out: &mut EventSender,
        progress: &SourceProgress,
    ) -> Result<(), PipelineError> {
        match message {
            Message::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => {
                self.open = Some(OpenTransaction {
                    position: Position::Postgres {
                        lsn: Lsn(final_lsn),
                    },
                    xid,
                    commit_ts: Arc::from(cdc_core::time::format_utc_micros(
                        commit_ts + PG_EPOCH_OFFSET_MICROS,
                    )),
                    seq: 0,
                });
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                let open = self.open.take();
                self.forwarded = self.forwarded.max(Lsn(end_lsn));
                progress.set_last_commit_sent(Position::Postgres {
                    lsn: Lsn(commit_lsn),
                });
                self.forward(
                    out,
                    SourceMessage::Commit {
                        position: Position::Postgres {
                            lsn: Lsn(commit_lsn),
                        },
                        resume_from: Position::Postgres { lsn: Lsn(end_lsn) },
                        commit_ts: open.map(|o| o.commit_ts),
                    },
                )
                .await?;
            }
            Message::Relation {
                oid,
                namespace,
                name,
                columns,
                ..
            } => {
                let relation = source.relation(oid, namespace, name, columns).await?;
                if source.catch_up_added_columns(&relation).await? {
                    if let Some(snapshot) = self.snapshot.as_mut() {
                        snapshot.poll_requests()?;
                    }
                }
                self.relations.insert(oid, Arc::new(relation));
                self.relation_epoch += 1;
                self.relation_set_at.insert(oid, self.relation_epoch);
            }
            Message::Type { oid, .. } => source.types.forget(oid),
            Message::Insert { relation, new } => {
                self.change(relation, Op::Insert, None, Some(new), &source.db, out)
                    .await?;
            }
            Message::Update { relation, old, new } => {
                self.change(relation, Op::Update, old, Some(new), &source.db, out)
                    .await?;
            }
            Message::Delete { relation, old } => {
                self.change(relation, Op::Delete, Some(old), None, &source.db, out)
                    .await?;
            }
            Message::Truncate { relations, .. } => {
                for oid in relations {
                    let rel = self.relation_for(oid)?;
                    if let Some(snapshot) = self.snapshot.as_mut() {
                        snapshot.observe_truncate(&rel.qualified());
                    }
                    if rel.included {
                        let event =
                            self.event(&rel, Op::Truncate, None, None, None, vec![], &source.db)?;
                        self.forward(out, SourceMessage::Change(event)).await?;
                    }
                }
            }
            Message::Message {
                prefix, content, ..
            } if prefix == WATERMARK_PREFIX => {
                self.watermark(&String::from_utf8_lossy(content), out)
                    .await?;
            }
            // Origins matter for bidirectional setups, other logical messages (heartbeats) are
            // not row changes.
            Message::Origin { .. } | Message::Message { .. } => {}
        }
        Ok(())
    }

    /// A watermark of the chunked snapshot: at a high one, the chunk's rows go out as snapshot
    /// inserts in the watermark's own transaction, and the table's progress is recorded at its
    /// position.
    async fn watermark(&mut self, text: &str, out: &mut EventSender) -> Result<(), PipelineError> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return Ok(());
        };
        let Some((span, events)) = snapshot.on_watermark(text)? else {
            return Ok(());
        };
        let open = self.open.as_mut().ok_or_else(|| {
            PipelineError::transient("decode", "a snapshot watermark outside a transaction")
        })?;
        let position = open.position.clone();
        let Position::Postgres { lsn } = position else {
            return Ok(());
        };
        let first_seq = open.seq;
        open.seq += events.len() as u64;
        // The progress entry is stored (and flushed) before the rows go out, so a sink can never
        // hold rows of a chunk the store does not know was sent; it counts only once the sink's
        // durable position or the checkpoint has passed `lsn`.
        if let Some(snapshot) = self.snapshot.as_ref() {
            snapshot.chunk_sent(&span, lsn.0)?;
        }
        for (seq, mut event) in (first_seq..).zip(events) {
            event.source.position = position.clone();
            event.source.seq = seq;
            self.forward(out, SourceMessage::Change(event)).await?;
        }
        Ok(())
    }

    fn relation_for(&self, oid: u32) -> Result<Arc<Relation>, PipelineError> {
        self.relations.get(&oid).cloned().ok_or_else(|| {
            PipelineError::transient(
                "decode",
                format!("change for relation {oid} before its Relation message"),
            )
        })
    }

    async fn change(
        &mut self,
        oid: u32,
        op: Op,
        old: Option<(OldKind, Tuple<'_>)>,
        new: Option<Tuple<'_>>,
        db: &Name,
        out: &mut EventSender,
    ) -> Result<(), PipelineError> {
        let rel = self.relation_for(oid)?;
        if !rel.included {
            return Ok(());
        }
        let (after, unchanged) = match &new {
            Some(tuple) => {
                let (row, unchanged) = build_row(&rel, tuple, false)?;
                (Some(row), unchanged)
            }
            None => (None, vec![]),
        };
        let before = match &old {
            Some((OldKind::Full, tuple)) => Some(build_row(&rel, tuple, false)?.0),
            Some((OldKind::Key, tuple)) => Some(build_row(&rel, tuple, true)?.0),
            // An update that kept its key, without full identity: the old key is the new key.
            None if op == Op::Update => after.as_ref().map(|a| key_of(&rel, a)),
            None => None,
        };
        let key = match (&after, &before) {
            (Some(a), _) => Some(key_of(&rel, a)),
            (None, Some(b)) => Some(key_of(&rel, b)),
            (None, None) => None,
        };
        if let Some(snapshot) = self.snapshot.as_mut().filter(|s| s.watching()) {
            // A chunk being read must not overwrite this change, under its new key or its old.
            let old_key = before.as_ref().map(|b| key_of(&rel, b));
            let keys: Vec<&Row> = key.iter().chain(old_key.iter()).collect();
            snapshot.observe(&rel.qualified(), &keys);
        }
        let event = self.event(&rel, op, key, before, after, unchanged, db)?;
        self.forward(out, SourceMessage::Change(event)).await
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        rel: &Relation,
        op: Op,
        key: Option<Row>,
        before: Option<Row>,
        after: Option<Row>,
        unchanged: Vec<Name>,
        db: &Name,
    ) -> Result<ChangeEvent, PipelineError> {
        let open = self.open.as_mut().ok_or_else(|| {
            PipelineError::transient("decode", "a row change outside a transaction")
        })?;
        let seq = open.seq;
        open.seq += 1;
        Ok(ChangeEvent {
            op,
            source: SourceMeta {
                kind: SourceKind::Postgres,
                db: *db,
                schema: rel.schema,
                table: rel.name,
                position: open.position.clone(),
                tx_id: Some(open.xid as u64),
                commit_ts: Some(Arc::clone(&open.commit_ts)),
                seq,
                snapshot: false,
            },
            key,
            before,
            after,
            unchanged,
            table_schema: Some(Arc::clone(&rel.table_schema)),
        })
    }

    /// Sends down the pipeline. While the sink is behind (the send waits), standby status updates
    /// keep going out, so the server does not take a slow sink for a dead client.
    async fn forward(
        &mut self,
        out: &mut EventSender,
        message: SourceMessage,
    ) -> Result<(), PipelineError> {
        let send = out.send(message);
        tokio::pin!(send);
        // Most sends complete at once (the batch is not full yet): no timer for those.
        if let Poll::Ready(result) =
            std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await
        {
            return result;
        }
        loop {
            tokio::select! {
                biased;
                result = &mut send => return result,
                _ = tokio::time::sleep(FEEDBACK_INTERVAL) => self.send_feedback(false).await?,
            }
        }
    }

    /// Standby status update: written up to what was received, flushed and applied only up to
    /// what the checkpointer has made durable.
    async fn send_feedback(&mut self, reply: bool) -> Result<(), PipelineError> {
        let confirmed = match &*self.confirmed.borrow() {
            Some(Position::Postgres { lsn }) => *lsn,
            _ => Lsn(0),
        };
        let now = cdc_core::time::now_micros() - PG_EPOCH_OFFSET_MICROS;
        let mut msg = Vec::with_capacity(34);
        msg.push(b'r');
        msg.extend_from_slice(&self.received.max(confirmed).0.to_be_bytes());
        msg.extend_from_slice(&confirmed.0.to_be_bytes());
        msg.extend_from_slice(&confirmed.0.to_be_bytes());
        msg.extend_from_slice(&now.to_be_bytes());
        msg.push(u8::from(reply));
        self.repl.queue_copy_data(&msg);
        self.repl
            .flush()
            .await
            .map_err(|e| classify(e, "sending standby status", "agent"))
    }

    /// On shutdown: stop reading, wait (bounded) until the sink has made everything sent durable,
    /// confirm it to the server, and close.
    async fn drain_and_close(&mut self, context: &mut StreamContext) -> Result<(), PipelineError> {
        let target = self.forwarded;
        let mut confirmed = context.confirmed.clone();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async move {
            confirmed
                .wait_for(|c| match c {
                    Some(Position::Postgres { lsn }) => *lsn >= target,
                    _ => target == Lsn(0),
                })
                .await
                .map(|_| ())
        })
        .await;
        if drained.is_err() {
            tracing::warn!(target = %target, "sink did not confirm everything in time; the next run resumes from the last checkpoint");
        }
        self.send_feedback(false).await?;
        Ok(())
    }
}

fn decode_error(e: pgoutput::DecodeError) -> PipelineError {
    PipelineError::definite("decode", e.to_string())
}

/// A spill file could not be written or read: the disk under agent.state_dir. Transient: the
/// server sends the transaction again after a restart.
fn spill_error(e: std::io::Error) -> PipelineError {
    PipelineError::transient("state", format!("a streamed transaction's spill file: {e}"))
        .with_hint("check the free space and permissions of agent.state_dir")
}

/// The key of a row: of a whole row by position, of an old-key tuple (identity columns only)
/// by name.
fn key_of(rel: &Relation, row: &Row) -> Row {
    if row.0.len() == rel.columns.len() {
        return Row(rel
            .key
            .iter()
            .filter_map(|&i| row.0.get(i).cloned())
            .collect());
    }
    Row(rel
        .key
        .iter()
        .filter_map(|&i| rel.columns.get(i))
        .filter_map(|c| row.0.iter().find(|(name, _)| *name == c.name).cloned())
        .collect())
}

/// Builds a row from a tuple. `identity_only`: an old-key tuple, whose other columns are null.
fn build_row(
    rel: &Relation,
    tuple: &Tuple<'_>,
    identity_only: bool,
) -> Result<(Row, Vec<Name>), PipelineError> {
    if tuple.len() != rel.columns.len() {
        return Err(PipelineError::transient(
            "decode",
            format!(
                "a change to {} has {} columns, its relation {}",
                rel.qualified(),
                tuple.len(),
                rel.columns.len()
            ),
        ));
    }
    let mut values = Vec::with_capacity(tuple.len());
    let mut unchanged = Vec::new();
    for (column, value) in rel.columns.iter().zip(tuple) {
        if identity_only && !column.identity {
            continue;
        }
        let value = match value {
            TupleValue::Null => Value::Null,
            TupleValue::Unchanged => {
                unchanged.push(column.name);
                continue;
            }
            TupleValue::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => decode_text(&column.kind, text),
                Err(_) => decode_text(&column.kind, &String::from_utf8_lossy(bytes)),
            },
        };
        values.push((column.name, value));
    }
    Ok((Row(values), unchanged))
}
