//! Configuration: the TOML file of the spec, with `${NAME}` environment interpolation and
//! `${file:/path}` secret files.
//!
//! Unknown keys are errors; every error names the file, line and column and what to change.
//! Defaults sit beside the field they fill, as named constants with the reason.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

mod interval;
pub use interval::Interval;

/// Prometheus' registered default-port range neighbour of node_exporter; the spec's example.
const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9187";
const DEFAULT_STATE_DIR: &str = "./cdc-state";
/// Messages buffered between source and sink: enough to keep both busy, small enough to bound memory.
const DEFAULT_CHANNEL_MESSAGES: usize = 8192;
/// Bytes of row data buffered between source and sink before the source stops reading.
const DEFAULT_BUFFER_BYTES: usize = 16 << 20;
/// How often the JSON lines sink fsyncs (and so how often the checkpoint advances).
const DEFAULT_FLUSH_INTERVAL_MS: u64 = 200;
/// How often a warehouse sink commits: larger transactions collapse more changes per key and
/// cost the target fewer statements; a second is fresh enough for analytics.
const DEFAULT_WAREHOUSE_FLUSH_INTERVAL_MS: u64 = 1000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub source: SourceConfig,
    pub sink: SinkConfig,
    /// `[[table]]` sections: column filters and masks (see `config/tables.rs`).
    #[serde(default, rename = "table")]
    pub tables: Vec<TableSection>,
}

mod tables;
pub use tables::{table_rules, TableSection};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: EnvString,
    #[serde(default = "default_state_dir")]
    pub state_dir: EnvString,
    #[serde(default = "default_admin_addr")]
    pub admin_addr: EnvString,
    #[serde(default = "default_channel_messages")]
    pub channel_messages: usize,
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    /// Warn (log and `cdc_slot_retained_warnings_total`) when the Postgres slot holds more WAL
    /// than this; 0 turns the warning off.
    #[serde(default = "default_slot_retained_warn_bytes")]
    pub slot_retained_warn_bytes: u64,
    /// Run verify of every table of the pipeline this often (`"6h"`), inside the agent, never
    /// repairing; results in `status` and `/metrics`. Default: off.
    pub verify_interval: Option<Interval>,
    /// With `verify_interval`: compare a random key range of about this many rows per table
    /// (as `verify --max-rows`) instead of whole tables.
    pub verify_max_rows: Option<u64>,
    /// The HMAC-SHA256 key of `hash` column masks (`[[table]]` sections).
    pub mask_key: Option<Secret>,
}

/// The shortest `agent.verify_interval`: each run reads every table on both sides, so an
/// interval this short is for tests and small tables (production: hours).
pub const MIN_VERIFY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn default_slot_retained_warn_bytes() -> u64 {
    1 << 30
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Postgres,
    Mysql,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    #[default]
    Initial,
    Never,
    InitialOnly,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(rename = "type")]
    pub kind: SourceType,
    pub url: Secret,
    #[serde(default)]
    pub tables: Vec<EnvString>,
    pub slot: Option<EnvString>,
    pub publication: Option<EnvString>,
    pub server_id: Option<u32>,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Postgres: every this many milliseconds write a `pg_logical_emit_message` so the slot
    /// advances even when the published tables and the whole database are quiet (0: off).
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// How a snapshot reads: `auto` (watermarks where the source takes them), `watermark`
    /// (chunks while streaming, resumable) or `transaction` (one consistent transaction; for a
    /// source the agent must not write to).
    #[serde(default)]
    pub snapshot_method: SnapshotMethodConfig,
    /// Tables a chunked snapshot copies at once.
    #[serde(default = "default_snapshot_workers")]
    pub snapshot_workers: usize,
    /// Rows per snapshot chunk.
    #[serde(default = "default_snapshot_chunk_rows")]
    pub snapshot_chunk_rows: usize,
    /// MySQL/MariaDB: `database.table` the watermarks of a chunked snapshot are written to
    /// (created if missing; default `cdc_agent.snapshot_watermarks`).
    #[serde(default)]
    pub signal_table: Option<String>,
    /// Postgres 14+: the server sends a big transaction while it runs (pgoutput protocol 2),
    /// and the agent holds it in a file until its commit; `false`: only at its commit. Default:
    /// on for message sinks, off for warehouse targets ([`Config::postgres_streaming`]).
    #[serde(default)]
    pub streaming: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMethodConfig {
    #[default]
    Auto,
    Watermark,
    Transaction,
}

fn default_snapshot_workers() -> usize {
    2
}

fn default_snapshot_chunk_rows() -> usize {
    10_000
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Jsonl,
    Postgres,
    Mysql,
    Duckdb,
    Kafka,
    Nats,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(rename = "type")]
    pub kind: SinkType,
    pub url: Option<Secret>,
    pub schema: Option<EnvString>,
    pub path: Option<EnvString>,
    /// Default: 200 ms for jsonl, 1 s for warehouse sinks (see `flush_interval`).
    pub flush_interval_ms: Option<u64>,
    /// Warehouse sinks: `hard` deletes rows, `soft` sets `_cdc_deleted`.
    #[serde(default)]
    pub delete_mode: DeleteMode,
    /// Warehouse sinks: add `_cdc_position` and `_cdc_commit_ts` columns.
    #[serde(default)]
    pub metadata_columns: bool,
    /// Warehouse sinks: `propagate` a source TRUNCATE, or `ignore` it.
    #[serde(default)]
    pub truncate: TruncateMode,
    /// Warehouse sinks: changes buffered before they are applied into the open transaction.
    #[serde(default = "default_max_batch_changes")]
    pub max_batch_changes: usize,
    /// A change the target refuses for good (a value or row it will never take): `stop` the
    /// pipeline, or set it aside in the dead-letter store (`dlq`) and go on.
    #[serde(default)]
    pub on_error: OnError,
    /// `on_error = "dlq"`: records the dead-letter store may hold; past it the pipeline stops.
    #[serde(default = "default_dlq_max_records")]
    pub dlq_max_records: u64,
    /// duckdb: DuckDB's memory_limit in MiB (default 256; 0: DuckDB's default, 80% of RAM).
    pub memory_limit_mb: Option<u64>,
    /// Message sinks: the change record (`native`) or Debezium's envelope.
    pub format: Option<MessageFormat>,
    /// Message sinks: BEGIN/END messages per source transaction on `<prefix>.transaction`
    /// (Debezium's `provide.transaction.metadata`; default false).
    pub transaction_metadata: Option<bool>,
    /// nats: the subject template (default `{prefix}.{schema}.{table}`).
    pub subject: Option<EnvString>,
    /// nats: `{prefix}` in the subject, and Debezium's `source.name` (default: agent.name).
    pub subject_prefix: Option<EnvString>,
    /// nats: the JetStream stream (default `CDC_<AGENT_NAME>`).
    pub stream: Option<EnvString>,
    /// nats: create the stream when it is missing (default true).
    pub create_stream: Option<bool>,
    /// nats: the duplicate window of a stream the agent creates, in seconds (default 120).
    pub duplicate_window_s: Option<u64>,
    /// kafka: `bootstrap.servers`, `host:port[,host:port...]`.
    pub brokers: Option<EnvString>,
    /// kafka: the topic template (default `{prefix}.{schema}.{table}`).
    pub topic: Option<EnvString>,
    /// kafka: `{prefix}` in the topic, and Debezium's `source.name` (default: agent.name).
    pub topic_prefix: Option<EnvString>,
    /// kafka: `none`, `gzip`, `snappy`, `lz4` (default) or `zstd`.
    pub compression: Option<cdc_sink_kafka::Compression>,
    /// kafka: a tombstone (key, no value) after each delete (default: true with the debezium
    /// format, as Debezium's `tombstones.on.delete`; false with native).
    pub tombstones: Option<bool>,
    /// kafka: librdkafka producer properties (e.g. `"linger.ms" = "20"`), set after the sink's.
    pub properties: Option<std::collections::BTreeMap<String, Secret>>,
    /// kafka: create missing topics with this many partitions (default: the agent creates none).
    pub topic_partitions: Option<u32>,
    /// kafka: the replication factor of topics the agent creates (default: the brokers').
    pub topic_replication: Option<u16>,
    /// kafka: topic-level settings of topics the agent creates (e.g. `"cleanup.policy" = "compact"`).
    pub topic_config: Option<std::collections::BTreeMap<String, EnvString>>,
}

pub use cdc_core::debezium::MessageFormat;

/// A message sink's `{prefix}` (NATS `subject_prefix`, Kafka `topic_prefix`): configured, else
/// the agent's name.
pub fn message_prefix(config: &Config) -> String {
    let sink = &config.sink;
    sink.subject_prefix
        .as_ref()
        .or(sink.topic_prefix.as_ref())
        .map(|p| p.0.clone())
        .unwrap_or_else(|| config.agent.name.0.clone())
}

/// The NATS sink's stream: configured, else `CDC_` and the agent's name, upper case, with what a
/// stream name may not hold made `_`.
pub fn nats_stream_name(config: &Config) -> String {
    match &config.sink.stream {
        Some(stream) => stream.0.clone(),
        None => format!("CDC_{}", config.agent.name.0)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

pub use cdc_core::warehouse::{DeleteMode, TruncateMode};

/// Target schema of warehouse sinks when `sink.schema` is not set.
pub const DEFAULT_SINK_SCHEMA: &str = "public";

/// `sink.on_error`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop, naming the change: the target stays equal to the source, or the pipeline says why
    /// not. The default: dead-lettering is a choice to let the target differ, key by key.
    #[default]
    Stop,
    /// Set the change aside (and later changes to its key behind it); everything else goes on.
    Dlq,
}

/// Enough for a bad column in a large table to show up long before the store grows without
/// bound; a whole table refused stops the pipeline instead of filling the disk.
pub const DEFAULT_DLQ_MAX_RECORDS: u64 = 100_000;

fn default_dlq_max_records() -> u64 {
    DEFAULT_DLQ_MAX_RECORDS
}

fn default_max_batch_changes() -> usize {
    cdc_sink_postgres::DEFAULT_MAX_BATCH_CHANGES
}

fn default_state_dir() -> EnvString {
    EnvString(DEFAULT_STATE_DIR.into())
}
fn default_admin_addr() -> EnvString {
    EnvString(DEFAULT_ADMIN_ADDR.into())
}
fn default_channel_messages() -> usize {
    DEFAULT_CHANNEL_MESSAGES
}
fn default_buffer_bytes() -> usize {
    DEFAULT_BUFFER_BYTES
}

/// A string with `${NAME}` replaced by the environment variable `NAME`, and `${file:/path}` by
/// the file's content (a container or Kubernetes secret) without its final newline. An unset
/// variable or an unreadable file is an error (raised while deserializing, so it carries the
/// value's line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvString(pub String);

impl std::ops::Deref for EnvString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        interpolate(&raw, |name| std::env::var(name).ok())
            .map(EnvString)
            .map_err(serde::de::Error::custom)
    }
}

/// A secret-bearing string (a URL with a password): never printed, and its secret parts (a URL's
/// password, a value taken from `${NAME}` or `${file:...}`) are scrubbed from everything the agent
/// prints (see [`crate::secrets`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let value =
            interpolate(&raw, |name| std::env::var(name).ok()).map_err(serde::de::Error::custom)?;
        if !crate::secrets::register_url_secrets(&value) && raw.contains("${") {
            crate::secrets::register(&value);
        }
        Ok(Secret(value))
    }
}

fn interpolate(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{raw}`: write `${{NAME}}`"))?;
        let name = &after[..end];
        if let Some(path) = name.strip_prefix("file:") {
            out.push_str(&read_secret_file(path)?);
            rest = &after[end + 1..];
            continue;
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        let value = lookup(name).ok_or_else(|| {
            format!("environment variable `{name}` is not set (referenced as `${{{name}}}`): export it or change the value")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `${file:/path}`: the file's content, its final newline (`\n` or `\r\n`) removed, as secret
/// files are usually written by `echo` or an editor.
fn read_secret_file(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("`${file:}` names no file: write `${file:/run/secrets/name}`".into());
    }
    let mut text = std::fs::read_to_string(path).map_err(|e| {
        format!("cannot read the secret file {path} (referenced as `${{file:{path}}}`): {e}: mount it, or fix the path")
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// A configuration problem: the message names the file, the place and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read config file {}: {e} (pass -c FILE or set CDC_AGENT_CONFIG)",
                path.display()
            ))
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|span| {
                    let (line, column) = line_column(text, span.start);
                    format!("{}:{line}:{column}", path.display())
                })
                .unwrap_or_else(|| path.display().to_string());
            ConfigError(format!("invalid config {place}: {}", e.message().trim()))
        })?;
        config.validate(path)?;
        config.register_property_secrets();
        Ok(config)
    }

    /// Kafka properties that carry secrets (`sasl.password`, `ssl.key.password`, a JAAS line),
    /// written inline: scrubbed from output like the URLs' passwords.
    fn register_property_secrets(&self) {
        for (key, value) in self.sink.properties.iter().flatten() {
            let key = key.to_ascii_lowercase();
            if ["password", "secret", "token", "jaas"]
                .iter()
                .any(|word| key.contains(word))
            {
                crate::secrets::register(value.expose());
            }
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| {
            Err(ConfigError(format!(
                "invalid config {}: `{key}` {why}",
                path.display()
            )))
        };
        let name = &self.agent.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return fail(
                "agent.name",
                "must be non-empty and use only letters, digits, `_` and `-` (it names the slot and publication)",
            );
        }
        if self.agent.channel_messages == 0 || self.agent.buffer_bytes < 1024 {
            return fail(
                "agent.channel_messages / agent.buffer_bytes",
                "must be at least 1 message and 1024 bytes",
            );
        }
        if let Some(interval) = &self.agent.verify_interval {
            if interval.duration() < MIN_VERIFY_INTERVAL {
                return fail(
                    "agent.verify_interval",
                    "must be at least 1s (each run reads every table on both sides: hours suit most pipelines)",
                );
            }
            if !matches!(
                self.sink.kind,
                SinkType::Postgres | SinkType::Mysql | SinkType::Duckdb
            ) {
                return fail(
                    "agent.verify_interval",
                    "is for warehouse sinks (sink.type postgres, mysql or duckdb): verify compares tables",
                );
            }
        }
        match self.agent.verify_max_rows {
            Some(0) => return fail("agent.verify_max_rows", "must be at least 1"),
            Some(_) if self.agent.verify_interval.is_none() => {
                return fail(
                    "agent.verify_max_rows",
                    "samples the periodic verify: set agent.verify_interval too",
                )
            }
            _ => {}
        }
        match self.source.kind {
            SourceType::Postgres => {
                if let Err(e) =
                    cdc_postgres::wire::ConnectParams::from_url(self.source.url.expose())
                {
                    return fail("source.url", &format!("cannot be used: {e}"));
                }
                if self.source.server_id.is_some() {
                    return fail("source.server_id", "is only for mysql sources");
                }
                if self.source.signal_table.is_some() {
                    return fail(
                        "source.signal_table",
                        "is only for mysql sources (postgres watermarks are logical messages)",
                    );
                }
            }
            SourceType::Mysql => {
                if self.source.slot.is_some() || self.source.publication.is_some() {
                    return fail(
                        "source.slot / source.publication",
                        "are only for postgres sources (a MySQL source keeps its position in the state store)",
                    );
                }
                if self.source.streaming.is_some() {
                    return fail(
                        "source.streaming",
                        "is only for postgres sources (a binlog holds a transaction only once it is committed)",
                    );
                }
                if !self.source.url.expose().starts_with("mysql://") {
                    return fail(
                        "source.url",
                        "must be a mysql:// URL for a mysql source: mysql://user:password@host:3306/database",
                    );
                }
                if let Err(e) = cdc_tls::mysql::parse_url(self.source.url.expose()) {
                    return fail("source.url", &format!("cannot be used: {e}"));
                }
                if self.source.server_id == Some(0) {
                    return fail(
                        "source.server_id",
                        "must not be 0 (a server refuses replicas with id 0)",
                    );
                }
                if let Some(name) = &self.source.signal_table {
                    if cdc_mysql::chunked::signal_table_parts(name).is_none() {
                        return fail(
                            "source.signal_table",
                            "must be `database.table`, e.g. \"cdc_agent.snapshot_watermarks\"",
                        );
                    }
                }
            }
        }
        if let Err((key, why)) = table_rules(self) {
            return fail(&key, &why);
        }
        if self.source.snapshot_workers == 0 || self.source.snapshot_chunk_rows == 0 {
            return fail(
                "source.snapshot_workers / source.snapshot_chunk_rows",
                "must be at least 1",
            );
        }
        for table in &self.source.tables {
            if table.split('.').count() != 2 {
                return fail(
                    "source.tables",
                    &format!(
                        "entry `{}` must be `schema.table` (`*` wildcards allowed)",
                        table.0
                    ),
                );
            }
        }
        if self.sink.on_error == OnError::Dlq
            && !matches!(
                self.sink.kind,
                SinkType::Postgres | SinkType::Mysql | SinkType::Kafka | SinkType::Nats
            )
        {
            return fail(
                "sink.on_error",
                "= \"dlq\" is for the postgres, mysql, kafka and nats sinks (the others never refuse a single change, or stop on it)",
            );
        }
        if self.sink.dlq_max_records == 0 {
            return fail("sink.dlq_max_records", "must be at least 1");
        }
        if self.sink.memory_limit_mb.is_some() && self.sink.kind != SinkType::Duckdb {
            return fail("sink.memory_limit_mb", "is for the duckdb sink only");
        }
        let sink = &self.sink;
        if (sink.format.is_some() || sink.transaction_metadata.is_some())
            && !matches!(sink.kind, SinkType::Nats | SinkType::Kafka)
        {
            return fail(
                "sink.format / sink.transaction_metadata",
                "are for message sinks (type = \"nats\" or \"kafka\")",
            );
        }
        let nats_keys = [
            sink.subject.is_some(),
            sink.subject_prefix.is_some(),
            sink.stream.is_some(),
            sink.create_stream.is_some(),
            sink.duplicate_window_s.is_some(),
        ];
        if nats_keys.contains(&true) && sink.kind != SinkType::Nats {
            return fail(
                "sink.subject / subject_prefix / stream / create_stream / duplicate_window_s",
                "are for the nats sink (type = \"nats\")",
            );
        }
        let kafka_keys = [
            sink.brokers.is_some(),
            sink.topic.is_some(),
            sink.topic_prefix.is_some(),
            sink.compression.is_some(),
            sink.tombstones.is_some(),
            sink.properties.is_some(),
            sink.topic_partitions.is_some(),
            sink.topic_replication.is_some(),
            sink.topic_config.is_some(),
        ];
        if kafka_keys.contains(&true) && sink.kind != SinkType::Kafka {
            return fail(
                "sink.brokers / topic / topic_prefix / compression / tombstones / properties / topic_partitions / topic_replication / topic_config",
                "are for the kafka sink (type = \"kafka\")",
            );
        }
        match self.sink.kind {
            SinkType::Jsonl => {
                if self.sink.url.is_some() || self.sink.schema.is_some() {
                    return fail(
                        "sink.url / sink.schema",
                        "are for warehouse sinks; the jsonl sink takes only `path`",
                    );
                }
                if self.sink.path.is_none() {
                    return fail(
                        "sink.path",
                        "is required for the jsonl sink: a file path, or \"-\" for stdout",
                    );
                }
            }
            SinkType::Postgres => {
                let Some(url) = &self.sink.url else {
                    return fail("sink.url", "is required for the postgres sink: postgres://user:password@host:port/dbname");
                };
                if let Err(e) = cdc_sink_postgres::parse_url(url.expose()) {
                    return fail("sink.url", &format!("cannot be used: {e}"));
                }
                if self.sink.path.is_some() {
                    return fail("sink.path", "is for the jsonl and duckdb sinks; the postgres sink takes `url` and `schema`");
                }
                if self.sink.max_batch_changes == 0 {
                    return fail("sink.max_batch_changes", "must be at least 1");
                }
            }
            SinkType::Mysql => {
                let Some(url) = &self.sink.url else {
                    return fail(
                        "sink.url",
                        "is required for the mysql sink: mysql://user:password@host:port/database",
                    );
                };
                if self.sink.path.is_some() {
                    return fail("sink.path", "is for the jsonl and duckdb sinks; the mysql sink takes `url` and `schema`");
                }
                if self.sink.max_batch_changes == 0 {
                    return fail("sink.max_batch_changes", "must be at least 1");
                }
                match cdc_sink_mysql::url_database(url.expose()) {
                    Err(e) => {
                        return fail(
                            "sink.url",
                            &format!("is not a valid mysql URL ({e}): write mysql://user:password@host:port/database"),
                        )
                    }
                    Ok(None) if self.sink.schema.is_none() => {
                        return fail(
                            "sink.schema",
                            "is required for the mysql sink when sink.url names no database (the target database, created if missing)",
                        )
                    }
                    Ok(_) => {}
                }
            }
            SinkType::Duckdb => {
                if !cfg!(feature = "duckdb") {
                    return fail(
                        "sink.type",
                        "= \"duckdb\": this cdc-agent was built without DuckDB; build with --features duckdb",
                    );
                }
                if self.sink.path.as_deref().is_none_or(str::is_empty) {
                    return fail(
                        "sink.path",
                        "is required for the duckdb sink: the database file (created if missing)",
                    );
                }
                if self.sink.url.is_some() {
                    return fail(
                        "sink.url",
                        "is for server sinks; the duckdb sink takes `path` (the database file) and `schema`",
                    );
                }
                if self.sink.max_batch_changes == 0 {
                    return fail("sink.max_batch_changes", "must be at least 1");
                }
            }
            SinkType::Nats => {
                let Some(url) = &self.sink.url else {
                    return fail(
                        "sink.url",
                        "is required for the nats sink: nats://host:4222",
                    );
                };
                if !["nats://", "tls://"]
                    .iter()
                    .any(|s| url.expose().starts_with(s))
                {
                    return fail(
                        "sink.url",
                        "must be a NATS URL: nats://host:4222 (or tls://host:4222)",
                    );
                }
                if let Err(e) = cdc_sink_nats::parse_url(url.expose()) {
                    return fail("sink.url", &format!("cannot be used: {e}"));
                }
                if self.sink.path.is_some() || self.sink.schema.is_some() {
                    return fail("sink.path / sink.schema", "are not used by the nats sink (it takes url, subject, subject_prefix, stream, format)");
                }
                let template = self
                    .sink
                    .subject
                    .as_ref()
                    .map_or(cdc_sink_nats::DEFAULT_SUBJECT, |s| s.0.as_str());
                if let Err(e) = cdc_sink_nats::SubjectTemplate::parse(template) {
                    return fail("sink.subject", &e);
                }
                if let Some(prefix) = &self.sink.subject_prefix {
                    if prefix.is_empty() || prefix.contains(['.', '*', '>', ' ']) {
                        return fail(
                            "sink.subject_prefix",
                            "must be one subject token: no dots, spaces or wildcards",
                        );
                    }
                }
                if let Some(stream) = &self.sink.stream {
                    if stream.is_empty()
                        || !stream
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return fail(
                            "sink.stream",
                            "must be a JetStream stream name: letters, digits, '-' and '_'",
                        );
                    }
                }
                if self.sink.duplicate_window_s == Some(0) {
                    return fail(
                        "sink.duplicate_window_s",
                        "must be at least 1: the window is what drops replayed changes",
                    );
                }
            }
            SinkType::Kafka => {
                let Some(brokers) = &self.sink.brokers else {
                    return fail("sink.brokers", "is required for the kafka sink: \"host:9092\" (several: \"h1:9092,h2:9092\")");
                };
                if brokers
                    .split(',')
                    .any(|b| b.trim().is_empty() || b.contains("://"))
                {
                    return fail(
                        "sink.brokers",
                        "must be host:port[,host:port...], without a scheme: \"h1:9092,h2:9092\"",
                    );
                }
                if self.sink.url.is_some() || self.sink.path.is_some() || self.sink.schema.is_some()
                {
                    return fail("sink.url / sink.path / sink.schema", "are not used by the kafka sink (it takes brokers, topic, topic_prefix, format, compression, tombstones, properties, topic_partitions, topic_replication, topic_config)");
                }
                let template = self
                    .sink
                    .topic
                    .as_ref()
                    .map_or(cdc_sink_kafka::DEFAULT_TOPIC, |t| t.0.as_str());
                if let Err(e) = cdc_sink_kafka::TopicTemplate::parse(template) {
                    return fail("sink.topic", &e);
                }
                if let Some(prefix) = &self.sink.topic_prefix {
                    if prefix.is_empty() || cdc_sink_kafka::TopicTemplate::parse(prefix).is_err() {
                        return fail(
                            "sink.topic_prefix",
                            "may hold only letters, digits, '.', '_' and '-'",
                        );
                    }
                }
                if self.sink.topic_partitions == Some(0) {
                    return fail(
                        "sink.topic_partitions",
                        "must be at least 1 (leave it out to create no topics)",
                    );
                }
                if self.sink.topic_replication == Some(0) {
                    return fail(
                        "sink.topic_replication",
                        "must be at least 1 (leave it out for the brokers' default)",
                    );
                }
                if self.sink.topic_partitions.is_none()
                    && (self.sink.topic_replication.is_some() || self.sink.topic_config.is_some())
                {
                    return fail(
                        "sink.topic_replication / topic_config",
                        "apply to topics the agent creates: set sink.topic_partitions too",
                    );
                }
                for key in self.sink.properties.iter().flat_map(|p| p.keys()) {
                    if let Some(why) = cdc_sink_kafka::refused_property(key) {
                        return fail(
                            &format!("sink.properties.\"{key}\""),
                            &format!("may not be set: {why}"),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a Postgres source has big transactions streamed (`source.streaming`). By default
    /// where it was measured to win (docs/performance.md): a message sink takes a replayed
    /// transaction as fast as it is read back, so the commit is durable sooner; a warehouse
    /// target applied it slower from the replay than from a protocol-1 stream.
    pub fn postgres_streaming(&self) -> bool {
        self.source.streaming.unwrap_or(matches!(
            self.sink.kind,
            SinkType::Jsonl | SinkType::Nats | SinkType::Kafka
        ))
    }

    /// How often the sink makes its writes durable.
    pub fn flush_interval(&self) -> std::time::Duration {
        let default = match self.sink.kind {
            SinkType::Jsonl | SinkType::Nats | SinkType::Kafka => DEFAULT_FLUSH_INTERVAL_MS,
            _ => DEFAULT_WAREHOUSE_FLUSH_INTERVAL_MS,
        };
        std::time::Duration::from_millis(self.sink.flush_interval_ms.unwrap_or(default))
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(&*self.agent.state_dir)
    }

    /// The replication slot name: configured, or derived from the pipeline name.
    pub fn slot_name(&self) -> String {
        self.source
            .slot
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_else(|| format!("cdc_{}", self.agent.name.replace('-', "_")))
    }

    /// The replica id a mysql source registers with: configured, else stable per pipeline name.
    pub fn server_id(&self) -> u32 {
        self.source
            .server_id
            .unwrap_or_else(|| cdc_mysql::default_server_id(&self.agent.name))
    }

    pub fn publication_name(&self) -> String {
        self.source
            .publication
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_else(|| format!("cdc_{}", self.agent.name.replace('-', "_")))
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
