//! `cdc-agent run`: wires a source, the channel, the sink driver and the checkpoint together, and
//! restarts them with backoff after transient errors.
//!
//! ```text
//!  run ── loop ─▶ run_once: open sink (resume point) ─▶ start source at the checkpoint
//!           ▲                     source ══channel══▶ SinkDriver ─▶ checkpoint ─▶ confirmed
//!           └── transient error: backoff, then again from what is durable
//! ```
//!
//! Every restart begins from durable state only (the sink's own resume point and the stored
//! checkpoint), so a retry can neither skip nor repeat a change the sink already has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{channel, PipelineError, Position, Sink, Source, SourceProgress, StreamContext};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{Config, SinkType, SourceType};
use crate::metrics::Metrics;
use crate::sink_driver::SinkDriver;
use crate::status::{LiveStatus, PipelineState};
use crate::store::{PipelineMeta, StateStore};
use crate::wiring;

/// A run that streamed this long without error counts as healthy: the next failure starts the
/// backoff from the beginning again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub struct Runtime {
    pub config: Config,
    pub store: Arc<StateStore>,
    pub live: Arc<LiveStatus>,
    pub progress: Arc<SourceProgress>,
    pub metrics: Arc<Metrics>,
    /// Where the sink sets aside changes the target refuses (and holds their keys' later ones).
    pub dead_letters: Arc<crate::dlq::DeadLetterQueue>,
    /// What the sink lends to verify run by the agent (the DuckDB sink's open database).
    pub access: crate::verify::TargetAccess,
}

impl Runtime {
    /// Runs until shutdown (Ok) or a definite error (Err, recorded in the state store).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
        let meta = self.update_meta(|m| {
            m.source_type = source_type_name(self.config.source.kind).into();
            m.state = "running".into();
        })?;
        self.live.seed(&meta);
        let mut backoff = Backoff::new();
        loop {
            self.live.set_state(PipelineState::Starting);
            let started = Instant::now();
            let result = self.run_once(shutdown.clone()).await;
            self.progress.set_streaming(false);
            let error = match result {
                Ok(()) => break,
                Err(e) => e,
            };
            self.live.record_error(error.to_string());
            let definite = !error.is_transient();
            self.metrics.error(error.kind, !definite);
            self.update_meta(|m| {
                m.errors_total += 1;
                m.last_error = Some(crate::secrets::scrub(&error.to_string()).into_owned());
                if definite {
                    m.state = "failed".into();
                }
            })?;
            if definite {
                tracing::error!(error = %error, kind = error.kind, "pipeline stopped: fix the cause and run again");
                self.live.set_state(PipelineState::Failed);
                return Err(error);
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            self.live.set_state(PipelineState::Retrying);
            tracing::warn!(error = %error, kind = error.kind, retry_in_ms = delay.as_millis() as u64, attempt = backoff.attempts(), "transient error; retrying, position held");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        self.live.set_state(PipelineState::Stopped);
        self.update_meta(|m| m.state = "stopped".into())?;
        Ok(())
    }

    /// Reads the stored meta, changes it and writes it back. The store is the one copy: the sink
    /// driver keeps the counters in it.
    fn update_meta(
        &self,
        change: impl FnOnce(&mut PipelineMeta),
    ) -> Result<PipelineMeta, PipelineError> {
        let name = &self.config.agent.name.0;
        let mut meta = self
            .store
            .meta(name)
            .map_err(state_error)?
            .unwrap_or_default();
        change(&mut meta);
        self.store.save_meta(name, &meta).map_err(state_error)?;
        Ok(meta)
    }

    async fn run_once(&self, shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
        let name = &self.config.agent.name.0;
        let dead_letters: Arc<dyn cdc_core::dead_letter::DeadLetters> = self.dead_letters.clone();
        let mut sink: Box<dyn Sink> =
            wiring::build_sink(&self.config, Some(dead_letters), &self.access)?;
        let sink_resume = sink.open().await?;
        let saved = self.store.checkpoint(name).map_err(state_error)?;
        let mut setup = PipelineMeta::default();
        let mut source: Box<dyn Source> =
            wiring::build_source(&self.config, &mut setup, &self.store).await?;
        self.update_meta(|m| {
            m.slot = setup.slot;
            m.publication = setup.publication;
        })?;

        // Start at the stored checkpoint; the sink's own resume point (if it keeps one) filters
        // whatever the source sends again from there.
        let resume_from: Option<Position> = saved.as_ref().map(|c| c.resume_from.clone());
        if let Some(c) = &saved {
            self.live.set_confirmed(c);
        }
        let (mut sender, rx) = channel(
            self.config.agent.channel_messages,
            self.config.agent.buffer_bytes,
            sink_resume.clone(),
        );
        self.metrics.set_buffer_gauge(sender.buffer_gauge());
        let (confirmed_tx, confirmed_rx) = watch::channel(resume_from.clone());
        let driver = SinkDriver {
            sink,
            store: Arc::clone(&self.store),
            pipeline: name.clone(),
            meta: self
                .store
                .meta(name)
                .map_err(state_error)?
                .unwrap_or_default(),
            confirmed: confirmed_tx,
            live: Arc::clone(&self.live),
            metrics: Arc::clone(&self.metrics),
            flush_interval: self.config.flush_interval(),
            saved,
            masker: wiring::masker(&self.config)?,
        };
        let sink_task = tokio::spawn(tracing::Instrument::in_current_span(driver.run(rx)));
        let (source_stop_tx, source_stop_rx) = watch::channel(false);
        let mut context = StreamContext {
            confirmed: confirmed_rx,
            shutdown: source_stop_rx,
            progress: Arc::clone(&self.progress),
            sink_resume,
        };
        // The source stops on the agent's shutdown, or when the sink fails (its channel closes).
        let mut shutdown_for_source = shutdown.clone();
        let forward_shutdown = tokio::spawn(async move {
            let _ = shutdown_for_source.wait_for(|stop| *stop).await;
            let _ = source_stop_tx.send(true);
        });
        let source_result = source.stream(resume_from, &mut sender, &mut context).await;
        forward_shutdown.abort();
        drop(sender);
        let sink_result = match sink_task.await {
            Ok(r) => r,
            Err(join) => Err(PipelineError::definite(
                "internal",
                format!("the sink task failed: {join}"),
            )),
        };
        // A sink failure closes the channel, which the source sees as a shutdown: report the
        // sink's error, the cause.
        match (source_result, sink_result) {
            (_, Err(sink_error)) => Err(sink_error),
            (Err(source_error), Ok(())) => Err(source_error),
            (Ok(()), Ok(())) => Ok(()),
        }
    }
}

pub fn source_type_name(kind: SourceType) -> &'static str {
    match kind {
        SourceType::Postgres => "postgres",
        SourceType::Mysql => "mysql",
    }
}

pub fn sink_type_name(kind: SinkType) -> &'static str {
    match kind {
        SinkType::Jsonl => "jsonl",
        SinkType::Postgres => "postgres",
        SinkType::Mysql => "mysql",
        SinkType::Duckdb => "duckdb",
        SinkType::Kafka => "kafka",
        SinkType::Nats => "nats",
    }
}

fn state_error(e: crate::store::StoreError) -> PipelineError {
    PipelineError::definite("state", e.to_string())
}
