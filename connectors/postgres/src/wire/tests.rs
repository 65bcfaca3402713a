//! Integration tests against the private instances of `scripts/testenv.sh` (never the
//! machine's own Postgres):
//!
//! ```sh
//! scripts/testenv.sh start && eval "$(scripts/testenv.sh env)" && cargo test -p cdc-postgres wire
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{ConnectParams, Connection, SslMode, WireError};

const PASSWORD: &str = "secret-pw";
const GUCS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

// ---- against scripts/testenv.sh ------------------------------------------------------

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set. These tests need the private test Postgres: run \
             `scripts/testenv.sh start && eval \"$(scripts/testenv.sh env)\"` first"
        )
    })
}

pub(super) fn ca_path() -> PathBuf {
    PathBuf::from(env("CDC_TEST_PG_CA"))
}

/// The testenv's base dir: ca.crt lives there, next to wrong-ca.crt, server.crt and sock/.
pub(super) fn testenv_dir() -> PathBuf {
    ca_path()
        .parent()
        .expect("CDC_TEST_PG_CA has a parent directory")
        .to_path_buf()
}

pub(super) fn wrong_ca_path() -> PathBuf {
    std::env::var("CDC_TEST_PG_WRONG_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| testenv_dir().join("wrong-ca.crt"))
}

/// The logical instance as `user`, plaintext unless changed.
fn params(user: &str, password: Option<&str>) -> ConnectParams {
    let mut p = ConnectParams::from_url(&env("CDC_TEST_PG_URL")).expect("CDC_TEST_PG_URL");
    p.user = user.into();
    p.password = password.map(String::from);
    p.sslmode = SslMode::Disable;
    p.connect_timeout = Duration::from_secs(20);
    p
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn whoami(conn: &mut Connection) -> (String, bool) {
    let r = conn
        .simple_query(
            "SELECT current_user AS u, coalesce((SELECT ssl FROM pg_stat_ssl \
             WHERE pid = pg_backend_pid()), false)::text AS ssl",
        )
        .await
        .unwrap();
    (
        r.get(0, "u").unwrap().to_string(),
        r.get(0, "ssl") == Some("true"),
    )
}

#[tokio::test]
async fn trust_query_and_startup_options() {
    let mut conn = Connection::connect(&params("postgres", None), false, GUCS)
        .await
        .unwrap();
    assert!(!conn.is_tls());
    assert!(conn.server_parameter("server_version").is_some());
    assert_eq!(conn.server_parameter("TimeZone"), Some("UTC"));
    assert_eq!(conn.server_parameter("client_encoding"), Some("UTF8"));
    assert_eq!(conn.server_parameter("IntervalStyle"), Some("iso_8601"));
    assert!(conn
        .server_parameter("DateStyle")
        .unwrap()
        .starts_with("ISO"));

    let r = conn
        .simple_query(
            "SELECT 1 AS one, NULL::text AS n, 'héllo' AS s, pg_backend_pid()::text AS pid, \
             current_setting('bytea_output') AS bo, current_setting('extra_float_digits') AS efd",
        )
        .await
        .unwrap();
    assert_eq!(r.columns, ["one", "n", "s", "pid", "bo", "efd"]);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.get(0, "one"), Some("1"));
    assert_eq!(r.get(0, "n"), None);
    assert_eq!(r.rows[0][1], None);
    assert_eq!(r.get(0, "s"), Some("héllo"));
    assert_eq!(
        r.get(0, "pid"),
        Some(conn.backend_pid().to_string().as_str())
    );
    assert_eq!(r.get(0, "bo"), Some("hex"));
    assert_eq!(r.get(0, "efd"), Some("3"));
    assert_eq!(r.get(1, "one"), None);
    assert_eq!(r.get(0, "nope"), None);

    // Last result set of several statements; empty query; many rows (several reads).
    let r = conn
        .simple_query("SELECT 1 AS a; SELECT 2 AS b, 3 AS c")
        .await
        .unwrap();
    assert_eq!(r.columns, ["b", "c"]);
    assert_eq!(r.get(0, "c"), Some("3"));
    let r = conn.simple_query("").await.unwrap();
    assert!(r.columns.is_empty() && r.rows.is_empty());
    let r = conn
        .simple_query("SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 5000) g")
        .await
        .unwrap();
    assert_eq!(r.rows.len(), 5000);
    assert_eq!(r.get(4999, "g"), Some("5000"));

    // An SQL error carries the SQLSTATE and leaves the connection usable.
    let e = conn
        .simple_query("SELECT * FROM no_such_table_xyz")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("42P01"), "{e}");
    assert!(!e.is_connection_error());
    assert!(e.to_string().starts_with("ERROR 42P01: relation"), "{e}");
    // A notice does not disturb the result.
    let r = conn
        .simple_query("DO $$ BEGIN RAISE NOTICE 'hi'; END $$; SELECT 'after' AS x")
        .await
        .unwrap();
    assert_eq!(r.get(0, "x"), Some("after"));
    // COPY is refused without breaking the connection.
    assert!(conn.simple_query("COPY (SELECT 1) TO STDOUT").await.is_ok());
    let e = conn
        .simple_query("CREATE TEMP TABLE t(x int); COPY t FROM STDIN")
        .await;
    assert_eq!(e.unwrap_err().sqlstate(), Some("57014"));
    let r = conn.simple_query("SELECT 'still fine' AS x").await.unwrap();
    assert_eq!(r.get(0, "x"), Some("still fine"));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn terminated_backend_reports_admin_shutdown() {
    for sslmode in [SslMode::Disable, SslMode::Require] {
        let mut p = params("postgres", None);
        p.sslmode = sslmode;
        let mut victim = Connection::connect(&p, false, &[]).await.unwrap();
        let mut admin = Connection::connect(&params("postgres", None), false, &[])
            .await
            .unwrap();
        admin
            .simple_query(&format!(
                "SELECT pg_terminate_backend({}, 5000)",
                victim.backend_pid()
            ))
            .await
            .unwrap();
        let e = victim.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(e.sqlstate(), Some("57P01"), "{sslmode}: {e:?}");
        assert!(e.is_connection_error());
        admin.close().await.unwrap();
    }
}

#[tokio::test]
async fn scram_right_and_wrong_password() {
    let mut conn = Connection::connect(&params("cdc_scram", Some(PASSWORD)), false, &[])
        .await
        .unwrap();
    assert_eq!(whoami(&mut conn).await.0, "cdc_scram");
    conn.close().await.unwrap();

    let e = Connection::connect(&params("cdc_scram", Some("wrong")), false, &[])
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("28P01"), "{e}");
    assert!(!e.is_connection_error());

    let e = Connection::connect(&params("cdc_scram", None), false, &[])
        .await
        .unwrap_err();
    match &e {
        WireError::Auth(msg) => assert!(msg.contains("source.url"), "{msg}"),
        other => panic!("expected Auth error, got {other:?}"),
    }
}

#[tokio::test]
async fn scram_over_tls() {
    // Over TLS the server also offers SCRAM-SHA-256-PLUS; we must pick plain SCRAM.
    let mut p = params("cdc_scram", Some(PASSWORD));
    p.sslmode = SslMode::Require;
    let mut conn = Connection::connect(&p, false, &[]).await.unwrap();
    assert!(conn.is_tls());
    assert_eq!(whoami(&mut conn).await, ("cdc_scram".into(), true));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn md5_and_cleartext() {
    for user in ["cdc_md5", "cdc_plain"] {
        let mut conn = Connection::connect(&params(user, Some(PASSWORD)), false, &[])
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(whoami(&mut conn).await.0, user);
        conn.close().await.unwrap();
        let e = Connection::connect(&params(user, Some("wrong")), false, &[])
            .await
            .unwrap_err();
        assert_eq!(e.sqlstate(), Some("28P01"), "{user}: {e}");
    }
}

#[tokio::test]
async fn tls_require_and_prefer() {
    for mode in [SslMode::Require, SslMode::Prefer] {
        let mut p = params("postgres", None);
        p.sslmode = mode;
        let mut conn = Connection::connect(&p, false, &[]).await.unwrap();
        assert!(conn.is_tls(), "{mode}");
        assert_eq!(whoami(&mut conn).await, ("postgres".into(), true));
        conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn tls_verify_full_and_ca() {
    for (mode, host) in [
        (SslMode::VerifyFull, "127.0.0.1"),
        (SslMode::VerifyFull, "localhost"),
        (SslMode::VerifyCa, "127.0.0.1"),
    ] {
        let mut p = params("postgres", None);
        p.host = host.into();
        p.sslmode = mode;
        p.sslrootcert = Some(ca_path());
        let mut conn = Connection::connect(&p, false, &[])
            .await
            .unwrap_or_else(|e| panic!("{mode} {host}: {e}"));
        assert!(conn.is_tls());
        assert!(whoami(&mut conn).await.1);
        conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn tls_wrong_ca_is_rejected() {
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let mut p = params("postgres", None);
        p.sslmode = mode;
        p.sslrootcert = Some(wrong_ca_path());
        match Connection::connect(&p, false, &[]).await {
            Err(WireError::Tls(msg)) => assert!(msg.contains("certificate"), "{msg}"),
            other => panic!("{mode} with the wrong CA: expected a TLS error, got {other:?}"),
        }
    }
    // A missing sslrootcert file is a clear error too.
    let mut p = params("postgres", None);
    p.sslmode = SslMode::VerifyFull;
    p.sslrootcert = Some(testenv_dir().join("no-such-ca.crt"));
    match Connection::connect(&p, false, &[]).await {
        Err(WireError::Tls(msg)) => assert!(msg.contains("no-such-ca.crt"), "{msg}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_instance_without_tls() {
    let url = env("CDC_TEST_PG_PLAIN_URL");
    let mut p = ConnectParams::from_url(&url).unwrap();
    assert_eq!(p.sslmode, SslMode::Prefer);
    let conn = Connection::connect(&p, false, &[]).await.unwrap();
    assert!(
        !conn.is_tls(),
        "prefer falls back to plaintext when the server has no TLS"
    );
    conn.close().await.unwrap();
    p.sslmode = SslMode::Require;
    match Connection::connect(&p, false, &[]).await {
        Err(WireError::Tls(msg)) => assert!(msg.contains("does not accept TLS"), "{msg}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn wal_level_replica_refuses_logical_slot() {
    let p = ConnectParams::from_url(&env("CDC_TEST_PG_PLAIN_URL")).unwrap();
    let mut conn = Connection::connect(&p, true, &[]).await.unwrap();
    let slot = unique("cdc_wire_test_never");
    let e = conn
        .simple_query(&format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput"))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("55000"), "{e}");
    assert!(e.to_string().contains("wal_level"), "{e}");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn unix_socket() {
    let mut p = params("postgres", None);
    p.host = testenv_dir().join("sock").display().to_string();
    p.sslmode = SslMode::Require; // ignored on Unix sockets, as in libpq
    let mut conn = Connection::connect(&p, false, &[]).await.unwrap();
    assert!(!conn.is_tls());
    let r = conn
        .simple_query("SELECT inet_client_addr() IS NULL AS local")
        .await
        .unwrap();
    assert_eq!(r.get(0, "local"), Some("t"));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    let mut p = params("postgres", None);
    p.port = 1;
    let e = Connection::connect(&p, false, &[]).await.unwrap_err();
    assert!(matches!(e, WireError::Io(_)), "{e:?}");
    assert!(e.is_connection_error());
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}

#[tokio::test]
async fn replication_identify_system() {
    let mut p = params("cdc_scram", Some(PASSWORD));
    p.sslmode = SslMode::VerifyFull;
    p.sslrootcert = Some(ca_path());
    let mut conn = Connection::connect(&p, true, GUCS).await.unwrap();
    let r = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(r.columns, ["systemid", "timeline", "xlogpos", "dbname"]);
    assert_eq!(r.get(0, "dbname"), Some("postgres"));
    assert!(r.get(0, "xlogpos").unwrap().contains('/'));
    // A walsender with replication=database also runs SQL.
    let r = conn.simple_query("SELECT 41 + 1 AS x").await.unwrap();
    assert_eq!(r.get(0, "x"), Some("42"));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn replication_needs_replication_privilege() {
    let e = Connection::connect(&params("cdc_norepl", None), true, &[])
        .await
        .unwrap_err();
    // PG 15 raises "must be superuser or replication role to start walsender" as
    // insufficient_privilege (42501), during startup.
    assert_eq!(e.sqlstate(), Some("42501"), "{e}");
    assert!(e.to_string().contains("replication"), "{e}");
    // The same user may still connect normally.
    let conn = Connection::connect(&params("cdc_norepl", None), false, &[]).await;
    conn.unwrap().close().await.unwrap();
}

#[tokio::test]
async fn start_copy_both_with_a_plain_command_fails_cleanly() {
    let mut conn = Connection::connect(&params("postgres", None), true, &[])
        .await
        .unwrap();
    let e = conn.start_copy_both("IDENTIFY_SYSTEM").await.unwrap_err();
    assert!(matches!(e, WireError::Protocol(_)), "{e:?}");
    let e = conn
        .start_copy_both("START_REPLICATION SLOT cdc_wire_no_such_slot LOGICAL 0/0")
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("42704"), "{e}");
    assert!(conn.read_copy_data().await.unwrap().is_none());
    let r = conn.simple_query("SELECT 1 AS x").await.unwrap();
    assert_eq!(r.get(0, "x"), Some("1"));
    conn.close().await.unwrap();
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Standby status update: write = flush = apply = `lsn`.
fn standby_status(lsn: u64) -> Vec<u8> {
    let mut m = vec![b'r'];
    for _ in 0..3 {
        m.extend_from_slice(&lsn.to_be_bytes());
    }
    m.extend_from_slice(&0i64.to_be_bytes()); // client clock: informational only
    m.push(0);
    m
}

#[tokio::test]
async fn start_replication_pgoutput() {
    let suffix = unique("cdc_wire_test");
    let (table, publication, slot) = (
        format!("{suffix}_t"),
        format!("{suffix}_pub"),
        format!("{suffix}_slot"),
    );
    let mut admin = Connection::connect(&params("postgres", None), false, &[])
        .await
        .unwrap();
    admin
        .simple_query(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text); \
             CREATE PUBLICATION {publication} FOR TABLE {table}"
        ))
        .await
        .unwrap();

    let mut repl_params = params("cdc_scram", Some(PASSWORD));
    repl_params.sslmode = SslMode::Require;
    let mut repl = Connection::connect(&repl_params, true, GUCS).await.unwrap();
    let created = repl
        .simple_query(&format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput"))
        .await;

    let outcome = match created {
        Ok(r) => {
            assert_eq!(r.get(0, "slot_name"), Some(slot.as_str()));
            assert_eq!(r.get(0, "output_plugin"), Some("pgoutput"));
            stream_some(&mut repl, &mut admin, &slot, &publication, &table).await
        }
        Err(e) => Err(format!("CREATE_REPLICATION_SLOT: {e}")),
    };

    // Clean up whatever happened, so failed runs do not leave slots pinning WAL.
    let dropped = match repl.end_copy().await {
        Ok(()) => repl
            .simple_query(&format!("DROP_REPLICATION_SLOT {slot} WAIT"))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if dropped.is_err() {
        let _ = admin
            .simple_query(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}'"
            ))
            .await;
    }
    admin
        .simple_query(&format!(
            "DROP PUBLICATION {publication}; DROP TABLE {table}"
        ))
        .await
        .unwrap();
    outcome.unwrap();
    dropped.unwrap();
    let r = admin
        .simple_query(&format!(
            "SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .await
        .unwrap();
    assert_eq!(r.get(0, "n"), Some("0"));
    repl.close().await.unwrap();
    admin.close().await.unwrap();
}

/// Streams until both a keepalive and the XLogData of an insert arrived. Reads through
/// short `select!` timeouts on purpose: read_copy_data must survive being cancelled.
async fn stream_some(
    repl: &mut Connection,
    admin: &mut Connection,
    slot: &str,
    publication: &str,
    table: &str,
) -> Result<(), String> {
    repl.start_copy_both(&format!(
        "START_REPLICATION SLOT {slot} LOGICAL 0/0 \
         (proto_version '1', publication_names '{publication}')"
    ))
    .await
    .map_err(|e| format!("START_REPLICATION: {e}"))?;
    // In copy mode other commands are refused, without breaking the stream.
    if repl.simple_query("SELECT 1").await.is_ok() {
        return Err("simple_query in COPY BOTH mode should fail".into());
    }
    admin
        .simple_query(&format!("INSERT INTO {table} VALUES (1, 'one')"))
        .await
        .map_err(|e| format!("INSERT: {e}"))?;

    // wal_sender_timeout is 10s: a keepalive is due within half of that at the latest.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut keepalive, mut insert, mut cancelled) = (false, false, 0u32);
    while !(keepalive && insert) {
        if Instant::now() > deadline {
            return Err(format!("timed out: keepalive={keepalive} insert={insert}"));
        }
        let msg = tokio::select! {
            m = repl.read_copy_data() => m.map_err(|e| format!("read_copy_data: {e}"))?,
            _ = tokio::time::sleep(Duration::from_millis(20)) => { cancelled += 1; continue; }
        };
        let msg = msg.ok_or("copy ended unexpectedly")?;
        match msg.first() {
            Some(b'k') if msg.len() == 18 => {
                keepalive = true;
                let wal_end = be_u64(&msg, 1);
                if msg[17] == 1 {
                    repl.queue_copy_data(&standby_status(wal_end));
                    repl.flush().await.map_err(|e| format!("flush: {e}"))?;
                }
            }
            Some(b'w') if msg.len() >= 25 => {
                let end = be_u64(&msg, 9);
                // pgoutput: Begin, Relation, Insert, Commit.
                if msg[25..].first() == Some(&b'I') {
                    insert = true;
                }
                if msg[25..].first() == Some(&b'C') {
                    repl.queue_copy_data(&standby_status(end));
                    repl.flush().await.map_err(|e| format!("flush: {e}"))?;
                }
            }
            _ => return Err(format!("unexpected copy message {msg:?}")),
        }
    }
    tracing::debug!(cancelled, "reads cancelled by the select! timeout");
    repl.end_copy()
        .await
        .map_err(|e| format!("end_copy: {e}"))?;
    // After end_copy the connection accepts commands again.
    repl.simple_query("IDENTIFY_SYSTEM")
        .await
        .map_err(|e| format!("IDENTIFY_SYSTEM after copy: {e}"))?;
    Ok(())
}
