//! [`Error`]: what can go wrong in the engine.

use std::path::PathBuf;

/// An error from the `catena` engine. Messages name the database, artifact, object, or file
/// involved and the next step; they never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the chain model: a decision that cannot be made, a plan that cannot be made.
    #[error(transparent)]
    Chain(#[from] chain_core::Error),
    /// From storage: configuration, an object store call, a corrupt object. (A cancelled
    /// storage operation converts to [`Error::Cancelled`].)
    #[error(transparent)]
    Storage(storage_backends::Error),
    /// The data to back up cannot be read.
    #[error("source {path}: {why}")]
    Source {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        why: String,
        /// The system's error, when there is one.
        #[source]
        cause: Option<std::io::Error>,
    },
    /// A restore cannot go on.
    #[error("restore into {path}: {why}")]
    Restore {
        /// The destination (or the file in it).
        path: PathBuf,
        /// What went wrong and what to do.
        why: String,
        /// The system's error, when there is one.
        #[source]
        cause: Option<std::io::Error>,
    },
    /// A chain read back does not hold together.
    #[error("{what}: {why}; run `catena check` for a full report")]
    Inconsistent {
        /// The artifact or object.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// An option that cannot work.
    #[error("invalid option: {0}")]
    Options(String),
    /// A values file (the chart's) that cannot be read or used; the message names the file
    /// or key and what to do.
    #[error("{0}")]
    Values(String),
    /// The database's lock is held by another writer, or was lost.
    #[error("database {database}: {why}")]
    Locked {
        /// The database.
        database: chain_core::DatabaseName,
        /// Who holds it and what to do.
        why: String,
    },
    /// The repository's encryption: a key is needed, does not open it, or was given to a
    /// plain repository; a key slot or config object is unusable. The message says what
    /// to do and never holds key material.
    #[error("encryption: {0}")]
    Encryption(String),
    /// The operation was cancelled; nothing it wrote is visible.
    #[error("cancelled; nothing was committed")]
    Cancelled,
}

impl From<storage_backends::Error> for Error {
    fn from(e: storage_backends::Error) -> Self {
        match e {
            storage_backends::Error::Cancelled => Error::Cancelled,
            other => Error::Storage(other),
        }
    }
}

impl Error {
    /// Whether running the same operation again, unchanged, cannot succeed: bad
    /// credentials, a missing bucket, an untrusted TLS certificate, an invalid option, a
    /// damaged repository, a refused destination, a cancellation. What may pass (a store
    /// that did not answer, a lock another writer holds, a file that changed while it was
    /// read) is not permanent. A scheduler retries only errors that are not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Chain(_)
            | Error::Options(_)
            | Error::Values(_)
            | Error::Inconsistent { .. }
            | Error::Encryption(_)
            | Error::Cancelled => true,
            Error::Storage(e) => e.is_permanent(),
            Error::Source { cause, .. } | Error::Restore { cause, .. } => {
                cause.as_ref().is_none_or(|e| {
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::ResourceBusy
                    )
                })
            }
            Error::Locked { .. } => false,
        }
    }

    /// A source file or directory that cannot be read, keeping the system's error.
    pub fn source_io(path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Error::Source {
            path: path.into(),
            why: e.to_string(),
            cause: Some(e),
        }
    }

    /// A source that cannot be backed up, for a reason of the source's own.
    pub fn source(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Error::Source {
            path: path.into(),
            why: why.into(),
            cause: None,
        }
    }

    pub(crate) fn restore(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Error::Restore {
            path: path.into(),
            why: why.into(),
            cause: None,
        }
    }

    pub(crate) fn restore_io(path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Error::Restore {
            path: path.into(),
            why: e.to_string(),
            cause: Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_cancelled_store_call_is_a_cancel_and_permanence_follows_the_cause() {
        assert!(matches!(
            Error::from(storage_backends::Error::Cancelled),
            Error::Cancelled
        ));
        assert!(Error::Options("x".into()).is_permanent());
        let locked = Error::Locked {
            database: chain_core::DatabaseName::new("neo4j").expect("name"),
            why: "held".into(),
        };
        assert!(!locked.is_permanent(), "another writer finishes");
        let gone = Error::source_io("/data", std::io::ErrorKind::NotFound.into());
        assert!(gone.is_permanent());
        assert!(
            std::error::Error::source(&gone).is_some(),
            "the system's error is kept"
        );
        assert!(!Error::source_io("/data", std::io::ErrorKind::TimedOut.into()).is_permanent());
    }
}
