//! cdc-agent: the binary. Parses the command line, loads the config and hands off to the
//! command; exit codes are the spec's (0 ok, 1 runtime failure, 2 bad usage or config, 3 `status`
//! of a pipeline that never ran).

mod admin;
mod allocator;
mod backoff;
mod cli;
mod commands;
mod config;
mod dlq;
mod metrics;
mod runtime;
mod secrets;
mod sink_driver;
mod snapshot_cmd;
mod source_watch;
mod status;
mod store;
mod verify;
mod wiring;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};
use crate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Everything runs on the worker threads (not on this one), so source and sink hand batches
    // to each other within the runtime rather than across an extra thread.
    let result = runtime.block_on(async {
        let task = tokio::spawn(async move {
            match cli.command {
                Command::Run => commands::run(config).await,
                Command::Check => commands::check(&config).await,
                Command::Status {
                    json,
                    max_lag_seconds,
                    max_lag_bytes,
                } => {
                    commands::status(&config, &cli.config, json, max_lag_seconds, max_lag_bytes)
                        .await
                }
                Command::Snapshot { tables, no_wait } => {
                    snapshot_cmd::snapshot(&config, tables, no_wait).await
                }
                Command::Verify(args) => verify::run(&config, args).await,
                Command::Reset { yes } => commands::reset(&config, yes).await,
                Command::Dlq { command } => dlq::commands::run(&config, command).await,
            }
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("internal error: {e}")),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", secrets::scrub(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| secrets::ScrubbedStderr);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// One worker by default: the source and the sink pass batches through the channel, and on a
/// small machine the database's own walsender needs the other core. `CDC_AGENT_WORKER_THREADS`
/// overrides it.
fn worker_threads() -> usize {
    std::env::var("CDC_AGENT_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}
