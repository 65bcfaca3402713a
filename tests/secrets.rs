//! Secrets from the environment (`${NAME}`) and from files (`${file:/path}`) reach the servers
//! and nothing the agent prints: the log, `status`, `/status`, `/metrics`, `check`, and the
//! errors of a refused login.
mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{http_get, Pipeline, TestDb};

/// The test roles' password (scripts/testenv.sh).
const GOOD_PASSWORD: &str = "secret-pw";
const WRONG_PASSWORD: &str = "wr0ng-s3cret-pw";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn with_user(url: &str, user: &str) -> String {
    url.replace("postgres://postgres@", &format!("postgres://{user}@"))
}

fn assert_hidden(place: &str, output: &str, secret: &str) {
    assert!(!output.is_empty(), "{place}: printed nothing");
    assert!(
        !output.contains(secret),
        "{place} shows the secret {secret}:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_from_the_environment_and_from_files_appear_in_no_output() {
    let db = TestDb::new("secrets").await;
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t OWNER TO cdc_scram; \
         GRANT CREATE ON DATABASE {} TO cdc_scram;",
        db.name
    ))
    .await;
    let secrets = tempfile::tempdir().unwrap();
    let good_file = secrets.path().join("source-password");
    std::fs::write(&good_file, format!("{GOOD_PASSWORD}\n")).unwrap();
    // Every cdc-agent command of this test reads the sink's password from the environment.
    std::env::set_var("CDC_TEST_SECRETS_SINK_PW", GOOD_PASSWORD);
    let source = with_user(
        &db.url,
        &format!("cdc_scram:${{file:{}}}", good_file.display()),
    );
    let sink = format!(
        "type = \"postgres\"\nurl = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 50",
        with_user(&db.url, "cdc_scram:${CDC_TEST_SECRETS_SINK_PW}")
    );
    let p = Pipeline::with_sink(
        &source,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let check = p.run_cmd(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert_hidden("check", &text(&check), GOOD_PASSWORD);

    let log_path = p.dir.path().join("agent.log");
    let agent = common::Agent {
        child: p
            .command(&["run"])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    };
    p.wait_state("streaming", Duration::from_secs(60));
    db.exec("INSERT INTO t VALUES (1, 'one')").await;
    let client = db.client().await;
    common::wait_until("the row in the target", Duration::from_secs(60), || async {
        client
            .query_opt("SELECT 1 FROM replica.t WHERE id = 1", &[])
            .await
            .is_ok_and(|row| row.is_some())
    })
    .await;
    assert_hidden("/status", &http_get(&p.admin, "/status"), GOOD_PASSWORD);
    assert_hidden("/metrics", &http_get(&p.admin, "/metrics"), GOOD_PASSWORD);
    assert_hidden("status", &text(&p.run_cmd(&["status"])), GOOD_PASSWORD);
    assert_hidden(
        "status --json",
        &text(&p.run_cmd(&["status", "--json"])),
        GOOD_PASSWORD,
    );
    assert_eq!(agent.stop(), 0);
    assert_hidden("the debug log", &p.log(), GOOD_PASSWORD);

    // A wrong password, from a file: refused, and named nowhere.
    let wrong_file = secrets.path().join("wrong-password");
    std::fs::write(&wrong_file, WRONG_PASSWORD).unwrap();
    let refused = Pipeline::new(
        &with_user(
            &db.url,
            &format!("cdc_scram:${{file:{}}}", wrong_file.display()),
        ),
        &format!("{}_refused", db.name),
        &["public.t"],
        "snapshot = \"never\"",
    );
    let check = refused.run_cmd(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("password"), "{}", text(&check));
    assert_hidden("check of a refused login", &text(&check), WRONG_PASSWORD);
    let run = refused
        .command(&["run"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert_hidden("a refused login's errors", &text(&run), WRONG_PASSWORD);
    assert_hidden(
        "status after a refused login",
        &text(&refused.run_cmd(&["status", "--json"])),
        WRONG_PASSWORD,
    );
    db.drop().await;
}
