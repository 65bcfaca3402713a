//! A source's own corner of the agent's state store.
//!
//! Some sources must remember more than a position: the MySQL/MariaDB source keeps the history of
//! each table's columns (rows events carry no column names). The binary implements this over a
//! sled tree, scoped to one pipeline; connectors see only this trait.

use crate::PipelineError;

/// A small ordered key-value tree. Writes are durable when the call returns.
pub trait StateTree: Send + Sync {
    fn put(&self, key: &str, value: &[u8]) -> Result<(), PipelineError>;
    fn remove(&self, key: &str) -> Result<(), PipelineError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, PipelineError>;
}

/// A tree in memory, for tests and for sources run without a store.
#[derive(Default)]
pub struct MemoryTree(std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>);

impl StateTree for MemoryTree {
    fn put(&self, key: &str, value: &[u8]) -> Result<(), PipelineError> {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key.to_string(), value.to_vec());
        }
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), PipelineError> {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
        Ok(())
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, PipelineError> {
        Ok(self
            .0
            .lock()
            .map(|map| {
                map.range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}
