//! The command line of the spec: `run`, `check`, `status`, `snapshot`, `verify`, `dlq`, `reset`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cdc-agent",
    version,
    about = "Change data capture from Postgres to JSON lines and warehouses"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "CDC_AGENT_CONFIG",
        default_value = "./cdc-agent.toml"
    )]
    pub config: PathBuf,

    /// Log level (overridden by RUST_LOG when set).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline until SIGINT/SIGTERM; resumes from the last checkpoint.
    Run,
    /// Preflight, read-only: connections, server settings, privileges, tables.
    Check,
    /// Where the pipeline stands and how far behind it is (exits 3 for a pipeline that never
    /// ran).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Exit 1 when lag_seconds is above this.
        #[arg(long)]
        max_lag_seconds: Option<f64>,
        /// Exit 1 when lag_bytes is above this.
        #[arg(long)]
        max_lag_bytes: Option<u64>,
    },
    /// (Re)copy tables consistently while streaming continues; follows the copy with a
    /// progress bar.
    Snapshot {
        /// Tables as schema.table (default: every table of the pipeline).
        tables: Vec<String>,
        /// Return once the request is taken, without following the copy.
        #[arg(long)]
        no_wait: bool,
    },
    /// Compare source and target tables (warehouse sinks) by hashed key ranges; name the rows
    /// that differ. Exits 0 when equal, 1 when rows differ.
    Verify(crate::verify::VerifyArgs),
    /// The dead-letter store: changes the target refused for good (`sink.on_error = "dlq"`).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Drop the replication slot and clear the state store.
    Reset {
        /// Confirm: this forgets the position; the next run starts over.
        #[arg(long)]
        yes: bool,
    },
}

/// `cdc-agent dlq ...`: works with the agent running (through its admin endpoint) or stopped.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The changes set aside: id, table, key, class, attempts, age, message.
    List {
        /// Only this table (`schema.table`, or the table's name).
        #[arg(long)]
        table: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One change set aside: its record and why the target refused it.
    Show { id: u64 },
    /// Apply changes again, in their original order, against the target as it is now; what it
    /// refuses again stays (and so do later changes to the same key).
    Replay {
        ids: Vec<u64>,
        #[arg(long)]
        table: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Forget changes set aside (their keys then take later changes again).
    Drop {
        ids: Vec<u64>,
        #[arg(long)]
        table: Option<String>,
        #[arg(long)]
        all: bool,
        /// Confirm: the dropped changes never reach the target.
        #[arg(long)]
        yes: bool,
    },
}
