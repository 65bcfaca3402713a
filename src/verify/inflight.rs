//! Changes in flight are not divergence. A row found different may only be on its way: the
//! source committed it, the agent has not applied it yet. Each candidate key is re-checked:
//!
//! ```text
//!  source rows(keys) ─▶ P = source position ─▶ wait: agent's confirmed position ≥ P
//!    ─▶ target rows(keys) ─▶ source rows(keys) again
//!  target = first source read          → equal (it was in flight)
//!  source unchanged between its reads  → divergent (every change up to P is applied)
//!  source changed meanwhile            → still moving: next round
//! ```
//!
//! With the agent stopped nothing is in flight towards the target: the comparison stands as it
//! was made ("compared at rest").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use cdc_core::{Lsn, Position};

use super::side::{Key, Side};
use crate::admin;

/// How long one round waits for the agent to pass the source position.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Rounds for keys that keep changing.
const ROUNDS: usize = 5;
const POLL: Duration = Duration::from_millis(100);

/// The running agent of the pipeline, reached through its admin endpoint.
pub struct AgentLink {
    pub addr: String,
    pub name: String,
}

/// Why waiting for the agent ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    Reached,
    TimedOut,
    /// The agent stopped answering.
    Gone,
}

impl AgentLink {
    pub async fn running(&self) -> bool {
        admin::fetch_status(&self.addr, &self.name).await.is_some()
    }

    /// Waits until the agent's confirmed position is at or past `position`.
    pub async fn wait_confirmed(&self, position: &Position, timeout: Duration) -> Waited {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(status) = admin::fetch_status(&self.addr, &self.name).await else {
                return Waited::Gone;
            };
            if status
                .confirmed_position
                .as_deref()
                .is_some_and(|c| reached(c, position))
            {
                return Waited::Reached;
            }
            if Instant::now() >= deadline {
                return Waited::TimedOut;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether a confirmed position as `status` prints it (`16/B374D848`, `mysql-bin.000003:1234
/// (gtid)`) is at or past `position`.
pub fn reached(confirmed: &str, position: &Position) -> bool {
    match position {
        Position::Postgres { lsn } => confirmed.parse::<Lsn>().is_ok_and(|c| c >= *lsn),
        Position::Mysql { file, pos, .. } => {
            let Some((c_file, rest)) = confirmed.rsplit_once(':') else {
                return false;
            };
            let Some(c_pos) = rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u64>().ok())
            else {
                return false;
            };
            (c_file, c_pos) >= (&**file, *pos)
        }
    }
}

/// A candidate's standing after re-checking: its category from the last look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Missing,
    Extra,
    Different,
}

/// Keys still divergent after re-checking, and those that kept changing through every round
/// (reported as divergent, with a note).
#[derive(Debug, Default)]
pub struct Settled {
    pub divergent: Vec<(Key, Category)>,
    pub still_changing: Vec<Key>,
    /// Set when a wait for the agent timed out or the agent went away.
    pub note: Option<String>,
}

fn category(source: Option<&String>, target: Option<&String>) -> Option<Category> {
    match (source, target) {
        (Some(_), None) => Some(Category::Missing),
        (None, Some(_)) => Some(Category::Extra),
        (Some(a), Some(b)) if a != b => Some(Category::Different),
        _ => None,
    }
}

async fn hashes(side: &mut dyn Side, keys: &[Key]) -> Result<HashMap<Key, String>> {
    Ok(side
        .rows(keys, false)
        .await?
        .into_iter()
        .map(|r| (r.key, r.hash))
        .collect())
}

/// Re-checks `keys` until the agent has applied everything the source had when each was read.
pub async fn settle(
    source: &mut dyn Side,
    target: &mut dyn Side,
    agent: &AgentLink,
    keys: Vec<Key>,
) -> Result<Settled> {
    let mut settled = Settled::default();
    let mut pending = keys;
    for _ in 0..ROUNDS {
        if pending.is_empty() {
            break;
        }
        let first = hashes(source, &pending).await?;
        let Some(position) = source.position().await? else {
            break;
        };
        match agent.wait_confirmed(&position, SETTLE_TIMEOUT).await {
            Waited::Reached => {}
            Waited::TimedOut => {
                settled.note = Some(format!(
                    "the agent did not apply the source's changes up to {position} within {} s: rows reported may still be in flight",
                    SETTLE_TIMEOUT.as_secs()
                ));
            }
            Waited::Gone => {
                settled.note = Some(
                    "the agent stopped while rows were re-checked: reported as compared at rest"
                        .into(),
                );
            }
        }
        let target_now = hashes(target, &pending).await?;
        let second = hashes(source, &pending).await?;
        let mut moving = Vec::new();
        for key in pending {
            let (a, t, b) = (first.get(&key), target_now.get(&key), second.get(&key));
            match category(a, t) {
                None => {}
                Some(c) if a == b || settled.note.is_some() => {
                    settled.divergent.push((key, c));
                }
                Some(_) => moving.push(key),
            }
        }
        pending = moving;
        if settled.note.is_some() {
            break;
        }
    }
    // Keys that changed in every round: report them as they were last seen.
    if !pending.is_empty() {
        let source_now = hashes(source, &pending).await?;
        let target_now = hashes(target, &pending).await?;
        for key in pending {
            if let Some(c) = category(source_now.get(&key), target_now.get(&key)) {
                settled.still_changing.push(key.clone());
                settled.divergent.push((key, c));
            }
        }
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn confirmed_positions_compare_with_the_source_position() {
        let lsn = Position::Postgres {
            lsn: "1/100".parse().unwrap(),
        };
        assert!(reached("1/100", &lsn) && reached("2/0", &lsn));
        assert!(!reached("1/FF", &lsn) && !reached("garbage", &lsn));
        let binlog = Position::Mysql {
            file: Arc::from("mysql-bin.000003"),
            pos: 500,
            gtid: None,
        };
        assert!(reached("mysql-bin.000003:500 (0-1-7)", &binlog));
        assert!(reached("mysql-bin.000004:4", &binlog));
        assert!(!reached("mysql-bin.000003:499", &binlog));
    }
}
