//! Where the stream already stands for this pipeline: the newest stored change's message id.
//!
//! ```text
//!  open() ── stream's last sequence ──▶ walk back to the newest message of this pipeline
//!        ──▶ Nats-Msg-Id "pipeline:position:seq" ──▶ ResumePoint ──▶ the agent drops replays
//! ```
//!
//! The checkpoint trails what JetStream has stored by up to a flush (and more under load), so a
//! restart replays the changes since. Their message ids are the same, and the duplicate window
//! drops them; but the snapshot's chunks are copied again under *new* ids unless the agent knows
//! they are stored. Knowing the newest stored change tells both: replays are dropped by the agent
//! itself (whatever the window) and chunks up to it count as done.
//!
//! Why the newest message stands for everything before it: the sink publishes on one connection
//! in commit order and JetStream stores a stream's messages in the order it receives them; a
//! message the server would refuse for its size is refused by the sink before it is sent (see
//! `NatsSink::send`), so no later change is stored past a refused one.

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use cdc_core::{Lsn, PipelineError, Position, ResumePoint};

/// Messages looked at, newest first, before giving up (a stream shared with other pipelines).
const SCAN_LIMIT: u64 = 1024;

/// The resume point of the newest message `pipeline` stored in `stream`, if one is found among
/// the newest [`SCAN_LIMIT`] messages.
pub async fn last_stored(
    stream: &Stream,
    last_sequence: u64,
    first_sequence: u64,
    pipeline: &str,
) -> Result<Option<ResumePoint>, PipelineError> {
    let lowest = first_sequence.max(last_sequence.saturating_sub(SCAN_LIMIT - 1));
    let mut sequence = last_sequence;
    while sequence >= lowest && sequence > 0 {
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            // Deleted or purged since the stream's info was read: look further back.
            Err(e)
                if e.kind() == RawMessageErrorKind::NoMessageFound
                    || e.to_string().contains("no message found") =>
            {
                sequence -= 1;
                continue;
            }
            Err(e) => {
                return Err(PipelineError::transient(
                    "sink",
                    format!("reading message {sequence} of the JetStream stream: {e}"),
                ))
            }
        };
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string());
        if let Some(point) = id.as_deref().and_then(|id| parse_id(id, pipeline)) {
            return Ok(Some(point));
        }
        sequence -= 1;
    }
    Ok(None)
}

/// Parses a message id written by `cdc_core::naming`: `pipeline:lsn:seq` (Postgres) or
/// `pipeline:file:pos:seq` (MySQL), `seq` being `BEGIN` or `END` for transaction metadata.
/// A change covers its transaction up to its `seq`; an END covers the whole transaction; a
/// BEGIN covers nothing of its own transaction, so it says nothing here.
fn parse_id(id: &str, pipeline: &str) -> Option<ResumePoint> {
    let rest = id.strip_prefix(pipeline)?.strip_prefix(':')?;
    let (place, what) = rest.rsplit_once(':')?;
    let seq = match what {
        "END" => None,
        "BEGIN" => return None,
        n => Some(n.parse::<u64>().ok()?),
    };
    let position = match place.rsplit_once(':') {
        // `file:pos`: a binlog file name holds no ':'.
        Some((file, pos)) => Position::Mysql {
            file: file.into(),
            pos: pos.parse().ok()?,
            gtid: None,
        },
        None => Position::Postgres {
            lsn: place.parse::<Lsn>().ok()?,
        },
    };
    Some(ResumePoint { position, seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdc_core::naming::marker_id;

    #[test]
    fn message_ids_parse_back_into_resume_points() {
        let pg = Position::Postgres {
            lsn: "16/B374D848".parse().unwrap(),
        };
        let my = Position::Mysql {
            file: "mariadb-bin.000012".into(),
            pos: 4711,
            gtid: None,
        };
        for position in [pg, my] {
            let change = parse_id(&marker_id("orders", &position, 7), "orders").unwrap();
            assert_eq!(
                (change.position.clone(), change.seq),
                (position.clone(), Some(7))
            );
            let end = parse_id(&marker_id("orders", &position, "END"), "orders").unwrap();
            assert_eq!((end.position, end.seq), (position.clone(), None));
            assert_eq!(
                parse_id(&marker_id("orders", &position, "BEGIN"), "orders"),
                None
            );
            // Another pipeline's message (a shared stream), even one whose name starts alike.
            assert_eq!(
                parse_id(&marker_id("orders2", &position, 7), "orders"),
                None
            );
        }
        assert_eq!(parse_id("orders:garbage:1", "orders"), None);
    }
}
