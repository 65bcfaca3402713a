//! Postgres → MariaDB: the target tables equal the source tables, exactly once, through SIGKILLs
//! and schema changes (the mysql sink against the private MariaDB of `scripts/testenv.sh`).

mod common;

use std::time::Duration;

use common::mysql::TargetDb;
use common::{Pipeline, TestDb};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio_postgres::Client;

fn sink_toml(url: &str, extra: &str) -> String {
    format!("type = \"mysql\"\nurl = \"{url}\"\nflush_interval_ms = 50\n{extra}")
}

/// Every row of a source query, each column as text (NULL: None).
async fn source_rows(client: &Client, query: &str) -> Vec<Vec<Option<String>>> {
    client
        .query(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

/// JSON columns compare as documents (MySQL may re-space them); everything else as text.
fn normalize(
    mut rows: Vec<Vec<Option<String>>>,
    json_columns: &[usize],
) -> Vec<Vec<Option<String>>> {
    for row in &mut rows {
        for &i in json_columns {
            if let Some(Some(text)) = row.get_mut(i) {
                if let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) {
                    *text = doc.to_string();
                }
            }
        }
    }
    rows
}

async fn wait_equal(
    source: &Client,
    target: &mut Conn,
    source_query: &str,
    target_query: &str,
    json_columns: &[usize],
    p: &Pipeline,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let want = normalize(source_rows(source, source_query).await, json_columns);
        let have = normalize(
            common::mysql::text_rows(target, target_query).await,
            json_columns,
        );
        if want == have {
            return;
        }
        if std::time::Instant::now() > deadline {
            let first_diff = want.iter().zip(&have).position(|(a, b)| a != b);
            let show = first_diff.map(|i| (&want[i], &have[i]));
            panic!(
                "target never equalled source: {} vs {} rows, first difference at {first_diff:?}: {show:?}; log:\n{}",
                want.len(),
                have.len(),
                p.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SOURCE_SCHEMA: &str = "
    CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance numeric(12,2), doc text,
                           tags text[], meta jsonb, updated timestamptz, active boolean,
                           raw bytea, day date);
    CREATE TABLE events (id bigint PRIMARY KEY, kind text);";

/// The same normalized text on both sides: numerics at their scale, timestamps in UTC with
/// microseconds, booleans as 1/0, bytes as hex, documents by MD5, arrays and JSON as JSON.
const ACCOUNTS: &str = "SELECT id::text, owner, balance::text, md5(doc), array_to_json(tags)::text,
    meta::text, to_char(updated AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), active::int::text,
    encode(raw, 'hex'), day::text FROM accounts ORDER BY accounts.id";
const ACCOUNTS_TARGET: &str =
    "SELECT CAST(id AS CHAR), owner, CAST(balance AS CHAR), MD5(doc), tags,
    meta, DATE_FORMAT(updated, '%Y-%m-%d %H:%i:%s.%f'), CAST(active AS CHAR), LOWER(HEX(raw)),
    CAST(day AS CHAR) FROM accounts ORDER BY id";
const ACCOUNTS_JSON: &[usize] = &[4, 5];

#[tokio::test(flavor = "multi_thread")]
async fn equal_after_sigkills_and_no_change_applied_twice() {
    let src = TestDb::new("mysrc").await;
    let dst = TargetDb::new("wh");
    src.exec(SOURCE_SCHEMA).await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.accounts", "public.events"],
        "snapshot = \"never\"",
        Some(&sink_toml(
            &dst.url,
            "metadata_columns = true\nmax_batch_changes = 700",
        )),
    );
    let mut agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    src.exec(
        "INSERT INTO accounts VALUES (0, 'seed', 0, repeat('d', 100000), '{a}', '{}', now(), true, '\\x00ff', '2026-11-26')",
    )
    .await;
    let mut target = dst.conn().await;
    common::wait_until(
        "the seed row in the target",
        Duration::from_secs(60),
        || {
            let admin_url = dst.admin_url.clone();
            let name = dst.name.clone();
            async move {
                let Ok(mut c) = Conn::from_url(&admin_url).await else {
                    return false;
                };
                let n: Option<i64> = c
                    .query_first(format!("SELECT COUNT(*) FROM {name}.accounts"))
                    .await
                    .ok()
                    .flatten();
                n == Some(1)
            }
        },
    )
    .await;
    // Every row the sink writes to the target table is recorded with the source position it
    // carries and a marker of the target transaction: the connection, and how many state-row
    // writes that connection made before (the sink writes `_cdc_state` exactly once per target
    // transaction, just before COMMIT). The same (row, position) under two markers would be a
    // source transaction applied twice. (Within one target transaction a row may be written
    // twice: a large source transaction is applied in pieces.) A rolled-back transaction takes
    // its records with it.
    for statement in [
        "CREATE TABLE writes (id BIGINT, pos TEXT, marker VARCHAR(64))",
        "CREATE TRIGGER record_write BEFORE INSERT ON accounts FOR EACH ROW \
         INSERT INTO writes VALUES (NEW.id, NEW._cdc_position, CONCAT(CONNECTION_ID(), ':', IFNULL(@cdc_test_commits, 0)))",
        "CREATE TRIGGER count_commit BEFORE INSERT ON _cdc_state FOR EACH ROW \
         SET @cdc_test_commits = IFNULL(@cdc_test_commits, 0) + 1",
    ] {
        target.query_drop(statement).await.unwrap();
    }

    let writer_url = src.url.clone();
    let writer = tokio::spawn(async move {
        let c = common::connect(&writer_url).await;
        // 100 transactions of ~500 changes: inserts, non-key and key updates, deletes, an
        // update that leaves the TOASTed doc alone, and one truncate of another table.
        for tx in 0..100i64 {
            let b = 1 + tx * 1000;
            c.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO accounts SELECT g, 'owner ' || g, g * 0.5, 'doc', ARRAY['t' || g], jsonb_build_object('g', g),
                   now() - g * interval '1 second 7 microseconds', g % 3 = 0, decode(md5(g::text), 'hex'), date '2026-01-01' + (g % 400)::int
                   FROM generate_series({b}, {b} + 199) g;
                 UPDATE accounts SET balance = balance + 1, tags = array_append(tags, 'x'), active = NOT active WHERE id BETWEEN {b} AND {b} + 99;
                 UPDATE accounts SET id = id + 500 WHERE id BETWEEN {b} + 100 AND {b} + 119;
                 DELETE FROM accounts WHERE id BETWEEN {b} + 120 AND {b} + 159;
                 UPDATE accounts SET balance = balance + {tx} WHERE id = 0;
                 INSERT INTO events SELECT g, 'e' FROM generate_series({b}, {b} + 39) g;
                 COMMIT;"
            ))
            .await
            .unwrap();
            if tx == 60 {
                c.batch_execute("TRUNCATE events").await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let mut moments = common::RandomMoments::new(400, 1200);
    for kill in 0..3 {
        moments.wait().await;
        agent.kill9();
        if kill == 1 {
            // Lose the local checkpoint too: the slot then replays from its older confirmed
            // position, and only the target's own position keeps those changes from applying
            // twice.
            std::fs::remove_dir_all(p.dir.path().join("state")).unwrap();
        }
        agent = p.start();
    }
    writer.await.unwrap();
    let source = src.client().await;
    wait_equal(
        &source,
        &mut target,
        ACCOUNTS,
        ACCOUNTS_TARGET,
        ACCOUNTS_JSON,
        &p,
    )
    .await;
    wait_equal(
        &source,
        &mut target,
        "SELECT id::text, kind FROM events ORDER BY events.id",
        "SELECT CAST(id AS CHAR), kind FROM events ORDER BY id",
        &[],
        &p,
    )
    .await;
    assert_eq!(agent.stop(), 0);

    let recorded: Option<i64> = target
        .query_first("SELECT COUNT(*) FROM writes")
        .await
        .unwrap();
    assert!(
        recorded.unwrap_or(0) > 10_000,
        "the trigger recorded the writes"
    );
    let twice: Option<i64> = target
        .query_first(
            "SELECT COUNT(*) FROM (SELECT id, pos FROM writes GROUP BY id, pos HAVING COUNT(DISTINCT marker) > 1) d",
        )
        .await
        .unwrap();
    assert_eq!(twice, Some(0), "a change was applied twice");
    // The TOASTed value survived the updates that did not send it.
    let doc: Option<i64> = target
        .query_first("SELECT CHAR_LENGTH(doc) FROM accounts WHERE id = 0")
        .await
        .unwrap();
    assert_eq!(doc, Some(100_000));
    drop(target);
    src.drop().await;
    dst.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_follow_and_an_incompatible_one_stops_until_fixed() {
    let src = TestDb::new("myddl").await;
    let dst = TargetDb::new("ddl");
    src.exec("CREATE TABLE t (id int PRIMARY KEY, code text, gone int, n int); INSERT INTO t VALUES (1, '10', 1, 1);")
        .await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.t"],
        "",
        Some(&sink_toml(&dst.url, "")),
    );
    // `check` connects and reads the grants: the cdc user may write cdc_% databases.
    let out = p.run_cmd(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok   sink: mysql target reachable"),
        "{stdout}"
    );
    // A user with SELECT only is told which grant to add.
    let readonly = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.t"],
        "",
        Some(&sink_toml(&dst.url.replace("cdc:", "cdc_norepl:"), "")),
    );
    let out = readonly.run_cmd(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && stdout.contains("FAIL sink:") && stdout.contains("GRANT CREATE"),
        "{stdout}"
    );

    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let source = src.client().await;
    let mut target = dst.conn().await;
    for sql in [
        "ALTER TABLE t ADD COLUMN added numeric(8,3)",
        "INSERT INTO t VALUES (2, '20', 2, 2, 1.5)",
        "ALTER TABLE t DROP COLUMN gone",
        "INSERT INTO t VALUES (3, '30', 3, 2.25)",
        "ALTER TABLE t ALTER COLUMN n TYPE bigint",
        "INSERT INTO t VALUES (4, '40', 5000000000, 1)",
        // A schema change in the middle of a transaction that already wrote the table: the
        // sink must commit what it has before it can ALTER, without losing or repeating.
        "BEGIN; UPDATE t SET code = '11' WHERE id = 1; ALTER TABLE t ADD COLUMN late text;
         INSERT INTO t VALUES (5, '50', 5, 5, 'late'); COMMIT;",
    ] {
        source.batch_execute(sql).await.unwrap();
    }
    let want = "SELECT id::text, code::text, added::text, n::text, late FROM t ORDER BY t.id";
    let have = "SELECT CAST(id AS CHAR), code, CAST(added AS CHAR), CAST(n AS CHAR), late FROM t ORDER BY t.id";
    wait_equal(&source, &mut target, want, have, &[], &p).await;
    let gone = common::mysql::text_rows(&mut target, "SELECT gone FROM t ORDER BY id").await;
    assert_eq!(
        gone,
        [
            vec![Some("1".to_string())],
            vec![Some("2".to_string())],
            vec![None],
            vec![None],
            vec![None]
        ],
        "a dropped column is kept but no longer written"
    );
    let n_type = common::mysql::text_rows(
        &mut target,
        &format!(
            "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 't' AND COLUMN_NAME = 'n'",
            dst.name
        ),
    )
    .await;
    assert_eq!(
        n_type,
        [vec![Some("bigint".to_string())]],
        "int widened to bigint"
    );

    // text -> integer: the target cannot follow on its own.
    source
        .batch_execute("ALTER TABLE t ALTER COLUMN code TYPE integer USING code::integer; INSERT INTO t VALUES (6, 60, 6, 6, 'x');")
        .await
        .unwrap();
    assert_eq!(
        agent.wait_exit(Duration::from_secs(60)),
        1,
        "the pipeline stops on an incompatible change"
    );
    let log = p.log();
    assert!(
        log.contains("changed from LONGTEXT to INT") && log.contains("fix:"),
        "{log}"
    );
    assert_eq!(p.status_json()["state"], serde_json::json!("failed"));

    // The operator fixes the target and restarts: nothing was lost.
    target
        .query_drop("ALTER TABLE t MODIFY code INT")
        .await
        .unwrap();
    let agent = p.start();
    wait_equal(&source, &mut target, want, have, &[], &p).await;
    assert_eq!(agent.stop(), 0);
    drop(target);
    src.drop().await;
    dst.drop().await;
}

/// The sink driven directly: a schema change in the middle of a source transaction that already
/// wrote the table makes the sink commit (MySQL cannot ALTER a table an open transaction holds),
/// recording the ordinal of the last change applied; after a crash right there, the sink says so
/// and the rest of the transaction applies once.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_change_inside_a_transaction_leaves_a_resumable_point() {
    use std::sync::Arc;

    use cdc_core::{
        ChangeEvent, ColumnSchema, ColumnType, Lsn, Op, Position, ResumePoint, Row, Sink,
        SourceKind, SourceMessage, SourceMeta, TableSchema, Value,
    };
    use cdc_sink_mysql::{DeleteMode, MysqlSink, MysqlSinkConfig, TruncateMode};

    let dst = TargetDb::new("mid");
    let config = MysqlSinkConfig {
        url: dst.url.clone(),
        database: dst.name.clone(),
        pipeline: "mid".into(),
        delete_mode: DeleteMode::Hard,
        metadata_columns: false,
        truncate: TruncateMode::Propagate,
        max_batch_changes: 1000,
        dead_letters: None,
        record_position: true,
    };
    let column = |name: &str, column_type: ColumnType| ColumnSchema {
        name: cdc_core::Name::new(name),
        column_type,
        source_type: String::new(),
    };
    let before = Arc::new(TableSchema {
        schema: "public".into(),
        table: "t".into(),
        columns: vec![column("id", ColumnType::Int32)],
        key: vec![0],
    });
    let mut after = (*before).clone();
    after
        .columns
        .push(column("added", ColumnType::Text { max_len: None }));
    let after = Arc::new(after);
    let position = Position::Postgres { lsn: Lsn(100) };
    let insert = |schema: &Arc<TableSchema>, seq: u64, id: i64| {
        let mut row = vec![(cdc_core::Name::new("id"), Value::Int(id))];
        if schema.columns.len() > 1 {
            row.push((cdc_core::Name::new("added"), Value::Text(format!("a{id}"))));
        }
        SourceMessage::Change(ChangeEvent {
            op: Op::Insert,
            source: SourceMeta {
                kind: SourceKind::Postgres,
                db: "src".into(),
                schema: "public".into(),
                table: "t".into(),
                position: position.clone(),
                tx_id: None,
                commit_ts: None,
                seq,
                snapshot: false,
            },
            key: Some(Row(vec![(cdc_core::Name::new("id"), Value::Int(id))])),
            before: None,
            after: Some(Row(row)),
            unchanged: vec![],
            table_schema: Some(Arc::clone(schema)),
        })
    };
    let commit = SourceMessage::Commit {
        position: position.clone(),
        resume_from: Position::Postgres { lsn: Lsn(101) },
        commit_ts: None,
    };

    let mut sink = MysqlSink::new(config.clone());
    assert_eq!(sink.open().await.unwrap(), None);
    sink.write(&[insert(&before, 0, 1), insert(&before, 1, 2)])
        .await
        .unwrap();
    sink.write(&[insert(&after, 2, 3)]).await.unwrap();
    drop(sink); // a crash before the source transaction's commit reached the sink

    let mut target = dst.conn().await;
    let ids = "SELECT CAST(id AS CHAR), added FROM t ORDER BY id";
    let row = |id: &str, added: Option<&str>| vec![Some(id.to_string()), added.map(str::to_string)];
    assert_eq!(
        common::mysql::text_rows(&mut target, ids).await,
        [row("1", None), row("2", None)],
        "what came before the schema change is committed, nothing after it"
    );
    let mut sink = MysqlSink::new(config.clone());
    assert_eq!(
        sink.open().await.unwrap(),
        Some(ResumePoint {
            position: position.clone(),
            seq: Some(1)
        }),
        "the target names the last change it has"
    );
    // The pipeline skips seq 0 and 1 (covered by that point) and sends the rest.
    sink.write(&[insert(&after, 2, 3), commit]).await.unwrap();
    sink.flush().await.unwrap();
    drop(sink);
    assert_eq!(
        common::mysql::text_rows(&mut target, ids).await,
        [row("1", None), row("2", None), row("3", Some("a3"))]
    );
    let mut sink = MysqlSink::new(config);
    assert_eq!(
        sink.open().await.unwrap(),
        Some(ResumePoint {
            position,
            seq: None
        })
    );
    drop(sink);
    drop(target);
    dst.drop().await;
}

/// A MariaDB target that goes away (connections refused, open ones cut) and comes back: the agent
/// retries with backoff, holds its position, and catches up.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_goes_away_is_retried_and_caught_up() {
    let src = TestDb::new("mydownsrc").await;
    let dst = TargetDb::new("mydown");
    src.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let port = common::env().var("CDC_TEST_MYSQL_PORT");
    let (proxy, proxied) = common::proxy::Proxy::in_front_of(&dst.url, port).await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink_toml(&proxied, "")),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let source = src.client().await;
    let mut target = dst.conn().await;
    let query = "SELECT id::text AS id_text, v FROM t ORDER BY id";
    let target_query = "SELECT CAST(id AS CHAR), v FROM t ORDER BY id";
    source
        .batch_execute("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
        .await
        .unwrap();
    wait_equal(&source, &mut target, query, target_query, &[], &p).await;

    proxy.take_down();
    source
        .batch_execute("INSERT INTO t SELECT g, 'b' FROM generate_series(101, 200) g; UPDATE t SET v = 'c' WHERE id <= 50;")
        .await
        .unwrap();
    p.wait_state("retrying", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.bring_back();
    wait_equal(&source, &mut target, query, target_query, &[], &p).await;
    assert!(p.status_json()["errors_total"].as_u64().unwrap() >= 1);
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}
