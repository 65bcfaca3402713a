//! Errors the runtime acts on.
//!
//! Every connector and sink error is classified once, here, into what the runtime should do:
//! retry with backoff while holding the position (transient), stop and tell the operator what
//! to fix (definite), or, for an error that only one change causes (poison: a value or row the
//! target refuses), set that change aside in the dead-letter store when `sink.on_error = "dlq"`
//! (else stop, as for a definite error). The hint is one line that `status` and the log show.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, timeout, server restarting: retry with backoff, position held.
    Transient,
    /// Wrong setting, missing privilege, dropped table: retrying will not help, for any change.
    Definite,
    /// The target refuses this one change (a value it cannot store, a constraint it violates, a
    /// message over the broker's size limit): other changes go through.
    Poison,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Definite => "definite",
            ErrorClass::Poison => "poison",
        })
    }
}

/// An error as the runtime sees it: what happened, which class, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", .hint.as_deref().map(|h| format!(" (fix: {h})")).unwrap_or_default())]
pub struct PipelineError {
    pub class: ErrorClass,
    /// A low-cardinality kind for metrics: `connection`, `auth`, `config`, `decode`, `schema`, `sink`.
    pub kind: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// The column the target named, for an error about one value.
    pub column: Option<String>,
}

impl PipelineError {
    pub fn transient(kind: &'static str, message: impl Into<String>) -> Self {
        PipelineError {
            class: ErrorClass::Transient,
            kind,
            message: message.into(),
            hint: None,
            column: None,
        }
    }

    pub fn definite(kind: &'static str, message: impl Into<String>) -> Self {
        PipelineError {
            class: ErrorClass::Definite,
            kind,
            message: message.into(),
            hint: None,
            column: None,
        }
    }

    /// An error only this change causes; `kind` is its class in the dead-letter store and in
    /// metrics: `data` (a value the target cannot store), `constraint` (a row it refuses),
    /// `too_large` (over a size limit).
    pub fn poison(kind: &'static str, message: impl Into<String>) -> Self {
        PipelineError {
            class: ErrorClass::Poison,
            kind,
            message: message.into(),
            hint: None,
            column: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_column(mut self, column: Option<String>) -> Self {
        self.column = column;
        self
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    pub fn is_poison(&self) -> bool {
        self.class == ErrorClass::Poison
    }
}
