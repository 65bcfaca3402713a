//! `cdc-agent verify` of a DuckDB target while the agent runs: the agent holds the file (DuckDB
//! lets one process open it), so the command hands its arguments to the agent
//! (`POST /verify/run`), which compares in its own process (service.rs) and answers with the
//! report; the command prints it as it prints its own.
//!
//! ```text
//!  verify ─▶ POST /verify/run {args} ─▶ 200 report ─▶ print, exit 0/1
//!                                     ─▶ 503 (sink not open yet) ─▶ wait, ask again
//!                                     ─▶ 400 usage ─▶ exit 2 · other ─▶ exit 1
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::inflight::AgentLink;
use super::report::VerifyReport;
use super::VerifyArgs;

/// How long the command waits for the agent's sink to open the DuckDB file (the agent is
/// starting, or retrying after an error).
const OPEN_WAIT: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_millis(500);
/// How long one comparison may take in the agent: as long as the tables need. The command can
/// be interrupted; the agent then stops the run (it sees the connection close).
const RUN_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

pub async fn run_in_agent(agent: &AgentLink, args: &VerifyArgs) -> Result<ExitCode> {
    let body = serde_json::to_string(args)?;
    let deadline = Instant::now() + OPEN_WAIT;
    let mut told = false;
    loop {
        let answer =
            crate::admin::call_within(&agent.addr, "POST", "/verify/run", &body, RUN_TIMEOUT).await;
        match answer {
            Some((200, text)) => {
                let report: VerifyReport =
                    serde_json::from_str(&text).context("the agent's verify report")?;
                return super::print_report(&report, args.json);
            }
            Some((400, text)) => {
                eprintln!("error: {}", text.trim());
                return Ok(ExitCode::from(2));
            }
            Some((503, text)) if Instant::now() < deadline => {
                if !told {
                    eprintln!(
                        "waiting for the agent (it runs verify of a DuckDB target in its own process): {}",
                        text.trim()
                    );
                    told = true;
                }
                tokio::time::sleep(RETRY).await;
            }
            Some((503, text)) => {
                eprintln!(
                    "error: the agent could not run verify within {} s: {} (see `cdc-agent status`)",
                    OPEN_WAIT.as_secs(),
                    text.trim()
                );
                return Ok(ExitCode::from(1));
            }
            Some((404, _)) => {
                eprintln!(
                    "error: the running agent does not run verify for a DuckDB target (an older version): stop it, then verify"
                );
                return Ok(ExitCode::from(1));
            }
            Some((code, text)) => {
                eprintln!(
                    "error: verify failed in the agent ({code}): {}",
                    text.trim()
                );
                return Ok(ExitCode::from(1));
            }
            None => {
                eprintln!(
                    "error: the agent at {} stopped answering during verify",
                    agent.addr
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
}
