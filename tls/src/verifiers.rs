//! TLS: the rustls client configuration for each `sslmode` (with the certificate verifiers that
//! libpq's modes need and rustls does not ship), the trusted roots, and the SSLRequest
//! negotiation that upgrades a TCP connection before the startup packet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::protocol;
use super::transport::{io_context, Stream};
use super::{ConnectParams, SslMode, WireError};

/// For sslmode prefer/require: any certificate is accepted (libpq does the same), but the
/// handshake signatures are still checked so the session keys belong to the presented cert.
#[derive(Debug)]
struct AcceptAnyCert {
    algs: WebPkiSupportedAlgorithms,
}

/// For sslmode verify-ca: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct VerifyChainOnly {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ServerCertVerifier for VerifyChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), WireError> {
    let data = std::fs::read(path)
        .map_err(|e| WireError::Tls(format!("cannot read sslrootcert {}: {e}", path.display())))?;
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut data.as_slice()) {
        let cert = cert.map_err(|e| {
            WireError::Tls(format!("bad PEM in sslrootcert {}: {e}", path.display()))
        })?;
        roots.add(cert).map_err(|e| {
            WireError::Tls(format!(
                "unusable certificate in sslrootcert {}: {e}",
                path.display()
            ))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(WireError::Tls(format!(
            "sslrootcert {} contains no PEM certificate",
            path.display()
        )));
    }
    Ok(())
}

fn add_native_roots(roots: &mut RootCertStore) {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("loading OS root certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded OS root certificates");
}

/// Trusted roots for verify-ca/verify-full, in libpq's order of lookup (with the OS store as
/// the last resort instead of an error).
fn load_roots(sslrootcert: Option<&Path>) -> Result<RootCertStore, WireError> {
    let mut roots = RootCertStore::empty();
    let source = match sslrootcert {
        Some(p) if p == Path::new("system") => {
            add_native_roots(&mut roots);
            "the OS certificate store".to_string()
        }
        Some(p) => {
            add_pem_file(&mut roots, p)?;
            p.display().to_string()
        }
        None => {
            let home_root = std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql").join("root.crt"))
                .filter(|p| p.exists());
            match home_root {
                Some(p) => {
                    add_pem_file(&mut roots, &p)?;
                    p.display().to_string()
                }
                None => {
                    add_native_roots(&mut roots);
                    "the OS certificate store".to_string()
                }
            }
        }
    };
    if roots.is_empty() {
        return Err(WireError::Tls(format!(
            "no trusted root certificate found in {source}; set sslrootcert in the URL"
        )));
    }
    Ok(roots)
}

pub(super) fn tls_config(params: &ConnectParams) -> Result<ClientConfig, WireError> {
    // An explicit provider: the process may have no (or another) default installed.
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WireError::Tls(format!("TLS setup: {e}")))?;
    let mut config = match params.sslmode {
        SslMode::VerifyFull => builder
            .with_root_certificates(load_roots(params.sslrootcert.as_deref())?)
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let roots = Arc::new(load_roots(params.sslrootcert.as_deref())?);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyChainOnly { roots, algs }))
                .with_no_client_auth()
        }
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { algs }))
            .with_no_client_auth(),
    };
    // What libpq 17 sends; servers before 17 ignore it, 17+ accept it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// SSLRequest, then the TLS handshake if the server agrees.
pub(super) async fn negotiate_tls(
    mut tcp: TcpStream,
    params: &ConnectParams,
    config: ClientConfig,
) -> Result<Stream, WireError> {
    let mut buf = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf)
        .await
        .map_err(|e| io_context(e, "sending SSLRequest"))?;
    // Exactly one byte, read unbuffered: anything the server (or a man in the middle) sends
    // after 'S' must go through the TLS layer, never be taken as plaintext (CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| io_context(e, "reading the answer to SSLRequest"))?;
    match answer[0] {
        b'S' => {
            let server_name = ServerName::try_from(params.host.clone()).map_err(|e| {
                WireError::Tls(format!(
                    "{:?} is not a valid TLS server name: {e}",
                    params.host
                ))
            })?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await
                .map_err(|e| {
                    WireError::Tls(format!(
                        "handshake with {}:{} (sslmode={}) failed: {e}",
                        params.host, params.port, params.sslmode
                    ))
                })?;
            Ok(Stream::Tls(Box::new(tls)))
        }
        b'N' if params.sslmode.requires_tls() => Err(WireError::Tls(format!(
            "server {}:{} does not accept TLS connections, but sslmode={}",
            params.host, params.port, params.sslmode
        ))),
        b'N' => Ok(Stream::Tcp(tcp)),
        other => Err(protocol(format!(
            "unexpected answer {other:#04x} to SSLRequest (is this a Postgres server?)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::{ca_path, testenv_dir, wrong_ca_path};

    /// verify-ca checks the chain but not the name; verify-full checks both. Tested on the
    /// verifiers directly: the test server is only reachable under names its cert carries.
    #[test]
    fn verify_ca_ignores_host_name_but_not_chain() {
        let pem = std::fs::read(testenv_dir().join("server.crt")).expect("testenv server.crt");
        let cert = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("a cert")
            .expect("valid PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algs = provider.signature_verification_algorithms;
        let wrong_name = ServerName::try_from("db.elsewhere.example").unwrap();
        let right_name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();

        let roots = Arc::new(load_roots(Some(&ca_path())).unwrap());
        let ca_only = VerifyChainOnly {
            roots: roots.clone(),
            algs,
        };
        assert!(ca_only
            .verify_server_cert(&cert, &[], &wrong_name, &[], now)
            .is_ok());

        let full = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        assert!(full
            .verify_server_cert(&cert, &[], &right_name, &[], now)
            .is_ok());
        assert!(full
            .verify_server_cert(&cert, &[], &wrong_name, &[], now)
            .is_err());

        let wrong_roots = Arc::new(load_roots(Some(&wrong_ca_path())).unwrap());
        let ca_only = VerifyChainOnly {
            roots: wrong_roots,
            algs,
        };
        assert!(ca_only
            .verify_server_cert(&cert, &[], &right_name, &[], now)
            .is_err());
    }
}
