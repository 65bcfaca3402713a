//! The Postgres source end to end: operations and before images, schema changes mid-stream, the
//! initial snapshot, reconnects, and SIGKILL at random moments without losing or repeating a change.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{order_key, streaming, Pipeline, TestDb};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn operations_identities_and_schema_changes() {
    let (db, p, agent) = streaming(
        "ops",
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
         CREATE TABLE audit (id int PRIMARY KEY, note text, big text);
         ALTER TABLE audit REPLICA IDENTITY FULL;
         CREATE TABLE ignored (id int PRIMARY KEY);",
        &["public.items", "public.audit"],
    )
    .await;
    // One statement (or explicit transaction) per call: a multi-statement query would otherwise
    // run as one implicit transaction.
    for sql in [
        "BEGIN; INSERT INTO items VALUES (1, 'apple', 3), (2, 'pear', 5); INSERT INTO ignored VALUES (1); COMMIT;",
        "UPDATE items SET qty = 4 WHERE id = 1",
        "UPDATE items SET id = 10 WHERE id = 2",
        "DELETE FROM items WHERE id = 1",
        "INSERT INTO audit VALUES (1, 'first', repeat('x', 100000))",
        "UPDATE audit SET note = 'second' WHERE id = 1",
        "DELETE FROM audit WHERE id = 1",
        "BEGIN; INSERT INTO items VALUES (99, 'rolled back', 0); ROLLBACK;",
        "ALTER TABLE items ADD COLUMN color text DEFAULT 'red'",
        "INSERT INTO items (id, name, qty, color) VALUES (3, 'plum', 1, 'purple')",
        "ALTER TABLE items DROP COLUMN qty",
        "INSERT INTO items (id, name) VALUES (4, 'fig')",
        "TRUNCATE items",
    ] {
        db.exec(sql).await;
    }
    let r = p.wait_records(11, Duration::from_secs(30));
    assert_eq!(agent.stop(), 0);
    let ops: Vec<&str> = r.iter().map(|x| x["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "insert", "insert", "update", "update", "delete", "insert", "update", "delete",
            "insert", "insert", "truncate"
        ],
        "records: {r:#?}"
    );
    assert_eq!(
        r.len(),
        11,
        "the ignored table and the rolled-back insert appear nowhere"
    );
    // One transaction: one commit position, seq from 0.
    assert_eq!(r[0]["source"]["lsn"], r[1]["source"]["lsn"]);
    assert_eq!(
        (
            r[0]["source"]["seq"].as_u64(),
            r[1]["source"]["seq"].as_u64()
        ),
        (Some(0), Some(1))
    );
    // REPLICA IDENTITY DEFAULT: before holds the key.
    assert_eq!(r[2]["key"], json!({"id": 1}));
    assert_eq!(r[2]["before"], json!({"id": 1}));
    assert_eq!(r[2]["after"], json!({"id": 1, "name": "apple", "qty": 4}));
    // A key change: the old key in before, the new one in key and after.
    assert_eq!(r[3]["before"], json!({"id": 2}));
    assert_eq!(r[3]["key"], json!({"id": 10}));
    assert_eq!(r[4]["op"], json!("delete"));
    assert_eq!(r[4]["after"], json!(null));
    assert_eq!(r[4]["key"], json!({"id": 1}));
    assert_eq!(r[5]["before"], json!(null), "an insert has no before image");
    // REPLICA IDENTITY FULL: the whole old row, the key still the primary key.
    assert_eq!(r[6]["before"]["note"], json!("first"));
    assert_eq!(r[6]["before"]["big"].as_str().map(str::len), Some(100000));
    assert_eq!(r[6]["key"], json!({"id": 1}));
    assert_eq!(r[7]["before"]["note"], json!("second"));
    // Columns added and dropped mid-stream.
    assert_eq!(
        r[8]["after"],
        json!({"id": 3, "name": "plum", "qty": 1, "color": "purple"})
    );
    assert_eq!(
        r[9]["after"],
        json!({"id": 4, "name": "fig", "color": "red"})
    );
    assert_eq!(r[10]["key"], json!(null));
    assert_eq!(r[10]["source"]["table"], json!("items"));
    // Commit order.
    for pair in r.windows(2) {
        assert!(
            order_key(&pair[0]) < order_key(&pair[1]),
            "out of order: {pair:?}"
        );
    }
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_snapshot_then_stream_without_gap() {
    let db = TestDb::new("snap").await;
    db.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'old' FROM generate_series(1, 5000) g;",
    )
    .await;
    let p = Pipeline::new(&db.url, &db.name, &["public.t"], "");
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec("UPDATE t SET v = 'new' WHERE id <= 10; INSERT INTO t VALUES (5001, 'new');")
        .await;
    let r = p.wait_records(5011, Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    assert_eq!(r.len(), 5011);
    let snapshot: Vec<_> = r.iter().take(5000).collect();
    assert!(snapshot
        .iter()
        .all(|x| x["source"]["snapshot"] == json!(true) && x["op"] == json!("insert")));
    let ids: BTreeSet<i64> = snapshot
        .iter()
        .map(|x| x["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5000);
    assert!(r[5000..]
        .iter()
        .all(|x| x["source"].get("snapshot").is_none()));
    assert_eq!(r[5010]["after"], json!({"id": 5001, "v": "new"}));
    for pair in r.windows(2) {
        assert!(order_key(&pair[0]) < order_key(&pair[1]));
    }
    // A restart neither copies again nor repeats anything.
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec("INSERT INTO t VALUES (5002, 'after restart');")
        .await;
    let r = p.wait_records(5012, Duration::from_secs(30));
    assert_eq!(agent.stop(), 0);
    assert_eq!(r.len(), 5012);
    db.drop().await;
}

/// Every committed change, in commit order, exactly once, across SIGKILLs at random moments.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    const TRANSACTIONS: i64 = 100;
    const ROWS: i64 = 500; // per transaction: 500 inserts, 300 updates, 200 deletes = 1000 changes
    let (db, p, agent) = streaming(
        "kill",
        "CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int)",
        &["public.ledger"],
    )
    .await;

    // Four kills, each 0.3 to 1.5 s after the last start.
    let agent = common::ledger_under_kills(
        &p,
        agent,
        &db.url,
        TRANSACTIONS,
        Duration::from_millis(20),
        4,
        1200,
    )
    .await;
    let expected = (TRANSACTIONS * 1000) as usize;
    p.wait_records(expected, Duration::from_secs(120));
    assert_eq!(agent.stop(), 0);
    let r = p.records();
    assert_eq!(
        r.len(),
        expected,
        "every change exactly once (the file sink resumes after its last record)"
    );
    for pair in r.windows(2) {
        assert!(
            order_key(&pair[0]) < order_key(&pair[1]),
            "commit order broken: {pair:?}"
        );
    }
    let inserted: BTreeSet<i64> = r
        .iter()
        .filter(|x| x["op"] == json!("insert"))
        .map(|x| x["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(inserted.len(), (TRANSACTIONS * ROWS) as usize);
    let deletes = r.iter().filter(|x| x["op"] == json!("delete")).count();
    assert_eq!(deletes, (TRANSACTIONS * 200) as usize);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_the_server_ends_the_connection() {
    let (db, p, agent) = streaming(
        "reconnect",
        "CREATE TABLE t (id int PRIMARY KEY)",
        &["public.t"],
    )
    .await;
    db.exec("INSERT INTO t VALUES (1)").await;
    p.wait_records(1, Duration::from_secs(20));
    db.exec(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database()",
    )
    .await;
    db.exec("INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);")
        .await;
    let r = p.wait_records(3, Duration::from_secs(30));
    let status = p.status_json();
    assert!(
        status["errors_total"].as_u64().unwrap() >= 1,
        "the lost connection is counted: {status}"
    );
    // And in the metrics: a connection error, a retry, streaming again.
    p.wait_state("streaming", Duration::from_secs(30));
    let metrics = common::http_get(&p.admin, "/metrics");
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
    };
    let pipeline = format!("pipeline=\"{}\"", p.name);
    assert!(value(&format!("cdc_retries_total{{{pipeline}}}")) >= 1.0);
    assert!(
        value(&format!(
            "cdc_errors_total{{{pipeline},kind=\"connection\"}}"
        )) >= 1.0
    );
    assert_eq!(
        value(&format!("cdc_state{{{pipeline},state=\"streaming\"}}")),
        1.0
    );
    assert_eq!(agent.stop(), 0);
    let ids: Vec<i64> = r
        .iter()
        .map(|x| x["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(p.log().contains("retrying"), "the retry is logged");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_while_streaming_and_when_stopped() {
    let (db, p, agent) = streaming(
        "status",
        "CREATE TABLE t (id int PRIMARY KEY)",
        &["public.t"],
    )
    .await;
    db.exec("INSERT INTO t SELECT generate_series(1, 100)")
        .await;
    p.wait_records(100, Duration::from_secs(20));
    let mut status = serde_json::Value::Null;
    common::wait_until("status to settle", Duration::from_secs(20), || {
        status = p.status_json();
        let s = status.clone();
        async move {
            s["state"] == json!("streaming")
                && s["events_total"] == json!(100)
                && s["lag_bytes"].is_u64()
                && s["lag_seconds"] == json!(0.0)
        }
    })
    .await;
    for field in [
        "name",
        "state",
        "source_type",
        "source_position",
        "confirmed_position",
        "lag_bytes",
        "lag_seconds",
        "slot_retained_bytes",
        "last_commit_ts",
        "events_total",
        "events_per_sec",
        "errors_total",
        "dlq_size",
        "tables",
    ] {
        assert!(
            status.get(field).is_some(),
            "status lacks {field}: {status}"
        );
    }
    assert_eq!(status["source_type"], json!("postgres"));
    assert_eq!(status["tables"][0]["table"], json!("public.t"));
    assert_eq!(status["tables"][0]["events_total"], json!(100));
    assert_eq!(agent.stop(), 0);

    // Stopped, with writes the agent has not seen: it says so, and how far behind it is.
    db.exec("INSERT INTO t SELECT generate_series(101, 200)")
        .await;
    let stopped = p.status_json();
    assert_eq!(stopped["state"], json!("stopped"));
    assert_eq!(stopped["events_total"], json!(100));
    assert!(stopped["lag_bytes"].as_u64().unwrap() > 0, "{stopped}");
    let human = p.run_cmd(&["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("stopped"));
    let probe = p.run_cmd(&["status", "--max-lag-bytes", "0"]);
    assert_eq!(
        probe.status.code(),
        Some(1),
        "a lag past the threshold exits 1"
    );

    // Started again, it catches up: the lag goes back to about nothing.
    let agent = p.start();
    p.wait_records(200, Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = p.status_json();
        if s["state"] == "streaming" && s["lag_bytes"].as_u64().is_some_and(|b| b < 1 << 16) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never caught up: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.stop(), 0);

    // reset drops the slot and forgets the checkpoint.
    assert_eq!(
        p.run_cmd(&["reset"]).status.code(),
        Some(2),
        "reset wants --yes"
    );
    let out = p.run_cmd(&["reset", "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    db.drop().await;
}

/// SIGTERM while the agent is still starting (here: waiting for the state store that a running
/// agent holds) is a clean stop with exit 0, not death by the signal's default action; the running
/// agent is not disturbed.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_starting_stops_cleanly() {
    let (db, p, agent) = streaming(
        "earlystop",
        "CREATE TABLE t (id int PRIMARY KEY)",
        &["public.t"],
    )
    .await;
    // The same pipeline (same state store) on another admin port: it waits for the store lock.
    let second = p.dir.path().join("second.toml");
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace(&p.admin, &format!("127.0.0.1:{}", common::free_port()));
    std::fs::write(&second, text).unwrap();
    let mut waiting = common::Agent {
        child: std::process::Command::new(env!("CARGO_BIN_EXE_cdc-agent"))
            .arg("-c")
            .arg(&second)
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        waiting.child.try_wait().unwrap().is_none(),
        "the second agent waits for the store lock (5 s) before it gives up"
    );
    assert_eq!(waiting.stop(), 0, "SIGTERM while starting exits cleanly");

    db.exec("INSERT INTO t VALUES (1)").await;
    p.wait_records(1, Duration::from_secs(20));
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_only_copies_and_exits_without_leaving_a_slot() {
    let db = TestDb::new("copyonly").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 300) g;")
        .await;
    let p = Pipeline::new(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"initial_only\"",
    );
    assert_eq!(
        p.start().wait_exit(Duration::from_secs(60)),
        0,
        "log: {}",
        p.log()
    );
    let r = p.records();
    assert_eq!(r.len(), 300);
    assert!(r.iter().all(|x| x["source"]["snapshot"] == json!(true)));
    let slots: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "a copy-only pipeline keeps no slot");
    // Run again: the copy is done, nothing more is written.
    assert_eq!(p.start().wait_exit(Duration::from_secs(60)), 0);
    assert_eq!(p.records().len(), 300);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_snapshot_stops_cleanly_and_the_next_run_finishes_it() {
    const ROWS: i64 = 300_000;
    let db = TestDb::new("snapstop").await;
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, repeat('v', 200) FROM generate_series(1, {ROWS}) g;"
    ))
    .await;
    let p = Pipeline::new(&db.url, &db.name, &["public.t"], "");
    assert!(!p.dir.path().join("state").exists());
    let never_ran = p.run_cmd(&["status", "--json"]);
    assert_eq!(
        never_ran.status.code(),
        Some(3),
        "status of a pipeline that never ran"
    );
    assert!(
        !p.dir.path().join("state").exists(),
        "status must not create the state store"
    );

    let agent = p.start();
    p.wait_state("snapshotting", Duration::from_secs(30));
    // `snapshotting` shows from the moment the copy starts: stop once some chunks are durable
    // (the default 10,000-row chunks, two workers), so that there is something to resume after.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = p.status_json();
        let durable = status["tables"][0]["rows_snapshotted"]
            .as_u64()
            .unwrap_or(0);
        if durable >= 20_000 || status["state"] != "snapshotting" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rows copied: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(agent.stop(), 0, "SIGTERM during a snapshot exits cleanly");
    let partial = p.records().len();
    assert!(
        partial < ROWS as usize,
        "the copy was interrupted ({partial} rows)"
    );

    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(120));
    // The snapshot said how many rows it expected (status refreshes once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let estimate = loop {
        let status = p.status_json();
        if let Some(n) = status["tables"][0]["rows_estimated"].as_u64() {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no estimate: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        (ROWS as u64 * 8 / 10..=ROWS as u64 * 12 / 10).contains(&estimate),
        "estimated {estimate} of {ROWS} rows"
    );
    db.exec("INSERT INTO t VALUES (0, 'streamed')").await;
    // The second run copies only what the first did not make durable, then streams.
    p.wait_records(partial + 1, Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = p.records();
        if r.last()
            .is_some_and(|x| x["after"]["v"] == json!("streamed"))
        {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the streamed row did not arrive"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(agent.stop(), 0);
    let ids = |records: &[serde_json::Value]| -> BTreeSet<i64> {
        records
            .iter()
            .filter(|x| x["source"]["snapshot"] == json!(true))
            .map(|x| x["after"]["id"].as_i64().unwrap())
            .collect()
    };
    let first = ids(&r[..partial]);
    let second = ids(&r[partial..]);
    assert!(
        second.len() < ROWS as usize,
        "the second run resumed: it copied {} of {ROWS} rows",
        second.len()
    );
    assert_eq!(
        first.union(&second).count(),
        ROWS as usize,
        "together the two runs copied every row"
    );
    db.drop().await;
}

/// Transactions the server streamed to the agent (pg_stat_replication_slots), for the slot of
/// database `db`.
async fn streamed_transactions(client: &tokio_postgres::Client, db: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(sum(s.stream_txns), 0)::int8 FROM pg_stat_replication_slots s \
             JOIN pg_replication_slots r ON r.slot_name = s.slot_name WHERE r.database = $1",
            &[&db],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Big transactions (past `logical_decoding_work_mem`) are sent by the server while they run
/// (pgoutput protocol 2) and held by the agent until their commit: a committed one arrives
/// whole, in commit order, without its rolled-back subtransaction; an aborted one never
/// arrives; a SIGKILL while one is half sent loses and repeats nothing.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_transactions_arrive_at_their_commit_exactly_once() {
    let (db, p, agent) = streaming(
        "streamtx",
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);
         DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = %L',
                                    current_database(), '64kB'); END $$;",
        &["public.big"],
    )
    .await;
    // The agent's walsender took the setting when it connected: restart it after the ALTER.
    assert_eq!(agent.stop(), 0);
    let said = String::from_utf8_lossy(&p.run_cmd(&["check"]).stdout).to_string();
    assert!(
        said.contains("ok   big transactions: streamed while they run (pgoutput protocol 2)"),
        "{said}"
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let a = db.client().await;
    let b = db.client().await;
    let pad = "repeat('x', 200)";

    // A: 5,000 inserts, a rolled-back subtransaction of 1,000, 1,000 updates; a small
    // transaction commits on another connection while A runs.
    a.batch_execute(&format!(
        "BEGIN; INSERT INTO big SELECT g, {pad} FROM generate_series(1, 5000) g;
         SAVEPOINT s; INSERT INTO big SELECT g, {pad} FROM generate_series(100001, 101000) g;
         ROLLBACK TO SAVEPOINT s;"
    ))
    .await
    .unwrap();
    b.batch_execute("INSERT INTO big VALUES (0, 'small')")
        .await
        .unwrap();
    a.batch_execute("UPDATE big SET v = 'updated' WHERE id BETWEEN 1 AND 1000; COMMIT;")
        .await
        .unwrap();
    // B: streamed, then rolled back.
    a.batch_execute(&format!(
        "BEGIN; INSERT INTO big SELECT g, {pad} FROM generate_series(200001, 203000) g; ROLLBACK;"
    ))
    .await
    .unwrap();
    b.batch_execute("INSERT INTO big VALUES (-1, 'last')")
        .await
        .unwrap();
    let records = p.wait_records(1 + 5000 + 1000 + 1, Duration::from_secs(120));
    // (The walsender reports its statistics on its own schedule.)
    common::wait_until(
        "the server's statistics to count A and B streamed",
        Duration::from_secs(60),
        || async { streamed_transactions(&b, &db.name).await >= 2 },
    )
    .await;
    assert_eq!(
        records[0]["after"]["id"],
        json!(0),
        "the small one committed first"
    );
    assert_eq!(
        records.last().unwrap()["after"]["id"],
        json!(-1),
        "{} records, the last ones: {:?}",
        records.len(),
        &records[records.len().saturating_sub(3)..]
    );
    for pair in records.windows(2) {
        assert!(order_key(&pair[0]) < order_key(&pair[1]), "{pair:?}");
    }
    let ids = |op: &str| -> BTreeSet<i64> {
        records
            .iter()
            .filter(|r| r["op"] == json!(op))
            .map(|r| r["after"]["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids("insert").len(), 5002);
    assert!(
        ids("insert").iter().all(|&id| id <= 5000),
        "no rolled-back row arrives"
    );
    assert_eq!(ids("update"), (1..=1000).collect());
    let tx: BTreeSet<String> = records[1..records.len() - 1]
        .iter()
        .map(|r| r["source"]["tx_id"].to_string())
        .collect();
    assert_eq!(tx.len(), 1, "A is one transaction");

    // C: half streamed when the agent is killed; committed while it is down.
    let streamed_before = streamed_transactions(&b, &db.name).await;
    a.batch_execute(&format!(
        "BEGIN; INSERT INTO big SELECT g, {pad} FROM generate_series(300001, 310000) g;"
    ))
    .await
    .unwrap();
    common::wait_until(
        "the server to stream part of C",
        Duration::from_secs(60),
        || async { streamed_transactions(&b, &db.name).await > streamed_before },
    )
    .await;
    agent.kill9();
    a.batch_execute("COMMIT").await.unwrap();
    let agent = p.start();
    let records = p.wait_records(6002 + 10000, Duration::from_secs(120));
    assert_eq!(agent.stop(), 0);
    assert_eq!(records.len(), 16002, "C exactly once");
    let c: BTreeSet<i64> = records[6002..]
        .iter()
        .map(|r| r["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(c, (300001..=310000).collect());
    let spill = p.dir.path().join("state/spill");
    let left: Vec<_> = walk(&spill);
    assert!(left.is_empty(), "spill files left: {left:?}");
    // A warehouse target keeps protocol 1 unless told otherwise (docs/performance.md).
    let (_, said) = common::run_check(
        &db,
        "public.big",
        &format!(
            "type = \"postgres\"\nurl = \"{}\"\nschema = \"replica\"",
            db.url
        ),
    );
    assert!(
        said.contains("big transactions: sent at their commit (source.streaming = false, or unset with a warehouse target)"),
        "{said}"
    );
    db.drop().await;
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
