//! `cdc-agent verify`: equal tables exit 0, tampered targets exit 1 naming exactly the keys and
//! columns tampered with; rows in flight while a writer streams are no divergence; `--repair`
//! makes the target equal again. Against the private Postgres and MariaDB of `testenv.sh`.

mod common;

use std::time::Duration;

use common::mysql::TargetDb;
use common::verify::{different, keys, spawn_churn, table, verify, verify_while_writing};
use common::{Pipeline, TestDb};
use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

fn pg_sink(url: &str) -> String {
    format!("type = \"postgres\"\nurl = \"{url}\"\nschema = \"replica\"\nflush_interval_ms = 50")
}

fn mysql_sink(db: &TargetDb) -> String {
    format!(
        "type = \"mysql\"\nurl = \"{}\"\nflush_interval_ms = 50",
        db.url
    )
}

fn mariadb_source_url(db: &TargetDb) -> String {
    let port = common::env().var("CDC_TEST_MYSQL_PORT");
    format!("mysql://cdc:secret-pw@127.0.0.1:{port}/{}", db.name)
}

async fn pg_count(db: &TestDb, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

async fn my_count(db: &TargetDb, sql: &str) -> i64 {
    let mut conn = db.conn().await;
    let n: Option<i64> = conn.query_first(sql).await.ok().flatten();
    let _ = conn.disconnect().await;
    n.unwrap_or(-1)
}

const PG_TYPES: &str = r#"
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE typed (id bigint PRIMARY KEY, b boolean, i2 smallint, i4 int, f4 real,
        f8 double precision, n numeric(12,3), nu numeric, t text, vc varchar(20), ch char(5),
        j json, jb jsonb, by bytea, u uuid, d date, tm time, ts timestamp, tz timestamptz,
        iv interval, ia int[], ta text[], ip inet, m mood);
    CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int);"#;

/// The non-key columns of `typed` in Postgres.
const PG_COLUMNS: &[&str] = &[
    "b", "i2", "i4", "f4", "f8", "n", "nu", "t", "vc", "ch", "j", "jb", "by", "u", "d", "tm", "ts",
    "tz", "iv", "ia", "ta", "ip", "m",
];

/// The non-key columns of `typed` in MariaDB.
const MARIADB_COLUMNS: &[&str] = &[
    "ti",
    "tu",
    "bi",
    "bu",
    "dec_big",
    "dec_small",
    "f",
    "d",
    "dt",
    "tm",
    "dtm",
    "ts",
    "yr",
    "bt",
    "en",
    "st",
    "ch",
    "vc",
    "tx",
    "lat",
    "bin",
    "vb",
    "bl",
    "js",
    "geo",
];

/// `"a" = NULL, "b" = NULL, ...`; `quote`: the dialect's identifier quote.
fn set_null(columns: &[&str], quote: char) -> String {
    columns
        .iter()
        .map(|c| format!("{quote}{c}{quote} = NULL"))
        .collect::<Vec<_>>()
        .join(", ")
}

const PG_ROWS: &str = r#"
    INSERT INTO typed VALUES
      (1, true, -2, 40000, 1.1, 0.30000000000000004, 12.5, 123456789.123456789, 'héllo|wörld 😀',
       'x', 'ab', '{"b": 1, "a": [1.50, "x"]}', '{"b": 1, "a": [1.50, "x"]}', '\x00ff',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-11-26', '13:45:00.5', '2026-11-26 13:45:00.123456',
       '2026-11-26 13:45:00.5+02', '1 year 2 months 3 days 04:05:06.5', '{1,NULL,3}',
       '{"a b",NULL,""}', '10.0.0.1/8', 'happy'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, false, 0, 0, 'NaN', '-Infinity', 0, 'NaN', '', '', '', 'null', '[]', '', NULL, 'infinity',
       '00:00:00', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00', '0 seconds', '{}', '{}', '::1', 'sad'),
      (4, true, 1, 1, 1e30, 1e-300, -0.001, 1e-20, 'ascii', 'vc', 'abcde', '{"k": "v"}',
       '{"k": "v", "n": 1e2}', '\x', '00000000-0000-0000-0000-000000000000', '0044-03-15 BC', '23:59:59.999999', '2000-02-29 12:00:00',
       '2000-02-29 12:00:00-08', '-1 days', '{-1}', '{"x"}', '192.168.0.1', 'ok');
    INSERT INTO ledger SELECT g, g % 7, g FROM generate_series(1, 20000) g;"#;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_postgres_equal_then_every_tampering_named() {
    let src = TestDb::new("vpsrc").await;
    let dst = TestDb::new("vpdst").await;
    src.exec(PG_TYPES).await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.typed", "public.ledger"],
        "snapshot = \"never\"",
        Some(&pg_sink(&dst.url)),
    );
    let agent = common::start_streaming(&p);
    src.exec(PG_ROWS).await;
    common::wait_until(
        "the rows in the target",
        Duration::from_secs(60),
        || async {
            pg_count(&dst, "SELECT count(*) FROM replica.ledger").await == 20000
                && pg_count(&dst, "SELECT count(*) FROM replica.typed").await == 4
        },
    )
    .await;

    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["agent"], "running");
    assert_eq!(table(&report, "public.typed")["rows_compared"], 4);
    assert_eq!(table(&report, "public.ledger")["rows_compared"], 20000);

    dst.exec(
        "DELETE FROM replica.typed WHERE id = 2;
         UPDATE replica.typed SET n = n + 1, t = NULL WHERE id = 3;
         INSERT INTO replica.typed (id) VALUES (100);
         UPDATE replica.typed SET tz = tz + interval '1 microsecond' WHERE id = 1;
         DELETE FROM replica.ledger WHERE id IN (5, 17000);
         UPDATE replica.ledger SET v = NULL WHERE id = 12345;
         UPDATE replica.ledger SET tx = tx + 1, v = v WHERE id = 19999;
         INSERT INTO replica.ledger VALUES (20001, 0, 0), (0, 0, 0);",
    )
    .await;
    dst.exec(&format!(
        "UPDATE replica.typed SET {} WHERE id = 4",
        set_null(PG_COLUMNS, '"')
    ))
    .await;
    let (code, report) = verify(&p, &[]);
    eprintln!(
        "{}",
        String::from_utf8_lossy(&p.run_cmd(&["verify", "--show-values"]).stdout)
    );
    assert_eq!(code, 1, "{report:#}");
    let typed = table(&report, "public.typed");
    assert_eq!(keys(&typed["missing_keys"], "id"), ["2"]);
    assert_eq!(keys(&typed["extra_keys"], "id"), ["100"]);
    assert_eq!(
        different(typed, "id"),
        [
            ("1".to_string(), vec!["tz".to_string()]),
            ("3".to_string(), vec!["n".to_string(), "t".to_string()]),
            (
                "4".to_string(),
                PG_COLUMNS.iter().map(|c| c.to_string()).collect()
            ),
        ],
        "every column takes part in the comparison"
    );
    let ledger = table(&report, "public.ledger");
    assert_eq!(keys(&ledger["missing_keys"], "id"), ["17000", "5"]);
    assert_eq!(keys(&ledger["extra_keys"], "id"), ["0", "20001"]);
    assert_eq!(
        different(ledger, "id"),
        [
            ("12345".to_string(), vec!["v".to_string()]),
            ("19999".to_string(), vec!["tx".to_string()])
        ]
    );
    assert_eq!(ledger["rows_compared"], 20000, "{ledger:#}");
    assert_eq!(report["divergent_rows"], 5 + 6);
    assert!(
        ledger["bytes_read"].as_u64().unwrap() < 200_000,
        "bisection reads little: {ledger:#}"
    );
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

const MARIADB_TYPES: &str = "CREATE TABLE typed (
    id int PRIMARY KEY, ti tinyint, tu tinyint unsigned, bi bigint, bu bigint unsigned,
    dec_big decimal(65,30), dec_small decimal(10,2), f float, d double,
    dt date, tm time(6), dtm datetime(6), ts timestamp(6) NULL, yr year,
    bt bit(10), en enum('red','green','blue'), st set('a','b','c'),
    ch char(5), vc varchar(100), tx text, lat varchar(20) CHARACTER SET latin1,
    bin binary(4), vb varbinary(10), bl longblob, js json, geo geometry)";

const MARIADB_ROWS: &str = "SET time_zone = '+00:00';
    INSERT INTO typed VALUES
     (1, -128, 255, -9223372036854775808, 18446744073709551615,
      '12345678901234567890123456789012345.123456789012345678901234567890', 129.90, 1.1, -2.25e10,
      '2026-11-26', '13:45:00.500000', '2026-11-26 13:45:00.123456', '2026-11-26 12:45:00.5', 2026,
      b'1010000001', 'green', 'a,c', 'ab', 'héllo|wörld ✓ 😀', 'text', 'café',
      x'0102', x'00ff', REPEAT('x', 10000), '{\"k\": [1, 2.50, \"s\", null, true], \"a\": {}}',
      ST_GeomFromText('POINT(1 2)')),
     (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
     (3, 0, 0, 0, 0, 0, 0, 0, 0.30000000000000004, '1970-01-01', '00:00:00', '1970-01-01 00:00:01',
      '1970-01-01 00:00:01', 1901, b'0', 'red', '', '', '', '', '', x'', x'', x'', '[]',
      ST_GeomFromText('LINESTRING(0 0, 1 1)')),
     (4, 1, 1, 1, 1, -0.5, -0.01, 3.4e38, 1e-300, '9999-12-31', '23:59:59.999999',
      '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', 2155, b'1111111111', 'blue', 'a,b,c',
      'abcde', 'vc', 'tx', 'ÿ', x'ffffffff', x'ff', x'00', '\"just a string\"', NULL)";

/// Deletes id 2, sets a column NULL and changes another in id 3, inserts id 100: in a MySQL
/// target database.
async fn tamper_mysql(db: &TargetDb, changed: &str) {
    db.exec(&format!(
        "DELETE FROM typed WHERE id = 2; UPDATE typed SET {changed} WHERE id = 3; INSERT INTO typed (id) VALUES (100)"
    ))
    .await;
}

fn assert_tampered(report: &Json, table_name: &str, columns: &[&str]) {
    let t = table(report, table_name);
    assert_eq!(keys(&t["missing_keys"], "id"), ["2"], "{t:#}");
    assert_eq!(keys(&t["extra_keys"], "id"), ["100"], "{t:#}");
    assert_eq!(
        different(t, "id"),
        [(
            "3".to_string(),
            columns.iter().map(|c| c.to_string()).collect::<Vec<_>>()
        )],
        "{t:#}"
    );
}

/// `verify --repair` with the agent running: the extra row deleted, the missing and different
/// keys copied again (key ranges only), verified; the next verify is clean.
fn assert_repaired(p: &Pipeline, table_name: &str) {
    let (code, report) = verify(p, &["--repair"]);
    let repair = &table(&report, table_name)["repair"];
    assert_eq!(
        (
            repair["deleted"].as_u64(),
            repair["recopy"].as_str(),
            repair["verified"].as_bool(),
            repair["still_divergent"].as_u64()
        ),
        (Some(1), Some("keys"), Some(true), Some(0)),
        "{report:#}\n{}",
        p.log()
    );
    assert_eq!(code, 0, "{report:#}");
    let (code, report) = verify(p, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_mysql_equal_then_every_tampering_named() {
    let src = TargetDb::new("vmsrc");
    let dst = TargetDb::new("vmdst");
    src.exec(MARIADB_TYPES).await;
    let table_name = format!("{}.typed", src.name);
    let p = Pipeline::with_sink(
        &mariadb_source_url(&src),
        &src.name,
        &[&table_name],
        "snapshot = \"never\"",
        Some(&mysql_sink(&dst)),
    );
    let agent = common::start_streaming(&p);
    src.exec(MARIADB_ROWS).await;
    common::wait_until(
        "the rows in the target",
        Duration::from_secs(60),
        || async { my_count(&dst, "SELECT COUNT(*) FROM typed").await == 4 },
    )
    .await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    tamper_mysql(&dst, "tx = NULL, dec_small = 1").await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_tampered(&report, &table_name, &["dec_small", "tx"]);
    assert_repaired(&p, &table_name);
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_postgres_equal_then_every_tampering_named() {
    let src = TargetDb::new("vmpsrc");
    let dst = TestDb::new("vmpdst").await;
    src.exec(MARIADB_TYPES).await;
    let table_name = format!("{}.typed", src.name);
    let p = Pipeline::with_sink(
        &mariadb_source_url(&src),
        &src.name,
        &[&table_name],
        "snapshot = \"never\"",
        Some(&pg_sink(&dst.url)),
    );
    let agent = common::start_streaming(&p);
    src.exec(MARIADB_ROWS).await;
    common::wait_until(
        "the rows in the target",
        Duration::from_secs(60),
        || async { pg_count(&dst, "SELECT count(*) FROM replica.typed").await == 4 },
    )
    .await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    dst.exec(
        "DELETE FROM replica.typed WHERE id = 2; UPDATE replica.typed SET tx = NULL, js = '[1]' WHERE id = 3;
         INSERT INTO replica.typed (id) VALUES (100)",
    )
    .await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_tampered(&report, &table_name, &["tx", "js"]);
    dst.exec(&format!(
        "UPDATE replica.typed SET {} WHERE id = 1",
        set_null(MARIADB_COLUMNS, '"')
    ))
    .await;
    let (_, report) = verify(&p, &[]);
    let t = table(&report, &table_name);
    assert!(
        different(t, "id").contains(&(
            "1".to_string(),
            MARIADB_COLUMNS.iter().map(|c| c.to_string()).collect()
        )),
        "every column takes part in the comparison: {t:#}"
    );
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

/// The Postgres types a MySQL target can hold (no NaN, infinities or BC dates).
const PG_PORTABLE: &str = r#"
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE typed (id bigint PRIMARY KEY, b boolean, i2 smallint, i4 int, f4 real,
        f8 double precision, n numeric(12,3), nu numeric, t text, vc varchar(20), ch char(5),
        j json, jb jsonb, by bytea, u uuid, d date, tm time, ts timestamp, tz timestamptz,
        iv interval, ia int[], ta text[], ip inet, m mood);
    INSERT INTO typed VALUES
      (1, true, -2, 40000, 1.1, 0.30000000000000004, 12.5, 123456789.123456789, 'héllo|wörld 😀',
       'x', 'ab', '{"b": 1, "a": [1.50, "x"]}', '{"b": 1, "a": [1.50, "x"]}', '\x00ff',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-11-26', '13:45:00.5', '2026-11-26 13:45:00.123456',
       '2026-11-26 13:45:00.5+02', '1 year 2 months 3 days 04:05:06.5', '{1,NULL,3}',
       '{"a b",NULL,""}', '10.0.0.1/8', 'happy'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, false, 0, 0, 0, -0.5, 0, 0, '', '', '', 'null', '[]', '', NULL, '1970-01-01',
       '00:00:00', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00', '0 seconds', '{}', '{}', '::1', 'sad'),
      (4, true, 1, 1, 1e30, 1e-300, -0.001, 1e-20, 'ascii', 'vc', 'abcde', '{"k": "v"}',
       '{"k": "v", "n": 1e2}', '\x', NULL, '0044-03-15', '23:59:59.999999', '2000-02-29 12:00:00',
       '2000-02-29 12:00:00-08', '-1 days', '{-1}', '{"x"}', '192.168.0.1', 'ok');"#;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_mysql_equal_then_every_tampering_named() {
    let src = TestDb::new("vpmsrc").await;
    let dst = TargetDb::new("vpmdst");
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.typed"],
        "snapshot = \"initial\"",
        Some(&mysql_sink(&dst)),
    );
    src.exec(PG_PORTABLE).await;
    let agent = common::start_streaming(&p);
    common::wait_until(
        "the rows in the target",
        Duration::from_secs(60),
        || async { my_count(&dst, "SELECT COUNT(*) FROM typed").await == 4 },
    )
    .await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    tamper_mysql(&dst, "t = NULL, jb = '{\"k\": 2}'").await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_tampered(&report, "public.typed", &["t", "jb"]);
    assert_repaired(&p, "public.typed");
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

async fn ledger_pipeline(prefix: &str) -> (TestDb, TestDb, Pipeline, common::Agent) {
    let src = TestDb::new(&format!("{prefix}src")).await;
    let dst = TestDb::new(&format!("{prefix}dst")).await;
    src.exec("CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int)")
        .await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.ledger"],
        "snapshot = \"never\"",
        Some(&pg_sink(&dst.url)),
    );
    let agent = common::start_streaming(&p);
    src.exec("INSERT INTO ledger SELECT g, g % 7, g FROM generate_series(1, 20000) g")
        .await;
    common::wait_until(
        "the rows in the target",
        Duration::from_secs(60),
        || async { pg_count(&dst, "SELECT count(*) FROM replica.ledger").await == 20000 },
    )
    .await;
    (src, dst, p, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_in_flight_while_a_writer_streams_are_no_divergence() {
    let (src, dst, p, agent) = ledger_pipeline("vflight").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_churn(src.url.clone(), stop.clone());
    for round in 0..3 {
        let (code, report) = verify_while_writing(&p, &[]).await;
        assert_eq!(code, 0, "round {round}: {report:#}");
        let t = table(&report, "public.ledger");
        assert!(t["rows_compared"].as_u64().unwrap() > 19_000, "{t:#}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let transactions = writer.await.unwrap();
    assert!(
        transactions > 20,
        "the writer kept writing ({transactions})"
    );
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_while_a_writer_streams_then_verify_is_clean() {
    let (src, dst, p, agent) = ledger_pipeline("vrepair").await;
    dst.exec(
        "DELETE FROM replica.ledger WHERE id IN (10, 10000);
         UPDATE replica.ledger SET v = -1 WHERE id IN (20, 15000);
         UPDATE replica.ledger SET tx = NULL WHERE id = 30;
         INSERT INTO replica.ledger VALUES (500000, 0, 0), (600000, 1, 1);",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_churn(src.url.clone(), stop.clone());
    let (code, report) = verify_while_writing(&p, &["--repair"]).await;
    let t = table(&report, "public.ledger");
    let repair = &t["repair"];
    assert_eq!(repair["deleted"], 2, "{t:#}");
    assert_eq!(repair["recopy_requested"], true, "{t:#}");
    assert_eq!(
        repair["recopy"], "keys",
        "only the divergent keys are copied: {t:#}"
    );
    assert_eq!(repair["verified"], true, "{t:#}");
    assert_eq!(repair["still_divergent"], 0, "{t:#}");
    assert_eq!(code, 0, "a verified repair exits 0: {report:#}");
    let (code, report) = verify_while_writing(&p, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    // What status and the metrics say of it.
    let status = p.status_json();
    let last = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.ledger")
        .map(|t| t["last_verify"].clone())
        .unwrap();
    assert_eq!(last["status"], "equal", "{status:#}");
    let metrics = common::http_get(&p.admin, "/metrics");
    assert!(
        metrics.contains("cdc_verify_divergent_rows{pipeline=")
            && metrics.contains("table=\"public.ledger\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("cdc_verify_last_run_timestamp{pipeline="));
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

/// DuckDB with the agent stopped (verify opens the file itself; with the agent running it runs
/// inside the agent: tests/verify_agent.rs).
#[cfg(feature = "duckdb")]
#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_duckdb_equal_then_every_tampering_named() {
    use cdc_sink_duckdb::duckdb::Connection;
    let src = TestDb::new("vpdsrc").await;
    src.exec(PG_TYPES).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.duckdb");
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.typed", "public.ledger"],
        "snapshot = \"never\"",
        Some(&format!(
            "type = \"duckdb\"\npath = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 50",
            path.display()
        )),
    );
    let agent = common::start_streaming(&p);
    src.exec(PG_ROWS).await;
    common::wait_until("every change durable", Duration::from_secs(60), || async {
        p.status_json()["events_total"].as_u64() >= Some(20004)
    })
    .await;
    // The agent holds the file: verify runs inside it.
    let (code, report) = verify(&p, &[]);
    assert_eq!(
        (code, report["agent"].as_str()),
        (0, Some("running")),
        "{report:#}"
    );
    assert_eq!(agent.stop(), 0);

    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["agent"], "stopped");
    {
        let duck = Connection::open(&path).unwrap();
        duck.execute_batch(&format!(
            "DELETE FROM replica.typed WHERE id = 2;
             UPDATE replica.typed SET n = n + 1, t = NULL WHERE id = 3;
             INSERT INTO replica.typed (id) VALUES (100);
             UPDATE replica.typed SET {} WHERE id = 4;
             DELETE FROM replica.ledger WHERE id = 777;
             UPDATE replica.ledger SET v = 0 WHERE id = 7777;",
            set_null(PG_COLUMNS, '"')
        ))
        .unwrap();
    }
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 1, "{report:#}");
    let typed = table(&report, "public.typed");
    assert_eq!(keys(&typed["missing_keys"], "id"), ["2"]);
    assert_eq!(keys(&typed["extra_keys"], "id"), ["100"]);
    assert_eq!(
        different(typed, "id"),
        [
            ("3".to_string(), vec!["n".to_string(), "t".to_string()]),
            (
                "4".to_string(),
                PG_COLUMNS.iter().map(|c| c.to_string()).collect()
            ),
        ]
    );
    let ledger = table(&report, "public.ledger");
    assert_eq!(keys(&ledger["missing_keys"], "id"), ["777"]);
    assert_eq!(
        different(ledger, "id"),
        [("7777".to_string(), vec!["v".to_string()])]
    );
    src.drop().await;
}

/// Text keys (in a collation whose order is not bytewise) and composite keys are cut into
/// ranges by key quantiles; both sides compare them bytewise, so the same rows fall in each.
#[tokio::test(flavor = "multi_thread")]
async fn text_and_composite_keys_bisect_the_same_rows_on_both_sides() {
    let src = TestDb::new("vtsrc").await;
    let dst = TargetDb::new("vtdst");
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.words", "public.pairs"],
        "snapshot = \"initial\"",
        Some(&mysql_sink(&dst)),
    );
    src.exec(
        r#"CREATE TABLE words (k text COLLATE "en-US-x-icu" PRIMARY KEY, v int);
           INSERT INTO words SELECT w, n FROM (
             SELECT 'w' || g AS w, g AS n FROM generate_series(1, 3000) g
             UNION ALL VALUES ('a', 1), ('A', 2), ('a ', 3), ('B', 4), ('é', 5), ('Z', 6), ('x y', 7), ('', 8)) s;
           CREATE TABLE pairs (a text, b int, v text, PRIMARY KEY (a, b));
           INSERT INTO pairs SELECT chr(65 + g % 26) || chr(97 + g % 7), g, md5(g::text) FROM generate_series(1, 4000) g;"#,
    )
    .await;
    let agent = common::start_streaming(&p);
    common::wait_until(
        "the rows in the target",
        Duration::from_secs(60),
        || async {
            my_count(&dst, "SELECT COUNT(*) FROM words").await == 3008
                && my_count(&dst, "SELECT COUNT(*) FROM pairs").await == 4000
        },
    )
    .await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    dst.exec(
        "DELETE FROM words WHERE k IN ('a ', 'w1500');
         UPDATE words SET v = 0 WHERE k IN ('A', 'w2999');
         INSERT INTO words VALUES ('a  ', 0), ('w1500x', 0);
         DELETE FROM pairs WHERE a = 'Cd' AND b = 2082;
         UPDATE pairs SET v = 'x' WHERE a = 'Bb' AND b = 1;
         INSERT INTO pairs VALUES ('Cd', 2001, 'extra');",
    )
    .await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 1, "{report:#}");
    let words = table(&report, "public.words");
    assert_eq!(
        keys(&words["missing_keys"], "k"),
        ["a ", "w1500"],
        "{words:#}"
    );
    assert_eq!(
        keys(&words["extra_keys"], "k"),
        ["a  ", "w1500x"],
        "{words:#}"
    );
    assert_eq!(
        different(words, "k"),
        [
            ("A".to_string(), vec!["v".to_string()]),
            ("w2999".to_string(), vec!["v".to_string()])
        ]
    );
    let pairs = table(&report, "public.pairs");
    let composite = |list: &Json| -> Vec<(String, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["a"].as_str().unwrap().to_string(),
                    k["b"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        composite(&pairs["missing_keys"]),
        [("Cd".into(), "2082".into())]
    );
    assert_eq!(
        composite(&pairs["extra_keys"]),
        [("Cd".into(), "2001".into())]
    );
    assert_eq!(
        pairs["different_rows"][0]["key"],
        serde_json::json!({"a": "Bb", "b": "1"}),
        "{pairs:#}"
    );
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

/// A table without a primary key compares by count and an order-free hash, and says that
/// row-level detail needs a key; `--max-rows` compares a sample.
#[tokio::test(flavor = "multi_thread")]
async fn keyless_tables_compare_whole_and_max_rows_samples() {
    let src = TestDb::new("vksrc").await;
    let dst = TestDb::new("vkdst").await;
    let rows = "INSERT INTO bag SELECT g % 10, 'v' || (g % 3) FROM generate_series(1, 100) g;
                INSERT INTO ledger SELECT g, g % 7, g FROM generate_series(1, 50000) g; ANALYZE ledger;";
    src.exec(&format!(
        "CREATE TABLE bag (n int, v text); CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int); {rows}"
    ))
    .await;
    dst.exec(&format!(
        "CREATE SCHEMA replica; SET search_path = replica;
         CREATE TABLE bag (n int, v text); CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int); {rows}"
    ))
    .await;
    // Never run: verify compares at rest.
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.bag", "public.ledger"],
        "snapshot = \"never\"",
        Some(&pg_sink(&dst.url)),
    );
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    // Usage errors exit 2: a table the pipeline does not replicate, a sink with no tables.
    let out = p.run_cmd(&["verify", "public.nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of the pipeline's tables"));
    let jsonl = Pipeline::new(&src.url, "vkjsonl", &["public.bag"], "snapshot = \"never\"");
    assert_eq!(jsonl.run_cmd(&["verify"]).status.code(), Some(2));
    let bag = table(&report, "public.bag");
    assert!(
        bag["notes"]
            .to_string()
            .contains("row-level detail needs a key"),
        "{bag:#}"
    );
    assert_eq!(report["agent"], "stopped");

    let (code, report) = verify(&p, &["--max-rows", "5000"]);
    assert_eq!(code, 0, "{report:#}");
    let ledger = table(&report, "public.ledger");
    assert_eq!(ledger["sampled"], true, "{ledger:#}");
    let compared = ledger["rows_compared"].as_u64().unwrap();
    assert!((1000..=10_000).contains(&compared), "{ledger:#}");

    // A duplicate row more in the target: the same count of distinct rows would not notice it.
    dst.exec("INSERT INTO replica.bag VALUES (1, 'v1')").await;
    let (code, report) = verify(&p, &["public.bag"]);
    assert_eq!(code, 1, "{report:#}");
    let bag = table(&report, "public.bag");
    assert_eq!(
        (bag["missing"].as_u64(), bag["extra"].as_u64()),
        (Some(0), Some(1)),
        "{bag:#}"
    );
    src.drop().await;
    dst.drop().await;
}

/// SIGKILLs of `verify --repair` and of the agent in the middle of the copy lose nothing: the
/// request is in the agent's state store, the copy resumes, and verify ends up clean.
#[tokio::test(flavor = "multi_thread")]
async fn a_repair_survives_sigkills_of_verify_and_of_the_agent() {
    let (src, dst, p, agent) = ledger_pipeline("vkill").await;
    dst.exec(
        "DELETE FROM replica.ledger WHERE id % 97 = 0;
         UPDATE replica.ledger SET v = -v WHERE id % 89 = 0;",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_churn(src.url.clone(), stop.clone());
    let mut repair = p
        .command(&["verify", "--repair", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The copy is asked for: verify dies, then the agent dies.
    common::wait_until("the copy request", Duration::from_secs(60), || async {
        std::net::TcpStream::connect(&p.admin).is_ok()
            && common::http_get(&p.admin, "/snapshot").contains("public.ledger")
    })
    .await;
    repair.kill().unwrap();
    repair.wait().unwrap();
    agent.kill9();
    let agent = p.start();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (code, report) = verify_while_writing(&p, &[]).await;
        if code == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never finished: {report:#}\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(agent);
    src.drop().await;
    dst.drop().await;
}

/// The same with a MariaDB source (binlog positions) into Postgres, and into MariaDB.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_rows_in_flight_while_a_writer_streams_are_no_divergence() {
    let src = TargetDb::new("vmflight");
    let pg = TestDb::new("vmflightdst").await;
    let my = TargetDb::new("vmflightdst");
    src.exec(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int);
         INSERT INTO ledger SELECT seq, seq % 7, seq FROM seq_1_to_20000;",
    )
    .await;
    let table_name = format!("{}.ledger", src.name);
    let into_pg = Pipeline::with_sink(
        &mariadb_source_url(&src),
        &format!("{}_pg", src.name),
        &[&table_name],
        "snapshot = \"initial\"",
        Some(&pg_sink(&pg.url)),
    );
    let into_my = Pipeline::with_sink(
        &mariadb_source_url(&src),
        &format!("{}_my", src.name),
        &[&table_name],
        "snapshot = \"initial\"",
        Some(&mysql_sink(&my)),
    );
    let agents = [
        common::start_streaming(&into_pg),
        common::start_streaming(&into_my),
    ];
    common::wait_until(
        "the snapshots in the targets",
        Duration::from_secs(120),
        || async {
            pg_count(&pg, "SELECT count(*) FROM replica.ledger").await == 20000
                && my_count(&my, "SELECT COUNT(*) FROM ledger").await == 20000
        },
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = src.admin_url.clone();
        let db = src.name.clone();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
            conn.query_drop(format!("USE {db}")).await.unwrap();
            let mut next = 1_000_000i64;
            let mut transactions = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.query_drop(format!(
                    "START TRANSACTION;
                     UPDATE ledger SET v = v + 1 WHERE id IN (FLOOR(1 + RAND() * 20000), FLOOR(1 + RAND() * 20000), FLOOR(1 + RAND() * 20000));
                     INSERT INTO ledger VALUES ({next}, 1, 1), ({next} + 1, 1, 1);
                     DELETE FROM ledger WHERE id = FLOOR(1 + RAND() * 20000);
                     COMMIT;"
                ))
                .await
                .unwrap();
                next += 2;
                transactions += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            transactions
        })
    };
    for round in 0..2 {
        for p in [&into_pg, &into_my] {
            let (code, report) = verify_while_writing(p, &[]).await;
            assert_eq!(code, 0, "round {round}: {report:#}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 20);
    drop(agents);
    src.drop().await;
    pg.drop().await;
    my.drop().await;
}

/// With `delete_mode = "soft"`, rows the target keeps as deleted count as absent; `--repair`
/// marks an extra row deleted rather than deleting it.
#[tokio::test(flavor = "multi_thread")]
async fn soft_deleted_rows_count_as_absent() {
    let src = TestDb::new("vsoftsrc").await;
    let dst = TestDb::new("vsoftdst").await;
    src.exec("CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int)")
        .await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.ledger"],
        "snapshot = \"never\"",
        Some(&format!("{}\ndelete_mode = \"soft\"", pg_sink(&dst.url))),
    );
    let agent = common::start_streaming(&p);
    src.exec("INSERT INTO ledger SELECT g, g % 7, g FROM generate_series(1, 3000) g")
        .await;
    common::wait_until(
        "the rows in the target",
        Duration::from_secs(60),
        || async { pg_count(&dst, "SELECT count(*) FROM replica.ledger").await == 3000 },
    )
    .await;
    // (Inserted and deleted in one batch, a row would never reach the target at all.)
    src.exec("DELETE FROM ledger WHERE id % 10 = 0").await;
    common::wait_until(
        "the deletes in the target",
        Duration::from_secs(60),
        || async {
            pg_count(
                &dst,
                "SELECT count(*) FROM replica.ledger WHERE _cdc_deleted",
            )
            .await
                == 300
        },
    )
    .await;
    let (code, report) = verify(&p, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(table(&report, "public.ledger")["rows_compared"], 2700);
    dst.exec("UPDATE replica.ledger SET _cdc_deleted = false WHERE id = 50")
        .await;
    let (code, report) = verify(&p, &["--repair"]);
    let t = table(&report, "public.ledger");
    assert_eq!(keys(&t["extra_keys"], "id"), ["50"], "{t:#}");
    assert_eq!(t["repair"]["deleted"], 1, "{t:#}");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        pg_count(
            &dst,
            "SELECT count(*) FROM replica.ledger WHERE id = 50 AND _cdc_deleted"
        )
        .await,
        1,
        "marked deleted, kept"
    );
    drop(agent);
    src.drop().await;
    dst.drop().await;
}
