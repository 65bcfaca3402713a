//! Source positions.
//!
//! A [`Position`] names a place in one source's change log. Postgres positions are LSNs, MySQL and
//! MariaDB positions are binlog file/offset pairs (plus a GTID where the server has one). Positions
//! of different sources cannot be ordered: [`Position::try_cmp`] says so instead of guessing.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A Postgres write-ahead-log location, printed the way Postgres prints it (`16/B374D848`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = PositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PositionError::Parse(format!("`{s}` is not an LSN (expected hex `X/X`)"));
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PositionError {
    #[error("cannot compare a {left} position with a {right} position: the checkpoint belongs to another source type (run `cdc-agent reset --yes` to start over)")]
    DifferentSources {
        left: &'static str,
        right: &'static str,
    },
    #[error("{0}")]
    Parse(String),
}

/// A place in a source's change stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Position {
    /// A Postgres LSN. For change events it is the transaction's commit LSN; for a resume point
    /// it is the LSN from which the server must send (the end of the last durable commit).
    Postgres { lsn: Lsn },
    /// A binlog coordinate: the end of the transaction (the position of the next event).
    ///
    /// The names are shared (`Arc`): every change of a transaction carries a copy of its position.
    Mysql {
        file: Arc<str>,
        pos: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gtid: Option<Arc<str>>,
    },
}

impl Position {
    pub fn source_name(&self) -> &'static str {
        match self {
            Position::Postgres { .. } => "postgres",
            Position::Mysql { .. } => "mysql",
        }
    }

    /// Orders two positions of the same source. Binlog files order by their numeric suffix
    /// (`mysql-bin.000010` after `mysql-bin.000009`), then by offset.
    pub fn try_cmp(&self, other: &Position) -> Result<Ordering, PositionError> {
        match (self, other) {
            (Position::Postgres { lsn: a }, Position::Postgres { lsn: b }) => Ok(a.cmp(b)),
            (
                Position::Mysql {
                    file: fa, pos: pa, ..
                },
                Position::Mysql {
                    file: fb, pos: pb, ..
                },
                // One file (every comparison of a stream but one per rotation): offsets decide,
                // without parsing the names.
            ) if fa == fb => Ok(pa.cmp(pb)),
            (
                Position::Mysql {
                    file: fa, pos: pa, ..
                },
                Position::Mysql {
                    file: fb, pos: pb, ..
                },
            ) => Ok(binlog_file_index(fa)
                .cmp(&binlog_file_index(fb))
                .then_with(|| fa.cmp(fb))
                .then(pa.cmp(pb))),
            _ => Err(PositionError::DifferentSources {
                left: self.source_name(),
                right: other.source_name(),
            }),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres { lsn } => write!(f, "{lsn}"),
            Position::Mysql { file, pos, gtid } => {
                write!(f, "{file}:{pos}")?;
                if let Some(g) = gtid {
                    write!(f, " ({g})")?;
                }
                Ok(())
            }
        }
    }
}

fn binlog_file_index(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert!("nonsense".parse::<Lsn>().is_err());
    }

    #[test]
    fn comparing_different_sources_is_an_error() {
        let pg = Position::Postgres { lsn: Lsn(5) };
        let my = Position::Mysql {
            file: "bin.000001".into(),
            pos: 4,
            gtid: None,
        };
        assert!(pg.try_cmp(&my).is_err());
    }

    #[test]
    fn binlog_positions_order_by_file_number_then_offset() {
        let p = |f: &str, pos| Position::Mysql {
            file: f.into(),
            pos,
            gtid: None,
        };
        assert_eq!(
            p("bin.000009", 900).try_cmp(&p("bin.000010", 4)),
            Ok(Ordering::Less)
        );
        assert_eq!(
            p("bin.000010", 900).try_cmp(&p("bin.000010", 4)),
            Ok(Ordering::Greater)
        );
    }
}
