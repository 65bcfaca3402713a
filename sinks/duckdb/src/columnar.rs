//! Encoded columns → Arrow arrays → DuckDB's appender, a vector (2,048 rows) at a time.
//!
//! The row-at-a-time appender crosses the C API once per value and DuckDB converts each value on
//! its own; a record batch crosses it once per vector and column, and DuckDB casts a whole
//! column to the table's type at once (text to DECIMAL, JSON or UUID, BIGINT to INTEGER), the
//! same casts the staged merge's `CAST` makes. Lists are not built here: the callers keep them
//! on the INSERT path.

use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int64Builder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use duckdb::arrow::datatypes::{Field, Schema};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::types::{TimeUnit, Value as Duck};
use duckdb::Connection;

use crate::encode::StageKind;

/// The time zone DuckDB's `TIMESTAMP WITH TIME ZONE` values are read in (they are instants).
const UTC: &str = "UTC";

/// One column of `values` as an Arrow array of the kind's type; `None` for a list column or a
/// value of another kind than the column's (the caller then takes the row-wise path).
pub fn arrow_column(kind: &StageKind, values: &[Duck]) -> Option<ArrayRef> {
    macro_rules! build {
        ($builder:expr, $pattern:pat => $value:expr) => {{
            let mut builder = $builder;
            for value in values {
                match value {
                    Duck::Null => builder.append_null(),
                    $pattern => builder.append_value($value),
                    _ => return None,
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    let n = values.len();
    Some(match kind {
        StageKind::Bool => build!(BooleanBuilder::with_capacity(n), Duck::Boolean(b) => *b),
        StageKind::Int => build!(Int64Builder::with_capacity(n), Duck::BigInt(i) => *i),
        StageKind::UInt => build!(UInt64Builder::with_capacity(n), Duck::UBigInt(u) => *u),
        StageKind::Float32 => build!(Float32Builder::with_capacity(n), Duck::Float(f) => *f),
        StageKind::Float64 => build!(Float64Builder::with_capacity(n), Duck::Double(f) => *f),
        StageKind::Decimal | StageKind::Text => {
            build!(StringBuilder::with_capacity(n, byte_len(values)), Duck::Text(s) => s)
        }
        StageKind::Blob => {
            build!(BinaryBuilder::with_capacity(n, byte_len(values)), Duck::Blob(b) => b)
        }
        StageKind::Date => build!(Date32Builder::with_capacity(n), Duck::Date32(d) => *d),
        StageKind::Time => build!(
            Time64MicrosecondBuilder::with_capacity(n),
            Duck::Time64(TimeUnit::Microsecond, t) => *t
        ),
        StageKind::Timestamp => build!(
            TimestampMicrosecondBuilder::with_capacity(n),
            Duck::Timestamp(TimeUnit::Microsecond, t) => *t
        ),
        StageKind::TimestampTz => build!(
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC),
            Duck::Timestamp(TimeUnit::Microsecond, t) => *t
        ),
        // As text DuckDB casts exactly: the Arrow conversion of the linked duckdb crate drops an
        // interval column's NULLs (it rebuilds the array without its validity).
        StageKind::Interval => build!(
            StringBuilder::with_capacity(n, n * 48),
            Duck::Interval { months, days, nanos } => format!("{months} months {days} days {} microseconds", nanos / 1000)
        ),
        StageKind::List(_) => return None,
    })
}

/// The bytes of the text and blob values among `values` (an array's buffer size).
fn byte_len(values: &[Duck]) -> usize {
    values
        .iter()
        .map(|v| match v {
            Duck::Text(s) => s.len(),
            Duck::Blob(b) => b.len(),
            _ => 0,
        })
        .sum()
}

/// Appends equally long `columns` (name, array), in the table's column order, to `schema.table`
/// of `catalog` (`None`: the database's own).
pub fn append(
    conn: &Connection,
    catalog: Option<&str>,
    schema: &str,
    table: &str,
    columns: Vec<(String, ArrayRef)>,
) -> duckdb::Result<()> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(name, array.data_type().clone(), true))
        .collect();
    let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, array)| array).collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))?;
    let mut appender = match catalog {
        Some(catalog) => conn.appender_to_catalog_and_db(table, catalog, schema)?,
        None => conn.appender_to_db(table, schema)?,
    };
    appender.append_record_batch(batch)?;
    appender.flush()
}
