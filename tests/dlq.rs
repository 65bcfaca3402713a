//! The dead-letter store against real servers: MariaDB → Postgres with rows the target refuses
//! (a NUL byte Postgres text cannot hold, a value too long for a column narrowed by hand, a row a
//! CHECK added to the target refuses) among thousands of good changes.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::mysql::{text_rows, TargetDb};
use common::{Pipeline, TestDb};
use serde_json::Value as Json;

/// The keys of the refused rows: a NUL byte, a code too long, a negative quantity.
const NUL_KEY: i64 = 100;
const LONG_KEY: i64 = 200;
const CHECK_KEY: i64 = 300;

fn source_url(db: &TargetDb) -> String {
    let port = common::env().var("CDC_TEST_MYSQL_PORT");
    format!("mysql://cdc:secret-pw@127.0.0.1:{port}/{}", db.name)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A MariaDB source with `people` (seeded with ten rows) into a Postgres target.
async fn migration(prefix: &str, on_error: &str) -> (TargetDb, TestDb, Pipeline) {
    let src = TargetDb::new(prefix);
    let dst = TestDb::new(&format!("{prefix}dst")).await;
    src.exec(
        "CREATE TABLE people (id int PRIMARY KEY, name varchar(100), code varchar(40), qty int);
         INSERT INTO people SELECT seq, CONCAT('seed ', seq), CONCAT('s', seq), seq FROM seq_1_to_10",
    )
    .await;
    let sink = format!(
        "type = \"postgres\"\nurl = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 100\non_error = \"{on_error}\"",
        dst.url
    );
    let p = Pipeline::with_sink(
        &source_url(&src),
        &src.name,
        &[&format!("{}.people", src.name)],
        "",
        Some(&sink),
    );
    (src, dst, p)
}

async fn source_conn(src: &TargetDb) -> mysql_async::Conn {
    let url = src.admin_url.replace("/?", &format!("/{}?", src.name));
    mysql_async::Conn::from_url(&url).await.unwrap()
}

async fn source_exec(src: &TargetDb, sql: &str) {
    use mysql_async::prelude::Queryable;
    let mut conn = source_conn(src).await;
    conn.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.disconnect().await;
}

type Rows = BTreeMap<i64, Vec<Option<String>>>;

async fn source_rows(src: &TargetDb) -> Rows {
    let mut conn = source_conn(src).await;
    let rows = text_rows(
        &mut conn,
        "SELECT id, name, code, CAST(qty AS CHAR) FROM people",
    )
    .await;
    let _ = conn.disconnect().await;
    rows.into_iter()
        .map(|r| {
            let id = r[0].as_deref().unwrap().parse().unwrap();
            (id, r[1..].to_vec())
        })
        .collect()
}

async fn target_rows(dst: &TestDb) -> Rows {
    dst.client()
        .await
        .query(
            "SELECT id::bigint, name, code, qty::text FROM replica.people",
            &[],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let id: i64 = r.get(0);
                    (id, (1..4).map(|i| r.get::<_, Option<String>>(i)).collect())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the target holds the source's rows, but for `except`.
async fn wait_equal_except(src: &TargetDb, dst: &TestDb, p: &Pipeline, except: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut want = source_rows(src).await;
        for key in except {
            want.remove(key);
        }
        let have = target_rows(dst).await;
        if want == have {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.keys().filter(|k| !have.contains_key(k)).collect();
            let extra: Vec<_> = have.keys().filter(|k| !want.contains_key(k)).collect();
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| have.get(k).is_some_and(|h| h != *v))
                .map(|(k, _)| k)
                .collect();
            panic!(
                "target never equalled source except {except:?}: missing {missing:?}, extra {extra:?}, different {differ:?}; log:\n{}",
                p.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn dlq_list(p: &Pipeline) -> Vec<Json> {
    let out = p.run_cmd(&["dlq", "list", "--json"]);
    assert!(out.status.success(), "dlq list: {}", stderr(&out));
    serde_json::from_slice::<Json>(&out.stdout)
        .expect("dlq list --json is JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn records_of(list: &[Json], key: i64) -> Vec<&Json> {
    list.iter().filter(|r| r["key"]["id"] == key).collect()
}

/// 20,000 good changes (inserts, updates, deletes) in 40 transactions; the refused rows inserted
/// in the middle of one, among good rows.
async fn workload(src: &TargetDb) {
    use mysql_async::prelude::Queryable;
    let mut conn = source_conn(src).await;
    for tx in 0..40i64 {
        let base = 1000 + tx * 400;
        let poison = if tx == 20 {
            format!(
                "INSERT INTO people VALUES ({NUL_KEY}, CONCAT('nul', CHAR(0), 'byte'), 'n', 1),
                   ({LONG_KEY}, 'too long', 'ABCDEFGHIJ', 2), ({CHECK_KEY}, 'negative', 'q', -5);"
            )
        } else {
            String::new()
        };
        conn.query_drop(format!(
            "START TRANSACTION;
             INSERT INTO people SELECT seq, CONCAT('name ', seq), CONCAT('c', seq % 1000), seq % 50
               FROM seq_{base}_to_{};
             {poison}
             UPDATE people SET qty = qty + 1, name = CONCAT(name, ' u') WHERE id BETWEEN {base} AND {base} + 79;
             DELETE FROM people WHERE id BETWEEN {base} + 80 AND {base} + 99;
             COMMIT;",
            base + 399
        ))
        .await
        .unwrap();
    }
    let _ = conn.disconnect().await;
}

/// Later updates to the refused keys (none of which makes its row acceptable), and a good one.
async fn later_updates(src: &TargetDb) {
    source_exec(
        src,
        &format!(
            "UPDATE people SET qty = qty + 1, name = CONCAT(name, ' later') WHERE id IN ({NUL_KEY}, {LONG_KEY}, {CHECK_KEY}, 1001)"
        ),
    )
    .await;
}

/// Waits until `dlq list` shows `n` records.
async fn wait_dlq_len(p: &Pipeline, n: usize) -> Vec<Json> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = dlq_list(p);
        if list.len() == n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "the dead-letter store never held {n} records: {list:?}; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_rows_are_set_aside_held_replayed_and_dropped() {
    let (src, dst, p) = migration("dlqmig", "dlq").await;
    let mut agent = p.start();
    wait_equal_except(&src, &dst, &p, &[]).await;
    // Someone narrows a column and adds a CHECK on the target.
    dst.exec(
        "ALTER TABLE replica.people ALTER COLUMN code TYPE varchar(5);
         ALTER TABLE replica.people ADD CONSTRAINT qty_not_negative CHECK (qty >= 0)",
    )
    .await;
    workload(&src).await;
    // The refused inserts are set aside before their keys change again (else one batch would
    // hold both, as one change).
    wait_dlq_len(&p, 3).await;
    later_updates(&src).await;
    let poison = [NUL_KEY, LONG_KEY, CHECK_KEY];
    // Every other row arrives, the good rows of the poison rows' transaction too.
    wait_equal_except(&src, &dst, &p, &poison).await;

    let list = dlq_list(&p);
    for (key, class, words) in [
        (NUL_KEY, "data", "column name"),
        (LONG_KEY, "data", "column code"),
        (CHECK_KEY, "constraint", "qty_not_negative"),
    ] {
        let records = records_of(&list, key);
        assert_eq!(
            records.len(),
            2,
            "key {key}: the insert and the held update: {list:?}"
        );
        assert_eq!(records[0]["class"], class, "{:?}", records[0]);
        let message = records[0]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("key {{\"id\":{key}}}")) && message.contains(words),
            "key {key}: {message}"
        );
        assert_eq!(records[1]["class"], "held", "{:?}", records[1]);
    }
    assert_eq!(list.len(), 6, "{list:?}");
    let status = p.status_json();
    assert_eq!(status["dlq_size"], 6, "{status}");
    let human = stdout(&p.run_cmd(&["status"]));
    assert!(
        human.contains("6 changes set aside in the dead-letter store"),
        "{human}"
    );
    let metrics = common::http_get(&p.admin, "/metrics");
    assert!(
        metrics.contains("cdc_dlq_size{pipeline=") && metrics.contains("} 6\n"),
        "{metrics}"
    );
    assert!(metrics.contains("class=\"constraint\"} 1"), "{metrics}");
    let shown = p.run_cmd(&["dlq", "show", &list[0]["id"].to_string()]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let shown: Json = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["record"]["op"], "insert", "{shown}");

    // Widen the column, and replay the too-long insert alone through the running agent: it
    // goes in; its held update stays (not selected), so the key is still held.
    dst.exec("ALTER TABLE replica.people ALTER COLUMN code TYPE varchar(40)")
        .await;
    let long_insert = records_of(&list, LONG_KEY)[0]["id"].to_string();
    let out = p.run_cmd(&["dlq", "replay", &long_insert]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("replayed 1 changes"),
        "{}",
        stdout(&out)
    );
    assert_eq!(dlq_list(&p).len(), 5);
    // Still refused: the constraint is there, and Postgres text holds no NUL. Those stay, with
    // the held updates behind them.
    let out = p.run_cmd(&["dlq", "replay", "--all"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let list = dlq_list(&p);
    assert_eq!(list.len(), 2 + 2, "the long key's update went in: {list:?}");
    assert!(records_of(&list, NUL_KEY)[0]["attempts"].as_u64() >= Some(2));
    assert_eq!(records_of(&list, CHECK_KEY).len(), 2, "{list:?}");
    wait_equal_except(&src, &dst, &p, &[NUL_KEY, CHECK_KEY]).await;
    assert_eq!(agent.stop(), 0);

    // Stopped: fix the target and the source row, then replay; the process dies right after the
    // first target commit, before the store forgets what it applied.
    dst.exec("ALTER TABLE replica.people DROP CONSTRAINT qty_not_negative")
        .await;
    source_exec(
        &src,
        &format!("UPDATE people SET name = REPLACE(name, CHAR(0), '') WHERE id = {NUL_KEY}"),
    )
    .await;
    agent = p.start();
    // The fix of the NUL row is held behind the refused insert.
    let list = wait_dlq_len(&p, 5).await;
    assert_eq!(records_of(&list, NUL_KEY).len(), 3, "{list:?}");
    assert_eq!(agent.stop(), 0);
    let crashed = p
        .command(&["dlq", "replay", "--all"])
        .env("CDC_AGENT_CRASH_AT", "dlq-replay-committed")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "{}", stderr(&crashed));
    assert_eq!(
        dlq_list(&p).len(),
        5,
        "nothing is forgotten before it is applied"
    );
    let out = p.run_cmd(&["dlq", "replay", "--all"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(dlq_list(&p).is_empty());
    wait_equal_except(&src, &dst, &p, &[]).await;

    // Running again: the keys are free; a new refused row is dropped, and its key then takes
    // later changes.
    agent = p.start();
    source_exec(
        &src,
        &format!(
            "UPDATE people SET qty = 99 WHERE id IN ({NUL_KEY}, {LONG_KEY}, {CHECK_KEY});
             INSERT INTO people VALUES (400, CONCAT('again', CHAR(0)), 'x', 4)"
        ),
    )
    .await;
    wait_equal_except(&src, &dst, &p, &[400]).await;
    let list = dlq_list(&p);
    assert_eq!(list.len(), 1, "{list:?}");
    let refused_drop = p.run_cmd(&["dlq", "drop", "--all"]);
    assert_eq!(refused_drop.status.code(), Some(2), "drop needs --yes");
    let out = p.run_cmd(&["dlq", "drop", &list[0]["id"].to_string(), "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dlq_list(&p).is_empty());
    source_exec(&src, "UPDATE people SET name = 'clean' WHERE id = 400").await;
    wait_equal_except(&src, &dst, &p, &[]).await;
    assert_eq!(p.status_json()["dlq_size"], 0);
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_on_error_stop_a_refused_row_stops_the_pipeline_naming_it() {
    let (src, dst, p) = migration("dlqstop", "stop").await;
    let agent = p.start();
    wait_equal_except(&src, &dst, &p, &[]).await;
    source_exec(
        &src,
        &format!(
            "INSERT INTO people VALUES ({NUL_KEY}, CONCAT('a NUL', CHAR(0), REPEAT('x', 60)), 'n', 1)"
        ),
    )
    .await;
    let code = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 1, "{}", p.log());
    let status = p.status_json();
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for words in [
        ".people key {\"id\":100}",
        "column name = \"a NUL\\u0000xxx",
        "(66 characters)",
        "22021",
    ] {
        assert!(error.contains(words), "`{words}` in: {error}");
    }
    assert!(dlq_list(&p).is_empty());
    src.drop().await;
    dst.drop().await;
}

/// Waits until the MariaDB target's `t` holds `rows` rows, with `length` characters of `v` in all.
async fn wait_mysql_rows(dst: &TargetDb, rows: u64, length: u64, p: &Pipeline) {
    let want = (Some(rows.to_string()), Some(length.to_string()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut conn = dst.conn().await;
        let have = text_rows(
            &mut conn,
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(v)), 0) FROM t",
        )
        .await
        .first()
        .map(|r| (r[0].clone(), r[1].clone()))
        .unwrap_or_default();
        let _ = conn.disconnect().await;
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "target {have:?}, not {want:?}: {}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Postgres → MariaDB: a value too long for a column narrowed by hand is set aside (the MySQL
/// sink reads `Data too long for column 'v' at row N`), the rest applied; widened, it replays.
#[tokio::test(flavor = "multi_thread")]
async fn the_mysql_sink_sets_aside_what_mariadb_refuses() {
    let src = TestDb::new("dlqmy").await;
    src.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let dst = TargetDb::new("dlqmydst");
    let sink = format!(
        "type = \"mysql\"\nurl = \"{}\"\nflush_interval_ms = 50\non_error = \"dlq\"",
        dst.url
    );
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let agent = common::start_streaming(&p);
    src.exec("INSERT INTO t VALUES (1, 'a')").await;
    wait_mysql_rows(&dst, 1, 1, &p).await;
    dst.exec("ALTER TABLE t MODIFY v varchar(5)").await;
    src.exec(
        "INSERT INTO t SELECT g, 'b' FROM generate_series(2, 500) g;
         INSERT INTO t VALUES (1000, 'much too long');
         INSERT INTO t SELECT g, 'c' FROM generate_series(501, 999) g",
    )
    .await;
    wait_mysql_rows(&dst, 999, 999, &p).await;
    let list = wait_dlq_len(&p, 1).await;
    assert_eq!(list[0]["key"]["id"], 1000);
    assert_eq!(list[0]["class"], "data");
    let message = list[0]["message"].as_str().unwrap();
    assert!(
        message.contains("column v = \"much too long\"") && message.contains("1406"),
        "{message}"
    );
    dst.exec("ALTER TABLE t MODIFY v text").await;
    let out = p.run_cmd(&["dlq", "replay", "--table", "t"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    wait_mysql_rows(&dst, 1000, 1012, &p).await;
    // A truncate makes what is set aside moot: the records go, their keys are free.
    dst.exec("ALTER TABLE t MODIFY v varchar(13)").await;
    src.exec("INSERT INTO t VALUES (2000, 'too long again')")
        .await;
    wait_dlq_len(&p, 1).await;
    src.exec("TRUNCATE t").await;
    wait_dlq_len(&p, 0).await;
    src.exec("INSERT INTO t VALUES (2000, 'ok')").await;
    wait_mysql_rows(&dst, 1, 2, &p).await;
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}

/// Postgres → Kafka: a message over the producer's `message.max.bytes` is set aside, a later
/// change to its key held behind it, the rest delivered; with the limit raised it replays.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_message_over_the_size_limit_is_set_aside_and_replayed_once_allowed() {
    use rdkafka::mocking::MockCluster;

    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (db, p) = common::pipeline_into(
        "dlqkafka",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "public.t",
        |name| {
            format!(
                "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"{name}\"\n\
                 flush_interval_ms = 50\non_error = \"dlq\"\n\
                 [sink.properties]\n\"message.max.bytes\" = \"4000\""
            )
        },
    )
    .await;
    let topic = format!("{}.public.t", db.name);
    cluster.create_topic(&topic, 1, 1).unwrap();
    let agent = common::start_streaming(&p);
    db.exec(
        "INSERT INTO t SELECT g, 'small' FROM generate_series(1, 100) g;
         INSERT INTO t VALUES (500, repeat('x', 10000));
         INSERT INTO t SELECT g, 'small' FROM generate_series(101, 200) g",
    )
    .await;
    let list = wait_dlq_len(&p, 1).await;
    assert_eq!(list[0]["class"], "too_large", "{list:?}");
    db.exec("UPDATE t SET v = 'later' WHERE id IN (1, 500)")
        .await;
    wait_dlq_len(&p, 2).await;
    let ids_of = |brokers: String, topic: String| async move {
        tokio::task::spawn_blocking(move || {
            cdc_sink_kafka::testing::read_topic(&brokers, &topic).unwrap_or_default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| m.value)
        .map(|v| serde_json::from_slice::<Json>(&v).unwrap())
        .map(|r| {
            (
                r["key"]["id"].as_i64().unwrap(),
                r["op"].as_str().unwrap().to_string(),
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids_of(brokers.clone(), topic.clone()).await.len() < 201 {
        assert!(
            Instant::now() < deadline,
            "the small changes never arrived: {}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(agent.stop(), 0);
    let delivered = ids_of(brokers.clone(), topic.clone()).await;
    assert!(!delivered.iter().any(|(id, _)| *id == 500), "{delivered:?}");

    let config = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, config.replace("\"4000\"", "\"1000000\"")).unwrap();
    let out = p.run_cmd(&["dlq", "replay", "--all"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(dlq_list(&p).is_empty());
    let delivered = ids_of(brokers.clone(), topic.clone()).await;
    assert!(
        delivered.contains(&(500, "insert".to_string())),
        "{delivered:?}"
    );
    assert!(
        delivered.contains(&(500, "update".to_string())),
        "{delivered:?}"
    );
    db.drop().await;
}
