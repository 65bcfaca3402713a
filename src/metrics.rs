//! Prometheus metrics: the SLIs an on-call operator scrapes, rendered in the text format by the
//! admin endpoint's `/metrics`.
//!
//! Labels stay low-cardinality: pipeline, table, op, error kind; never key values. The registry is
//! a handful of maps behind one mutex, updated once per batch or flush, not per row: a metrics
//! crate and its HTTP server would be most of this binary's size for the same text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use crate::status::{PipelineState, StatusReport};

/// Upper bounds (seconds) of the end-to-end latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    read: BTreeMap<(String, &'static str), u64>,
    applied: BTreeMap<(String, &'static str), u64>,
    errors: BTreeMap<&'static str, u64>,
    retries: u64,
    latency: Histogram,
    transactions_in_flight: u64,
    last_checkpoint: Option<Instant>,
    retained_warnings: u64,
    buffer: Option<cdc_core::BufferGauge>,
    dead_letters: Option<std::sync::Arc<crate::dlq::DeadLetterQueue>>,
}

pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            inner: Mutex::new(Inner::default()),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.inner.lock() {
            f(&mut inner);
        }
    }

    /// Changes the sink received from the source, by (table, op).
    pub fn add_read(&self, counts: &BTreeMap<(String, &'static str), u64>) {
        self.with(|m| {
            for (key, n) in counts {
                *m.read.entry(key.clone()).or_default() += n;
            }
        });
    }

    /// Changes the sink made durable, by (table, op).
    pub fn add_applied(&self, counts: &BTreeMap<(String, &'static str), u64>) {
        self.with(|m| {
            for (key, n) in counts {
                *m.applied.entry(key.clone()).or_default() += n;
            }
        });
    }

    /// Seconds from source commit to durable in the sink, one observation per transaction.
    pub fn observe_latency(&self, seconds: impl IntoIterator<Item = f64>) {
        self.with(|m| {
            for s in seconds {
                let s = s.max(0.0);
                m.latency.count += 1;
                m.latency.sum += s;
                for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                    if s <= *bound {
                        m.latency.counts[i] += 1;
                    }
                }
            }
        });
    }

    pub fn set_in_flight(&self, transactions: u64) {
        self.with(|m| m.transactions_in_flight = transactions);
    }

    pub fn checkpoint_saved(&self) {
        self.with(|m| m.last_checkpoint = Some(Instant::now()));
    }

    /// An error of `kind` (connection, auth, config, decode, schema, sink, state, source, poison).
    pub fn error(&self, kind: &'static str, retried: bool) {
        self.with(|m| {
            *m.errors.entry(kind).or_default() += 1;
            if retried {
                m.retries += 1;
            }
        });
    }

    /// The channel of the current run, for `cdc_buffered_bytes`.
    pub fn set_buffer_gauge(&self, gauge: cdc_core::BufferGauge) {
        self.with(|m| m.buffer = Some(gauge));
    }

    /// The dead-letter store, for `cdc_dlq_records_total`.
    pub fn set_dead_letters(&self, queue: std::sync::Arc<crate::dlq::DeadLetterQueue>) {
        self.with(|m| m.dead_letters = Some(queue));
    }

    pub fn retained_warning(&self) {
        self.with(|m| m.retained_warnings += 1);
    }

    /// The whole exposition: the registry and the status report's gauges.
    pub fn render(&self, r: &StatusReport) -> String {
        let Ok(m) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let p = escape(&r.name);
        let write_family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        write_family(
            &mut out,
            "cdc_build_info",
            "gauge",
            "Build of the running agent.",
        );
        let _ = writeln!(
            out,
            "cdc_build_info{{pipeline=\"{p}\",version=\"{}\",source=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            escape(&r.source_type)
        );
        write_family(
            &mut out,
            "cdc_changes_read_total",
            "counter",
            "Changes received from the source, by table and op.",
        );
        for ((table, op), n) in &m.read {
            let _ = writeln!(
                out,
                "cdc_changes_read_total{{pipeline=\"{p}\",table=\"{}\",op=\"{op}\"}} {n}",
                escape(table)
            );
        }
        write_family(
            &mut out,
            "cdc_changes_applied_total",
            "counter",
            "Changes made durable by the sink (this run), by table and op.",
        );
        for ((table, op), n) in &m.applied {
            let _ = writeln!(
                out,
                "cdc_changes_applied_total{{pipeline=\"{p}\",table=\"{}\",op=\"{op}\"}} {n}",
                escape(table)
            );
        }
        write_family(
            &mut out,
            "cdc_events_total",
            "counter",
            "Changes made durable by the sink, over the pipeline's life (the status field).",
        );
        let _ = writeln!(
            out,
            "cdc_events_total{{pipeline=\"{p}\"}} {}",
            r.events_total
        );
        write_family(
            &mut out,
            "cdc_end_to_end_latency_seconds",
            "histogram",
            "Seconds from a transaction's commit on the source to durable in the sink.",
        );
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "cdc_end_to_end_latency_seconds_bucket{{pipeline=\"{p}\",le=\"{bound}\"}} {}",
                m.latency.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "cdc_end_to_end_latency_seconds_bucket{{pipeline=\"{p}\",le=\"+Inf\"}} {0}\n\
             cdc_end_to_end_latency_seconds_sum{{pipeline=\"{p}\"}} {1}\n\
             cdc_end_to_end_latency_seconds_count{{pipeline=\"{p}\"}} {0}",
            m.latency.count, m.latency.sum
        );
        let gauge = |out: &mut String, name: &str, help: &str, value: Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            let value = value.map(|v| v.to_string()).unwrap_or_else(|| "NaN".into());
            let _ = writeln!(out, "{name}{{pipeline=\"{p}\"}} {value}");
        };
        gauge(
            &mut out,
            "cdc_freshness_seconds",
            "Seconds the target trails the source: since the newest applied commit or the last moment the pipeline was known caught up, whichever is later; 0 when caught up.",
            r.lag_seconds,
        );
        gauge(
            &mut out,
            "cdc_lag_seconds",
            "Same as cdc_freshness_seconds (the status field's name).",
            r.lag_seconds,
        );
        // Unknown while the source does not answer: no sample at all, so that neither a 0 nor a
        // NaN passes for a reading (`cdc_source_up` says why).
        let _ = writeln!(
            out,
            "# HELP cdc_lag_bytes Bytes between the source's current position and the confirmed position (absent while the source does not answer).\n# TYPE cdc_lag_bytes gauge"
        );
        if let Some(bytes) = r.lag_bytes {
            let _ = writeln!(out, "cdc_lag_bytes{{pipeline=\"{p}\"}} {bytes}");
        }
        gauge(
            &mut out,
            "cdc_source_up",
            "1 when the source answered the last time the agent asked, 0 when it did not (NaN: not asked yet).",
            r.source_reachable.map(|up| f64::from(u8::from(up))),
        );
        gauge(
            &mut out,
            "cdc_slot_retained_bytes",
            "WAL the Postgres slot keeps on the server (NaN for sources without a slot).",
            r.slot_retained_bytes.map(|v| v as f64),
        );
        gauge(
            &mut out,
            "cdc_transactions_in_flight",
            "Source transactions received by the sink and not yet durable.",
            Some(m.transactions_in_flight as f64),
        );
        gauge(
            &mut out,
            "cdc_buffered_bytes",
            "Bytes of row data buffered between the source and the sink (bounded by agent.buffer_bytes).",
            Some(m.buffer.as_ref().map_or(0, |b| b.bytes()) as f64),
        );
        gauge(
            &mut out,
            "cdc_checkpoint_age_seconds",
            "Seconds since the checkpoint last advanced in this run (NaN before the first).",
            m.last_checkpoint.map(|t| t.elapsed().as_secs_f64()),
        );
        gauge(
            &mut out,
            "cdc_dlq_size",
            "Records set aside in the dead-letter store.",
            Some(r.dlq_size as f64),
        );
        gauge(
            &mut out,
            "cdc_events_per_second",
            "Changes applied per second, recent window.",
            Some(r.events_per_sec),
        );
        gauge(
            &mut out,
            "cdc_streaming",
            "1 while the pipeline is streaming.",
            Some(f64::from(u8::from(r.state == PipelineState::Streaming))),
        );
        write_family(
            &mut out,
            "cdc_state",
            "gauge",
            "1 for the pipeline's current state.",
        );
        for state in [
            PipelineState::Starting,
            PipelineState::Snapshotting,
            PipelineState::Streaming,
            PipelineState::Retrying,
            PipelineState::Failed,
            PipelineState::Stopped,
        ] {
            let _ = writeln!(
                out,
                "cdc_state{{pipeline=\"{p}\",state=\"{}\"}} {}",
                state.as_str(),
                u8::from(r.state == state)
            );
        }
        write_family(
            &mut out,
            "cdc_snapshot_rows_total",
            "counter",
            "Rows copied by snapshots, by table.",
        );
        for t in &r.tables {
            let _ = writeln!(
                out,
                "cdc_snapshot_rows_total{{pipeline=\"{p}\",table=\"{}\"}} {}",
                escape(&t.table),
                t.rows_snapshotted
            );
        }
        write_family(
            &mut out,
            "cdc_snapshot_rows_estimated",
            "gauge",
            "Rows the snapshot of a table expects to copy (the source's estimate).",
        );
        for t in &r.tables {
            if let Some(estimate) = t.rows_estimated {
                let _ = writeln!(
                    out,
                    "cdc_snapshot_rows_estimated{{pipeline=\"{p}\",table=\"{}\"}} {estimate}",
                    escape(&t.table)
                );
            }
        }
        write_family(
            &mut out,
            "cdc_errors_total",
            "counter",
            "Errors that stopped or restarted the pipeline, by kind (this run; the status field counts all).",
        );
        let _ = writeln!(
            out,
            "cdc_errors_total{{pipeline=\"{p}\",kind=\"all\"}} {}",
            r.errors_total
        );
        for (kind, n) in &m.errors {
            let _ = writeln!(
                out,
                "cdc_errors_total{{pipeline=\"{p}\",kind=\"{kind}\"}} {n}"
            );
        }
        write_family(
            &mut out,
            "cdc_dlq_records_total",
            "counter",
            "Changes set aside in the dead-letter store (this run), by table and class (data, constraint, too_large, held).",
        );
        if let Some(queue) = &m.dead_letters {
            for ((table, class), n) in queue.set_aside_counts() {
                let _ = writeln!(
                    out,
                    "cdc_dlq_records_total{{pipeline=\"{p}\",table=\"{}\",class=\"{}\"}} {n}",
                    escape(&table),
                    escape(&class)
                );
            }
        }
        write_family(
            &mut out,
            "cdc_retries_total",
            "counter",
            "Reconnects after a transient error.",
        );
        let _ = writeln!(out, "cdc_retries_total{{pipeline=\"{p}\"}} {}", m.retries);
        write_family(
            &mut out,
            "cdc_slot_retained_warnings_total",
            "counter",
            "Times the slot's retained WAL was found above slot_retained_warn_bytes.",
        );
        let _ = writeln!(
            out,
            "cdc_slot_retained_warnings_total{{pipeline=\"{p}\"}} {}",
            m.retained_warnings
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
