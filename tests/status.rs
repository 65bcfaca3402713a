//! What `status`, `/readyz` and `/metrics` say at the moments that matter: the instant streaming
//! starts, a source or a target outage, a restart during one, and a pipeline that never ran.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{Pipeline, TestDb};
use serde_json::{json, Value as Json};

/// The port of the logical Postgres instance (proxies stand in front of it).
fn pg_port() -> String {
    let url = common::env().var("CDC_TEST_PG_URL");
    let (_, rest) = url.rsplit_once(':').expect("a URL with a port");
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// One GET to the agent's admin endpoint: the status code and body, `None` while nothing answers.
fn admin_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The running agent's `/status`, `None` while its endpoint does not answer.
fn live_status(p: &Pipeline) -> Option<Json> {
    let (code, body) = admin_get(&p.admin, "/status")?;
    (code == 200).then(|| serde_json::from_str(&body).expect("/status is JSON"))
}

/// Polls `status --json` until `ok` holds; returns that reading.
fn wait_status(p: &Pipeline, what: &str, timeout: Duration, ok: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + timeout;
    loop {
        let status = p.status_json();
        if ok(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status {status}; log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inserts a row into `t` every 20 ms until dropped.
fn spawn_trickle(url: String, first_id: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = common::connect(&url).await;
        for id in first_id.. {
            c.execute("INSERT INTO t VALUES ($1)", &[&id])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Defect 3: once a change is in the output, `status` and `/readyz` (asked afterwards) already say
/// the pipeline streams. A writer commits every 20 ms from before the agent starts, so the first
/// change arrives within moments of the source being positioned; three starts (the first creates
/// the slot, the others resume from the checkpoint).
#[tokio::test(flavor = "multi_thread")]
async fn streaming_is_reported_before_the_first_change_is_delivered() {
    let db = TestDb::new("st_ready").await;
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY)").await;
    let p = Pipeline::new(&db.url, &db.name, &["public.t"], "snapshot = \"never\"");
    let writer = spawn_trickle(db.url.clone(), 1);
    for start in 0..3 {
        let delivered_before = p.records().len();
        let agent = p.start();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The file first, then the agent: the state is read after the change was seen.
            let delivered = p.records().len();
            let status = live_status(&p);
            let ready = admin_get(&p.admin, "/readyz").map(|(code, _)| code);
            if delivered > delivered_before {
                let status = status.expect("the agent answers while it delivers");
                assert_eq!(
                    status["state"],
                    json!("streaming"),
                    "start {start}: a change was delivered while status said {status}"
                );
                assert_eq!(
                    ready,
                    Some(200),
                    "start {start}: /readyz refused while changes were delivered"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "start {start}: nothing delivered; log:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(agent.stop(), 0);
    }
    writer.abort();
    db.drop().await;
}

/// Defect 6, source side: while the source cannot be asked, `lag_bytes` is unknown (null, no
/// `cdc_lag_bytes` sample, `cdc_source_up` 0), never 0, and freshness keeps growing; after the
/// source is back, both are read again.
#[tokio::test(flavor = "multi_thread")]
async fn during_a_source_outage_lag_bytes_is_unknown_and_freshness_grows() {
    let db = TestDb::new("st_srcdown").await;
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY)").await;
    let (proxy, proxied) = Proxy::in_front_of(&db.url, &pg_port()).await;
    let p = Pipeline::new(&proxied, &db.name, &["public.t"], "snapshot = \"never\"");
    let agent = common::start_streaming(&p);
    db.exec("INSERT INTO t SELECT generate_series(1, 10)").await;
    p.wait_records(10, Duration::from_secs(30));
    wait_status(&p, "caught up", Duration::from_secs(30), |s| {
        s["lag_seconds"] == json!(0.0) && s["lag_bytes"].is_u64()
    });

    proxy.take_down();
    // The source goes on committing while the agent cannot reach it.
    let writer = spawn_trickle(db.url.clone(), 1000);
    p.wait_state("retrying", Duration::from_secs(30));
    // Within a refresh (a second, plus the time it takes to find the source silent), the
    // distance is unknown.
    let first = wait_status(&p, "lag_bytes to be unknown", Duration::from_secs(5), |s| {
        s["lag_bytes"].is_null()
    });
    assert_eq!(first["source_reachable"], json!(false), "{first}");
    let mut previous = first["lag_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("lag_seconds is known during the outage: {first}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = p.status_json();
        assert_eq!(
            s["lag_bytes"],
            Json::Null,
            "lag_bytes while unreachable: {s}"
        );
        assert!(
            s["source_position"].is_string(),
            "the last known position: {s}"
        );
        let lag = s["lag_seconds"].as_f64().expect("lag_seconds");
        assert!(
            lag >= previous,
            "freshness went back from {previous} to {lag}: {s}"
        );
        previous = lag;
        if lag >= first["lag_seconds"].as_f64().unwrap_or(0.0) + 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "freshness stopped growing: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let metrics = common::http_get(&p.admin, "/metrics");
    assert!(
        !metrics.lines().any(|l| l.starts_with("cdc_lag_bytes{")),
        "no cdc_lag_bytes sample while the source is unreachable:\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cdc_source_up{") && l.ends_with(" 0")),
        "cdc_source_up 0:\n{metrics}"
    );
    let human = String::from_utf8_lossy(&p.run_cmd(&["status"]).stdout).into_owned();
    assert!(
        human.contains("unknown (source unreachable)") && human.contains("last known"),
        "{human}"
    );

    proxy.bring_back();
    wait_status(
        &p,
        "the source to be read again",
        Duration::from_secs(60),
        |s| s["state"] == json!("streaming") && s["lag_bytes"].is_u64(),
    );
    writer.abort();
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// The current WAL position of the server, in bytes.
async fn wal_lsn(db: &TestDb) -> u64 {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

/// Defect 6, target side: with the Postgres target unreachable the source still answers, so
/// `lag_bytes` follows the source's position, at every reading, while it keeps writing.
#[tokio::test(flavor = "multi_thread")]
async fn during_a_target_outage_lag_bytes_follows_the_source() {
    let src = TestDb::new("st_dstdown_src").await;
    let dst = TestDb::new("st_dstdown_dst").await;
    src.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)")
        .await;
    let (proxy, proxied) = Proxy::in_front_of(&dst.url, &pg_port()).await;
    let sink = format!(
        "type = \"postgres\"\nurl = \"{proxied}\"\nschema = \"replica\"\nflush_interval_ms = 50"
    );
    let p = Pipeline::with_sink(
        &src.url,
        &src.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&sink),
    );
    let agent = common::start_streaming(&p);
    src.exec("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
        .await;
    wait_status(&p, "100 changes applied", Duration::from_secs(60), |s| {
        s["events_total"] == json!(100) && s["lag_bytes"].is_u64()
    });

    proxy.take_down();
    // The sink finds out when it next writes.
    src.exec("INSERT INTO t VALUES (101, 'b')").await;
    p.wait_state("retrying", Duration::from_secs(30));
    // Nothing is confirmed while the target is down: the confirmed position is before `before`,
    // so every reading from now on trails by at least what is written next.
    let before = wal_lsn(&src).await;
    src.exec("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(102, 3101) g")
        .await;
    let written = wal_lsn(&src).await - before;
    assert!(written > 100_000, "the insert wrote {written} bytes of WAL");
    let followed = |s: &Json| s["lag_bytes"].as_u64().is_some_and(|b| b >= written);
    wait_status(
        &p,
        "lag_bytes to follow the source",
        Duration::from_secs(10),
        followed,
    );
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let s = p.status_json();
        assert!(
            followed(&s),
            "lag_bytes must follow the source ({written} bytes written): {s}"
        );
        assert!(s["lag_seconds"].as_f64().is_some_and(|l| l > 0.0), "{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(p.status_json()["source_reachable"], json!(true));

    proxy.bring_back();
    wait_status(&p, "caught up again", Duration::from_secs(60), |s| {
        s["events_total"] == json!(3101)
    });
    assert_eq!(agent.stop(), 0);
    src.drop().await;
    dst.drop().await;
}

/// Defect 7: an agent started while the source is unreachable shows what the state store knows
/// from its first answer: the checkpoint, the last commit, the source's last known position and
/// the freshness; `lag_bytes` unknown.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_during_a_source_outage_shows_the_checkpoint_at_once() {
    let db = TestDb::new("st_restart").await;
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY)").await;
    let (proxy, proxied) = Proxy::in_front_of(&db.url, &pg_port()).await;
    let p = Pipeline::new(&proxied, &db.name, &["public.t"], "snapshot = \"never\"");
    let agent = common::start_streaming(&p);
    db.exec("INSERT INTO t SELECT generate_series(1, 10)").await;
    p.wait_records(10, Duration::from_secs(30));
    wait_status(&p, "a checkpoint", Duration::from_secs(30), |s| {
        s["events_total"] == json!(10)
            && s["confirmed_position"].is_string()
            && s["last_commit_ts"].is_string()
            && s["source_position"].is_string()
    });
    assert_eq!(agent.stop(), 0);
    let stopped = p.status_json();
    assert!(stopped["last_commit_ts"].is_string(), "{stopped}");

    proxy.take_down();
    let agent = p.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(status) = live_status(&p) {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent never answered");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        first["confirmed_position"], stopped["confirmed_position"],
        "{first}"
    );
    assert_eq!(
        first["last_commit_ts"], stopped["last_commit_ts"],
        "{first}"
    );
    assert_eq!(first["events_total"], json!(10), "{first}");
    assert!(first["source_position"].is_string(), "{first}");
    assert!(first["source_position_at"].is_string(), "{first}");
    assert!(first["lag_seconds"].as_f64().is_some(), "{first}");
    assert_ne!(first["lag_bytes"], json!(0), "{first}");

    // Once it has tried the source: unreachable, lag_bytes unknown, the rest still shown.
    let down = wait_status(
        &p,
        "the source to be found unreachable",
        Duration::from_secs(30),
        |s| s["source_reachable"] == json!(false),
    );
    assert_eq!(down["lag_bytes"], Json::Null, "{down}");
    assert_eq!(down["confirmed_position"], stopped["confirmed_position"]);
    assert_eq!(down["source_position"], first["source_position"]);
    assert!(down["lag_seconds"].as_f64().is_some(), "{down}");
    proxy.bring_back();
    p.wait_state("streaming", Duration::from_secs(60));
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

/// Defect 9: `status` of a pipeline that never ran is a state of its own, exits 3 (not 0 as a
/// stopped agent does) and says what to do; after a run it is `stopped` and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn status_of_a_pipeline_that_never_ran_says_so() {
    let db = TestDb::new("st_never").await;
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY)").await;
    let p = Pipeline::new(&db.url, &db.name, &["public.t"], "snapshot = \"never\"");
    let out = p.run_cmd(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "never_ran exits 3");
    let status: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], json!("never_ran"), "{status}");
    let out = p.run_cmd(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let human = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        human.contains("never_ran")
            && human.contains("has never run")
            && human.contains(&format!("cdc-agent run -c {}", p.config.display()))
            && human.contains("agent.state_dir"),
        "{human}"
    );
    assert!(
        !p.dir.path().join("state").exists(),
        "status must not create the state store"
    );

    let agent = common::start_streaming(&p);
    assert_eq!(agent.stop(), 0);
    let out = p.run_cmd(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], json!("stopped"), "{status}");

    // The same state dir under another pipeline name (a typo in agent.name): never ran either.
    let text = std::fs::read_to_string(&p.config).unwrap();
    let other = p.dir.path().join("other.toml");
    std::fs::write(
        &other,
        text.replace(&format!("name = \"{}\"", db.name), "name = \"typo\""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-agent"))
        .arg("-c")
        .arg(&other)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    db.drop().await;
}
