//! The NATS JetStream sink against a private nats-server (scripts/testenv.sh), Postgres source:
//! every change stored once and in commit order across SIGKILLs (replays dropped by message id),
//! the Debezium envelope, and a broker that goes away and comes back.
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{order_key, Pipeline, TestDb};
use serde_json::{json, Value as Json};

fn nats_url() -> String {
    common::env().var("CDC_TEST_NATS_URL").to_string()
}

/// A `[sink]` table for the nats sink; the stream and the subject prefix are the test's own.
fn nats_sink(url: &str, name: &str, format: &str) -> String {
    format!(
        "type = \"nats\"\nurl = \"{url}\"\nstream = \"{name}\"\nsubject_prefix = \"{name}\"\n\
         format = \"{format}\"\nflush_interval_ms = 50"
    )
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
    let _ = js.delete_stream(stream).await;
    out
}

/// 50,000 changes, the agent SIGKILLed three times: each change is in the stream exactly once,
/// in commit order.
#[tokio::test(flavor = "multi_thread")]
async fn every_change_once_in_order_across_sigkills() {
    const TRANSACTIONS: i64 = 50;
    const ROWS: i64 = 500; // per transaction: 500 inserts, 300 updates, 200 deletes
    let db = TestDb::new("nats_kill").await;
    db.exec("CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int)")
        .await;
    let sink = nats_sink(&nats_url(), &db.name, "native");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.ledger"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let mut agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));

    let writer_url = db.url.clone();
    let writer = tokio::spawn(async move {
        let c = common::connect(&writer_url).await;
        for tx in 0..TRANSACTIONS {
            let base = tx * ROWS;
            c.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO ledger SELECT {base} + g, {tx}, 0 FROM generate_series(1, {ROWS}) g;
                 UPDATE ledger SET v = 1 WHERE id > {base} AND id <= {base} + 300;
                 DELETE FROM ledger WHERE id > {base} + 300;
                 COMMIT;"
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let mut seed = std::process::id() as u64;
    for _ in 0..3 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(300 + (seed >> 33) % 900)).await;
        agent.kill9();
        agent = p.start();
    }
    writer.await.unwrap();
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
    let db = TestDb::new("nats_dbz").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY, doc jsonb, price numeric(10,2))")
        .await;
    let sink = nats_sink(&nats_url(), &db.name, "debezium");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec(
        "INSERT INTO t VALUES (1, '{\"a\": 1}', 9.50); UPDATE t SET price = 10 WHERE id = 1; \
         DELETE FROM t WHERE id = 1;",
    )
    .await;
    let stored = stored_messages(&db.name, 3, Duration::from_secs(30)).await;
    assert_eq!(agent.stop(), 0);
    let ops: Vec<&Json> = stored.iter().map(|m| &m.body["op"]).collect();
    assert_eq!(ops, [&json!("c"), &json!("u"), &json!("d")]);
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
    let db = TestDb::new("nats_down").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let url = nats_url();
    let port = url.rsplit(':').next().unwrap().to_string();
    let proxy = common::proxy::Proxy::start(format!("127.0.0.1:{port}")).await;
    let proxied = format!("nats://127.0.0.1:{}", proxy.port);
    let sink = nats_sink(&proxied, &db.name, "native");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
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
    let db = TestDb::new("nats_check").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let sink = nats_sink(&nats_url(), &db.name, "native");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let out = p.run_cmd(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("stream {} will be created", db.name)),
        "{text}"
    );

    let nowhere = format!("nats://127.0.0.1:{}", common::free_port());
    let sink = nats_sink(&nowhere, &db.name, "native");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let out = p.run_cmd(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot connect to NATS"), "{text}");
    db.drop().await;
}
