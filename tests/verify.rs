//! `cdc-agent verify`: equal tables exit 0, tampered targets exit 1 naming exactly the keys and
//! columns tampered with; rows in flight while a writer streams are no divergence; `--repair`
//! makes the target equal again. Against the private Postgres and MariaDB of `testenv.sh`.

mod common;

use std::time::Duration;

use common::mysql::TargetDb;
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

/// `verify --json` with `args`: exit code and report.
fn verify(p: &Pipeline, args: &[&str]) -> (i32, Json) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = p.run_cmd(&all);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}), exit {code}: {}\n{}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.log()
        )
    });
    (code, report)
}

fn table<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["table"] == name))
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

/// The values of key column `column` in a list of keys.
fn keys(list: &Json, column: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|k| k[column].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

/// (key, columns) of the different rows.
fn different(t: &Json, column: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = t["different_rows"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|r| {
            (
                r["key"][column].as_str().unwrap_or_default().to_string(),
                r["columns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
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
       '{"k": "v", "n": 1e2}', '\x', NULL, '0044-03-15 BC', '23:59:59.999999', '2000-02-29 12:00:00',
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
            ("3".to_string(), vec!["n".to_string(), "t".to_string()])
        ]
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
    assert_eq!(ledger["rows_compared"], 20000 - 0, "{ledger:#}");
    assert_eq!(report["divergent_rows"], 4 + 6);
    assert!(
        ledger["bytes_read"].as_u64().unwrap() < 200_000,
        "bisection reads little: {ledger:#}"
    );
    drop(agent);
    src.drop().await;
    dst.drop().await;
}
