//! `cdc-agent dlq list | show | replay | drop`: on the state store when the agent is stopped, on
//! the running agent's admin endpoint when it runs.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::replay::{ReplayReport, Selection};
use super::{DeadLetterQueue, DlqService, Shown, Summary};
use crate::admin;
use crate::cli::DlqCommand;
use crate::config::{Config, OnError};

/// How long the command waits for the running agent to replay or drop.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where the records are: the running agent, or the store of a stopped one.
enum Access {
    Running(String),
    Stopped(Option<Box<DlqService>>),
}

impl Access {
    async fn find(config: &Config) -> Result<Access> {
        let addr = config.agent.admin_addr.0.clone();
        if admin::fetch_status(&addr, &config.agent.name)
            .await
            .is_some()
        {
            return Ok(Access::Running(addr));
        }
        // A pipeline that never ran has no store, and nothing set aside.
        if !config.state_dir().exists() {
            return Ok(Access::Stopped(None));
        }
        let store = match crate::commands::open_store_of_stopped_agent(config) {
            Ok(store) => Arc::new(store),
            // Locked: the agent is starting and its endpoint answers in a moment.
            Err(e)
                if e.downcast_ref::<crate::store::StoreError>()
                    .is_some_and(|e| matches!(e, crate::store::StoreError::Locked(_))) =>
            {
                return match crate::commands::wait_for_starting_agent(config).await {
                    Some(_) => Ok(Access::Running(addr)),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let queue = DeadLetterQueue::open(
            store,
            &config.agent.name,
            config.sink.on_error == OnError::Dlq,
            config.sink.dlq_max_records,
            None,
        )?;
        Ok(Access::Stopped(Some(Box::new(DlqService::new(
            config.clone(),
            Arc::new(queue),
        )))))
    }

    async fn list(&self) -> Result<Vec<Summary>> {
        match self {
            Access::Running(addr) => Ok(serde_json::from_str(
                &remote(addr, "GET", "/dlq", "").await?,
            )?),
            Access::Stopped(None) => Ok(Vec::new()),
            Access::Stopped(Some(service)) => service.list(),
        }
    }

    async fn show(&self, id: u64) -> Result<Option<Shown>> {
        match self {
            Access::Running(addr) => {
                let path = format!("/dlq/{id}");
                match admin::call(addr, "GET", &path, "").await {
                    Some((404, _)) => Ok(None),
                    Some((200, body)) => Ok(Some(serde_json::from_str(&body)?)),
                    Some((code, body)) => bail!("the agent answered {code}: {}", body.trim()),
                    None => bail!("the agent's admin endpoint {addr} stopped answering"),
                }
            }
            Access::Stopped(None) => Ok(None),
            Access::Stopped(Some(service)) => service.show(id),
        }
    }

    async fn replay(&self, selection: &Selection) -> Result<ReplayReport> {
        match self {
            Access::Running(addr) => {
                let body = serde_json::to_string(selection)?;
                Ok(serde_json::from_str(
                    &remote(addr, "POST", "/dlq/replay", &body).await?,
                )?)
            }
            Access::Stopped(None) => Ok(ReplayReport::default()),
            Access::Stopped(Some(service)) => service.replay(selection).await,
        }
    }

    async fn drop_records(&self, selection: &Selection) -> Result<Vec<u64>> {
        match self {
            Access::Running(addr) => {
                let body = serde_json::to_string(selection)?;
                Ok(serde_json::from_str(
                    &remote(addr, "POST", "/dlq/drop", &body).await?,
                )?)
            }
            Access::Stopped(None) => Ok(Vec::new()),
            Access::Stopped(Some(service)) => service.drop_records(selection).await,
        }
    }
}

/// A request to the running agent; the body of its 200 answer.
async fn remote(addr: &str, method: &str, path: &str, body: &str) -> Result<String> {
    match admin::call_within(addr, method, path, body, REMOTE_TIMEOUT).await {
        Some((200, body)) => Ok(body),
        Some((code, body)) => bail!("the agent answered {code}: {}", body.trim()),
        None => bail!("the agent's admin endpoint {addr} did not answer"),
    }
}

pub async fn run(config: &Config, command: DlqCommand) -> Result<ExitCode> {
    let selection = |ids: Vec<u64>, table: Option<String>, all: bool| Selection { ids, table, all };
    match command {
        DlqCommand::List { table, json } => {
            let access = Access::find(config).await?;
            let mut records = access.list().await?;
            if let Some(table) = &table {
                records.retain(|r| super::replay::table_matches(table, &r.table));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print!("{}", render_list(&records));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { id } => {
            let access = Access::find(config).await?;
            match access.show(id).await? {
                Some(shown) => {
                    println!("{}", serde_json::to_string_pretty(&shown)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("error: no dead letter {id} (see `cdc-agent dlq list`)");
                    Ok(ExitCode::from(1))
                }
            }
        }
        DlqCommand::Replay { ids, table, all } => {
            let selection = selection(ids, table, all);
            if selection.is_empty() {
                eprintln!("error: say what to replay: ids, --table T or --all");
                return Ok(ExitCode::from(2));
            }
            let access = Access::find(config).await?;
            let report = access
                .replay(&selection)
                .await
                .context("replaying the dead-letter store")?;
            println!(
                "replayed {} changes; {} refused again, {} held behind an older change of their key",
                report.applied.len(),
                report.failed.len(),
                report.held.len()
            );
            for failed in &report.failed {
                println!("refused again {}: {}", failed.id, failed.message);
            }
            for held in &report.held {
                println!("held {} behind {}", held.id, held.behind);
            }
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        DlqCommand::Drop {
            ids,
            table,
            all,
            yes,
        } => {
            let selection = selection(ids, table, all);
            if selection.is_empty() {
                eprintln!("error: say what to drop: ids, --table T or --all");
                return Ok(ExitCode::from(2));
            }
            if !yes {
                eprintln!("error: dropped changes never reach the target; run again with --yes to confirm");
                return Ok(ExitCode::from(2));
            }
            let access = Access::find(config).await?;
            let dropped = access.drop_records(&selection).await?;
            println!("dropped {} changes", dropped.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Characters of a message `dlq list` shows (all of it with `--json` or `dlq show`).
const LIST_MESSAGE_CHARS: usize = 120;

fn render_list(records: &[Summary]) -> String {
    let mut out = format!(
        "{:<8} {:<28} {:<24} {:<10} {:>8} {:>8}  MESSAGE\n",
        "ID", "TABLE", "KEY", "CLASS", "ATTEMPTS", "AGE"
    );
    let now = cdc_core::time::now_micros();
    for r in records {
        let age = cdc_core::time::parse_utc_micros(&r.first_attempt)
            .map(|t| human_age((now - t).max(0) / 1_000_000))
            .unwrap_or_else(|| "-".into());
        let mut message: String = r.message.chars().take(LIST_MESSAGE_CHARS).collect();
        if r.message.chars().count() > LIST_MESSAGE_CHARS {
            message.push('…');
        }
        out.push_str(&format!(
            "{:<8} {:<28} {:<24} {:<10} {:>8} {:>8}  {}\n",
            r.id,
            r.table,
            r.key.to_string(),
            r.class,
            r.attempts,
            age,
            message
        ));
    }
    out.push_str(&format!("{} changes set aside\n", records.len()));
    out
}

fn human_age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
