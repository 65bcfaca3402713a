//! The Kafka sink against librdkafka's mock cluster (a Kafka protocol peer, run in this test
//! process; the agent connects to it over TCP), Postgres source: every change across SIGKILLs
//! with each key's changes in order, the Debezium envelope with keys and tombstones, brokers that
//! go away and come back, and `check`.
mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use cdc_sink_kafka::testing::{read_topic, read_topic_with, StoredMessage};
use common::{order_key, start_streaming, Pipeline, TestDb};
use rdkafka::mocking::MockCluster;
use serde_json::{json, Value as Json};

/// A `[sink]` table for the kafka sink; the topic prefix is the test's own.
/// With `format = "debezium"`, transaction metadata is on too.
fn kafka_sink(brokers: &str, name: &str, format: &str) -> String {
    format!(
        "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"{name}\"\n\
         format = \"{format}\"\nflush_interval_ms = 50\ntransaction_metadata = {}",
        format == "debezium"
    )
}

async fn kafka_pipeline(
    prefix: &str,
    schema_sql: &str,
    table: &str,
    brokers: &str,
    format: &str,
) -> (TestDb, Pipeline) {
    common::pipeline_into(prefix, schema_sql, table, |name| {
        kafka_sink(brokers, name, format)
    })
    .await
}

/// Reads the topic until it holds `ids` distinct change ids, and no more arrive for a moment.
async fn stored_messages(
    brokers: &str,
    topic: &str,
    ids: usize,
    timeout: Duration,
) -> Vec<StoredMessage> {
    let deadline = Instant::now() + timeout;
    let read = || {
        let (brokers, topic) = (brokers.to_string(), topic.to_string());
        tokio::task::spawn_blocking(move || read_topic(&brokers, &topic).unwrap_or_default())
    };
    loop {
        let messages = read().await.unwrap();
        let distinct: HashSet<&Option<String>> = messages
            .iter()
            .filter(|m| m.value.is_some())
            .map(|m| &m.id)
            .collect();
        if distinct.len() >= ids {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let again = read().await.unwrap();
            if again.len() == messages.len() {
                return again;
            }
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} holds {} of {ids} changes after {timeout:?}",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn body(m: &StoredMessage) -> Json {
    serde_json::from_slice(m.value.as_ref().expect("not a tombstone")).expect("a JSON message")
}

/// 20,000 changes, the agent SIGKILLed three times: every change is in the topic; each key's
/// changes sit in one partition in commit order; what is stored twice is a replay of the same
/// change (same `cdc-id`), never a new order.
#[tokio::test(flavor = "multi_thread")]
async fn every_change_in_key_order_across_sigkills() {
    const TRANSACTIONS: i64 = 20;
    const ROWS: i64 = 500; // per transaction: 500 inserts, 300 updates, 200 deletes
    let cluster = MockCluster::new(3).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (db, p) = kafka_pipeline(
        "kafka_kill",
        "CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int)",
        "public.ledger",
        &brokers,
        "native",
    )
    .await;
    let topic = format!("{}.public.ledger", db.name);
    cluster.create_topic(&topic, 3, 3).unwrap();
    let agent = start_streaming(&p);
    let agent = common::ledger_under_kills(
        &p,
        agent,
        &db.url,
        TRANSACTIONS,
        Duration::from_millis(100),
        3,
        900,
    )
    .await;
    let expected = (TRANSACTIONS * 1000) as usize;
    let stored = stored_messages(&brokers, &topic, expected, Duration::from_secs(120)).await;
    assert_eq!(agent.stop(), 0);

    let mut first_seen: HashMap<String, Json> = HashMap::new();
    let mut last_by_key: HashMap<Vec<u8>, (i32, (u64, u64))> = HashMap::new();
    let mut replays = 0;
    for m in &stored {
        let record = body(m);
        let id = m.id.clone().expect("a cdc-id header");
        if let Some(earlier) = first_seen.get(&id) {
            assert_eq!(earlier, &record, "one id, two different changes");
            replays += 1;
            continue;
        }
        first_seen.insert(id, record.clone());
        let key = m.key.clone().expect("a key");
        let expected_key = json!({"id": record["key"]["id"]});
        assert_eq!(serde_json::from_slice::<Json>(&key).unwrap(), expected_key);
        if let Some((partition, previous)) =
            last_by_key.insert(key, (m.partition, order_key(&record)))
        {
            assert_eq!(partition, m.partition, "a key's changes in one partition");
            assert!(
                previous < order_key(&record),
                "a key's changes out of commit order: {record}"
            );
        }
    }
    assert_eq!(
        first_seen.len(),
        expected,
        "every change, each under its own id"
    );
    let ops = |op: &str| first_seen.values().filter(|r| r["op"] == json!(op)).count();
    assert_eq!(
        (ops("insert"), ops("update"), ops("delete")),
        (
            TRANSACTIONS as usize * 500,
            TRANSACTIONS as usize * 300,
            TRANSACTIONS as usize * 200
        )
    );
    let rows: BTreeSet<i64> = first_seen
        .values()
        .map(|r| r["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(rows.len(), (TRANSACTIONS * ROWS) as usize);
    eprintln!(
        "{} messages, {replays} replays after 3 SIGKILLs",
        stored.len()
    );
    db.drop().await;
}

/// `format = "debezium"`: the envelope, the key as the message key, a tombstone after a delete.
#[tokio::test(flavor = "multi_thread")]
async fn debezium_envelope_keys_and_tombstones() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (db, p) = kafka_pipeline(
        "kafka_dbz",
        "CREATE TABLE t (id int PRIMARY KEY, doc jsonb, price numeric(10,2))",
        "public.t",
        &brokers,
        "debezium",
    )
    .await;
    let agent = start_streaming(&p);
    db.exec(
        "INSERT INTO t VALUES (1, '{\"a\": 1}', 9.50); UPDATE t SET price = 10 WHERE id = 1; \
         DELETE FROM t WHERE id = 1;",
    )
    .await;
    let topic = format!("{}.public.t", db.name);
    let stored = stored_messages(&brokers, &topic, 3, Duration::from_secs(30)).await;
    assert_eq!(agent.stop(), 0);
    assert_eq!(stored.len(), 4, "three changes and a tombstone");
    let ops: Vec<Json> = stored[..3].iter().map(|m| body(m)["op"].clone()).collect();
    assert_eq!(ops, [json!("c"), json!("u"), json!("d")]);
    let create = body(&stored[0]);
    assert_eq!(
        create["after"],
        json!({"id": 1, "doc": "{\"a\": 1}", "price": "9.50"})
    );
    assert_eq!(create["source"]["connector"], "postgresql");
    assert_eq!(create["source"]["name"], json!(db.name));
    assert!(
        stored[3].value.is_none(),
        "the tombstone follows the delete"
    );
    for m in &stored {
        assert_eq!(m.key.as_deref(), Some(&br#"{"id":1}"#[..]));
    }
    // transaction_metadata = true: BEGIN and END of the one transaction, keyed by its id.
    let markers = stored_messages(
        &brokers,
        &format!("{}.transaction", db.name),
        2,
        Duration::from_secs(30),
    )
    .await;
    let markers: Vec<Json> = markers.iter().map(body).collect();
    assert_eq!(markers[0]["status"], "BEGIN");
    assert_eq!(markers[1]["status"], "END");
    assert_eq!(markers[1]["event_count"], 3);
    assert_eq!(markers[0]["id"], markers[1]["id"]);
    assert_eq!(
        body(&stored[1])["transaction"],
        json!({"id": markers[0]["id"], "total_order": 2, "data_collection_order": 2})
    );
    db.drop().await;
}

/// Every broker down for 3 s while changes are written: librdkafka holds them, the checkpoint
/// does not move past them, and each arrives once when the brokers are back.
#[tokio::test(flavor = "multi_thread")]
async fn brokers_down_then_back_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (db, p) = kafka_pipeline(
        "kafka_down",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "public.t",
        &brokers,
        "native",
    )
    .await;
    let topic = format!("{}.public.t", db.name);
    cluster.create_topic(&topic, 2, 1).unwrap();
    let agent = start_streaming(&p);
    db.exec("INSERT INTO t SELECT generate_series(1, 100)")
        .await;
    stored_messages(&brokers, &topic, 100, Duration::from_secs(30)).await;
    cluster.broker_down(1).unwrap();
    db.exec("INSERT INTO t SELECT generate_series(101, 300)")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Read while the broker is down; compared below with that insert's commit position.
    let confirmed_while_down = p.status_json()["confirmed_position"].clone();
    cluster.broker_up(1).unwrap();
    db.exec("INSERT INTO t SELECT generate_series(301, 400)")
        .await;
    let stored = stored_messages(&brokers, &topic, 400, Duration::from_secs(90)).await;
    assert_eq!(agent.stop(), 0);
    let records: Vec<Json> = stored.iter().map(body).collect();
    let ids: Vec<i64> = records
        .iter()
        .map(|r| r["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 400, "each change once");
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        (1..=400).collect()
    );
    let held = records
        .iter()
        .find(|r| r["after"]["id"] == json!(101))
        .unwrap();
    let confirmed = confirmed_while_down.as_str().unwrap();
    assert!(
        lsn(confirmed) < order_key(held).0,
        "the checkpoint passed undelivered changes while the broker was down: {confirmed} >= {}",
        held["source"]["lsn"]
    );
    db.drop().await;
}

/// `cdc-agent check` reaches the brokers; brokers that are not there are a failed check.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_the_brokers() {
    let cluster = MockCluster::new(2).unwrap();
    let (db, p) = kafka_pipeline(
        "kafka_check",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "public.t",
        &cluster.bootstrap_servers(),
        "native",
    )
    .await;
    let out = p.run_cmd(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("(2 brokers)"), "{text}");

    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let (code, text) =
        common::run_check(&db, "public.t", &kafka_sink(&nowhere, &db.name, "native"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Kafka does not answer"), "{text}");
    db.drop().await;
}

/// Maintained Debezium-format parsers read the topic: Debezium's own serde
/// (`io.debezium.serde.DebeziumSerdes`, Debezium 3.6.3) and Kafka Connect's JsonConverter, run by
/// tests/debezium/DebeziumConsumer.java with the jars scripts/testenv.sh fetched.
#[tokio::test(flavor = "multi_thread")]
async fn debeziums_own_serde_reads_the_messages() {
    let libs = common::env().var("CDC_TEST_DEBEZIUM_LIBS").to_string();
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (db, p) = kafka_pipeline(
        "kafka_serde",
        "CREATE TABLE t (id int PRIMARY KEY, doc jsonb, price numeric(10,2), at timestamptz, \
         bin bytea, tags text[], big bigint)",
        "public.t",
        &brokers,
        "debezium",
    )
    .await;
    let topic = format!("{}.public.t", db.name);
    cluster.create_topic(&topic, 2, 1).unwrap();
    let agent = start_streaming(&p);
    db.exec(
        "INSERT INTO t VALUES (1, '{\"a\": [1, 2]}', 9.50, '2026-11-26 11:02:36.5+00', '\\x00ff', \
         '{x,y}', 9223372036854775807), (2, NULL, NULL, NULL, NULL, NULL, NULL); \
         UPDATE t SET price = 10 WHERE id = 1; DELETE FROM t WHERE id = 2;",
    )
    .await;
    let stored = stored_messages(&brokers, &topic, 4, Duration::from_secs(30)).await;
    assert_eq!(agent.stop(), 0);
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: String = stored
        .iter()
        .map(|m| {
            let value = m.value.as_deref().map_or("-".to_string(), b64);
            format!("{} {value}\n", b64(m.key.as_deref().unwrap_or_default()))
        })
        .collect();
    let file = p.dir.path().join("records.txt");
    std::fs::write(&file, lines).unwrap();

    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/debezium/DebeziumConsumer.java"
        ))
        .arg(&file)
        .arg(&topic)
        .output()
        .expect("run java (scripts/testenv.sh installs a JRE)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut records: Vec<Json> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Partition by partition as stored: each key's records stay in their order.
    // Debezium's key serde unwraps a one-column key to its value.
    records.sort_by_key(|r| r["key"].as_i64());
    let seen: Vec<(Json, Json, Json)> = records
        .iter()
        .map(|r| (r["key"].clone(), r["op"].clone(), r["tombstone"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!(1), json!("c"), json!(false)),
            (json!(1), json!("u"), json!(false)),
            (json!(2), json!("c"), json!(false)),
            (json!(2), json!("d"), json!(false)),
            (json!(2), Json::Null, json!(true)),
        ]
    );
    assert_eq!(
        records[1]["after"],
        json!({"id": 1, "doc": "{\"a\": [1, 2]}", "price": "10.00",
               "at": "2026-11-26T11:02:36.5Z", "bin": "AP8=", "tags": ["x", "y"],
               "big": 9223372036854775807i64})
    );
    assert_eq!(records[0]["after"]["price"], "9.50");
    assert_eq!(records[2]["after"]["doc"], Json::Null);
    assert_eq!(records[3]["after"], Json::Null);
    assert_eq!(records[3]["before"]["id"], 2);
    assert_eq!(records[0]["source"]["connector"], "postgresql");
    assert_eq!(records[0]["source"]["table"], "t");
    db.drop().await;
}

/// The agent against a real Kafka-protocol broker: Tansu (Apache Kafka compatible, from
/// crates.io), started by scripts/testenv.sh. Every change arrives once (no crash here), keyed,
/// each key's changes in order in one partition.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_kafka_compatible_broker_receives_every_change_in_key_order() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let brokers = common::env().var("CDC_TEST_KAFKA_BROKERS").to_string();
    let (db, p) = kafka_pipeline(
        "kafka_real",
        "CREATE TABLE t (id int PRIMARY KEY, v int)",
        "public.t",
        &brokers,
        "native",
    )
    .await;
    let topic = format!("{}.public.t", db.name);
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let agent = start_streaming(&p);
    db.exec(
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, 500) g; \
         UPDATE t SET v = 1 WHERE id <= 300; DELETE FROM t WHERE id > 400;",
    )
    .await;
    let stored = stored_messages(&brokers, &topic, 900, Duration::from_secs(60)).await;
    assert_eq!(agent.stop(), 0);
    assert_eq!(stored.len(), 900, "each change once");
    let mut last: HashMap<i64, (i32, (u64, u64))> = HashMap::new();
    for m in &stored {
        let record = body(m);
        let id = record["key"]["id"].as_i64().unwrap();
        let order = order_key(&record);
        if let Some((partition, previous)) = last.insert(id, (m.partition, order)) {
            assert_eq!(partition, m.partition, "key {id} in two partitions");
            assert!(previous < order, "key {id} out of order");
        }
    }
    assert_eq!(last.len(), 500);
    db.drop().await;
}

fn tls_sink(brokers: &str, name: &str, properties: &[(&str, &str)]) -> String {
    let properties: Vec<String> = properties
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
        .collect();
    format!(
        "{}\ntopic_partitions = 5\nproperties = {{ {} }}",
        kafka_sink(brokers, name, "native"),
        properties.join(", ")
    )
}

/// TLS to a real Kafka-protocol broker (Tansu behind TLS with the test CA's certificate): the
/// agent creates the topic with the partitions asked for (librdkafka's mock cluster has no
/// CreateTopics) and every change arrives. A CA that did
/// not sign the broker's certificate, and a SASL login the broker refuses (a broker requiring
/// SCRAM that knows no such user), are each named by `check` with the fix, and stop `run`
/// instead of being retried forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_behind_tls_receives_every_change_and_refusals_are_named() {
    let env = common::env();
    let brokers = env.var("CDC_TEST_KAFKA_TLS_BROKERS").to_string();
    let ca = env.var("CDC_TEST_PG_CA").to_string();
    let tls = [
        ("security.protocol", "ssl"),
        ("ssl.ca.location", ca.as_str()),
    ];
    let (db, p) = common::pipeline_into(
        "kafka_tls",
        "CREATE TABLE t (id int PRIMARY KEY, v int)",
        "public.t",
        |name| tls_sink(&brokers, name, &tls),
    )
    .await;
    let out = p.run_cmd(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    let agent = start_streaming(&p);
    db.exec(
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, 200) g; \
         UPDATE t SET v = 1 WHERE id <= 100;",
    )
    .await;
    let topic = format!("{}.public.t", db.name);
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let (b, t, ca) = (brokers.clone(), topic.clone(), ca.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let tls = [
                ("security.protocol", "ssl"),
                ("ssl.ca.location", ca.as_str()),
            ];
            read_topic_with(&b, &t, &tls).unwrap_or_default()
        })
        .await
        .unwrap();
        if stored.len() >= 300 || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(agent.stop(), 0);
    let ids: HashSet<&Option<String>> = stored.iter().map(|m| &m.id).collect();
    assert_eq!(ids.len(), 300, "every change once");
    let partitions: HashSet<i32> = stored.iter().map(|m| m.partition).collect();
    assert_eq!(
        partitions,
        (0..5).collect(),
        "the agent created the topic with 5 partitions (200 keys use them all)"
    );

    let wrong_ca = env.var("CDC_TEST_PG_WRONG_CA").to_string();
    let unverified = tls_sink(
        &brokers,
        &db.name,
        &[("security.protocol", "ssl"), ("ssl.ca.location", &wrong_ca)],
    );
    let (code, text) = common::run_check(&db, "public.t", &unverified);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("certificate did not verify"), "{text}");
    assert!(text.contains("ssl.ca.location"), "the fix is named: {text}");

    let sasl_brokers = env.var("CDC_TEST_KAFKA_SASL_BROKERS").to_string();
    let refused = tls_sink(
        &sasl_brokers,
        &db.name,
        &[
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", &ca),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "cdc"),
            ("sasl.password", "not-it"),
        ],
    );
    let (code, text) = common::run_check(&db, "public.t", &refused);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("SASL authentication failed"), "{text}");
    assert!(text.contains("sasl.password"), "the fix is named: {text}");
    assert!(
        !text.contains("not-it"),
        "the password is not printed: {text}"
    );
    let p = common::Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&refused),
    );
    let code = p.start().wait_exit(Duration::from_secs(60));
    assert_ne!(code, 0, "a refused login stops the agent");
    let log = p.log();
    assert!(log.contains("SASL authentication failed"), "{log}");
    assert!(!log.contains("not-it"), "the password is not logged: {log}");
    db.drop().await;
}
