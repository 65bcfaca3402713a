//! Reading topics back, for tests and benchmarks (feature `testing`): every message of a topic,
//! partition by partition, in offset order.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// One stored message.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The `cdc-id` header.
    pub id: Option<String>,
}

/// Every message of `topic`, by partition then offset: at least up to the high watermarks at the
/// call, and then until none has come for a second (some Kafka-compatible brokers report a
/// batch as one offset in their watermarks).
pub fn read_topic(brokers: &str, topic: &str) -> Result<Vec<StoredMessage>, String> {
    read_topic_with(brokers, topic, &[])
}

/// [`read_topic`] with more consumer properties (TLS, SASL).
pub fn read_topic_with(
    brokers: &str,
    topic: &str,
    properties: &[(&str, &str)],
) -> Result<Vec<StoredMessage>, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "cdc-agent-read-back")
        .set("enable.auto.commit", "false");
    for (key, value) in properties {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| e.to_string())?;
        remaining += high - low;
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_message = Instant::now();
    while remaining > 0 || last_message.elapsed() < Duration::from_secs(1) {
        if Instant::now() > deadline {
            return Err(format!(
                "{topic}: {remaining} messages not read back in 60 s"
            ));
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last_message = Instant::now();
        let message = result.map_err(|e| e.to_string())?;
        let id = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == "cdc-id")
                .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        });
        messages.push(StoredMessage {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            id,
        });
        remaining = remaining.saturating_sub(1);
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    Ok(messages)
}
