//! Topics the agent creates before it first writes to them (`sink.topic_partitions`), as
//! Debezium's `topic.creation.*`: managed clusters (MSK, Confluent Cloud) do not create topics on
//! first use, and a broker-made topic gets the broker's default partition count.

use std::collections::HashSet;
use std::time::Duration;

use cdc_core::PipelineError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// How long the brokers may take to create a topic.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the agent creates a missing topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicCreation {
    pub partitions: i32,
    /// `None`: the brokers' `default.replication.factor`.
    pub replication: Option<i32>,
    /// Topic-level settings (`cleanup.policy`, `retention.ms`, ...).
    pub config: Vec<(String, String)>,
}

/// Creates each topic once per producer (an existing topic is left as it is).
pub struct TopicCreator {
    admin: AdminClient<DefaultClientContext>,
    creation: TopicCreation,
    /// Topics known to exist.
    ready: HashSet<String>,
}

impl TopicCreator {
    /// An admin client with the producer's settings (brokers, TLS, SASL).
    pub fn new(client: &ClientConfig, creation: TopicCreation) -> Result<Self, PipelineError> {
        let admin = client.create().map_err(|e| {
            PipelineError::definite("config", format!("cannot make a Kafka admin client: {e}"))
                .with_hint("check sink.properties")
        })?;
        Ok(TopicCreator {
            admin,
            creation,
            ready: HashSet::new(),
        })
    }

    pub fn is_ready(&self, topic: &str) -> bool {
        self.ready.contains(topic)
    }

    /// Makes sure `topic` exists: created with the configured partitions if it does not.
    pub async fn ensure(&mut self, topic: &str) -> Result<(), PipelineError> {
        if self.ready.contains(topic) {
            return Ok(());
        }
        let replication = TopicReplication::Fixed(self.creation.replication.unwrap_or(-1));
        let mut new_topic = NewTopic::new(topic, self.creation.partitions, replication);
        for (key, value) in &self.creation.config {
            new_topic = new_topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| {
                PipelineError::transient("sink", format!("creating Kafka topic {topic}: {e}"))
            })?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(
                    topic,
                    partitions = self.creation.partitions,
                    "created Kafka topic"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(creation_error(topic, code)),
            }
        }
        self.ready.insert(topic.to_string());
        Ok(())
    }
}

fn creation_error(topic: &str, code: RDKafkaErrorCode) -> PipelineError {
    let definite = |hint: &str| {
        PipelineError::definite(
            "sink",
            format!("Kafka refused to create topic {topic}: {code}"),
        )
        .with_hint(hint)
    };
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            definite("grant the agent's principal CREATE on the topic (or the cluster), or create the topics first and drop sink.topic_partitions")
        }
        RDKafkaErrorCode::InvalidReplicationFactor => definite(
            "set sink.topic_replication to at most the number of brokers (or leave it out for the brokers' default)",
        ),
        RDKafkaErrorCode::InvalidPartitions => definite("set sink.topic_partitions to 1 or more"),
        RDKafkaErrorCode::InvalidConfig => {
            definite("check sink.topic_config: each must be a Kafka topic setting")
        }
        RDKafkaErrorCode::InvalidTopic => definite("change sink.topic: the broker refuses this name"),
        RDKafkaErrorCode::PolicyViolation => {
            definite("the brokers' create-topic policy refuses these settings: change sink.topic_partitions / topic_replication / topic_config")
        }
        _ => PipelineError::transient(
            "sink",
            format!("creating Kafka topic {topic}: {code}"),
        ),
    }
}
