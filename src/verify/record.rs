//! The last verify result of each table, where operations see it: kept in the pipeline's state
//! tree (`verify/result/{table}`), written by the running agent when verify POSTs it to the
//! admin endpoint (`POST /verify`) or when the agent ran it itself (service.rs), or by verify
//! itself into the state store of a stopped agent. `/metrics` renders `cdc_verify_divergent_rows{table}` and
//! `cdc_verify_last_run_timestamp` from it, `status` each table's last result and time.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result};
use cdc_core::{PipelineError, StateTree};
use serde::{Deserialize, Serialize};

use super::report::{TableStatus, VerifyReport};
use crate::config::Config;
use crate::status::StatusReport;

const PREFIX: &str = "verify/result/";

/// One table's last verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyResult {
    pub table: String,
    /// `equal`, `different` or `error`.
    pub status: String,
    pub divergent_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub rows_compared: u64,
    pub sampled: bool,
    /// When it finished, UTC (`2026-11-26T11:02:36.123456Z`).
    pub finished_at: String,
    pub finished_unix: f64,
    /// Why the table could not be compared (`status` = `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn results_of(report: &VerifyReport) -> Vec<VerifyResult> {
    let now = cdc_core::time::now_micros();
    report
        .tables
        .iter()
        .map(|t| VerifyResult {
            table: t.table.clone(),
            status: match t.status {
                TableStatus::Equal => "equal",
                TableStatus::Different => "different",
                TableStatus::Error => "error",
            }
            .into(),
            // After a verified repair, what is left.
            divergent_rows: match &t.repair {
                Some(r) if r.verified => r.still_divergent,
                _ => t.divergent(),
            },
            missing: t.missing,
            extra: t.extra,
            different: t.different,
            rows_compared: t.rows_compared,
            sampled: t.sampled,
            finished_at: cdc_core::time::format_utc_micros(now),
            finished_unix: now as f64 / 1e6,
            error: t.error.clone(),
        })
        .collect()
}

/// Keeps the results of a report (a run of the agent itself).
pub fn store_report(tree: &dyn StateTree, report: &VerifyReport) -> Result<(), PipelineError> {
    store_results(tree, &results_of(report))
}

/// Keeps an `error` result for each of `tables`: a run that failed as a whole.
pub fn store_failure(
    tree: &dyn StateTree,
    tables: &[String],
    error: &str,
) -> Result<(), PipelineError> {
    let now = cdc_core::time::now_micros();
    let results: Vec<VerifyResult> = tables
        .iter()
        .map(|table| VerifyResult {
            table: table.clone(),
            status: "error".into(),
            divergent_rows: 0,
            missing: 0,
            extra: 0,
            different: 0,
            rows_compared: 0,
            sampled: false,
            finished_at: cdc_core::time::format_utc_micros(now),
            finished_unix: now as f64 / 1e6,
            error: Some(error.to_string()),
        })
        .collect();
    store_results(tree, &results)
}

/// Hands the results to the running agent, or writes them into a stopped agent's state store
/// (a pipeline that never ran has none, and gets none).
pub async fn save(config: &Config, report: &VerifyReport, running: bool) -> Result<()> {
    let results = results_of(report);
    if running {
        let body = serde_json::to_string(&results)?;
        match crate::admin::call(&config.agent.admin_addr, "POST", "/verify", &body).await {
            Some((200, _)) => return Ok(()),
            Some((code, text)) => {
                anyhow::bail!("the agent refused the result ({code}): {}", text.trim())
            }
            None => anyhow::bail!("the agent stopped answering"),
        }
    }
    if !config.state_dir().exists() {
        return Ok(());
    }
    let store = crate::commands::open_store_of_stopped_agent(config)?;
    let tree = crate::store::SourceState::new(Arc::new(store), &config.agent.name);
    store_results(&tree, &results).context("writing the verify result into the state store")?;
    Ok(())
}

pub fn store_results(tree: &dyn StateTree, results: &[VerifyResult]) -> Result<(), PipelineError> {
    for result in results {
        let bytes = serde_json::to_vec(result)
            .map_err(|e| PipelineError::definite("state", e.to_string()))?;
        tree.put(&format!("{PREFIX}{}", result.table), &bytes)?;
    }
    Ok(())
}

/// A `POST /verify` body: the results to keep.
pub fn accept(tree: &dyn StateTree, body: &str) -> Result<usize, String> {
    let results: Vec<VerifyResult> =
        serde_json::from_str(body).map_err(|e| format!("not a verify result: {e}"))?;
    store_results(tree, &results).map_err(|e| e.to_string())?;
    Ok(results.len())
}

pub fn load(tree: &dyn StateTree) -> Vec<VerifyResult> {
    tree.scan(PREFIX)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect()
}

/// Each table's last result in the status report (tables not otherwise listed are added).
pub fn annotate(report: &mut StatusReport, tree: &dyn StateTree) {
    for result in load(tree) {
        match report.tables.iter_mut().find(|t| t.table == result.table) {
            Some(t) => t.last_verify = Some(result),
            None => report.tables.push(crate::status::TableStatus {
                table: result.table.clone(),
                state: report.state.as_str().to_string(),
                last_verify: Some(result),
                ..Default::default()
            }),
        }
    }
}

/// The verify metric families, for `/metrics`.
pub fn render_metrics(tree: &dyn StateTree, pipeline: &str) -> String {
    let results = load(tree);
    let mut out = String::new();
    let p = escape(pipeline);
    let _ = writeln!(
        out,
        "# HELP cdc_verify_divergent_rows Rows that differed between source and target at the last verify of the table (after its repair, if one ran).\n# TYPE cdc_verify_divergent_rows gauge"
    );
    for r in &results {
        let _ = writeln!(
            out,
            "cdc_verify_divergent_rows{{pipeline=\"{p}\",table=\"{}\"}} {}",
            escape(&r.table),
            r.divergent_rows
        );
    }
    let _ = writeln!(
        out,
        "# HELP cdc_verify_last_run_timestamp Unix time the last verify finished (NaN: never).\n# TYPE cdc_verify_last_run_timestamp gauge"
    );
    let last = results
        .iter()
        .map(|r| r.finished_unix)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let _ = writeln!(
        out,
        "cdc_verify_last_run_timestamp{{pipeline=\"{p}\"}} {}",
        last.map_or("NaN".to_string(), |v| format!("{v:.3}"))
    );
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_through_the_tree_into_metrics() {
        let tree = cdc_core::MemoryTree::default();
        let result = VerifyResult {
            table: "public.t".into(),
            status: "different".into(),
            divergent_rows: 3,
            missing: 1,
            extra: 1,
            different: 1,
            rows_compared: 100,
            sampled: false,
            finished_at: "2026-11-26T11:02:36.000000Z".into(),
            finished_unix: 1_795_000_000.0,
            error: None,
        };
        let body = serde_json::to_string(&vec![result.clone()]).unwrap();
        assert_eq!(accept(&tree, &body), Ok(1));
        assert_eq!(load(&tree), vec![result]);
        let metrics = render_metrics(&tree, "p");
        assert!(metrics.contains("cdc_verify_divergent_rows{pipeline=\"p\",table=\"public.t\"} 3"));
        assert!(metrics.contains("cdc_verify_last_run_timestamp{pipeline=\"p\"} 1795000000.000"));
        assert!(accept(&tree, "nonsense").is_err());
        store_failure(&tree, &["public.t".to_string()], "source down").unwrap();
        let failed = &load(&tree)[0];
        assert_eq!(
            (failed.status.as_str(), failed.error.as_deref()),
            ("error", Some("source down"))
        );
        assert!(render_metrics(&tree, "p")
            .contains("cdc_verify_divergent_rows{pipeline=\"p\",table=\"public.t\"} 0"));
    }
}
