//! Applying the rules to changes: drops the filtered columns and masks values in the key, the
//! before and after images and the `unchanged` list, and gives the change a schema that matches
//! (filtered columns gone, hashed and redacted columns text).
//!
//! The work per change is a lookup of its table (the last one is remembered, so a run of changes
//! to one table costs a pointer comparison) and, for tables with a rule, one pass over each row.
//! Plans are built once per source schema (every change of a table shares its schema until the
//! source announces a change), which is also when the rule is checked against the columns.

use std::collections::HashMap;
use std::sync::Arc;

use ring::hmac;

use super::{rule_for, Mask, Selection, TableRule};
use crate::error::PipelineError;
use crate::event::{ChangeEvent, Row};
use crate::name::Name;
use crate::schema::{ColumnType, TableSchema};
use crate::value::Value;

/// What a `redact` mask writes.
pub const REDACTED: &str = "[redacted]";

/// Applies the `[[table]]` rules to changes (see the module doc).
pub struct Masker {
    rules: Vec<TableRule>,
    key: Option<hmac::Key>,
    /// Tables seen, by (schema, table), to an index into `tables`.
    index: HashMap<(Name, Name), usize>,
    tables: Vec<TableState>,
    /// The last table looked up: (schema, table, index into `tables`).
    last: Option<(Name, Name, usize)>,
}

/// What is known of one table: its rule compiled to names, and the schemas in and out.
struct TableState {
    name: String,
    /// `None`: no rule matches, changes pass untouched.
    rule: Option<Compiled>,
    /// The source schema the output schema was made from (compared by pointer).
    schema_in: Option<Arc<TableSchema>>,
    schema_out: Option<Arc<TableSchema>>,
}

/// A rule in interned names: what the per-value loop compares.
struct Compiled {
    rule: TableRule,
    keep_only: Option<Vec<Name>>,
    drop: Vec<Name>,
    masks: Vec<(Name, Mask)>,
}

enum Action {
    Keep,
    Drop,
    Mask(Mask),
}

impl Compiled {
    fn new(rule: &TableRule) -> Compiled {
        let names =
            |columns: &[String]| -> Vec<Name> { columns.iter().map(|c| Name::new(c)).collect() };
        Compiled {
            keep_only: match &rule.selection {
                Selection::Only(columns) => Some(names(columns)),
                _ => None,
            },
            drop: match &rule.selection {
                Selection::Except(columns) => names(columns),
                _ => Vec::new(),
            },
            masks: rule.masks.iter().map(|(c, m)| (Name::new(c), *m)).collect(),
            rule: rule.clone(),
        }
    }

    fn action(&self, column: Name) -> Action {
        if let Some(&(_, mask)) = self.masks.iter().find(|(c, _)| *c == column) {
            return Action::Mask(mask);
        }
        let kept = match &self.keep_only {
            Some(keep) => keep.contains(&column),
            None => !self.drop.contains(&column),
        };
        if kept {
            Action::Keep
        } else {
            Action::Drop
        }
    }
}

impl Masker {
    /// `key`: the `agent.mask_key` bytes (required when a rule hashes; the configuration checks).
    pub fn new(rules: Vec<TableRule>, key: Option<&[u8]>) -> Masker {
        Masker {
            rules,
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
            index: HashMap::new(),
            tables: Vec::new(),
            last: None,
        }
    }

    /// True when no rule is configured: the caller may skip [`Masker::apply`] altogether.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Filters and masks one change in place. An error is definite: a rule that does not fit
    /// the table (a mask on a column it lacks, truncate on a number, a key column filtered out).
    pub fn apply(&mut self, event: &mut ChangeEvent) -> Result<(), PipelineError> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let at = self.table_index(event.source.schema, event.source.table)?;
        let state = &mut self.tables[at];
        let Some(rule) = &state.rule else {
            return Ok(());
        };
        if let Some(schema) = event.table_schema.take() {
            // Snapshot rows and streamed changes of one table may carry equal schemas in two
            // allocations: compared by value when the pointers differ, so sinks keep seeing one.
            let same = state
                .schema_in
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &schema) || **s == *schema);
            if !same {
                let out = output_schema(&state.name, rule, &schema)?;
                state.schema_in = Some(schema);
                state.schema_out = Some(Arc::new(out));
            }
            event.table_schema = state.schema_out.clone();
        }
        for row in [&mut event.key, &mut event.before, &mut event.after]
            .into_iter()
            .flatten()
        {
            mask_row(rule, self.key.as_ref(), row);
        }
        if !event.unchanged.is_empty() {
            event
                .unchanged
                .retain(|c| !matches!(rule.action(*c), Action::Drop));
        }
        Ok(())
    }

    /// What the rules do to a table of this schema, for `check`: `None` when no rule matches
    /// it; the error [`Masker::apply`] would stop the pipeline with when the rule does not fit
    /// the table (a mask on a column it lacks, truncate on a number, a key column left out).
    pub fn describe(&mut self, schema: &TableSchema) -> Result<Option<String>, PipelineError> {
        let at = self.table_index(schema.schema, schema.table)?;
        let state = &self.tables[at];
        let Some(rule) = &state.rule else {
            return Ok(None);
        };
        output_schema(&state.name, rule, schema)?;
        let mut left_out = Vec::new();
        let mut masked = Vec::new();
        for column in &schema.columns {
            match rule.action(column.name) {
                Action::Keep => {}
                Action::Drop => left_out.push(column.name.as_str().to_string()),
                Action::Mask(mask) => masked.push(format!("{} ({})", column.name, mask.name())),
            }
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        Ok(Some(format!(
            "left out: {}; masked: {}",
            list(&left_out),
            list(&masked)
        )))
    }

    fn table_index(&mut self, schema: Name, table: Name) -> Result<usize, PipelineError> {
        if let Some((s, t, at)) = self.last {
            if s == schema && t == table {
                return Ok(at);
            }
        }
        let at = match self.index.get(&(schema, table)) {
            Some(&at) => at,
            None => {
                let rule = rule_for(&self.rules, &schema, &table).map_err(|e| {
                    PipelineError::definite("config", e)
                        .with_hint("a table may match one [[table]] section only")
                })?;
                self.tables.push(TableState {
                    name: format!("{schema}.{table}"),
                    rule: rule.map(Compiled::new),
                    schema_in: None,
                    schema_out: None,
                });
                let at = self.tables.len() - 1;
                self.index.insert((schema, table), at);
                at
            }
        };
        self.last = Some((schema, table, at));
        Ok(at)
    }
}

fn mask_row(rule: &Compiled, key: Option<&hmac::Key>, row: &mut Row) {
    row.0.retain_mut(|(name, value)| match rule.action(*name) {
        Action::Keep => true,
        Action::Drop => false,
        Action::Mask(mask) => {
            mask_value(mask, key, value);
            true
        }
    });
}

/// NULL stays NULL under every mask: there is nothing to hide in it, and a NULL hash or
/// redaction text would claim a value the row does not have.
fn mask_value(mask: Mask, key: Option<&hmac::Key>, value: &mut Value) {
    if value.is_null() {
        return;
    }
    // Text is masked in its own buffer: no allocation on the common path.
    if let (Value::Text(text), Mask::Hash | Mask::Redact) = (&mut *value, mask) {
        match (mask, key) {
            (Mask::Hash, Some(key)) => {
                let tag = hmac::sign(key, text.as_bytes());
                text.clear();
                push_hex(text, tag.as_ref());
            }
            _ => {
                text.clear();
                text.push_str(REDACTED);
            }
        }
        return;
    }
    *value = match mask {
        Mask::Null => Value::Null,
        Mask::Redact => Value::Text(REDACTED.to_string()),
        // The configuration refuses a hash without a key; should one get here, redact rather
        // than pass the value through.
        Mask::Hash => match key {
            Some(key) => Value::Text(hash_value(key, value)),
            None => Value::Text(REDACTED.to_string()),
        },
        Mask::Truncate(n) => match std::mem::replace(value, Value::Null) {
            Value::Text(mut text) => {
                if let Some((at, _)) = text.char_indices().nth(n) {
                    text.truncate(at);
                }
                Value::Text(text)
            }
            // Only text columns take truncate (checked against the schema); a value of another
            // kind is redacted, never passed on whole.
            _ => Value::Text(REDACTED.to_string()),
        },
    };
}

/// HMAC-SHA256 of the value as the change record writes it: a string's text without quotes,
/// bytea's raw bytes, anything else its JSON text (`42`, `true`, a document). So equal values
/// hash equal whichever source or table they come from.
fn hash_value(key: &hmac::Key, value: &Value) -> String {
    let tag = match value {
        Value::Text(s)
        | Value::Decimal(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::TimestampTz(s)
        | Value::Interval(s) => hmac::sign(key, s.as_bytes()),
        Value::Bytes(b) => hmac::sign(key, b),
        other => hmac::sign(key, &serde_json::to_vec(other).unwrap_or_default()),
    };
    hex(tag.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

/// The schema sinks see: filtered columns left out, hashed and redacted columns text, the key
/// remapped. Checks the rule against the table's columns.
fn output_schema(
    table: &str,
    rule: &Compiled,
    schema: &TableSchema,
) -> Result<TableSchema, PipelineError> {
    let definite = |message: String, hint: &str| {
        Err(PipelineError::definite("config", message).with_hint(hint.to_string()))
    };
    for (column, mask) in &rule.rule.masks {
        let Some(found) = schema.column(column) else {
            return definite(
                format!("the [[table]] section `{}` masks column {column}, which table {table} does not have", rule.rule.pattern),
                "correct the column name in `mask` (a misspelt mask would let the real column through)",
            );
        };
        if matches!(mask, Mask::Truncate(_))
            && !matches!(found.column_type, ColumnType::Text { .. })
        {
            return definite(
                format!(
                    "the [[table]] section `{}` truncates {table}.{column}, a {} column; truncate is for text columns",
                    rule.rule.pattern, found.source_type
                ),
                "use \"hash\", \"redact\" or \"null\" for this column",
            );
        }
    }
    let listed = match &rule.rule.selection {
        Selection::All => &[][..],
        Selection::Only(c) | Selection::Except(c) => c.as_slice(),
    };
    for column in listed {
        if schema.column(column).is_none() {
            tracing::warn!(table, column = %column, pattern = %rule.rule.pattern, "a [[table]] column list names a column the table does not have");
        }
    }
    let mut columns = Vec::with_capacity(schema.columns.len());
    let mut new_index = vec![None; schema.columns.len()];
    for (i, column) in schema.columns.iter().enumerate() {
        match rule.action(column.name) {
            Action::Drop => continue,
            Action::Keep => columns.push(column.clone()),
            Action::Mask(mask) => {
                let mut column = column.clone();
                if mask.makes_text() {
                    column.column_type = ColumnType::Text { max_len: None };
                    column.source_type = "text".to_string();
                }
                columns.push(column);
            }
        }
        new_index[i] = Some(columns.len() - 1);
    }
    for &k in &schema.key {
        let name = schema.columns[k].name;
        if let Action::Mask(mask) = rule.action(name) {
            if mask != Mask::Hash {
                return definite(
                    format!(
                        "the [[table]] section `{}` masks {table}.{name}, part of the table's key, with a mask that makes different keys equal",
                        rule.rule.pattern
                    ),
                    "mask key columns with \"hash\" only (deterministic and distinct: upserts and deletes still find their rows)",
                );
            }
        }
    }
    let mut key = Vec::with_capacity(schema.key.len());
    for &k in &schema.key {
        match new_index.get(k).copied().flatten() {
            Some(at) => key.push(at),
            None => {
                return definite(
                    format!(
                        "the [[table]] section `{}` leaves out column {}, part of the key of {table}",
                        rule.rule.pattern, schema.columns[k].name
                    ),
                    "keep key columns (mask them with \"hash\" instead: a hash is deterministic, so upserts and deletes still find their rows)",
                );
            }
        }
    }
    Ok(TableSchema {
        schema: schema.schema,
        table: schema.table,
        columns,
        key,
    })
}
