//! MariaDB binlog → JSON lines: exact values, transactions, schema changes decoded with the
//! columns valid at their position (also after a restart from an older checkpoint), SIGKILLs.

mod common;

use std::time::Duration;

use common::mysql::TargetDb;
use common::Pipeline;
use serde_json::{json, Value as Json};

fn source_url(db: &TargetDb) -> String {
    let port = common::env().var("CDC_TEST_MYSQL_PORT");
    format!("mysql://cdc:secret-pw@127.0.0.1:{port}/{}", db.name)
}

fn pipeline(db: &TargetDb, tables: &[&str], extra: &str) -> Pipeline {
    let tables: Vec<String> = tables.iter().map(|t| format!("{}.{t}", db.name)).collect();
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    Pipeline::new(&source_url(db), &db.name, &tables, extra)
}

/// (file index, offset, seq) of a record: commit order.
fn order_key(record: &Json) -> (u64, u64, u64) {
    let file = record["source"]["file"].as_str().unwrap();
    let index = file.rsplit('.').next().unwrap().parse().unwrap();
    (
        index,
        record["source"]["pos"].as_u64().unwrap(),
        record["source"]["seq"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_arrives_as_the_spec_says() {
    let db = TargetDb::new("mytypes");
    db.exec(
        "CREATE TABLE t (
           id int PRIMARY KEY,
           ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned,
           mi mediumint, mu mediumint unsigned, i int, iu int unsigned, bi bigint, bu bigint unsigned,
           dec_big decimal(65,30), dec_small decimal(10,2), f float, d double,
           dt date, tm time(6), dtm datetime(6), ts timestamp(6) NULL, yr year,
           bt bit(10), en enum('red','green','blue'), st set('a','b','c'),
           ch char(5), vc varchar(100), tx text, lat varchar(20) CHARACTER SET latin1,
           bin binary(4), vb varbinary(10), bl longblob,
           js json, geo geometry
         )",
    )
    .await;
    let p = pipeline(&db, &["t"], "snapshot = \"never\"");
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec(
        "SET time_zone = '+00:00';
         INSERT INTO t VALUES (1,
           -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
           -9223372036854775808, 18446744073709551615,
           '12345678901234567890123456789012345.123456789012345678901234567890', 129.90, 1.5, -2.25e10,
           '2026-11-26', '-838:59:59.000000', '2026-11-26 13:45:00.123456', '2026-11-26 12:45:00.5', 2026,
           b'1010000001', 'green', 'a,c',
           'ab', 'héllo wörld ✓ 😀', 'text', 'café',
           x'0102', x'00ff', REPEAT('x', 1048576),
           '{\"k\": [1, 2.5, \"s\", null, true]}', ST_GeomFromText('POINT(1 2)'));
         INSERT INTO t (id) VALUES (2);
         INSERT INTO t (id, tm, dt, yr) VALUES (3, '100:00:01', '0000-00-00', 0);",
    )
    .await;
    let records = p.wait_records(3, Duration::from_secs(60));
    let after = &records[0]["after"];
    let expect = json!({
        "id": 1, "ti": -128, "tu": 255, "si": -32768, "su": 65535, "mi": -8388608, "mu": 16777215,
        "i": -2147483648i64, "iu": 4294967295u64, "bi": -9223372036854775808i64, "bu": 18446744073709551615u64,
        "dec_big": "12345678901234567890123456789012345.123456789012345678901234567890",
        "dec_small": "129.90", "f": 1.5, "d": -2.25e10,
        "dt": "2026-11-26", "tm": "-838:59:59", "dtm": "2026-11-26T13:45:00.123456",
        "ts": "2026-11-26T12:45:00.500000Z", "yr": 2026,
        "bt": "AoE=", "en": "green", "st": ["a", "c"],
        "ch": "ab", "vc": "héllo wörld ✓ 😀", "tx": "text", "lat": "café",
        "bin": "AQIAAA==", "vb": "AP8=",
        "js": {"k": [1, 2.5, "s", null, true]},
        "geo": "AQEAAAAAAAAAAADwPwAAAAAAAABA",
    });
    for (column, want) in expect.as_object().unwrap() {
        assert_eq!(&after[column], want, "column {column}");
    }
    let blob = after["bl"].as_str().unwrap();
    assert_eq!(blob.len(), 1398104, "1 MiB blob as base64");
    assert_eq!(records[0]["op"], "insert");
    assert_eq!(records[0]["source"]["type"], "mysql");
    assert_eq!(records[0]["source"]["schema"], db.name.as_str());
    assert!(records[0]["source"]["gtid"].is_string(), "{}", records[0]);
    assert_eq!(records[0]["key"], json!({"id": 1}));
    // A row of NULLs.
    let nulls = records[1]["after"].as_object().unwrap();
    assert!(
        nulls.iter().all(|(c, v)| c == "id" || v.is_null()),
        "{nulls:?}"
    );
    // Over 24 hours, and zero dates.
    assert_eq!(records[2]["after"]["tm"], "100:00:01");
    assert_eq!(records[2]["after"]["dt"], Json::Null);
    assert_eq!(records[2]["after"]["yr"], 0);
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// MariaDB's JSON is text as written: a document with line breaks arrives as one record on one
/// line, from the snapshot (both methods) and the binlog; the year 0000 MySQL allows takes the
/// spec's expanded form. The restart reads such a record back as the file's last line.
#[tokio::test(flavor = "multi_thread")]
async fn json_with_line_breaks_and_the_year_0000_arrive_one_record_per_line() {
    const VALUES: &str =
        "CONCAT('{\"a\" :', CHAR(10), ' [1, 2],', CHAR(13, 10, 9), '\"b\": \"x\"}'),
                          '0000-01-01', '0000-01-01 12:00:00.5'";
    for method in ["watermark", "transaction"] {
        let db = TargetDb::new("myedges");
        db.exec("CREATE TABLE t (id int PRIMARY KEY, js json, d date, dtm datetime(6))")
            .await;
        db.exec(&format!("INSERT INTO t VALUES (1, {VALUES})"))
            .await;
        let p = pipeline(&db, &["t"], &format!("snapshot_method = \"{method}\""));
        let agent = p.start();
        p.wait_state("streaming", Duration::from_secs(60));
        p.wait_records(1, Duration::from_secs(60));
        db.exec(&format!("INSERT INTO t VALUES (2, {VALUES})"))
            .await;
        let records = p.wait_records(2, Duration::from_secs(60));
        let expect = |id: i64| {
            json!({"id": id, "js": {"a": [1, 2], "b": "x"}, "d": "+000000-01-01",
                   "dtm": "+000000-01-01T12:00:00.500000"})
        };
        assert_eq!(records[0]["source"]["snapshot"], json!(true), "{method}");
        assert_eq!(records[0]["after"], expect(1), "{method} snapshot");
        assert_eq!(records[1]["after"], expect(2), "{method} binlog");
        assert_eq!(agent.stop(), 0);
        let agent = p.start();
        p.wait_state("streaming", Duration::from_secs(60));
        db.exec(&format!("INSERT INTO t VALUES (3, {VALUES})"))
            .await;
        let records = p.wait_records(3, Duration::from_secs(60));
        assert_eq!(records[2]["after"], expect(3), "{method} after the restart");
        assert_eq!(agent.stop(), 0, "{}", p.log());
        let text = std::fs::read_to_string(&p.output).unwrap();
        for line in text.lines() {
            serde_json::from_str::<Json>(line)
                .unwrap_or_else(|e| panic!("a line that is not a record ({e}): {line:?}"));
        }
        assert_eq!(text.lines().count(), 3, "{text}");
        db.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_schema_changes_and_a_restart_from_an_older_checkpoint() {
    let db = TargetDb::new("mytx");
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v varchar(20), n int)")
        .await;
    let p = pipeline(&db, &["t"], "snapshot = \"never\"");
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec(
        "INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2);
         START TRANSACTION; UPDATE t SET v = 'a2' WHERE id = 1; DELETE FROM t WHERE id = 2; INSERT INTO t VALUES (3, 'c', 3); COMMIT;
         START TRANSACTION; INSERT INTO t VALUES (99, 'never', 0); ROLLBACK;",
    )
    .await;
    let records = p.wait_records(5, Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    let ops: Vec<&str> = records.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "insert", "update", "delete", "insert"]);
    assert_eq!(records[2]["before"], json!({"id": 1, "v": "a", "n": 1}));
    assert_eq!(records[2]["after"], json!({"id": 1, "v": "a2", "n": 1}));
    assert_eq!(records[3]["before"], json!({"id": 2, "v": "b", "n": 2}));
    assert_eq!(records[3]["after"], Json::Null);
    // One transaction, one position, seq 0.. within it.
    let tx: Vec<(u64, u64, u64)> = records[2..5].iter().map(order_key).collect();
    assert!(tx.iter().all(|k| (k.0, k.1) == (tx[0].0, tx[0].1)));
    assert_eq!(tx.iter().map(|k| k.2).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(records.iter().all(|r| r["after"]["id"] != 99));

    // The checkpoint from before the schema changes, kept aside.
    let checkpoint = read_checkpoint(&p);
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec(
        "INSERT INTO t VALUES (4, 'before alter', 4);
         ALTER TABLE t ADD COLUMN extra varchar(10) DEFAULT 'x';
         INSERT INTO t VALUES (5, 'after add', 5, 'e5');
         ALTER TABLE t DROP COLUMN n;
         INSERT INTO t VALUES (6, 'after drop', 'e6');
         ALTER TABLE t MODIFY v varchar(200);
         INSERT INTO t VALUES (7, REPEAT('w', 150), 'e7');",
    )
    .await;
    let first_run = p.wait_records(9, Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    let tail: Vec<&Json> = first_run[5..].iter().map(|r| &r["after"]).collect();
    assert_eq!(tail[0], &json!({"id": 4, "v": "before alter", "n": 4}));
    assert_eq!(
        tail[1],
        &json!({"id": 5, "v": "after add", "n": 5, "extra": "e5"})
    );
    assert_eq!(tail[2], &json!({"id": 6, "v": "after drop", "extra": "e6"}));
    assert_eq!(tail[3]["v"].as_str().unwrap().len(), 150);

    // Back to the old checkpoint (and an empty output): the replay must decode each row with
    // the columns valid at its position, not today's.
    write_checkpoint(&p, &checkpoint);
    std::fs::remove_file(&p.output).unwrap();
    let agent = p.start();
    let replay = p.wait_records(4, Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    let replayed: Vec<&Json> = replay.iter().map(|r| &r["after"]).collect();
    assert_eq!(replayed, tail, "log:\n{}", p.log());
    db.drop().await;
}

fn read_checkpoint(p: &Pipeline) -> Vec<u8> {
    let db = sled::open(p.dir.path().join("state")).unwrap();
    let tree = db.open_tree("checkpoint").unwrap();
    tree.get(p.name.as_bytes()).unwrap().unwrap().to_vec()
}

fn write_checkpoint(p: &Pipeline, value: &[u8]) {
    let db = sled::open(p.dir.path().join("state")).unwrap();
    let tree = db.open_tree("checkpoint").unwrap();
    tree.insert(p.name.as_bytes(), value).unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_once_and_in_order_across_sigkills() {
    let db = TargetDb::new("mykill");
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    let p = pipeline(&db, &["t"], "snapshot = \"never\"");
    let mut agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let url = db.admin_url.replace("/?", &format!("/{}?", db.name));
    let writer = tokio::spawn(async move {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        // 500 transactions: 100 inserts, 60 updates, 40 deletes each (100,000 changes).
        for tx in 0..500i64 {
            let b = tx * 100;
            let values: Vec<String> = (b..b + 100).map(|i| format!("({i}, 0)")).collect();
            conn.query_drop(format!(
                "START TRANSACTION;
                 INSERT INTO t VALUES {};
                 UPDATE t SET v = v + 1 WHERE id >= {b} AND id < {b} + 60;
                 DELETE FROM t WHERE id >= {b} + 60 AND id < {b} + 100;
                 COMMIT;",
                values.join(",")
            ))
            .await
            .unwrap();
            if tx % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    agent = common::kill_at_random_moments(&p, agent, 3, 300, 900).await;
    writer.await.unwrap();
    let records = p.wait_records(100_000, Duration::from_secs(180));
    assert_eq!(agent.stop(), 0);
    assert_eq!(
        records.len(),
        100_000,
        "the JSON lines file is exactly once"
    );
    let keys: Vec<(u64, u64, u64)> = records.iter().map(order_key).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "records out of commit order"
    );
    let inserts = records.iter().filter(|r| r["op"] == "insert").count();
    let updates = records.iter().filter(|r| r["op"] == "update").count();
    let deletes = records.iter().filter(|r| r["op"] == "delete").count();
    assert_eq!((inserts, updates, deletes), (50_000, 30_000, 20_000));
    db.drop().await;
}

/// The migration case: MariaDB → Postgres tables, equal after a workload with SIGKILLs.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_postgres_equal_after_sigkills() {
    let src = TargetDb::new("mymig");
    let dst = common::TestDb::new("mymigdst").await;
    src.exec(
        "CREATE TABLE accounts (id int PRIMARY KEY, owner varchar(40), balance decimal(12,2),
           opened datetime(6), big bigint unsigned, status enum('new','open','closed'), note text)",
    )
    .await;
    src.exec(
        "INSERT INTO accounts SELECT seq, CONCAT('seed ', seq), seq * 1.25, '2020-01-01 00:00:00.5', \
         18446744073709551615 - seq, 'new', NULL FROM seq_1_to_500",
    )
    .await;
    let sink = format!(
        "type = \"postgres\"\nurl = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 50",
        dst.url
    );
    let p = Pipeline::with_sink(
        &source_url(&src),
        &src.name,
        &[&format!("{}.accounts", src.name)],
        "",
        Some(&sink),
    );
    let mut agent = p.start();
    let url = src.admin_url.replace("/?", &format!("/{}?", src.name));
    let writer = tokio::spawn(async move {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
        for tx in 0..200i64 {
            let b = 1000 + tx * 50;
            conn.query_drop(format!(
                "START TRANSACTION;
                 INSERT INTO accounts SELECT seq, CONCAT('owner ', seq), seq / 4, NOW(6), seq, 'open', REPEAT('n', seq % 7)
                   FROM seq_{b}_to_{}; 
                 UPDATE accounts SET balance = balance + 1, status = 'closed' WHERE id BETWEEN {b} AND {b} + 9;
                 UPDATE accounts SET id = id + 100000 WHERE id BETWEEN {b} + 10 AND {b} + 14;
                 DELETE FROM accounts WHERE id BETWEEN {b} + 15 AND {b} + 24;
                 UPDATE accounts SET note = 'seed touched' WHERE id = {};
                 COMMIT;",
                b + 49,
                1 + tx
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    agent = common::kill_at_random_moments(&p, agent, 3, 500, 1500).await;
    writer.await.unwrap();
    let query = "SELECT id, owner, balance, opened, big, status, note FROM accounts ORDER BY id";
    let target = dst.client().await;
    let mut source = src.conn().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let want = common::mysql::text_rows(&mut source, query).await;
        let have: Vec<Vec<Option<String>>> = target
            .query(
                "SELECT id::text AS id_text, owner, balance::text, to_char(opened, 'YYYY-MM-DD HH24:MI:SS.US'), big::text, status, note \
                 FROM replica.accounts ORDER BY id",
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| (0..7).map(|i| r.get::<_, Option<String>>(i)).collect())
                    .collect()
            })
            .unwrap_or_default();
        if want == have {
            break;
        }
        if std::time::Instant::now() > deadline {
            let first = want.iter().zip(&have).position(|(a, b)| a != b);
            panic!(
                "target never equalled source: {} vs {} rows, first difference at {first:?}: {:?} vs {:?}; log:\n{}",
                want.len(),
                have.len(),
                first.map(|i| &want[i]),
                first.map(|i| &have[i]),
                p.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}
