//! Errors with a stable code, so that JavaScript can branch on `err.code` and never parse a message.

use std::fmt;

/// The stable codes that every rejection carries. They are part of the public API: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A malformed id, session, update or option. Nothing was changed.
    Invalid,
    /// An input or a session would pass its size limit. Nothing was changed.
    TooLarge,
    /// A stored file could not be read and could not be moved aside; it was left untouched.
    Corrupt,
    /// The file system failed. What was stored before is intact.
    Io,
    /// The store was closed.
    Closed,
    /// The Redis backend cannot reach Redis. Nothing acknowledged is lost: unsaved changes stay in
    /// memory and are written once Redis is back.
    Unavailable,
    /// A bug: an internal invariant broke (or a panic was caught). Nothing was changed.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "EINVALID",
            ErrorCode::TooLarge => "ETOOLARGE",
            ErrorCode::Corrupt => "ECORRUPT",
            ErrorCode::Io => "EIO",
            ErrorCode::Closed => "ECLOSED",
            ErrorCode::Unavailable => "EUNAVAILABLE",
            ErrorCode::Internal => "EINTERNAL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    pub code: ErrorCode,
    pub message: String,
    /// The call's change was applied in memory (and listeners were told of it), but is not yet
    /// durable: a later save (autosave, `save()`, `close()`) writes it. Set only on a durable
    /// merge whose write failed. JavaScript sees it as `err.applied === true`.
    pub applied: bool,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        StoreError {
            code,
            message: message.into(),
            applied: false,
        }
    }

    /// This error, for a durable merge whose change stays applied in memory though its write failed.
    pub fn applied_not_durable(self) -> Self {
        StoreError {
            message: format!(
                "the update was applied, but is not yet durable ({}); a later save writes it",
                self.message
            ),
            applied: true,
            ..self
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn closed() -> Self {
        Self::new(ErrorCode::Closed, "the store is closed")
    }

    /// An I/O error, with what was being done and to which file.
    pub fn io(what: &str, path: &std::path::Path, err: std::io::Error) -> Self {
        Self::new(ErrorCode::Io, format!("{what} {}: {err}", path.display()))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for StoreError {}
