//! NATS JetStream sink: one message per change, on a subject per table.
//!
//! ```text
//!  write(changes) ──publish with a reply subject (Nats-Msg-Id = pipeline:position:seq)──▶ stream
//!  flush() ──awaits every publish ack (counted on one inbox)──▶ durable ──▶ the checkpoint
//! ```
//!
//! A position is confirmed only once JetStream has acknowledged every message up to it. After a
//! crash the agent replays from its checkpoint; the sink reads the newest change the stream holds
//! for this pipeline (`resume`) and the agent drops every replayed change up to it. The replayed
//! messages also carry the same message ids, so the stream's duplicate window drops what is left.
//!
//! A change larger than the stream's `max_msg_size` or the server's `max_payload` is refused here,
//! before it is sent: poison for that change, set aside in the dead-letter store with
//! `on_error = "dlq"` (later changes to its key are held behind it), else the pipeline stops.

mod acks;
mod connection;
mod resume;
mod subject;

use std::time::Duration;

use acks::AckInbox;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use async_trait::async_trait;
use cdc_core::dead_letter::{self, DeadLetterHandle};
use cdc_core::naming::{change_id, marker_id, LastName};
use cdc_core::transaction::TransactionTracker;
use cdc_core::{
    ChangeEvent, CheckOutcome, PipelineError, Position, ResumePoint, Sink, SourceMessage,
};

pub use cdc_core::debezium::MessageFormat;
pub use connection::{parse_url, Auth, NatsUrl};
pub use subject::{SubjectTemplate, DEFAULT_SUBJECT};

/// Acks awaited at most at once; past half of it, `write` waits for acks to come in.
const MAX_ACKS_IN_FLIGHT: u64 = 8192;

#[derive(Clone, Debug)]
pub struct NatsSinkConfig {
    pub url: String,
    /// Pipeline name: the message ids' prefix.
    pub pipeline: String,
    /// `{prefix}` of the subject template, and Debezium's `source.name`.
    pub prefix: String,
    pub subject: SubjectTemplate,
    pub stream: String,
    /// Create the stream when it is missing (else a missing stream is a configuration error).
    pub create_stream: bool,
    pub duplicate_window: Duration,
    /// The change record, or Debezium's envelope with the key in the `Cdc-Key` header.
    pub format: MessageFormat,
    /// BEGIN/END messages on `<prefix>.transaction` (see [`cdc_core::transaction`]).
    pub transaction_metadata: bool,
    /// Where refused changes are set aside (`on_error = "dlq"`) and held keys are looked up.
    pub dead_letters: DeadLetterHandle,
    /// A `dlq replay` sink: message ids get a `:replay` suffix, so that a resume never takes a
    /// replayed (older) change for the newest one stored, while a replay run twice within the
    /// duplicate window is still stored once.
    pub replay: bool,
}

pub struct NatsSink {
    config: NatsSinkConfig,
    client: Option<async_nats::Client>,
    /// Where the publish acks arrive, counted.
    acks: Option<AckInbox>,
    /// Reused encoding buffer.
    buffer: Vec<u8>,
    /// The subject of the last table published to.
    last_subject: LastName,
    transactions: TransactionTracker,
    /// Reused buffer of BEGIN/END messages.
    marker: Vec<u8>,
    /// The smaller of the stream's `max_msg_size` and the server's `max_payload` (headers and
    /// payload): a larger message is refused here, before it is sent, so that the stream never
    /// stores a change after one it refused (which `resume` relies on).
    max_message_size: Option<usize>,
}

impl NatsSink {
    pub fn new(config: NatsSinkConfig) -> Self {
        NatsSink {
            config,
            client: None,
            acks: None,
            buffer: Vec::with_capacity(4096),
            last_subject: LastName::default(),
            transactions: TransactionTracker::default(),
            marker: Vec::new(),
            max_message_size: None,
        }
    }

    /// `<prefix>.transaction`, the prefix made one subject token.
    fn transaction_subject(&self) -> String {
        cdc_core::naming::transaction_channel(&subject::token(&self.config.prefix))
    }

    /// The subjects the stream must capture.
    fn stream_subjects(&self) -> Vec<String> {
        let mut subjects = vec![self.config.subject.stream_filter(&self.config.prefix)];
        if self.config.transaction_metadata {
            subjects.push(self.transaction_subject());
        }
        subjects
    }

    async fn connect(&self) -> Result<jetstream::Context, PipelineError> {
        Ok(self.connect_client().await?.1)
    }

    /// The client (for what it tells of the server) and the JetStream context.
    async fn connect_client(
        &self,
    ) -> Result<(async_nats::Client, jetstream::Context, NatsUrl), PipelineError> {
        let url = parse_url(&self.config.url).map_err(|e| {
            PipelineError::definite("config", format!("sink.url: {e}"))
                .with_hint("write it as nats://host:4222 or tls://host:4222?tls_ca=/path/ca.pem")
        })?;
        let client = url
            .connect(format!("cdc-agent {}", self.config.pipeline))
            .await?;
        // The context only manages the stream; changes are published on the client with their
        // acks counted by [`AckInbox`] (an ack not back in 10 s fails the flush there).
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(client.clone());
        Ok((client, js, url))
    }

    /// The stream must capture our subjects: made if missing (and allowed), else checked.
    async fn ensure_stream(
        &self,
        js: &jetstream::Context,
    ) -> Result<stream::Stream, PipelineError> {
        let name = &self.config.stream;
        let stream = if self.config.create_stream {
            let config = stream::Config {
                name: name.clone(),
                subjects: self.stream_subjects(),
                duplicate_window: self.config.duplicate_window,
                ..Default::default()
            };
            js.get_or_create_stream(config).await.map_err(|e| {
                PipelineError::transient(
                    "sink",
                    format!("cannot create or read the JetStream stream {name}: {e}"),
                )
                .with_hint("the server must run with JetStream enabled (nats-server -js)")
            })?
        } else {
            js.get_stream(name).await.map_err(|e| {
                PipelineError::definite("config", format!("JetStream stream {name}: {e}"))
                    .with_hint("create the stream, or set sink.create_stream = true")
            })?
        };
        let info = stream.cached_info();
        if info.config.duplicate_window < Duration::from_secs(30) {
            tracing::warn!(stream = %name, window = ?info.config.duplicate_window,
                "the stream's duplicate window is short: changes replayed after a longer outage are stored twice");
        }
        Ok(stream)
    }

    /// Sends one change, or sets it aside: behind an earlier change to its key that the
    /// dead-letter store holds, or when it is too large for the stream (`on_error = "dlq"`).
    async fn publish_or_set_aside(&mut self, event: &ChangeEvent) -> Result<(), PipelineError> {
        if dead_letter::hold_if_key_held(&self.config.dead_letters, event)? {
            return Ok(());
        }
        match self.publish(event).await {
            Err(e) if e.is_poison() => {
                dead_letter::set_aside_refused_message(&self.config.dead_letters, event, e, "NATS")
            }
            other => other,
        }
    }

    /// Sends one change (after its transaction's BEGIN, when it opens one); its ack is awaited
    /// later (in order) by `flush` or when too many wait.
    async fn publish(&mut self, event: &ChangeEvent) -> Result<(), PipelineError> {
        let place = if self.config.transaction_metadata {
            self.marker.clear();
            let mut marker = std::mem::take(&mut self.marker);
            let place = self.transactions.on_change(event, &mut marker);
            if place.is_some() && !marker.is_empty() {
                let id = marker_id(&self.config.pipeline, &event.source.position, "BEGIN");
                let subject = self.transaction_subject();
                self.send(subject, &id, None, &marker).await?;
            }
            self.marker = marker;
            place
        } else {
            None
        };
        let (template, prefix) = (&self.config.subject, &self.config.prefix);
        let subject = self
            .last_subject
            .get(event, |db, schema, table| {
                template.render(prefix, db, schema, table)
            })
            .to_string();
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let mut key = None;
        match self.config.format {
            MessageFormat::Native => cdc_core::json::write_event(event, &mut buffer),
            MessageFormat::Debezium => {
                let mut bytes = Vec::new();
                cdc_core::debezium::write_key_message(event, &mut bytes);
                key = Some(String::from_utf8_lossy(&bytes).into_owned());
                cdc_core::debezium::write_value_message(
                    event,
                    &self.config.prefix,
                    cdc_core::time::now_micros() / 1000,
                    place.as_ref(),
                    &mut buffer,
                );
            }
        }
        let mut id = change_id(&self.config.pipeline, event);
        if self.config.replay {
            id.push_str(":replay");
        }
        let sent = self.send(subject, &id, key.as_deref(), &buffer).await;
        self.buffer = buffer;
        sent
    }

    /// At a source commit: the END message, when transaction metadata is on.
    async fn end_transaction(&mut self, position: &Position) -> Result<(), PipelineError> {
        if !self.config.transaction_metadata {
            return Ok(());
        }
        let mut marker = std::mem::take(&mut self.marker);
        marker.clear();
        let mut sent = Ok(());
        if self.transactions.on_commit(&mut marker).is_some() {
            let id = marker_id(&self.config.pipeline, position, "END");
            let subject = self.transaction_subject();
            sent = self.send(subject, &id, None, &marker).await;
        }
        self.marker = marker;
        sent
    }

    /// Publishes one message with its id (and Debezium key), its ack to come to the inbox.
    async fn send(
        &mut self,
        subject: String,
        id: &str,
        key: Option<&str>,
        payload: &[u8],
    ) -> Result<(), PipelineError> {
        let (Some(client), Some(acks)) = (self.client.as_ref(), self.acks.as_mut()) else {
            return Err(PipelineError::transient(
                "sink",
                "the NATS sink is not open",
            ));
        };
        if acks.outstanding() >= MAX_ACKS_IN_FLIGHT / 2 {
            acks.take_ready()?;
            while acks.outstanding() >= MAX_ACKS_IN_FLIGHT / 2 {
                acks.wait_one().await?;
            }
        }
        if let Some(limit) = self.max_message_size {
            let size = message_size(id, key, payload.len());
            if size > limit {
                return Err(PipelineError::poison(
                    "too_large",
                    format!("a message of {size} bytes on {subject} is over the limit of {limit} bytes (the stream's max_msg_size or the server's max_payload)"),
                )
                .with_hint(format!("raise max_msg_size of the JetStream stream {} (and the server's max_payload), or set sink.on_error = \"dlq\" to set such changes aside", self.config.stream)));
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        if let Some(key) = key {
            headers.insert("Cdc-Key", key);
        }
        let payload = bytes::Bytes::copy_from_slice(payload);
        let reply = acks.next_reply();
        let published = client
            .publish_with_reply_and_headers(subject.clone(), reply, headers, payload)
            .await;
        published.map_err(|e| {
            if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded {
                acks.unsent();
            }
            publish_error(e.kind(), &subject, &e)
        })
    }
}

/// A message's size as JetStream compares it with a stream's `max_msg_size`: the header block
/// (`NATS/1.0\r\n`, a `Name: value\r\n` line per header, `\r\n`) plus the payload.
fn message_size(id: &str, key: Option<&str>, payload: usize) -> usize {
    let line = |name: &str, value: &str| name.len() + 2 + value.len() + 2;
    let headers =
        "NATS/1.0\r\n".len() + line("Nats-Msg-Id", id) + key.map_or(0, |k| line("Cdc-Key", k)) + 2;
    headers + payload
}

/// `cdc-agent check`: the server answers, JetStream is on, and the stream exists or may be made.
pub async fn check(config: &NatsSinkConfig) -> CheckOutcome {
    let sink = NatsSink::new(config.clone());
    let (client, js, url) = match sink.connect_client().await {
        Ok(c) => c,
        Err(e) => {
            return CheckOutcome::fail(
                "sink",
                e.message,
                e.hint
                    .unwrap_or_else(|| "check sink.url and that nats-server runs".into()),
            )
        }
    };
    let security = format!(
        "{}; {}",
        url.describe_tls(client.server_info().tls_required),
        url.auth.describe()
    );
    match js.get_stream(&config.stream).await {
        Ok(_) => CheckOutcome::ok(
            "sink",
            format!("NATS JetStream stream {} exists; {security}", config.stream),
        ),
        // JetStream itself answered "no such stream": it is on, and the stream can be made.
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) && config.create_stream => {
            CheckOutcome::ok(
                "sink",
                format!(
                    "NATS JetStream is on; stream {} will be created; {security}",
                    config.stream
                ),
            )
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::Request) => CheckOutcome::fail(
            "sink",
            format!("JetStream does not answer at {}: {e}", url.display),
            "run nats-server with JetStream enabled (-js)",
        ),
        Err(e) => CheckOutcome::fail(
            "sink",
            format!("JetStream stream {}: {e}", config.stream),
            "create the stream, or set sink.create_stream = true",
        ),
    }
}

fn publish_error(
    kind: async_nats::client::PublishErrorKind,
    subject: &str,
    e: &dyn std::fmt::Display,
) -> PipelineError {
    match kind {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => PipelineError::poison(
            "too_large",
            format!("a change on {subject} is larger than the server's max_payload: {e}"),
        )
        .with_hint("raise max_payload in the NATS server configuration"),
        _ => PipelineError::transient("sink", format!("publishing to {subject}: {e}")),
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        self.acks = None;
        self.transactions.reset();
        let js = self.connect().await?;
        let stream = self.ensure_stream(&js).await?;
        let info = stream.cached_info();
        let stream_limit = usize::try_from(info.config.max_message_size)
            .ok()
            .filter(|&limit| limit > 0);
        let client = js.client();
        let server_limit = Some(client.server_info().max_payload).filter(|&limit| limit > 0);
        self.max_message_size = match (stream_limit, server_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let stored = resume::last_stored(
            &stream,
            info.state.last_sequence,
            info.state.first_sequence,
            &self.config.pipeline,
        )
        .await?;
        self.acks = Some(AckInbox::open(&client).await?);
        self.client = Some(client);
        Ok(stored)
    }

    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
        for message in messages {
            match message {
                SourceMessage::Change(event) => self.publish_or_set_aside(event).await?,
                SourceMessage::Commit { position, .. } => self.end_transaction(position).await?,
                SourceMessage::Progress { .. } => {}
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        let (Some(client), Some(acks)) = (self.client.as_ref(), self.acks.as_mut()) else {
            return Ok(());
        };
        client.flush().await.map_err(|e| {
            PipelineError::transient("connection", format!("flushing to NATS: {e}"))
        })?;
        while acks.outstanding() > 0 {
            acks.wait_one().await?;
        }
        Ok(())
    }
}
