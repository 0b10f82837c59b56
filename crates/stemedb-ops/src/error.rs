//! What an operation can fail with. Each variant keeps its source and says what was being done,
//! so the CLI prints one line an operator can act on.

use stemedb_store::StoreError;

/// Why a backup, restore, verification or archive run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The operation refused: its input or target is not what it must be (the backup does not
    /// verify, the destination is not empty, a key is not the trusted one, …). Nothing was
    /// changed that the message does not name.
    #[error("{0}")]
    Refused(String),
    /// A file, directory or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed (an offline open, a snapshot, a replay).
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The store refused to open (corruption, below the signed high-water mark, a bad option).
    #[error("{what}: {source}")]
    Open {
        /// What was being done.
        what: String,
        /// Why the store did not open.
        #[source]
        source: stemedb_store::OpenError,
    },
    /// The write-ahead log could not be opened, read or sealed.
    #[error("{what}: {source}")]
    Wal {
        /// What was being done.
        what: String,
        /// The log's error.
        #[source]
        source: stemedb_wal::WalError,
    },
    /// Object storage (S3) failed.
    #[error("{what}: {source}")]
    ObjectStore {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// A JSON document (manifest, sidecar, marker) could not be read or written.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The running server refused a control request or answered something else.
    #[error("{0}")]
    Server(String),
}

/// `Result` with [`OpsError`].
pub type Result<T, E = OpsError> = std::result::Result<T, E>;

/// An error that becomes an [`OpsError`] once told what was being done.
pub(crate) trait IntoOps {
    fn into_ops(self, what: String) -> OpsError;
}

impl IntoOps for std::io::Error {
    fn into_ops(self, what: String) -> OpsError {
        OpsError::Io { what, source: self }
    }
}

impl IntoOps for StoreError {
    fn into_ops(self, what: String) -> OpsError {
        OpsError::Store { what, source: self }
    }
}

impl IntoOps for stemedb_store::OpenError {
    fn into_ops(self, what: String) -> OpsError {
        OpsError::Open { what, source: self }
    }
}

impl IntoOps for stemedb_wal::WalError {
    fn into_ops(self, what: String) -> OpsError {
        OpsError::Wal { what, source: self }
    }
}

impl IntoOps for object_store::Error {
    fn into_ops(self, what: String) -> OpsError {
        OpsError::ObjectStore { what, source: self }
    }
}

impl IntoOps for serde_json::Error {
    fn into_ops(self, what: String) -> OpsError {
        OpsError::Json { what, source: self }
    }
}

impl IntoOps for OpsError {
    /// Prefixes the step to the message (or to the `what` an error with a source carries).
    fn into_ops(mut self, step: String) -> OpsError {
        let text = match &mut self {
            OpsError::Refused(m) | OpsError::Server(m) => m,
            OpsError::Io { what, .. }
            | OpsError::Store { what, .. }
            | OpsError::Open { what, .. }
            | OpsError::Wal { what, .. }
            | OpsError::ObjectStore { what, .. }
            | OpsError::Json { what, .. } => what,
        };
        *text = format!("{step}: {text}");
        self
    }
}

/// Says what was being done when something failed (the crate's `context`/`with_context`).
pub(crate) trait Context<T> {
    /// `what` names the step.
    fn context(self, what: &str) -> Result<T>;
    /// `what()` names the step (built only on failure).
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: IntoOps> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| e.into_ops(what.to_string()))
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into_ops(what().into()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| OpsError::Refused(what.to_string()))
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| OpsError::Refused(what().into()))
    }
}

impl From<std::io::Error> for OpsError {
    fn from(e: std::io::Error) -> OpsError {
        e.into_ops("I/O error".into())
    }
}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> OpsError {
        e.into_ops("store".into())
    }
}

impl From<serde_json::Error> for OpsError {
    fn from(e: serde_json::Error) -> OpsError {
        e.into_ops("JSON".into())
    }
}

impl From<stemedb_wal::WalError> for OpsError {
    fn from(e: stemedb_wal::WalError) -> OpsError {
        e.into_ops("write-ahead log".into())
    }
}

impl From<object_store::Error> for OpsError {
    fn from(e: object_store::Error) -> OpsError {
        e.into_ops("object storage".into())
    }
}

/// `return Err(OpsError::Refused(format!(…)))`.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err($crate::error::OpsError::Refused(format!($($arg)*)))
    };
}

/// `OpsError::Refused(format!(…))`.
macro_rules! refusal {
    ($($arg:tt)*) => {
        $crate::error::OpsError::Refused(format!($($arg)*))
    };
}

pub(crate) use {refusal, refuse};
