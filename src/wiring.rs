//! Builds the configured source and sink, and reaches the source for `check`, `status` and
//! `reset`. The only place that knows which crates implement which `type`.

use std::sync::Arc;

use cdc_core::dead_letter::{DeadLetterHandle, DeadLetters};
use cdc_core::{CheckOutcome, PipelineError, Position, Sink, Source};
use cdc_mysql::{MysqlConfig, MysqlSource};
use cdc_postgres::{PostgresConfig, PostgresSource};

use crate::config::{Config, SinkType, SnapshotMethodConfig, SnapshotMode, SourceType};
use crate::store::{PipelineMeta, SourceState, StateStore};

pub fn postgres_config(config: &Config) -> PostgresConfig {
    PostgresConfig {
        url: config.source.url.expose().to_string(),
        tables: config.source.tables.iter().map(|t| t.0.clone()).collect(),
        slot: config.slot_name(),
        publication: config.publication_name(),
        initial_snapshot: config.source.snapshot != SnapshotMode::Never,
        snapshot_only: config.source.snapshot == SnapshotMode::InitialOnly,
        heartbeat_interval: (config.source.heartbeat_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(config.source.heartbeat_interval_ms)),
        snapshot_method: snapshot_method(config),
        snapshot_workers: config.source.snapshot_workers,
        snapshot_chunk_rows: config.source.snapshot_chunk_rows,
        // Validated when the config was loaded.
        table_rules: crate::config::table_rules(config).unwrap_or_default(),
        streaming: config.postgres_streaming(),
        spill_dir: config.state_dir().join("spill").join(&*config.agent.name),
    }
}

pub fn mysql_config(config: &Config) -> MysqlConfig {
    MysqlConfig {
        url: config.source.url.expose().to_string(),
        tables: config.source.tables.iter().map(|t| t.0.clone()).collect(),
        server_id: config.server_id(),
        initial_snapshot: config.source.snapshot != SnapshotMode::Never,
        snapshot_only: config.source.snapshot == SnapshotMode::InitialOnly,
        snapshot_method: snapshot_method(config),
        snapshot_workers: config.source.snapshot_workers,
        snapshot_chunk_rows: config.source.snapshot_chunk_rows,
        signal_table: config
            .source
            .signal_table
            .clone()
            .unwrap_or_else(|| cdc_mysql::chunked::DEFAULT_SIGNAL_TABLE.to_string()),
        // Validated when the config was loaded.
        table_rules: crate::config::table_rules(config).unwrap_or_default(),
    }
}

fn snapshot_method(config: &Config) -> cdc_core::chunked::SnapshotMethod {
    use cdc_core::chunked::SnapshotMethod;
    match config.source.snapshot_method {
        SnapshotMethodConfig::Auto => SnapshotMethod::Auto,
        SnapshotMethodConfig::Watermark => SnapshotMethod::Watermark,
        SnapshotMethodConfig::Transaction => SnapshotMethod::Transaction,
    }
}

pub async fn build_source(
    config: &Config,
    meta: &mut PipelineMeta,
    store: &Arc<StateStore>,
) -> Result<Box<dyn Source>, PipelineError> {
    match config.source.kind {
        SourceType::Postgres => {
            let pg = postgres_config(config);
            meta.slot = Some(pg.slot.clone());
            meta.publication = Some(pg.publication.clone());
            let state = SourceState::new(Arc::clone(store), &config.agent.name);
            Ok(Box::new(
                PostgresSource::prepare(pg, Arc::new(state)).await?,
            ))
        }
        SourceType::Mysql => {
            let state = SourceState::new(Arc::clone(store), &config.agent.name);
            Ok(Box::new(
                MysqlSource::prepare(mysql_config(config), Arc::new(state)).await?,
            ))
        }
    }
}

/// The `[[table]]` rules as the sink driver applies them.
pub fn masker(config: &Config) -> Result<cdc_core::columns::Masker, PipelineError> {
    let rules = crate::config::table_rules(config)
        .map_err(|(key, why)| PipelineError::definite("config", format!("`{key}` {why}")))?;
    Ok(cdc_core::columns::Masker::new(
        rules,
        config
            .agent
            .mask_key
            .as_ref()
            .map(|k| k.expose().as_bytes()),
    ))
}

/// The sink of `run`: refused changes go to `dead_letters` (`sink.on_error = "dlq"`), changes to
/// keys it holds are held behind them; a DuckDB sink lends its open database to verify run by
/// the agent through `access`.
pub fn build_sink(
    config: &Config,
    dead_letters: DeadLetterHandle,
    access: &crate::verify::TargetAccess,
) -> Result<Box<dyn Sink>, PipelineError> {
    #[cfg(feature = "duckdb")]
    if let (SinkType::Duckdb, Some(shared)) = (config.sink.kind, &access.duckdb) {
        return Ok(Box::new(
            cdc_sink_duckdb::DuckdbSink::new(duckdb_sink_config(config)).sharing(shared.clone()),
        ));
    }
    let _ = access;
    build_any_sink(config, dead_letters, true)
}

/// A sink that applies changes of the dead-letter store again: it leaves the target's recorded
/// position alone, and tells `refused` what the target refuses once more.
pub fn build_replay_sink(
    config: &Config,
    refused: Arc<dyn DeadLetters>,
) -> Result<Box<dyn Sink>, PipelineError> {
    build_any_sink(config, Some(refused), false)
}

fn build_any_sink(
    config: &Config,
    dead_letters: DeadLetterHandle,
    record_position: bool,
) -> Result<Box<dyn Sink>, PipelineError> {
    match config.sink.kind {
        SinkType::Jsonl => {
            let path = config.sink.path.as_deref().unwrap_or("-");
            Ok(Box::new(cdc_sink_jsonl::JsonlSink::new(path)?))
        }
        SinkType::Postgres => Ok(Box::new(cdc_sink_postgres::PostgresSink::new(
            cdc_sink_postgres::PostgresSinkConfig {
                dead_letters,
                record_position,
                ..postgres_sink_config(config)
            },
        ))),
        SinkType::Mysql => Ok(Box::new(cdc_sink_mysql::MysqlSink::new(
            cdc_sink_mysql::MysqlSinkConfig {
                dead_letters,
                record_position,
                ..mysql_sink_config(config)
            },
        ))),
        #[cfg(feature = "duckdb")]
        SinkType::Duckdb => Ok(Box::new(cdc_sink_duckdb::DuckdbSink::new(
            duckdb_sink_config(config),
        ))),
        SinkType::Nats => Ok(Box::new(cdc_sink_nats::NatsSink::new(
            cdc_sink_nats::NatsSinkConfig {
                dead_letters,
                replay: !record_position,
                ..nats_sink_config(config)?
            },
        ))),
        SinkType::Kafka => Ok(Box::new(cdc_sink_kafka::KafkaSink::new(
            cdc_sink_kafka::KafkaSinkConfig {
                dead_letters,
                ..kafka_sink_config(config)?
            },
        ))),
        #[cfg(not(feature = "duckdb"))]
        SinkType::Duckdb => Err(unsupported("sink.type = \"duckdb\"")),
    }
}

/// `sink.url` as written (validation made sure the sinks that need one have it).
fn sink_url(config: &Config) -> String {
    config
        .sink
        .url
        .as_ref()
        .map(|u| u.expose().to_string())
        .unwrap_or_default()
}

pub fn nats_sink_config(config: &Config) -> Result<cdc_sink_nats::NatsSinkConfig, PipelineError> {
    let template = config
        .sink
        .subject
        .as_ref()
        .map_or(cdc_sink_nats::DEFAULT_SUBJECT, |s| s.0.as_str());
    let subject = cdc_sink_nats::SubjectTemplate::parse(template)
        .map_err(|e| PipelineError::definite("config", format!("sink.subject: {e}")))?;
    Ok(cdc_sink_nats::NatsSinkConfig {
        url: sink_url(config),
        pipeline: config.agent.name.0.clone(),
        prefix: crate::config::message_prefix(config),
        subject,
        stream: crate::config::nats_stream_name(config),
        create_stream: config.sink.create_stream.unwrap_or(true),
        duplicate_window: std::time::Duration::from_secs(
            config.sink.duplicate_window_s.unwrap_or(120),
        ),
        format: config.sink.format.unwrap_or_default(),
        transaction_metadata: config.sink.transaction_metadata.unwrap_or(false),
        dead_letters: None,
        replay: false,
    })
}

pub fn kafka_sink_config(
    config: &Config,
) -> Result<cdc_sink_kafka::KafkaSinkConfig, PipelineError> {
    let sink = &config.sink;
    let template = sink
        .topic
        .as_ref()
        .map_or(cdc_sink_kafka::DEFAULT_TOPIC, |t| t.0.as_str());
    let topic = cdc_sink_kafka::TopicTemplate::parse(template)
        .map_err(|e| PipelineError::definite("config", format!("sink.topic: {e}")))?;
    let format = sink.format.unwrap_or_default();
    Ok(cdc_sink_kafka::KafkaSinkConfig {
        brokers: sink
            .brokers
            .as_ref()
            .map(|b| b.0.clone())
            .unwrap_or_default(),
        pipeline: config.agent.name.0.clone(),
        prefix: crate::config::message_prefix(config),
        topic,
        format,
        compression: sink.compression.unwrap_or_default(),
        tombstones: sink
            .tombstones
            .unwrap_or(format == cdc_sink_kafka::MessageFormat::Debezium),
        properties: sink
            .properties
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect(),
        transaction_metadata: sink.transaction_metadata.unwrap_or(false),
        dead_letters: None,
        topic_creation: sink
            .topic_partitions
            .map(|partitions| cdc_sink_kafka::TopicCreation {
                partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
                replication: sink.topic_replication.map(i32::from),
                config: sink
                    .topic_config
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
            }),
    })
}

pub fn postgres_sink_config(config: &Config) -> cdc_sink_postgres::PostgresSinkConfig {
    cdc_sink_postgres::PostgresSinkConfig {
        url: sink_url(config),
        schema: config
            .sink
            .schema
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_else(|| crate::config::DEFAULT_SINK_SCHEMA.to_string()),
        pipeline: config.agent.name.0.clone(),
        delete_mode: config.sink.delete_mode,
        metadata_columns: config.sink.metadata_columns,
        truncate: config.sink.truncate,
        max_batch_changes: config.sink.max_batch_changes,
        dead_letters: None,
        record_position: true,
    }
}

/// The mysql sink's settings: the target database is `sink.schema`, else the URL's database
/// (`Config::validate` makes sure one of them is set).
pub fn mysql_sink_config(config: &Config) -> cdc_sink_mysql::MysqlSinkConfig {
    let url = config
        .sink
        .url
        .as_ref()
        .map(|u| u.expose().to_string())
        .unwrap_or_default();
    let database = match &config.sink.schema {
        Some(s) => s.0.clone(),
        None => cdc_sink_mysql::url_database(&url)
            .ok()
            .flatten()
            .unwrap_or_default(),
    };
    cdc_sink_mysql::MysqlSinkConfig {
        url,
        database,
        pipeline: config.agent.name.0.clone(),
        delete_mode: config.sink.delete_mode,
        metadata_columns: config.sink.metadata_columns,
        truncate: config.sink.truncate,
        max_batch_changes: config.sink.max_batch_changes,
        dead_letters: None,
        record_position: true,
    }
}

/// The duckdb sink's settings: the file is `sink.path`, the schema `sink.schema` or DuckDB's
/// default `main`.
#[cfg(feature = "duckdb")]
pub fn duckdb_sink_config(config: &Config) -> cdc_sink_duckdb::DuckdbSinkConfig {
    cdc_sink_duckdb::DuckdbSinkConfig {
        path: config
            .sink
            .path
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_default(),
        schema: config
            .sink
            .schema
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_else(|| cdc_sink_duckdb::DEFAULT_SCHEMA.to_string()),
        pipeline: config.agent.name.0.clone(),
        delete_mode: config.sink.delete_mode,
        metadata_columns: config.sink.metadata_columns,
        truncate: config.sink.truncate,
        max_batch_changes: config.sink.max_batch_changes,
        memory_limit_mb: config
            .sink
            .memory_limit_mb
            .unwrap_or(cdc_sink_duckdb::DEFAULT_MEMORY_LIMIT_MB),
    }
}

pub async fn check_source(config: &Config, checkpoint: Option<&Position>) -> Vec<CheckOutcome> {
    match config.source.kind {
        SourceType::Postgres => cdc_postgres::preflight(&postgres_config(config)).await,
        SourceType::Mysql => cdc_mysql::preflight(&mysql_config(config), checkpoint).await,
    }
}

/// Bytes from a position to the server's current one (`None`: cannot tell).
pub type LagFn = Box<dyn Fn(&Position) -> Option<u64> + Send>;

/// What `status` shows of the source server.
pub struct SourceServerState {
    /// The server's current end of log.
    pub current: Position,
    /// Bytes from a confirmed position to `current` (`None`: cannot tell).
    pub lag: LagFn,
    /// Postgres: the slot's confirmed position and retained WAL.
    pub slot_confirmed: Option<Position>,
    pub slot_retained_bytes: Option<u64>,
}

/// The server's current position, how far a position trails it, and the slot's state.
pub async fn source_state(config: &Config) -> Result<SourceServerState, PipelineError> {
    match config.source.kind {
        SourceType::Postgres => {
            let state = cdc_postgres::server_state(&postgres_config(config)).await?;
            let current = state.current;
            Ok(SourceServerState {
                current: Position::Postgres { lsn: current },
                lag: Box::new(move |from| match from {
                    Position::Postgres { lsn } => Some(current.0.saturating_sub(lsn.0)),
                    _ => None,
                }),
                slot_confirmed: state.slot_confirmed.map(|lsn| Position::Postgres { lsn }),
                slot_retained_bytes: state.slot_retained_bytes,
            })
        }
        SourceType::Mysql => {
            let state = cdc_mysql::server_state(&mysql_config(config)).await?;
            let files = state.files;
            Ok(SourceServerState {
                current: state.current,
                lag: Box::new(move |from| cdc_mysql::setup::bytes_behind(&files, from)),
                slot_confirmed: None,
                slot_retained_bytes: None,
            })
        }
    }
}

pub async fn drop_source_state(config: &Config) -> Result<bool, PipelineError> {
    match config.source.kind {
        SourceType::Postgres => cdc_postgres::drop_slot(&postgres_config(config)).await,
        SourceType::Mysql => Ok(false),
    }
}

#[cfg(not(feature = "duckdb"))]
fn unsupported(what: &str) -> PipelineError {
    PipelineError::definite("config", format!("{what} is not available in this build")).with_hint(
        "see README.md (What works today) for the sources and sinks this version supports",
    )
}
