//! The dead-letter store's contract: changes a target refused for good, set aside so that the
//! rest of the stream goes on.
//!
//! ```text
//!  sink applies a batch ─▶ poison error ─▶ bisect: the rest applied, the refused change(s) ─┐
//!  sink takes a change of a held key ─────────────────────────────────────────────────────────┤
//!                                                        DeadLetters::set_aside (durable) ◀──┘
//!                                                        then the sink commits past them
//! ```
//!
//! A sink never writes the store itself: it sees it through [`DeadLetters`], which the binary
//! implements over its state store. Two rules keep the effect exactly once and in order:
//!
//! * **Durable first.** `set_aside` returns only once the letters are on disk; a sink calls it
//!   before it commits anything past them (and so before the checkpoint moves past them).
//! * **Per-key order.** Once a change to a key is set aside, every later change to that key is
//!   set aside behind it (class [`HELD`]) until the first is replayed or dropped, so a later
//!   update never lands before the insert it depends on. Other keys go on.

pub mod bisect;
mod stored;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch::NetChange;
use crate::error::PipelineError;
use crate::event::{ChangeEvent, Op, Row};
use crate::schema::TableSchema;
use crate::value::Value;

pub use stored::StoredChange;

/// The class of a change set aside only because an earlier change to its key was.
pub const HELD: &str = "held";

/// The dead-letter store as a sink sees it.
pub trait DeadLetters: Send + Sync + std::fmt::Debug {
    /// `sink.on_error = "dlq"`: refused changes are set aside. Otherwise a poison change stops
    /// the pipeline (held keys are still held: the store may hold records from earlier runs).
    fn sets_aside_poison(&self) -> bool;
    /// True if the store holds any key at all: a look that costs no lock, for a sink that would
    /// otherwise build a table name per change.
    fn holds_any(&self) -> bool {
        true
    }
    /// True if some key of `table` (`schema.table`) is held: only then must a sink look at keys.
    fn holds_table(&self, table: &str) -> bool;
    fn holds_key(&self, table: &str, key: &str) -> bool;
    /// The keys of `table` held now (empty for most tables): one look for a whole batch.
    fn held_keys(&self, table: &str) -> std::collections::HashSet<String>;
    /// Stores the letters, durably when it returns. A letter for a key at or before the
    /// newest change already held for that key (a redelivery after a crash) only counts as
    /// another attempt. Fails (definite) when the store would pass `sink.dlq_max_records`.
    fn set_aside(&self, letters: Vec<DeadLetter>) -> Result<(), PipelineError>;
    /// The source truncated `table` and the sink did too: its records are moot (the rows they
    /// would write are gone in the source), and its keys free. Durable when it returns.
    fn discard_table(&self, _table: &str) -> Result<(), PipelineError> {
        Ok(())
    }
}

/// What a sink is given: the store, or nothing (a sink used where no store exists).
pub type DeadLetterHandle = Option<Arc<dyn DeadLetters>>;

/// A change set aside: what it was, why, and how often it was tried.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// The source table, `schema.table`.
    pub table: String,
    /// The key as JSON text (`{"id":42}`): the same for every change of one key.
    pub key: String,
    /// `data`, `constraint`, `too_large` (the error's kind) or [`HELD`].
    pub class: String,
    /// The target's message (for a held change: why it waits).
    pub message: String,
    /// UTC, `2026-11-26T11:02:36.123456Z`.
    pub first_attempt: String,
    pub last_attempt: String,
    pub attempts: u32,
    /// The change record (the spec's JSON), for people.
    pub record: serde_json::Value,
    /// The change, lossless, with its table schema: what a replay applies.
    pub change: StoredChange,
}

impl DeadLetter {
    /// A letter for one change event, refused with `class` and `message`.
    pub fn of_event(event: &ChangeEvent, schema: &TableSchema, class: &str, message: &str) -> Self {
        let now = crate::time::format_utc_micros(crate::time::now_micros());
        let key = event_key(event, schema);
        DeadLetter {
            table: format!("{}.{}", schema.schema, schema.table),
            key: key_text(schema, &key),
            class: class.to_string(),
            message: message.to_string(),
            first_attempt: now.clone(),
            last_attempt: now,
            attempts: 1,
            record: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
            change: StoredChange::of(event, schema),
        }
    }

    /// A letter for a warehouse sink's net change of one key (the batch's changes to it,
    /// collapsed: replaying it has their effect).
    pub fn of_net_change(
        change: &NetChange,
        schema: &Arc<TableSchema>,
        class: &str,
        message: &str,
    ) -> Self {
        DeadLetter::of_event(&net_change_event(change, schema), schema, class, message)
    }

    /// The change to apply again, with its schema.
    pub fn event(&self) -> ChangeEvent {
        self.change.to_event()
    }
}

/// A net change as the change event that has its effect.
pub fn net_change_event(change: &NetChange, schema: &Arc<TableSchema>) -> ChangeEvent {
    match change {
        NetChange::Upsert {
            row,
            unchanged,
            source,
            new_row,
        } => ChangeEvent {
            op: if *new_row { Op::Insert } else { Op::Update },
            source: source.clone(),
            key: Some(key_of(schema, row)),
            before: None,
            after: Some(row.clone()),
            unchanged: unchanged.clone(),
            table_schema: Some(Arc::clone(schema)),
        },
        NetChange::Delete { key, source } => ChangeEvent {
            op: Op::Delete,
            source: source.clone(),
            key: Some(key.clone()),
            before: None,
            after: None,
            unchanged: Vec::new(),
            table_schema: Some(Arc::clone(schema)),
        },
    }
}

/// The key columns of a row (a full row or a key), in the schema's key order.
pub fn key_of(schema: &TableSchema, row: &Row) -> Row {
    Row(schema
        .key
        .iter()
        .filter_map(|&i| {
            let name = schema.columns.get(i)?.name;
            row.get(&name).map(|v| (name, v.clone()))
        })
        .collect())
}

/// The key of a change event: its `key`, else the key columns of its row.
fn event_key(event: &ChangeEvent, schema: &TableSchema) -> Row {
    match (&event.key, &event.after, &event.before) {
        (Some(k), _, _) => key_of(schema, k),
        (None, Some(row), _) | (None, None, Some(row)) => key_of(schema, row),
        (None, None, None) => Row::default(),
    }
}

/// The key's JSON text (`{"id":42}`), as the dead-letter store indexes it: the key columns of
/// `row` (a full row or a key) in the schema's key order, written as the change record writes
/// them. `out` is cleared first, so one buffer serves a whole batch.
pub fn write_key_text(schema: &TableSchema, row: &Row, out: &mut Vec<u8>) {
    out.clear();
    out.push(b'{');
    let mut first = true;
    for &i in &schema.key {
        let Some(column) = schema.columns.get(i) else {
            continue;
        };
        let Some(value) = row.get(&column.name) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(column.name.json());
        out.push(b':');
        crate::json::write_value(value, out);
    }
    out.push(b'}');
}

/// [`write_key_text`], as a string.
pub fn key_text(schema: &TableSchema, row: &Row) -> String {
    let mut out = Vec::new();
    write_key_text(schema, row, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The row a net change's key is read from (its row, or its key).
fn net_change_row(change: &NetChange) -> &Row {
    match change {
        NetChange::Upsert { row, .. } => row,
        NetChange::Delete { key, .. } => key,
    }
}

/// The key text of a net change.
pub fn net_change_key(change: &NetChange, schema: &TableSchema) -> String {
    key_text(schema, net_change_row(change))
}

/// The key text of a change event.
pub fn event_key_text(event: &ChangeEvent, schema: &TableSchema) -> String {
    key_text(schema, &event_key(event, schema))
}

/// A message sink's look before it sends one change: a change to a key the store holds is set
/// aside behind the earlier one (durably) and `true` comes back; the sink must not send it.
pub fn hold_if_key_held(
    store: &DeadLetterHandle,
    event: &ChangeEvent,
) -> Result<bool, PipelineError> {
    let (Some(store), Some(schema)) = (store, &event.table_schema) else {
        return Ok(false);
    };
    // Nothing held (a clean stream): no name or key is built.
    if !store.holds_any() {
        return Ok(false);
    }
    let table = event.table_name();
    if !(store.holds_table(&table) && store.holds_key(&table, &event_key_text(event, schema))) {
        return Ok(false);
    }
    let held = DeadLetter::of_event(
        event,
        schema,
        HELD,
        "held behind an earlier change to this key in the dead-letter store",
    );
    store.set_aside(vec![held])?;
    Ok(true)
}

/// A message sink's answer to a change the broker refuses for good (`error` is poison, nothing
/// of the change was sent): set aside durably when the store takes poison (`Ok`), else `error`
/// back, naming the table and the key. `broker` names the refuser in the log ("Kafka", "NATS").
pub fn set_aside_refused_message(
    store: &DeadLetterHandle,
    event: &ChangeEvent,
    error: PipelineError,
    broker: &str,
) -> Result<(), PipelineError> {
    let (Some(store), Some(schema)) = (store, &event.table_schema) else {
        return Err(error);
    };
    let table = event.table_name();
    let key = event_key_text(event, schema);
    let message = describe_refusal(&table, &key, None, None, &error.message);
    if !store.sets_aside_poison() {
        return Err(PipelineError { message, ..error });
    }
    tracing::warn!(table = %table, key = %key, "{broker} refused a change; set aside in the dead-letter store: {message}");
    store.set_aside(vec![DeadLetter::of_event(
        event, schema, error.kind, &message,
    )])
}

/// Sets aside, behind the store's earlier record, every change of a table batch to a key the
/// store holds (a warehouse sink calls it before applying the batch).
pub fn hold_back(
    store: &dyn DeadLetters,
    table: &str,
    schema: &Arc<TableSchema>,
    changes: &mut Vec<NetChange>,
    letters: &mut Vec<DeadLetter>,
) {
    // The store is empty on a clean stream: one look per table batch, no key is computed.
    let held = store.held_keys(table);
    if held.is_empty() {
        return;
    }
    let mut key = Vec::new();
    changes.retain(|change| {
        write_key_text(schema, net_change_row(change), &mut key);
        if !std::str::from_utf8(&key).is_ok_and(|k| held.contains(k)) {
            return true;
        }
        letters.push(DeadLetter::of_net_change(
            change,
            schema,
            HELD,
            "held behind an earlier change to this key in the dead-letter store",
        ));
        false
    });
}

/// The letter for a net change the target refused with `error`: its message names the table,
/// the key, the column and the value (shortened), then the target's words.
pub fn refusal(
    table: &str,
    schema: &Arc<TableSchema>,
    change: &NetChange,
    error: &PipelineError,
) -> DeadLetter {
    let key = net_change_key(change, schema);
    let row = match change {
        NetChange::Upsert { row, .. } => Some(row),
        NetChange::Delete { .. } => None,
    };
    let column = error.column.as_deref().or_else(|| {
        (error.kind == "data")
            .then(|| row.and_then(column_with_nul))
            .flatten()
    });
    let message = describe_refusal(table, &key, row, column, &error.message);
    DeadLetter::of_net_change(change, schema, error.kind, &message)
}

/// A warehouse sink's refused changes of one table batch (`refused`: indexes into `changes` with
/// the target's errors): letters added to `letters` when the store sets them aside, else the
/// first one stops the pipeline, naming the table, key, column and value.
pub fn collect_refusals(
    table: &str,
    schema: &Arc<TableSchema>,
    changes: &[NetChange],
    refused: Vec<(usize, PipelineError)>,
    set_aside: bool,
    letters: &mut Vec<DeadLetter>,
) -> Result<(), PipelineError> {
    for (i, error) in refused {
        let letter = refusal(table, schema, &changes[i], &error);
        if !set_aside {
            return Err(stop_on_poison(error, letter.message));
        }
        tracing::warn!(table = %table, key = %letter.key, class = error.kind, "the target refused a change; set aside in the dead-letter store: {}", letter.message);
        letters.push(letter);
    }
    Ok(())
}

/// A poison change with `on_error = "stop"`: the pipeline stops, saying what was refused.
pub fn stop_on_poison(error: PipelineError, message: String) -> PipelineError {
    PipelineError {
        message,
        hint: Some(
            "fix the target (widen the column, change the constraint) or the source row, and restart: the change is applied again; or set sink.on_error = \"dlq\" to set refused changes aside".into(),
        ),
        ..error
    }
}

/// Characters of a value an error message shows at most.
const SHOWN_VALUE_CHARS: usize = 40;

/// A refused change as an operator reads it: the table, the key, the column and its value
/// (shortened), then the target's own words. `column` is what the target named, if anything.
pub fn describe_refusal(
    table: &str,
    key: &str,
    row: Option<&Row>,
    column: Option<&str>,
    target_message: &str,
) -> String {
    let mut out = format!("{table} key {key}");
    if let Some(column) = column {
        out.push_str(&format!(", column {column}"));
        if let Some(value) = row.and_then(|r| r.get(column)) {
            out.push_str(&format!(" = {}", shorten(value)));
        }
    }
    out.push_str(": ");
    out.push_str(target_message);
    out
}

/// A value's JSON, at most [`SHOWN_VALUE_CHARS`] characters of it and its full length.
pub fn shorten(value: &Value) -> String {
    let text = match value {
        Value::Text(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    };
    let chars = text.chars().count();
    let shown: String = text.chars().take(SHOWN_VALUE_CHARS).collect();
    let quoted = serde_json::to_string(&shown).unwrap_or_default();
    if chars > SHOWN_VALUE_CHARS {
        format!("{}…\" ({chars} characters)", &quoted[..quoted.len() - 1])
    } else {
        quoted
    }
}

/// The first column of `row` holding text with a NUL character (what Postgres text refuses).
pub fn column_with_nul(row: &Row) -> Option<&str> {
    row.0.iter().find_map(|(name, value)| match value {
        Value::Text(s) if s.contains('\0') => Some(name.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
