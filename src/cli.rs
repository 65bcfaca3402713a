//! The command line of the spec: `run`, `check`, `status`, `snapshot`, `verify`, `reset`.

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
    /// Where the pipeline stands and how far behind it is.
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
    /// Drop the replication slot and clear the state store.
    Reset {
        /// Confirm: this forgets the position; the next run starts over.
        #[arg(long)]
        yes: bool,
    },
}
