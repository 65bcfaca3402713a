//! `verify --repair`: makes the target equal again while the pipeline streams.
//!
//! - Extra rows (in the target, not in the source) are deleted in one target transaction that
//!   holds the pipeline's `_cdc_state` row, after the source confirmed it still lacks their
//!   keys: the sink commits nothing meanwhile, so a source insert of such a key lands after the
//!   delete (see `Side::delete_extra`).
//! - Missing and different rows are copied again through the watermark snapshot, which is safe
//!   while streaming and resumable (a SIGKILL of verify or of the agent loses nothing: the
//!   request is kept in the state store). This first version asks for a copy of the *whole
//!   table*; copying only the divergent key ranges needs key-range requests in the chunked
//!   snapshot, which it does not take yet.
//! - Then the repaired keys are verified again (past the agent's confirmed position).
//!
//! With the agent stopped, the extra rows are deleted and the copy is queued in the state store:
//! it runs with the next `cdc-agent run`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::inflight::{settle, AgentLink};
use super::report::RepairReport;
use super::side::{Key, Side, TableSpec};
use crate::config::{Config, SnapshotMethodConfig};

/// Attempts at the guarded delete (it gives way to the sink on lock contention).
const DELETE_ATTEMPTS: usize = 10;
const POLL: Duration = Duration::from_millis(500);
/// How long verify follows a table copy before it leaves it to run on.
const COPY_WAIT: Duration = Duration::from_secs(3600);

pub struct Outcome {
    pub report: RepairReport,
    pub notes: Vec<String>,
}

pub async fn repair(
    config: &Config,
    agent: Option<&AgentLink>,
    source: &mut dyn Side,
    target: &mut dyn Side,
    spec: &TableSpec,
    extra: &[Key],
    recopy: Vec<Key>,
) -> Result<Outcome> {
    let mut report = RepairReport::default();
    let mut notes = Vec::new();
    if !extra.is_empty() {
        let mut attempt = 0;
        report.deleted = loop {
            attempt += 1;
            match target
                .delete_extra(spec, &config.agent.name, extra, source)
                .await
            {
                Ok(n) => break n,
                Err(e) if attempt < DELETE_ATTEMPTS => {
                    tracing::debug!(error = %format!("{e:#}"), attempt, "deleting extra rows gave way; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e) => return Err(e.context("deleting the extra rows in the target")),
            }
        };
    }
    let mut copied = true;
    if !recopy.is_empty() {
        if config.source.snapshot_method == SnapshotMethodConfig::Transaction {
            notes.push("source.snapshot_method = \"transaction\" copies only when the pipeline first starts: missing and different rows were not copied again (set it to \"auto\" or \"watermark\")".into());
        } else {
            report.recopy_requested = true;
            match agent {
                Some(agent) => {
                    copied = copy_with_agent(agent, &spec.source_name, &mut notes).await?
                }
                None => {
                    let store = crate::commands::open_store_of_stopped_agent(config)?;
                    let state = crate::store::SourceState::new(Arc::new(store), &config.agent.name);
                    cdc_core::chunked::request(&state, std::slice::from_ref(&spec.source_name))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    notes.push("agent not running: the table's copy is queued and runs with the next `cdc-agent run`; verify again after it".into());
                }
            }
        }
    }
    if let Some(agent) = agent {
        if copied {
            let mut keys = recopy;
            keys.extend(extra.iter().cloned());
            let settled = settle(source, target, agent, keys).await?;
            report.still_divergent = settled.divergent.len() as u64;
            report.verified = true;
            notes.extend(settled.note);
        }
    } else if !report.recopy_requested {
        // Only deletes, and nothing streams: they are checked right away.
        let rows = target.rows(extra, false).await?;
        report.still_divergent = rows.len() as u64;
        report.verified = true;
    }
    Ok(Outcome { report, notes })
}

/// Asks the running agent to copy `table` again and follows the copy until it is sent; then
/// the rows are verified again (past the agent's confirmed position). False when the copy did
/// not finish while verify followed it.
async fn copy_with_agent(agent: &AgentLink, table: &str, notes: &mut Vec<String>) -> Result<bool> {
    let generation = match crate::admin::call(&agent.addr, "POST", "/snapshot", table).await {
        Some((200, body)) => {
            let list: Vec<serde_json::Value> =
                serde_json::from_str(&body).context("the agent's answer to the copy request")?;
            list.first()
                .and_then(|v| v["generation"].as_u64())
                .context("the agent's answer names no generation")?
        }
        Some((code, body)) => anyhow::bail!("the agent refused the copy ({code}): {}", body.trim()),
        None => anyhow::bail!("the agent at {} stopped answering", agent.addr),
    };
    let deadline = Instant::now() + COPY_WAIT;
    loop {
        let Some((200, body)) = crate::admin::call(&agent.addr, "GET", "/snapshot", "").await
        else {
            notes.push("the agent stopped during the copy; it resumes at its next chunk when the agent runs again".into());
            return Ok(false);
        };
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        let done = list.iter().any(|v| {
            v["table"].as_str() == Some(table)
                && v["generation"].as_u64().is_some_and(|g| g >= generation)
                && v["done"].as_bool() == Some(true)
        });
        if done {
            return Ok(true);
        }
        if Instant::now() > deadline {
            notes.push(format!(
                "the copy of {table} was still running after {} s; it goes on in the agent",
                COPY_WAIT.as_secs()
            ));
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}
