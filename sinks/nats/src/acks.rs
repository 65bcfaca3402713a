//! JetStream publish acknowledgements, collected on one subscription.
//!
//! A JetStream publish is a core NATS publish with a reply subject: the stream answers there with
//! `{"stream":..,"seq":..}` (or an error). async-nats' `jetstream::Context::publish` makes a
//! request per message (a oneshot channel, a timer, a parsed ack); at a change per message that
//! machinery cost more CPU than everything else in the pipeline. Here every message gets a reply
//! subject under one inbox, and the sink only counts the answers.

use std::time::Duration;

use async_nats::{Client, StatusCode, Subscriber};
use cdc_core::PipelineError;
use futures_util::{FutureExt, StreamExt};

/// How long the sink waits for the next acknowledgement before it gives up on the connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AckInbox {
    prefix: String,
    subscriber: Subscriber,
    sent: u64,
    acked: u64,
}

impl AckInbox {
    pub async fn open(client: &Client) -> Result<Self, PipelineError> {
        let prefix = client.new_inbox();
        let subscriber = client.subscribe(format!("{prefix}.*")).await.map_err(|e| {
            PipelineError::transient("sink", format!("subscribing to publish acks: {e}"))
        })?;
        Ok(AckInbox {
            prefix,
            subscriber,
            sent: 0,
            acked: 0,
        })
    }

    /// The reply subject of the next message (counted as sent).
    pub fn next_reply(&mut self) -> String {
        self.sent += 1;
        format!("{}.{}", self.prefix, self.sent)
    }

    /// The message of the last [`next_reply`](Self::next_reply) was not sent after all (the
    /// client refused it before writing it): no ack will come for it.
    pub fn unsent(&mut self) {
        self.sent -= 1;
    }

    /// Messages sent and not acknowledged yet.
    pub fn outstanding(&self) -> u64 {
        self.sent - self.acked
    }

    /// Takes the acknowledgements that have arrived, without waiting.
    pub fn take_ready(&mut self) -> Result<(), PipelineError> {
        while let Some(next) = self.subscriber.next().now_or_never() {
            match next {
                Some(message) => self.count(&message)?,
                None => return Err(closed()),
            }
        }
        Ok(())
    }

    /// Waits for the next acknowledgement ([`ACK_TIMEOUT`] at most).
    pub async fn wait_one(&mut self) -> Result<(), PipelineError> {
        match tokio::time::timeout(ACK_TIMEOUT, self.subscriber.next()).await {
            Ok(Some(message)) => self.count(&message),
            Ok(None) => Err(closed()),
            Err(_) => Err(PipelineError::transient(
                "sink",
                format!(
                    "no JetStream publish ack in {}s ({} messages unacknowledged)",
                    ACK_TIMEOUT.as_secs(),
                    self.outstanding()
                ),
            )),
        }
    }

    fn count(&mut self, message: &async_nats::Message) -> Result<(), PipelineError> {
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(PipelineError::definite(
                "config",
                "no JetStream stream stores the sink's subjects (the server answered: no responders)",
            )
            .with_hint("make sink.stream capture the sink's subjects, or set sink.create_stream = true"));
        }
        let payload = &message.payload;
        if payload.windows(8).any(|w| w == b"\"error\":") {
            return Err(PipelineError::transient(
                "sink",
                format!(
                    "JetStream refused a message: {}",
                    String::from_utf8_lossy(payload)
                ),
            ));
        }
        self.acked += 1;
        Ok(())
    }
}

fn closed() -> PipelineError {
    PipelineError::transient(
        "connection",
        "the NATS connection closed the ack subscription",
    )
}
