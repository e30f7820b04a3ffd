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
    /// From storage: configuration, an object store call, a corrupt object.
    #[error(transparent)]
    Storage(#[from] storage_backends::Error),
    /// The data to back up cannot be read.
    #[error("source {path}: {why}")]
    Source {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A restore cannot go on.
    #[error("restore into {path}: {why}")]
    Restore {
        /// The destination (or the file in it).
        path: PathBuf,
        /// What went wrong and what to do.
        why: String,
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
    /// The database's lock is held by another writer, or was lost.
    #[error("database {database}: {why}")]
    Locked {
        /// The database.
        database: String,
        /// Who holds it and what to do.
        why: String,
    },
    /// The operation was cancelled; nothing it wrote is visible.
    #[error("cancelled; nothing was committed")]
    Cancelled,
}

impl Error {
    pub(crate) fn source_io(path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        Error::Source {
            path: path.into(),
            why: e.to_string(),
        }
    }

    pub(crate) fn restore(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Error::Restore {
            path: path.into(),
            why: why.into(),
        }
    }
}
