//! The core of cdc-agent: what every connector and sink shares.
//!
//! ```text
//!  source ──SourceMessage──▶ runtime ──▶ sink ──durable(Checkpoint)──▶ checkpointer
//! ```
//!
//! * [`event`]: the canonical change record ([`ChangeEvent`]) and its JSON form.
//! * [`value`]: lossless column values.
//! * [`columns`]: per-table column filters and masks, applied before any sink.
//! * [`name`]: interned names of columns and tables, copied for free.
//! * [`json`]: the record's JSON, written fast for sinks that write every record.
//! * [`json_line`]: JSON documents on one line, as every record carries them.
//! * [`naming`]: subject/topic templates and the change id message sinks send.
//! * [`transaction`]: BEGIN/END transaction metadata for message sinks.
//! * [`position`]: one position type for every source; comparing two sources is an error.
//! * [`pipeline`]: the messages a source emits and the [`Source`]/[`Sink`] traits.
//! * [`error`]: the error classes (transient / definite / poison) the runtime acts on.
//! * [`dead_letter`]: the dead-letter store as sinks see it, and finding a batch's poison change.

pub mod batch;
pub mod check;
pub mod chunked;
pub mod columns;
pub mod dead_letter;
pub mod debezium;
pub mod error;
pub mod event;
pub mod json;
pub mod json_line;
pub mod name;
pub mod naming;
pub mod pipeline;
pub mod position;
pub mod schema;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transaction;
pub mod value;
pub mod warehouse;

pub use check::CheckOutcome;
pub use error::{ErrorClass, PipelineError};
pub use event::{ChangeEvent, Op, Row, SourceKind, SourceMeta};
pub use name::Name;
pub use pipeline::{
    channel, BufferGauge, Checkpoint, Envelope, EventSender, ResumePoint, Sink, Source,
    SourceMessage, SourceProgress, StreamContext,
};
pub mod time;
pub use position::{Lsn, Position, PositionError};
pub use schema::{ColumnSchema, ColumnType, TableSchema};
pub use state::{MemoryTree, StateTree};
pub use value::Value;
