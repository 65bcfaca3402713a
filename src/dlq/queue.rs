//! The dead-letter store over the state store's `dead_letters` tree, with an index in memory of
//! the keys it holds: what the sinks ask on every batch (see [`cdc_core::dead_letter`]).
//!
//! ```text
//!  sink ─set_aside─▶ tree insert (new id) ─▶ flush (fsync) ─▶ index: table → key → ids
//!  replay / drop ──▶ tree remove ─────────▶ flush ──────────▶ index: the key is free again
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use cdc_core::dead_letter::{DeadLetter, DeadLetters};
use cdc_core::{PipelineError, Position};

use crate::status::LiveStatus;
use crate::store::{StateStore, StoreError};

/// One pipeline's dead letters: the store's records and the index of the keys they hold.
pub struct DeadLetterQueue {
    store: Arc<StateStore>,
    prefix: String,
    sets_aside_poison: bool,
    max_records: u64,
    index: Mutex<Index>,
    /// Records held now, readable without the lock.
    size: std::sync::atomic::AtomicU64,
    /// Where `dlq_size` is shown while the agent runs.
    live: Option<Arc<LiveStatus>>,
}

impl std::fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("pipeline", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Index {
    /// table → key → the records of the key, oldest first.
    tables: HashMap<String, HashMap<String, HeldKey>>,
    len: u64,
    /// Records set aside by this process, by (table, class): `cdc_dlq_records_total`.
    set_aside: BTreeMap<(String, String), u64>,
}

struct HeldKey {
    ids: Vec<u64>,
    /// Position and ordinal of the newest change held for the key.
    newest: (Position, u64),
}

impl DeadLetterQueue {
    /// Opens pipeline `pipeline`'s dead letters and indexes the keys they hold.
    pub fn open(
        store: Arc<StateStore>,
        pipeline: &str,
        sets_aside_poison: bool,
        max_records: u64,
        live: Option<Arc<LiveStatus>>,
    ) -> Result<Self, StoreError> {
        let queue = DeadLetterQueue {
            store,
            prefix: format!("{pipeline}/"),
            sets_aside_poison,
            max_records,
            index: Mutex::new(Index::default()),
            size: Default::default(),
            live,
        };
        let mut index = Index::default();
        for (id, letter) in queue.records()? {
            index.add(id, &letter);
        }
        *queue.lock() = index;
        queue.show_size();
        Ok(queue)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic elsewhere left the index as it was between two whole updates.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tree(&self) -> &sled::Tree {
        self.store.dead_letters()
    }

    fn key(&self, id: u64) -> String {
        format!("{}{id:020}", self.prefix)
    }

    fn show_size(&self) {
        let size = self.lock().len;
        self.size.store(size, std::sync::atomic::Ordering::Release);
        if let Some(live) = &self.live {
            live.set_dlq_size(size);
        }
    }

    /// Records held now.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    /// Records set aside by this process, by (table, class).
    pub fn set_aside_counts(&self) -> BTreeMap<(String, String), u64> {
        self.lock().set_aside.clone()
    }

    /// Every record, oldest first.
    pub fn records(&self) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree().scan_prefix(&self.prefix) {
            let (key, value) = entry.map_err(|e| self.store.sled_err(e))?;
            let id = String::from_utf8_lossy(&key[self.prefix.len()..])
                .parse::<u64>()
                .unwrap_or_default();
            let letter: DeadLetter =
                serde_json::from_slice(&value).map_err(|e| self.store.corrupt(e))?;
            out.push((id, letter));
        }
        Ok(out)
    }

    pub fn get(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        match self
            .tree()
            .get(self.key(id))
            .map_err(|e| self.store.sled_err(e))?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.store.corrupt(e)),
        }
    }

    fn write(&self, id: u64, letter: &DeadLetter) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(letter).map_err(|e| self.store.corrupt(e))?;
        self.tree()
            .insert(self.key(id), bytes)
            .map_err(|e| self.store.sled_err(e))?;
        Ok(())
    }

    /// Records another failed attempt of record `id` (a replay that failed again), durably.
    pub fn record_attempt(&self, id: u64, class: &str, message: &str) -> Result<(), StoreError> {
        let _index = self.lock();
        if let Some(mut letter) = self.get(id)? {
            letter.attempts += 1;
            letter.last_attempt = cdc_core::time::format_utc_micros(cdc_core::time::now_micros());
            letter.class = class.to_string();
            letter.message = message.to_string();
            self.write(id, &letter)?;
            self.store.flush()?;
        }
        Ok(())
    }

    /// Removes records (replayed or dropped), durably; their keys are free once none is left.
    pub fn remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        {
            let mut index = self.lock();
            for &id in ids {
                let Some(old) = self
                    .tree()
                    .remove(self.key(id))
                    .map_err(|e| self.store.sled_err(e))?
                else {
                    continue;
                };
                if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&old) {
                    index.remove(id, &letter);
                }
            }
            self.store.flush()?;
        }
        self.show_size();
        Ok(())
    }

    fn full(&self, len: u64) -> PipelineError {
        PipelineError::definite(
            "dlq",
            format!(
                "the dead-letter store holds {len} records, sink.dlq_max_records: the target refuses too many changes to set them aside"
            ),
        )
        .with_hint("see `cdc-agent dlq list`: fix the target or the source, then `cdc-agent dlq replay --all` (or drop them), or raise sink.dlq_max_records")
    }
}

impl Index {
    fn add(&mut self, id: u64, letter: &DeadLetter) {
        let (position, seq) = letter.change.position();
        let held = self
            .tables
            .entry(letter.table.clone())
            .or_default()
            .entry(letter.key.clone())
            .or_insert_with(|| HeldKey {
                ids: Vec::new(),
                newest: (position.clone(), seq),
            });
        held.ids.push(id);
        held.newest = (position.clone(), seq);
        self.len += 1;
    }

    fn remove(&mut self, id: u64, letter: &DeadLetter) {
        let Some(keys) = self.tables.get_mut(&letter.table) else {
            return;
        };
        if let Some(held) = keys.get_mut(&letter.key) {
            let before = held.ids.len();
            held.ids.retain(|&i| i != id);
            self.len -= (before - held.ids.len()) as u64;
            if held.ids.is_empty() {
                keys.remove(&letter.key);
            }
        }
        if keys.is_empty() {
            self.tables.remove(&letter.table);
        }
    }

    /// The records of the letter's key, if the letter is at or before the newest change held
    /// for the key: delivered again after a restart, its effect is here already.
    fn already_held(&self, letter: &DeadLetter) -> Option<&[u64]> {
        let held = self.tables.get(&letter.table)?.get(&letter.key)?;
        let (position, seq) = letter.change.position();
        let (newest, newest_seq) = &held.newest;
        let not_newer = match position.try_cmp(newest).ok()? {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => seq <= *newest_seq,
            std::cmp::Ordering::Greater => false,
        };
        not_newer.then_some(held.ids.as_slice())
    }
}

impl DeadLetters for DeadLetterQueue {
    fn sets_aside_poison(&self) -> bool {
        self.sets_aside_poison
    }

    fn holds_any(&self) -> bool {
        self.size.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    fn holds_table(&self, table: &str) -> bool {
        self.lock().tables.contains_key(table)
    }

    fn holds_key(&self, table: &str, key: &str) -> bool {
        self.lock()
            .tables
            .get(table)
            .is_some_and(|keys| keys.contains_key(key))
    }

    fn held_keys(&self, table: &str) -> std::collections::HashSet<String> {
        self.lock()
            .tables
            .get(table)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn set_aside(&self, letters: Vec<DeadLetter>) -> Result<(), PipelineError> {
        let state = |e: StoreError| PipelineError::definite("state", e.to_string());
        {
            let mut index = self.lock();
            for letter in letters {
                if let Some(ids) = index.already_held(&letter) {
                    // The record of this very change, if the batch then was cut as now, counts
                    // one more attempt.
                    for &id in ids.iter().rev() {
                        let Some(mut held) = self.get(id).map_err(state)? else {
                            continue;
                        };
                        if held.change.position() == letter.change.position() {
                            held.attempts += 1;
                            held.last_attempt = letter.last_attempt.clone();
                            self.write(id, &held).map_err(state)?;
                            break;
                        }
                    }
                    continue;
                }
                if index.len >= self.max_records {
                    let len = index.len;
                    drop(index);
                    // What was set aside before the limit is kept (durably): a restart after
                    // the operator's fix finds it.
                    self.store.flush().map_err(state)?;
                    self.show_size();
                    return Err(self.full(len));
                }
                // From 1: an id people type.
                let id = self.store.generate_id().map_err(state)? + 1;
                self.write(id, &letter).map_err(state)?;
                index.add(id, &letter);
                *index
                    .set_aside
                    .entry((letter.table.clone(), letter.class.clone()))
                    .or_default() += 1;
            }
            // Durable before the sink commits past these changes.
            let flushing = std::time::Instant::now();
            self.store.flush().map_err(state)?;
            tracing::debug!(
                ms = flushing.elapsed().as_millis() as u64,
                "dead letters flushed"
            );
        }
        self.show_size();
        Ok(())
    }

    fn discard_table(&self, table: &str) -> Result<(), PipelineError> {
        if !self.holds_table(table) {
            return Ok(());
        }
        let state = |e: StoreError| PipelineError::definite("state", e.to_string());
        let ids: Vec<u64> = self
            .records()
            .map_err(state)?
            .into_iter()
            .filter(|(_, letter)| letter.table == table)
            .map(|(id, _)| id)
            .collect();
        tracing::info!(
            table,
            records = ids.len(),
            "the table was truncated: its dead letters are dropped"
        );
        self.remove(&ids).map_err(state)
    }
}

#[cfg(test)]
mod tests;
