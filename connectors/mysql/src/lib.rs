//! MySQL and MariaDB source for cdc-agent: the binlog's row events, in commit order, with exact
//! values and the column names valid at each position.
//!
//! * [`setup`]: config, server settings, positions, `cdc-agent check`.
//! * [`schema`]: table columns from `information_schema` and their history along the binlog.
//! * [`values`]: binlog values → the spec's values.
//! * [`source`]: the binlog stream → changes, commits and progress.
//! * [`snapshot`]: the initial copy, consistent with the stream that follows.

pub mod binary;
pub mod chunked;
pub mod errors;
pub mod rows;
pub mod schema;
mod session;
pub mod setup;
pub mod snapshot;
pub mod source;
pub mod values;

pub use setup::{default_server_id, preflight, server_state, MysqlConfig, ServerState};
pub use source::MysqlSource;
