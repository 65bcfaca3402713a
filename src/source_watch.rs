//! Keeps the running agent's view of the source current, once a second: the state, where the
//! source stands, how far the pipeline trails it, and whether the source answers at all.
//!
//! ```text
//!  streaming:      the replication stream's head (every tick) ─┐
//!                  + the server, asked over its own connection  ├─▶ LiveStatus ─▶ status, /metrics
//!                    (every SERVER_POLL_TICKS: slot, binlog files)│        └──▶ state store (last seen)
//!  not streaming:  the server, asked every tick ───────────────┘
//!  (starting, retrying: a source or a target outage)
//! ```
//!
//! While the source does not answer, `lag_bytes` is unknown and freshness grows from the last
//! moment the pipeline was known to be caught up. During a target outage the source still
//! answers, so `lag_bytes` follows its position.

use std::sync::Arc;
use std::time::Duration;

use cdc_core::{Position, SourceProgress};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::status::LiveStatus;
use crate::store::StateStore;
use crate::wiring;

/// How often the running agent refreshes the lag it reports.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// While streaming, how often it also asks the server (the slot's retained WAL, the binlog
/// files): a query on a connection of its own, so less often.
const SERVER_POLL_TICKS: u32 = 10;
/// A source that has not answered in this long counts as unreachable (a dropped network can
/// leave a connect hanging far longer).
const SERVER_POLL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often what the agent saw of the source is written to the state store.
const REMEMBER_TICKS: u32 = 5;

pub struct SourceWatch {
    pub config: Arc<Config>,
    pub live: Arc<LiveStatus>,
    pub progress: Arc<SourceProgress>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<StateStore>,
}

impl SourceWatch {
    pub async fn run(self) {
        let mut tick = tokio::time::interval(STATUS_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tick.tick().await;
            ticks = ticks.wrapping_add(1);
            self.refresh(ticks).await;
            if ticks.is_multiple_of(REMEMBER_TICKS) {
                self.remember();
            }
        }
    }

    async fn refresh(&self, ticks: u32) {
        let (live, progress) = (&self.live, &self.progress);
        live.settle_state();
        live.set_snapshot_progress(
            &progress.snapshot_estimates(),
            progress.is_snapshotting(),
            progress.snapshotting_tables(),
        );
        if progress.is_streaming() || progress.is_snapshotting() {
            live.set_snapshot_method(progress.snapshot_resumable());
        }
        let streaming = progress.is_streaming();
        if streaming {
            self.read_stream_head();
        }
        if !streaming || ticks % SERVER_POLL_TICKS == 1 {
            self.ask_server(streaming).await;
        }
    }

    /// The replication stream is up: its head is the server's, as of its last message.
    fn read_stream_head(&self) {
        let live = &self.live;
        let sent = self.progress.last_commit_sent();
        let applied = live.last_commit();
        live.set_caught_up(match (sent, applied) {
            (None, _) => true,
            (Some(sent), Some(applied)) => sent.try_cmp(&applied).is_ok_and(|o| o.is_le()),
            (Some(_), None) => false,
        });
        if let Some(head) = self.progress.head() {
            let lag = live.confirmed().and_then(|c| lag_between(&head, &c));
            live.set_source_head(head.to_string(), lag);
        }
    }

    /// Asks the server over a connection of its own: it answers even while the pipeline does not
    /// stream (a target outage), and its silence is what tells a source outage.
    async fn ask_server(&self, streaming: bool) {
        let live = &self.live;
        let state =
            match tokio::time::timeout(SERVER_POLL_TIMEOUT, wiring::source_state(&self.config))
                .await
            {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => {
                    if !streaming {
                        tracing::debug!(error = %e, "the source does not answer");
                        live.set_source_unreachable();
                    }
                    return;
                }
                Err(_) => {
                    if !streaming {
                        live.set_source_unreachable();
                    }
                    return;
                }
            };
        live.set_slot_retained(state.slot_retained_bytes);
        let limit = self.config.agent.slot_retained_warn_bytes;
        if let Some(retained) = state
            .slot_retained_bytes
            .filter(|r| limit > 0 && *r > limit)
        {
            self.metrics.retained_warning();
            tracing::warn!(
                retained_bytes = retained,
                limit_bytes = limit,
                "the replication slot holds more WAL than agent.slot_retained_warn_bytes: is the agent keeping up?"
            );
        }
        // Across binlog files only the server's file list tells the distance.
        let lag = live.confirmed().and_then(|c| (state.lag)(&c));
        if streaming {
            let head = self.progress.head().unwrap_or(state.current);
            live.set_source_head(head.to_string(), lag);
        } else {
            live.set_source_position(state.current.to_string(), lag);
            // Nothing streams: caught up only if nothing is left to read.
            live.set_caught_up(lag == Some(0));
        }
    }

    fn remember(&self) {
        remember(&self.live, &self.store, &self.config.agent.name);
    }
}

/// Writes what the agent saw of the source to the state store, for `status` after a restart
/// during an outage.
pub fn remember(live: &LiveStatus, store: &StateStore, pipeline: &str) {
    let Some(sighting) = live.sighting() else {
        return;
    };
    if let Err(e) = store.save_source_sighting(pipeline, &sighting) {
        tracing::debug!(error = %e, "cannot remember the source's position");
    }
}

/// Bytes from `confirmed` to `head`, where the two positions alone tell it (`None` across
/// binlog files).
fn lag_between(head: &Position, confirmed: &Position) -> Option<u64> {
    match (head, confirmed) {
        (Position::Postgres { lsn }, Position::Postgres { lsn: confirmed }) => {
            Some(lsn.0.saturating_sub(confirmed.0))
        }
        (
            Position::Mysql { file, pos, .. },
            Position::Mysql {
                file: confirmed_file,
                pos: confirmed_pos,
                ..
            },
        ) if file == confirmed_file => Some(pos.saturating_sub(*confirmed_pos)),
        _ => None,
    }
}
