//! Target tables: the Postgres → DuckDB type mapping, creating tables, and following the source's
//! schema changes safely.
//!
//! Types are spelled the way DuckDB's `duckdb_columns()` prints them (`FLOAT` for REAL,
//! `TIMESTAMP WITH TIME ZONE` for TIMESTAMPTZ), so the columns a target table has can be compared
//! with the columns it should have, string for string.
//!
//! | source type (Postgres) | DuckDB target | values |
//! | --- | --- | --- |
//! | boolean | `BOOLEAN` | |
//! | smallint | `SMALLINT` | |
//! | integer | `INTEGER` | |
//! | bigint | `BIGINT` | |
//! | unsigned 64-bit (MySQL `BIGINT UNSIGNED`) | `UBIGINT` | |
//! | real | `REAL` (DuckDB prints it `FLOAT`) | NaN and ±Infinity kept |
//! | double precision | `DOUBLE` | NaN and ±Infinity kept |
//! | numeric(p,s), p ≤ 38 | `DECIMAL(p,s)` | exact; a NaN stops the table with a fix (see below) |
//! | numeric (unconstrained), numeric(p,s) with p > 38 | `VARCHAR` | every digit, as the source sends it: DuckDB decimals stop at 38 digits, Postgres numeric does not, so a `DECIMAL` or `DOUBLE` would round |
//! | text, varchar(n), char(n) | `VARCHAR` | DuckDB has no length limits |
//! | json, jsonb | `JSON` when the DuckDB library has the json extension built in (the prebuilt 1.5.6 library has), else `VARCHAR` holding the JSON text | extensions are never downloaded |
//! | bytea | `BLOB` | |
//! | uuid | `UUID` | |
//! | date | `DATE` | `infinity`/`-infinity` become DuckDB's infinite dates; BC dates kept |
//! | time | `TIME` | |
//! | timestamp | `TIMESTAMP` | infinities and BC kept |
//! | timestamptz | `TIMESTAMPTZ` (printed `TIMESTAMP WITH TIME ZONE`) | the UTC instant |
//! | interval | `INTERVAL` | from ISO-8601 (`P1Y2M3DT4H5M6.5S`) into months, days, microseconds; a value DuckDB has no interval for (Postgres 17 `infinity`) stops the table with a fix |
//! | arrays (`t[]`) | `LIST` of the mapped element type (`t[]`) | one dimension; a multi-dimensional value stops the table with a fix |
//! | anything else (inet, enums, money, geometry, ...) | `VARCHAR` | the server's text form |
//!
//! Every column may also be `VARCHAR` in the target (e.g. altered by hand to hold a NaN numeric
//! or an infinite interval): the sink then writes the spec's text form of each value. Dropped
//! source columns stay in the target and are no longer written.

use cdc_core::{ColumnSchema, ColumnType, PipelineError, TableSchema};

use crate::quote_ident;

/// Columns the sink adds to every target table, by option.
pub const DELETED_COLUMN: &str = "_cdc_deleted";
pub const POSITION_COLUMN: &str = "_cdc_position";
pub const COMMIT_TS_COLUMN: &str = "_cdc_commit_ts";

/// DuckDB's widest decimal.
const MAX_DECIMAL_PRECISION: u32 = 38;

/// What the DuckDB build offers, found out when the database is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The json extension is compiled in (a `JSON` type exists without downloading anything).
    pub json: bool,
}

/// The target type of a column, in `duckdb_columns()` spelling.
pub fn target_type(column: &ColumnSchema, features: Features) -> String {
    type_name(&column.column_type, features)
}

pub fn type_name(t: &ColumnType, features: Features) -> String {
    match t {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int16 => "SMALLINT".into(),
        ColumnType::Int32 => "INTEGER".into(),
        ColumnType::Int64 => "BIGINT".into(),
        ColumnType::UInt64 => "UBIGINT".into(),
        ColumnType::Float32 => "FLOAT".into(),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } if (1..=MAX_DECIMAL_PRECISION).contains(p) && scale.unwrap_or(0) <= *p => {
            format!("DECIMAL({p},{})", scale.unwrap_or(0))
        }
        // Unconstrained or wider than DuckDB's decimals: the exact digits as text.
        ColumnType::Decimal { .. } => "VARCHAR".into(),
        ColumnType::Text { .. } => "VARCHAR".into(),
        ColumnType::Json if features.json => "JSON".into(),
        ColumnType::Json => "VARCHAR".into(),
        ColumnType::Bytes => "BLOB".into(),
        ColumnType::Uuid => "UUID".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
        ColumnType::TimestampTz => "TIMESTAMP WITH TIME ZONE".into(),
        ColumnType::Interval => "INTERVAL".into(),
        ColumnType::Array(inner) => format!("{}[]", type_name(inner, features)),
        ColumnType::Other { .. } => "VARCHAR".into(),
    }
}

pub fn create_table_sql(
    target: &str,
    schema: &TableSchema,
    soft_delete: bool,
    metadata: bool,
    features: Features,
) -> Result<String, PipelineError> {
    if schema.key.is_empty() {
        return Err(PipelineError::definite(
            "schema",
            format!(
                "table {}.{} has no primary key; the duckdb sink applies changes by key",
                schema.schema, schema.table
            ),
        )
        .with_hint("add a primary key to the source table"));
    }
    let mut columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), target_type(c, features)))
        .collect();
    if soft_delete {
        columns.push(format!(
            "{} BOOLEAN NOT NULL DEFAULT false",
            quote_ident(DELETED_COLUMN)
        ));
    }
    if metadata {
        columns.push(format!("{} VARCHAR", quote_ident(POSITION_COLUMN)));
        columns.push(format!(
            "{} TIMESTAMP WITH TIME ZONE",
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

/// The statements that bring an existing target table `schema.(want.table)` with columns `have`
/// (name, type) to the source schema, or a definite error when a change cannot be applied
/// without losing data.
///
/// DuckDB cannot change the type of a primary-key column in place: a widened key (int → bigint)
/// rebuilds the table (create a copy with the new types, copy the rows, drop, rename), all in
/// the sink's open transaction.
pub fn plan_changes(
    schema: &str,
    have: &[(String, String)],
    want: &TableSchema,
    features: Features,
) -> Result<Vec<String>, PipelineError> {
    let target = format!("{}.{}", quote_ident(schema), quote_ident(&want.table));
    let keys: Vec<&str> = want.key_names().collect();
    let mut statements = Vec::new();
    // The table's columns with widened key types, when a key column widens.
    let mut rebuilt: Option<Vec<(String, String)>> = None;
    for column in &want.columns {
        let wanted = target_type(column, features);
        let numeric_text = matches!(column.column_type, ColumnType::Decimal { .. });
        match have.iter().position(|(name, _)| name == &*column.name) {
            None => statements.push(format!(
                "ALTER TABLE {target} ADD COLUMN {} {wanted}",
                quote_ident(&column.name)
            )),
            Some(i) if have[i].1 == wanted => {}
            Some(i) if widens(&have[i].1, &wanted, numeric_text) => {
                if keys.contains(&&*column.name) {
                    rebuilt.get_or_insert_with(|| have.to_vec())[i].1 = wanted;
                } else {
                    statements.push(format!(
                        "ALTER TABLE {target} ALTER COLUMN {} TYPE {wanted}",
                        quote_ident(&column.name)
                    ))
                }
            }
            // The source narrowed the type: every new value still fits the wider target. A
            // VARCHAR target holds the text form of any value but a plain number or boolean
            // (an integer column turned text → integer is a real change, not a widening).
            Some(i)
                if widens(&wanted, &have[i].1, false)
                    || (have[i].1 == "VARCHAR" && text_holds(&column.column_type))
                    || (have[i].1 == "JSON"
                        && wanted == "VARCHAR"
                        && column.column_type == ColumnType::Json) => {}
            Some(i) => {
                return Err(PipelineError::definite(
                    "schema",
                    format!(
                        "column {}.{} changed from {} to {wanted} in the source; the target cannot follow without losing or misreading data",
                        want.table, column.name, have[i].1
                    ),
                )
                .with_hint(format!(
                    "alter {target}.{} by hand to a type that holds both (or drop the target table to have it recreated), then restart: nothing is lost, the pipeline resumes at the change",
                    quote_ident(&column.name)
                )))
            }
        }
    }
    if let Some(columns) = rebuilt {
        let mut plan = rebuild_table(schema, &want.table, &columns, &keys);
        plan.append(&mut statements);
        statements = plan;
    }
    // Columns the source dropped stay in the target (their history is data) and are no longer
    // written; they accept nulls for new rows.
    Ok(statements)
}

/// Recreates `schema.table` with `columns` (name, type) and primary key `keys`, keeping its rows.
fn rebuild_table(
    schema: &str,
    table: &str,
    columns: &[(String, String)],
    keys: &[&str],
) -> Vec<String> {
    let target = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let copy_name = format!("{table}_cdc_rebuild");
    let copy = format!("{}.{}", quote_ident(schema), quote_ident(&copy_name));
    let mut definitions: Vec<String> = columns
        .iter()
        .map(|(name, column_type)| {
            let extra = if name == DELETED_COLUMN {
                " NOT NULL DEFAULT false"
            } else {
                ""
            };
            format!("{} {column_type}{extra}", quote_ident(name))
        })
        .collect();
    let key: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    definitions.push(format!("PRIMARY KEY ({})", key.join(", ")));
    let names: Vec<String> = columns.iter().map(|(n, _)| quote_ident(n)).collect();
    let names = names.join(", ");
    vec![
        format!("CREATE TABLE {copy} ({})", definitions.join(", ")),
        format!("INSERT INTO {copy} ({names}) SELECT {names} FROM {target}"),
        format!("DROP TABLE {target}"),
        format!("ALTER TABLE {copy} RENAME TO {}", quote_ident(table)),
    ]
}

/// Types whose values the sink can write as their text form into a VARCHAR target column.
fn text_holds(t: &ColumnType) -> bool {
    !matches!(
        t,
        ColumnType::Bool
            | ColumnType::Int16
            | ColumnType::Int32
            | ColumnType::Int64
            | ColumnType::UInt64
            | ColumnType::Float32
            | ColumnType::Float64
    )
}

/// Whether `to` holds every value of `from` exactly. `numeric_text`: `to` is the VARCHAR of an
/// unconstrained numeric, which holds any number as its digits.
fn widens(from: &str, to: &str, numeric_text: bool) -> bool {
    if let (Some(f), Some(t)) = (from.strip_suffix("[]"), to.strip_suffix("[]")) {
        return widens(f, t, numeric_text);
    }
    let int_digits = |t: &str| match t {
        "SMALLINT" => Some(5),
        "INTEGER" => Some(10),
        "BIGINT" => Some(19),
        _ => None,
    };
    if let (Some(a), Some(b)) = (int_digits(from), int_digits(to)) {
        return a < b;
    }
    if from == "FLOAT" && to == "DOUBLE" {
        return true;
    }
    if let (Some((p1, s1)), Some((p2, s2))) = (decimal_ps(from), decimal_ps(to)) {
        return s2 >= s1 && p2 - s2 >= p1 - s1 && (p1, s1) != (p2, s2);
    }
    let integer_digits = int_digits(from).or((from == "UBIGINT").then_some(20));
    if let (Some(digits), Some((p, s))) = (integer_digits, decimal_ps(to)) {
        return p - s >= digits;
    }
    // Integers and decimals print their exact digits, as the source sends a numeric's.
    if numeric_text && to == "VARCHAR" {
        return integer_digits.is_some() || decimal_ps(from).is_some();
    }
    false
}

fn decimal_ps(t: &str) -> Option<(i64, i64)> {
    let inner = t.strip_prefix("DECIMAL(")?.strip_suffix(')')?;
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

    fn name(t: ColumnType) -> String {
        type_name(&t, Features::default())
    }

    #[test]
    fn postgres_types_map_to_duckdb_types() {
        let decimal = |p, s| ColumnType::Decimal {
            precision: p,
            scale: s,
        };
        assert_eq!(name(ColumnType::Bool), "BOOLEAN");
        assert_eq!(name(ColumnType::Int16), "SMALLINT");
        assert_eq!(name(ColumnType::Int32), "INTEGER");
        assert_eq!(name(ColumnType::Int64), "BIGINT");
        assert_eq!(name(ColumnType::UInt64), "UBIGINT");
        assert_eq!(name(ColumnType::Float32), "FLOAT");
        assert_eq!(name(ColumnType::Float64), "DOUBLE");
        assert_eq!(name(decimal(Some(12), Some(2))), "DECIMAL(12,2)");
        assert_eq!(name(decimal(Some(38), Some(0))), "DECIMAL(38,0)");
        assert_eq!(name(decimal(Some(10), None)), "DECIMAL(10,0)");
        assert_eq!(name(decimal(Some(39), Some(2))), "VARCHAR");
        assert_eq!(name(decimal(None, None)), "VARCHAR");
        assert_eq!(name(decimal(Some(3), Some(5))), "VARCHAR");
        assert_eq!(name(ColumnType::Text { max_len: Some(20) }), "VARCHAR");
        assert_eq!(name(ColumnType::Json), "VARCHAR");
        assert_eq!(
            type_name(&ColumnType::Json, Features { json: true }),
            "JSON"
        );
        assert_eq!(name(ColumnType::Bytes), "BLOB");
        assert_eq!(name(ColumnType::Uuid), "UUID");
        assert_eq!(name(ColumnType::Date), "DATE");
        assert_eq!(name(ColumnType::Time), "TIME");
        assert_eq!(name(ColumnType::Timestamp), "TIMESTAMP");
        assert_eq!(name(ColumnType::TimestampTz), "TIMESTAMP WITH TIME ZONE");
        assert_eq!(name(ColumnType::Interval), "INTERVAL");
        assert_eq!(
            name(ColumnType::Array(Box::new(ColumnType::Int32))),
            "INTEGER[]"
        );
        assert_eq!(
            name(ColumnType::Array(Box::new(decimal(None, None)))),
            "VARCHAR[]"
        );
        assert_eq!(
            name(ColumnType::Other {
                name: "inet".into(),
                builtin: true
            }),
            "VARCHAR"
        );
    }

    #[test]
    fn added_columns_and_widened_types_are_planned_narrowing_is_refused() {
        let have = vec![
            ("id".to_string(), "INTEGER".to_string()),
            ("v".to_string(), "DECIMAL(10,2)".to_string()),
            ("f".to_string(), "FLOAT".to_string()),
            ("n".to_string(), "DECIMAL(10,2)".to_string()),
            ("l".to_string(), "SMALLINT[]".to_string()),
        ];
        let want = table(&[
            ("id", ColumnType::Int64),
            (
                "v",
                ColumnType::Decimal {
                    precision: Some(12),
                    scale: Some(2),
                },
            ),
            ("f", ColumnType::Float64),
            (
                "n",
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
            ),
            ("l", ColumnType::Array(Box::new(ColumnType::Int32))),
            ("w", ColumnType::Json),
        ]);
        let plan = plan_changes("s", &have, &want, Features::default()).unwrap();
        assert_eq!(
            plan,
            [
                // A key column cannot change type in place: the table is rebuilt.
                "CREATE TABLE \"s\".\"t_cdc_rebuild\" (\"id\" BIGINT, \"v\" DECIMAL(10,2), \"f\" FLOAT, \"n\" DECIMAL(10,2), \"l\" SMALLINT[], PRIMARY KEY (\"id\"))",
                "INSERT INTO \"s\".\"t_cdc_rebuild\" (\"id\", \"v\", \"f\", \"n\", \"l\") SELECT \"id\", \"v\", \"f\", \"n\", \"l\" FROM \"s\".\"t\"",
                "DROP TABLE \"s\".\"t\"",
                "ALTER TABLE \"s\".\"t_cdc_rebuild\" RENAME TO \"t\"",
                "ALTER TABLE \"s\".\"t\" ALTER COLUMN \"v\" TYPE DECIMAL(12,2)",
                "ALTER TABLE \"s\".\"t\" ALTER COLUMN \"f\" TYPE DOUBLE",
                "ALTER TABLE \"s\".\"t\" ALTER COLUMN \"n\" TYPE VARCHAR",
                "ALTER TABLE \"s\".\"t\" ALTER COLUMN \"l\" TYPE INTEGER[]",
                "ALTER TABLE \"s\".\"t\" ADD COLUMN \"w\" VARCHAR",
            ]
        );

        // text -> integer cannot be followed; a hand-made VARCHAR holding a decimal can.
        let have = vec![
            ("id".to_string(), "INTEGER".to_string()),
            ("code".to_string(), "VARCHAR".to_string()),
        ];
        let err = plan_changes(
            "s",
            &have,
            &table(&[("id", ColumnType::Int32), ("code", ColumnType::Int32)]),
            Features::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("changed from VARCHAR to INTEGER") && err.hint.is_some(),
            "{err}"
        );
        let decimal_in_text = table(&[
            ("id", ColumnType::Int16),
            (
                "code",
                ColumnType::Decimal {
                    precision: Some(5),
                    scale: Some(1),
                },
            ),
        ]);
        assert!(
            plan_changes("t", &have, &decimal_in_text, Features::default())
                .unwrap()
                .is_empty()
        );

        assert!(widens("DECIMAL(10,2)", "DECIMAL(12,2)", false));
        assert!(!widens("DECIMAL(10,2)", "DECIMAL(10,3)", false));
        assert!(widens("INTEGER", "DECIMAL(12,2)", false));
        assert!(!widens("BIGINT", "DECIMAL(12,2)", false));
        assert!(!widens("BIGINT", "UBIGINT", false));
        assert!(!widens("INTEGER", "VARCHAR", false));
    }

    #[test]
    fn a_table_without_a_key_is_refused() {
        let mut t = table(&[("id", ColumnType::Int32)]);
        t.key.clear();
        assert!(create_table_sql("t", &t, false, false, Features::default()).is_err());
        t.key.push(0);
        assert_eq!(
            create_table_sql("t", &t, true, true, Features::default()).unwrap(),
            "CREATE TABLE IF NOT EXISTS t (\"id\" INTEGER, \"_cdc_deleted\" BOOLEAN NOT NULL DEFAULT false, \"_cdc_position\" VARCHAR, \"_cdc_commit_ts\" TIMESTAMP WITH TIME ZONE, PRIMARY KEY (\"id\"))"
        );
    }
}
