//! `[[table]]` rules in a comparison: an excluded column is not in the target, and a masked one
//! holds its mask rather than the source's value, so verify compares only the columns that reach
//! the target as they are. A masked key column leaves nothing to match rows by.

use cdc_core::columns::rule_for;

use super::side::Described;
use crate::config::Config;

/// Leaves out of `described` the columns the table's rule filters or masks. `Ok(Some(note))`
/// when it did; `Err` (the table's failure) when a key column is masked or left out.
pub fn compared_columns(
    config: &Config,
    schema: &str,
    table: &str,
    described: &mut Described,
) -> Result<Option<String>, String> {
    let rules = crate::config::table_rules(config).unwrap_or_default();
    let Some(rule) = rule_for(&rules, schema, table)? else {
        return Ok(None);
    };
    let compared = |name: &str| rule.keeps(name) && rule.mask_of(name).is_none();
    if let Some(&k) = described
        .key
        .iter()
        .find(|&&k| !compared(&described.columns[k].name))
    {
        return Err(format!(
            "key column {} is masked or left out by a [[table]] section: rows cannot be matched across source and target",
            described.columns[k].name
        ));
    }
    let mut new_index = Vec::with_capacity(described.columns.len());
    let mut columns = Vec::with_capacity(described.columns.len());
    for column in std::mem::take(&mut described.columns) {
        new_index.push(columns.len());
        if compared(&column.name) {
            columns.push(column);
        }
    }
    let left_out = new_index.len() - columns.len();
    described.key = described.key.iter().map(|&k| new_index[k]).collect();
    described.columns = columns;
    Ok(Some(format!(
        "{left_out} column(s) filtered or masked by a [[table]] section not compared"
    )))
}
