//! What a compared column holds, and so how each database writes its normalized text.
//!
//! A column's [`Kind`] comes from the *source* column (the target's type was mapped from it by
//! the sink); each side then writes the kind's normalized text with SQL of its own dialect
//! (`postgres.rs`, `mysql.rs`, `duckdb.rs`), sometimes looking at its own column's type too
//! (a Postgres `character(n)` keeps its padding, MariaDB's JSON is `LONGTEXT`, ...). The
//! normalization per type pair is documented in the README ("verify").

use serde::Serialize;

/// The database family of one side: the SQL dialect, and whether two sides print values the
/// same way natively (same family) or must meet in a canonical form (across families).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Postgres,
    Mysql,
    Duckdb,
}

/// How one side's SQL must write values so that they meet the other side's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub source: Family,
    pub target: Family,
    /// Both sides hash rows by their values' own hash functions (Postgres 14 or later on both):
    /// no text is made (see `postgres.rs`).
    pub record_hash: bool,
}

impl Pair {
    /// Both sides print values the same way natively (floats, JSON).
    pub fn same_family(&self) -> bool {
        self.source == self.target
    }
}

/// What a column holds, as far as normalization cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// Integers of every width, signed or not (MySQL YEAR too).
    Int,
    /// real/double/FLOAT/DOUBLE: compared as doubles.
    Float,
    /// numeric/DECIMAL: the digits, trailing fractional zeros trimmed.
    Decimal,
    /// Text of every kind (varchar, text, enum, and types kept as their text form by the sink).
    Text,
    Json,
    Bytes,
    Uuid,
    Date,
    Time,
    Timestamp,
    /// An instant: compared in UTC.
    TimestampTz,
    Interval,
    Array(Box<Kind>),
    /// MySQL SET: its members joined by commas.
    Set,
    /// A type without a portable twin (inet, money, ...): its text form.
    Other,
}

impl Kind {
    /// Normalized text of this kind can hold any character, so it is length-prefixed in the
    /// row text (the other kinds' text never holds the separator).
    pub fn free_text(&self) -> bool {
        matches!(
            self,
            Kind::Text
                | Kind::Json
                | Kind::Interval
                | Kind::Array(_)
                | Kind::Set
                | Kind::Other
                | Kind::Uuid
        )
    }

    /// Key columns of this kind order the same way in every database (bytewise for text), so
    /// key ranges select the same rows on both sides.
    pub fn orderable_key(&self) -> bool {
        matches!(
            self,
            Kind::Bool
                | Kind::Int
                | Kind::Decimal
                | Kind::Text
                | Kind::Uuid
                | Kind::Bytes
                | Kind::Date
                | Kind::Time
                | Kind::Timestamp
                | Kind::TimestampTz
        )
    }

    /// The kind of a Postgres column from its type (`typname` of the base type, `typtype`,
    /// `typcategory`; for arrays the element's).
    pub fn of_postgres(typname: &str, typtype: &str, element: Option<&str>) -> Kind {
        if let Some(element) = element {
            return Kind::Array(Box::new(Kind::of_postgres(element, "b", None)));
        }
        if typtype == "e" {
            return Kind::Text;
        }
        match typname {
            "bool" => Kind::Bool,
            "int2" | "int4" | "int8" | "oid" => Kind::Int,
            "float4" | "float8" => Kind::Float,
            "numeric" => Kind::Decimal,
            "text" | "varchar" | "bpchar" | "name" | "char" | "citext" => Kind::Text,
            "json" | "jsonb" => Kind::Json,
            "bytea" => Kind::Bytes,
            "uuid" => Kind::Uuid,
            "date" => Kind::Date,
            "time" => Kind::Time,
            "timestamp" => Kind::Timestamp,
            "timestamptz" => Kind::TimestampTz,
            "interval" => Kind::Interval,
            _ => Kind::Other,
        }
    }

    /// The kind of a MySQL/MariaDB column (`DATA_TYPE`, lower case; `json`: MySQL's JSON or
    /// MariaDB's `LONGTEXT` checked by `json_valid`).
    pub fn of_mysql(data_type: &str, json: bool) -> Kind {
        if json {
            return Kind::Json;
        }
        match data_type {
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "year" => Kind::Int,
            "float" | "double" | "real" => Kind::Float,
            "decimal" | "numeric" => Kind::Decimal,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" => {
                Kind::Text
            }
            "set" => Kind::Set,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit" => {
                Kind::Bytes
            }
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" | "geomcollection" => Kind::Bytes,
            "date" => Kind::Date,
            "time" => Kind::Time,
            "datetime" => Kind::Timestamp,
            "timestamp" => Kind::TimestampTz,
            _ => Kind::Other,
        }
    }
}

/// One compared column: its name (the same on both sides) and kind.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_source_types() {
        assert_eq!(Kind::of_postgres("int8", "b", None), Kind::Int);
        assert_eq!(Kind::of_postgres("mood", "e", None), Kind::Text);
        assert_eq!(
            Kind::of_postgres("_text", "b", Some("text")),
            Kind::Array(Box::new(Kind::Text))
        );
        assert_eq!(Kind::of_postgres("inet", "b", None), Kind::Other);
        assert_eq!(Kind::of_mysql("longtext", true), Kind::Json);
        assert_eq!(Kind::of_mysql("timestamp", false), Kind::TimestampTz);
        assert_eq!(Kind::of_mysql("year", false), Kind::Int);
        assert!(Kind::Text.free_text() && !Kind::Int.free_text());
        assert!(!Kind::Float.orderable_key());
    }
}
