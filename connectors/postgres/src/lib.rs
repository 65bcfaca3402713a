//! Postgres logical replication source (pgoutput over the streaming replication protocol).
//!
//! * [`wire`]: the frontend protocol, with TLS and authentication, including copy-both mode.
//! * [`pgoutput`]: decoding of the plugin's messages.
//! * [`values`]: text values to lossless [`cdc_core::Value`]s.
//! * [`schema`]: relations, value kinds and keys.
//! * [`setup`]: tables, publication, slot, preflight.
//! * [`column_lists`]: publication column lists for `columns = [...]`, where safe.
//! * [`snapshot`]: a copy in the slot's exported snapshot (one transaction).
//! * [`chunked`]: the resumable copy in key chunks between watermarks, while streaming.
//! * [`source`]: the streaming loop.
//! * `streamed`: transactions sent before their commit (protocol 2), spilled until it.

pub mod chunked;
pub mod column_lists;
mod errors;
pub mod pgoutput;
pub mod schema;
mod session;
pub mod setup;
pub mod snapshot;
pub mod source;
mod streamed;
pub mod values;
pub mod wire;

pub use cdc_core::chunked::SnapshotMethod;
pub use setup::{drop_slot, preflight, server_state, PostgresConfig, ServerState};
pub use source::PostgresSource;
