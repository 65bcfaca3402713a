//! Verify run by the agent: `cdc-agent verify` of a DuckDB target while the agent holds the file
//! (the agent compares in its own process, through its sink's open database) while a writer
//! writes, `--repair` there; and `agent.verify_interval`, whose results show in `status` and
//! `/metrics` without anyone running verify. Against the private Postgres of `testenv.sh`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::verify::{different, keys, spawn_churn, spawn_churn_from, table, verify_while_writing};
use common::{Pipeline, TestDb};
use serde_json::Value as Json;

/// `ledger` rows 1..=25,000: the churn writer touches the first 20,000 (and new keys from
/// 1,000,000), so the rows above 20,000 are where tampering stays put.
const LEDGER: &str = "CREATE TABLE ledger (id bigint PRIMARY KEY, tx int, v int)";
const LEDGER_ROWS: &str = "INSERT INTO ledger SELECT g, g % 7, g FROM generate_series(1, 25000) g";

/// Deletes 20777, changes `v` of 21777 and sets `tx` NULL in 22777, adds 500000.
const TAMPER: &str = "DELETE FROM replica.ledger WHERE id = 20777;
     UPDATE replica.ledger SET v = 0 WHERE id = 21777;
     UPDATE replica.ledger SET tx = NULL WHERE id = 22777;
     INSERT INTO replica.ledger VALUES (500000, 0, 0);";

fn assert_tampered(report: &Json) {
    let t = table(report, "public.ledger");
    assert_eq!(keys(&t["missing_keys"], "id"), ["20777"], "{t:#}");
    assert_eq!(keys(&t["extra_keys"], "id"), ["500000"], "{t:#}");
    assert_eq!(
        different(t, "id"),
        [
            ("21777".to_string(), vec!["v".to_string()]),
            ("22777".to_string(), vec!["tx".to_string()])
        ],
        "{t:#}"
    );
}

#[cfg(feature = "duckdb")]
fn duckdb_pipeline(src: &TestDb, path: &std::path::Path, agent_extra: &str) -> Pipeline {
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.ledger"],
        "snapshot = \"never\"",
        Some(&format!(
            "type = \"duckdb\"\npath = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 50",
            path.display()
        )),
    );
    if !agent_extra.is_empty() {
        let text = std::fs::read_to_string(&p.config).unwrap();
        let text = text.replacen("[agent]\n", &format!("[agent]\n{agent_extra}\n"), 1);
        std::fs::write(&p.config, text).unwrap();
    }
    p
}

/// Waits until every row of the ledger load is durable in the target.
fn wait_loaded(p: &Pipeline) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while p.status_json()["events_total"].as_u64() < Some(25_000) {
        assert!(
            std::time::Instant::now() < deadline,
            "the rows never arrived: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(feature = "duckdb")]
fn tamper_duckdb(path: &std::path::Path) {
    let duck = cdc_sink_duckdb::duckdb::Connection::open(path).unwrap();
    duck.execute_batch(TAMPER).unwrap();
}

#[cfg(feature = "duckdb")]
#[tokio::test(flavor = "multi_thread")]
async fn duckdb_verify_runs_in_the_running_agent_while_a_writer_writes() {
    let src = TestDb::new("vadsrc").await;
    src.exec(LEDGER).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.duckdb");
    let p = duckdb_pipeline(&src, &path, "");
    let agent = common::start_streaming(&p);
    src.exec(LEDGER_ROWS).await;
    wait_loaded(&p);

    // In sync, while a writer writes: equal.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_churn(src.url.clone(), stop.clone());
    let (code, report) = verify_while_writing(&p, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["agent"], "running");
    let t = table(&report, "public.ledger");
    assert!(t["rows_compared"].as_u64().unwrap() > 24_000, "{t:#}");
    // Usage errors come back from the agent as they do from the command.
    let out = p.run_cmd(&["verify", "public.nope"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of the pipeline's tables"));
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() > 10, "the writer kept writing");

    // Tampered with while the agent is stopped (nothing else may open the file while it runs).
    assert_eq!(agent.stop(), 0);
    tamper_duckdb(&path);
    let agent = common::start_streaming(&p);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_churn_from(src.url.clone(), stop.clone(), 2_000_000);
    let (code, report) = verify_while_writing(&p, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_tampered(&report);
    assert_eq!(
        report["divergent_rows"], 4,
        "exactly the tampered rows: {report:#}"
    );

    // --repair in the agent: the extra row deleted through the sink's database, the rest copied
    // again; then verified, while the writer goes on.
    let (code, report) = verify_while_writing(&p, &["--repair"]).await;
    let repair = &table(&report, "public.ledger")["repair"];
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
    let (code, report) = verify_while_writing(&p, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // The agent kept the results.
    let status = p.status_json();
    assert_eq!(status["state"], "streaming", "{status:#}");
    let ledger = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.ledger")
        .unwrap();
    assert_eq!(ledger["last_verify"]["status"], "equal", "{status:#}");
    drop(agent);
    src.drop().await;
}

/// `last_verify` of `public.ledger` in `status --json`, once `ready` holds for it.
async fn wait_last_verify(p: &Pipeline, what: &str, ready: impl Fn(&Json) -> bool) -> Json {
    let mut last = Json::Null;
    common::wait_until(what, Duration::from_secs(90), || {
        let status = p.status_json();
        last = status["tables"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["table"] == "public.ledger"))
            .map(|t| t["last_verify"].clone())
            .unwrap_or(Json::Null);
        let ok = ready(&last);
        async move { ok }
    })
    .await;
    last
}

fn metric(p: &Pipeline, line_start: &str) -> Option<String> {
    common::http_get(&p.admin, "/metrics")
        .lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
}

/// A DuckDB target, verified by the agent every second: equal, then (tampered with while the
/// agent was stopped) the divergent rows, in status and metrics.
#[cfg(feature = "duckdb")]
#[tokio::test(flavor = "multi_thread")]
async fn verify_interval_records_results_in_status_and_metrics() {
    let src = TestDb::new("vaisrc").await;
    src.exec(LEDGER).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.duckdb");
    let p = duckdb_pipeline(&src, &path, "verify_interval = \"1s\"");
    let agent = common::start_streaming(&p);
    src.exec(LEDGER_ROWS).await;
    wait_loaded(&p);
    let equal = wait_last_verify(&p, "a periodic verify of every row, equal", |v| {
        v["status"] == "equal" && v["rows_compared"] == 25_000
    })
    .await;
    assert_eq!(equal["divergent_rows"], 0, "{equal:#}");
    let table_metric = format!(
        "cdc_verify_divergent_rows{{pipeline=\"{}\",table=\"public.ledger\"}}",
        p.name
    );
    assert_eq!(metric(&p, &table_metric).as_deref(), Some("0"));
    let stamp = metric(&p, "cdc_verify_last_run_timestamp{")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(stamp > 1.7e9, "{stamp}");
    assert!(
        p.log().contains("periodic verify: every table equal"),
        "{}",
        p.log()
    );
    assert_eq!(agent.stop(), 0);

    tamper_duckdb(&path);
    let agent = common::start_streaming(&p);
    let divergent = wait_last_verify(&p, "a periodic verify naming the tampered rows", |v| {
        v["status"] == "different"
    })
    .await;
    assert_eq!(
        (
            divergent["divergent_rows"].as_u64(),
            divergent["missing"].as_u64(),
            divergent["extra"].as_u64(),
            divergent["different"].as_u64()
        ),
        (Some(4), Some(1), Some(1), Some(2)),
        "{divergent:#}"
    );
    assert_eq!(metric(&p, &table_metric).as_deref(), Some("4"));
    assert!(
        p.log()
            .contains("periodic verify: source and target differ"),
        "{}",
        p.log()
    );
    assert_eq!(p.status_json()["state"], "streaming");
    drop(agent);
    src.drop().await;
}

/// A Postgres target, verified every second: a table that cannot be compared (dropped in the
/// target) is recorded as an error; the pipeline goes on streaming.
#[tokio::test(flavor = "multi_thread")]
async fn a_periodic_verify_that_fails_is_recorded_and_the_pipeline_goes_on() {
    let src = TestDb::new("vaesrc").await;
    let dst = TestDb::new("vaedst").await;
    src.exec(LEDGER).await;
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.ledger"],
        "snapshot = \"never\"",
        Some(&format!(
            "type = \"postgres\"\nurl = \"{}\"\nschema = \"replica\"\nflush_interval_ms = 50",
            dst.url
        )),
    );
    let text = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(
        &p.config,
        text.replacen("[agent]\n", "[agent]\nverify_interval = \"1s\"\n", 1),
    )
    .unwrap();
    let agent = common::start_streaming(&p);
    src.exec(LEDGER_ROWS).await;
    wait_loaded(&p);
    dst.exec(TAMPER).await;
    let divergent = wait_last_verify(&p, "the tampered rows counted", |v| {
        v["status"] == "different" && v["divergent_rows"] == 4
    })
    .await;
    assert_eq!(divergent["rows_compared"], 25_000, "{divergent:#}");
    dst.exec("DROP TABLE replica.ledger").await;
    let failed = wait_last_verify(&p, "the error recorded", |v| v["status"] == "error").await;
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist on the target")),
        "{failed:#}"
    );
    assert!(p.log().contains("could not be compared"), "{}", p.log());
    assert_eq!(p.status_json()["state"], "streaming");
    drop(agent);
    src.drop().await;
    dst.drop().await;
}
