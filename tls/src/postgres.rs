//! Postgres's vocabulary, as libpq spells it: `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
//! Shared by the source (its own wire protocol) and the sink (tokio-postgres), so that one URL
//! means the same on both sides.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{identity_of, ClientIdentity, Roots, TlsError, TlsOptions, Verify, Vocabulary};

pub const VOCABULARY: Vocabulary = Vocabulary {
    ca: "sslrootcert",
    cert: "sslcert",
    key: "sslkey",
    mode: Some("sslmode"),
    chain_only: Some("verify-ca"),
};

/// libpq's `sslmode`, without `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    /// TLS or fail, without verifying the certificate.
    Require,
    /// TLS, certificate must chain to a trusted root; the host name is not checked.
    VerifyCa,
    /// TLS, certificate must chain to a trusted root and match the host name.
    VerifyFull,
}

impl SslMode {
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub fn verify(self) -> Verify {
        match self {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Verify::Nothing,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::ChainAndName,
        }
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(TlsError::Config(
                "sslmode=allow is not supported; use disable or prefer".into(),
            )),
            other => Err(TlsError::Config(format!(
                "unknown sslmode {other:?} (expected disable, prefer, require, verify-ca or verify-full)"
            ))),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS settings of a `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgTls {
    pub sslmode: SslMode,
    /// PEM file of trusted roots for verify-ca/verify-full; `system` means the OS store.
    /// Default: `~/.postgresql/root.crt` if it exists, else the OS store.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate and key (both or neither).
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

impl PgTls {
    /// Takes a URL parameter if it is a TLS one; `Ok(false)` for any other.
    pub fn take_param(&mut self, key: &str, value: &str) -> Result<bool, TlsError> {
        match key {
            "sslmode" => self.sslmode = value.parse()?,
            "sslrootcert" => self.sslrootcert = Some(PathBuf::from(value)),
            "sslcert" => self.sslcert = Some(PathBuf::from(value)),
            "sslkey" => self.sslkey = Some(PathBuf::from(value)),
            "sslpassword" => {
                return Err(TlsError::Config(
                    "sslpassword: encrypted client keys are not supported; give sslkey an unencrypted key file (readable only by the agent)".into(),
                ))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks what can be checked without connecting (both of sslcert and sslkey).
    pub fn validate(&self) -> Result<(), TlsError> {
        self.identity().map(|_| ())
    }

    fn identity(&self) -> Result<Option<ClientIdentity>, TlsError> {
        identity_of(self.sslcert.clone(), self.sslkey.clone(), &VOCABULARY)
    }

    /// The trusted roots, in libpq's order of lookup (with the OS store as the last resort
    /// instead of an error).
    pub fn roots(&self) -> Roots {
        match &self.sslrootcert {
            Some(p) if p.as_os_str() == "system" => Roots::System,
            Some(p) => Roots::File(p.clone()),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql").join("root.crt"))
                .filter(|p| p.exists())
                .map_or(Roots::System, Roots::File),
        }
    }

    pub fn options(&self) -> Result<TlsOptions, TlsError> {
        Ok(TlsOptions {
            verify: self.sslmode.verify(),
            roots: self.roots(),
            identity: self.identity()?,
            // What libpq 17 sends; servers before 17 ignore it, 17+ accept it.
            alpn: vec![b"postgresql".to_vec()],
            vocabulary: VOCABULARY,
        })
    }

    /// For `check`: TLS on or off on a connection made with these settings, and what was
    /// verified.
    pub fn describe(&self, tls_on: bool) -> String {
        if !tls_on {
            return match self.sslmode {
                SslMode::Disable => "TLS off (sslmode=disable)".into(),
                _ => format!(
                    "TLS off: the server does not offer it (sslmode={}; set sslmode=verify-full to require it)",
                    self.sslmode
                ),
            };
        }
        let mut text = format!(
            "TLS on, {} (sslmode={}",
            self.sslmode.verify().describe(),
            self.sslmode
        );
        if self.sslmode.verify() != Verify::Nothing {
            text.push_str(&format!(", CA {}", self.roots().describe()));
        }
        if let Some(cert) = &self.sslcert {
            text.push_str(&format!(", client certificate {}", cert.display()));
        }
        text.push(')');
        text
    }
}
