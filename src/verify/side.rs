//! One side of a comparison (the source database or the warehouse target) as the bisection sees
//! it: hashes and counts of key ranges, key boundaries, rows by key, all computed inside the
//! database so that little more than hashes crosses the network.
//!
//! ```text
//!  row ─▶ normalized text of each column (kind.rs, dialect SQL) ─▶ row text ─▶ md5
//!  range (after, through] ─▶ count(*), sum(first 15 hex digits of md5 as an integer)
//! ```
//!
//! The sum is order-free (no ORDER BY, and tables without a key compare as a multiset) and
//! cannot overflow (each term is below 2^60, the databases sum into numeric/decimal).

use anyhow::Result;
use async_trait::async_trait;
use cdc_core::Position;

use super::kind::{Column, Pair};

/// A key's values, each as its normalized text (keys have no NULLs).
pub type Key = Vec<String>;

/// Keys after `after` (exclusive) up to `through` (inclusive); `None`: unbounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub after: Option<Key>,
    pub through: Option<Key>,
}

/// A range's row count and hash sum (decimal text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub sum: String,
}

/// A row fetched by key: its key, the md5 of its normalized row text, and with `values` each
/// column's normalized text (NULL: `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedRow {
    pub key: Key,
    pub hash: String,
    pub values: Vec<Option<String>>,
}

/// A table as both sides compare it.
#[derive(Clone, Debug)]
pub struct TableSpec {
    /// The source's `schema.table` (what the report names).
    pub source_name: String,
    /// Schema (database) and table on this side.
    pub schema: String,
    pub table: String,
    /// The compared columns (the source's, in its order).
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the key, in key order (empty: no usable key).
    pub key: Vec<usize>,
    pub pair: Pair,
    /// The target keeps deleted rows with `_cdc_deleted = true`: they count as absent.
    pub soft_delete: bool,
}

/// What the source says of one of its tables.
#[derive(Clone, Debug)]
pub struct Described {
    pub columns: Vec<Column>,
    /// Primary key column indexes, in key order (empty: none).
    pub key: Vec<usize>,
}

#[async_trait]
pub trait Side: Send {
    /// The columns and primary key of `schema.table` on this side (`None`: no such table).
    async fn describe(&mut self, schema: &str, table: &str) -> Result<Option<Described>>;

    /// Gets ready to compare `spec` on this side: `Err` text when this side cannot (a column
    /// or the table is missing).
    async fn open(&mut self, spec: &TableSpec) -> Result<std::result::Result<(), String>>;

    async fn summary(&mut self, range: &Range) -> Result<Summary>;

    /// The key of every `every`-th row of `range` in key order: where to split it.
    async fn boundaries(&mut self, range: &Range, every: u64) -> Result<Vec<Key>>;

    /// Summaries of every bucket of the whole table in one pass, for a single integer key:
    /// bucket `i` holds the keys in (`throughs[i-1]`, `throughs[i]`], bucket 0 those up to
    /// `throughs[0]`, the last those after the last bound. Empty buckets are left out. `None`:
    /// this side cannot (then ranges are summarized one by one).
    async fn bucket_summaries(
        &mut self,
        throughs: &[i128],
    ) -> Result<Option<Vec<(usize, Summary)>>> {
        let _ = throughs;
        Ok(None)
    }

    /// The smallest and largest key in `range` (single integer keys only).
    async fn int_span(&mut self, range: &Range) -> Result<Option<(i128, i128)>>;

    /// (key, md5 of the row text) of every row in `range`.
    async fn row_hashes(&mut self, range: &Range) -> Result<Vec<FetchedRow>>;

    /// The rows with these keys (absent ones are left out); `values`: with column texts.
    async fn rows(&mut self, keys: &[Key], values: bool) -> Result<Vec<FetchedRow>>;

    /// The key just before `key` in the source's own key order (its collation, as the snapshot
    /// reads chunks), `None` when `key` comes first: a range (predecessor, key] holds `key` alone.
    async fn predecessor(&mut self, key: &Key) -> Result<Option<Key>> {
        let _ = key;
        anyhow::bail!("only a source is asked for key order")
    }

    /// The source's current position in its change log (`None` for a target).
    async fn position(&mut self) -> Result<Option<Position>>;

    /// The server's estimate of the open table's rows (0: unknown).
    async fn estimate_rows(&mut self) -> Result<u64>;

    /// Deletes (soft deletes: marks deleted) the open table's rows with `keys` that `source`
    /// still lacks, in one transaction holding the pipeline's `_cdc_state` row so that the sink
    /// commits nothing meanwhile: a source insert of such a key committed after `source` was
    /// asked is applied after the delete, never before it. Returns the rows deleted.
    async fn delete_extra(
        &mut self,
        spec: &TableSpec,
        pipeline: &str,
        keys: &[Key],
        source: &mut dyn Side,
    ) -> Result<u64> {
        let _ = (spec, pipeline, keys, source);
        anyhow::bail!("this target cannot delete rows while the agent may write it")
    }

    /// Bytes of query results received so far.
    fn bytes_read(&self) -> u64;

    /// This side hashes rows with `hash_record_extended` (Postgres 14 or later).
    fn record_hash(&self) -> bool {
        false
    }
}

/// Rows fetched by key per statement.
pub const KEYS_PER_QUERY: usize = 500;

/// `key > after AND key <= through` over the key columns in lexicographic order, from each key
/// column's comparable SQL (`columns`) and a function writing a bound value as this dialect's
/// literal for key column `i`.
pub fn range_predicate(
    columns: &[String],
    range: &Range,
    literal: &dyn Fn(usize, &str) -> String,
) -> String {
    let mut parts = Vec::new();
    if let Some(after) = &range.after {
        parts.push(lexicographic(columns, after, ">", literal));
    }
    if let Some(through) = &range.through {
        parts.push(lexicographic(columns, through, "<=", literal));
    }
    if parts.is_empty() {
        "TRUE".to_string()
    } else {
        parts.join(" AND ")
    }
}

/// `(c1, c2, ...) op (v1, v2, ...)` spelled out (`c1 > v1 OR (c1 = v1 AND c2 > v2) ...`), which
/// every dialect plans as an index range on the first column.
fn lexicographic(
    columns: &[String],
    bound: &[String],
    op: &str,
    literal: &dyn Fn(usize, &str) -> String,
) -> String {
    let n = columns.len().min(bound.len());
    if n == 1 {
        return format!("{} {op} {}", columns[0], literal(0, &bound[0]));
    }
    let strict = if op == "<=" { "<" } else { op };
    let mut alternatives = Vec::new();
    for i in 0..n {
        let mut terms: Vec<String> = (0..i)
            .map(|j| format!("{} = {}", columns[j], literal(j, &bound[j])))
            .collect();
        let last = if i == n - 1 { op } else { strict };
        terms.push(format!("{} {last} {}", columns[i], literal(i, &bound[i])));
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    // The first column bounds the scan: say so, so that planners use the index.
    let first = if op == "<=" { "<=" } else { ">=" };
    format!(
        "{} {first} {} AND ({})",
        columns[0],
        literal(0, &bound[0]),
        alternatives.join(" OR ")
    )
}

/// `(k1, k2) IN ((..), (..))` for fetching rows by key.
pub fn key_in_list(
    columns: &[String],
    keys: &[Key],
    literal: &dyn Fn(usize, &str) -> String,
) -> String {
    if columns.len() == 1 {
        let values: Vec<String> = keys.iter().map(|k| literal(0, &k[0])).collect();
        return format!("{} IN ({})", columns[0], values.join(", "));
    }
    let tuples: Vec<String> = keys
        .iter()
        .map(|k| {
            let values: Vec<String> = k.iter().enumerate().map(|(i, v)| literal(i, v)).collect();
            format!("({})", values.join(", "))
        })
        .collect();
    format!("({}) IN ({})", columns.join(", "), tuples.join(", "))
}

/// Bucket summaries from rows of (bucket, count, sum) as text.
pub fn parse_buckets(rows: Vec<Vec<Option<String>>>) -> Vec<(usize, Summary)> {
    rows.into_iter()
        .filter_map(|r| {
            let mut fields = r.into_iter();
            let bucket = fields.next()??.parse().ok()?;
            let rows = fields.next()??.parse().ok()?;
            let sum = fields.next()??;
            Some((bucket, Summary { rows, sum }))
        })
        .collect()
}

/// Only digits, one leading minus and one dot: safe to write into SQL as a number.
pub fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(_: usize, v: &str) -> String {
        format!("'{v}'")
    }

    #[test]
    fn ranges_spell_out_lexicographic_order() {
        let one = vec!["id".to_string()];
        let range = Range {
            after: Some(vec!["1".into()]),
            through: Some(vec!["9".into()]),
        };
        assert_eq!(
            range_predicate(&one, &range, &lit),
            "id > '1' AND id <= '9'"
        );
        assert_eq!(range_predicate(&one, &Range::default(), &lit), "TRUE");
        let two = vec!["a".to_string(), "b".to_string()];
        let after = Range {
            after: Some(vec!["1".into(), "x".into()]),
            through: None,
        };
        assert_eq!(
            range_predicate(&two, &after, &lit),
            "a >= '1' AND ((a > '1') OR (a = '1' AND b > 'x'))"
        );
        let through = Range {
            after: None,
            through: Some(vec!["1".into(), "x".into()]),
        };
        assert_eq!(
            range_predicate(&two, &through, &lit),
            "a <= '1' AND ((a < '1') OR (a = '1' AND b <= 'x'))"
        );
        assert_eq!(
            key_in_list(&two, &[vec!["1".into(), "x".into()]], &lit),
            "(a, b) IN (('1', 'x'))"
        );
    }

    #[test]
    fn numbers_are_checked_before_they_are_written_into_sql() {
        assert!(is_number("-12.50") && is_number("7"));
        assert!(!is_number("1; DROP") && !is_number("") && !is_number("1.2.3") && !is_number("-"));
    }
}
