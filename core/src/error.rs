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

/// Whether a file system error can heal without the operator: a missing directory, a path that
/// is a directory or runs through a regular file, a missing permission, a read-only mount, a
/// name the file system refuses or a file past the size limit stay what they
/// are however often the write is retried, so they are definite. A full disk or quota, an
/// interrupted or timed-out call and I/O errors of the device are transient: space is freed, a
/// mount comes back.
pub fn io_error_class(kind: std::io::ErrorKind) -> ErrorClass {
    use std::io::ErrorKind as K;
    match kind {
        K::NotFound
        | K::PermissionDenied
        | K::NotADirectory
        | K::IsADirectory
        | K::ReadOnlyFilesystem
        | K::InvalidFilename
        | K::FileTooLarge => ErrorClass::Definite,
        _ => ErrorClass::Transient,
    }
}

/// The one-line fix for a definite file error at `setting` (e.g. `sink.path`), `None` for a
/// transient one.
pub fn io_error_hint(kind: std::io::ErrorKind, setting: &str) -> Option<String> {
    use std::io::ErrorKind as K;
    Some(match kind {
        K::NotFound => format!("{setting}: its directory must exist; create it or change {setting}"),
        K::PermissionDenied => {
            format!("{setting}: give the agent's user write access, or change {setting}")
        }
        K::NotADirectory => format!(
            "{setting}: a part of the path is a regular file, not a directory; change {setting} or move that file"
        ),
        K::IsADirectory => {
            format!("{setting} is a directory: name a file (one inside that directory, say)")
        }
        K::ReadOnlyFilesystem => {
            format!("{setting} is on a read-only file system: remount it writable or change {setting}")
        }
        K::InvalidFilename => format!("{setting}: the file system refuses the name (too long?); shorten it"),
        K::FileTooLarge => format!("{setting}: the file reached the file system's size limit; rotate it or change {setting}"),
        _ => return None,
    })
}

/// A file system error (`setting`: the config key naming the path), classified by
/// [`io_error_class`], with the fix when it is definite.
pub fn file_error(
    kind: &'static str,
    setting: &str,
    message: impl Into<String>,
    error: &std::io::Error,
) -> PipelineError {
    let message = message.into();
    match io_error_class(error.kind()) {
        ErrorClass::Transient => PipelineError::transient(kind, message),
        // (A file error is never one change's fault: `io_error_class` gives no poison.)
        ErrorClass::Definite | ErrorClass::Poison => match io_error_hint(error.kind(), setting) {
            Some(hint) => PipelineError::definite(kind, message).with_hint(hint),
            None => PipelineError::definite(kind, message),
        },
    }
}
