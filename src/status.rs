//! The pipeline's status: the `status --json` object of the spec, kept live while `run` works and
//! rebuilt from the state store and the source when it does not.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    Stopped,
    Starting,
    Snapshotting,
    Streaming,
    Retrying,
    Failed,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TableStatus {
    pub table: String,
    pub state: String,
    pub rows_snapshotted: u64,
    pub events_total: u64,
    /// Rows the running snapshot of this table expects (the source's estimate).
    #[serde(default)]
    pub rows_estimated: Option<u64>,
    /// Snapshot rows copied per second, recent window (while the snapshot runs).
    #[serde(default)]
    pub snapshot_rows_per_sec: Option<f64>,
    /// Seconds until the table's snapshot is done at that rate.
    #[serde(default)]
    pub snapshot_eta_seconds: Option<f64>,
    /// The table's last `cdc-agent verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<crate::verify::record::VerifyResult>,
}

impl PipelineState {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Stopped => "stopped",
            PipelineState::Starting => "starting",
            PipelineState::Snapshotting => "snapshotting",
            PipelineState::Streaming => "streaming",
            PipelineState::Retrying => "retrying",
            PipelineState::Failed => "failed",
        }
    }
}

/// The spec's `status --json` object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub name: String,
    pub state: PipelineState,
    pub source_type: String,
    pub source_position: Option<String>,
    pub confirmed_position: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub slot_retained_bytes: Option<u64>,
    pub last_commit_ts: Option<String>,
    pub events_total: u64,
    pub events_per_sec: f64,
    pub errors_total: u64,
    pub dlq_size: u64,
    pub last_error: Option<String>,
    /// How snapshots read: `watermark` (in chunks while streaming; an interrupted one resumes at
    /// its next chunk) or `transaction` (one consistent transaction; an interrupted one starts
    /// its tables over). Absent until the source has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_method: Option<String>,
    /// Whether a snapshot interrupted mid-table resumes where it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_resumable: Option<bool>,
    pub tables: Vec<TableStatus>,
}

/// The running agent's status, updated by the runtime and read by the admin endpoint.
pub struct LiveStatus {
    inner: Mutex<LiveInner>,
}

struct LiveInner {
    report: StatusReport,
    tables: BTreeMap<String, TableStatus>,
    last_commit_micros: Option<i64>,
    last_commit: Option<cdc_core::Position>,
    /// Every transaction the source has sent is durable: nothing is in flight.
    caught_up: bool,
    /// Throughput over a sliding window: (when, events_total then).
    rate_sample: (Instant, u64),
    /// Per table: (when, rows_snapshotted then), for the snapshot's rate.
    snapshot_samples: BTreeMap<String, (Instant, u64)>,
    /// Tables whose chunked snapshot runs (empty while a whole-snapshot transaction copies).
    snapshotting_tables: std::collections::BTreeSet<String>,
}

impl LiveStatus {
    pub fn new(name: &str, source_type: &str) -> Self {
        LiveStatus {
            inner: Mutex::new(LiveInner {
                report: StatusReport {
                    name: name.to_string(),
                    state: PipelineState::Starting,
                    source_type: source_type.to_string(),
                    source_position: None,
                    confirmed_position: None,
                    lag_bytes: None,
                    lag_seconds: None,
                    slot_retained_bytes: None,
                    last_commit_ts: None,
                    events_total: 0,
                    events_per_sec: 0.0,
                    errors_total: 0,
                    dlq_size: 0,
                    last_error: None,
                    snapshot_method: None,
                    snapshot_resumable: None,
                    tables: vec![],
                },
                tables: BTreeMap::new(),
                last_commit_micros: None,
                last_commit: None,
                caught_up: false,
                rate_sample: (Instant::now(), 0),
                snapshot_samples: BTreeMap::new(),
                snapshotting_tables: Default::default(),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut LiveInner) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            // A panic elsewhere must not take status down with it.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Starts from what the state store remembers of earlier runs.
    pub fn seed(&self, meta: &crate::store::PipelineMeta) {
        self.with(|s| {
            s.report.events_total = meta.events_total;
            s.report.errors_total = meta.errors_total;
            s.rate_sample = (Instant::now(), meta.events_total);
            for t in &meta.tables {
                s.tables.insert(
                    t.table.clone(),
                    TableStatus {
                        table: t.table.clone(),
                        state: String::new(),
                        rows_snapshotted: t.rows_snapshotted,
                        events_total: t.events_total,
                        ..Default::default()
                    },
                );
            }
        })
    }

    /// Changes state without a log line (for `status` of a stopped agent).
    pub fn set_state_quietly(&self, state: PipelineState) {
        self.with(|s| s.report.state = state);
    }

    pub fn set_state(&self, state: PipelineState) {
        self.with(|s| {
            if s.report.state != state {
                tracing::info!(from = ?s.report.state, to = ?state, "pipeline state");
            }
            s.report.state = state;
        })
    }

    pub fn state(&self) -> PipelineState {
        self.with(|s| s.report.state)
    }

    pub fn set_last_error(&self, message: String) {
        self.with(|s| s.report.last_error = Some(message))
    }

    pub fn set_caught_up(&self, caught_up: bool) {
        self.with(|s| s.caught_up = caught_up)
    }

    pub fn set_slot_retained(&self, bytes: Option<u64>) {
        self.with(|s| s.report.slot_retained_bytes = bytes)
    }

    pub fn record_error(&self, message: String) {
        self.with(|s| {
            s.report.errors_total += 1;
            s.report.last_error = Some(message);
        })
    }

    pub fn count_events(&self, counts: &BTreeMap<(String, bool), u64>) {
        self.with(|s| {
            for ((table, snapshot), n) in counts {
                s.report.events_total += n;
                let entry = s
                    .tables
                    .entry(table.clone())
                    .or_insert_with(|| TableStatus {
                        table: table.clone(),
                        state: "streaming".into(),
                        ..Default::default()
                    });
                entry.events_total += n;
                if *snapshot {
                    entry.rows_snapshotted += n;
                }
            }
        })
    }

    /// A checkpoint is durable: the confirmed position and the newest applied commit move.
    pub fn set_confirmed(&self, checkpoint: &cdc_core::Checkpoint) {
        self.with(|s| {
            s.report.confirmed_position = Some(checkpoint.resume_from.to_string());
            s.last_commit = checkpoint.last_commit.clone();
            if let Some(ts) = &checkpoint.last_commit_ts {
                s.last_commit_micros = cdc_core::time::parse_utc_micros(ts);
                s.report.last_commit_ts = Some(ts.clone());
            }
        })
    }

    /// The newest transaction made durable.
    pub fn last_commit(&self) -> Option<cdc_core::Position> {
        self.with(|s| s.last_commit.clone())
    }

    pub fn set_source_position(&self, position: String, lag_bytes: Option<u64>) {
        self.with(|s| {
            s.report.source_position = Some(position);
            s.report.lag_bytes = lag_bytes;
        })
    }

    /// The report as of now (rates and lag computed at the moment of asking).
    pub fn report(&self) -> StatusReport {
        self.with(|s| {
            let now = Instant::now();
            let elapsed = now.duration_since(s.rate_sample.0).as_secs_f64();
            if elapsed >= 1.0 {
                s.report.events_per_sec =
                    (s.report.events_total - s.rate_sample.1) as f64 / elapsed;
                if elapsed >= 10.0 {
                    s.rate_sample = (now, s.report.events_total);
                }
            }
            let caught_up = s.caught_up || s.report.lag_bytes == Some(0);
            s.report.lag_seconds = match (caught_up, s.last_commit_micros) {
                (true, _) => Some(0.0),
                (false, Some(commit)) => {
                    Some(((cdc_core::time::now_micros() - commit).max(0)) as f64 / 1e6)
                }
                (false, None) => None,
            };
            let mut report = s.report.clone();
            let state = report.state;
            let chunked = !s.snapshotting_tables.is_empty();
            report.tables = s
                .tables
                .values()
                .map(|t| {
                    // With chunked snapshots the other tables stream meanwhile.
                    let table_state = if s.snapshotting_tables.contains(&t.table) {
                        PipelineState::Snapshotting
                    } else if chunked && state == PipelineState::Snapshotting {
                        PipelineState::Streaming
                    } else {
                        state
                    };
                    TableStatus {
                        state: table_state.as_str().to_string(),
                        ..t.clone()
                    }
                })
                .collect();
            report
        })
    }
}

impl LiveStatus {
    /// How the source's snapshots read (see [`StatusReport::snapshot_method`]).
    pub fn set_snapshot_method(&self, resumable: bool) {
        self.with(|s| {
            s.report.snapshot_resumable = Some(resumable);
            s.report.snapshot_method = Some(
                if resumable {
                    "watermark"
                } else {
                    "transaction"
                }
                .to_string(),
            );
        })
    }

    /// The snapshot's estimates per table, and from the rows copied since the last call the rate
    /// and the time left. Called once a second while the agent runs.
    pub fn set_snapshot_progress(
        &self,
        estimates: &BTreeMap<String, u64>,
        snapshotting: bool,
        tables: std::collections::BTreeSet<String>,
    ) {
        self.with(|s| {
            let now = Instant::now();
            for table in &tables {
                s.tables
                    .entry(table.clone())
                    .or_insert_with(|| TableStatus {
                        table: table.clone(),
                        ..Default::default()
                    });
            }
            s.snapshotting_tables = tables;
            for (table, estimate) in estimates {
                let entry = s
                    .tables
                    .entry(table.clone())
                    .or_insert_with(|| TableStatus {
                        table: table.clone(),
                        ..Default::default()
                    });
                entry.rows_estimated = Some(*estimate);
                let copied = entry.rows_snapshotted;
                let (at, before) = s
                    .snapshot_samples
                    .get(table)
                    .copied()
                    .unwrap_or((now, copied));
                let seconds = now.duration_since(at).as_secs_f64();
                let running = snapshotting
                    && (s.snapshotting_tables.is_empty() || s.snapshotting_tables.contains(table));
                if running && seconds > 0.0 {
                    let rate = copied.saturating_sub(before) as f64 / seconds;
                    entry.snapshot_rows_per_sec = Some(rate);
                    entry.snapshot_eta_seconds =
                        (rate > 0.0).then(|| estimate.saturating_sub(copied) as f64 / rate);
                } else if !running {
                    entry.snapshot_rows_per_sec = None;
                    entry.snapshot_eta_seconds = None;
                }
                s.snapshot_samples.insert(table.clone(), (now, copied));
            }
        })
    }
}

/// The human form of `status`: a short table, tables beneath.
pub fn render_human(r: &StatusReport) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let mut out = String::new();
    let state = r.state.as_str().to_string();
    let rows = [
        ("pipeline", r.name.clone()),
        ("state", state),
        ("source", r.source_type.clone()),
        ("source position", opt(&r.source_position)),
        ("confirmed position", opt(&r.confirmed_position)),
        (
            "lag",
            format!(
                "{} bytes, {} s",
                num(r.lag_bytes),
                r.lag_seconds
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| "-".into())
            ),
        ),
        (
            "slot retained WAL",
            format!("{} bytes", num(r.slot_retained_bytes)),
        ),
        ("last commit", opt(&r.last_commit_ts)),
        (
            "events",
            format!("{} total, {:.1}/s", r.events_total, r.events_per_sec),
        ),
        (
            "errors",
            format!("{} total, dlq {}", r.errors_total, r.dlq_size),
        ),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:<20} {v}\n"));
    }
    if let Some(e) = &r.last_error {
        out.push_str(&format!("{:<20} {e}\n", "last error"));
    }
    match r.snapshot_resumable {
        Some(true) => out.push_str(&format!(
            "{:<20} watermark chunks while streaming; an interrupted copy resumes at its next chunk\n",
            "snapshot"
        )),
        Some(false) => out.push_str(&format!(
            "{:<20} one consistent transaction; an interrupted copy cannot resume mid-table and starts its tables over\n",
            "snapshot"
        )),
        None => {}
    }
    if !r.tables.is_empty() {
        out.push_str(&format!(
            "\n{:<40} {:<14} {:>12} {:>12} {:>10} {:>14}\n",
            "TABLE", "STATE", "SNAPSHOTTED", "ESTIMATED", "ETA", "EVENTS"
        ));
        for t in &r.tables {
            out.push_str(&format!(
                "{:<40} {:<14} {:>12} {:>12} {:>10} {:>14}\n",
                t.table,
                t.state,
                t.rows_snapshotted,
                num(t.rows_estimated),
                t.snapshot_eta_seconds
                    .map(|s| format!("{s:.0} s"))
                    .unwrap_or_else(|| "-".into()),
                t.events_total
            ));
        }
    }
    let verified: Vec<_> = r
        .tables
        .iter()
        .filter_map(|t| t.last_verify.as_ref())
        .collect();
    if !verified.is_empty() {
        out.push_str(&format!(
            "\n{:<40} {:<10} {:>12} {:>14}  {}\n",
            "LAST VERIFY", "RESULT", "DIVERGENT", "ROWS", "AT"
        ));
        for v in verified {
            out.push_str(&format!(
                "{:<40} {:<10} {:>12} {:>14}  {}\n",
                v.table, v.status, v.divergent_rows, v.rows_compared, v.finished_at
            ));
        }
    }
    out
}
