//! Errors the runtime acts on.
//!
//! Every connector and sink error is classified once, here, into what the runtime should do:
//! retry with backoff while holding the position (transient), or stop and tell the operator what
//! to fix (definite). The hint is one line that `status` and the log show.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, timeout, server restarting: retry with backoff, position held.
    Transient,
    /// Wrong setting, missing privilege, bad data, dropped table: retrying will not help.
    Definite,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Definite => "definite",
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
}

impl PipelineError {
    pub fn transient(kind: &'static str, message: impl Into<String>) -> Self {
        PipelineError {
            class: ErrorClass::Transient,
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn definite(kind: &'static str, message: impl Into<String>) -> Self {
        PipelineError {
            class: ErrorClass::Definite,
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}
