//! Target tables: type mapping, creation, and applying the source's schema changes safely.
//!
//! Types are spelled the way Postgres' `format_type` prints them, so the columns a target table
//! has can be compared with the columns it should have, string for string.

use cdc_core::{ColumnSchema, ColumnType, PipelineError, TableSchema};

use crate::quote_ident;

/// Columns the sink adds to every target table, by option.
pub const DELETED_COLUMN: &str = "_cdc_deleted";
pub const POSITION_COLUMN: &str = "_cdc_position";
pub const COMMIT_TS_COLUMN: &str = "_cdc_commit_ts";

/// The target type of a column, in `format_type` spelling.
pub fn target_type(column: &ColumnSchema) -> String {
    type_name(&column.column_type, &column.source_type)
}

fn type_name(t: &ColumnType, source_type: &str) -> String {
    match t {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int16 => "smallint".into(),
        ColumnType::Int32 => "integer".into(),
        ColumnType::Int64 => "bigint".into(),
        ColumnType::UInt64 => "numeric(20,0)".into(),
        ColumnType::Float32 => "real".into(),
        ColumnType::Float64 => "double precision".into(),
        ColumnType::Decimal {
            precision: Some(p),
            scale: Some(s),
        } => format!("numeric({p},{s})"),
        ColumnType::Decimal { .. } => "numeric".into(),
        ColumnType::Text { max_len: Some(n) } => format!("character varying({n})"),
        ColumnType::Text { max_len: None } => "text".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time without time zone".into(),
        ColumnType::Timestamp => "timestamp without time zone".into(),
        ColumnType::TimestampTz => "timestamp with time zone".into(),
        ColumnType::Interval => "interval".into(),
        ColumnType::Array(inner) => {
            format!("{}[]", type_name(inner, source_type.trim_end_matches("[]")))
        }
        // Built-in Postgres types without a portable twin (inet, point, money, ...) exist in a
        // Postgres target too; anything else (enums, extension types) is kept as its text.
        ColumnType::Other {
            name,
            builtin: true,
        } if !name.is_empty() => name.clone(),
        ColumnType::Other { .. } => "text".into(),
    }
}

pub fn create_table_sql(
    target: &str,
    schema: &TableSchema,
    soft_delete: bool,
    metadata: bool,
) -> Result<String, PipelineError> {
    if schema.key.is_empty() {
        return Err(PipelineError::definite(
            "schema",
            format!(
                "table {}.{} has no primary key; the postgres sink applies changes by key",
                schema.schema, schema.table
            ),
        )
        .with_hint("add a primary key to the source table"));
    }
    let mut columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), target_type(c)))
        .collect();
    if soft_delete {
        columns.push(format!(
            "{} boolean NOT NULL DEFAULT false",
            quote_ident(DELETED_COLUMN)
        ));
    }
    if metadata {
        columns.push(format!("{} text", quote_ident(POSITION_COLUMN)));
        columns.push(format!(
            "{} timestamp with time zone",
            quote_ident(COMMIT_TS_COLUMN)
        ));
    }
    let key: Vec<String> = schema.key_names().map(quote_ident).collect();
    columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {target} ({})",
        columns.join(", ")
    ))
}

/// The statements that bring an existing target table's columns (`have`: name, type) to the
/// source schema, or a definite error when a change cannot be applied without losing data.
pub fn plan_changes(
    target: &str,
    have: &[(String, String)],
    want: &TableSchema,
) -> Result<Vec<String>, PipelineError> {
    let mut statements = Vec::new();
    for column in &want.columns {
        let wanted = target_type(column);
        match have.iter().find(|(name, _)| name == &*column.name) {
            None => statements.push(format!(
                "ALTER TABLE {target} ADD COLUMN {} {wanted}",
                quote_ident(&column.name)
            )),
            Some((_, existing)) if existing == &wanted => {}
            Some((_, existing)) if widens(existing, &wanted) => statements.push(format!(
                "ALTER TABLE {target} ALTER COLUMN {} TYPE {wanted}",
                quote_ident(&column.name)
            )),
            Some((_, existing)) if widens(&wanted, existing) => {
                // The source narrowed the type: every new value still fits the wider target.
            }
            Some((_, existing)) => {
                return Err(PipelineError::definite(
                    "schema",
                    format!(
                        "column {}.{} changed from {existing} to {wanted} in the source; the target cannot follow without losing or misreading data",
                        want.table, column.name
                    ),
                )
                .with_hint(format!(
                    "alter {target}.{} by hand to a type that holds both (or drop the target table to have it recreated), then restart: nothing is lost, the pipeline resumes at the change",
                    quote_ident(&column.name)
                )))
            }
        }
    }
    // Columns the source dropped stay in the target (their history is data) and are no longer
    // written; they must accept nulls for new rows.
    Ok(statements)
}

/// Whether `to` holds every value of `from` exactly.
fn widens(from: &str, to: &str) -> bool {
    let rank = |t: &str| match t {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        "numeric" => Some(4),
        _ => None,
    };
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return a < b;
    }
    if from == "real" && to == "double precision" {
        return true;
    }
    if to == "text" && (from.starts_with("character varying") || from.starts_with("character(")) {
        return true;
    }
    if let (Some(a), Some(b)) = (varchar_len(from), varchar_len(to)) {
        return a < b;
    }
    if let (Some((p1, s1)), Some((p2, s2))) = (numeric_ps(from), numeric_ps(to)) {
        return s2 >= s1 && p2 - s2 >= p1 - s1 && (p1, s1) != (p2, s2);
    }
    if numeric_ps(from).is_some() && to == "numeric" {
        return true;
    }
    if rank(from).is_some_and(|r| r <= 3) && numeric_ps(to).is_some_and(|(p, s)| p - s >= 19) {
        return true;
    }
    false
}

fn varchar_len(t: &str) -> Option<u32> {
    t.strip_prefix("character varying(")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

fn numeric_ps(t: &str) -> Option<(i64, i64)> {
    let inner = t.strip_prefix("numeric(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn table(columns: &[(&str, ColumnType)]) -> TableSchema {
        TableSchema {
            schema: "public".into(),
            table: "t".into(),
            columns: columns
                .iter()
                .map(|(n, t)| ColumnSchema {
                    name: cdc_core::Name::new(n),
                    column_type: t.clone(),
                    source_type: String::new(),
                })
                .collect(),
            key: vec![0],
        }
    }

    #[test]
    fn added_columns_and_widened_types_are_planned_narrowing_is_refused() {
        let have = vec![
            ("id".to_string(), "integer".to_string()),
            ("v".to_string(), "character varying(10)".to_string()),
        ];
        let want = table(&[
            ("id", ColumnType::Int64),
            ("v", ColumnType::Text { max_len: Some(20) }),
            ("w", ColumnType::Json),
        ]);
        let plan = plan_changes("t", &have, &want).unwrap();
        assert_eq!(
            plan,
            [
                "ALTER TABLE t ALTER COLUMN \"id\" TYPE bigint",
                "ALTER TABLE t ALTER COLUMN \"v\" TYPE character varying(20)",
                "ALTER TABLE t ADD COLUMN \"w\" jsonb",
            ]
        );
        let incompatible = table(&[("id", ColumnType::Int32), ("v", ColumnType::Int32)]);
        let err = plan_changes("t", &have, &incompatible).unwrap_err();
        assert!(
            err.to_string()
                .contains("changed from character varying(10) to integer"),
            "{err}"
        );
        assert!(widens("numeric(10,2)", "numeric(12,2)"));
        assert!(!widens("numeric(10,2)", "numeric(10,3)"));
    }
}
