//! The target connection: `sink.url` parsed with the source's TLS vocabulary (`sslmode`
//! disable … verify-full, `sslrootcert`, `sslcert`, `sslkey`), everything else as tokio-postgres
//! reads a libpq URL; then connected over rustls with cdc-tls's verifiers.
//!
//! A URL that cannot be parsed is a definite error naming the parameter (the config check calls
//! [`parse_url`] at load time, so `cdc-agent` exits 2 on it); a refused handshake is definite too,
//! named with its fix.

use std::str::FromStr;

use cdc_core::PipelineError;
use cdc_tls::postgres::{PgTls, SslMode, VOCABULARY};
use percent_encoding::percent_decode_str;
use tokio_postgres::config::Host;
use tokio_postgres::Client;

use crate::tls::RustlsConnect;

/// `sink.url`, parsed.
#[derive(Clone, Debug)]
pub struct TargetUrl {
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
}

impl TargetUrl {
    /// Whether the connection can use TLS at all (TCP hosts; Unix sockets never do, as in libpq).
    pub fn over_tcp(&self) -> bool {
        self.config
            .get_hosts()
            .iter()
            .any(|h| matches!(h, Host::Tcp(_)))
    }
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("bad percent-encoding in {what}"))
}

/// Parses `sink.url`. Messages never repeat the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<TargetUrl, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut tls = PgTls::default();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key, "a URL parameter name")?;
        let value = decode(raw_value, &key)?;
        if !tls.take_param(&key, &value).map_err(|e| e.to_string())? {
            rest.push(pair);
        }
    }
    tls.validate().map_err(|e| e.to_string())?;
    let rest_url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&rest_url).map_err(|e| {
        // tokio-postgres names the option: "invalid connection string: unknown option `x`".
        let mut text = e.to_string();
        if let Some(cause) = std::error::Error::source(&e) {
            text = format!("{text}: {cause}");
        }
        if text.contains("unknown option") {
            text.push_str(
                " (TLS: sslmode, sslrootcert, sslcert, sslkey; see docs/configuration.md)",
            );
        }
        text
    })?;
    if config.get_user().is_none() {
        return Err("no user name: write postgres://USER@HOST/DB".into());
    }
    let unix_only = config
        .get_hosts()
        .iter()
        .all(|h| !matches!(h, Host::Tcp(_)));
    config.ssl_mode(match tls.sslmode {
        _ if unix_only && !config.get_hosts().is_empty() => {
            tokio_postgres::config::SslMode::Disable
        }
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    if config.get_application_name().is_none() {
        config.application_name("cdc-agent");
    }
    Ok(TargetUrl { config, tls })
}

/// Connects to the target; the connection's task runs in the background.
pub async fn connect(url: &str) -> Result<(Client, TargetUrl), PipelineError> {
    let target = parse_url(url).map_err(|e| {
        PipelineError::definite("config", format!("sink.url: {e}"))
            .with_hint("write it as postgres://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=/path/ca.pem")
    })?;
    let options = target.tls.options().map_err(tls_error)?;
    let tls = RustlsConnect::new(cdc_tls::client_config(&options).map_err(tls_error)?);
    let (client, connection) = target
        .config
        .connect(tls)
        .await
        .map_err(|e| connect_error(e, &target))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "target connection ended");
        }
    });
    Ok((client, target))
}

fn tls_error(e: cdc_tls::TlsError) -> PipelineError {
    PipelineError::definite("config", format!("sink.url: {e}"))
        .with_hint("fix sslrootcert, sslcert or sslkey in sink.url")
}

/// A refused TLS handshake is definite, named with its fix; anything else is classified like
/// any other target error.
fn connect_error(e: tokio_postgres::Error, target: &TargetUrl) -> PipelineError {
    let mut text = e.to_string();
    if let Some(cause) = std::error::Error::source(&e) {
        if !text.contains(&cause.to_string()) {
            text = format!("{text}: {cause}");
        }
    }
    if let Some(refusal) = cdc_tls::refusal(&text, &VOCABULARY, "sink.url") {
        return PipelineError::definite(
            "connection",
            format!(
                "{}: connecting to the target (sslmode={}): {text}",
                refusal.what, target.tls.sslmode
            ),
        )
        .with_hint(refusal.hint);
    }
    let server_said = e.as_db_error().is_some();
    let mut error = crate::sink_error(e, "connecting to the target");
    if !server_said {
        // With the cause (tokio-postgres's own text leaves it out: "error connecting to server").
        error.message = format!("connecting to the target: {text}");
    }
    error
}

/// Whether the session runs over TLS, as the server sees it.
pub async fn session_tls(client: &Client) -> Option<bool> {
    client
        .query_opt(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out() {
        let t = parse_url("postgres://u:p@db:5433/wh?sslmode=verify-full&sslrootcert=/ca%2B.pem&connect_timeout=5")
            .unwrap();
        assert_eq!(t.tls.sslmode, SslMode::VerifyFull);
        assert_eq!(
            t.tls.sslrootcert.as_deref(),
            Some(std::path::Path::new("/ca+.pem"))
        );
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(t.config.get_dbname(), Some("wh"));
        assert!(t.over_tcp());
        assert_eq!(
            parse_url("postgres://u@db/wh").unwrap().tls.sslmode,
            SslMode::Prefer
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (url, named) in [
            ("postgres://u@db/wh?sslmode=verify", "sslmode"),
            ("postgres://u@db/wh?frobnicate=1", "frobnicate"),
            ("postgres://u@db/wh?sslcert=/c.pem", "sslkey"),
            (
                "postgres://u:secret@db/wh?connect_timeout=x",
                "connect_timeout",
            ),
        ] {
            let message = parse_url(url).unwrap_err();
            assert!(message.contains(named), "{url}: {message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }
}
