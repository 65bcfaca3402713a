//! Rows events → row images, decoded straight from the event's bytes.
//!
//! `mysql_common`'s `BinlogRow` builds a `Column` (names, flags, charset) for every value of every
//! row: most of the agent's time went there. Here the table map's types are read once per map,
//! and each value is decoded with `mysql_common`'s value decoder into the column's [`Value`].
//!
//! An image is `null bitmap (one bit per present column)` then the present, non-null values in
//! column order; an update row is a before image then an after image.

use cdc_core::Name;
use cdc_core::{PipelineError, Row, Value};
use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;

use crate::binary;
use crate::schema::{DecodedTable, ValueKind};
use crate::values::decode;

/// A table map's column types and metadata, read once per map.
#[derive(Debug)]
pub struct ColumnTypes(Vec<(ColumnType, Vec<u8>)>);

impl ColumnTypes {
    pub fn of(map: &TableMapEvent<'_>) -> Result<Self, PipelineError> {
        let mut types = Vec::with_capacity(map.columns_count() as usize);
        for i in 0..map.columns_count() as usize {
            let column_type = map
                .get_column_type(i)
                .map_err(|e| corrupt(format!("column {i}: {e}")))?
                .ok_or_else(|| corrupt(format!("no type for column {i}")))?;
            let meta = map.get_column_metadata(i).unwrap_or(&[]).to_vec();
            types.push((column_type, meta));
        }
        Ok(ColumnTypes(types))
    }
}

/// A row image: the values present, and the names of the columns it left out.
pub type Image = (Row, Vec<Name>);

/// A row of a rows event: its before and after images, where the event has them.
pub type RowImages = (Option<Image>, Option<Image>);

fn corrupt(what: impl std::fmt::Display) -> PipelineError {
    PipelineError::definite("decode", format!("binlog rows event: {what}"))
}

/// Every row of the event as (before, after) images.
pub fn decode_rows(
    rows: &RowsEventData<'_>,
    types: &ColumnTypes,
    table: &DecodedTable,
) -> Result<Vec<RowImages>, PipelineError> {
    let columns = types.0.len();
    if rows.num_columns() as usize != columns || table.kinds.len() != columns {
        return Err(corrupt(format!(
            "{} columns in the rows event, {} in its table map, {} known for {}",
            rows.num_columns(),
            columns,
            table.kinds.len(),
            table.info.qualified()
        )));
    }
    let before_columns = rows.columns_before_image().map(|bits| {
        (0..columns)
            .map(|i| bits.get(i).is_some_and(|b| *b))
            .collect::<Vec<bool>>()
    });
    let after_columns = rows.columns_after_image().map(|bits| {
        (0..columns)
            .map(|i| bits.get(i).is_some_and(|b| *b))
            .collect::<Vec<bool>>()
    });
    let mut buf = ParseBuf(rows.rows_data());
    let mut out = Vec::new();
    while !buf.is_empty() {
        let before = before_columns
            .as_deref()
            .map(|p| image(&mut buf, p, types, table))
            .transpose()?;
        let after = after_columns
            .as_deref()
            .map(|p| image(&mut buf, p, types, table))
            .transpose()?;
        out.push((before, after));
    }
    Ok(out)
}

fn image<'a>(
    buf: &mut ParseBuf<'a>,
    present: &[bool],
    types: &'a ColumnTypes,
    table: &DecodedTable,
) -> Result<Image, PipelineError> {
    let count = present.iter().filter(|p| **p).count();
    let nulls = buf
        .checked_eat(count.div_ceil(8))
        .ok_or_else(|| corrupt("truncated null bitmap"))?;
    let mut values = Vec::with_capacity(count);
    let mut missing = Vec::new();
    let mut nth = 0;
    for (i, column) in table.schema.columns.iter().enumerate() {
        if !present[i] {
            missing.push(column.name);
            continue;
        }
        let null = nulls[nth / 8] & (1 << (nth % 8)) != 0;
        nth += 1;
        let value = if null {
            Value::Null
        } else {
            let (column_type, meta) = &types.0[i];
            if meta.is_empty() && needs_metadata(*column_type) {
                return Err(corrupt(format!("no metadata for column {}", column.name)));
            }
            let decoded = match (column_type, &table.kinds[i], meta.as_slice()) {
                // The two forms mysql_common would turn into text for the agent to parse back.
                (ColumnType::MYSQL_TYPE_NEWDECIMAL, ValueKind::Decimal, [precision, scale, ..]) => {
                    let (precision, scale) = (usize::from(*precision), usize::from(*scale));
                    let bytes = buf
                        .checked_eat(binary::decimal_len(precision, scale))
                        .ok_or_else(|| corrupt(format!("column {}: truncated", column.name)))?;
                    binary::decimal_text(bytes, precision, scale).map(Value::Decimal)
                }
                (ColumnType::MYSQL_TYPE_TIMESTAMP2, ValueKind::Timestamp, [fsp, ..]) => {
                    let bytes = buf
                        .checked_eat(binary::timestamp_len(*fsp))
                        .ok_or_else(|| corrupt(format!("column {}: truncated", column.name)))?;
                    binary::timestamp_value(bytes, *fsp)
                }
                _ => {
                    let raw: BinlogValue<'a> = buf
                        .parse((*column_type, meta.as_slice(), false, false))
                        .map_err(|e| corrupt(format!("column {}: {e}", column.name)))?;
                    decode(&table.kinds[i], raw)
                }
            };
            decoded.map_err(|why| {
                PipelineError::definite(
                    "decode",
                    format!("{}.{}: {why}", table.info.qualified(), column.name),
                )
            })?
        };
        values.push((column.name, value));
    }
    Ok((Row(values), missing))
}

/// Types whose binlog decoder reads the table map's metadata (and would index past an empty one).
fn needs_metadata(column_type: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        column_type,
        MYSQL_TYPE_STRING
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_BIT
            | MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIME2
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_SET
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_GEOMETRY
            | MYSQL_TYPE_TYPED_ARRAY
    )
}

/// A row image decoded by mysql_common's `BinlogRow` (MySQL's partial JSON updates only): the
/// values present, and the names of the columns it left out.
pub fn build_row(
    decoded: &DecodedTable,
    mut image: mysql_async::binlog::row::BinlogRow,
) -> Result<(Row, Vec<Name>), PipelineError> {
    let mut values = Vec::with_capacity(decoded.kinds.len());
    let mut missing = Vec::new();
    // Images list present columns in order; with FULL images that is every column.
    let full = image.len() == decoded.kinds.len();
    let names: Vec<Vec<u8>> = if full {
        Vec::new()
    } else {
        image
            .columns_ref()
            .iter()
            .map(|c| c.name_ref().to_vec())
            .collect()
    };
    for (i, column) in decoded.schema.columns.iter().enumerate() {
        let index = if full {
            Some(i)
        } else {
            names.iter().position(|n| {
                n.as_slice() == format!("@{i}").as_bytes() || n.as_slice() == column.name.as_bytes()
            })
        };
        let Some(value) = index.and_then(|at| image.take(at)) else {
            missing.push(column.name);
            continue;
        };
        let value = decode(&decoded.kinds[i], value).map_err(|why| {
            PipelineError::definite(
                "decode",
                format!("{}.{}: {why}", decoded.info.qualified(), column.name),
            )
        })?;
        values.push((column.name, value));
    }
    Ok((Row(values), missing))
}
