//! Test support: private servers from `scripts/testenv.sh`, a fresh database per test, and the
//! real `cdc-agent` binary driven through its command line and config file, as users drive it.
#![allow(dead_code)]

pub mod mysql;
pub mod proxy;
pub mod verify;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub struct TestEnv {
    pub vars: HashMap<String, String>,
}

/// Starts the private Postgres instances once per test binary.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testenv.sh");
        let start = Command::new("bash")
            .arg(&script)
            .arg("start")
            .status()
            .expect("run testenv.sh");
        assert!(start.success(), "scripts/testenv.sh start failed");
        let out = Command::new("bash")
            .arg(&script)
            .arg("env")
            .output()
            .expect("testenv env");
        let mut vars = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                vars.insert(
                    k.to_string(),
                    v.trim_matches(|c| c == '"' || c == '\'').to_string(),
                );
            }
        }
        TestEnv { vars }
    })
}

impl TestEnv {
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("testenv did not export {name}"))
    }
}

/// A fresh database on the logical instance, dropped (with its slots) at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

impl TestDb {
    pub async fn new(prefix: &str) -> TestDb {
        let admin_url = env().var("CDC_TEST_PG_URL").to_string();
        let name = unique(prefix);
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let (server, _) = admin_url.rsplit_once('/').expect("a URL with a database");
        let url = format!("{server}/{name}");
        TestDb {
            name,
            url,
            admin_url,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    pub async fn exec(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Drops the database's slots and the database; called at the end of each test.
    pub async fn drop(self) {
        let admin = connect(&self.admin_url).await;
        let _ = admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '{0}' AND active_pid IS NOT NULL; \
                 SELECT pg_sleep(0.2); \
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{0}'; \
                 DROP DATABASE IF EXISTS {0} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline: its config file, state dir and output in a temp dir.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub output: PathBuf,
    pub admin: String,
    pub name: String,
}

impl Pipeline {
    /// `source_extra` is added to the `[source]` table (e.g. `snapshot = "never"`).
    pub fn new(db_url: &str, name: &str, tables: &[&str], source_extra: &str) -> Pipeline {
        Pipeline::with_sink(db_url, name, tables, source_extra, None)
    }

    /// `sink` replaces the jsonl `[sink]` table (its lines, without the header).
    pub fn with_sink(
        db_url: &str,
        name: &str,
        tables: &[&str],
        source_extra: &str,
        sink: Option<&str>,
    ) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let admin = format!("127.0.0.1:{}", free_port());
        let tables = tables
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "[agent]\nname = \"{name}\"\nstate_dir = \"{state}\"\nadmin_addr = \"{admin}\"\n\n\
             [source]\ntype = \"{kind}\"\nurl = \"{db_url}\"\ntables = [{tables}]\n{source_extra}\n\n\
             [sink]\n{sink}\n",
            state = dir.path().join("state").display(),
            kind = if db_url.starts_with("mysql://") { "mysql" } else { "postgres" },
            sink = sink.map(str::to_string).unwrap_or_else(|| format!(
                "type = \"jsonl\"\npath = \"{}\"\nflush_interval_ms = 50",
                output.display()
            )),
        );
        let config = dir.path().join("cdc-agent.toml");
        std::fs::File::create(&config)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        Pipeline {
            dir,
            config,
            output,
            admin,
            name: name.to_string(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdc-agent"));
        cmd.arg("-c").arg(&self.config).args(args);
        cmd
    }

    /// Runs a short command (check, status, reset) to completion.
    pub fn run_cmd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cdc-agent")
    }

    pub fn start(&self) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = self
            .command(&["run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cdc-agent run");
        Agent { child }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The records written so far (complete lines only).
    pub fn records(&self) -> Vec<Json> {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        text.lines()
            .filter(|l| l.ends_with('}'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
            .collect()
    }

    /// Waits until at least `n` records are in the output.
    pub fn wait_records(&self, n: usize, timeout: Duration) -> Vec<Json> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            if records.len() >= n {
                return records;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {n} records, have {}; log:\n{}",
                    records.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `status --json` reports `state`.
    pub fn wait_state(&self, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status_json();
            if status["state"] == state {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for state {state}; status {status}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `status --json`; exit 3 (`never_ran`: the agent was just started and has not answered
    /// yet) is a reading too.
    pub fn status_json(&self) -> Json {
        let out = self.run_cmd(&["status", "--json"]);
        assert!(
            out.status.success() || out.status.code() == Some(3),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }
}

pub struct Agent {
    pub child: Child,
}

/// A test that fails half-way must not leave its agent running (and streaming) behind it.
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Agent {
    /// SIGKILL, and reap it (what dropping does).
    pub fn kill9(self) {
        drop(self);
    }

    /// SIGTERM, then waits for the exit code.
    pub fn stop(self) -> i32 {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the agent to exit on its own.
    pub fn wait_exit(mut self, timeout: Duration) -> i32 {
        self.wait_exit_mut(timeout)
    }

    fn wait_exit_mut(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes the ledger workload into `ledger (id bigint PRIMARY KEY, tx int, v int)` in the
/// background: per transaction `rows` inserts, 300 updates (`rows` ≥ 300), the rest deleted, with
/// a pause between transactions.
pub fn spawn_ledger_writer(
    url: String,
    transactions: i64,
    rows: i64,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = connect(&url).await;
        for tx in 0..transactions {
            let base = tx * rows;
            c.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO ledger SELECT {base} + g, {tx}, 0 FROM generate_series(1, {rows}) g;
                 UPDATE ledger SET v = 1 WHERE id > {base} AND id <= {base} + 300;
                 DELETE FROM ledger WHERE id > {base} + 300;
                 COMMIT;"
            ))
            .await
            .unwrap();
            tokio::time::sleep(pause).await;
        }
    })
}

/// The ledger workload ([`spawn_ledger_writer`], 500 rows a transaction) written into `db_url`
/// while the pipeline's agent is SIGKILLed `kills` times, each 300 to 300 + `spread_ms` ms after
/// the last start; returns the agent running at the end, once every transaction is committed.
pub async fn ledger_under_kills(
    p: &Pipeline,
    agent: Agent,
    db_url: &str,
    transactions: i64,
    pause: Duration,
    kills: usize,
    spread_ms: u64,
) -> Agent {
    let writer = spawn_ledger_writer(db_url.to_string(), transactions, 500, pause);
    let agent = kill_at_random_moments(p, agent, kills, 300, spread_ms).await;
    writer.await.unwrap();
    agent
}

/// Pseudo-random moments for SIGKILL tests: each `wait` sleeps between `min_ms` and
/// `min_ms + spread_ms`, seeded by the process id so that runs hit different moments.
pub struct RandomMoments {
    seed: u64,
    min_ms: u64,
    spread_ms: u64,
}

impl RandomMoments {
    pub fn new(min_ms: u64, spread_ms: u64) -> Self {
        RandomMoments {
            seed: std::process::id() as u64,
            min_ms,
            spread_ms,
        }
    }

    pub async fn wait(&mut self) {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = self.min_ms + (self.seed >> 33) % self.spread_ms.max(1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// SIGKILLs the pipeline's agent `kills` times at random moments (see [`RandomMoments`]),
/// restarting it each time; returns the agent running after the last restart.
pub async fn kill_at_random_moments(
    p: &Pipeline,
    mut agent: Agent,
    kills: usize,
    min_ms: u64,
    spread_ms: u64,
) -> Agent {
    let mut moments = RandomMoments::new(min_ms, spread_ms);
    for _ in 0..kills {
        moments.wait().await;
        agent.kill9();
        agent = p.start();
    }
    agent
}

/// A fresh database with `schema_sql` applied, and a pipeline (no snapshot) of `table` into the
/// sink that `sink` describes for the database's name (message sinks name their stream, topic or
/// subject prefix after it).
pub async fn pipeline_into(
    prefix: &str,
    schema_sql: &str,
    table: &str,
    sink: impl FnOnce(&str) -> String,
) -> (TestDb, Pipeline) {
    let db = TestDb::new(prefix).await;
    db.exec(schema_sql).await;
    let sink = sink(&db.name);
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &[table],
        "snapshot = \"never\"",
        Some(&sink),
    );
    (db, p)
}

/// `cdc-agent check` of a pipeline of `table` in `db` into the sink `sink` describes: the exit
/// code and what it printed.
pub fn run_check(db: &TestDb, table: &str, sink: &str) -> (Option<i32>, String) {
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &[table],
        "snapshot = \"never\"",
        Some(sink),
    );
    let out = p.run_cmd(&["check"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Starts the pipeline's agent and waits until it streams.
pub fn start_streaming(p: &Pipeline) -> Agent {
    let agent = p.start();
    p.wait_state("streaming", Duration::from_secs(60));
    agent
}

/// A fresh database with `schema` applied and an agent streaming its `tables` (no snapshot).
pub async fn streaming(prefix: &str, schema: &str, tables: &[&str]) -> (TestDb, Pipeline, Agent) {
    let db = TestDb::new(prefix).await;
    db.exec(schema).await;
    let p = Pipeline::new(&db.url, &db.name, tables, "snapshot = \"never\"");
    let agent = p.start();
    // `streaming` is reported once START_REPLICATION succeeded: from then on every commit is in
    // the stream. (The slot shows `active` earlier, while it is still being created.)
    p.wait_state("streaming", Duration::from_secs(60));
    (db, p, agent)
}

/// Waits for a condition, polling; panics with `what` after the deadline.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (lsn as u64, seq) of a record, for order checks.
pub fn order_key(record: &Json) -> (u64, u64) {
    let lsn = record["source"]["lsn"].as_str().unwrap();
    let (hi, lo) = lsn.split_once('/').unwrap();
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    (lsn, record["source"]["seq"].as_u64().unwrap())
}

/// GET `path` from the agent's admin endpoint; the body of a 200 response.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("admin endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_string()
}
