//! Postgres → Postgres: the target tables equal the source tables, exactly once, through
//! SIGKILLs, schema changes and a target that goes away.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{Pipeline, TestDb};
use tokio_postgres::Client;

fn sink_toml(url: &str, extra: &str) -> String {
    format!("type = \"postgres\"\nurl = \"{url}\"\nschema = \"replica\"\nflush_interval_ms = 50\n{extra}")
}

/// Every row of `query` on both sides, as text, in order.
async fn rows(client: &Client, query: &str) -> Vec<String> {
    client
        .query(&format!("SELECT t::text FROM ({query}) t"), &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn wait_equal(
    source: &Client,
    target: &Client,
    source_query: &str,
    target_query: &str,
    p: &Pipeline,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let want = rows(source, source_query).await;
        let have = target
            .query(&format!("SELECT t::text FROM ({target_query}) t"), &[])
            .await
            .map(|rs| rs.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
            .unwrap_or_default();
        if want == have {
            return;
        }
        if std::time::Instant::now() > deadline {
            let first_diff = want.iter().zip(&have).position(|(a, b)| a != b);
            panic!(
                "target never equalled source: {} vs {} rows, first difference at {first_diff:?}; log:\n{}",
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
                           tags text[], meta jsonb, updated timestamptz);
    CREATE TABLE events (id bigint PRIMARY KEY, kind text);";

const ACCOUNTS: &str =
    "SELECT id, owner, balance, doc, tags, meta, updated FROM accounts ORDER BY id";
const ACCOUNTS_TARGET: &str =
    "SELECT id, owner, balance, doc, tags, meta, updated FROM replica.accounts ORDER BY id";

#[tokio::test(flavor = "multi_thread")]
async fn equal_after_sigkills_and_no_change_applied_twice() {
    let src = TestDb::new("pgsrc").await;
    let dst = TestDb::new("pgdst").await;
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
    src.exec("INSERT INTO accounts VALUES (0, 'seed', 0, repeat('d', 100000), '{a}', '{}', now())")
        .await;
    let target = dst.client().await;
    common::wait_until(
        "the snapshot row in the target",
        Duration::from_secs(60),
        || async {
            target
                .query_one("SELECT count(*) FROM replica.accounts", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        },
    )
    .await;
    // Every write the sink makes to the target table is recorded with the source position it
    // carries and the target transaction: the same (row, position) from two target transactions
    // would be a source transaction applied twice. (Within one target transaction a row may be
    // written twice: a large source transaction is applied in pieces.)
    dst.exec(
        "CREATE TABLE writes (id bigint, pos text, xid bigint);
         CREATE FUNCTION record_write() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO writes VALUES (NEW.id, NEW._cdc_position, txid_current()); RETURN NEW; END $$;
         CREATE TRIGGER record_write AFTER INSERT OR UPDATE ON replica.accounts
           FOR EACH ROW EXECUTE FUNCTION record_write();",
    )
    .await;

    let writer_url = src.url.clone();
    let writer = tokio::spawn(async move {
        let c = common::connect(&writer_url).await;
        // 100 transactions of ~500 changes: inserts, non-key and key updates, deletes, an
        // update that leaves the TOASTed doc alone, and one truncate of another table.
        for tx in 0..100i64 {
            let b = 1 + tx * 1000;
            c.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO accounts SELECT g, 'owner ' || g, g * 0.5, 'doc', ARRAY['t' || g], jsonb_build_object('g', g), now()
                   FROM generate_series({b}, {b} + 199) g;
                 UPDATE accounts SET balance = balance + 1, tags = array_append(tags, 'x') WHERE id BETWEEN {b} AND {b} + 99;
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
    wait_equal(&source, &target, ACCOUNTS, ACCOUNTS_TARGET, &p).await;
    wait_equal(
        &source,
        &target,
        "SELECT * FROM events ORDER BY id",
        "SELECT id, kind FROM replica.events ORDER BY id",
        &p,
    )
    .await;
    assert_eq!(agent.stop(), 0);

    let twice: i64 = target
        .query_one(
            "SELECT count(*) FROM (SELECT id, pos FROM writes GROUP BY 1, 2 HAVING count(DISTINCT xid) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "a change was applied twice");
    // The TOASTed value survived the updates that did not send it.
    let doc: String = target
        .query_one("SELECT doc FROM replica.accounts WHERE id = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(doc.len(), 100000);
    src.drop().await;
    dst.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_follow_and_an_incompatible_one_stops_until_fixed() {
    let src = TestDb::new("ddlsrc").await;
    let dst = TestDb::new("ddldst").await;
    src.exec("CREATE TABLE t (id int PRIMARY KEY, code text, gone int); INSERT INTO t VALUES (1, '10', 1);").await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.t"],
        "",
        Some(&sink_toml(&dst.url, "")),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let source = src.client().await;
    let target = dst.client().await;
    for sql in [
        "ALTER TABLE t ADD COLUMN added numeric(8,3)",
        "INSERT INTO t VALUES (2, '20', 2, 1.5)",
        "ALTER TABLE t DROP COLUMN gone",
        "INSERT INTO t VALUES (3, '30', 2.25)",
    ] {
        source.batch_execute(sql).await.unwrap();
    }
    wait_equal(
        &source,
        &target,
        "SELECT id, code, added FROM t ORDER BY id",
        "SELECT id, code, added FROM replica.t ORDER BY id",
        &p,
    )
    .await;
    let gone: Vec<Option<i32>> = target
        .query("SELECT gone FROM replica.t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        gone,
        [Some(1), Some(2), None],
        "a dropped column is kept but no longer written"
    );

    // text -> integer: the target cannot follow on its own.
    source
        .batch_execute("ALTER TABLE t ALTER COLUMN code TYPE integer USING code::integer; INSERT INTO t VALUES (4, 40, 4);")
        .await
        .unwrap();
    assert_eq!(
        agent.wait_exit(Duration::from_secs(60)),
        1,
        "the pipeline stops on an incompatible change"
    );
    let log = p.log();
    assert!(
        log.contains("changed from text to integer") && log.contains("fix:"),
        "{log}"
    );
    let status = p.status_json();
    assert_eq!(status["state"], serde_json::json!("failed"));

    // The operator fixes the target and restarts: nothing was lost.
    target
        .batch_execute("ALTER TABLE replica.t ALTER COLUMN code TYPE integer USING code::integer")
        .await
        .unwrap();
    let agent = p.start();
    wait_equal(
        &source,
        &target,
        "SELECT id, code, added FROM t ORDER BY id",
        "SELECT id, code, added FROM replica.t ORDER BY id",
        &p,
    )
    .await;
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_goes_away_is_retried_and_caught_up() {
    let src = TestDb::new("downsrc").await;
    let dst = TestDb::new("downdst").await;
    src.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let port = common::env()
        .var("CDC_TEST_PG_URL")
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (proxy, proxied) = Proxy::in_front_of(&dst.url, &port).await;
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
    let target = dst.client().await;
    source
        .batch_execute("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
        .await
        .unwrap();
    wait_equal(
        &source,
        &target,
        "SELECT * FROM t ORDER BY id",
        "SELECT id, v FROM replica.t ORDER BY id",
        &p,
    )
    .await;

    proxy.take_down();
    source.batch_execute("INSERT INTO t SELECT g, 'b' FROM generate_series(101, 200) g; UPDATE t SET v = 'c' WHERE id <= 50;").await.unwrap();
    p.wait_state("retrying", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.bring_back();
    wait_equal(
        &source,
        &target,
        "SELECT * FROM t ORDER BY id",
        "SELECT id, v FROM replica.t ORDER BY id",
        &p,
    )
    .await;
    assert!(p.status_json()["errors_total"].as_u64().unwrap() >= 1);
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}

/// Soft deletes, metadata columns and an ignored truncate; and the bulk path for new rows falling
/// back to an upsert when the target has the key anyway (a soft-deleted row that comes back, a
/// row someone wrote into the target by hand).
#[tokio::test(flavor = "multi_thread")]
async fn soft_deletes_and_new_rows_the_target_already_has() {
    let src = TestDb::new("softsrc").await;
    let dst = TestDb::new("softdst").await;
    src.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink_toml(
            &dst.url,
            "delete_mode = \"soft\"\nmetadata_columns = true\ntruncate = \"ignore\"",
        )),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let source = src.client().await;
    let target = dst.client().await;
    let live = "SELECT id, v FROM replica.t WHERE NOT _cdc_deleted ORDER BY id";
    source
        .batch_execute("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 10) g")
        .await
        .unwrap();
    wait_equal(&source, &target, "SELECT * FROM t ORDER BY id", live, &p).await;

    // 3 and 4 are deleted (kept, flagged), then come back in a later batch as new inserts.
    source
        .batch_execute("DELETE FROM t WHERE id IN (3, 4)")
        .await
        .unwrap();
    wait_equal(&source, &target, "SELECT * FROM t ORDER BY id", live, &p).await;
    let flagged: i64 = target
        .query_one("SELECT count(*) FROM replica.t WHERE _cdc_deleted", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(flagged, 2);
    // A row written into the target by hand, that the source then inserts too.
    target
        .batch_execute("INSERT INTO replica.t (id, v, _cdc_deleted) VALUES (20, 'by hand', false)")
        .await
        .unwrap();
    source
        .batch_execute(
            "INSERT INTO t VALUES (3, 'back'), (4, 'back'), (11, 'new'), (20, 'from source')",
        )
        .await
        .unwrap();
    wait_equal(&source, &target, "SELECT * FROM t ORDER BY id", live, &p).await;
    let rows_in_target: i64 = target
        .query_one("SELECT count(*) FROM replica.t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows_in_target, 12, "a key is in the target twice");

    // An ignored truncate leaves the target as it is; metadata says which change wrote a row.
    source
        .batch_execute("TRUNCATE t; INSERT INTO t VALUES (30, 'after')")
        .await
        .unwrap();
    common::wait_until(
        "the row after the truncate",
        Duration::from_secs(60),
        || async {
            target
                .query_one("SELECT count(*) FROM replica.t WHERE id = 30", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        },
    )
    .await;
    let kept: i64 = target
        .query_one("SELECT count(*) FROM replica.t WHERE NOT _cdc_deleted", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept, 13,
        "the 12 rows before the ignored truncate and the one after"
    );
    let with_metadata: i64 = target
        .query_one(
            "SELECT count(*) FROM replica.t WHERE _cdc_position IS NOT NULL AND _cdc_commit_ts IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        with_metadata, 13,
        "rows the sink wrote carry their source position"
    );
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}

/// `cdc-agent snapshot` of a table, again and again, while writers update, delete and re-insert
/// its rows in many short transactions: the target ends equal to the source, row for row.
///
/// Two defects are caught here. A re-copied row is in the target already, so a delete that
/// follows it in the same batch must reach the target (the batch once took a copied row for one
/// the target never had, and dropped both: deleted rows came back). And a chunk's read must see
/// every transaction committed before its low watermark, including one caught between writing
/// its commit record and leaving the running set (an older row would overwrite the change).
#[tokio::test(flavor = "multi_thread")]
async fn re_copies_under_deleting_writers_leave_the_target_equal() {
    const ROWS: i64 = 3000;
    const COPIES: usize = 4;
    let src = TestDb::new("recopysrc").await;
    let dst = TestDb::new("recopydst").await;
    src.exec(&format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, v text, n int);
         INSERT INTO items SELECT g, 'v' || g, 0 FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.items"],
        "snapshot_chunk_rows = 250",
        Some(&sink_toml(&dst.url, "")),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(120));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for seed in [7i64, 11] {
        let client = src.client().await;
        let stop = std::sync::Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut state = seed;
            let mut next = move || {
                state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
                1 + state % ROWS
            };
            let mut transactions = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (a, b, d, r) = (next(), next(), next(), next());
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         UPDATE items SET n = n + 1, v = 'upd' WHERE id IN ({a}, {b});
                         DELETE FROM items WHERE id = {d};
                         INSERT INTO items VALUES ({r}, 'back', 0)
                           ON CONFLICT (id) DO UPDATE SET v = 'again', n = items.n + 1;
                         COMMIT"
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("writer: {e}"));
                transactions += 1;
            }
            transactions
        }));
    }
    for _ in 0..COPIES {
        let asked = p.run_cmd(&["snapshot", "public.items"]);
        assert!(
            asked.status.success(),
            "snapshot failed: {}{}",
            String::from_utf8_lossy(&asked.stdout),
            String::from_utf8_lossy(&asked.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut transactions = 0;
    for writer in writers {
        transactions += writer.await.unwrap();
    }
    assert!(
        transactions > 100,
        "the writers ran throughout ({transactions} transactions)"
    );
    let source = src.client().await;
    let target = dst.client().await;
    wait_equal(
        &source,
        &target,
        "SELECT id, v, n FROM items ORDER BY id",
        "SELECT id, v, n FROM replica.items ORDER BY id",
        &p,
    )
    .await;
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}

/// Years outside 0001–9999 travel in the record as ISO 8601's expanded form (`-004712-12-31`,
/// `+021016-11-04`), which Postgres' input would read as a time zone: the target gets each as
/// the exact value, from the snapshot and from the stream. A `json` document with line breaks
/// lands as the same document.
#[tokio::test(flavor = "multi_thread")]
async fn bc_and_five_digit_years_land_exactly() {
    let src = TestDb::new("pgeras").await;
    let dst = TestDb::new("pgerasdst").await;
    src.exec(
        "CREATE TABLE eras (id int PRIMARY KEY, d date, d2 date, ts timestamp, ts2 timestamp,
                            tz timestamptz, tz2 timestamptz, da date[], j json)",
    )
    .await;
    let values = r#"'4713-12-31 BC', '21016-11-04', '4713-12-31 23:59:59.999999 BC',
        '21016-11-04 13:51:30.123456', '21016-11-04 13:51:30.123456+00',
        '0001-01-01 00:00:00+00 BC', ARRAY['0044-03-15 BC'::date, '5874897-12-31'],
        E'{"a" :\n [1, 2]}'"#;
    src.exec(&format!("INSERT INTO eras VALUES (1, {values})"))
        .await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.eras"],
        "",
        Some(&sink_toml(&dst.url, "")),
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    src.exec(&format!("INSERT INTO eras VALUES (2, {values})"))
        .await;
    let source = src.client().await;
    let target = dst.client().await;
    wait_equal(
        &source,
        &target,
        "SELECT id, d, d2, ts, ts2, tz, tz2, da, j::jsonb FROM eras ORDER BY id",
        "SELECT id, d, d2, ts, ts2, tz, tz2, da, j FROM replica.eras ORDER BY id",
        &p,
    )
    .await;
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}
