//! Delivery reports, counted: librdkafka calls [`Tracker::delivery`] on the producer's polling
//! thread once per message, in order per partition; the sink compares the count with what it
//! sent to know that everything up to a flush is acknowledged (`acks=all`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::security::{Refusal, Refusals};

/// The first delivery that failed since the producer was made.
#[derive(Clone, Debug)]
pub struct Failure {
    pub topic: String,
    pub code: Option<RDKafkaErrorCode>,
    pub error: String,
}

/// What the polling thread reports to the sink.
#[derive(Default)]
pub struct Deliveries {
    /// Delivery reports received, failed ones included.
    reported: AtomicU64,
    failure: Mutex<Option<Failure>>,
    /// Woken at every report: a flush or a full queue waits on it.
    progress: tokio::sync::Notify,
    /// The last time the brokers refused the client (credentials, TLS), if they did.
    pub refusals: Refusals,
}

impl Deliveries {
    pub fn reported(&self) -> u64 {
        self.reported.load(Ordering::Acquire)
    }

    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Waits for the next report, or `at_most` (a report that came between the caller's check
    /// and this call leaves a stored wake-up, so none is lost; the bound is belt and braces).
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.progress.notified()).await;
    }

    fn record(&self, failure: Option<Failure>) {
        if let Some(failure) = failure {
            let mut first = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(failure);
        }
        self.reported.fetch_add(1, Ordering::AcqRel);
        self.progress.notify_one();
    }
}

/// The producer's context: delivery reports into [`Deliveries`], librdkafka's logs into tracing.
pub struct Tracker(pub Arc<Deliveries>);

impl ClientContext for Tracker {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(facility, "librdkafka: {message}")
            }
            // Connection failures log at Error; librdkafka retries them, so they are warnings
            // here: what is lost shows up as failed deliveries.
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Client-level errors (a broker down, all brokers down) are retried by librdkafka; what
        // is lost shows up as failed deliveries, which stop the checkpoint. A refusal (bad
        // credentials, a certificate that does not verify) is kept for `open` and `check` to
        // report. A transport failure was logged already by `log`.
        if let Some(refusal) = Refusal::of(&error, reason) {
            tracing::error!(%error, "Kafka refused the agent: {reason}");
            self.0.refusals.record(refusal);
        } else if error.rdkafka_error_code() != Some(RDKafkaErrorCode::BrokerTransportFailure) {
            tracing::warn!(%error, "Kafka client: {reason}");
        }
    }
}

impl ProducerContext for Tracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let failure = match result {
            Ok(_) => None,
            Err((error, message)) => Some(Failure {
                topic: message.topic().to_string(),
                code: error.rdkafka_error_code(),
                error: error.to_string(),
            }),
        };
        self.0.record(failure);
    }
}
