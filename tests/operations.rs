//! What the on-call operator relies on: `/metrics` that parse and count right, an idle slot that
//! does not pin WAL, and dashboards and alert rules that load and name metrics the agent has.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Parses the Prometheus text format strictly enough to catch a malformed line: every sample is
/// `name{label="value",...} number`, every family has HELP and TYPE first.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad TYPE line {line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no TYPE line before it");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line}"
                );
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (key, value) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line}"));
                    assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(!value.trim_end_matches('"').contains('"') || value.contains("\\\""));
                }
            }
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_count_a_known_workload() {
    let (db, p, agent) = common::streaming(
        "metrics",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        &["public.t"],
    )
    .await;
    db.exec(
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 30) g;
         UPDATE t SET v = 'b' WHERE id <= 20;
         DELETE FROM t WHERE id <= 10;",
    )
    .await;
    p.wait_records(60, Duration::from_secs(60));
    let key = |metric: &str, op: &str| {
        format!(
            "{metric}{{pipeline=\"{}\",table=\"public.t\",op=\"{op}\"}}",
            p.name
        )
    };
    // Applied counts move at the flush after the records are written: poll briefly.
    let mut samples = BTreeMap::new();
    for _ in 0..50 {
        samples = parse_metrics(&common::http_get(&p.admin, "/metrics"));
        if samples.get(&key("cdc_changes_applied_total", "delete")) == Some(&10.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (op, n) in [("insert", 30.0), ("update", 20.0), ("delete", 10.0)] {
        assert_eq!(
            samples.get(&key("cdc_changes_read_total", op)),
            Some(&n),
            "read {op}"
        );
        assert_eq!(
            samples.get(&key("cdc_changes_applied_total", op)),
            Some(&n),
            "applied {op}"
        );
    }
    let pipeline = format!("{{pipeline=\"{}\"}}", p.name);
    assert_eq!(samples[&format!("cdc_events_total{pipeline}")], 60.0);
    assert!(samples[&format!("cdc_end_to_end_latency_seconds_count{pipeline}")] >= 1.0);
    assert!(samples[&format!("cdc_checkpoint_age_seconds{pipeline}")] >= 0.0);
    assert_eq!(
        samples[&format!("cdc_transactions_in_flight{pipeline}")],
        0.0
    );
    assert_eq!(samples[&format!("cdc_dlq_size{pipeline}")], 0.0);
    assert_eq!(
        samples[&format!("cdc_state{{pipeline=\"{}\",state=\"streaming\"}}", p.name)],
        1.0
    );
    assert!(samples
        .keys()
        .any(|k| k.starts_with("cdc_build_info{") && k.contains("source=\"postgres\"")));
    assert_eq!(common::http_get(&p.admin, "/healthz"), "ok\n");
    assert_eq!(common::http_get(&p.admin, "/readyz"), "ready\n");
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// The most reported incident with logical replication: a quiet published table while the rest of
/// the database is busy, and the slot keeps all that WAL. The agent confirms the server's WAL end
/// between transactions, so the slot lets it go.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_slot_does_not_hold_wal() {
    let (db, p, agent) = common::streaming(
        "idleslot",
        "CREATE TABLE published (id int PRIMARY KEY); CREATE TABLE busy (id int, pad text);",
        &["public.published"],
    )
    .await;
    let client = db.client().await;
    let wal_now = || async {
        client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = wal_now().await;
    // About 200 MB of WAL in a table the pipeline does not publish.
    for _ in 0..10 {
        client
            .batch_execute(
                "INSERT INTO busy SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 17000) g",
            )
            .await
            .unwrap();
    }
    let retained = || async {
        client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                &[&format!("cdc_{}", p.name)],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let written = wal_now().await - before;
    assert!(
        written > 150 << 20,
        "the workload wrote {written} bytes of WAL"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held = retained().await;
        if held < 1 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot still holds {held} bytes of WAL; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// Every alert rule links its section of docs/runbook.md, and the section exists.
#[test]
fn every_alert_links_its_runbook_section() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("docker/prometheus-alerts.yml")).unwrap();
    let runbook = std::fs::read_to_string(root.join("docs/runbook.md")).unwrap();
    let headings: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    // Each rule's text, from its `- alert:` line to the next.
    let mut alerts = 0;
    for rule in rules.split("- alert: ").skip(1) {
        let name = rule.split_whitespace().next().expect("an alert name");
        let link = format!("runbook_url: \"docs/runbook.md#{}\"", name.to_lowercase());
        assert!(rule.contains(&link), "alert {name} lacks `{link}`");
        assert!(
            headings.contains(&name.to_lowercase()),
            "docs/runbook.md has no section `### {name}`"
        );
        alerts += 1;
    }
    assert!(alerts >= 8, "only {alerts} alert rules found");
}

/// The Grafana dashboard and the alert rules load (JSON, rules via promtool where installed) and
/// name only metrics a running agent exposes.
#[tokio::test(flavor = "multi_thread")]
async fn dashboards_and_alert_rules_load_and_use_real_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_string()
        })
        .collect();
    let rules = std::fs::read_to_string(root.join("prometheus-alerts.yml")).unwrap();
    exprs.push(rules.clone());

    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("prometheus-alerts.yml"))
        .output()
    {
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        // No promtool on this machine: at least the YAML must parse.
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert d['groups'][0]['rules']"])
            .arg(root.join("prometheus-alerts.yml"))
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let (db, p, agent) = common::streaming(
        "dashboards",
        "CREATE TABLE t (id int PRIMARY KEY)",
        &["public.t"],
    )
    .await;
    db.exec("INSERT INTO t VALUES (1)").await;
    p.wait_records(1, Duration::from_secs(60));
    // Every family the agent declares (a per-table family has no sample before the table's first
    // flush), and every series name it has samples for (histogram _bucket/_sum/_count).
    let text = common::http_get(&p.admin, "/metrics");
    parse_metrics(&text);
    let exposed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|r| r.split(' ').next()))
        .map(str::to_string)
        .chain(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(str::to_string),
        )
        .collect();
    for text in &exprs {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("cdc_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposed.contains(&name),
                "{name} is not a metric the agent exposes: {exposed:?}"
            );
            rest = &rest[at + name.len()..];
        }
    }
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// With `heartbeat_interval_ms`, the agent writes its heartbeat message into the source database.
#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_are_written_when_configured() {
    let db = common::TestDb::new("heartbeat").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let p = common::Pipeline::new(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"\nheartbeat_interval_ms = 200",
    );
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    let client = db.client().await;
    common::wait_until("a heartbeat query", Duration::from_secs(20), || async {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE '%pg_logical_emit_message%cdc-agent-heartbeat%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) >= 1)
    })
    .await;
    assert!(!p.log().contains("heartbeat write failed"), "{}", p.log());
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}
