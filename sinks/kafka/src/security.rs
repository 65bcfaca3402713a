//! TLS and SASL to the brokers: defaults that make a secured cluster work as users configure
//! it, and the client errors that mean "the brokers refuse us" told apart from "not reachable".
//!
//! The settings themselves are librdkafka's (`security.protocol`, `sasl.*`, `ssl.*`), passed
//! through `sink.properties`: the names every librdkafka-based tool and Kafka's own docs use.

use std::sync::Mutex;

use cdc_core::PipelineError;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Settings that tell librdkafka where to find the CAs it trusts.
const CA_SETTINGS: [&str; 3] = ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"];

/// `security.protocol` is `ssl` or `sasl_ssl`.
fn uses_tls(config: &ClientConfig) -> bool {
    config
        .get("security.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"))
}

/// With TLS and no CA configured, the machine's CA bundle (`ssl.ca.location = probe`): OpenSSL is
/// built into the binary, and its own default directory (under /usr/local/ssl) holds no CAs on
/// the machines the agent runs on, so a broker with a publicly signed certificate (Confluent
/// Cloud, MSK, Aiven) would fail verification otherwise.
pub fn apply_defaults(config: &mut ClientConfig) {
    if uses_tls(config) && CA_SETTINGS.iter().all(|key| config.get(key).is_none()) {
        config.set("ssl.ca.location", "probe");
    }
}

/// Why the brokers refused the agent, in words and with the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub what: &'static str,
    pub detail: String,
    pub hint: &'static str,
}

impl Refusal {
    /// A client-level error that retrying will not cure: bad credentials, a mechanism the broker
    /// does not offer, a certificate that does not verify. `None` for everything else (a broker
    /// down, a connection reset), which librdkafka retries.
    pub fn of(error: &KafkaError, reason: &str) -> Option<Refusal> {
        let code = error.rdkafka_error_code()?;
        let detail = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        let lower = detail.to_ascii_lowercase();
        match code {
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::IllegalSASLState => Some(Refusal {
                what: "SASL authentication failed",
                detail,
                hint: "check sink.properties \"sasl.mechanism\", \"sasl.username\" and \"sasl.password\" (and that the user exists for that mechanism on the brokers)",
            }),
            RDKafkaErrorCode::UnsupportedSASLMechanism => Some(Refusal {
                what: "the brokers do not offer this SASL mechanism",
                detail,
                hint: "set sink.properties \"sasl.mechanism\" to one the brokers enable (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)",
            }),
            RDKafkaErrorCode::SSL if lower.contains("verify") || lower.contains("certificate") => {
                Some(Refusal {
                    what: "the brokers' TLS certificate did not verify",
                    detail,
                    hint: "set sink.properties \"ssl.ca.location\" to the CA file that signed the brokers' certificates (the default is the machine's CA bundle), and connect by a name the certificate holds",
                })
            }
            // OpenSSL before 3.2 says "wrong version number", later ones "record layer failure".
            RDKafkaErrorCode::SSL
                if lower.contains("wrong version") || lower.contains("record layer failure") =>
            {
                Some(Refusal {
                    what: "TLS handshake failed",
                    detail,
                    hint: "the brokers' port may not speak TLS: check sink.brokers and sink.properties \"security.protocol\" (ssl / sasl_ssl for a TLS listener, plaintext / sasl_plaintext otherwise)",
                })
            }
            _ => None,
        }
    }

    /// What happened, naming the brokers.
    pub fn message(&self, brokers: &str) -> String {
        format!("Kafka at {brokers}: {}: {}", self.what, self.detail)
    }

    pub fn to_error(&self, brokers: &str) -> PipelineError {
        PipelineError::definite("config", self.message(brokers)).with_hint(self.hint)
    }
}

/// The last refusal the client reported (set from librdkafka's error callback).
#[derive(Default)]
pub struct Refusals(Mutex<Option<Refusal>>);

impl Refusals {
    pub fn record(&self, refusal: Refusal) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
    }

    pub fn last(&self) -> Option<Refusal> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_without_a_ca_uses_the_machines_bundle() {
        let mut config = ClientConfig::new();
        config.set("security.protocol", "SASL_SSL");
        apply_defaults(&mut config);
        assert_eq!(config.get("ssl.ca.location"), Some("probe"));

        let mut own = ClientConfig::new();
        own.set("security.protocol", "ssl")
            .set("ssl.ca.pem", "-----BEGIN CERTIFICATE-----");
        apply_defaults(&mut own);
        assert_eq!(own.get("ssl.ca.location"), None, "a CA of the user's wins");

        let mut plain = ClientConfig::new();
        plain.set("security.protocol", "sasl_plaintext");
        apply_defaults(&mut plain);
        assert_eq!(plain.get("ssl.ca.location"), None);
    }

    #[test]
    fn refusals_are_told_from_outages() {
        let auth = KafkaError::ClientCreation(String::new());
        assert_eq!(
            Refusal::of(&auth, "x"),
            None,
            "no error code: not a refusal"
        );
        let code = |c| KafkaError::MetadataFetch(c);
        let sasl = Refusal::of(
            &code(RDKafkaErrorCode::Authentication),
            "SASL SCRAM-SHA-512 mechanism handshake failed: Broker: SASL Authentication failed",
        )
        .unwrap();
        assert!(sasl.hint.contains("sasl.password"));
        let tls = Refusal::of(
            &code(RDKafkaErrorCode::SSL),
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
        )
        .unwrap();
        assert!(tls.hint.contains("ssl.ca.location"));
        assert_eq!(
            Refusal::of(
                &code(RDKafkaErrorCode::BrokerTransportFailure),
                "Connection refused"
            ),
            None
        );
        assert_eq!(
            Refusal::of(
                &code(RDKafkaErrorCode::SSL),
                "SSL transport error: Connection reset"
            ),
            None,
            "a reset during TLS is an outage"
        );
        assert_eq!(
            Refusal::of(
                &code(RDKafkaErrorCode::SSL),
                "SSL transport error: bad record mac"
            ),
            None,
            "a corrupted record is not a misconfiguration"
        );
        assert!(Refusal::of(
            &code(RDKafkaErrorCode::SSL),
            "SSL handshake failed: error:0A00010B:SSL routines::wrong version number"
        )
        .is_some());
    }
}
