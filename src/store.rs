//! The state store: the agent's memory, in sled, one tree per concern.
//!
//! * `checkpoint`: pipeline name → the newest [`Checkpoint`] every output made durable.
//! * `schema_history`: `pipeline/…` → what a source needs to remember besides its position (the
//!   MySQL source's table columns by binlog position), written through [`SourceState`].
//! * `meta`: pipeline name → what the pipeline was set up with (slot, publication) and counters
//!   `status` shows when the agent is stopped.
//! * `source_seen`: pipeline name → what the agent last read of the source server
//!   ([`SourceSighting`]), so that `status` after a restart during an outage shows it.
//! * `dead_letters`: `pipeline/<id, 20 digits>` → a change set aside (see `dlq`), in the order
//!   it was set aside.
//!
//! A running agent holds sled's lock on the directory; `status` then asks the admin endpoint.

use std::path::{Path, PathBuf};

use cdc_core::Checkpoint;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store {0} is locked by a running cdc-agent (stop it first, or use its admin endpoint)")]
    Locked(PathBuf),
    #[error("state store {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// A file error no retry fixes (the directory is a file, not writable, ...): with the fix.
    #[error("state store {path}: {error} (fix: {hint})")]
    Unusable {
        path: PathBuf,
        error: std::io::Error,
        hint: String,
    },
    #[error("state store {path}: a stored record is unreadable ({source}); run `cdc-agent reset --yes` to start over")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What `status` can tell about a pipeline without the agent running.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PipelineMeta {
    pub source_type: String,
    pub slot: Option<String>,
    pub publication: Option<String>,
    pub events_total: u64,
    pub errors_total: u64,
    pub last_error: Option<String>,
    /// `failed` when the last run stopped on a definite error, else `stopped`.
    pub state: String,
    #[serde(default)]
    pub tables: Vec<TableCount>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TableCount {
    pub table: String,
    pub events_total: u64,
    #[serde(default)]
    pub rows_snapshotted: u64,
}

/// The source server as the agent last read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSighting {
    /// The server's current position then, as `status` prints it.
    pub position: String,
    /// When it was read (UTC).
    pub read_at: String,
    /// The last moment the pipeline was known to be caught up (UTC): freshness grows from here
    /// while the source cannot be asked.
    pub caught_up_at: Option<String>,
}

pub struct StateStore {
    path: PathBuf,
    db: sled::Db,
    checkpoint: sled::Tree,
    meta: sled::Tree,
    schema_history: sled::Tree,
    source_seen: sled::Tree,
    dead_letters: sled::Tree,
}

impl StateStore {
    /// Tests: opens a store this process has just dropped. sled's flusher thread lets go of the
    /// file lock last, so a reopen may find it held for a moment (`run` waits the same way).
    #[cfg(test)]
    pub(crate) fn open_after_drop(path: &Path) -> StateStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match StateStore::open(path) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Ok(store) => return store,
                Err(e) => panic!("reopening the store at {}: {e}", path.display()),
            }
        }
    }

    pub fn open(path: &Path) -> Result<StateStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            // The store holds a handful of small records: no need for sled's large default cache.
            .cache_capacity(4 << 20)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked(path.to_path_buf())
                }
                sled::Error::Io(ref io) if io.to_string().contains("lock") => {
                    StoreError::Locked(path.to_path_buf())
                }
                sled::Error::Io(io) if is_definite(&io) => StoreError::Unusable {
                    path: path.to_path_buf(),
                    hint: cdc_core::error::io_error_hint(io.kind(), "agent.state_dir")
                        .unwrap_or_else(|| "check agent.state_dir".into()),
                    error: io,
                },
                source => StoreError::Sled {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Sled {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(StateStore {
            checkpoint: tree("checkpoint")?,
            meta: tree("meta")?,
            schema_history: tree("schema_history")?,
            source_seen: tree("source_seen")?,
            dead_letters: tree("dead_letters")?,
            path: path.to_path_buf(),
            db,
        })
    }

    /// The dead-letter tree (its records are kept by `dlq::DeadLetterQueue`).
    pub fn dead_letters(&self) -> &sled::Tree {
        &self.dead_letters
    }

    /// A new id, larger than every id handed out before (across restarts).
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        self.db.generate_id().map_err(|e| self.sled_err(e))
    }

    /// Waits until everything written so far is on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|e| self.sled_err(e))
    }

    pub fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    pub fn corrupt(&self, source: serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            source,
        }
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        tree: &sled::Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match tree.get(key).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })
            }
        }
    }

    fn put<T: Serialize>(&self, tree: &sled::Tree, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        tree.insert(key, bytes).map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    pub fn checkpoint(&self, pipeline: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.get(&self.checkpoint, pipeline)
    }

    /// Records a checkpoint and waits until it is on disk: only then may the source confirm it.
    pub async fn save_checkpoint(
        &self,
        pipeline: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        self.put(&self.checkpoint, pipeline, checkpoint)?;
        self.db.flush_async().await.map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    pub fn meta(&self, pipeline: &str) -> Result<Option<PipelineMeta>, StoreError> {
        self.get(&self.meta, pipeline)
    }

    pub fn save_meta(&self, pipeline: &str, meta: &PipelineMeta) -> Result<(), StoreError> {
        self.put(&self.meta, pipeline, meta)?;
        self.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Records the meta without waiting for the disk; the next checkpoint save flushes it.
    pub fn save_meta_unsynced(
        &self,
        pipeline: &str,
        meta: &PipelineMeta,
    ) -> Result<(), StoreError> {
        self.put(&self.meta, pipeline, meta)
    }

    pub fn source_sighting(&self, pipeline: &str) -> Result<Option<SourceSighting>, StoreError> {
        self.get(&self.source_seen, pipeline)
    }

    /// Records what the agent saw of the source, without waiting for the disk: losing the last
    /// few seconds of it costs nothing but a slightly older "last known" after a crash.
    pub fn save_source_sighting(
        &self,
        pipeline: &str,
        sighting: &SourceSighting,
    ) -> Result<(), StoreError> {
        self.put(&self.source_seen, pipeline, sighting)
    }

    /// Forgets everything about the pipeline.
    pub fn clear(&self, pipeline: &str) -> Result<(), StoreError> {
        self.checkpoint
            .remove(pipeline)
            .map_err(|e| self.sled_err(e))?;
        self.meta.remove(pipeline).map_err(|e| self.sled_err(e))?;
        self.source_seen
            .remove(pipeline)
            .map_err(|e| self.sled_err(e))?;
        for tree in [&self.schema_history, &self.dead_letters] {
            for entry in tree.scan_prefix(format!("{pipeline}/")) {
                let (key, _) = entry.map_err(|e| self.sled_err(e))?;
                tree.remove(key).map_err(|e| self.sled_err(e))?;
            }
        }
        self.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }
}

fn is_definite(io: &std::io::Error) -> bool {
    cdc_core::error::io_error_class(io.kind()) == cdc_core::ErrorClass::Definite
}

/// One pipeline's part of the `schema_history` tree, handed to its source.
pub struct SourceState {
    store: std::sync::Arc<StateStore>,
    prefix: String,
}

impl SourceState {
    pub fn new(store: std::sync::Arc<StateStore>, pipeline: &str) -> Self {
        SourceState {
            store,
            prefix: format!("{pipeline}/"),
        }
    }

    fn error(&self, e: sled::Error) -> cdc_core::PipelineError {
        cdc_core::PipelineError::definite("state", self.store.sled_err(e).to_string())
    }
}

impl cdc_core::StateTree for SourceState {
    fn put(&self, key: &str, value: &[u8]) -> Result<(), cdc_core::PipelineError> {
        let tree = &self.store.schema_history;
        tree.insert(format!("{}{key}", self.prefix), value)
            .map_err(|e| self.error(e))?;
        tree.flush().map_err(|e| self.error(e))?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), cdc_core::PipelineError> {
        let tree = &self.store.schema_history;
        tree.remove(format!("{}{key}", self.prefix))
            .map_err(|e| self.error(e))?;
        tree.flush().map_err(|e| self.error(e))?;
        Ok(())
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, cdc_core::PipelineError> {
        let mut out = Vec::new();
        for entry in self
            .store
            .schema_history
            .scan_prefix(format!("{}{prefix}", self.prefix))
        {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let key = String::from_utf8_lossy(&key);
            out.push((
                key.strip_prefix(&self.prefix).unwrap_or(&key).to_string(),
                value.to_vec(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use cdc_core::{Lsn, Position};

    use super::*;

    #[tokio::test]
    async fn checkpoints_survive_reopening_and_the_lock_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(store.checkpoint("p").unwrap().is_none());
        let cp = Checkpoint {
            resume_from: Position::Postgres { lsn: Lsn(42) },
            last_commit: None,
            last_commit_ts: None,
        };
        store.save_checkpoint("p", &cp).await.unwrap();
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(store);
        let store = StateStore::open_after_drop(dir.path());
        assert_eq!(store.checkpoint("p").unwrap(), Some(cp));
        store.clear("p").unwrap();
        assert!(store.checkpoint("p").unwrap().is_none());
    }
}
