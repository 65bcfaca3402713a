//! `verify --repair`: makes the target equal again while the pipeline streams.
//!
//! - Extra rows (in the target, not in the source) are deleted in one target transaction that
//!   holds the pipeline's `_cdc_state` row, after the source confirmed it still lacks their
//!   keys: the sink commits nothing meanwhile, so a source insert of such a key lands after the
//!   delete (see `Side::delete_extra`).
//! - Missing and different rows are copied again through the watermark snapshot, which is safe
//!   while streaming and resumable (a SIGKILL of verify or of the agent loses nothing: the
//!   request is kept in the state store): a copy of key ranges (the predecessor of a divergent
//!   key in the source's key order, the key], integer keys less than 1,000 apart in one range;
//!   with more than 1,000 keys, a copy of the whole table.
//! - Then the repaired keys are verified again (past the agent's confirmed position).
//!
//! With the agent stopped, the extra rows are deleted and the copy is queued in the state store:
//! it runs with the next `cdc-agent run`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use cdc_core::chunked::{Cursor, Key as ReaderKey};

use super::inflight::{settle, AgentLink};
use super::kind::{Family, Kind};
use super::report::RepairReport;
use super::side::{Key, Side, TableSpec};
use crate::config::{Config, SnapshotMethodConfig};

/// Attempts at the guarded delete (it gives way to the sink on lock contention).
const DELETE_ATTEMPTS: usize = 10;
const POLL: Duration = Duration::from_millis(500);
/// Divergent keys copied again by key at most; beyond, the whole table is copied.
const MAX_RANGE_KEYS: usize = 1000;
/// Integer keys closer than this share one copied range (see `group_integer_keys`).
const GROUP_SPAN: i128 = 1000;
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
            let ranges = key_ranges(source, spec, &recopy).await?;
            report.recopy = if ranges.is_some() { "keys" } else { "table" }.to_string();
            let table = &spec.source_name;
            match agent {
                Some(agent) => {
                    let (path, body) = match &ranges {
                        Some(ranges) => (
                            "/snapshot/ranges",
                            serde_json::json!({
                                "table": table,
                                "ranges": cdc_core::chunked::ranges_json(ranges),
                            })
                            .to_string(),
                        ),
                        None => ("/snapshot", table.clone()),
                    };
                    copied = copy_with_agent(agent, table, path, &body, &mut notes).await?;
                }
                None => {
                    let store = crate::commands::open_store_of_stopped_agent(config)?;
                    let state = crate::store::SourceState::new(Arc::new(store), &config.agent.name);
                    match &ranges {
                        Some(ranges) => {
                            cdc_core::chunked::request_ranges(&state, table, ranges).map(|_| ())
                        }
                        None => cdc_core::chunked::request(&state, std::slice::from_ref(table))
                            .map(|_| ()),
                    }
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    notes.push("agent not running: the copy is queued and runs with the next `cdc-agent run`; verify again after it".into());
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

/// Key ranges that hold the divergent keys alone, (predecessor, key] in the source's own key
/// order, each key written as the snapshot reader writes keys; `None` (copy the whole table)
/// when there are too many keys or one cannot be written so.
async fn key_ranges(
    source: &mut dyn Side,
    spec: &TableSpec,
    keys: &[Key],
) -> Result<Option<Vec<(Cursor, ReaderKey)>>> {
    if keys.len() > MAX_RANGE_KEYS || spec.key.is_empty() {
        return Ok(None);
    }
    let kinds: Vec<Kind> = spec
        .key
        .iter()
        .map(|&i| spec.columns[i].kind.clone())
        .collect();
    let mut ranges = Vec::with_capacity(keys.len());
    for group in group_integer_keys(&kinds, keys) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let Some(through) = reader_key(spec.pair.source, &kinds, last) else {
            return Ok(None);
        };
        let from = match source.predecessor(first).await? {
            None => Cursor::Start,
            Some(before) => match reader_key(spec.pair.source, &kinds, &before) {
                Some(before) => Cursor::After(before),
                None => return Ok(None),
            },
        };
        ranges.push((from, through));
    }
    Ok(Some(ranges))
}

/// The keys in groups that one range may copy together: with a single integer key, sorted
/// keys less than `GROUP_SPAN` apart share a range (it holds at most that many rows besides
/// them, copied again harmlessly), so many divergent keys close together cost one chunk, not
/// one each; other keys one by one.
fn group_integer_keys(kinds: &[Kind], keys: &[Key]) -> Vec<Vec<Key>> {
    let numbers: Option<Vec<(i128, &Key)>> = match kinds {
        [Kind::Int] => keys
            .iter()
            .map(|k| k.first().and_then(|v| v.parse().ok()).map(|n| (n, k)))
            .collect(),
        _ => None,
    };
    let Some(mut numbers) = numbers else {
        return keys.iter().map(|k| vec![k.clone()]).collect();
    };
    numbers.sort_by_key(|(n, _)| *n);
    let mut groups: Vec<(i128, Vec<Key>)> = Vec::new();
    for (n, key) in numbers {
        match groups.last_mut() {
            Some((start, group)) if n - *start < GROUP_SPAN => group.push(key.clone()),
            _ => groups.push((n, vec![key.clone()])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// A key as the snapshot reader writes it: Postgres text (bytea as `\x..`); for MySQL typed,
/// `i:`/`u:` integers, `b:` bytes in hex, `s:` text.
fn reader_key(source: Family, kinds: &[Kind], key: &Key) -> Option<ReaderKey> {
    key.iter()
        .zip(kinds)
        .map(|(value, kind)| {
            Some(Some(match (source, kind) {
                (Family::Postgres, Kind::Bytes) => format!("\\x{value}"),
                (Family::Postgres, _) => value.clone(),
                (Family::Mysql, Kind::Int) if value.parse::<i64>().is_ok() => format!("i:{value}"),
                (Family::Mysql, Kind::Int) => format!("u:{}", value.parse::<u64>().ok()?),
                (Family::Mysql, Kind::Bytes) => format!("b:{value}"),
                (Family::Mysql, _) => format!("s:{value}"),
                (Family::Duckdb, _) => return None,
            }))
        })
        .collect()
}

/// Sends the copy request (`path`, `body`) to the running agent and follows the copy until it
/// is sent; then the rows are verified again (past the agent's confirmed position). False when
/// the copy did not finish while verify followed it.
async fn copy_with_agent(
    agent: &AgentLink,
    table: &str,
    path: &str,
    body: &str,
    notes: &mut Vec<String>,
) -> Result<bool> {
    let generation = match crate::admin::call(&agent.addr, "POST", path, body).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: i64) -> Key {
        vec![n.to_string()]
    }

    #[test]
    fn close_integer_keys_share_a_range_others_go_one_by_one() {
        let keys = vec![key(5000), key(10), key(900), key(1500), key(-3)];
        assert_eq!(
            group_integer_keys(&[Kind::Int], &keys),
            vec![
                vec![key(-3), key(10), key(900)],
                vec![key(1500)],
                vec![key(5000)]
            ]
        );
        let text = vec![vec!["b".to_string()], vec!["a".to_string()]];
        assert_eq!(group_integer_keys(&[Kind::Text], &text).len(), 2);
    }
}
