//! The NATS JetStream sink against a private nats-server (scripts/testenv.sh), Postgres source:
//! every change stored once and in commit order across SIGKILLs (replays dropped by message id),
//! the Debezium envelope, and a broker that goes away and comes back.
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{order_key, start_streaming, Pipeline, TestDb};
use serde_json::{json, Value as Json};

fn nats_url() -> String {
    common::env().var("CDC_TEST_NATS_URL").to_string()
}

/// A `[sink]` table for the nats sink; the stream and the subject prefix are the test's own.
/// With `format = "debezium"`, transaction metadata is on too.
fn nats_sink(url: &str, name: &str, format: &str) -> String {
    format!(
        "type = \"nats\"\nurl = \"{url}\"\nstream = \"{name}\"\nsubject_prefix = \"{name}\"\n\
         format = \"{format}\"\nflush_interval_ms = 50\ntransaction_metadata = {}",
        format == "debezium"
    )
}

async fn nats_pipeline(
    prefix: &str,
    schema_sql: &str,
    table: &str,
    url: &str,
    format: &str,
) -> (TestDb, Pipeline) {
    common::pipeline_into(prefix, schema_sql, table, |name| {
        nats_sink(url, name, format)
    })
    .await
}

struct Stored {
    subject: String,
    headers: async_nats::HeaderMap,
    body: Json,
}

async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until the stream holds `n` messages (and no more arrive for a moment), then reads them
/// all in stream order.
async fn stored_messages(stream: &str, n: u64, timeout: Duration) -> Vec<Stored> {
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let deadline = Instant::now() + timeout;
    loop {
        let len = stream_len(&js, stream).await;
        if len >= n {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if stream_len(&js, stream).await == len {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream} holds {len} of {n} messages after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = read_stream(&js, stream).await;
    let _ = js.delete_stream(stream).await;
    out
}

/// Every message of the stream, in stream order.
async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    let mut s = js.get_stream(stream).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.unwrap();
        out.push(Stored {
            subject: m.subject.to_string(),
            headers: m.headers,
            body: serde_json::from_slice(&m.payload).expect("a JSON message"),
        });
    }
    out
}

/// 50,000 changes, the agent SIGKILLed three times: each change is in the stream exactly once,
/// in commit order.
#[tokio::test(flavor = "multi_thread")]
async fn every_change_once_in_order_across_sigkills() {
    const TRANSACTIONS: i64 = 50;
    // 1,000 changes a transaction: 500 inserts, 300 updates, 200 deletes.
    let (db, p) = nats_pipeline(
        "nats_kill",
        "CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int)",
        "public.ledger",
        &nats_url(),
        "native",
    )
    .await;
    let agent = start_streaming(&p);
    let agent = common::ledger_under_kills(
        &p,
        agent,
        &db.url,
        TRANSACTIONS,
        Duration::from_millis(40),
        3,
        900,
    )
    .await;
    let expected = (TRANSACTIONS * 1000) as u64;
    let stored = stored_messages(&db.name, expected, Duration::from_secs(120)).await;
    assert_eq!(agent.stop(), 0);
    assert_eq!(
        stored.len() as u64,
        expected,
        "every change once: the replays after each kill were dropped by their message id"
    );
    let mut ids = BTreeSet::new();
    for m in &stored {
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .expect("a message id")
            .to_string();
        assert!(ids.insert(id.clone()), "message id {id} stored twice");
        assert_eq!(m.subject, format!("{}.public.ledger", db.name));
    }
    for pair in stored.windows(2) {
        assert!(
            order_key(&pair[0].body) < order_key(&pair[1].body),
            "commit order broken: {} then {}",
            pair[0].body,
            pair[1].body
        );
    }
    let deletes = stored
        .iter()
        .filter(|m| m.body["op"] == json!("delete"))
        .count();
    assert_eq!(deletes, (TRANSACTIONS * 200) as usize);
    db.drop().await;
}

/// `format = "debezium"`: Debezium's envelope and op letters, the key in the `Cdc-Key` header.
#[tokio::test(flavor = "multi_thread")]
async fn debezium_envelope_on_the_wire() {
    let (db, p) = nats_pipeline(
        "nats_dbz",
        "CREATE TABLE t (id int PRIMARY KEY, doc jsonb, price numeric(10,2))",
        "public.t",
        &nats_url(),
        "debezium",
    )
    .await;
    let agent = start_streaming(&p);
    db.exec(
        "INSERT INTO t VALUES (1, '{\"a\": 1}', 9.50); UPDATE t SET price = 10 WHERE id = 1; \
         DELETE FROM t WHERE id = 1;",
    )
    .await;
    // One transaction: BEGIN, the three changes, END (transaction_metadata = true).
    let all = stored_messages(&db.name, 5, Duration::from_secs(30)).await;
    assert_eq!(agent.stop(), 0);
    let marker_subject = format!("{}.transaction", db.name);
    let (markers, stored): (Vec<Stored>, Vec<Stored>) =
        all.into_iter().partition(|m| m.subject == marker_subject);
    let statuses: Vec<&Json> = markers.iter().map(|m| &m.body["status"]).collect();
    assert_eq!(statuses, [&json!("BEGIN"), &json!("END")]);
    let tx_id = markers[0].body["id"].clone();
    assert_eq!(markers[1].body["id"], tx_id);
    assert_eq!(markers[1].body["event_count"], 3);
    assert_eq!(
        markers[1].body["data_collections"],
        json!([{"data_collection": "public.t", "event_count": 3}])
    );
    let ops: Vec<&Json> = stored.iter().map(|m| &m.body["op"]).collect();
    assert_eq!(ops, [&json!("c"), &json!("u"), &json!("d")]);
    assert_eq!(
        stored[2].body["transaction"],
        json!({"id": tx_id, "total_order": 3, "data_collection_order": 3})
    );
    let create = &stored[0].body;
    assert_eq!(
        create["after"],
        json!({"id": 1, "doc": "{\"a\": 1}", "price": "9.50"})
    );
    assert_eq!(create["before"], Json::Null);
    assert_eq!(create["source"]["connector"], "postgresql");
    assert_eq!(create["source"]["name"], json!(db.name));
    assert_eq!(create["source"]["table"], "t");
    assert!(create["source"]["lsn"].is_u64() && create["ts_ms"].is_i64());
    assert_eq!(stored[2].body["before"]["id"], 1);
    assert_eq!(stored[2].body["after"], Json::Null);
    for m in &stored {
        let key: Json =
            serde_json::from_str(m.headers.get("Cdc-Key").expect("key header").as_str()).unwrap();
        assert_eq!(key, json!({"id": 1}));
    }
    db.drop().await;
}

/// A broker that refuses connections: the agent retries with backoff, holds its position, and
/// everything written meanwhile arrives once the broker is back.
#[tokio::test(flavor = "multi_thread")]
async fn broker_down_then_back_loses_nothing() {
    let url = nats_url();
    let port = url.rsplit(':').next().unwrap().to_string();
    let proxy = common::proxy::Proxy::start(format!("127.0.0.1:{port}")).await;
    let proxied = format!("nats://127.0.0.1:{}", proxy.port);
    let (db, p) = nats_pipeline(
        "nats_down",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "public.t",
        &proxied,
        "native",
    )
    .await;
    let agent = start_streaming(&p);
    db.exec("INSERT INTO t SELECT generate_series(1, 100)")
        .await;
    proxy.take_down();
    db.exec("INSERT INTO t SELECT generate_series(101, 300)")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.bring_back();
    db.exec("INSERT INTO t SELECT generate_series(301, 400)")
        .await;
    let stored = stored_messages(&db.name, 400, Duration::from_secs(90)).await;
    assert_eq!(agent.stop(), 0);
    let ids: BTreeSet<i64> = stored
        .iter()
        .map(|m| m.body["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(stored.len(), 400, "each change once");
    assert_eq!(ids, (1..=400).collect());
    db.drop().await;
}

/// `cdc-agent check` reaches the broker: JetStream on and the stream creatable; a broker that is
/// not there is a failed check with the fix.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_the_broker() {
    let (db, p) = nats_pipeline(
        "nats_check",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "public.t",
        &nats_url(),
        "native",
    )
    .await;
    let out = p.run_cmd(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("stream {} will be created", db.name)),
        "{text}"
    );

    let nowhere = format!("nats://127.0.0.1:{}", common::free_port());
    let (code, text) = common::run_check(&db, "public.t", &nats_sink(&nowhere, &db.name, "native"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot connect to NATS"), "{text}");
    db.drop().await;
}

/// A SIGKILL in the middle of a snapshot into NATS: the restart resumes after the chunks the
/// stream already holds (read back from the stream's last message ids), so at most the chunks
/// in flight at the kill are stored twice, and every row is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_killed_midway_stores_at_most_the_chunks_in_flight_twice() {
    const ROWS: u64 = 200_000;
    const CHUNK_ROWS: u64 = 5000;
    const WORKERS: u64 = 2;
    let db = common::TestDb::new("nats_snapkill").await;
    db.exec(&format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);
         INSERT INTO big SELECT g, repeat('v', 50) FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let sink = nats_sink(&nats_url(), &db.name, "native");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.big"],
        &format!("snapshot_chunk_rows = {CHUNK_ROWS}\nsnapshot_workers = {WORKERS}"),
        Some(&sink),
    );
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let agent = p.start();
    let deadline = Instant::now() + Duration::from_secs(300);
    while stream_len(&js, &db.name).await <= ROWS / 3 {
        assert!(
            Instant::now() < deadline,
            "a third of the table never arrived; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.kill9();
    let at_kill = stream_len(&js, &db.name).await;
    assert!(at_kill < ROWS, "killed mid-copy ({at_kill} stored)");

    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(300));
    // A marker row after the copy: once it is stored, so is every snapshot row before it.
    db.exec("INSERT INTO big VALUES (0, 'marker')").await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let stored = loop {
        let len = stream_len(&js, &db.name).await;
        if len > ROWS {
            let s = js.get_stream(&db.name).await.unwrap();
            let last = s.get_raw_message(len).await.unwrap();
            let body: Json = serde_json::from_slice(&last.payload).unwrap();
            if body["after"]["v"] == "marker" {
                break stored_messages(&db.name, len, Duration::from_secs(60)).await;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the marker never arrived; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(agent.stop(), 0);
    let snapshot: Vec<&Stored> = stored
        .iter()
        .filter(|m| m.body["source"]["snapshot"] == json!(true))
        .collect();
    let keys: BTreeSet<i64> = snapshot
        .iter()
        .map(|m| m.body["after"]["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(keys.len() as u64, ROWS, "every row stored");
    assert!(
        snapshot.len() as u64 <= ROWS + WORKERS * CHUNK_ROWS,
        "chunks the stream already held were copied again: {} snapshot messages for {ROWS} rows \
         ({at_kill} stored at the kill); log:\n{}",
        snapshot.len(),
        p.log()
    );
    db.drop().await;
}

/// `on_error = "dlq"`: a change larger than the stream's `max_msg_size` is set aside (and a later
/// change to its key held behind it); the other changes arrive. Once the stream takes larger
/// messages, `dlq replay --all` publishes them and the store is empty.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_over_the_streams_max_msg_size_is_dead_lettered_and_the_rest_arrive() {
    let url = nats_url();
    let (db, p) = common::pipeline_into(
        "nats_dlq",
        "CREATE TABLE docs (id int PRIMARY KEY, body text)",
        "public.docs",
        |name| format!("{}\non_error = \"dlq\"", nats_sink(&url, name, "native")),
    )
    .await;
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let _ = js.delete_stream(&db.name).await;
    let mut config = jetstream::stream::Config {
        name: db.name.clone(),
        subjects: vec![format!("{}.>", db.name)],
        max_message_size: 4096,
        ..Default::default()
    };
    js.create_stream(config.clone()).await.unwrap();
    let agent = start_streaming(&p);
    // 200 rows, two of them 10,000 characters long; then an update of a refused row (held behind
    // its insert) and of a good one.
    db.exec(
        "INSERT INTO docs SELECT g, CASE WHEN g IN (50, 120) THEN repeat('x', 10000) ELSE 'small' END \
         FROM generate_series(1, 200) g;
         UPDATE docs SET body = 'now small' WHERE id = 50;
         UPDATE docs SET body = 'changed' WHERE id = 51;",
    )
    .await;
    let dlq_list = || {
        let out = p.run_cmd(&["dlq", "list", "--json"]);
        assert!(
            out.status.success(),
            "dlq list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Json>(&out.stdout).expect("dlq list --json is JSON")
    };
    common::wait_until("three dead letters", Duration::from_secs(60), || async {
        dlq_list().as_array().map_or(0, Vec::len) == 3
    })
    .await;
    let list = dlq_list();
    let classes: Vec<(i64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"]["id"].as_i64().unwrap(),
                r["class"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        vec![
            (50, "too_large".to_string()),
            (120, "too_large".to_string()),
            (50, "held".to_string())
        ],
        "{list:#}"
    );
    let message = list[0]["message"].as_str().unwrap();
    assert!(
        message.contains("public.docs key {\"id\":50}") && message.contains("4096"),
        "{message}"
    );
    // 198 inserts and the update of row 51; nothing of rows 50 and 120.
    let stored = stored_messages_kept(&db.name, 199, Duration::from_secs(60)).await;
    let ids: Vec<i64> = stored
        .iter()
        .map(|m| m.body["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 199);
    assert!(!ids.contains(&50) && !ids.contains(&120), "{ids:?}");
    assert_eq!(
        stored.last().unwrap().body["after"]["body"],
        json!("changed")
    );

    // The stream takes large messages now: the replay publishes the three, in their order.
    config.max_message_size = -1;
    js.update_stream(config).await.unwrap();
    let out = p.run_cmd(&["dlq", "replay", "--all"]);
    assert!(
        out.status.success(),
        "dlq replay: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dlq_list().as_array().map_or(0, Vec::len), 0);
    let stored = stored_messages(&db.name, 202, Duration::from_secs(60)).await;
    let replayed: Vec<(i64, String, usize)> = stored[199..]
        .iter()
        .map(|m| {
            let id = m.headers.get("Nats-Msg-Id").unwrap().to_string();
            assert!(id.ends_with(":replay"), "{id}");
            let after = &m.body["after"];
            (
                after["id"].as_i64().unwrap(),
                m.body["op"].as_str().unwrap().to_string(),
                after["body"].as_str().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        replayed,
        vec![
            (50, "insert".to_string(), 10000),
            (120, "insert".to_string(), 10000),
            (50, "update".to_string(), "now small".len()),
        ]
    );
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// [`stored_messages`] without deleting the stream afterwards.
async fn stored_messages_kept(stream: &str, n: u64, timeout: Duration) -> Vec<Stored> {
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let deadline = Instant::now() + timeout;
    while stream_len(&js, stream).await < n {
        assert!(
            Instant::now() < deadline,
            "stream {stream} holds fewer than {n} messages after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    read_stream(&js, stream).await
}
