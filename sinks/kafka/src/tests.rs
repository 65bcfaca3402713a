//! The sink against librdkafka's mock cluster: a real Kafka protocol peer, in-process.

use std::time::Duration;

use cdc_core::{Lsn, Op, Position, Row, Sink, SourceMessage, Value};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use super::*;
use crate::testing::{read_topic, StoredMessage};

const TOPIC: &str = "shop.public.orders";

fn config(brokers: String) -> KafkaSinkConfig {
    KafkaSinkConfig {
        brokers,
        pipeline: "p".into(),
        prefix: "shop".into(),
        topic: TopicTemplate::parse(DEFAULT_TOPIC).unwrap(),
        format: MessageFormat::Native,
        compression: Compression::Lz4,
        tombstones: true,
        properties: vec![],
        transaction_metadata: false,
        topic_creation: None,
        dead_letters: None,
    }
}

/// Change `n`: key `n % 50`, value `n`; every seventh a delete.
fn change(n: u64) -> SourceMessage {
    let key = Row(vec![("id".into(), Value::UInt(n % 50))]);
    let row = Row(vec![
        ("id".into(), Value::UInt(n % 50)),
        ("v".into(), Value::UInt(n)),
    ]);
    let op = if n % 7 == 6 { Op::Delete } else { Op::Update };
    let mut event = cdc_core::testing::pg_change(op, "orders", 0x1000 + n, n, 0);
    event.key = Some(key);
    event.before = (op == Op::Delete).then(|| row.clone());
    event.after = (op != Op::Delete).then_some(row);
    SourceMessage::Change(event)
}

/// The `v` of a stored native record (its `after`, or its `before` for a delete).
fn v_of(message: &StoredMessage) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(message.value.as_ref()?).unwrap();
    let row = if value["after"].is_null() {
        &value["before"]
    } else {
        &value["after"]
    };
    row["v"].as_u64()
}

async fn read(brokers: &str) -> Vec<StoredMessage> {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || read_topic(&brokers, TOPIC))
        .await
        .unwrap()
        .unwrap()
}

/// Every change once, each key's changes in one partition in source order, deletes followed by
/// their tombstone.
fn assert_all_once_in_key_order(messages: &[StoredMessage], changes: u64) {
    let records: Vec<&StoredMessage> = messages.iter().filter(|m| m.value.is_some()).collect();
    let mut seen: Vec<u64> = records.iter().filter_map(|m| v_of(m)).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..changes).collect::<Vec<_>>(),
        "every change exactly once"
    );
    let mut last_by_key: std::collections::HashMap<Vec<u8>, (i32, u64)> = Default::default();
    for m in &records {
        let key = m.key.clone().expect("keyed");
        let v = v_of(m).unwrap();
        if let Some((partition, previous)) = last_by_key.insert(key, (m.partition, v)) {
            assert_eq!(partition, m.partition, "one partition per key");
            assert!(
                previous < v,
                "a key's changes in source order: {previous} then {v}"
            );
        }
        assert!(
            m.id.as_deref().is_some_and(|id| id.starts_with("p:")),
            "cdc-id header"
        );
    }
    let tombstones = messages.iter().filter(|m| m.value.is_none()).count() as u64;
    assert_eq!(
        tombstones,
        (0..changes).filter(|n| n % 7 == 6).count() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_once_keyed_in_order_and_a_flush_waits_for_every_delivery() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, 4, 3).unwrap();
    let mut sink = KafkaSink::new(config(cluster.bootstrap_servers()));
    sink.open().await.unwrap();
    let changes: Vec<SourceMessage> = (0..2000).map(change).collect();
    for chunk in changes.chunks(100) {
        sink.write(chunk).await.unwrap();
    }
    sink.flush().await.unwrap();
    assert_eq!(
        sink.deliveries.reported(),
        sink.sent,
        "flush returned with reports missing"
    );
    let messages = read(&cluster.bootstrap_servers()).await;
    assert_all_once_in_key_order(&messages, 2000);
    let partitions: std::collections::HashSet<i32> = messages.iter().map(|m| m.partition).collect();
    assert!(partitions.len() > 1, "keys spread over the partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_produce_errors_are_retried_without_duplicates_and_refusals_fail_the_flush() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 2, 1).unwrap();
    let mut sink = KafkaSink::new(config(cluster.bootstrap_servers()));
    sink.open().await.unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4],
    );
    let changes: Vec<SourceMessage> = (0..500).map(change).collect();
    sink.write(&changes).await.unwrap();
    sink.flush().await.unwrap();
    assert_all_once_in_key_order(&read(&cluster.bootstrap_servers()).await, 500);

    // A refusal that retrying cannot cure: the flush fails (the checkpoint does not move), with
    // the reason and what to do.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    sink.write(&[change(500)]).await.unwrap();
    let error = sink.flush().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert!(error.to_string().contains(TOPIC), "{error}");
    // Later writes refuse too until the runtime reopens the sink.
    assert!(sink.write(&[change(501)]).await.is_err());
    sink.open().await.unwrap();
    sink.write(&[change(500), change(501)]).await.unwrap();
    sink.flush().await.unwrap();
    assert_all_once_in_key_order(&read(&cluster.bootstrap_servers()).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_holds_while_the_broker_is_down_and_completes_when_it_is_back() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 2, 1).unwrap();
    let mut sink = KafkaSink::new(config(cluster.bootstrap_servers()));
    sink.open().await.unwrap();
    let changes: Vec<SourceMessage> = (0..300).map(change).collect();
    sink.write(&changes[..100]).await.unwrap();
    sink.flush().await.unwrap();
    cluster.broker_down(1).unwrap();
    sink.write(&changes[100..]).await.unwrap();
    let flush = tokio::spawn(async move { sink.flush().await.map(|()| sink) });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !flush.is_finished(),
        "a flush returned while the broker was down"
    );
    cluster.broker_up(1).unwrap();
    let sink = flush.await.unwrap().unwrap();
    assert_eq!(sink.deliveries.reported(), sink.sent);
    assert_all_once_in_key_order(&read(&cluster.bootstrap_servers()).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_messages_carry_the_key_and_the_envelope() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = config(cluster.bootstrap_servers());
    config.format = MessageFormat::Debezium;
    let mut sink = KafkaSink::new(config);
    sink.open().await.unwrap();
    sink.write(&[change(0), change(6)]).await.unwrap();
    sink.flush().await.unwrap();
    let messages = read(&cluster.bootstrap_servers()).await;
    assert_eq!(
        messages.len(),
        3,
        "two changes and a tombstone: {messages:?}"
    );
    let values: Vec<serde_json::Value> = messages
        .iter()
        .filter_map(|m| m.value.as_ref())
        .map(|v| serde_json::from_slice(v).unwrap())
        .collect();
    let ops: Vec<&str> = values.iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["u", "d"]);
    assert_eq!(values[0]["source"]["name"], "shop");
    assert_eq!(values[0]["source"]["connector"], "postgresql");
    assert_eq!(values[1]["before"]["v"], 6);
    let keys: Vec<&[u8]> = messages.iter().filter_map(|m| m.key.as_deref()).collect();
    assert_eq!(keys, [&br#"{"id":0}"#[..], br#"{"id":6}"#, br#"{"id":6}"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_metadata_brackets_each_transaction() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = config(cluster.bootstrap_servers());
    config.format = MessageFormat::Debezium;
    config.tombstones = false;
    config.transaction_metadata = true;
    let mut sink = KafkaSink::new(config);
    sink.open().await.unwrap();
    let commit = |n: u64| SourceMessage::Commit {
        position: Position::Postgres {
            lsn: Lsn(0x1000 + n),
        },
        resume_from: Position::Postgres {
            lsn: Lsn(0x1000 + n + 1),
        },
        commit_ts: None,
    };
    // Two changes in one transaction (same position and tx id), then a transaction of one.
    let mut second = change(1);
    if let SourceMessage::Change(event) = &mut second {
        event.source.position = Position::Postgres { lsn: Lsn(0x1000) };
        event.source.tx_id = Some(0);
        event.source.seq = 1;
    }
    sink.write(&[change(0), second, commit(0), change(2), commit(2)])
        .await
        .unwrap();
    sink.flush().await.unwrap();
    let brokers = cluster.bootstrap_servers();
    let markers = tokio::task::spawn_blocking(move || read_topic(&brokers, "shop.transaction"))
        .await
        .unwrap()
        .unwrap();
    let markers: Vec<serde_json::Value> = markers
        .iter()
        .map(|m| serde_json::from_slice(m.value.as_ref().unwrap()).unwrap())
        .collect();
    // Keyed by the transaction id: a transaction's BEGIN and END share a partition, in order;
    // transactions spread over the topic's partitions.
    let mut summary: Vec<(String, String, serde_json::Value)> = markers
        .iter()
        .map(|m| {
            (
                m["status"].as_str().unwrap().to_string(),
                m["id"].as_str().unwrap().to_string(),
                m["event_count"].clone(),
            )
        })
        .collect();
    summary.sort_by_key(|(_, id, _)| id.clone()); // stable: offset order within an id
    assert_eq!(
        summary,
        [
            ("BEGIN".into(), "0:4096".into(), serde_json::Value::Null),
            ("END".into(), "0:4096".into(), serde_json::json!(2)),
            ("BEGIN".into(), "2:4098".into(), serde_json::Value::Null),
            ("END".into(), "2:4098".into(), serde_json::json!(1)),
        ]
    );
    let changes = read(&cluster.bootstrap_servers()).await;
    let places: Vec<serde_json::Value> = changes
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m.value.as_ref().unwrap()).unwrap())
        .map(|v| v["transaction"].clone())
        .collect();
    assert!(places.contains(
        &serde_json::json!({"id": "0:4096", "total_order": 2, "data_collection_order": 2})
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_brokers() {
    let cluster = MockCluster::new(2).unwrap();
    let outcome = check(&config(cluster.bootstrap_servers())).await;
    assert!(outcome.ok, "{outcome:?}");
    assert!(outcome.detail.contains("2 brokers"), "{outcome:?}");
    let mut closed = config("127.0.0.1:1".into());
    closed.properties = vec![("socket.connection.setup.timeout.ms".into(), "1000".into())];
    let outcome = check(&closed).await;
    assert!(!outcome.ok, "{outcome:?}");
}

#[test]
fn properties_that_would_weaken_delivery_are_refused() {
    assert!(refused_property("acks").is_some());
    assert!(refused_property("enable.idempotence").is_some());
    assert!(refused_property("linger.ms").is_none());
}
