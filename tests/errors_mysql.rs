//! A MySQL/MariaDB source that cannot work says why and how to fix it, in `check` and in `run`.
//!
//! One test, run in order, in a binary of its own: it changes the private MariaDB's global binlog
//! settings and purges its binlogs, which no other test may see happen (cargo runs test binaries
//! one after another).

mod common;

use std::process::Output;
use std::time::Duration;

use common::mysql::TargetDb;
use common::Pipeline;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pipeline(db: &TargetDb, user: &str, extra: &str) -> Pipeline {
    let port = common::env().var("CDC_TEST_MYSQL_PORT");
    let url = format!("mysql://{user}:secret-pw@127.0.0.1:{port}/{}", db.name);
    let table = format!("{}.t", db.name);
    Pipeline::new(&url, &db.name, &[&table], extra)
}

/// `check` exits 1 with a FAIL line that says `what`; `run` exits 1 saying `what` and `fix`.
fn fails_with(p: &Pipeline, line: &str, what: &str, fix: &str) {
    let check = p.run_cmd(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
    let out = stdout(&check);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("FAIL {line}")) && l.contains(what)),
        "check should fail `{line}` with `{what}`:\n{out}"
    );
    let run = p.command(&["run"]).output().unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "run should fail: {}",
        stderr(&run)
    );
    let err = stderr(&run);
    assert!(err.contains(what) && err.contains(fix), "run: {err}");
}

async fn set_global(db: &TargetDb, setting: &str) {
    db.exec(&format!("SET GLOBAL {setting}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_settings_grants_purged_binlogs_and_shared_server_ids_are_explained() {
    let db = TargetDb::new("myerr");
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    let p = pipeline(&db, "cdc", "snapshot = \"never\"");
    let ok = p.run_cmd(&["check"]);
    assert!(ok.status.success(), "{}", stdout(&ok));

    for format in ["STATEMENT", "MIXED"] {
        set_global(&db, &format!("binlog_format = '{format}'")).await;
        fails_with(
            &p,
            "binlog",
            &format!("binlog_format is {format}"),
            "SET GLOBAL binlog_format = 'ROW'",
        );
    }
    set_global(&db, "binlog_format = 'ROW'").await;

    set_global(&db, "binlog_row_image = 'MINIMAL'").await;
    fails_with(
        &p,
        "binlog",
        "binlog_row_image is MINIMAL",
        "SET GLOBAL binlog_row_image = 'FULL'",
    );
    set_global(&db, "binlog_row_image = 'FULL'").await;

    // A user with SELECT only.
    let norepl = pipeline(&db, "cdc_norepl", "snapshot = \"never\"");
    fails_with(
        &norepl,
        "grants",
        "REPLICATION SLAVE, REPLICATION CLIENT",
        "GRANT",
    );

    // Two agents with one server_id: the server drops the first, which stops saying why.
    let first = pipeline(&db, "cdc", "snapshot = \"never\"\nserver_id = 4242");
    let agent = first.start();
    first.wait_state("streaming", Duration::from_secs(60));
    let other_db = TargetDb::new("myerr2");
    other_db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let second = pipeline(&other_db, "cdc", "snapshot = \"never\"\nserver_id = 4242");
    let second_agent = second.start();
    assert_eq!(agent.wait_exit(Duration::from_secs(60)), 1);
    assert!(
        first.log().contains("same server_uuid/server_id")
            && first.log().contains("its own `server_id`"),
        "{}",
        first.log()
    );
    assert_eq!(second_agent.stop(), 0);
    other_db.drop().await;

    // A checkpoint in a binlog file the server has purged since.
    let agent = first.start();
    first.wait_state("streaming", Duration::from_secs(60));
    db.exec("INSERT INTO t VALUES (1, 1)").await;
    first.wait_records(1, Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    db.exec("FLUSH BINARY LOGS").await;
    let conn = db.conn().await;
    // The server does not purge a file a replica connection still reads: wait for the stopped
    // agents' dump threads to go (the server notices at its next heartbeat).
    common::wait_until("no binlog dump threads", Duration::from_secs(30), || async {
        use mysql_async::prelude::Queryable;
        let mut c = db.conn().await;
        let n: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            .await
            .unwrap();
        n == Some(0)
    })
    .await;
    // MariaDB also keeps a file until InnoDB no longer needs it for crash recovery: purge until
    // every file but the newest is gone.
    common::wait_until("older binlogs purged", Duration::from_secs(60), || async {
        use mysql_async::prelude::Queryable;
        let mut c = db.conn().await;
        let files: Vec<(String, u64)> = c.query("SHOW BINARY LOGS").await.unwrap();
        let newest = files.last().unwrap().0.clone();
        c.query_drop(format!("PURGE BINARY LOGS TO '{newest}'"))
            .await
            .unwrap();
        let left: Vec<(String, u64)> = c.query("SHOW BINARY LOGS").await.unwrap();
        left.len() == 1
    })
    .await;
    drop(conn);
    fails_with(
        &first,
        "checkpoint",
        "is no longer on the server",
        "take a new snapshot",
    );
    db.drop().await;
}
