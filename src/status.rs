//! The pipeline's status: the `status --json` object of the spec, kept live while `run` works and
//! rebuilt from the state store and the source when it does not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cdc_core::SourceProgress;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// `status` of a pipeline the state store knows nothing about: it has never run (or the
    /// config points at another state dir or pipeline name).
    NeverRan,
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
            PipelineState::NeverRan => "never_ran",
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
    /// When `source_position` was read from the source (UTC): old while the source does not
    /// answer, when it is the last position known.
    #[serde(default)]
    pub source_position_at: Option<String>,
    /// Whether the source answered the last time the agent asked (`null`: not asked yet). While
    /// it is `false`, `lag_bytes` is unknown (`null`).
    #[serde(default)]
    pub source_reachable: Option<bool>,
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
    /// The checkpoint's resume position (`report.confirmed_position` is its text).
    confirmed: Option<cdc_core::Position>,
    /// Every transaction the source has sent is durable: nothing is in flight.
    caught_up: bool,
    /// The last moment the pipeline was known to be caught up (µs since the epoch): freshness
    /// grows from here while the agent cannot tell (the source does not answer).
    fresh_micros: Option<i64>,
    /// The running source's progress, from which the state is read at the moment of asking.
    progress: Option<Arc<SourceProgress>>,
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
                    source_position_at: None,
                    source_reachable: None,
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
                confirmed: None,
                caught_up: false,
                fresh_micros: None,
                progress: None,
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
            if !state.is_running() {
                // Known again only once the source is read or asked.
                s.caught_up = false;
            }
        })
    }

    /// The state as of now: while the pipeline runs, read off the source's progress at the
    /// moment of asking, so that `streaming` shows from the moment the source is positioned (a
    /// probe that waits for it before writing is not misled).
    pub fn state(&self) -> PipelineState {
        self.with(|s| s.current_state())
    }

    /// Records the state as of now, with a log line when it changed (called once a second).
    pub fn settle_state(&self) {
        let state = self.state();
        self.set_state(state);
    }

    /// Reads the source's progress for the state from now on (see [`LiveStatus::state`]).
    pub fn attach_progress(&self, progress: Arc<SourceProgress>) {
        self.with(|s| s.progress = Some(progress))
    }

    pub fn set_last_error(&self, message: String) {
        let message = crate::secrets::scrub(&message).into_owned();
        self.with(|s| s.report.last_error = Some(message))
    }

    /// Whether everything the source has is durable, as far as the agent can tell now; while it
    /// is, freshness is 0 and the moment is remembered.
    pub fn set_caught_up(&self, caught_up: bool) {
        self.with(|s| {
            s.caught_up = caught_up;
            if caught_up {
                s.fresh_micros = Some(cdc_core::time::now_micros());
            }
        })
    }

    /// Records in the dead-letter store now.
    pub fn set_dlq_size(&self, size: u64) {
        self.with(|s| s.report.dlq_size = size)
    }

    pub fn set_slot_retained(&self, bytes: Option<u64>) {
        self.with(|s| s.report.slot_retained_bytes = bytes)
    }

    pub fn record_error(&self, message: String) {
        let message = crate::secrets::scrub(&message).into_owned();
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
            s.confirmed = Some(checkpoint.resume_from.clone());
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

    /// The source answered: its current position, and how far the confirmed position trails it.
    pub fn set_source_position(&self, position: String, lag_bytes: Option<u64>) {
        self.with(|s| {
            s.report.source_position = Some(position);
            s.report.source_position_at = Some(cdc_core::time::format_utc_micros(
                cdc_core::time::now_micros(),
            ));
            s.report.source_reachable = Some(true);
            s.report.lag_bytes = lag_bytes;
        })
    }

    /// The head the streaming source last heard of. The distance, when it cannot be told from
    /// the two positions alone (another binlog file), stays what the server last said.
    pub fn set_source_head(&self, position: String, lag_bytes: Option<u64>) {
        let keep = self.with(|s| s.report.lag_bytes);
        self.set_source_position(position, lag_bytes.or(keep));
    }

    /// The source does not answer: its position is the last one known, the distance to it
    /// unknown (never 0), and freshness grows from the last moment the agent was caught up.
    pub fn set_source_unreachable(&self) {
        self.with(|s| {
            s.report.source_reachable = Some(false);
            s.report.lag_bytes = None;
            s.caught_up = false;
        })
    }

    /// The confirmed position, as the source's position type.
    pub fn confirmed(&self) -> Option<cdc_core::Position> {
        self.with(|s| s.confirmed.clone())
    }

    /// Starts from what the agent last saw of the source, before it is asked again.
    pub fn seed_source(&self, seen: &crate::store::SourceSighting) {
        self.with(|s| {
            s.report.source_position = Some(seen.position.clone());
            s.report.source_position_at = Some(seen.read_at.clone());
            s.fresh_micros = seen
                .caught_up_at
                .as_deref()
                .and_then(cdc_core::time::parse_utc_micros);
        })
    }

    /// What to remember of the source across restarts (`None`: it was never read).
    pub fn sighting(&self) -> Option<crate::store::SourceSighting> {
        self.with(|s| {
            Some(crate::store::SourceSighting {
                position: s.report.source_position.clone()?,
                read_at: s.report.source_position_at.clone()?,
                caught_up_at: s.fresh_micros.map(cdc_core::time::format_utc_micros),
            })
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
            let reachable = s.report.source_reachable != Some(false);
            let caught_up = reachable && (s.caught_up || s.report.lag_bytes == Some(0));
            // Not caught up: the target holds everything up to the newest applied commit, and
            // everything up to the last moment it was caught up, whichever is later.
            let fresh_until = s.last_commit_micros.max(s.fresh_micros);
            s.report.lag_seconds = match (caught_up, fresh_until) {
                (true, _) => Some(0.0),
                (false, Some(fresh)) => {
                    Some(((cdc_core::time::now_micros() - fresh).max(0)) as f64 / 1e6)
                }
                (false, None) => None,
            };
            let mut report = s.report.clone();
            report.state = s.current_state();
            let state = report.state;
            // While the source runs, what it says now (the refresh copies it only once a second).
            let snapshotting_tables = match &s.progress {
                Some(progress) if state.is_running() => {
                    if progress.is_streaming() || progress.is_snapshotting() {
                        let resumable = progress.snapshot_resumable();
                        report.snapshot_resumable = Some(resumable);
                        report.snapshot_method = Some(snapshot_method(resumable).to_string());
                    }
                    progress.snapshotting_tables()
                }
                _ => s.snapshotting_tables.clone(),
            };
            let chunked = !snapshotting_tables.is_empty();
            report.tables = s
                .tables
                .values()
                .map(|t| {
                    // With chunked snapshots the other tables stream meanwhile.
                    let table_state = if snapshotting_tables.contains(&t.table) {
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

impl LiveInner {
    /// The stored state, or while the pipeline runs, what the source's progress says now.
    fn current_state(&self) -> PipelineState {
        match (&self.progress, self.report.state) {
            (Some(progress), state) if state.is_running() => {
                if progress.is_snapshotting() {
                    PipelineState::Snapshotting
                } else if progress.is_streaming() {
                    PipelineState::Streaming
                } else {
                    PipelineState::Starting
                }
            }
            (_, state) => state,
        }
    }
}

impl PipelineState {
    /// Starting, snapshotting or streaming: the states the source's progress tells apart.
    fn is_running(self) -> bool {
        matches!(
            self,
            PipelineState::Starting | PipelineState::Snapshotting | PipelineState::Streaming
        )
    }
}

impl LiveStatus {
    /// How the source's snapshots read (see [`StatusReport::snapshot_method`]).
    pub fn set_snapshot_method(&self, resumable: bool) {
        self.with(|s| {
            s.report.snapshot_resumable = Some(resumable);
            s.report.snapshot_method = Some(snapshot_method(resumable).to_string());
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

/// The `snapshot_method` field: `watermark` chunks (resumable) or one `transaction`.
fn snapshot_method(resumable: bool) -> &'static str {
    if resumable {
        "watermark"
    } else {
        "transaction"
    }
}

/// The source's position, marked when it is the last one known rather than read just now.
fn source_position(r: &StatusReport) -> String {
    let Some(position) = &r.source_position else {
        return "-".into();
    };
    match (r.source_reachable, &r.source_position_at) {
        (Some(true), _) => position.clone(),
        (Some(false), Some(at)) => {
            format!("{position} (last known, read {at}; the source does not answer)")
        }
        (_, Some(at)) => format!("{position} (last known, read {at})"),
        (_, None) => position.clone(),
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
        ("source position", source_position(r)),
        ("confirmed position", opt(&r.confirmed_position)),
        (
            "lag",
            format!(
                "{} bytes, {} s",
                match (r.lag_bytes, r.source_reachable) {
                    (None, Some(false)) => "unknown (source unreachable)".to_string(),
                    (bytes, _) => num(bytes),
                },
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
    if r.dlq_size > 0 {
        out.push_str(&format!(
            "{:<20} {} changes set aside in the dead-letter store: the target differs from the source for their keys; see `cdc-agent dlq list`\n",
            "warning", r.dlq_size
        ));
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
