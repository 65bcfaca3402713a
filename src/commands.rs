//! The subcommands: what each does with the config, the state store, the source and the sink.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cdc_core::{CheckOutcome, SourceProgress};
use tokio::sync::watch;

use crate::config::{Config, SinkType};
use crate::metrics::Metrics;
use crate::runtime::{source_type_name, Runtime};
use crate::source_watch::SourceWatch;
use crate::status::{render_human, LiveStatus, PipelineState, StatusReport};
use crate::store::{StateStore, StoreError};
use crate::{admin, wiring};

pub async fn run(config: Config) -> Result<ExitCode> {
    // First of all: a stop asked for while the agent is still starting (waiting for the store
    // lock, say) is a clean stop, not the signal's default action killing it.
    let signals = StopSignals::register()
        .context("cannot install the SIGINT/SIGTERM handlers the agent stops cleanly on")?;
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    tokio::spawn(forward_signals(signals, shutdown_tx));
    let name = config.agent.name.0.clone();
    // The admin port is taken before the state store is locked, so `status` always finds one
    // of the two.
    let listener = admin::bind(&config.agent.admin_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on agent.admin_addr = {} (another agent running? change the port)",
                &*config.agent.admin_addr
            )
        })?;
    let live = Arc::new(LiveStatus::new(&name, source_type_name(config.source.kind)));
    let progress = Arc::new(SourceProgress::default());
    let metrics = Arc::new(Metrics::new());
    let requests = admin::SnapshotRequests::default();
    let dlq_service = admin::DeadLetterService::default();
    let verify_runs = admin::VerifyRuns::default();
    let state_dir = config.state_dir();
    let store = tokio::select! {
        store = open_store_waiting(&state_dir) => Arc::new(store?),
        _ = shutdown_rx.wait_for(|stop| *stop) => {
            tracing::info!(pipeline = %name, "stopped while waiting for the state store; nothing had started");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let tree: Arc<dyn cdc_core::StateTree> =
        Arc::new(crate::store::SourceState::new(Arc::clone(&store), &name));
    let _ = requests.set(Arc::clone(&tree));
    // The DuckDB sink lends its open database to verify run here (the file is the agent's).
    let access = crate::verify::TargetAccess {
        #[cfg(feature = "duckdb")]
        duckdb: (config.sink.kind == SinkType::Duckdb)
            .then(cdc_sink_duckdb::SharedDatabase::default),
    };
    let verify = Arc::new(crate::verify::service::VerifyService::new(
        config.clone(),
        tree,
        Arc::clone(&live),
        access.clone(),
    ));
    let _ = verify_runs.set(Arc::clone(&verify));
    let dead_letters = Arc::new(crate::dlq::DeadLetterQueue::open(
        Arc::clone(&store),
        &name,
        config.sink.on_error == crate::config::OnError::Dlq,
        config.sink.dlq_max_records,
        Some(Arc::clone(&live)),
    )?);
    if dead_letters.len() > 0 {
        tracing::warn!(records = dead_letters.len(), "the dead-letter store holds changes: their keys differ in the target; see `cdc-agent dlq list`");
    }
    metrics.set_dead_letters(Arc::clone(&dead_letters));
    let _ = dlq_service.set(Arc::new(crate::dlq::DlqService::new(
        config.clone(),
        Arc::clone(&dead_letters),
    )));

    // What the state store knows shows from the first answer of the endpoint on, whether or not
    // the source and the target answer. Until it serves, a request waits in the listener's
    // backlog (the port is taken, so `status` never mistakes the agent for a stopped one).
    remember_from_store(&live, &store, &name)?;
    live.attach_progress(Arc::clone(&progress));
    tokio::spawn(admin::serve(
        listener,
        admin::Services {
            live: Arc::clone(&live),
            metrics: Arc::clone(&metrics),
            requests: Arc::clone(&requests),
            dlq: Arc::clone(&dlq_service),
            verify: verify_runs,
        },
    ));
    if let Some(interval) = &config.agent.verify_interval {
        tracing::info!(every = %interval, sampled_rows = ?config.agent.verify_max_rows, "verify runs periodically");
        tokio::spawn(tracing::Instrument::instrument(
            verify.every(interval.duration(), config.agent.verify_max_rows),
            tracing::info_span!("pipeline", pipeline = %name),
        ));
    }
    tokio::spawn(
        SourceWatch {
            config: Arc::new(config.clone()),
            live: Arc::clone(&live),
            progress: Arc::clone(&progress),
            metrics: Arc::clone(&metrics),
            store: Arc::clone(&store),
        }
        .run(),
    );
    tracing::info!(pipeline = %name, admin = %&*config.agent.admin_addr, "cdc-agent starting");
    let runtime = Runtime {
        config,
        store,
        live,
        progress,
        metrics,
        dead_letters,
        access,
    };
    // Every line the pipeline logs carries its name (a field of the JSON lines with
    // `--log-format json`).
    let span = tracing::info_span!("pipeline", pipeline = %name);
    let result = tracing::Instrument::instrument(runtime.run(shutdown_rx), span).await;
    // Where the source stood, for a restart while it is unreachable.
    crate::source_watch::remember(&runtime.live, &runtime.store, &name);
    if let Err(e) = runtime.store.flush() {
        tracing::warn!(error = %e, "cannot flush the state store");
    }
    match result {
        Ok(()) => {
            tracing::info!(pipeline = %name, "stopped cleanly; checkpoint saved");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", crate::secrets::scrub(&e.to_string()));
            Ok(ExitCode::from(1))
        }
    }
}

/// Seeds the live status with the counters, the checkpoint and what the agent last saw of the
/// source.
fn remember_from_store(live: &LiveStatus, store: &StateStore, name: &str) -> Result<()> {
    if let Some(meta) = store.meta(name)? {
        live.seed(&meta);
    }
    if let Some(checkpoint) = store.checkpoint(name)? {
        live.set_confirmed(&checkpoint);
    }
    if let Some(seen) = store.source_sighting(name)? {
        live.seed_source(&seen);
    }
    Ok(())
}

/// How long `run` and `reset` wait for a lock held by someone else: a `status` of a stopped
/// agent holds it for milliseconds; a running agent holds it until it stops.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens the state store, waiting briefly if a `status` has it open right now.
async fn open_store_waiting(dir: &std::path::Path) -> Result<StateStore, StoreError> {
    let deadline = tokio::time::Instant::now() + STORE_LOCK_WAIT;
    loop {
        match StateStore::open(dir) {
            Err(StoreError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// SIGINT and SIGTERM, registered before the agent does anything else.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

async fn forward_signals(mut signals: StopSignals, shutdown: watch::Sender<bool>) {
    signals.next().await;
    tracing::info!("shutdown requested: draining in-flight changes and saving the checkpoint");
    let _ = shutdown.send(true);
    // A second signal means: stop now. Nothing is lost, the checkpoint only lags.
    signals.next().await;
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(1);
}

pub async fn check(config: &Config) -> Result<ExitCode> {
    let mut outcomes = vec![CheckOutcome::ok("config", "parsed and valid")];
    let state_dir = config.state_dir();
    // The checkpoint, where the store can be read now (a MySQL source checks the server still
    // has its binlog file).
    let mut checkpoint = None;
    outcomes.push(if !state_dir.exists() {
        // Read-only: say whether it can be created, without creating it.
        match state_dir
            .ancestors()
            .skip(1)
            .find(|a| a.as_os_str().is_empty() || a.exists())
        {
            Some(parent) if !writable(parent) => CheckOutcome::fail(
                "state store",
                format!(
                    "{} cannot be created: {} is not writable",
                    state_dir.display(),
                    parent.display()
                ),
                "make agent.state_dir a writable directory",
            ),
            _ => CheckOutcome::ok(
                "state store",
                format!("{} will be created", state_dir.display()),
            ),
        }
    } else {
        match StateStore::open(&state_dir) {
            Ok(store) => {
                checkpoint = store.checkpoint(&config.agent.name).ok().flatten();
                CheckOutcome::ok(
                    "state store",
                    format!("{} is writable", state_dir.display()),
                )
            }
            Err(StoreError::Locked(p)) => CheckOutcome::ok(
                "state store",
                format!("{} is in use by a running agent", p.display()),
            ),
            Err(e) => CheckOutcome::fail(
                "state store",
                e.to_string(),
                "make agent.state_dir a writable directory",
            ),
        }
    });
    outcomes
        .extend(wiring::check_source(config, checkpoint.as_ref().map(|c| &c.resume_from)).await);
    outcomes.push(match config.sink.kind {
        SinkType::Postgres => cdc_sink_postgres::check(&wiring::postgres_sink_config(config)).await,
        SinkType::Mysql => cdc_sink_mysql::check(&wiring::mysql_sink_config(config)).await,
        #[cfg(feature = "duckdb")]
        SinkType::Duckdb => cdc_sink_duckdb::check(&wiring::duckdb_sink_config(config)),
        SinkType::Nats => match wiring::nats_sink_config(config) {
            Ok(nats) => cdc_sink_nats::check(&nats).await,
            Err(e) => CheckOutcome::fail("sink", e.to_string(), "fix sink.subject"),
        },
        SinkType::Kafka => match wiring::kafka_sink_config(config) {
            Ok(kafka) => cdc_sink_kafka::check(&kafka).await,
            Err(e) => CheckOutcome::fail("sink", e.to_string(), "fix sink.topic"),
        },
        _ => check_sink(config),
    });
    let mut failed = false;
    for outcome in &outcomes {
        println!("{}", crate::secrets::scrub(&outcome.to_string()));
        failed |= !outcome.ok;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn writable(dir: &std::path::Path) -> bool {
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && !m.permissions().readonly())
}

fn check_sink(config: &Config) -> CheckOutcome {
    match config.sink.kind {
        SinkType::Jsonl => {
            let path = config.sink.path.as_deref().unwrap_or("-");
            if path == "-" {
                return CheckOutcome::ok("sink", "jsonl to stdout");
            }
            let path = std::path::Path::new(path);
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            match writable(&dir) {
                true => CheckOutcome::ok(
                    "sink",
                    format!("jsonl file {} can be written", path.display()),
                ),
                false => CheckOutcome::fail(
                    "sink",
                    format!("directory {} does not exist or is read-only", dir.display()),
                    "create it or change sink.path",
                ),
            }
        }
        other => CheckOutcome::fail(
            "sink",
            format!(
                "sink type {} is not in this build",
                crate::runtime::sink_type_name(other)
            ),
            "use sink.type = \"jsonl\"",
        ),
    }
}

/// `status` of a pipeline that has never run: distinct from every real outcome (0 fine, 1 a
/// failure or a lag past the threshold), so a probe cannot mistake a wrong config path for a
/// healthy stopped agent.
const EXIT_NEVER_RAN: u8 = 3;

pub async fn status(
    config: &Config,
    config_path: &std::path::Path,
    json: bool,
    max_lag_seconds: Option<f64>,
    max_lag_bytes: Option<u64>,
) -> Result<ExitCode> {
    let report = match admin::fetch_status(&config.agent.admin_addr, &config.agent.name).await {
        Some(report) => report,
        None => match offline_status(config).await {
            Ok(report) => report,
            // The agent started between the two looks: its endpoint answers in a moment.
            Err(e)
                if e.downcast_ref::<StoreError>()
                    .is_some_and(|e| matches!(e, StoreError::Locked(_))) =>
            {
                wait_for_starting_agent(config).await.ok_or(e)?
            }
            Err(e) => return Err(e),
        },
    };
    if json {
        let text = serde_json::to_string_pretty(&report)?;
        println!("{}", crate::secrets::scrub(&text));
    } else {
        print!("{}", crate::secrets::scrub(&render_human(&report)));
    }
    if report.state == PipelineState::NeverRan {
        if !json {
            let state_dir = config.state_dir();
            let store = if state_dir.is_dir() {
                format!(
                    "the state store {} holds nothing about it",
                    state_dir.display()
                )
            } else {
                format!("there is no state store at {}", state_dir.display())
            };
            println!(
                "\npipeline `{}` has never run: {store}.\n\
                 Start it with `cdc-agent run -c {}`. If it has run before, this is the wrong \
                 config file, or its agent.state_dir or agent.name differ from the running one's.",
                report.name,
                config_path.display()
            );
        }
        return Ok(ExitCode::from(EXIT_NEVER_RAN));
    }
    let over_seconds =
        matches!((max_lag_seconds, report.lag_seconds), (Some(max), Some(lag)) if lag > max);
    let over_bytes =
        matches!((max_lag_bytes, report.lag_bytes), (Some(max), Some(lag)) if lag > max);
    Ok(if over_seconds || over_bytes {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// How long a command waits for the admin endpoint of an agent that holds its state store but
/// does not answer yet: one starting (the store opens before the endpoint listens).
const STARTING_AGENT_WAIT: Duration = Duration::from_secs(10);

/// The status from the admin endpoint of an agent that is starting, once it answers; `None` if
/// it does not within [`STARTING_AGENT_WAIT`].
pub async fn wait_for_starting_agent(config: &Config) -> Option<StatusReport> {
    let deadline = tokio::time::Instant::now() + STARTING_AGENT_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let report = admin::fetch_status(&config.agent.admin_addr, &config.agent.name).await;
        if report.is_some() {
            return report;
        }
    }
    None
}

/// Opens the state store of an agent whose admin endpoint did not answer: if the store is
/// locked, the agent runs after all and the endpoint is the problem.
pub fn open_store_of_stopped_agent(config: &Config) -> Result<StateStore> {
    StateStore::open(&config.state_dir()).map_err(|e| match e {
        StoreError::Locked(_) => anyhow::Error::new(e).context(format!(
            "the agent is running but its admin endpoint {} does not answer",
            &*config.agent.admin_addr
        )),
        other => other.into(),
    })
}

/// The status of a stopped agent, from the state store and the source.
async fn offline_status(config: &Config) -> Result<StatusReport> {
    let name = config.agent.name.0.clone();
    // A pipeline that never ran has no state store yet: do not create one just to look.
    let (checkpoint, meta, seen, dlq_size, verified) = if config.state_dir().exists() {
        let store = Arc::new(open_store_of_stopped_agent(config)?);
        let dlq = crate::dlq::DeadLetterQueue::open(Arc::clone(&store), &name, false, 0, None)?;
        let tree = crate::store::SourceState::new(Arc::clone(&store), &name);
        (
            store.checkpoint(&name)?,
            store.meta(&name)?,
            store.source_sighting(&name)?,
            dlq.len(),
            crate::verify::record::load(&tree),
        )
    } else {
        (None, None, None, 0, vec![])
    };
    let live = LiveStatus::new(&name, source_type_name(config.source.kind));
    // Every run records its meta first: without one (and without a checkpoint) nothing ran.
    if meta.is_none() && checkpoint.is_none() {
        live.set_state_quietly(PipelineState::NeverRan);
        return Ok(live.report());
    }
    let meta = meta.unwrap_or_default();
    live.seed(&meta);
    live.set_dlq_size(dlq_size);
    if let Some(e) = &meta.last_error {
        live.set_last_error(e.clone());
    }
    live.set_state_quietly(if meta.state == "failed" {
        PipelineState::Failed
    } else {
        PipelineState::Stopped
    });
    if let Some(c) = &checkpoint {
        live.set_confirmed(c);
    }
    if let Some(seen) = &seen {
        live.seed_source(seen);
    }
    match wiring::source_state(config).await {
        Ok(state) => {
            let lag = checkpoint
                .as_ref()
                .map(|c| c.resume_from.clone())
                .or(state.slot_confirmed.clone())
                .and_then(|c| (state.lag)(&c));
            live.set_source_position(state.current.to_string(), lag);
            live.set_slot_retained(state.slot_retained_bytes);
        }
        Err(e) => {
            live.set_source_unreachable();
            live.set_last_error(format!("source unreachable: {e}"));
        }
    }
    let mut report = live.report();
    let tree = cdc_core::MemoryTree::default();
    crate::verify::record::store_results(&tree, &verified)?;
    crate::verify::record::annotate(&mut report, &tree);
    Ok(report)
}

pub async fn reset(config: &Config, yes: bool) -> Result<ExitCode> {
    if !yes {
        eprintln!(
            "error: reset drops the replication slot and forgets the checkpoint of pipeline `{}`; run `cdc-agent reset --yes` to confirm",
            &*config.agent.name
        );
        return Ok(ExitCode::from(2));
    }
    let store = if config.state_dir().exists() {
        Some(open_store_waiting(&config.state_dir()).await?)
    } else {
        None
    };
    let dropped = wiring::drop_source_state(config).await?;
    if let Some(store) = store {
        store.clear(&config.agent.name)?;
    }
    println!(
        "reset pipeline {}: {}; state store cleared",
        &*config.agent.name,
        if dropped {
            format!("dropped slot {}", config.slot_name())
        } else {
            "no slot to drop".to_string()
        }
    );
    Ok(ExitCode::SUCCESS)
}
