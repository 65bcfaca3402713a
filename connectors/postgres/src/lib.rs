//! Postgres logical replication source (pgoutput over the streaming replication protocol).

pub mod values;
pub mod wire;
