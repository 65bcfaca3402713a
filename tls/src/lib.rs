//! TLS for every connection the agent makes: one rustls client configuration builder, with the
//! certificate verifiers that libpq's and MySQL's modes need and rustls does not ship, and the
//! words for a refused handshake (wrong CA, wrong host name, no TLS on the server) with the fix.
//!
//! ```text
//!  URL parameters ─▶ postgres::PgTls (sslmode, sslrootcert, sslcert, sslkey)  ─┐
//!                    nats (tls_ca, tls_cert, tls_key)                          ├▶ TlsOptions ─▶ client_config()
//!                    mysql::MysqlTls (ssl-mode, ssl-ca, ssl-cert, ssl-key) ─▶ mysql_async's SslOpts
//! ```
//!
//! The Postgres source (its own wire protocol), the Postgres sink (tokio-postgres) and the NATS
//! sink (async-nats) all use [`client_config`]; mysql_async builds its rustls configuration
//! itself from `SslOpts`, so [`mysql`] only maps the URL onto those.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

#[cfg(feature = "mysql")]
pub mod mysql;
pub mod postgres;
mod refusal;
mod verifiers;

pub use refusal::{refusal, Refusal};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A setting cannot be used as given (a file missing or holding no certificate, an unknown
    /// mode): fixing the configuration is the only cure.
    #[error("{0}")]
    Config(String),
}

/// What the server's certificate must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the connection is encrypted, but anyone in the middle can present a certificate
    /// (libpq's `require`, MySQL's `REQUIRED`). Handshake signatures are still checked, so the
    /// session keys belong to the certificate presented.
    Nothing,
    /// The chain must lead to a trusted root; the host name is not checked (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`, `VERIFY_IDENTITY`, NATS).
    ChainAndName,
}

impl Verify {
    /// For `check`: what was verified, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Verify::Nothing => "certificate not verified",
            Verify::Chain => "certificate chain verified, host name not checked",
            Verify::ChainAndName => "certificate chain and host name verified",
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// The operating system's store.
    System,
}

impl Roots {
    pub fn describe(&self) -> String {
        match self {
            Roots::File(p) => p.display().to_string(),
            Roots::System => "the OS certificate store".into(),
        }
    }
}

/// A client certificate (PEM chain) and its private key (PEM, PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The names a connection kind gives its settings, for messages that say what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocabulary {
    /// The URL parameter of the trusted roots (`sslrootcert`, `ssl-ca`, `tls_ca`).
    pub ca: &'static str,
    /// The client certificate and key parameters.
    pub cert: &'static str,
    pub key: &'static str,
    /// The mode parameter and its value that checks the chain only (for a host-name refusal),
    /// if the kind has one.
    pub mode: Option<&'static str>,
    pub chain_only: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub verify: Verify,
    /// Used when `verify` is not [`Verify::Nothing`].
    pub roots: Roots,
    pub identity: Option<ClientIdentity>,
    /// ALPN protocols offered (Postgres 17 expects `postgresql`).
    pub alpn: Vec<Vec<u8>>,
    pub vocabulary: Vocabulary,
}

/// The crypto provider of every TLS connection: explicit, since the process may have none (or
/// another one) installed as its default. Also installed as the process default for the
/// clients that build their configuration themselves (mysql_async).
pub fn provider() -> Arc<CryptoProvider> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Fails only when a default is installed already, which is then the one in use.
    let _ = CryptoProvider::install_default((*provider).clone());
    provider
}

/// The rustls client configuration for `options`. Reads the CA, certificate and key files now,
/// so a bad path fails before any connection is made.
pub fn client_config(options: &TlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(format!("TLS setup: {e}")))?;
    let vocabulary = &options.vocabulary;
    let builder = match options.verify {
        Verify::ChainAndName => {
            builder.with_root_certificates(load_roots(&options.roots, vocabulary)?)
        }
        Verify::Chain => {
            let roots = Arc::new(load_roots(&options.roots, vocabulary)?);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifiers::VerifyChainOnly::new(
                    roots, algs,
                )))
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifiers::AcceptAnyCert::new(algs))),
    };
    let mut config = match &options.identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let (chain, key) = load_identity(identity, vocabulary)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                TlsError::Config(format!(
                    "the client certificate {} and key {} do not go together: {e}",
                    identity.cert.display(),
                    identity.key.display()
                ))
            })?
        }
    };
    config.alpn_protocols = options.alpn.clone();
    Ok(config)
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError::Config(format!("cannot read {what} {}: {e}", path.display())))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read_file(path, what)?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Config(format!("bad PEM in {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Config(format!(
            "{what} {} contains no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn add_native_roots(roots: &mut RootCertStore) {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("loading OS root certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded OS root certificates");
}

/// The trusted roots, never empty.
pub fn load_roots(source: &Roots, vocabulary: &Vocabulary) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match source {
        Roots::System => add_native_roots(&mut roots),
        Roots::File(path) => {
            for cert in read_certs(path, vocabulary.ca)? {
                roots.add(cert).map_err(|e| {
                    TlsError::Config(format!(
                        "unusable certificate in {} {}: {e}",
                        vocabulary.ca,
                        path.display()
                    ))
                })?;
            }
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Config(format!(
            "no trusted root certificate found in {}; set {} in the URL",
            source.describe(),
            vocabulary.ca
        )));
    }
    Ok(roots)
}

pub(crate) fn load_identity(
    identity: &ClientIdentity,
    vocabulary: &Vocabulary,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certs(&identity.cert, vocabulary.cert)?;
    let data = read_file(&identity.key, vocabulary.key)?;
    let key = rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| {
            TlsError::Config(format!(
                "bad PEM in {} {}: {e}",
                vocabulary.key,
                identity.key.display()
            ))
        })?
        .ok_or_else(|| {
            TlsError::Config(format!(
                "{} {} contains no private key",
                vocabulary.key,
                identity.key.display()
            ))
        })?;
    Ok((chain, key))
}

/// `Some(identity)` when both files are given, an error when only one is.
pub fn identity_of(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    vocabulary: &Vocabulary,
) -> Result<Option<ClientIdentity>, TlsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ClientIdentity { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::Config(format!(
            "{} is set but {} is not: a client certificate needs its key",
            vocabulary.cert, vocabulary.key
        ))),
        (None, Some(_)) => Err(TlsError::Config(format!(
            "{} is set but {} is not: a client key needs its certificate",
            vocabulary.key, vocabulary.cert
        ))),
    }
}
