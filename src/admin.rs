//! The admin HTTP endpoint: `/status` (the `status --json` object), `/healthz`, `/readyz`,
//! `/metrics` in Prometheus' text format (see `metrics`), `/snapshot` and the dead-letter store
//! (`GET /dlq`, `GET /dlq/<id>`, `POST /dlq/replay`, `POST /dlq/drop`) for the `dlq` commands,
//! `POST /verify` (a result to keep) and `POST /verify/run` (verify run by the agent, for a
//! DuckDB target the agent holds).
//!
//! Deliberately tiny (one request per connection, GET only): it serves operators and probes, not
//! traffic, and keeps an HTTP framework out of the binary.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;
use crate::status::{LiveStatus, PipelineState, StatusReport};

pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The source's state tree, once the state store is open: where `POST /snapshot` files requests.
pub type SnapshotRequests = Arc<std::sync::OnceLock<Arc<dyn cdc_core::StateTree>>>;

/// The dead-letter operations, once the state store is open.
pub type DeadLetterService = Arc<std::sync::OnceLock<Arc<crate::dlq::DlqService>>>;

/// Verify run by the agent, once the state store is open.
pub type VerifyRuns = Arc<std::sync::OnceLock<Arc<crate::verify::service::VerifyService>>>;

/// What the endpoint serves, shared by its connections.
#[derive(Clone)]
pub struct Services {
    pub live: Arc<LiveStatus>,
    pub metrics: Arc<Metrics>,
    pub requests: SnapshotRequests,
    pub dlq: DeadLetterService,
    pub verify: VerifyRuns,
}

pub async fn serve(listener: TcpListener, services: Services) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let services = services.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &services).await {
                tracing::debug!(error = %e, "admin request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, services: &Services) -> std::io::Result<()> {
    let Services {
        live,
        metrics,
        requests,
        dlq,
        verify,
    } = services;
    let request = read_request(&mut stream).await?;
    let head = String::from_utf8_lossy(&request);
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or("GET");
    let path = words.next().unwrap_or("/");
    let (code, content_type, body) = match (method, path) {
        ("POST", "/snapshot") => {
            let body = head.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let tables: Vec<String> = body
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            snapshot_request(requests, &tables)
        }
        ("GET", "/snapshot") => snapshot_progress(requests),
        ("POST", "/snapshot/ranges") => {
            let body = head.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            snapshot_ranges_request(requests, body)
        }
        (method, path) if path == "/dlq" || path.starts_with("/dlq/") => {
            let body = head.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            dead_letters(dlq, method, path, body).await
        }
        ("POST", "/verify") => {
            let body = head.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            verify_result(requests, body)
        }
        ("POST", "/verify/run") => {
            let body = head.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            // A caller that goes away (verify interrupted) ends the run: nothing waits for it.
            let run = verify_run(verify, body);
            tokio::select! {
                answer = run => answer,
                () = closed(&mut stream) => {
                    tracing::info!("verify: the caller went away; the run stopped");
                    return Ok(());
                }
            }
        }
        (_, path) => answer_get(path, live, metrics, requests),
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    // Status, metrics and errors may quote what a driver was given: never a secret.
    let body = crate::secrets::scrub(&body);
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Resolves when the peer closes the connection (it sends nothing after its request).
async fn closed(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Reads one request: the head, and a body up to its Content-Length (small: table names).
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await?;
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
            if n == 0 || request.len() > 64 << 10 {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
    Ok(request)
}

type Answer = (u16, &'static str, String);

fn snapshot_request(requests: &SnapshotRequests, tables: &[String]) -> Answer {
    let Some(tree) = requests.get() else {
        return (
            503,
            "text/plain",
            "the state store is not open yet\n".into(),
        );
    };
    if tables.is_empty() {
        return (400, "text/plain", "name at least one table\n".into());
    }
    match cdc_core::chunked::request(tree.as_ref(), tables) {
        Ok(generations) => {
            tracing::info!(?tables, "snapshot requested");
            let list: Vec<_> = tables
                .iter()
                .zip(generations)
                .map(|(t, g)| serde_json::json!({ "table": t, "generation": g }))
                .collect();
            (200, "application/json", serde_json::json!(list).to_string())
        }
        Err(e) => (500, "text/plain", format!("{e}\n")),
    }
}

/// `POST /snapshot/ranges` (`cdc-agent verify --repair`): `{"table": t, "ranges": [...]}`, a copy
/// of only those key ranges of the table.
fn snapshot_ranges_request(requests: &SnapshotRequests, body: &str) -> Answer {
    let Some(tree) = requests.get() else {
        return (
            503,
            "text/plain",
            "the state store is not open yet\n".into(),
        );
    };
    let request: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let (Some(table), Some(ranges)) = (
        request["table"].as_str(),
        cdc_core::chunked::parse_ranges(&request["ranges"]),
    ) else {
        return (
            400,
            "text/plain",
            "expected {\"table\": .., \"ranges\": [..]}\n".into(),
        );
    };
    match cdc_core::chunked::request_ranges(tree.as_ref(), table, &ranges) {
        Ok(generation) => {
            tracing::info!(table, ranges = ranges.len(), "copy of key ranges requested");
            (
                200,
                "application/json",
                serde_json::json!([{ "table": table, "generation": generation }]).to_string(),
            )
        }
        Err(e) => (500, "text/plain", format!("{e}\n")),
    }
}

fn snapshot_progress(requests: &SnapshotRequests) -> Answer {
    let Some(tree) = requests.get() else {
        return (
            503,
            "text/plain",
            "the state store is not open yet\n".into(),
        );
    };
    match cdc_core::chunked::request_status(tree.as_ref()) {
        Ok(list) => {
            let list: Vec<_> = list
                .into_iter()
                .map(|(table, generation, rows, done)| {
                    serde_json::json!({ "table": table, "generation": generation, "rows": rows, "done": done })
                })
                .collect();
            (200, "application/json", serde_json::json!(list).to_string())
        }
        Err(e) => (500, "text/plain", format!("{e}\n")),
    }
}

async fn dead_letters(dlq: &DeadLetterService, method: &str, path: &str, body: &str) -> Answer {
    let Some(service) = dlq.get() else {
        return (
            503,
            "text/plain",
            "the state store is not open yet\n".into(),
        );
    };
    let json = |value: anyhow::Result<String>| match value {
        Ok(body) => (200, "application/json", body),
        Err(e) => (500, "text/plain", format!("{e:#}\n")),
    };
    let selection = || -> anyhow::Result<crate::dlq::replay::Selection> {
        Ok(serde_json::from_str(if body.trim().is_empty() {
            "{}"
        } else {
            body
        })?)
    };
    match (method, path) {
        ("GET", "/dlq") => json(service.list().and_then(|l| Ok(serde_json::to_string(&l)?))),
        ("POST", "/dlq/replay") => match selection() {
            Ok(s) => json(
                service
                    .replay(&s)
                    .await
                    .and_then(|r| Ok(serde_json::to_string(&r)?)),
            ),
            Err(e) => (400, "text/plain", format!("{e}\n")),
        },
        ("POST", "/dlq/drop") => match selection() {
            Ok(s) => json(
                service
                    .drop_records(&s)
                    .await
                    .and_then(|ids| Ok(serde_json::to_string(&ids)?)),
            ),
            Err(e) => (400, "text/plain", format!("{e}\n")),
        },
        ("GET", path) => match path.strip_prefix("/dlq/").and_then(|id| id.parse().ok()) {
            Some(id) => match service.show(id) {
                Ok(Some(shown)) => json(Ok(serde_json::to_string(&shown).unwrap_or_default())),
                Ok(None) => (404, "text/plain", format!("no dead letter {id}\n")),
                Err(e) => json(Err(e)),
            },
            None => (404, "text/plain", "not found\n".into()),
        },
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// `POST /verify`: `cdc-agent verify` hands over its result, kept for `/status` and `/metrics`.
fn verify_result(requests: &SnapshotRequests, body: &str) -> Answer {
    let Some(tree) = requests.get() else {
        return (
            503,
            "text/plain",
            "the state store is not open yet\n".into(),
        );
    };
    match crate::verify::record::accept(tree.as_ref(), body) {
        Ok(n) => (200, "text/plain", format!("{n} results kept\n")),
        Err(e) => (400, "text/plain", format!("{e}\n")),
    }
}

/// `POST /verify/run`: the `verify` arguments as JSON; the report as JSON.
async fn verify_run(verify: &VerifyRuns, body: &str) -> Answer {
    use crate::verify::service::Refused;
    let Some(service) = verify.get() else {
        return (
            503,
            "text/plain",
            "the state store is not open yet\n".into(),
        );
    };
    let args: crate::verify::VerifyArgs = match serde_json::from_str(body) {
        Ok(args) => args,
        Err(e) => return (400, "text/plain", format!("not verify arguments: {e}\n")),
    };
    match service.run(&args).await {
        Ok(report) => (
            200,
            "application/json",
            serde_json::to_string(&report).unwrap_or_default(),
        ),
        Err(Refused::NotReady(why)) => (503, "text/plain", format!("{why}\n")),
        Err(Refused::Usage(why)) => (400, "text/plain", format!("{why}\n")),
        Err(Refused::Failed(why)) => (500, "text/plain", format!("{why}\n")),
    }
}

fn answer_get(
    path: &str,
    live: &LiveStatus,
    metrics: &Metrics,
    requests: &SnapshotRequests,
) -> Answer {
    let report = || {
        let mut report = live.report();
        if let Some(tree) = requests.get() {
            crate::verify::record::annotate(&mut report, tree.as_ref());
        }
        report
    };
    match path {
        "/status" => (
            200,
            "application/json",
            serde_json::to_string(&report()).unwrap_or_default(),
        ),
        "/healthz" => (200, "text/plain", "ok\n".to_string()),
        "/readyz" => match live.state() {
            PipelineState::Streaming | PipelineState::Snapshotting => {
                (200, "text/plain", "ready\n".to_string())
            }
            other => (503, "text/plain", format!("{other:?}\n").to_lowercase()),
        },
        "/metrics" => {
            let report = live.report();
            let mut text = metrics.render(&report);
            if let Some(tree) = requests.get() {
                text.push_str(&crate::verify::record::render_metrics(
                    tree.as_ref(),
                    &report.name,
                ));
            }
            (200, "text/plain; version=0.0.4", text)
        }
        _ => (404, "text/plain", "not found\n".to_string()),
    }
}

/// Asks the running agent of pipeline `name` for its status. `None` when nothing answers at
/// `addr`, or another pipeline's agent does.
pub async fn fetch_status(addr: &str, name: &str) -> Option<StatusReport> {
    let (code, body) = call(addr, "GET", "/status", "").await?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
        .filter(|report: &StatusReport| report.name == name)
}

/// One request to an admin endpoint: the status code and body, `None` when nothing answers.
pub async fn call(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    call_within(addr, method, path, body, Duration::from_secs(3)).await
}

/// [`call`], waiting up to `timeout` for the answer (a replay takes as long as the target).
pub async fn call_within(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: cdc-agent\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}
