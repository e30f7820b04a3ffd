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
    /// A CA certificate file (`s3CASecretName` / `s3CASecretKey`) that cannot be read.
    #[error("CA certificate file {path}: {why}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The object store refused or failed an operation.
    #[error(
        "{operation} {key}: {source}{}{}",
        tls_hint(source),
        credentials_hint(source)
    )]
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
    if crate::fail_fast::untrusted_certificate(e) {
        " (the server's TLS certificate is not trusted: give its CA with s3CACert, the base64 of the PEM, or s3CASecretName/s3CASecretKey; s3SkipVerify turns verification off, for tests only)"
    } else {
        ""
    }
}

/// A next step when a store error comes from credentials that could not be obtained: with
/// workload identity, the raw answer of a metadata service (an HTTP 403, a refused
/// connection) says nothing about which settings are missing.
fn credentials_hint(e: &object_store::Error) -> &'static str {
    let object_store::Error::Generic { store, .. } = e else {
        return "";
    };
    let store = *store;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut about_credentials = false;
    while let Some(err) = cur {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("certificate") {
            return "";
        }
        // object_store's credential providers: instance metadata (AWS IMDS paths, GCE
        // computeMetadata), token endpoints, STS web identity, our aws-config bridge.
        about_credentials |= [
            "token request",
            "metadata",
            "/latest/api/token",
            "/latest/meta-data",
            "assumerolewithwebidentity",
            "fetching credentials",
            "credentials unavailable",
        ]
        .iter()
        .any(|needle| text.contains(needle));
        cur = err.source();
    }
    if !about_credentials {
        return "";
    }
    match store {
        "S3" => {
            " (no AWS credentials could be obtained: for workload identity (IRSA) the pod needs AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, which EKS sets for a service account annotated with eks.amazonaws.com/role-arn; EKS Pod Identity sets AWS_CONTAINER_CREDENTIALS_FULL_URI; otherwise give a credentials file with secretName)"
        }
        "GCS" => {
            " (no GCP credentials could be obtained: for workload identity the Kubernetes service account must be bound to a Google service account and the GKE metadata server reachable; or set GOOGLE_APPLICATION_CREDENTIALS, or give a service-account JSON with secretName)"
        }
        "MicrosoftAzure" => {
            " (no Azure credentials could be obtained: for workload identity the pod needs AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID, which AKS sets for a service account labelled azure.workload.identity/use, and azureStorageAccountName; otherwise give the account-key file with secretName)"
        }
        _ => "",
    }
}

/// Whether an object store's error stays the same however often the call is repeated.
fn store_error_is_permanent(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => true,
        E::Generic { .. } => {
            if crate::fail_fast::untrusted_certificate(e) {
                return true;
            }
            // Answers object_store leaves generic: the stores' own codes for a missing
            // bucket or container and refused credentials.
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(err) = cur {
                let text = err.to_string();
                if [
                    "NoSuchBucket",
                    "ContainerNotFound",
                    "InvalidAccessKeyId",
                    "SignatureDoesNotMatch",
                    "AccessDenied",
                    "AuthenticationFailed",
                    "AuthorizationFailure",
                ]
                .iter()
                .any(|code| text.contains(code))
                {
                    return true;
                }
                cur = err.source();
            }
            false
        }
        _ => false,
    }
}

impl Error {
    /// Whether retrying the same operation, unchanged, cannot help: bad configuration,
    /// corrupt data, and store answers that stay the same (refused or missing credentials,
    /// a missing bucket or object, an untrusted TLS certificate, an unsupported call).
    /// Other store errors (timeouts, 5xx after object_store's own retries, a lost
    /// connection), a conflict with another writer and a failed worker task may pass.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Store { source, .. } => store_error_is_permanent(source),
            Error::Conflict { .. } | Error::Task(_) | Error::Input(_) => false,
            _ => true,
        }
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

#[cfg(test)]
mod tests {
    use super::Error;

    fn store(source: object_store::Error) -> Error {
        Error::store("reading", &object_store::path::Path::from("k"), source)
    }

    #[test]
    fn what_stays_the_same_is_permanent_and_what_may_pass_is_not() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        };
        for permanent in [
            store(object_store::Error::PermissionDenied {
                path: "k".into(),
                source: "403".into(),
            }),
            store(object_store::Error::Unauthenticated {
                path: "k".into(),
                source: "401".into(),
            }),
            store(object_store::Error::NotFound {
                path: "k".into(),
                source: "404".into(),
            }),
            store(generic("<Code>NoSuchBucket</Code>")),
            store(generic("invalid peer certificate: UnknownIssuer")),
            Error::config("no bucket"),
            Error::Corrupt {
                key: "k".into(),
                offset: 0,
                why: "digest".into(),
            },
        ] {
            assert!(permanent.is_permanent(), "{permanent}");
        }
        for passing in [
            store(generic("connection reset by peer")),
            store(generic(
                "HTTP status server error (503 Service Unavailable)",
            )),
            Error::Conflict { key: "k".into() },
            Error::Task("panicked".into()),
        ] {
            assert!(!passing.is_permanent(), "{passing}");
        }
    }
}
