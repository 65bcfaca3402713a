//! `[[table]]` sections: per-table column filters and masks (see docs/configuration.md).
//!
//! ```toml
//! [agent]
//! mask_key = "${file:/run/secrets/cdc_mask_key}"   # the HMAC key of `hash`
//!
//! [[table]]
//! match = "public.users"                  # schema.table, `*` wildcards allowed
//! exclude_columns = ["password_hash"]     # or columns = ["id", "email", ...]: only these
//! mask = { email = "hash", ssn = "redact", notes = "null", bio = "truncate:20" }
//! ```
//!
//! What can be checked without the source is checked here (exit 2, the key named); what needs
//! the table's columns (a mask on a missing column, truncate on a number, a key column left out)
//! stops the pipeline when the table's first change arrives.

use std::collections::BTreeMap;

use cdc_core::columns::{Mask, Selection, TableRule};
use serde::Deserialize;

use super::{Config, EnvString};

/// A key shorter than this is too easy to guess, and with it every hashed value.
pub const MIN_MASK_KEY_BYTES: usize = 16;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSection {
    /// `schema.table`, `*` wildcards allowed.
    #[serde(rename = "match")]
    pub pattern: EnvString,
    /// Only these columns are replicated.
    pub columns: Option<Vec<String>>,
    /// All columns but these are replicated.
    pub exclude_columns: Option<Vec<String>>,
    /// Column name to `hash`, `redact`, `null` or `truncate:N`.
    #[serde(default)]
    pub mask: BTreeMap<String, String>,
}

/// The rules of the `[[table]]` sections; an error is `(key, what is wrong)`.
pub fn table_rules(config: &Config) -> Result<Vec<TableRule>, (String, String)> {
    let mut rules = Vec::with_capacity(config.tables.len());
    let mut needs_key = None;
    for (i, section) in config.tables.iter().enumerate() {
        let at = |key: &str| format!("table[{i}].{key}");
        let pattern = section.pattern.0.clone();
        if pattern.split('.').count() != 2 || pattern.split('.').any(str::is_empty) {
            return Err((
                at("match"),
                format!("`{pattern}` must be `schema.table` (`*` wildcards allowed)"),
            ));
        }
        if let Some(other) = rules.iter().find(|r: &&TableRule| r.pattern == pattern) {
            return Err((
                at("match"),
                format!(
                    "`{}` is matched by an earlier [[table]] section too; write one section per table",
                    other.pattern
                ),
            ));
        }
        let selection = match (&section.columns, &section.exclude_columns) {
            (Some(_), Some(_)) => {
                return Err((
                    at("columns / exclude_columns"),
                    "are exclusive: list the columns to keep, or the ones to leave out".into(),
                ))
            }
            (Some(columns), None) if columns.is_empty() => return Err((
                at("columns"),
                "is empty: list at least the key columns (or remove the table from source.tables)"
                    .into(),
            )),
            (Some(columns), None) => Selection::Only(columns.clone()),
            (None, Some(columns)) => Selection::Except(columns.clone()),
            (None, None) => Selection::All,
        };
        let mut masks = Vec::with_capacity(section.mask.len());
        for (column, text) in &section.mask {
            let mask = Mask::parse(text).map_err(|e| (at(&format!("mask.{column}")), e))?;
            let rule_so_far = TableRule {
                pattern: pattern.clone(),
                selection: selection.clone(),
                masks: Vec::new(),
            };
            if !rule_so_far.keeps(column) {
                return Err((
                    at(&format!("mask.{column}")),
                    "masks a column the section leaves out (`columns` / `exclude_columns`): mask it or leave it out, not both".into(),
                ));
            }
            if mask == Mask::Hash && needs_key.is_none() {
                needs_key = Some(at(&format!("mask.{column}")));
            }
            masks.push((column.clone(), mask));
        }
        if selection == Selection::All && masks.is_empty() {
            return Err((
                "table".into(),
                format!("[{i}] (`{pattern}`) has neither `columns`, `exclude_columns` nor `mask`"),
            ));
        }
        rules.push(TableRule {
            pattern,
            selection,
            masks,
        });
    }
    match (&config.agent.mask_key, needs_key) {
        (None, Some(key)) => Err((
            key,
            "= \"hash\" needs `agent.mask_key`, the secret key of the HMAC (e.g. mask_key = \"${CDC_MASK_KEY}\")".into(),
        )),
        (Some(secret), _) if secret.expose().len() < MIN_MASK_KEY_BYTES => Err((
            "agent.mask_key".into(),
            format!("must be at least {MIN_MASK_KEY_BYTES} bytes (a short key lets anyone who guesses it reverse the hashes of low-entropy values)"),
        )),
        _ => Ok(rules),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[agent]
name = "users"
mask_key = "0123456789abcdef"

[source]
type = "postgres"
url = "postgres://repl@localhost/app"

[sink]
type = "jsonl"
path = "out.jsonl"
"#;

    fn parse(tables: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}\n{tables}"), Path::new("a.toml")).map_err(|e| e.0)
    }

    #[test]
    fn table_sections_become_rules() {
        let c = parse(
            "[[table]]\nmatch = \"public.users\"\nexclude_columns = [\"secret\"]\nmask = { email = \"hash\", ssn = \"redact\", notes = \"null\", bio = \"truncate:20\" }\n\n\
             [[table]]\nmatch = \"sales.*\"\ncolumns = [\"id\", \"total\"]\n",
        )
        .unwrap();
        let rules = table_rules(&c).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].selection, Selection::Except(vec!["secret".into()]));
        assert_eq!(rules[0].mask_of("bio"), Some(Mask::Truncate(20)));
        assert_eq!(rules[0].mask_of("email"), Some(Mask::Hash));
        assert!(rules[1].keeps("total") && !rules[1].keeps("card"));
        assert!(rules[0].keeps("email") && !rules[0].keeps("secret"));
        assert_eq!(format!("{:?}", c.agent.mask_key), "Some(Secret(***))");
    }

    #[test]
    fn bad_sections_name_the_key() {
        let cases = [
            ("match = \"users\"\nmask = { a = \"null\" }", "`table[0].match`"),
            ("match = \"public.users\"\nmask = { a = \"sha1\" }", "`table[0].mask.a` `sha1` is not a mask"),
            ("match = \"public.users\"\nmask = { a = \"truncate:0\" }", "`table[0].mask.a`"),
            ("match = \"public.users\"\ncolumns = [\"id\"]\nexclude_columns = [\"a\"]", "are exclusive"),
            ("match = \"public.users\"\ncolumns = []", "`table[0].columns` is empty"),
            ("match = \"public.users\"\nexclude_columns = [\"a\"]\nmask = { a = \"hash\" }", "masks a column the section leaves out"),
            ("match = \"public.users\"\ncolumns = [\"id\"]\nmask = { a = \"null\" }", "masks a column the section leaves out"),
            ("match = \"public.users\"", "has neither"),
            ("match = \"public.users\"\nmask = { a = \"null\" }\nmaks = 1", "maks"),
            ("match = \"public.users\"\nmask = { a = \"null\" }\n\n[[table]]\nmatch = \"public.users\"\nmask = { b = \"null\" }", "`table[1].match`"),
        ];
        for (section, expected) in cases {
            let err = parse(&format!("[[table]]\n{section}\n")).unwrap_err();
            assert!(err.contains(expected), "{section}: {err}");
        }
    }

    #[test]
    fn hash_needs_a_long_enough_key() {
        let section = "[[table]]\nmatch = \"public.users\"\nmask = { email = \"hash\" }\n";
        let without = BASE.replace("mask_key = \"0123456789abcdef\"\n", "");
        let err = Config::parse(&format!("{without}\n{section}"), Path::new("a.toml"))
            .unwrap_err()
            .0;
        assert!(
            err.contains("`table[0].mask.email` = \"hash\" needs `agent.mask_key`"),
            "{err}"
        );
        let short = BASE.replace("0123456789abcdef", "k3y-7x");
        let err = Config::parse(&format!("{short}\n{section}"), Path::new("a.toml"))
            .unwrap_err()
            .0;
        assert!(
            err.contains("`agent.mask_key` must be at least 16 bytes"),
            "{err}"
        );
        assert!(!err.contains("k3y-7x"), "the key is not printed: {err}");
        // Redact and null need no key.
        let ok = format!(
            "{without}\n[[table]]\nmatch = \"public.users\"\nmask = {{ email = \"redact\" }}\n"
        );
        assert!(Config::parse(&ok, Path::new("a.toml")).is_ok());
    }
}
