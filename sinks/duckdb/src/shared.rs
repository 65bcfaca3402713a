//! The sink's open database, shared with readers in the same process (`cdc-agent verify` run by
//! the agent): DuckDB lets one process open a file read-write, so a reader cannot open the file
//! itself while the sink runs; it borrows a second connection on the sink's database instead.
//!
//! ```text
//!  sink open()  ─▶ publish(conn.try_clone())      reader: with_reader(|conn| query)
//!  sink reopen / drop ─▶ withdraw (waits for the reader's query to end)
//!  sink flush() ─▶ hold_commits() around COMMIT    reader: hold_commits() around a guarded delete
//! ```
//!
//! The reader connection lives in the slot, never outside it: a connection kept elsewhere would
//! keep the old database instance, and the file, open across a reopen of the sink, and DuckDB
//! does not guard a file against two instances of one process.

use std::sync::{Arc, Mutex, MutexGuard};

use duckdb::Connection;

#[derive(Default)]
struct Slot {
    reader: Option<Connection>,
    /// Bumped on every publish, so a sink withdraws only its own connection.
    generation: u64,
}

/// A shared slot for the sink's second connection, and the gate its commits pass.
#[derive(Clone, Default)]
pub struct SharedDatabase {
    slot: Arc<Mutex<Slot>>,
    commits: Arc<Mutex<()>>,
}

impl std::fmt::Debug for SharedDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDatabase")
            .field("open", &self.is_open())
            .finish()
    }
}

impl SharedDatabase {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        // A reader that panicked mid-query leaves the connection as usable as before.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the sink has its database open (and a reader connection published).
    pub fn is_open(&self) -> bool {
        self.slot().reader.is_some()
    }

    /// Runs `read` on the reader connection; `None` when the sink has no database open (not
    /// yet, or it is reopening). Readers take turns: one query at a time.
    pub fn with_reader<R>(&self, read: impl FnOnce(&Connection) -> R) -> Option<R> {
        let slot = self.slot();
        slot.reader.as_ref().map(read)
    }

    /// Holds the sink's commits back while the guard lives: what a reader checks and writes
    /// meanwhile is not overtaken by a commit of the sink.
    pub fn hold_commits(&self) -> MutexGuard<'_, ()> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a second connection on the sink's database; returns its generation. Instants
    /// read through it are shown in UTC (its session's time zone, where ICU is built in).
    pub(crate) fn publish(&self, sink_conn: &Connection) -> Result<u64, duckdb::Error> {
        let reader = sink_conn.try_clone()?;
        // Session scope: the sink's own connection keeps its settings.
        let _ = reader.execute_batch("SET SESSION TimeZone = 'UTC'");
        let mut slot = self.slot();
        slot.generation += 1;
        slot.reader = Some(reader);
        Ok(slot.generation)
    }

    /// Withdraws the reader connection published as `generation` (after a running query).
    pub(crate) fn withdraw(&self, generation: u64) {
        let mut slot = self.slot();
        if slot.generation == generation {
            slot.reader = None;
        }
    }
}
