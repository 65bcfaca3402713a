//! The admin HTTP endpoint: `/status` (the `status --json` object), `/healthz`, `/readyz` and
//! `/metrics` in Prometheus' text format (see `metrics`).
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

pub async fn serve(listener: TcpListener, live: Arc<LiveStatus>, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let live = Arc::clone(&live);
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &live, &metrics).await {
                tracing::debug!(error = %e, "admin request failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    live: &LiveStatus,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut request = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
    let head = String::from_utf8_lossy(&request[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (code, content_type, body) = match path {
        "/status" => (
            200,
            "application/json",
            serde_json::to_string(&live.report()).unwrap_or_default(),
        ),
        "/healthz" => (200, "text/plain", "ok\n".to_string()),
        "/readyz" => match live.state() {
            PipelineState::Streaming | PipelineState::Snapshotting => {
                (200, "text/plain", "ready\n".to_string())
            }
            other => (503, "text/plain", format!("{other:?}\n").to_lowercase()),
        },
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            metrics.render(&live.report()),
        ),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let reason = match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Asks the running agent of pipeline `name` for its status. `None` when nothing answers at
/// `addr`, or another pipeline's agent does.
pub async fn fetch_status(addr: &str, name: &str) -> Option<StatusReport> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: cdc-agent\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .ok()
        .flatten()
        .filter(|report: &StatusReport| report.name == name)
}
