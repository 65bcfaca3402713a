//! Preflight check outcomes (`cdc-agent check`): one line each, with a fix when it fails.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub hint: Option<String>,
}

impl CheckOutcome {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckOutcome {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            hint: None,
        }
    }

    /// The `tables` line when every configured table is fine: how many, and which.
    pub fn tables_found(names: &[String]) -> Self {
        CheckOutcome::ok(
            "tables",
            format!("{} table(s): {}", names.len(), names.join(", ")),
        )
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        CheckOutcome {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}: {}", self.name, self.detail)?;
        if let Some(hint) = &self.hint {
            write!(f, " (fix: {hint})")?;
        }
        Ok(())
    }
}
