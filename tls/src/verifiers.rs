//! The certificate verifiers that libpq's and MySQL's modes need and rustls does not ship:
//! accept any certificate (`require`), and check the chain but not the host name (`verify-ca`).
//! `verify-full` is rustls's own WebPKI verifier.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// For sslmode prefer/require: any certificate is accepted (libpq does the same), but the
/// handshake signatures are still checked so the session keys belong to the presented cert.
#[derive(Debug)]
pub(crate) struct AcceptAnyCert {
    algs: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCert {
    pub(crate) fn new(algs: WebPkiSupportedAlgorithms) -> Self {
        AcceptAnyCert { algs }
    }
}

/// For sslmode verify-ca: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
pub(crate) struct VerifyChainOnly {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl VerifyChainOnly {
    pub(crate) fn new(roots: Arc<RootCertStore>, algs: WebPkiSupportedAlgorithms) -> Self {
        VerifyChainOnly { roots, algs }
    }
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{load_roots, Roots, Vocabulary};

    const VOCABULARY: Vocabulary = Vocabulary {
        ca: "sslrootcert",
        cert: "sslcert",
        key: "sslkey",
        mode: None,
        chain_only: None,
    };

    /// The testenv's CA (scripts/testenv.sh env exports CDC_TEST_PG_CA).
    fn ca_path() -> PathBuf {
        PathBuf::from(std::env::var("CDC_TEST_PG_CA").expect(
            "CDC_TEST_PG_CA is not set: run `bash scripts/testenv.sh start` and eval its `env`",
        ))
    }

    fn testenv_dir() -> PathBuf {
        ca_path().parent().expect("a directory").to_path_buf()
    }

    fn wrong_ca_path() -> PathBuf {
        testenv_dir().join("wrong-ca.crt")
    }

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

        let roots = Arc::new(load_roots(&Roots::File(ca_path()), &VOCABULARY).unwrap());
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

        let wrong_roots = Arc::new(load_roots(&Roots::File(wrong_ca_path()), &VOCABULARY).unwrap());
        let ca_only = VerifyChainOnly {
            roots: wrong_roots,
            algs,
        };
        assert!(ca_only
            .verify_server_cert(&cert, &[], &right_name, &[], now)
            .is_err());
    }
}
