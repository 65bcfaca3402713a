//! Per-table column filters and masks: which columns of a table leave the agent, and in what form.
//!
//! ```text
//!  source ══channel══▶ SinkDriver ─▶ Masker::apply (key, before, after, unchanged, schema) ─▶ Sink
//! ```
//!
//! The rules come from the configuration's `[[table]]` sections ([`TableRule`]); the
//! [`Masker`] applies them to every change, snapshot rows and streamed changes alike, before any
//! sink sees it. The Postgres source also reads the rules, to give the server a publication
//! column list where that is safe (only the columns [`TableRule::keeps`]).

mod mask;

pub use mask::{Masker, REDACTED};

/// Which columns of a table are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    /// `columns = [...]`: only these (a column added later is left out too).
    Only(Vec<String>),
    /// `exclude_columns = [...]`: all but these.
    Except(Vec<String>),
}

/// What a masked column's values become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// HMAC-SHA256 keyed by `agent.mask_key`, as 64 lowercase hex digits.
    Hash,
    /// The fixed text [`REDACTED`].
    Redact,
    /// NULL.
    Null,
    /// The first N characters (not bytes) of a text value.
    Truncate(usize),
}

impl Mask {
    /// `hash`, `redact`, `null` or `truncate:N`.
    pub fn parse(text: &str) -> Result<Mask, String> {
        match text {
            "hash" => Ok(Mask::Hash),
            "redact" => Ok(Mask::Redact),
            "null" => Ok(Mask::Null),
            _ => match text.strip_prefix("truncate:") {
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(Mask::Truncate(n)),
                    _ => Err(format!(
                        "`{text}`: truncate takes a number of characters of at least 1, e.g. \"truncate:20\""
                    )),
                },
                None => Err(format!(
                    "`{text}` is not a mask: use \"hash\", \"redact\", \"null\" or \"truncate:N\""
                )),
            },
        }
    }

    /// As written in the configuration: `hash`, `redact`, `null`, `truncate:N`.
    pub fn name(self) -> String {
        match self {
            Mask::Hash => "hash".into(),
            Mask::Redact => "redact".into(),
            Mask::Null => "null".into(),
            Mask::Truncate(n) => format!("truncate:{n}"),
        }
    }

    /// Does the column's type change to text? (A hash or the redaction text fits no other type.)
    pub fn makes_text(self) -> bool {
        matches!(self, Mask::Hash | Mask::Redact)
    }
}

/// The rule of one `[[table]]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRule {
    /// `schema.table`, `*` wildcards allowed (as in `source.tables`).
    pub pattern: String,
    pub selection: Selection,
    /// Column name and its mask, in the order written.
    pub masks: Vec<(String, Mask)>,
}

impl TableRule {
    /// Is `column` sent on to the sinks?
    pub fn keeps(&self, column: &str) -> bool {
        match &self.selection {
            Selection::All => true,
            Selection::Only(columns) => columns.iter().any(|c| c == column),
            Selection::Except(columns) => !columns.iter().any(|c| c == column),
        }
    }

    pub fn mask_of(&self, column: &str) -> Option<Mask> {
        self.masks
            .iter()
            .find(|(c, _)| c == column)
            .map(|&(_, mask)| mask)
    }
}

/// The rule for `schema.table`: `Ok(None)` when no section matches; an error naming both
/// patterns when two do (which one wins would be a guess, and a wrong guess leaks data).
pub fn rule_for<'a>(
    rules: &'a [TableRule],
    schema: &str,
    table: &str,
) -> Result<Option<&'a TableRule>, String> {
    let name = format!("{schema}.{table}");
    let mut found: Option<&TableRule> = None;
    for rule in rules {
        if crate::schema::glob_match(&rule.pattern, &name) {
            if let Some(first) = found {
                return Err(format!(
                    "table {name} matches two [[table]] sections (`{}` and `{}`); make their `match` patterns disjoint",
                    first.pattern, rule.pattern
                ));
            }
            found = Some(rule);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
