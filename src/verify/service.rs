//! Verify inside the running agent: for the `verify` command when the agent holds a DuckDB
//! target (`POST /verify/run`, see remote.rs), and on its own every `agent.verify_interval`.
//!
//! ```text
//!  POST /verify/run {args} ─┐
//!  every verify_interval ───┴─▶ one run at a time ─▶ execute (mod.rs): the target read through
//!                               the sink's open database (DuckDB) or its own connection
//!                               ─▶ results kept in the state tree (record.rs): status, /metrics
//! ```
//!
//! A periodic run never repairs, waits while the pipeline is not streaming (rows being copied
//! or held back by an error are not divergence), and a failure of it is logged and recorded as
//! the tables' `error` result: it never stops the pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::StateTree;

use super::inflight::AgentLink;
use super::record;
use super::report::{TableStatus, VerifyReport};
use super::{execute, Outcome, TargetAccess, VerifyArgs};
use crate::config::Config;
use crate::status::{LiveStatus, PipelineState};

/// How often a periodic run that fell due looks whether the pipeline streams again.
const STREAMING_POLL: Duration = Duration::from_secs(1);

/// Why a requested run did not happen.
pub enum Refused {
    /// Not now (the sink has not opened its DuckDB file yet): ask again. HTTP 503.
    NotReady(String),
    /// Bad usage: HTTP 400.
    Usage(String),
    /// The run failed: HTTP 500.
    Failed(String),
}

pub struct VerifyService {
    config: Config,
    /// The pipeline's state tree, where results are kept.
    tree: Arc<dyn StateTree>,
    live: Arc<LiveStatus>,
    access: TargetAccess,
    /// One run at a time: a requested run waits for a periodic one, and the other way round
    /// (each reads both databases in full).
    turn: tokio::sync::Mutex<()>,
}

impl VerifyService {
    pub fn new(
        config: Config,
        tree: Arc<dyn StateTree>,
        live: Arc<LiveStatus>,
        access: TargetAccess,
    ) -> VerifyService {
        VerifyService {
            config,
            tree,
            live,
            access,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// This agent, as verify reaches it: rows found different are re-checked against its
    /// confirmed position (asked over its own admin endpoint, as the command asks it).
    fn link(&self) -> AgentLink {
        AgentLink {
            addr: self.config.agent.admin_addr.to_string(),
            name: self.config.agent.name.0.clone(),
        }
    }

    /// Why the target cannot be read now, if it cannot.
    fn not_ready(&self) -> Option<String> {
        #[cfg(feature = "duckdb")]
        if let Some(shared) = &self.access.duckdb {
            if !shared.is_open() {
                return Some(format!(
                    "the DuckDB sink has not opened its file yet (the pipeline is {})",
                    self.live.state().as_str()
                ));
            }
        }
        None
    }

    /// A run the `verify` command asked for: its report, recorded for status and metrics.
    pub async fn run(&self, args: &VerifyArgs) -> Result<VerifyReport, Refused> {
        if let Some(problem) = self.not_ready() {
            return Err(Refused::NotReady(problem));
        }
        let _turn = self.turn.lock().await;
        tracing::info!(tables = ?args.tables, repair = args.repair, "verify requested");
        match execute(&self.config, args, Some(self.link()), self.access.clone()).await {
            Ok(Outcome::Report(report)) => {
                self.keep(&report);
                Ok(report)
            }
            Ok(Outcome::Usage(message)) => Err(Refused::Usage(message)),
            Ok(Outcome::Unavailable(message)) => Err(Refused::NotReady(message)),
            Err(e) => Err(Refused::Failed(format!("{e:#}"))),
        }
    }

    fn keep(&self, report: &VerifyReport) {
        if let Err(e) = record::store_report(self.tree.as_ref(), report) {
            tracing::warn!(error = %e, "the verify result could not be recorded for status and metrics");
        }
    }

    /// Runs verify of every table of the pipeline every `interval` (the first run one interval
    /// after the start; each next one an interval after the previous one ended), compared
    /// whole or, with `max_rows`, sampled.
    pub async fn every(self: Arc<Self>, interval: Duration, max_rows: Option<u64>) {
        let args = VerifyArgs {
            max_rows,
            ..VerifyArgs::default()
        };
        loop {
            tokio::time::sleep(interval).await;
            while self.live.state() != PipelineState::Streaming || self.not_ready().is_some() {
                tokio::time::sleep(STREAMING_POLL).await;
            }
            self.periodic(&args).await;
        }
    }

    async fn periodic(&self, args: &VerifyArgs) {
        let _turn = self.turn.lock().await;
        let started = Instant::now();
        tracing::info!(sampled_rows = ?args.max_rows, "periodic verify starting");
        let outcome = execute(&self.config, args, Some(self.link()), self.access.clone()).await;
        let report = match outcome {
            Ok(Outcome::Report(report)) => report,
            Ok(Outcome::Usage(message) | Outcome::Unavailable(message)) => {
                return self.failed(&message);
            }
            Err(e) => return self.failed(&format!("{e:#}")),
        };
        self.keep(&report);
        let seconds = started.elapsed().as_secs_f64();
        let mut divergent_tables = 0;
        for t in &report.tables {
            match t.status {
                TableStatus::Equal => {}
                TableStatus::Different => {
                    divergent_tables += 1;
                    tracing::warn!(
                        table = %t.table,
                        missing = t.missing,
                        extra = t.extra,
                        different = t.different,
                        "periodic verify: rows differ between source and target (`cdc-agent verify {}` names them; --repair copies them again)",
                        t.table
                    );
                }
                TableStatus::Error => {
                    divergent_tables += 1;
                    tracing::warn!(
                        table = %t.table,
                        error = t.error.as_deref().unwrap_or("unknown"),
                        "periodic verify: the table could not be compared"
                    );
                }
            }
        }
        let rows: u64 = report.tables.iter().map(|t| t.rows_compared).sum();
        if divergent_tables == 0 {
            tracing::info!(
                tables = report.tables.len(),
                rows,
                seconds,
                "periodic verify: every table equal"
            );
        } else {
            tracing::warn!(
                tables = report.tables.len(),
                tables_not_equal = divergent_tables,
                divergent_rows = report.divergent_rows,
                rows,
                seconds,
                "periodic verify: source and target differ"
            );
        }
    }

    /// A periodic run that failed as a whole: logged, and recorded as the `error` result of the
    /// tables verified before (or named in `source.tables`); the pipeline goes on.
    fn failed(&self, message: &str) {
        tracing::warn!(error = %message, "periodic verify failed; the pipeline goes on, the next run is one interval away");
        let mut tables: Vec<String> = record::load(self.tree.as_ref())
            .into_iter()
            .map(|r| r.table)
            .collect();
        if tables.is_empty() {
            tables = self
                .config
                .source
                .tables
                .iter()
                .filter(|t| !t.contains('*'))
                .map(|t| t.0.clone())
                .collect();
        }
        if let Err(e) = record::store_failure(self.tree.as_ref(), &tables, message) {
            tracing::warn!(error = %e, "the verify failure could not be recorded");
        }
    }
}
