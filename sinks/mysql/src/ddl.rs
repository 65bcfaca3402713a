//! Target tables: type mapping, creation, and applying the source's schema changes safely.
//!
//! ```text
//!  TableSchema ─▶ target_type per column ─▶ CREATE TABLE (new table)
//!                                        └▶ plan_changes vs information_schema.COLUMNS
//!                                             ─▶ ADD COLUMN / MODIFY (widen) / definite error
//! ```
//!
//! Types are spelled in one canonical form (upper case, no integer display widths), and what
//! `information_schema.COLUMNS.COLUMN_TYPE` reports is normalized to it ([`normalize_type`]), so
//! the columns a target table has can be compared with the columns it should have, string for
//! string, on MySQL 5.7, 8.x and MariaDB alike.
//!
//! ## Type mapping (source → MySQL/MariaDB)
//!
//! | source (`ColumnType`)            | MySQL / MariaDB column                        | value written |
//! | -------------------------------- | --------------------------------------------- | ------------- |
//! | `Bool`                           | `TINYINT(1)` (`BOOLEAN`)                      | 1 / 0 |
//! | `Int16`                          | `SMALLINT`                                    | |
//! | `Int32`                          | `INT`                                         | |
//! | `Int64`                          | `BIGINT`                                      | |
//! | `UInt64`                         | `BIGINT UNSIGNED`                             | |
//! | `Float32`                        | `FLOAT`                                       | NaN/±Infinity: error (MySQL has none) |
//! | `Float64`                        | `DOUBLE`                                      | NaN/±Infinity: error |
//! | `Decimal(p,s)`                   | `DECIMAL(p,s)` (p ≤ 65, s ≤ 30)               | digits as text; NaN/±Infinity: error |
//! | `Decimal` unconstrained          | `DECIMAL(65,30)`                              | more than 30 fractional digits are rounded by the server |
//! | `Text{n}`                        | `VARCHAR(n)` (n > 16383: `LONGTEXT`)          | |
//! | `Text` unbounded                 | `LONGTEXT`                                    | |
//! | `Json`                           | `JSON` (MariaDB: `LONGTEXT` + `json_valid`)   | the document's text |
//! | `Bytes`                          | `LONGBLOB`                                    | the raw bytes (no base64) |
//! | `Uuid`                           | `CHAR(36)`                                    | `xxxxxxxx-xxxx-...` |
//! | `Date`                           | `DATE`                                        | infinity and BC dates: error |
//! | `Time`                           | `TIME(6)`                                     | |
//! | `Timestamp`                      | `DATETIME(6)`                                 | `2026-11-26 13:45:00.123456` |
//! | `TimestampTz`                    | `DATETIME(6)`, holding **UTC**                | the UTC value without `Z` |
//! | `Interval`                       | `VARCHAR(64)`                                 | ISO-8601 text (`P1Y2M3DT4H5M6.5S`) |
//! | `Array`                          | `JSON`                                        | a JSON array |
//! | `Other` (inet, enums, ...)       | `LONGTEXT`                                    | the source's text |
//!
//! Primary-key columns cannot be unbounded (`TEXT`/`BLOB`/`JSON` cannot be indexed whole): an
//! unbounded text-like key column becomes `VARCHAR(255)`, a `Bytes` key `VARBINARY(255)`, and a
//! `VARCHAR(n)` key is capped at 768 characters (InnoDB's 3072-byte index limit in utf8mb4). A
//! longer key value is a definite error naming the column. Text columns use a binary, no-pad
//! collation (`utf8mb4_0900_bin` on MySQL 8, `utf8mb4_nopad_bin` on MariaDB, else `utf8mb4_bin`)
//! so that keys compare byte for byte, as in the source: `'a'`, `'A'` and `'a '` stay distinct.
//! When `VARCHAR` columns would pass MySQL's 65,535-byte row limit, the widest non-key ones
//! become `LONGTEXT` instead.
//!
//! Schema changes: an added column is added; a dropped column stays (its history is data) and
//! is no longer written; a widening (`INT`→`BIGINT`, `VARCHAR(n)`→`VARCHAR(m>n)`, a wider
//! `DECIMAL`, `FLOAT`→`DOUBLE`, text → `LONGTEXT`) is an `ALTER TABLE .. MODIFY`; anything else
//! stops the pipeline with a definite error and a one-line fix.

use cdc_core::{ColumnSchema, ColumnType, PipelineError, TableSchema};

use crate::quote_ident;

/// Columns the sink adds to every target table, by option.
pub const DELETED_COLUMN: &str = "_cdc_deleted";
pub const POSITION_COLUMN: &str = "_cdc_position";
pub const COMMIT_TS_COLUMN: &str = "_cdc_commit_ts";

/// The longest `VARCHAR` in utf8mb4 (65,535 bytes / 4).
const MAX_VARCHAR: u32 = 16_383;
/// The longest `VARCHAR` primary-key column (InnoDB's 3072-byte key limit / 4 bytes a char).
const MAX_KEY_VARCHAR: u32 = 768;
/// What an unbounded text-like key column becomes.
const KEY_VARCHAR: u32 = 255;
/// MySQL's row size limit (bytes), less a margin for the metadata columns and row overhead.
const ROW_BYTES: u64 = 65_535 - 512;

/// The target type of a column in canonical spelling; `key`: the column is part of the
/// primary key.
pub fn target_type(column: &ColumnSchema, key: bool) -> String {
    let t = type_name(&column.column_type);
    if key {
        key_type(t)
    } else {
        t
    }
}

fn type_name(t: &ColumnType) -> String {
    match t {
        ColumnType::Bool => "TINYINT(1)".into(),
        ColumnType::Int16 => "SMALLINT".into(),
        ColumnType::Int32 => "INT".into(),
        ColumnType::Int64 => "BIGINT".into(),
        ColumnType::UInt64 => "BIGINT UNSIGNED".into(),
        ColumnType::Float32 => "FLOAT".into(),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } => {
            let s = scale.unwrap_or(0).min(30);
            let p = (*p).max(s).clamp(1, 65);
            format!("DECIMAL({p},{s})")
        }
        ColumnType::Decimal {
            precision: None, ..
        } => "DECIMAL(65,30)".into(),
        ColumnType::Text { max_len: Some(n) } if *n >= 1 && *n <= MAX_VARCHAR => {
            format!("VARCHAR({n})")
        }
        ColumnType::Text { .. } => "LONGTEXT".into(),
        ColumnType::Json => "JSON".into(),
        ColumnType::Bytes => "LONGBLOB".into(),
        ColumnType::Uuid => "CHAR(36)".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME(6)".into(),
        ColumnType::Timestamp | ColumnType::TimestampTz => "DATETIME(6)".into(),
        ColumnType::Interval => "VARCHAR(64)".into(),
        ColumnType::Array(_) => "JSON".into(),
        ColumnType::Other { .. } => "LONGTEXT".into(),
    }
}

/// A key column's type: indexable, and short enough for InnoDB's key limit.
fn key_type(t: String) -> String {
    match t.as_str() {
        "LONGTEXT" | "JSON" => format!("VARCHAR({KEY_VARCHAR})"),
        "LONGBLOB" => format!("VARBINARY({KEY_VARCHAR})"),
        _ => match varchar_len(&t) {
            Some(n) if n > MAX_KEY_VARCHAR => format!("VARCHAR({MAX_KEY_VARCHAR})"),
            _ => t,
        },
    }
}

/// Bytes a column of type `t` takes of MySQL's 65,535-byte row limit (utf8mb4).
fn row_bytes(t: &str) -> u64 {
    if let Some(n) = varchar_len(t) {
        return 4 * n as u64 + 2;
    }
    if let Some(n) = t
        .strip_prefix("VARBINARY(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse::<u64>().ok())
    {
        return n + 2;
    }
    if t == "CHAR(36)" {
        return 144;
    }
    if let Some((p, _)) = decimal_ps(t) {
        return (p as u64 / 2) + 1;
    }
    // Integers, floats, temporal types: at most 8; LONGTEXT/BLOB/JSON: a 12-byte pointer.
    12
}

/// The target type of every column of `schema`, with wide `VARCHAR`s turned into `LONGTEXT`
/// where they would pass the row size limit.
pub fn target_types(schema: &TableSchema) -> Vec<String> {
    let mut types: Vec<String> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| target_type(c, schema.key.contains(&i)))
        .collect();
    let mut total: u64 = types.iter().map(|t| row_bytes(t)).sum();
    while total > ROW_BYTES {
        // The widest non-key VARCHAR goes off-row.
        let widest = types
            .iter()
            .enumerate()
            .filter(|(i, t)| !schema.key.contains(i) && varchar_len(t).is_some())
            .max_by_key(|(_, t)| row_bytes(t))
            .map(|(i, _)| i);
        let Some(i) = widest else { break };
        total -= row_bytes(&types[i]);
        types[i] = "LONGTEXT".into();
        total += row_bytes(&types[i]);
    }
    types
}

/// `CREATE TABLE` for a new target table (`target`: quoted `db`.`table`).
pub fn create_table_sql(
    target: &str,
    schema: &TableSchema,
    soft_delete: bool,
    metadata: bool,
    collation: &str,
) -> Result<String, PipelineError> {
    if schema.key.is_empty() {
        return Err(PipelineError::definite(
            "schema",
            format!(
                "table {}.{} has no primary key; the mysql sink applies changes by key",
                schema.schema, schema.table
            ),
        )
        .with_hint("add a primary key to the source table"));
    }
    let types = target_types(schema);
    let mut columns: Vec<String> = schema
        .columns
        .iter()
        .zip(&types)
        .enumerate()
        .map(|(i, (c, t))| {
            let not_null = if schema.key.contains(&i) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {t}{not_null}", quote_ident(&c.name))
        })
        .collect();
    if soft_delete {
        columns.push(format!(
            "{} TINYINT(1) NOT NULL DEFAULT 0",
            quote_ident(DELETED_COLUMN)
        ));
    }
    if metadata {
        columns.push(format!("{} TEXT", quote_ident(POSITION_COLUMN)));
        columns.push(format!("{} DATETIME(6)", quote_ident(COMMIT_TS_COLUMN)));
    }
    let key: Vec<String> = schema.key_names().map(quote_ident).collect();
    columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {target} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
        columns.join(", ")
    ))
}

/// The statements that bring an existing target table's columns (`have`: name, canonical type)
/// to the source schema, or a definite error when a change cannot be applied without losing
/// data.
pub fn plan_changes(
    target: &str,
    have: &[(String, String)],
    want: &TableSchema,
) -> Result<Vec<String>, PipelineError> {
    let mut statements = Vec::new();
    let mut row_total: u64 = have.iter().map(|(_, t)| row_bytes(t)).sum();
    for (i, column) in want.columns.iter().enumerate() {
        let key = want.key.contains(&i);
        let mut wanted = target_type(column, key);
        let not_null = if key { " NOT NULL" } else { "" };
        let name = quote_ident(&column.name);
        match have
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&column.name))
        {
            None => {
                if varchar_len(&wanted).is_some() && row_total + row_bytes(&wanted) > ROW_BYTES {
                    wanted = "LONGTEXT".into();
                }
                row_total += row_bytes(&wanted);
                statements.push(format!("ALTER TABLE {target} ADD COLUMN {name} {wanted}"));
            }
            Some((_, existing)) if same_type(existing, &wanted) => {}
            Some((_, existing)) if widens(existing, &wanted) => statements.push(format!(
                "ALTER TABLE {target} MODIFY COLUMN {name} {wanted}{not_null}"
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
                    "alter {target}.{name} by hand to a type that holds both (or drop the target table to have it recreated), then restart: nothing is lost, the pipeline resumes at the change"
                )))
            }
        }
    }
    // Columns the source dropped stay in the target (their history is data) and are no longer
    // written; they accept NULL for new rows.
    Ok(statements)
}

/// Normalizes `information_schema.COLUMNS.COLUMN_TYPE` to the canonical spelling: upper case,
/// integer display widths dropped (`int(11)` → `INT`), `tinyint(1)` kept (it is `BOOLEAN`).
pub fn normalize_type(column_type: &str) -> String {
    let t = column_type.trim().to_ascii_uppercase();
    let t = t.replace(" ZEROFILL", "");
    for int in ["SMALLINT", "MEDIUMINT", "INT", "BIGINT", "TINYINT"] {
        if let Some(rest) = t.strip_prefix(int) {
            if let Some(after) = rest.strip_prefix('(') {
                if let Some(close) = after.find(')') {
                    let width = &after[..close];
                    if int == "TINYINT" && width == "1" {
                        return t;
                    }
                    return format!("{int}{}", &after[close + 1..]);
                }
            }
        }
    }
    t
}

/// Whether a target column of type `have` already is `want`. MariaDB reports its `JSON` as
/// `LONGTEXT` (with a `json_valid` check), so those two are the same there.
fn same_type(have: &str, want: &str) -> bool {
    have == want || (have == "LONGTEXT" && want == "JSON")
}

/// Whether `to` holds every value of `from` exactly.
fn widens(from: &str, to: &str) -> bool {
    let int_digits = |t: &str| match t {
        "TINYINT" => Some(3),
        "SMALLINT" => Some(5),
        "MEDIUMINT" => Some(7),
        "INT" => Some(10),
        "BIGINT" => Some(19),
        _ => None,
    };
    if let (Some(a), Some(b)) = (int_digits(from), int_digits(to)) {
        return a < b;
    }
    if let (Some(a), Some((p, s))) = (
        int_digits(from).or((from == "BIGINT UNSIGNED").then_some(20)),
        decimal_ps(to),
    ) {
        return p - s >= a;
    }
    if let (Some((p1, s1)), Some((p2, s2))) = (decimal_ps(from), decimal_ps(to)) {
        return s2 >= s1 && p2 - s2 >= p1 - s1 && (p1, s1) != (p2, s2);
    }
    if from == "FLOAT" && to == "DOUBLE" {
        return true;
    }
    let text_rank = |t: &str| match t {
        "TINYTEXT" => Some(255),
        "TEXT" => Some(65_535),
        "MEDIUMTEXT" => Some(16_777_215),
        "LONGTEXT" | "JSON" => Some(u32::MAX),
        _ => varchar_len(t).or_else(|| char_len(t)),
    };
    if let (Some(a), Some(b)) = (text_rank(from), text_rank(to)) {
        // JSON only holds JSON: nothing widens into it.
        return a < b && to != "JSON" || (from == "JSON" && to == "LONGTEXT");
    }
    let blob_rank = |t: &str| match t {
        "TINYBLOB" => Some(255),
        "BLOB" => Some(65_535),
        "MEDIUMBLOB" => Some(16_777_215),
        "LONGBLOB" => Some(u32::MAX),
        _ => t
            .strip_prefix("VARBINARY(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse().ok()),
    };
    if let (Some(a), Some(b)) = (blob_rank(from), blob_rank(to)) {
        return a < b;
    }
    let fraction = |t: &str, base: &str| {
        t.strip_prefix(base).map(|r| {
            r.strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        })
    };
    for base in ["TIME", "DATETIME"] {
        if let (Some(a), Some(b)) = (fraction(from, base), fraction(to, base)) {
            return a < b;
        }
    }
    false
}

fn varchar_len(t: &str) -> Option<u32> {
    t.strip_prefix("VARCHAR(")?.strip_suffix(')')?.parse().ok()
}

fn char_len(t: &str) -> Option<u32> {
    t.strip_prefix("CHAR(")?.strip_suffix(')')?.parse().ok()
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

    fn ty(t: ColumnType) -> String {
        type_name(&t)
    }

    #[test]
    fn every_source_type_has_a_mysql_type() {
        let dec = |p, s| ColumnType::Decimal {
            precision: p,
            scale: s,
        };
        assert_eq!(ty(ColumnType::Bool), "TINYINT(1)");
        assert_eq!(ty(ColumnType::Int16), "SMALLINT");
        assert_eq!(ty(ColumnType::Int32), "INT");
        assert_eq!(ty(ColumnType::Int64), "BIGINT");
        assert_eq!(ty(ColumnType::UInt64), "BIGINT UNSIGNED");
        assert_eq!(ty(ColumnType::Float32), "FLOAT");
        assert_eq!(ty(ColumnType::Float64), "DOUBLE");
        assert_eq!(ty(dec(Some(12), Some(2))), "DECIMAL(12,2)");
        assert_eq!(ty(dec(Some(10), None)), "DECIMAL(10,0)");
        assert_eq!(ty(dec(None, None)), "DECIMAL(65,30)");
        assert_eq!(ty(dec(Some(100), Some(40))), "DECIMAL(65,30)");
        assert_eq!(ty(dec(Some(3), Some(5))), "DECIMAL(5,5)");
        assert_eq!(ty(ColumnType::Text { max_len: Some(20) }), "VARCHAR(20)");
        assert_eq!(ty(ColumnType::Text { max_len: None }), "LONGTEXT");
        assert_eq!(
            ty(ColumnType::Text {
                max_len: Some(100_000)
            }),
            "LONGTEXT"
        );
        assert_eq!(ty(ColumnType::Json), "JSON");
        assert_eq!(ty(ColumnType::Bytes), "LONGBLOB");
        assert_eq!(ty(ColumnType::Uuid), "CHAR(36)");
        assert_eq!(ty(ColumnType::Date), "DATE");
        assert_eq!(ty(ColumnType::Time), "TIME(6)");
        assert_eq!(ty(ColumnType::Timestamp), "DATETIME(6)");
        assert_eq!(ty(ColumnType::TimestampTz), "DATETIME(6)");
        assert_eq!(ty(ColumnType::Interval), "VARCHAR(64)");
        assert_eq!(ty(ColumnType::Array(Box::new(ColumnType::Int32))), "JSON");
        assert_eq!(
            ty(ColumnType::Other {
                name: "inet".into(),
                builtin: true
            }),
            "LONGTEXT"
        );
    }

    #[test]
    fn key_columns_are_indexable() {
        let t = TableSchema {
            key: vec![0, 1, 2],
            ..table(&[
                ("a", ColumnType::Text { max_len: None }),
                ("b", ColumnType::Bytes),
                (
                    "c",
                    ColumnType::Text {
                        max_len: Some(5000),
                    },
                ),
                ("d", ColumnType::Text { max_len: None }),
            ])
        };
        assert_eq!(
            target_types(&t),
            ["VARCHAR(255)", "VARBINARY(255)", "VARCHAR(768)", "LONGTEXT"]
        );
        let sql = create_table_sql("`db`.`t`", &t, true, true, "utf8mb4_bin").unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS `db`.`t` (`a` VARCHAR(255) NOT NULL, `b` VARBINARY(255) NOT NULL, \
             `c` VARCHAR(768) NOT NULL, `d` LONGTEXT, `_cdc_deleted` TINYINT(1) NOT NULL DEFAULT 0, \
             `_cdc_position` TEXT, `_cdc_commit_ts` DATETIME(6), PRIMARY KEY (`a`, `b`, `c`)) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
        let no_key = TableSchema {
            key: vec![],
            ..table(&[("a", ColumnType::Int32)])
        };
        assert!(create_table_sql("t", &no_key, false, false, "utf8mb4_bin").is_err());
    }

    #[test]
    fn wide_varchars_go_off_row() {
        let t = table(&[
            ("id", ColumnType::Int64),
            (
                "a",
                ColumnType::Text {
                    max_len: Some(9000),
                },
            ),
            (
                "b",
                ColumnType::Text {
                    max_len: Some(8000),
                },
            ),
            ("c", ColumnType::Text { max_len: Some(100) }),
        ]);
        assert_eq!(
            target_types(&t),
            ["BIGINT", "LONGTEXT", "VARCHAR(8000)", "VARCHAR(100)"]
        );
    }

    #[test]
    fn reported_column_types_are_normalized() {
        assert_eq!(normalize_type("int(11)"), "INT");
        assert_eq!(normalize_type("bigint(20) unsigned"), "BIGINT UNSIGNED");
        assert_eq!(normalize_type("bigint unsigned"), "BIGINT UNSIGNED");
        assert_eq!(normalize_type("tinyint(1)"), "TINYINT(1)");
        assert_eq!(normalize_type("tinyint(4)"), "TINYINT");
        assert_eq!(normalize_type("smallint(6)"), "SMALLINT");
        assert_eq!(normalize_type("decimal(12,2)"), "DECIMAL(12,2)");
        assert_eq!(normalize_type("varchar(20)"), "VARCHAR(20)");
        assert_eq!(normalize_type("datetime(6)"), "DATETIME(6)");
        assert_eq!(normalize_type("longtext"), "LONGTEXT");
    }

    #[test]
    fn added_columns_and_widened_types_are_planned_narrowing_is_refused() {
        let have = vec![
            ("id".to_string(), "INT".to_string()),
            ("v".to_string(), "VARCHAR(10)".to_string()),
            ("d".to_string(), "DECIMAL(10,2)".to_string()),
            ("j".to_string(), "LONGTEXT".to_string()),
            ("gone".to_string(), "INT".to_string()),
        ];
        let want = table(&[
            ("id", ColumnType::Int64),
            ("v", ColumnType::Text { max_len: Some(20) }),
            (
                "d",
                ColumnType::Decimal {
                    precision: Some(12),
                    scale: Some(2),
                },
            ),
            ("j", ColumnType::Json),
            ("w", ColumnType::Json),
        ]);
        let plan = plan_changes("t", &have, &want).unwrap();
        assert_eq!(
            plan,
            [
                "ALTER TABLE t MODIFY COLUMN `id` BIGINT NOT NULL",
                "ALTER TABLE t MODIFY COLUMN `v` VARCHAR(20)",
                "ALTER TABLE t MODIFY COLUMN `d` DECIMAL(12,2)",
                "ALTER TABLE t ADD COLUMN `w` JSON",
            ]
        );
        // Narrowed in the source: the wider target still holds every value.
        let narrowed = table(&[
            ("id", ColumnType::Int16),
            ("v", ColumnType::Text { max_len: Some(5) }),
        ]);
        assert!(plan_changes("t", &have, &narrowed).unwrap().is_empty());
        let incompatible = table(&[("id", ColumnType::Int32), ("v", ColumnType::Int32)]);
        let err = plan_changes("t", &have, &incompatible).unwrap_err();
        assert!(
            err.to_string().contains("changed from VARCHAR(10) to INT")
                && err.to_string().contains("fix:"),
            "{err}"
        );
    }

    #[test]
    fn widening_rules() {
        assert!(widens("INT", "BIGINT"));
        assert!(!widens("BIGINT", "INT"));
        assert!(widens("BIGINT", "DECIMAL(20,0)"));
        assert!(!widens("BIGINT", "DECIMAL(20,2)"));
        assert!(widens("DECIMAL(10,2)", "DECIMAL(12,2)"));
        assert!(!widens("DECIMAL(10,2)", "DECIMAL(10,3)"));
        assert!(widens("DECIMAL(10,2)", "DECIMAL(65,30)"));
        assert!(widens("VARCHAR(10)", "LONGTEXT"));
        assert!(widens("CHAR(36)", "VARCHAR(255)"));
        assert!(widens("JSON", "LONGTEXT"));
        assert!(!widens("LONGTEXT", "JSON"));
        assert!(widens("FLOAT", "DOUBLE"));
        assert!(widens("VARBINARY(255)", "LONGBLOB"));
        assert!(!widens("DATE", "DATETIME(6)"));
        assert!(!widens("VARCHAR(10)", "INT"));
    }
}
