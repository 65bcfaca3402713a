//! Options every warehouse sink (postgres, mysql, duckdb) shares, as the config spells them.

use serde::Deserialize;

/// What a source delete does to the target row.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Delete the target row.
    #[default]
    Hard,
    /// Keep it, with `_cdc_deleted` set.
    Soft,
}

/// What a source TRUNCATE does to the target table.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TruncateMode {
    #[default]
    Propagate,
    Ignore,
}
