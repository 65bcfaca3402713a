//! The dead-letter store of the binary: the sled-backed store the sinks set changes aside in
//! ([`queue`]), their replay ([`replay`]) and the `dlq` commands ([`commands`]), which work on
//! the store directly when the agent is stopped and through its admin endpoint when it runs
//! (sled is locked by the running process).

pub mod commands;
mod queue;
pub mod replay;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use queue::DeadLetterQueue;
use replay::{ReplayReport, Selection};

use crate::config::Config;

/// One record as `dlq list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub id: u64,
    pub table: String,
    pub key: serde_json::Value,
    pub class: String,
    pub message: String,
    pub attempts: u32,
    pub first_attempt: String,
    pub last_attempt: String,
}

/// One record as `dlq show` shows it: the summary and the change record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shown {
    #[serde(flatten)]
    pub summary: Summary,
    pub record: serde_json::Value,
}

fn summary(id: u64, letter: &cdc_core::dead_letter::DeadLetter) -> Summary {
    Summary {
        id,
        table: letter.table.clone(),
        key: serde_json::from_str(&letter.key)
            .unwrap_or_else(|_| serde_json::Value::String(letter.key.clone())),
        class: letter.class.clone(),
        message: letter.message.clone(),
        attempts: letter.attempts,
        first_attempt: letter.first_attempt.clone(),
        last_attempt: letter.last_attempt.clone(),
    }
}

/// The dead-letter operations, on an open store: what the commands run when the agent is
/// stopped, and what the running agent's admin endpoint runs for them.
pub struct DlqService {
    pub config: Config,
    pub queue: Arc<DeadLetterQueue>,
    /// One replay or drop at a time.
    busy: tokio::sync::Mutex<()>,
}

impl DlqService {
    pub fn new(config: Config, queue: Arc<DeadLetterQueue>) -> Self {
        DlqService {
            config,
            queue,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    pub fn list(&self) -> anyhow::Result<Vec<Summary>> {
        Ok(self
            .queue
            .records()?
            .iter()
            .map(|(id, letter)| summary(*id, letter))
            .collect())
    }

    pub fn show(&self, id: u64) -> anyhow::Result<Option<Shown>> {
        Ok(self.queue.get(id)?.map(|letter| Shown {
            summary: summary(id, &letter),
            record: letter.record,
        }))
    }

    pub async fn replay(&self, selection: &Selection) -> anyhow::Result<ReplayReport> {
        let _one = self.busy.lock().await;
        Ok(replay::replay(&self.config, &self.queue, selection).await?)
    }

    /// Removes the selected records; returns their ids.
    pub async fn drop_records(&self, selection: &Selection) -> anyhow::Result<Vec<u64>> {
        let _one = self.busy.lock().await;
        let ids: Vec<u64> = self
            .queue
            .records()?
            .iter()
            .filter(|(id, letter)| selection.selects(*id, letter))
            .map(|(id, _)| *id)
            .collect();
        self.queue.remove(&ids)?;
        Ok(ids)
    }
}
