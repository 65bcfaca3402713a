//! Clear errors: each names what is wrong and how to fix it, and exits with the spec's code.

mod common;

use std::time::Duration;

use common::{Pipeline, TestDb};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cdc-agent run` expecting it to fail at once; returns its stderr.
fn run_fails(p: &Pipeline) -> String {
    let out = p.command(&["run"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "run should fail: {}",
        stderr(&out)
    );
    stderr(&out)
}

fn with_user(url: &str, user: &str) -> String {
    url.replace("postgres://postgres@", &format!("postgres://{user}@"))
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_names_the_role_and_the_fix() {
    let db = TestDb::new("pw").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let url = with_user(&db.url, "cdc_scram:wrong-password");
    let p = Pipeline::new(&url, &db.name, &["public.t"], "");
    let err = run_fails(&p);
    assert!(
        err.contains("password") && err.contains("cdc_scram"),
        "{err}"
    );
    let check = p.run_cmd(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stdout(&check).contains("FAIL source connection"),
        "{}",
        stdout(&check)
    );

    // The right password works, by SCRAM.
    let good = with_user(&db.url, "cdc_scram:secret-pw");
    let p = Pipeline::new(&good, &db.name, &["public.t"], "snapshot = \"never\"");
    let check = p.run_cmd(&["check"]);
    assert!(
        stdout(&check).contains("ok   source connection"),
        "{}",
        stdout(&check)
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_level_not_logical_names_the_setting() {
    let plain = common::env().var("CDC_TEST_PG_PLAIN_URL").to_string();
    let p = Pipeline::new(&plain, "plainlevel", &[], "");
    let err = run_fails(&p);
    assert!(
        err.contains("wal_level") && err.contains("ALTER SYSTEM SET wal_level = logical"),
        "{err}"
    );
    let check = p.run_cmd(&["check"]);
    assert!(
        stdout(&check).contains("FAIL wal_level"),
        "{}",
        stdout(&check)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn role_without_replication_is_told_to_grant_it() {
    let db = TestDb::new("norepl").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO cdc_norepl;")
        .await;
    let p = Pipeline::new(
        &with_user(&db.url, "cdc_norepl"),
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
    );
    // The publication needs an owner's rights: create it as the admin, as an operator would.
    db.exec(&format!("CREATE PUBLICATION cdc_{} FOR TABLE t", db.name))
        .await;
    let err = run_fails(&p);
    assert!(err.contains("REPLICATION"), "{err}");
    let check = p.run_cmd(&["check"]);
    assert!(
        stdout(&check).contains("FAIL replication privilege"),
        "{}",
        stdout(&check)
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_in_use_by_another_connection_is_reported() {
    let db = TestDb::new("busy").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let first = Pipeline::new(&db.url, &db.name, &["public.t"], "snapshot = \"never\"");
    let agent = first.start();
    first.wait_state("streaming", Duration::from_secs(30));
    // Same pipeline name (so the same slot), another state dir.
    let second = Pipeline::new(&db.url, &db.name, &["public.t"], "snapshot = \"never\"");
    let err = run_fails(&second);
    assert!(
        err.contains("is active") && err.contains("source.slot"),
        "{err}"
    );
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_tables_and_tables_without_keys_are_named() {
    let db = TestDb::new("tables").await;
    db.exec("CREATE TABLE nokey (v int)").await;
    let p = Pipeline::new(&db.url, &db.name, &["public.nokey", "public.nothere"], "");
    let err = run_fails(&p);
    assert!(
        err.contains("public.nokey has no primary key") && err.contains("REPLICA IDENTITY FULL"),
        "{err}"
    );
    assert!(err.contains("public.nothere does not exist"), "{err}");
    let check = stdout(&p.run_cmd(&["check"]));
    assert!(
        check.contains("FAIL tables: table public.nothere does not exist"),
        "{check}"
    );
    db.drop().await;
}

#[test]
fn malformed_config_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[agent]\nname = \"x\"\n\n[source]\ntype = \"postgres\"\nurl = \"postgres://a@b/c\"\ntabels = []\n\n[sink]\ntype = \"jsonl\"\npath = \"-\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-agent"))
        .args(["-c", path.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:7:1", path.display())) && err.contains("tabels"),
        "{err}"
    );

    std::fs::write(&path, "[agent\nname = 1").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-agent"))
        .args(["-c", path.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.toml:1:"), "{}", stderr(&out));

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-agent"))
        .args(["-c", "/nonexistent/cdc.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/cdc.toml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_full_with_scram_streams_and_a_wrong_ca_is_refused() {
    let db = TestDb::new("tls").await;
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO cdc_scram; GRANT CREATE ON DATABASE {} TO cdc_scram;",
        db.name
    ))
    .await;
    let env = common::env();
    let secure = |ca: &str| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            with_user(&db.url, "cdc_scram:secret-pw"),
            env.var(ca)
        )
    };
    let p = Pipeline::new(
        &secure("CDC_TEST_PG_CA"),
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec("INSERT INTO t VALUES (1), (2)").await;
    assert_eq!(p.wait_records(2, Duration::from_secs(20)).len(), 2);
    assert_eq!(agent.stop(), 0);

    let wrong = Pipeline::new(
        &secure("CDC_TEST_PG_WRONG_CA"),
        "tlswrong",
        &["public.t"],
        "",
    );
    let check = wrong.run_cmd(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    let text = stdout(&check);
    assert!(
        text.contains("FAIL source connection") && text.contains("sslrootcert"),
        "{text}"
    );
    db.drop().await;
}

/// `run` of a pipeline whose file cannot be what it should, whatever a retry does: exits 1 (not
/// "transient error; retrying" forever) with the path and the fix.
fn run_exits_1_naming(p: &Pipeline, path: &std::path::Path, fix: &str) {
    let agent = p.start();
    let code = agent.wait_exit(Duration::from_secs(30));
    let log = p.log();
    assert_eq!(code, 1, "run should stop: {log}");
    assert!(
        log.contains(&path.display().to_string()) && log.contains(fix),
        "the error names {} and the fix ({fix}): {log}",
        path.display()
    );
    assert!(
        !log.contains("retrying"),
        "a definite error is not retried: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_paths_that_cannot_work_stop_the_agent_with_the_path() {
    let url = common::env().var("CDC_TEST_PG_URL").to_string();
    let files = tempfile::tempdir().unwrap();
    let regular = files.path().join("a-file");
    std::fs::write(&regular, "not a directory").unwrap();
    let jsonl = |path: &std::path::Path| format!("type = \"jsonl\"\npath = \"{}\"", path.display());

    // The jsonl path runs through a regular file (ENOTDIR).
    let under_file = regular.join("out.jsonl");
    let p = Pipeline::with_sink(&url, "enotdir", &[], "", Some(&jsonl(&under_file)));
    run_exits_1_naming(&p, &under_file, "not a directory");

    // The jsonl path is a directory (EISDIR).
    let p = Pipeline::with_sink(&url, "eisdir", &[], "", Some(&jsonl(files.path())));
    run_exits_1_naming(&p, files.path(), "sink.path is a directory");

    // The state dir runs through a regular file.
    let p = Pipeline::new(&url, "badstate", &[], "");
    let text = std::fs::read_to_string(&p.config).unwrap();
    let state = regular.join("state");
    std::fs::write(
        &p.config,
        text.replace(
            &format!("state_dir = \"{}\"", p.dir.path().join("state").display()),
            &format!("state_dir = \"{}\"", state.display()),
        ),
    )
    .unwrap();
    run_exits_1_naming(&p, &state, "agent.state_dir");
}
