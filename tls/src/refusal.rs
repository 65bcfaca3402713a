//! A refused TLS connection in words, with the fix: the certificate is signed by a CA the agent
//! does not trust, it does not hold the host name connected to, it has expired, or the server
//! does not speak TLS although the mode requires it.
//!
//! Each client library wraps rustls's error in its own (tokio-postgres, mysql_async, async-nats
//! and the source's wire layer), so the error's text is what is classified: rustls's wording
//! ends up in all of them.

use crate::Vocabulary;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused, in words (`the server's certificate is not signed by a trusted CA`).
    pub what: &'static str,
    /// The fix, naming the setting to change.
    pub hint: String,
}

/// The refusal an error's text describes, if it is one. `url_key` is the configuration key the
/// settings live in (`source.url`, `sink.url`).
pub fn refusal(error_text: &str, vocabulary: &Vocabulary, url_key: &str) -> Option<Refusal> {
    let text = error_text.to_ascii_lowercase();
    let ca = vocabulary.ca;
    if text.contains("not valid for name") || text.contains("notvalidforname") {
        let chain_only = match (vocabulary.mode, vocabulary.chain_only) {
            (Some(mode), Some(value)) => {
                format!(", or set {mode}={value} in {url_key} to check the chain only")
            }
            _ => String::new(),
        };
        return Some(Refusal {
            what: "the server's certificate does not hold the host name connected to",
            hint: format!(
                "use a host name in {url_key} that the certificate holds (its subjectAltName, listed above){chain_only}"
            ),
        });
    }
    if text.contains("unknownissuer")
        || text.contains("unknown issuer")
        || text.contains("badsignature")
        || text.contains("bad signature")
    {
        return Some(Refusal {
            what: "the server's certificate is not signed by a CA the agent trusts",
            hint: format!(
                "set {ca} in {url_key} to the CA certificate (PEM) that signed the server's certificate"
            ),
        });
    }
    if text.contains("certificate expired") || (text.contains("expired") && text.contains("certif"))
    {
        return Some(Refusal {
            what: "the server's certificate has expired",
            hint: "renew the server's certificate (or fix this machine's clock)".into(),
        });
    }
    let no_tls = [
        "does not accept tls",
        "does not support tls",
        "does not have this capability",
        "does not offer tls",
    ];
    if no_tls.iter().any(|s| text.contains(s)) {
        let lower = match vocabulary.mode {
            Some(mode) => format!(", or (on a network you trust) change {mode} in {url_key}"),
            None => String::new(),
        };
        return Some(Refusal {
            what: "the server does not offer TLS, which the connection requires",
            hint: format!("enable TLS on the server{lower}"),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::VOCABULARY;

    #[test]
    fn rustls_wording_is_named_with_the_fix() {
        let r = refusal(
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer",
            &VOCABULARY,
            "sink.url",
        )
        .unwrap();
        assert!(r.what.contains("not signed by a CA"));
        assert!(r.hint.contains("sslrootcert in sink.url"), "{}", r.hint);

        let r = refusal(
            "invalid peer certificate: certificate not valid for name \"127.0.0.2\"; certificate is only valid for DnsName(\"localhost\") or IpAddress(127.0.0.1)",
            &VOCABULARY,
            "source.url",
        )
        .unwrap();
        assert!(r.what.contains("host name"));
        assert!(
            r.hint.contains("sslmode=verify-ca in source.url"),
            "{}",
            r.hint
        );

        let r = refusal("server does not support TLS", &VOCABULARY, "sink.url").unwrap();
        assert!(r.what.contains("does not offer TLS"));
        assert!(refusal("connection refused", &VOCABULARY, "sink.url").is_none());
    }
}
