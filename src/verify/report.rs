//! The verify report: per table the rows compared, the keys missing in the target, extra in the
//! target and different (with the columns that differ; values only when asked, since they may
//! be personal data), time and bytes read. Printed for people, or as JSON (`--json`, its shape
//! in the README). A verify run inside the agent (a DuckDB target) sends it back as JSON.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableStatus {
    Equal,
    Different,
    Error,
}

/// A key as `{"column": "value", ...}` (values in their normalized text).
pub type KeyJson = Map<String, Value>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ColumnValues {
    pub column: String,
    pub source: Option<String>,
    pub target: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DifferentRow {
    pub key: KeyJson,
    /// The columns whose normalized values differ.
    pub columns: Vec<String>,
    /// With `--show-values` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<ColumnValues>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RepairReport {
    /// Target rows deleted (or marked deleted) because the source no longer has them.
    pub deleted: u64,
    /// A copy was asked for the missing and different rows.
    pub recopy_requested: bool,
    /// What was copied: `keys` (a key range per divergent key) or `table` (the whole table).
    pub recopy: String,
    /// Divergent keys that still differ after the repair (re-checked).
    pub still_divergent: u64,
    /// Whether the repaired keys were verified again (the copy finished while verify waited).
    pub verified: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableReport {
    /// The source table, `schema.table`.
    pub table: String,
    /// The target table, `schema.table`.
    pub target: String,
    pub status: TableStatus,
    /// Source rows in the compared ranges (all of them unless sampled).
    pub rows_compared: u64,
    pub target_rows_compared: u64,
    /// Only part of the table was compared (`--max-rows`).
    pub sampled: bool,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub missing_keys: Vec<KeyJson>,
    pub extra_keys: Vec<KeyJson>,
    pub different_rows: Vec<DifferentRow>,
    /// Keys that kept changing while they were re-checked (counted above too).
    pub still_changing_keys: Vec<KeyJson>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
    pub bytes_read: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
}

impl TableReport {
    pub fn failed(table: &str, target: &str, error: String) -> TableReport {
        TableReport {
            table: table.to_string(),
            target: target.to_string(),
            status: TableStatus::Error,
            rows_compared: 0,
            target_rows_compared: 0,
            sampled: false,
            missing: 0,
            extra: 0,
            different: 0,
            missing_keys: vec![],
            extra_keys: vec![],
            different_rows: vec![],
            still_changing_keys: vec![],
            notes: vec![],
            error: Some(error),
            seconds: 0.0,
            bytes_read: 0,
            repair: None,
        }
    }

    pub fn divergent(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyReport {
    pub pipeline: String,
    pub source_type: String,
    pub sink_type: String,
    /// `running`: rows in flight were re-checked; `stopped`: compared at rest.
    pub agent: String,
    /// Every compared table equal (and no table failed).
    pub equal: bool,
    pub divergent_rows: u64,
    pub seconds: f64,
    pub bytes_read: u64,
    pub notes: Vec<String>,
    pub tables: Vec<TableReport>,
}

fn key_text(key: &KeyJson) -> String {
    key.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bytes_text(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else if bytes >= 10 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Listed keys shown per category in the human report.
const SHOWN: usize = 20;

pub fn render_human(r: &VerifyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verify pipeline {}: {} -> {}, agent {}",
        r.pipeline,
        r.source_type,
        r.sink_type,
        if r.agent == "running" {
            "running (rows in flight re-checked)"
        } else {
            "not running: compared at rest"
        }
    );
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for t in &r.tables {
        let head = format!("{} -> {}", t.table, t.target);
        let took = format!("{:.1} s, {} read", t.seconds, bytes_text(t.bytes_read));
        match t.status {
            TableStatus::Error => {
                let _ = writeln!(
                    out,
                    "{head}: ERROR {}",
                    t.error.as_deref().unwrap_or("unknown")
                );
            }
            TableStatus::Equal => {
                let _ = writeln!(
                    out,
                    "{head}: equal, {} rows compared{} ({took})",
                    t.rows_compared,
                    if t.sampled { " (sampled)" } else { "" }
                );
            }
            TableStatus::Different => {
                let _ = writeln!(
                    out,
                    "{head}: {} rows compared{}, {} missing in target, {} extra in target, {} different ({took})",
                    t.rows_compared,
                    if t.sampled { " (sampled)" } else { "" },
                    t.missing,
                    t.extra,
                    t.different
                );
                for key in t.missing_keys.iter().take(SHOWN) {
                    let _ = writeln!(out, "  missing    {}", key_text(key));
                }
                for key in t.extra_keys.iter().take(SHOWN) {
                    let _ = writeln!(out, "  extra      {}", key_text(key));
                }
                for row in t.different_rows.iter().take(SHOWN) {
                    let _ = writeln!(
                        out,
                        "  different  {}: {}",
                        key_text(&row.key),
                        row.columns.join(", ")
                    );
                    for v in row.values.iter().flatten() {
                        let show = |x: &Option<String>| {
                            x.as_deref()
                                .map_or("NULL".to_string(), |s| format!("{s:?}"))
                        };
                        let _ = writeln!(
                            out,
                            "             {}: source {} target {}",
                            v.column,
                            show(&v.source),
                            show(&v.target)
                        );
                    }
                }
                let listed = t.missing_keys.len().min(SHOWN)
                    + t.extra_keys.len().min(SHOWN)
                    + t.different_rows.len().min(SHOWN);
                if (listed as u64) < t.divergent() {
                    let _ = writeln!(
                        out,
                        "  ... {} more (--json lists up to 10000 keys per category)",
                        t.divergent() - listed as u64
                    );
                }
            }
        }
        for note in &t.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        if let Some(repair) = &t.repair {
            let _ = writeln!(
                out,
                "  repair: {} extra rows deleted; {}; {}",
                repair.deleted,
                match (repair.recopy_requested, repair.recopy.as_str()) {
                    (false, _) => "nothing to copy again",
                    (true, "keys") => "the missing/different keys copied again",
                    (true, _) => "the table copied again for missing/different rows",
                },
                if repair.verified {
                    format!(
                        "{} still divergent after the repair",
                        repair.still_divergent
                    )
                } else {
                    "not verified yet (the copy runs with the agent)".to_string()
                }
            );
        }
    }
    let tables_with = r
        .tables
        .iter()
        .filter(|t| t.status != TableStatus::Equal)
        .count();
    let _ = writeln!(
        out,
        "result: {} ({} divergent rows in {} of {} tables; {:.1} s, {} read)",
        if r.equal { "EQUAL" } else { "DIFFERENT" },
        r.divergent_rows,
        tables_with,
        r.tables.len(),
        r.seconds,
        bytes_text(r.bytes_read)
    );
    out
}
