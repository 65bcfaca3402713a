//! The chunked (watermark) snapshot against a real Postgres and a real MariaDB: consistency
//! under concurrent writes, resume after SIGKILL, streaming during the copy, and `cdc-agent
//! snapshot` of one table while the pipeline streams. Each scenario runs once per server.
//!
//! The JSON lines output is replayed (insert/update = upsert by key, delete = remove, truncate =
//! clear) and compared row by row with the source.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::mysql::TargetDb;
use common::{wait_until, Pipeline, TestDb};
use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

#[derive(Clone, Copy)]
enum Kind {
    Postgres,
    Mariadb,
}

/// The source database of a test, on the private Postgres or MariaDB of `scripts/testenv.sh`.
enum SourceDb {
    Postgres(TestDb),
    Mariadb(TargetDb),
}

impl SourceDb {
    async fn new(kind: Kind, prefix: &str) -> SourceDb {
        match kind {
            Kind::Postgres => SourceDb::Postgres(TestDb::new(prefix).await),
            Kind::Mariadb => {
                let db = TargetDb::new(prefix);
                drop(db.conn().await); // creates it
                SourceDb::Mariadb(db)
            }
        }
    }

    fn name(&self) -> &str {
        match self {
            SourceDb::Postgres(db) => &db.name,
            SourceDb::Mariadb(db) => &db.name,
        }
    }

    /// What the agent connects with.
    fn url(&self) -> String {
        match self {
            SourceDb::Postgres(db) => db.url.clone(),
            SourceDb::Mariadb(db) => db.url.clone(),
        }
    }

    /// The qualified name the pipeline knows `table` by.
    fn table(&self, table: &str) -> String {
        match self {
            SourceDb::Postgres(_) => format!("public.{table}"),
            SourceDb::Mariadb(db) => format!("{}.{table}", db.name),
        }
    }

    fn pipeline(&self, source_extra: &str) -> Pipeline {
        self.pipeline_with_sink(source_extra, None)
    }

    /// [`SourceDb::pipeline`] with another `[sink]` table (None: JSON lines).
    fn pipeline_with_sink(&self, source_extra: &str, sink: Option<&str>) -> Pipeline {
        let tables = [self.table("big"), self.table("other")];
        let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
        Pipeline::with_sink(&self.url(), self.name(), &tables, source_extra, sink)
    }

    async fn exec(&self, sql: &str) {
        match self {
            SourceDb::Postgres(db) => db.exec(sql).await,
            SourceDb::Mariadb(db) => db.exec(sql).await,
        }
    }

    /// Fills `table` with ids `offset + 1..=offset + rows`, `v` from `value` (an SQL expression
    /// of `g`, written for both servers).
    async fn fill(&self, table: &str, offset: i64, rows: i64, value: &str) {
        self.exec(&match self {
            SourceDb::Postgres(_) => format!(
                "INSERT INTO {table} (id, v, n) SELECT {offset} + g, {value}, 0 FROM generate_series(1, {rows}) g; ANALYZE {table};"
            ),
            SourceDb::Mariadb(_) => format!(
                "INSERT INTO {table} (id, v, n) SELECT {offset} + g, {value}, 0 FROM (SELECT seq AS g FROM seq_1_to_{rows}) s; ANALYZE TABLE {table};"
            ),
        })
        .await
    }

    async fn rows(&self, table: &str) -> Rows {
        let sql = format!("SELECT id, v, n FROM {table}");
        match self {
            SourceDb::Postgres(db) => db
                .client()
                .await
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, i64>(0),
                        (r.get::<_, String>(1), r.get::<_, i32>(2) as i64),
                    )
                })
                .collect(),
            SourceDb::Mariadb(db) => {
                let mut conn = db.conn().await;
                let rows: Vec<(i64, String, i64)> = conn.query(sql).await.unwrap();
                let _ = conn.disconnect().await;
                rows.into_iter().map(|(id, v, n)| (id, (v, n))).collect()
            }
        }
    }

    async fn drop(self) {
        match self {
            SourceDb::Postgres(db) => db.drop().await,
            SourceDb::Mariadb(db) => db.drop().await,
        }
    }
}

/// One connection that runs a transaction's statements.
enum Writer {
    Postgres(tokio_postgres::Client),
    Mariadb(mysql_async::Conn),
}

impl Writer {
    async fn transaction(&mut self, statements: &str) {
        match self {
            Writer::Postgres(c) => c
                .batch_execute(&format!("BEGIN; {statements} COMMIT;"))
                .await
                .unwrap(),
            Writer::Mariadb(c) => c
                .query_drop(format!("START TRANSACTION; {statements} COMMIT;"))
                .await
                .unwrap(),
        }
    }
}

/// A table's rows as the output says they are: id → (v, n).
type Rows = BTreeMap<i64, (String, i64)>;

#[derive(Default)]
struct Replay {
    tables: BTreeMap<String, Rows>,
    /// Snapshot rows per table, from line `from` on.
    snapshot_rows: BTreeMap<String, u64>,
    lines: usize,
    /// Line index of the last snapshot row, per table, and of each streamed change, per table.
    last_snapshot_line: BTreeMap<String, usize>,
    first_streamed_line: BTreeMap<String, usize>,
}

fn row_of(after: &Json) -> (i64, (String, i64)) {
    (
        after["id"].as_i64().expect("id"),
        (
            after["v"].as_str().unwrap_or_default().to_string(),
            after["n"].as_i64().unwrap_or_default(),
        ),
    )
}

/// Applies the output's changes in order; counts snapshot rows from line `count_from` on.
fn replay(path: &std::path::Path, count_from: usize) -> Replay {
    let file = std::fs::File::open(path).expect("output file");
    let mut out = Replay::default();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.expect("read line");
        if !line.ends_with('}') {
            continue; // a torn last line of a killed run
        }
        let r: Json =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line}: {e}"));
        out.lines = i + 1;
        let table = r["source"]["table"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let rows = out.tables.entry(table.clone()).or_default();
        let snapshot = r["source"]["snapshot"] == Json::Bool(true);
        if snapshot {
            out.last_snapshot_line.insert(table.clone(), i);
            if i >= count_from {
                *out.snapshot_rows.entry(table.clone()).or_default() += 1;
            }
        } else {
            out.first_streamed_line.entry(table.clone()).or_insert(i);
        }
        match r["op"].as_str() {
            Some("insert") | Some("update") => {
                if let Some(before) = r.get("before").filter(|b| b.is_object()) {
                    rows.remove(&before["id"].as_i64().expect("before id"));
                }
                let (id, row) = row_of(&r["after"]);
                rows.insert(id, row);
            }
            Some("delete") => {
                rows.remove(&r["before"]["id"].as_i64().expect("before id"));
            }
            Some("truncate") => rows.clear(),
            other => panic!("unexpected op {other:?} in {line}"),
        }
    }
    out
}

fn assert_equal(table: &str, source: &Rows, replayed: Option<&Rows>) {
    let empty = Rows::new();
    let replayed = replayed.unwrap_or(&empty);
    if source == replayed {
        return;
    }
    let missing = source.keys().filter(|k| !replayed.contains_key(k)).count();
    let extra = replayed.keys().filter(|k| !source.contains_key(k)).count();
    let differ: Vec<_> = source
        .iter()
        .filter(|(k, v)| replayed.get(k).is_some_and(|r| r != *v))
        .take(5)
        .collect();
    panic!(
        "{table}: target differs from source: {} vs {} rows, {missing} missing, {extra} extra, differing e.g. {differ:?}",
        source.len(),
        replayed.len()
    );
}

/// Writes into `big` (updates, key updates, deletes, inserts spread over the key range) and
/// `other` until told to stop. Returns the number of transactions.
async fn writer(db: &SourceDb, stop: Arc<AtomicBool>, rows: i64) -> tokio::task::JoinHandle<u64> {
    let (mut c, insert_new) = match db {
        SourceDb::Postgres(db) => (Writer::Postgres(db.client().await), "INSERT INTO big (id, v, n) VALUES ({fresh}, 'new', 1), (-{fresh}, 'new', 1) ON CONFLICT DO NOTHING;"),
        SourceDb::Mariadb(db) => (Writer::Mariadb(db.conn().await), "INSERT IGNORE INTO big (id, v, n) VALUES ({fresh}, 'new', 1), (-{fresh}, 'new', 1);"),
    };
    tokio::spawn(async move {
        let mut seed: i64 = 7;
        let mut next = || {
            seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
            1 + seed % rows
        };
        let mut tx = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (a, b, d, k) = (next(), next(), next(), next());
            let fresh = rows * 10 + tx as i64;
            c.transaction(&format!(
                "UPDATE big SET n = n + 1, v = 'upd' WHERE id IN ({a}, {b});
                 DELETE FROM big WHERE id = {d};
                 UPDATE big SET id = -id WHERE id = {k};
                 {}
                 INSERT INTO other VALUES ({tx}, 'streamed', 0);",
                insert_new.replace("{fresh}", &fresh.to_string())
            ))
            .await;
            tx += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx
    })
}

const BIG_SCHEMA: &str = "CREATE TABLE big (id bigint PRIMARY KEY, v text, n int);
     CREATE TABLE other (id bigint PRIMARY KEY, v text, n int);";

/// Waits until a marker row written now has reached the output: everything before it has too.
async fn drain(db: &SourceDb, p: &Pipeline, marker: i64) {
    db.exec(&format!("INSERT INTO other VALUES ({marker}, 'marker', 0)"))
        .await;
    let output = p.output.clone();
    let needle = format!("\"id\":{marker},\"v\":\"marker\"");
    wait_until(
        "the marker reaches the output",
        Duration::from_secs(120),
        || {
            let output = output.clone();
            let needle = needle.clone();
            async move {
                std::fs::read_to_string(&output)
                    .unwrap_or_default()
                    .contains(&needle)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_million_rows_under_concurrent_writes_end_equal_and_streaming_goes_on() {
    a_million_rows_under_concurrent_writes(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_million_rows_under_concurrent_writes_end_equal_and_streaming_goes_on() {
    a_million_rows_under_concurrent_writes(Kind::Mariadb).await;
}

async fn a_million_rows_under_concurrent_writes(kind: Kind) {
    const ROWS: i64 = 1_000_000;
    let db = SourceDb::new(kind, "snapmillion").await;
    db.exec(BIG_SCHEMA).await;
    db.fill("big", 0, ROWS, "concat('row-', g)").await;
    let p = db.pipeline("snapshot_chunk_rows = 20000");
    // The writer runs from before the agent starts until the copy has ended.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&db, Arc::clone(&stop), ROWS).await;
    let agent = p.start();
    p.wait_state("snapshotting", Duration::from_secs(60));
    p.wait_state("streaming", Duration::from_secs(600));
    stop.store(true, Ordering::Relaxed);
    let transactions = writes.await.unwrap();
    drain(&db, &p, -1).await;
    assert_eq!(agent.stop(), 0);

    let replayed = replay(&p.output, 0);
    assert!(
        transactions > 10,
        "the writer ran throughout ({transactions} transactions)"
    );
    assert_eq!(replayed.tables["other"].len() as u64, transactions + 1);
    assert_equal("big", &db.rows("big").await, replayed.tables.get("big"));
    assert_equal(
        "other",
        &db.rows("other").await,
        replayed.tables.get("other"),
    );
    // Streaming went on during the copy: changes to `other` reached the sink before the copy
    // of `big` ended.
    assert!(
        replayed.first_streamed_line["other"] < replayed.last_snapshot_line["big"],
        "streamed changes waited for the snapshot: first streamed change to `other` at line {}, last snapshot row of `big` at line {} ({} transactions)",
        replayed.first_streamed_line["other"],
        replayed.last_snapshot_line["big"],
        transactions
    );
    let copied = replayed.snapshot_rows["big"];
    assert!(
        copied <= ROWS as u64 + transactions * 2,
        "each row is copied once ({copied} snapshot rows)"
    );
    // Two workers (the default): the one done with `other` joined the copy of `big`, so chunks
    // of one table were read side by side.
    assert!(
        p.log()
            .contains("snapshot workers share the table's chunks"),
        "the second worker joined the copy of big; log:\n{}",
        p.log()
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_sigkill_during_the_snapshot_resumes_at_the_next_chunk() {
    sigkill_during_the_snapshot_resumes(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_sigkill_during_the_snapshot_resumes_at_the_next_chunk() {
    sigkill_during_the_snapshot_resumes(Kind::Mariadb).await;
}

/// Killed mid-copy, the restart copies again at most the chunks that were in flight: it resumes
/// after what the sink holds (the file's last record), not after the checkpoint, which trails
/// it (here by up to the 2 s flush interval, many chunks).
async fn sigkill_during_the_snapshot_resumes(kind: Kind) {
    const ROWS: i64 = 300_000;
    const CHUNK_ROWS: u64 = 5000;
    const WORKERS: u64 = 2;
    let db = SourceDb::new(kind, "snapresume").await;
    db.exec(BIG_SCHEMA).await;
    db.fill("big", 0, ROWS, "repeat('v', 100)").await;
    let output = tempfile::NamedTempFile::new().expect("temp file");
    let sink = format!(
        "type = \"jsonl\"\npath = \"{}\"\nflush_interval_ms = 2000",
        output.path().display()
    );
    let mut p = db.pipeline_with_sink(
        &format!("snapshot_chunk_rows = {CHUNK_ROWS}\nsnapshot_workers = {WORKERS}"),
        Some(&sink),
    );
    p.output = output.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&db, Arc::clone(&stop), ROWS).await;
    let agent = p.start();
    // Kill once a good part of the table is out, but not all of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(&p.output)
        .unwrap_or_default()
        .lines()
        .count()
        <= ROWS as usize / 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for a third of the table; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.kill9();
    let before_restart = replay(&p.output, 0).lines;
    assert!(before_restart < ROWS as usize, "killed mid-copy");

    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(300));
    stop.store(true, Ordering::Relaxed);
    let writes_total = writes.await.unwrap();
    drain(&db, &p, -1).await;
    assert_eq!(agent.stop(), 0);

    let replayed = replay(&p.output, before_restart);
    let after_restart = replayed.snapshot_rows.get("big").copied().unwrap_or(0);
    assert!(
        after_restart < ROWS as u64 * 3 / 4,
        "the copy resumed: {after_restart} rows of {ROWS} read after the restart"
    );
    // Every snapshot record of both runs: the table's rows (and the writer's new ones, copied
    // when the copy reached them), plus at most the chunks in flight at the kill.
    let transactions = writes_total;
    let copied = replay(&p.output, 0).snapshot_rows["big"];
    assert!(
        copied <= ROWS as u64 + transactions * 2 + WORKERS * CHUNK_ROWS,
        "chunks the sink already had were copied again: {copied} snapshot records for {ROWS} rows \
         ({transactions} writer transactions); log:\n{}",
        p.log()
    );
    assert!(
        p.log().contains("resumed_after_rows"),
        "the restart says where it resumed"
    );
    assert!(
        p.log()
            .contains("snapshot workers share the table's chunks"),
        "chunks of big were copied side by side, so their progress came out of order"
    );
    assert_equal("big", &db.rows("big").await, replayed.tables.get("big"));
    assert_equal(
        "other",
        &db.rows("other").await,
        replayed.tables.get("other"),
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_workers_share_a_composite_key_table_under_concurrent_writes() {
    workers_share_a_composite_key_table(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_workers_share_a_composite_key_table_under_concurrent_writes() {
    workers_share_a_composite_key_table(Kind::Mariadb).await;
}

/// Three workers split one table with a two-column key (text, then number) into chunks by
/// boundary queries and read them side by side while it is written to: the ranges, compared
/// column by column, cover every row once and the target ends equal.
async fn workers_share_a_composite_key_table(kind: Kind) {
    const ROWS: i64 = 100_000;
    let db = SourceDb::new(kind, "snapshare").await;
    // Inserts of the writer (three columns) land in group 'z'; the filled rows in five groups,
    // so chunk bounds fall inside groups and between them.
    db.exec(
        "CREATE TABLE big (id bigint, v text, n int, g varchar(8) NOT NULL DEFAULT 'z', PRIMARY KEY (g, id));
         CREATE TABLE other (id bigint PRIMARY KEY, v text, n int);",
    )
    .await;
    db.fill("big", 0, ROWS, "'v'").await;
    db.exec("UPDATE big SET g = concat('g', id % 5)").await;
    let p = db.pipeline("snapshot_workers = 3\nsnapshot_chunk_rows = 2000");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&db, Arc::clone(&stop), ROWS).await;
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(300));
    stop.store(true, Ordering::Relaxed);
    let transactions = writes.await.unwrap();
    drain(&db, &p, -1).await;
    assert_eq!(agent.stop(), 0);

    let replayed = replay(&p.output, 0);
    assert!(transactions > 0, "the writer ran during the copy");
    assert!(
        p.log()
            .contains("snapshot workers share the table's chunks"),
        "several workers copied big; log:\n{}",
        p.log()
    );
    let copied = replayed.snapshot_rows["big"];
    assert!(
        copied <= ROWS as u64 + transactions * 2,
        "each row is copied once ({copied} snapshot rows)"
    );
    assert_equal("big", &db.rows("big").await, replayed.tables.get("big"));
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_re_snapshot_of_one_table_while_streaming_leaves_the_others_alone() {
    a_re_snapshot_of_one_table_while_streaming(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_re_snapshot_of_one_table_while_streaming_leaves_the_others_alone() {
    a_re_snapshot_of_one_table_while_streaming(Kind::Mariadb).await;
}

async fn a_re_snapshot_of_one_table_while_streaming(kind: Kind) {
    const ROWS: i64 = 50_000;
    let db = SourceDb::new(kind, "snapagain").await;
    db.exec(BIG_SCHEMA).await;
    db.fill("big", 0, ROWS, "'v'").await;
    db.fill("other", 1_000_000, 1000, "'o'").await;
    let p = db.pipeline("snapshot = \"never\"\nsnapshot_chunk_rows = 3000");
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&db, Arc::clone(&stop), ROWS).await;
    // Asked while streaming (and written to), followed to the end.
    let big = db.table("big");
    let asked = p.run_cmd(&["snapshot", &big]);
    let said = String::from_utf8_lossy(&asked.stdout);
    assert!(
        asked.status.success(),
        "snapshot failed: {said}{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    assert!(said.contains("snapshot done"), "{said}");
    assert!(said.contains(&big) && said.contains("100%"), "{said}");
    stop.store(true, Ordering::Relaxed);
    writes.await.unwrap();
    drain(&db, &p, -1).await;
    let status = p.status_json();
    assert_eq!(status["snapshot_method"], "watermark", "{status}");
    assert_eq!(agent.stop(), 0);

    let replayed = replay(&p.output, 0);
    assert_eq!(
        replayed.snapshot_rows.get("other"),
        None,
        "the other table is not copied"
    );
    // Rows written inside a chunk's window go out as streamed changes instead, so the copy may
    // hold somewhat fewer rows than the table; the equality below is the real check.
    let copied = replayed.snapshot_rows.get("big").copied().unwrap_or(0);
    assert!(
        copied >= ROWS as u64 / 2,
        "the table was copied again: {copied} rows"
    );
    // `other` was only streamed: its output holds the streamed rows; `big` equals the source.
    assert_equal("big", &db.rows("big").await, replayed.tables.get("big"));
    let other_source = db.rows("other").await;
    let streamed = replayed.tables.get("other").cloned().unwrap_or_default();
    assert!(streamed.iter().all(|(k, v)| other_source.get(k) == Some(v)));
    assert_eq!(
        other_source.len() - streamed.len(),
        1000,
        "only the rows from before the pipeline are missing from `other`"
    );

    // Bad requests are refused with the reason.
    let nope = db.table("nope");
    let unknown = p.run_cmd(&["snapshot", &nope]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains(&nope));
    db.drop().await;
}

/// A source the agent may not write to (here: no rights on the signal table's database) still
/// gets a consistent copy, in one transaction, and `status` says it cannot resume mid-table;
/// asking for watermarks there is refused with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_without_write_rights_falls_back_to_one_transaction() {
    const ROWS: i64 = 20_000;
    let db = SourceDb::new(Kind::Mariadb, "snapreadonly").await;
    db.exec(BIG_SCHEMA).await;
    db.fill("big", 0, ROWS, "'v'").await;
    // The test user has rights on `cdc_%` databases only.
    let p = db.pipeline("signal_table = \"forbidden.watermarks\"");
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(120));
    let status = p.status_json();
    assert_eq!(status["snapshot_method"], "transaction", "{status}");
    assert_eq!(status["snapshot_resumable"], false, "{status}");
    drain(&db, &p, -1).await;
    assert_eq!(agent.stop(), 0);
    let replayed = replay(&p.output, 0);
    assert_equal("big", &db.rows("big").await, replayed.tables.get("big"));
    assert!(
        p.log().contains("cannot write snapshot watermarks"),
        "the fallback is logged"
    );

    let forced =
        db.pipeline("signal_table = \"forbidden.watermarks\"\nsnapshot_method = \"watermark\"");
    let run = forced.run_cmd(&["run"]);
    assert_ne!(run.status.code(), Some(0));
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("forbidden.watermarks") && said.contains("snapshot_method"),
        "{said}"
    );
    db.drop().await;
}
