//! Kafka sink: one message per change, on a topic per table, keyed by the primary key.
//!
//! ```text
//!  write(changes) ──produce (key = primary key, header cdc-id)──▶ librdkafka queue ──▶ brokers
//!  flush() ──waits for a delivery report of every message sent──▶ durable ──▶ checkpoint
//! ```
//!
//! The producer is idempotent with `acks=all`: librdkafka retries a failed request itself
//! without duplicating or reordering within a partition, and a key's changes always go to one
//! partition (Java's murmur2 partitioner, so the agent partitions as Debezium/Kafka Connect do).
//! A position is confirmed only once every message up to it has a successful delivery report.
//! A failed delivery fails the flush: the checkpoint stays, the runtime opens a new producer and
//! replays from it. Replayed messages carry the same `cdc-id` header, so a consumer can drop
//! them; Kafka itself keeps them (at-least-once after a crash, as Debezium).
//!
//! A change whose message is larger than the producer's `message.max.bytes` is refused by the
//! producer before it is sent: poison for that change. With `on_error = "dlq"` it is set aside
//! in the dead-letter store (durably, before anything after it can be confirmed) and later
//! changes to its key are held behind it; the other keys go on.

mod delivery;
mod security;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod topic;
mod topics;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cdc_core::dead_letter::{self, DeadLetterHandle};
use cdc_core::naming::{change_id, marker_id, LastName};
use cdc_core::transaction::TransactionTracker;
use cdc_core::{ChangeEvent, CheckOutcome, Op, PipelineError, ResumePoint, Sink, SourceMessage};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

pub use cdc_core::debezium::MessageFormat;
use delivery::{Deliveries, Failure, Tracker};
pub use topic::{TopicTemplate, DEFAULT_TOPIC, MAX_TOPIC_LEN};
pub use topics::TopicCreation;
use topics::TopicCreator;

/// How long `open` and `check` wait for the brokers' metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The producer's buffer (librdkafka `queue.buffering.max.kbytes`): past it, `write` waits for
/// deliveries. librdkafka's default (1 GiB) would let a sidecar's memory grow with broker lag.
const DEFAULT_QUEUE_KBYTES: &str = "32768";

/// `sink.compression`: the producer's `compression.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    /// Pipeline name: the `cdc-id` header's prefix and the producer's `client.id`.
    pub pipeline: String,
    /// `{prefix}` of the topic template, and Debezium's `source.name`.
    pub prefix: String,
    pub topic: TopicTemplate,
    pub format: MessageFormat,
    pub compression: Compression,
    /// After a delete, a message with the key and no value, so log compaction can drop the key.
    pub tombstones: bool,
    /// Extra librdkafka properties, set after the sink's own (see [`refused_property`]).
    pub properties: Vec<(String, String)>,
    /// BEGIN/END messages on `<prefix>.transaction` (see [`cdc_core::transaction`]).
    pub transaction_metadata: bool,
    /// Create missing topics before the first write to them (else the brokers must, or the
    /// topics must exist).
    pub topic_creation: Option<TopicCreation>,
    /// The dead-letter store: where refused changes go, and which keys it holds.
    pub dead_letters: DeadLetterHandle,
}

/// Why a librdkafka property may not be set through `sink.properties`, if it may not: these
/// carry the sink's ordering and durability guarantees.
pub fn refused_property(key: &str) -> Option<&'static str> {
    match key {
        "bootstrap.servers" | "metadata.broker.list" => Some("set sink.brokers instead"),
        "enable.idempotence" | "acks" | "request.required.acks" | "enable.gapless.guarantee" => {
            Some("the sink needs an idempotent producer with acks=all: without it a retry can duplicate or reorder a key's changes")
        }
        "delivery.report.only.error" | "dr_cb" | "dr_msg_cb" => {
            Some("the sink counts every delivery report to know what is durable")
        }
        "compression.type" | "compression.codec" => Some("set sink.compression instead"),
        _ => None,
    }
}

pub struct KafkaSink {
    config: KafkaSinkConfig,
    producer: Option<Arc<ThreadedProducer<Tracker>>>,
    /// Creates missing topics (with `topic_creation`).
    topics: Option<TopicCreator>,
    deliveries: Arc<Deliveries>,
    /// Messages handed to the producer since it was made.
    sent: u64,
    key: Vec<u8>,
    value: Vec<u8>,
    last_topic: LastName,
    transactions: TransactionTracker,
    /// Reused buffers of BEGIN/END messages.
    marker: Vec<u8>,
    marker_key: Vec<u8>,
}

impl KafkaSink {
    pub fn new(config: KafkaSinkConfig) -> Self {
        KafkaSink {
            config,
            producer: None,
            topics: None,
            deliveries: Arc::default(),
            sent: 0,
            key: Vec::with_capacity(256),
            value: Vec::with_capacity(4096),
            last_topic: LastName::default(),
            transactions: TransactionTracker::default(),
            marker: Vec::new(),
            marker_key: Vec::new(),
        }
    }

    /// `<prefix>.transaction`, with what a topic name may not hold made `_`.
    fn transaction_topic(&self) -> String {
        cdc_core::naming::transaction_channel(&topic::clean(&self.config.prefix))
    }

    /// Sends the BEGIN or END message in `self.marker` to the transaction topic.
    async fn produce_marker(
        &mut self,
        producer: &ThreadedProducer<Tracker>,
        id: &str,
        header_id: &str,
    ) -> Result<(), PipelineError> {
        self.marker_key.clear();
        cdc_core::transaction::write_marker_key(id, &mut self.marker_key);
        let topic = self.transaction_topic();
        self.ensure_topic(&topic).await?;
        let headers = OwnedHeaders::new().insert(Header {
            key: "cdc-id",
            value: Some(header_id),
        });
        let record = BaseRecord::to(&topic)
            .key(self.marker_key.as_slice())
            .payload(self.marker.as_slice())
            .headers(headers);
        send(producer, &self.deliveries, record).await?;
        self.sent += 1;
        Ok(())
    }

    /// At a source commit: the END message, when transaction metadata is on.
    async fn end_transaction(
        &mut self,
        position: &cdc_core::Position,
    ) -> Result<(), PipelineError> {
        if !self.config.transaction_metadata {
            return Ok(());
        }
        let Some(producer) = self.producer.clone() else {
            return Err(PipelineError::transient(
                "sink",
                "the Kafka sink is not open",
            ));
        };
        self.marker.clear();
        if let Some(id) = self.transactions.on_commit(&mut self.marker) {
            let header_id = marker_id(&self.config.pipeline, position, "END");
            self.produce_marker(&producer, &id, &header_id).await?;
        }
        Ok(())
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.config.brokers)
            .set("client.id", format!("cdc-agent-{}", self.config.pipeline))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A failure that would leave a gap in a partition (a later message stored, an
            // earlier one not) makes the producer fail everything after it instead: the replay
            // from the checkpoint then repeats a suffix in order, never reorders a key.
            .set("enable.gapless.guarantee", "true")
            .set("partitioner", "murmur2_random")
            .set("compression.type", self.config.compression.name())
            .set("linger.ms", "5")
            .set("queue.buffering.max.kbytes", DEFAULT_QUEUE_KBYTES);
        for (key, value) in &self.config.properties {
            config.set(key, value);
        }
        security::apply_defaults(&mut config);
        config
    }

    /// The brokers' metadata could not be read: a refusal the client saw on the way (bad
    /// credentials, TLS) stops the pipeline with its fix; anything else is retried.
    fn unreachable(&self, error: &str) -> PipelineError {
        match self.deliveries.refusals.last() {
            Some(refusal) => refusal.to_error(&self.config.brokers),
            None => PipelineError::transient(
                "connection",
                format!("cannot reach Kafka at {}: {error}", self.config.brokers),
            )
            .with_hint("check sink.brokers (host:9092[,host:9092]) and that the brokers run"),
        }
    }

    /// Creates `topic` if it is missing and topic creation is on.
    async fn ensure_topic(&mut self, topic: &str) -> Result<(), PipelineError> {
        match self.topics.as_mut() {
            Some(topics) => topics.ensure(topic).await,
            None => Ok(()),
        }
    }

    fn make_producer(&self) -> Result<ThreadedProducer<Tracker>, PipelineError> {
        self.client_config()
            .create_with_context(Tracker(self.deliveries.clone()))
            .map_err(|e| {
                PipelineError::definite("config", format!("cannot make a Kafka producer: {e}"))
                    .with_hint("check sink.properties: each must be a librdkafka producer property")
            })
    }

    /// Sends one change, or sets it aside: behind an earlier change to its key that the
    /// dead-letter store holds, or when the producer refuses it for its size (`on_error = "dlq"`).
    async fn produce_or_set_aside(&mut self, event: &ChangeEvent) -> Result<(), PipelineError> {
        let store = &self.config.dead_letters;
        if dead_letter::hold_if_key_held(store, event)? {
            return Ok(());
        }
        match self.produce(event).await {
            Err(e) if e.is_poison() => {
                let store = self.config.dead_letters.clone();
                dead_letter::set_aside_refused_message(&store, event, e, "Kafka")
            }
            other => other,
        }
    }

    /// Sends one change (and its tombstone); waits while the producer's queue is full.
    async fn produce(&mut self, event: &ChangeEvent) -> Result<(), PipelineError> {
        let Some(producer) = self.producer.clone() else {
            return Err(PipelineError::transient(
                "sink",
                "the Kafka sink is not open",
            ));
        };
        if let Some(failure) = self.deliveries.failure() {
            return Err(delivery_error(&failure));
        }
        let place = if self.config.transaction_metadata {
            self.marker.clear();
            let place = self.transactions.on_change(event, &mut self.marker);
            if let (Some(place), false) = (&place, self.marker.is_empty()) {
                let header_id = marker_id(&self.config.pipeline, &event.source.position, "BEGIN");
                self.produce_marker(&producer, &place.id, &header_id)
                    .await?;
            }
            place
        } else {
            None
        };
        let (template, prefix) = (&self.config.topic, &self.config.prefix);
        let render =
            |db: &str, schema: &str, table: &str| template.render(prefix, db, schema, table);
        let topic = self.last_topic.get(event, render);
        if topic.len() > MAX_TOPIC_LEN {
            return Err(PipelineError::definite(
                "config",
                format!("topic name {topic} is longer than Kafka's {MAX_TOPIC_LEN} characters"),
            )
            .with_hint("shorten sink.topic or sink.topic_prefix"));
        }
        if let Some(topics) = self.topics.as_mut() {
            if !topics.is_ready(topic) {
                let topic = topic.to_string();
                topics.ensure(&topic).await?;
            }
        }
        let topic = self.last_topic.get(event, render);
        self.key.clear();
        cdc_core::debezium::write_key_message(event, &mut self.key);
        self.value.clear();
        match self.config.format {
            MessageFormat::Native => cdc_core::json::write_event(event, &mut self.value),
            MessageFormat::Debezium => cdc_core::debezium::write_value_message(
                event,
                &self.config.prefix,
                cdc_core::time::now_micros() / 1000,
                place.as_ref(),
                &mut self.value,
            ),
        }
        let id = change_id(&self.config.pipeline, event);
        let keyed = event.key.is_some();
        let headers = OwnedHeaders::new().insert(Header {
            key: "cdc-id",
            value: Some(&id),
        });
        let mut record = BaseRecord::to(topic)
            .payload(self.value.as_slice())
            .headers(headers.clone());
        if keyed {
            record = record.key(self.key.as_slice());
        }
        send(&producer, &self.deliveries, record).await?;
        self.sent += 1;
        if self.config.tombstones && event.op == Op::Delete && keyed {
            let tombstone: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .key(self.key.as_slice())
                .headers(headers);
            send(&producer, &self.deliveries, tombstone).await?;
            self.sent += 1;
        }
        Ok(())
    }
}

/// Hands one record to librdkafka, waiting for deliveries while its queue is full.
async fn send<'a>(
    producer: &ThreadedProducer<Tracker>,
    deliveries: &Deliveries,
    mut record: BaseRecord<'a, [u8], [u8]>,
) -> Result<(), PipelineError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                deliveries.wait(Duration::from_millis(100)).await;
            }
            // Refused by the producer itself, before sending: only this message is at fault.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), back)) => {
                return Err(PipelineError::poison(
                    "too_large",
                    format!(
                        "a message of {} bytes for topic {} is over the producer's message.max.bytes",
                        back.payload.map_or(0, <[u8]>::len) + back.key.map_or(0, <[u8]>::len),
                        back.topic
                    ),
                )
                .with_hint("raise sink.properties.\"message.max.bytes\" (and the topic's max.message.bytes), or set sink.on_error = \"dlq\" to set such changes aside"));
            }
            Err((e, back)) => {
                return Err(delivery_error(&Failure {
                    topic: back.topic.to_string(),
                    code: e.rdkafka_error_code(),
                    error: e.to_string(),
                }))
            }
        }
    }
}

/// A failed delivery as the runtime's error: definite where retrying cannot help.
fn delivery_error(failure: &Failure) -> PipelineError {
    let Failure { topic, code, error } = failure;
    let definite = |hint: &str| {
        PipelineError::definite(
            "sink",
            format!("Kafka refused a change on topic {topic}: {error}"),
        )
        .with_hint(hint)
    };
    match code {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge,
        ) => definite("raise the topic's max.message.bytes (and sink.properties.\"message.max.bytes\")"),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed) => {
            definite("grant the agent's principal WRITE (and IDEMPOTENT_WRITE) on the topic")
        }
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition) => definite(
            "create the topic, or let the brokers create topics (auto.create.topics.enable=true)",
        ),
        Some(RDKafkaErrorCode::InvalidTopic) => definite("change sink.topic: the broker refuses this name"),
        _ => PipelineError::transient("sink", format!("delivering to Kafka topic {topic}: {error}")),
    }
}

/// The brokers' metadata, fetched off the async threads (librdkafka blocks).
async fn broker_count(producer: Arc<ThreadedProducer<Tracker>>) -> Result<usize, String> {
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map(|m| m.brokers().len())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `cdc-agent check`: the brokers answer.
pub async fn check(config: &KafkaSinkConfig) -> CheckOutcome {
    let sink = KafkaSink::new(config.clone());
    let producer = match sink.make_producer() {
        Ok(p) => Arc::new(p),
        Err(e) => return CheckOutcome::fail("sink", e.to_string(), "check sink.properties"),
    };
    match broker_count(producer).await {
        Ok(n) => CheckOutcome::ok(
            "sink",
            format!("Kafka answers at {} ({n} brokers)", config.brokers),
        ),
        Err(e) => match sink.deliveries.refusals.last() {
            Some(refusal) => {
                CheckOutcome::fail("sink", refusal.message(&config.brokers), refusal.hint)
            }
            None => CheckOutcome::fail(
                "sink",
                format!("Kafka does not answer at {}: {e}", config.brokers),
                "check sink.brokers (host:9092[,host:9092]) and that the brokers run",
            ),
        },
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        // A new producer (and counters) each time: after a failure nothing of the old one's
        // queue may count towards a checkpoint. Dropping it purges what it still held.
        if let Some(old) = self.producer.take() {
            tokio::task::spawn_blocking(move || drop(old)).await.ok();
        }
        self.deliveries = Arc::default();
        self.sent = 0;
        self.transactions.reset();
        let producer = Arc::new(self.make_producer()?);
        broker_count(producer.clone())
            .await
            .map_err(|e| self.unreachable(&e))?;
        self.topics = match &self.config.topic_creation {
            Some(creation) => Some(TopicCreator::new(&self.client_config(), creation.clone())?),
            None => None,
        };
        self.producer = Some(producer);
        // No position is kept in Kafka: the checkpoint decides; replays carry the same cdc-id.
        Ok(None)
    }

    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
        for message in messages {
            match message {
                SourceMessage::Change(event) => self.produce_or_set_aside(event).await?,
                SourceMessage::Commit { position, .. } => self.end_transaction(position).await?,
                SourceMessage::Progress { .. } => {}
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        loop {
            if let Some(failure) = self.deliveries.failure() {
                return Err(delivery_error(&failure));
            }
            if self.deliveries.reported() >= self.sent {
                return Ok(());
            }
            self.deliveries.wait(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests;
