//! TLS on every connection, against the private servers of scripts/testenv.sh and its test CA:
//! for the Postgres source and sink, the MySQL/MariaDB source and sink and the NATS sink,
//! verify-full / VERIFY_IDENTITY with the right CA works (changes flow, `check` says TLS is on and
//! what was verified), and `check` names each refusal with its fix: a wrong CA, a wrong host name
//! (the servers reached as 127.0.0.2, through a proxy: their certificates hold only localhost and
//! 127.0.0.1), and a server without TLS under a mode that requires it. A URL the agent cannot
//! use exits 2 naming the parameter.
mod common;

use std::time::Duration;

use common::mysql::TargetDb;
use common::proxy::Proxy;
use common::{Pipeline, TestDb};
use mysql_async::prelude::Queryable;
use tokio::io::AsyncWriteExt;

fn var(name: &str) -> String {
    common::env().var(name).to_string()
}

fn pg_port() -> String {
    var("CDC_TEST_PG_URL")
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next().map(str::to_string))
        .expect("a port in CDC_TEST_PG_URL")
}

fn pg_plain_port() -> String {
    var("CDC_TEST_PG_PLAIN_URL")
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next().map(str::to_string))
        .expect("a port in CDC_TEST_PG_PLAIN_URL")
}

/// A proxy on 127.0.0.2 in front of a server on 127.0.0.1: the name connected to is not in the
/// server's certificate.
async fn wrong_name(port: &str) -> Proxy {
    Proxy::start_at("127.0.0.2", format!("127.0.0.1:{port}")).await
}

/// A "MySQL server" that offers no TLS: it sends a protocol-10 handshake whose capabilities lack
/// CLIENT_SSL, then hangs up. Returns its port.
async fn mysql_without_tls() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            // LONG_PASSWORD, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION,
            // PLUGIN_AUTH: no SSL (0x800).
            let caps: u32 = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x8_0000;
            let mut body = vec![10u8];
            body.extend_from_slice(b"5.5.5-10.11.0-fake\0");
            body.extend_from_slice(&7u32.to_le_bytes());
            body.extend_from_slice(b"abcdefgh\0");
            body.extend_from_slice(&(caps as u16).to_le_bytes());
            body.push(45); // utf8mb4
            body.extend_from_slice(&2u16.to_le_bytes());
            body.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
            body.push(21);
            body.extend_from_slice(&[0u8; 10]);
            body.extend_from_slice(b"ijklmnopqrst\0");
            body.extend_from_slice(b"mysql_native_password\0");
            let mut packet = (body.len() as u32).to_le_bytes()[..3].to_vec();
            packet.push(0);
            packet.extend_from_slice(&body);
            let _ = socket.write_all(&packet).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    port
}

/// `check`'s exit code and output.
fn check(p: &Pipeline) -> (Option<i32>, String) {
    let out = p.run_cmd(&["check"]);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `check` fails (exit 1), and the output says `what` and names `fix`.
fn refused(p: &Pipeline, what: &str, fix: &str) {
    let (code, text) = check(p);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(what) && text.contains(fix),
        "expected {what:?} and {fix:?} in: {text}"
    );
}

/// `check` and `run` exit 2 on a config whose URL cannot be used, naming the key and `named`.
fn unusable(p: &Pipeline, key: &str, named: &str) {
    for command in ["check", "run"] {
        let out = p.run_cmd(&[command]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains(key) && err.contains(named),
            "{command}: {key} and {named} in: {err}"
        );
    }
}

async fn wait_for<F, Fut>(what: &str, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_until(what, Duration::from_secs(60), done).await
}

// ---- Postgres -----------------------------------------------------------------------------

fn pg_tls_url(user: &str, host: &str, port: &str, db: &str, ca: &str) -> String {
    format!(
        "postgres://{user}@{host}:{port}/{db}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        var(ca),
        var("CDC_TEST_CLIENT_CERT"),
        var("CDC_TEST_CLIENT_KEY")
    )
}

fn pg_sink(url: &str) -> String {
    format!("type = \"postgres\"\nurl = \"{url}\"\nschema = \"replica\"\nflush_interval_ms = 50")
}

/// The Postgres sink over verify-full with a client certificate (the server verifies it: its
/// ssl_ca_file is the test CA): changes arrive; `check` says what was verified.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_sink_verify_full_with_a_client_certificate() {
    let db = TestDb::new("tls_pgsink").await;
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); GRANT CREATE ON DATABASE {} TO cdc_cert",
        db.name
    ))
    .await;
    let target = pg_tls_url("cdc_cert", "localhost", &pg_port(), &db.name, "CDC_TEST_CA");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
        Some(&pg_sink(&target)),
    );
    let (code, text) = check(&p);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("TLS on, certificate chain and host name verified (sslmode=verify-full")
            && text.contains("client certificate"),
        "{text}"
    );
    let agent = common::start_streaming(&p);
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    let client = db.client().await;
    wait_for("the rows in the target", || async {
        client
            .query_one("SELECT count(*) FROM replica.t", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 2)
    })
    .await;
    // The sink's own session, as the server sees it: TLS, with the client certificate it
    // verified against the test CA.
    let tls_sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = 'cdc_cert' AND s.ssl AND s.client_dn = '/CN=cdc_cert'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tls_sessions >= 1);
    assert_eq!(agent.stop(), 0);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refusals_are_named_for_source_and_sink() {
    let db = TestDb::new("tls_pgrefuse").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let port = pg_port();
    let proxy = wrong_name(&port).await;
    let proxy_port = proxy.port.to_string();
    let cases = [
        (
            pg_tls_url(
                "postgres",
                "localhost",
                &port,
                &db.name,
                "CDC_TEST_WRONG_CA",
            ),
            "not signed by a CA the agent trusts",
            "set sslrootcert in",
        ),
        (
            pg_tls_url(
                "postgres",
                "127.0.0.2",
                &proxy_port,
                &db.name,
                "CDC_TEST_CA",
            ),
            "does not hold the host name",
            "sslmode=verify-ca",
        ),
        (
            pg_tls_url(
                "postgres",
                "127.0.0.1",
                &pg_plain_port(),
                "postgres",
                "CDC_TEST_CA",
            ),
            "does not offer TLS",
            "enable TLS on the server",
        ),
    ];
    for (url, what, fix) in &cases {
        // As the sink (the source is fine)...
        let sink = Pipeline::with_sink(
            &db.url,
            &db.name,
            &["public.t"],
            "snapshot = \"never\"",
            Some(&pg_sink(url)),
        );
        refused(&sink, what, fix);
        refused(&sink, "sink.url", fix);
        // ... and as the source.
        let source = Pipeline::new(url, &db.name, &["public.t"], "snapshot = \"never\"");
        refused(&source, what, fix);
        refused(&source, "source.url", fix);
    }
    // The source with a client certificate: check says TLS is on and what was verified.
    let source = Pipeline::new(
        &pg_tls_url("cdc_cert", "localhost", &port, &db.name, "CDC_TEST_CA"),
        &db.name,
        &["public.t"],
        "snapshot = \"never\"",
    );
    let (_, text) = check(&source);
    assert!(
        text.contains("source tls: TLS on, certificate chain and host name verified"),
        "{text}"
    );

    // URLs the agent cannot use: exit 2, the key and the parameter named.
    let bad = format!("{}?sslmode=verify", db.url);
    let sink = Pipeline::with_sink(&db.url, &db.name, &["public.t"], "", Some(&pg_sink(&bad)));
    unusable(&sink, "sink.url", "sslmode");
    let odd = format!("{}?sslmode=require&frobnicate=1", db.url);
    let sink = Pipeline::with_sink(&db.url, &db.name, &["public.t"], "", Some(&pg_sink(&odd)));
    unusable(&sink, "sink.url", "frobnicate");
    let source = Pipeline::new(&odd, &db.name, &["public.t"], "");
    unusable(&source, "source.url", "frobnicate");
    db.drop().await;
}

// ---- MySQL / MariaDB ----------------------------------------------------------------------

fn mysql_port() -> String {
    var("CDC_TEST_MYSQL_PORT")
}

/// A URL with VERIFY_IDENTITY against `ca`, as `user` (cdc_tls requires TLS; cdc_cert a client
/// certificate).
fn mysql_tls_url(user: &str, host: &str, port: &str, db: &str, ca: &str) -> String {
    let mut url = format!(
        "mysql://{user}:secret-pw@{host}:{port}/{db}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        var(ca)
    );
    if user == "cdc_cert" {
        url.push_str(&format!(
            "&ssl-cert={}&ssl-key={}",
            var("CDC_TEST_CLIENT_CERT"),
            var("CDC_TEST_CLIENT_KEY")
        ));
    }
    url
}

fn mysql_sink(url: &str) -> String {
    format!("type = \"mysql\"\nurl = \"{url}\"\nflush_interval_ms = 50")
}

/// MariaDB as the source (cdc_tls, REQUIRE SSL) and as the target (cdc_cert, a client
/// certificate), both VERIFY_IDENTITY: changes flow end to end over TLS.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_source_and_sink_verify_identity() {
    let source_db = TargetDb::new("tlssrc");
    source_db
        .exec("CREATE TABLE t (id int PRIMARY KEY, v varchar(10))")
        .await;
    let target_db = TargetDb::new("tlsdst");
    let source_url = mysql_tls_url(
        "cdc_tls",
        "localhost",
        &mysql_port(),
        &source_db.name,
        "CDC_TEST_CA",
    );
    let target_url = mysql_tls_url(
        "cdc_cert",
        "localhost",
        &mysql_port(),
        &target_db.name,
        "CDC_TEST_CA",
    );
    let table = format!("{}.t", source_db.name);
    let p = Pipeline::with_sink(
        &source_url,
        &source_db.name,
        &[&table],
        "snapshot = \"never\"",
        Some(&mysql_sink(&target_url)),
    );
    let (code, text) = check(&p);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("source tls: TLS on (")
            && text.contains("certificate chain and host name verified (ssl-mode=VERIFY_IDENTITY")
            && text.contains("client certificate"),
        "{text}"
    );
    let agent = common::start_streaming(&p);
    source_db
        .exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await;
    let query = format!("SELECT count(*) FROM {}.t", target_db.name);
    wait_for("the rows in the target", || {
        let admin_url = target_db.admin_url.clone();
        let query = query.clone();
        async move {
            let Ok(mut conn) = mysql_async::Conn::from_url(admin_url).await else {
                return false;
            };
            let n: Option<i64> = conn.query_first(query).await.unwrap_or(None);
            let _ = conn.disconnect().await;
            n == Some(2)
        }
    })
    .await;
    assert_eq!(agent.stop(), 0);
    source_db.drop().await;
    target_db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_refusals_are_named_for_source_and_sink() {
    let db = TargetDb::new("tlsrefuse");
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let port = mysql_port();
    let table = format!("{}.t", db.name);
    let proxy = wrong_name(&port).await;
    let fake = mysql_without_tls().await.to_string();
    let cases = [
        (
            mysql_tls_url("cdc_tls", "localhost", &port, &db.name, "CDC_TEST_WRONG_CA"),
            "not signed by a CA the agent trusts",
            "set ssl-ca in",
        ),
        (
            mysql_tls_url(
                "cdc_tls",
                "127.0.0.2",
                &proxy.port.to_string(),
                &db.name,
                "CDC_TEST_CA",
            ),
            "does not hold the host name",
            "that the certificate holds",
        ),
        (
            mysql_tls_url("cdc_tls", "127.0.0.1", &fake, &db.name, "CDC_TEST_CA"),
            "does not offer TLS",
            "enable TLS on the server",
        ),
    ];
    // A Postgres database as the source when the MySQL sink is tested.
    let pg = TestDb::new("tls_mysink").await;
    pg.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    for (url, what, fix) in &cases {
        let source = Pipeline::new(url, &db.name, &[&table], "snapshot = \"never\"");
        refused(&source, what, fix);
        refused(&source, "source.url", fix);
        let sink = Pipeline::with_sink(
            &pg.url,
            &pg.name,
            &["public.t"],
            "snapshot = \"never\"",
            Some(&mysql_sink(url)),
        );
        refused(&sink, what, fix);
        refused(&sink, "sink.url", fix);
    }

    // A plaintext login of a user the server requires TLS of: "Access denied", and the hint says
    // that the server may require TLS.
    let plaintext = format!(
        "mysql://cdc_tls:secret-pw@127.0.0.1:{port}/{}?ssl-mode=DISABLED",
        db.name
    );
    let source = Pipeline::new(&plaintext, &db.name, &[&table], "snapshot = \"never\"");
    refused(&source, "Access denied", "the server may require TLS");
    // PREFERRED (the default) takes TLS where the server offers it: the same user gets in.
    let preferred = format!("mysql://cdc_tls:secret-pw@127.0.0.1:{port}/{}", db.name);
    let source = Pipeline::new(&preferred, &db.name, &[&table], "snapshot = \"never\"");
    let (_, text) = check(&source);
    assert!(
        text.contains("source tls: TLS on (")
            && text.contains("certificate not verified (ssl-mode=PREFERRED"),
        "{text}"
    );

    // Unknown URL parameters: exit 2 from the source and the sink alike, the parameter named.
    let odd = format!("{preferred}?frobnicate=1");
    unusable(
        &Pipeline::new(&odd, &db.name, &[&table], ""),
        "source.url",
        "frobnicate",
    );
    let sink = Pipeline::with_sink(
        &pg.url,
        &pg.name,
        &["public.t"],
        "",
        Some(&mysql_sink(&odd)),
    );
    unusable(&sink, "sink.url", "frobnicate");
    let foreign = format!("{preferred}?require_ssl=true");
    unusable(
        &Pipeline::new(&foreign, &db.name, &[&table], ""),
        "source.url",
        "ssl-mode",
    );
    drop(proxy);
    db.drop().await;
    pg.drop().await;
}

// ---- NATS ---------------------------------------------------------------------------------

fn nats_sink(url: &str, name: &str) -> String {
    format!(
        "type = \"nats\"\nurl = \"{url}\"\nstream = \"{name}\"\nsubject_prefix = \"{name}\"\nflush_interval_ms = 50"
    )
}

fn nats_tls_port() -> String {
    var("CDC_TEST_NATS_TLS_URL")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string()
}

/// `tls://` with the test CA and a password login: changes are stored; `check` says TLS is on,
/// what was verified and how the agent logged in (never the password).
#[tokio::test(flavor = "multi_thread")]
async fn nats_tls_with_a_password_and_an_nkey() {
    let ca = var("CDC_TEST_CA");
    let port = nats_tls_port();
    let url = format!("tls://cdc:secret-pw@127.0.0.1:{port}?tls_ca={ca}");
    let (db, p) = common::pipeline_into(
        "tls_nats",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "public.t",
        |name| nats_sink(&url, name),
    )
    .await;
    let (code, text) = check(&p);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("TLS on, certificate chain and host name verified")
            && text.contains("user cdc with a password")
            && !text.contains("secret-pw"),
        "{text}"
    );
    let agent = common::start_streaming(&p);
    db.exec("INSERT INTO t VALUES (1), (2), (3)").await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("cdc".into(), "secret-pw".into())
            .add_root_certificates(ca.clone().into())
            .require_tls(true)
            .connect(format!("tls://127.0.0.1:{port}"))
            .await
            .expect("a TLS client of the test");
    let js = async_nats::jetstream::new(client);
    let stream = db.name.clone();
    wait_for("three messages in the stream", || {
        let js = js.clone();
        let stream = stream.clone();
        async move {
            match js.get_stream(&stream).await {
                Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages == 3),
                Err(_) => false,
            }
        }
    })
    .await;
    assert_eq!(agent.stop(), 0);
    let _ = js.delete_stream(&stream).await;

    // An nkey login.
    let nkey = format!(
        "tls://127.0.0.1:{port}?tls_ca={ca}&nkey={}",
        var("CDC_TEST_NATS_NKEY_SEED")
    );
    let (code, text) = common::run_check(&db, "public.t", &nats_sink(&nkey, &db.name));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("the nkey seed in"), "{text}");
    db.drop().await;
}

/// Waits until the JetStream stream `stream` holds `n` messages, read by `client`.
async fn wait_for_messages(client: async_nats::Client, stream: &str, n: u64) {
    let js = async_nats::jetstream::new(client);
    wait_for("the messages in the stream", || {
        let js = js.clone();
        async move {
            match js.get_stream(stream).await {
                Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages == n),
                Err(_) => false,
            }
        }
    })
    .await;
    let _ = js.delete_stream(stream).await;
}

/// The two logins that need a server of their own: a token, and a `.creds` file (a user JWT
/// under an operator, and its seed). Changes arrive; `check` names the method, never the token;
/// a wrong token is refused and named.
#[tokio::test(flavor = "multi_thread")]
async fn nats_token_and_creds_logins() {
    let token = var("CDC_TEST_NATS_TOKEN");
    let token_url = var("CDC_TEST_NATS_TOKEN_URL");
    let jwt_url = var("CDC_TEST_NATS_JWT_URL");
    let creds = var("CDC_TEST_NATS_CREDS");
    let cases = [
        (format!("{token_url}?token={token}"), "a token"),
        (format!("{jwt_url}?creds={creds}"), "the credentials file"),
    ];
    for (i, (url, said)) in cases.iter().enumerate() {
        let (db, p) = common::pipeline_into(
            &format!("nats_login{i}"),
            "CREATE TABLE t (id int PRIMARY KEY)",
            "public.t",
            |name| nats_sink(url, name),
        )
        .await;
        let (code, text) = check(&p);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains(said) && !text.contains(&token), "{text}");
        let agent = common::start_streaming(&p);
        db.exec("INSERT INTO t VALUES (1), (2), (3)").await;
        let client = if i == 0 {
            async_nats::ConnectOptions::with_token(token.clone())
                .connect(&token_url)
                .await
        } else {
            async_nats::ConnectOptions::with_credentials_file(creds.clone())
                .await
                .expect("the test's creds file")
                .connect(&jwt_url)
                .await
        }
        .expect("a client of the test");
        wait_for_messages(client, &db.name, 3).await;
        assert_eq!(agent.stop(), 0);
        assert!(!p.log().contains(&token), "the log holds the token");
        db.drop().await;
    }
    let db = TestDb::new("nats_badtoken").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let url = format!("{token_url}?token=not-the-token");
    let (code, text) = common::run_check(&db, "public.t", &nats_sink(&url, &db.name));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("refused the login")
            && text.contains("token")
            && !text.contains("not-the-token"),
        "{text}"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_refusals_are_named() {
    let db = TestDb::new("tls_natsrefuse").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let port = nats_tls_port();
    let proxy = wrong_name(&port).await;
    let plain_port = var("CDC_TEST_NATS_URL")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let ca = var("CDC_TEST_CA");
    let wrong_ca = var("CDC_TEST_WRONG_CA");
    let cases = [
        (
            format!("tls://cdc:secret-pw@127.0.0.1:{port}?tls_ca={wrong_ca}"),
            "not signed by a CA the agent trusts",
            "set tls_ca in sink.url",
        ),
        (
            format!("tls://cdc:secret-pw@127.0.0.2:{}?tls_ca={ca}", proxy.port),
            "does not hold the host name",
            "that the certificate holds",
        ),
        (
            format!("tls://127.0.0.1:{plain_port}?tls_ca={ca}"),
            "does not offer TLS",
            "enable TLS on the server",
        ),
        (
            format!("tls://cdc:wrong-pw@127.0.0.1:{port}?tls_ca={ca}"),
            "refused the login",
            "check the user and password",
        ),
    ];
    for (url, what, fix) in &cases {
        let (code, text) = common::run_check(&db, "public.t", &nats_sink(url, &db.name));
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains(what) && text.contains(fix),
            "{what}, {fix}: {text}"
        );
        assert!(
            !text.contains("wrong-pw") && !text.contains("secret-pw"),
            "{text}"
        );
    }
    let odd = format!("tls://127.0.0.1:{port}?tls_verify=false");
    let p = Pipeline::with_sink(
        &db.url,
        &db.name,
        &["public.t"],
        "",
        Some(&nats_sink(&odd, &db.name)),
    );
    unusable(&p, "sink.url", "tls_verify");
    drop(proxy);
    db.drop().await;
}
