//! [`Error`]: everything that can go wrong in `storage-backends`.

use std::path::PathBuf;

/// An error from `storage-backends`. Messages name the key, object or file involved and
/// what to do next, and never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A storage setting is wrong, or settings contradict each other.
    #[error("storage configuration: {message}")]
    Config {
        /// What is wrong, naming the keys, and what to do.
        message: String,
    },
    /// A storage URL that does not parse.
    #[error(
        "storage URL {url:?}: {why}; use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///path or memory://"
    )]
    InvalidUrl {
        /// The URL, without any query string (which may carry a SAS token).
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A credentials or CA file that cannot be read or parsed.
    #[error("credentials file {path}: {why}")]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never its contents).
        why: String,
    },
    /// The object store refused or failed an operation.
    #[error("{operation} {key}: {source}{}", tls_hint(source))]
    Store {
        /// What was being done.
        operation: &'static str,
        /// The object key (relative to the repository prefix).
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Another writer created the object first, with different contents.
    #[error(
        "{key} already exists with different contents: another writer committed it first; rerun to pick a new id"
    )]
    Conflict {
        /// The key.
        key: String,
    },
    /// A stored object failed verification.
    #[error(
        "{key} at offset {offset}: {why}; the object is damaged: run `catena check`, and restore from another backup if it fails"
    )]
    Corrupt {
        /// The object key.
        key: String,
        /// Byte offset of the failing block or range.
        offset: u64,
        /// What failed.
        why: String,
    },
    /// The input stream failed.
    #[error("reading the data to back up: {0}")]
    Input(#[source] std::io::Error),
    /// The operation was cancelled; nothing it wrote is visible.
    #[error("cancelled; nothing was committed")]
    Cancelled,
    /// An error from the chain model (codec, manifest).
    #[error(transparent)]
    Chain(#[from] chain_core::Error),
    /// A worker task failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// A next step when a store error comes from an untrusted TLS certificate (the cause is
/// deep in the error chain, where the message does not show it).
fn tls_hint(e: &object_store::Error) -> &'static str {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains("certificate") || text.contains("UnknownIssuer") {
            return " (the server's TLS certificate is not trusted: give its CA with s3CACert, the base64 of the PEM, or s3CASecretName/s3CASecretKey; s3SkipVerify turns verification off, for tests only)";
        }
        cur = err.source();
    }
    ""
}

impl Error {
    /// Whether retrying the same operation cannot help (bad config, corrupt data, a
    /// conflict). Transient store errors are retried inside object_store already.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Error::Store { .. } | Error::Task(_))
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// A store error about `key` during `operation`.
    pub fn store(
        operation: &'static str,
        key: &object_store::path::Path,
        source: object_store::Error,
    ) -> Self {
        Error::Store {
            operation,
            key: key.to_string(),
            source,
        }
    }
}
