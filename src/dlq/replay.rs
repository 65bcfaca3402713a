//! `dlq replay`: the changes set aside, applied again in their original order against the target
//! as it is now; what the target refuses again stays, and so does everything behind it.
//!
//! ```text
//!  records (oldest first) ─▶ skip those behind an older record of their key not replayed
//!      ─▶ chunk ─▶ sink.write + flush (one target transaction; the target's position untouched)
//!      ─▶ refused again? attempt counted, the key blocked for the rest of the run
//!      ─▶ the others removed from the store (durably)
//! ```
//!
//! Exactly once across a crash: a record leaves the store only after the target committed it.
//! Killed in between, the next replay applies it again, which changes nothing: a warehouse sink
//! upserts the row's state (an insert is replayed as an upsert, so that an insert and a delete of
//! one key in one chunk still delete a row an earlier, interrupted replay wrote), a delete of a
//! missing row deletes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cdc_core::dead_letter::{DeadLetter, DeadLetters};
use cdc_core::{Op, PipelineError, SourceMessage};
use serde::{Deserialize, Serialize};

use super::queue::DeadLetterQueue;
use crate::config::{Config, SinkType};
use crate::wiring;

/// Records applied per target transaction.
const REPLAY_CHUNK: usize = 500;

/// Which records a replay or a drop takes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Selection {
    #[serde(default)]
    pub ids: Vec<u64>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub all: bool,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.table.is_none() && !self.all
    }

    pub fn selects(&self, id: u64, letter: &DeadLetter) -> bool {
        self.all
            || self.ids.contains(&id)
            || self
                .table
                .as_deref()
                .is_some_and(|t| table_matches(t, &letter.table))
    }
}

/// `--table` matches `schema.table`, or the table's name alone.
pub fn table_matches(wanted: &str, table: &str) -> bool {
    table == wanted
        || table
            .rsplit_once('.')
            .is_some_and(|(_, name)| name == wanted)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Applied and removed from the store.
    pub applied: Vec<u64>,
    /// Refused again: still in the store, their attempt counted.
    pub failed: Vec<Failed>,
    /// Not tried: an older record of the same key is still in the store.
    pub held: Vec<Held>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failed {
    pub id: u64,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Held {
    pub id: u64,
    pub behind: u64,
}

/// What the replay sink refuses again, collected instead of stored: the records are in the store
/// already, and stay there.
#[derive(Debug, Default)]
struct RefusedAgain(Mutex<Vec<DeadLetter>>);

impl RefusedAgain {
    fn take(&self) -> HashMap<(String, String), DeadLetter> {
        let letters = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        letters
            .into_iter()
            .map(|l| ((l.table.clone(), l.key.clone()), l))
            .collect()
    }
}

impl DeadLetters for RefusedAgain {
    fn sets_aside_poison(&self) -> bool {
        true
    }

    // Records behind a refused one are left out of the chunks before they reach the sink.
    fn holds_table(&self, _: &str) -> bool {
        false
    }

    fn holds_key(&self, _: &str, _: &str) -> bool {
        false
    }

    fn held_keys(&self, _: &str) -> std::collections::HashSet<String> {
        Default::default()
    }

    fn set_aside(&self, letters: Vec<DeadLetter>) -> Result<(), PipelineError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(letters);
        Ok(())
    }
}

/// Replays the selected records of `queue` into the configured sink.
pub async fn replay(
    config: &Config,
    queue: &DeadLetterQueue,
    selection: &Selection,
) -> Result<ReplayReport, PipelineError> {
    let state = |e: crate::store::StoreError| PipelineError::definite("state", e.to_string());
    let records = queue.records().map_err(state)?;
    let mut report = ReplayReport::default();
    // A key's records wait behind its oldest record that is not replayed...
    let mut unselected: HashMap<(String, String), u64> = HashMap::new();
    for (id, letter) in &records {
        if !selection.selects(*id, letter) {
            unselected
                .entry((letter.table.clone(), letter.key.clone()))
                .or_insert(*id);
        }
    }
    // ...and behind a record the target refused again in this run.
    let mut failed: HashMap<(String, String), u64> = HashMap::new();
    let todo: Vec<&(u64, DeadLetter)> = records
        .iter()
        .filter(|(id, letter)| selection.selects(*id, letter))
        .collect();
    if todo.is_empty() {
        return Ok(report);
    }
    let refused = Arc::new(RefusedAgain::default());
    let mut sink = wiring::build_replay_sink(config, refused.clone())?;
    sink.open().await?;
    let upserts_only = matches!(config.sink.kind, SinkType::Postgres | SinkType::Mysql);
    for chunk in todo.chunks(REPLAY_CHUNK) {
        let mut messages = Vec::with_capacity(chunk.len());
        let mut sent = Vec::with_capacity(chunk.len());
        for (id, letter) in chunk.iter().map(|r| (r.0, &r.1)) {
            let key = (letter.table.clone(), letter.key.clone());
            let behind = unselected
                .get(&key)
                .filter(|&&b| b < id)
                .or(failed.get(&key));
            if let Some(&behind) = behind {
                report.held.push(Held { id, behind });
                continue;
            }
            let mut event = letter.event();
            if upserts_only && event.op == Op::Insert {
                event.op = Op::Update;
            }
            messages.push(SourceMessage::Change(event));
            sent.push((id, key));
        }
        if messages.is_empty() {
            continue;
        }
        sink.write(&messages).await?;
        sink.flush().await?;
        crash_point("dlq-replay-committed");
        let refusals = refused.take();
        let mut applied = Vec::with_capacity(sent.len());
        for (id, key) in sent {
            // A key's records in one chunk went in as one change: refused, all of them stay.
            if let Some(&behind) = failed.get(&key) {
                report.held.push(Held { id, behind });
                continue;
            }
            match refusals.get(&key) {
                Some(again) => {
                    queue
                        .record_attempt(id, &again.class, &again.message)
                        .map_err(state)?;
                    failed.insert(key, id);
                    report.failed.push(Failed {
                        id,
                        message: again.message.clone(),
                    });
                }
                None => applied.push(id),
            }
        }
        queue.remove(&applied).map_err(state)?;
        tracing::info!(applied = applied.len(), "dead letters replayed");
        report.applied.extend(applied);
    }
    Ok(report)
}

/// A test hook: `CDC_AGENT_CRASH_AT=<point>` aborts the process there, as a SIGKILL would, so a
/// test can hit the narrowest window of a crash-safety argument every time.
fn crash_point(point: &str) {
    if std::env::var("CDC_AGENT_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("CDC_AGENT_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}
