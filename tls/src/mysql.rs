//! MySQL's vocabulary, as its clients spell it: `ssl-mode` (`DISABLED`, `PREFERRED`,
//! `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`), `ssl-ca`, `ssl-cert`, `ssl-key`, taken out of a
//! `mysql://` URL and mapped onto mysql_async's `SslOpts`. One parser for the source, the sink
//! and `verify`, so a URL means the same everywhere and an unknown parameter is refused by all.
//!
//! mysql_async builds its rustls configuration itself (with its own verifier); the trusted roots
//! given to it are the `ssl-ca` file, or the OS store (never its compiled-in Mozilla list, so that
//! "no ssl-ca" means the same as for Postgres).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use mysql_async::{ClientIdentity, Conn, Opts, OptsBuilder, SslOpts};
use percent_encoding::percent_decode_str;

use crate::{identity_of, load_roots, Roots, TlsError, Verify, Vocabulary};

pub const VOCABULARY: Vocabulary = Vocabulary {
    ca: "ssl-ca",
    cert: "ssl-cert",
    key: "ssl-key",
    mode: Some("ssl-mode"),
    // Not offered as the way out of a host-name refusal: mysql_async 0.37's VERIFY_CA checks the
    // host name too (its verifier looks for rustls's older error wording), see docs/security.md.
    chain_only: None,
};

/// The URL parameters this module takes (besides mysql_async's own).
pub const PARAMETERS: &str = "ssl-mode, ssl-ca, ssl-cert, ssl-key";

/// MySQL's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disabled,
    /// TLS when the server offers it, certificate not verified (the MySQL clients' default).
    #[default]
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "DISABLED",
            SslMode::Preferred => "PREFERRED",
            SslMode::Required => "REQUIRED",
            SslMode::VerifyCa => "VERIFY_CA",
            SslMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }

    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Required | SslMode::VerifyCa | SslMode::VerifyIdentity
        )
    }

    pub fn verify(self) -> Verify {
        match self {
            SslMode::Disabled | SslMode::Preferred | SslMode::Required => Verify::Nothing,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyIdentity => Verify::ChainAndName,
        }
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        // MySQL's clients take the value in any case.
        match s.to_ascii_uppercase().as_str() {
            "DISABLED" => Ok(SslMode::Disabled),
            "PREFERRED" => Ok(SslMode::Preferred),
            "REQUIRED" => Ok(SslMode::Required),
            "VERIFY_CA" => Ok(SslMode::VerifyCa),
            "VERIFY_IDENTITY" => Ok(SslMode::VerifyIdentity),
            _ => Err(TlsError::Config(format!(
                "unknown ssl-mode {s:?} (expected DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY)"
            ))),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS settings of a `mysql://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MysqlTls {
    pub mode: SslMode,
    pub ssl_ca: Option<PathBuf>,
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
}

/// A `mysql://` URL: mysql_async's options (without TLS yet) and the TLS settings.
#[derive(Debug, Clone)]
pub struct MysqlUrl {
    pub opts: Opts,
    pub tls: MysqlTls,
}

fn decode(s: &str, what: &str) -> Result<String, TlsError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| TlsError::Config(format!("bad percent-encoding in {what}")))
}

/// Parses a `mysql://` URL. Error messages never repeat the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<MysqlUrl, TlsError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut tls = MysqlTls::default();
    let mut mode_given = false;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        // MySQL's option files take `ssl_mode` as well as `ssl-mode`.
        let key = decode(raw_key, "a URL parameter name")?.replace('_', "-");
        match key.as_str() {
            "ssl-mode" => {
                tls.mode = decode(raw_value, "ssl-mode")?.parse()?;
                mode_given = true;
            }
            "ssl-ca" => tls.ssl_ca = Some(PathBuf::from(decode(raw_value, "ssl-ca")?)),
            "ssl-cert" => tls.ssl_cert = Some(PathBuf::from(decode(raw_value, "ssl-cert")?)),
            "ssl-key" => tls.ssl_key = Some(PathBuf::from(decode(raw_value, "ssl-key")?)),
            // mysql_async's own TLS switches: one vocabulary only.
            "require-ssl" | "verify-ca" | "verify-identity" | "built-in-roots" => {
                return Err(TlsError::Config(format!(
                    "URL parameter {raw_key:?} is not supported; use {PARAMETERS} (as the MySQL clients spell them)"
                )))
            }
            _ => rest.push(pair),
        }
    }
    // As the MySQL clients: a CA given without a mode means verifying against it.
    if !mode_given && tls.ssl_ca.is_some() {
        tls.mode = SslMode::VerifyCa;
    }
    identity_of(tls.ssl_cert.clone(), tls.ssl_key.clone(), &VOCABULARY)?;
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let opts = Opts::from_url(&url).map_err(|e| {
        TlsError::Config(match e {
            mysql_async::UrlError::UnknownParameter { param } => format!(
                "unknown URL parameter {param:?} (supported: {PARAMETERS}, and mysql_async's connection options such as prefer_socket, socket, compression, tcp_keepalive, stmt_cache_size)"
            ),
            other => format!("not a valid mysql:// URL: {other}"),
        })
    })?;
    Ok(MysqlUrl { opts, tls })
}

impl MysqlTls {
    /// mysql_async's TLS options for this mode (None: plaintext). Reads the files now, so that a
    /// missing or unusable file is named before any connection.
    pub fn ssl_opts(&self) -> Result<Option<SslOpts>, TlsError> {
        if self.mode == SslMode::Disabled {
            return Ok(None);
        }
        crate::provider();
        let mut opts = SslOpts::default();
        match self.mode.verify() {
            // mysql_async's verifier wants roots even when it accepts any certificate: its
            // built-in ones, which then decide nothing.
            Verify::Nothing => opts = opts.with_danger_accept_invalid_certs(true),
            verify => {
                opts = opts.with_disable_built_in_roots(true);
                let roots = self.roots();
                // Read now for a clear error (and never an empty set of roots).
                load_roots(&roots, &VOCABULARY)?;
                opts = match roots {
                    Roots::File(path) => opts.with_root_certs(vec![path.into()]),
                    // DER buffers: mysql_async takes what is not PEM as DER.
                    Roots::System => opts.with_root_certs(
                        rustls_native_certs::load_native_certs()
                            .certs
                            .into_iter()
                            .map(|c| c.as_ref().to_vec().into())
                            .collect(),
                    ),
                };
                opts = opts.with_danger_skip_domain_validation(verify == Verify::Chain);
            }
        }
        if let Some(identity) =
            identity_of(self.ssl_cert.clone(), self.ssl_key.clone(), &VOCABULARY)?
        {
            // Read now for a clear error; mysql_async reads them again on connecting.
            crate::load_identity(&identity, &VOCABULARY)?;
            opts = opts.with_client_identity(Some(ClientIdentity::new(
                identity.cert.into(),
                identity.key.into(),
            )));
        }
        Ok(Some(opts))
    }

    pub fn roots(&self) -> Roots {
        self.ssl_ca.clone().map_or(Roots::System, Roots::File)
    }

    /// For `check`: TLS on or off on a connection made with these settings (`cipher`: the
    /// session's `Ssl_cipher`, empty when plaintext), and what was verified.
    pub fn describe(&self, cipher: &str) -> String {
        if cipher.is_empty() {
            return match self.mode {
                SslMode::Disabled => "TLS off (ssl-mode=DISABLED)".into(),
                _ => format!(
                    "TLS off: the server does not offer it (ssl-mode={}; set ssl-mode=VERIFY_IDENTITY to require it)",
                    self.mode
                ),
            };
        }
        let mut text = format!(
            "TLS on ({cipher}), {} (ssl-mode={}",
            self.mode.verify().describe(),
            self.mode
        );
        if self.mode.verify() != Verify::Nothing {
            text.push_str(&format!(", CA {}", self.roots().describe()));
        }
        if let Some(cert) = &self.ssl_cert {
            text.push_str(&format!(", client certificate {}", cert.display()));
        }
        text.push(')');
        text
    }

    /// A hint for "Access denied" on a plaintext login: the server may require TLS (a user
    /// created with REQUIRE SSL, MariaDB's require_secure_transport=ON), and says only that.
    pub fn access_denied_hint(&self, url_key: &str) -> Option<String> {
        (self.mode == SslMode::Disabled).then(|| {
            format!(
                "this login was in plaintext (ssl-mode=DISABLED in {url_key}): the server may require TLS for this user (REQUIRE SSL, require_secure_transport=ON); set ssl-mode=VERIFY_IDENTITY (with ssl-ca) or REQUIRED"
            )
        })
    }
}

/// Why connecting failed: a setting that cannot work, or the driver's error.
#[derive(Debug)]
pub enum ConnectError {
    Tls(TlsError),
    Driver(mysql_async::Error),
}

/// Connects with `builder` and the URL's TLS settings. `PREFERRED` falls back to plaintext when
/// the server offers no TLS (as the MySQL clients do); the other modes never do.
pub async fn connect(builder: OptsBuilder, tls: &MysqlTls) -> Result<Conn, ConnectError> {
    let ssl = tls.ssl_opts().map_err(ConnectError::Tls)?;
    let secured = ssl.is_some();
    let mut with_tls = builder.clone().ssl_opts(ssl);
    if tls.mode.requires_tls() {
        // A server on this machine would otherwise be reached over its Unix socket instead,
        // where TLS is not used: connect where the URL says.
        with_tls = with_tls.prefer_socket(false);
    }
    match Conn::new(with_tls).await {
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
            if secured && tls.mode == SslMode::Preferred =>
        {
            tracing::debug!("the MySQL server offers no TLS; ssl-mode=PREFERRED: plaintext");
            Conn::new(builder.ssl_opts(None::<SslOpts>))
                .await
                .map_err(ConnectError::Driver)
        }
        other => other.map_err(ConnectError::Driver),
    }
}

/// The session's TLS cipher, empty for a plaintext session.
pub async fn session_cipher(conn: &mut Conn) -> Result<String, mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    let row: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await?;
    Ok(row.map(|(_, cipher)| cipher).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let u = parse_url("mysql://u:p@h:3306/db?ssl-mode=verify_identity&ssl-ca=/etc/ca%2B1.pem&prefer_socket=false").unwrap();
        assert_eq!(u.tls.mode, SslMode::VerifyIdentity);
        assert_eq!(u.tls.ssl_ca, Some(PathBuf::from("/etc/ca+1.pem")));
        assert!(!u.opts.prefer_socket());
        assert_eq!(u.opts.db_name(), Some("db"));

        // A CA without a mode: verify against it.
        let u = parse_url("mysql://u@h/db?ssl_ca=/ca.pem").unwrap();
        assert_eq!(u.tls.mode, SslMode::VerifyCa);
        assert_eq!(
            parse_url("mysql://u@h/").unwrap().tls.mode,
            SslMode::Preferred
        );
    }

    #[test]
    fn unknown_and_foreign_parameters_are_named() {
        for (url, named) in [
            ("mysql://u@h/db?sslmode=require", "sslmode"),
            ("mysql://u@h/db?require_ssl=true", "require_ssl"),
            ("mysql://u@h/db?ssl-mode=on", "ssl-mode"),
            ("mysql://u@h/db?ssl-cert=/c.pem", "ssl-key"),
        ] {
            let TlsError::Config(message) = parse_url(url).unwrap_err();
            assert!(message.contains(named), "{url}: {message}");
        }
    }
}
