//! [`StorageConfig`]: where backups live, in the seed's vocabulary, and how it becomes an
//! `Arc<dyn ObjectStore>`.
//!
//! Every storage key of the Neo4j chart's `backup:` section has a field here, with the same
//! camelCase name: `cloudProvider`, `bucketName`, `s3Endpoint`, `s3EndpointTLS`, `s3CACert`,
//! `s3CASecretName`, `s3CASecretKey`, `s3SkipVerify`, `s3ForcePathStyle`, `s3Region`,
//! `minioEndpoint` (deprecated alias of `s3Endpoint`), `secretName`, `secretKeyName`,
//! `azureStorageAccountName`, `serviceAccountName`. Catena adds `prefix` (a key prefix inside
//! the bucket), `secretsDir` (where `<secretName>/<secretKeyName>` files are mounted),
//! `localPath` (the directory used when `cloudProvider` is empty), and `azureEndpoint` /
//! `azureUseEmulator` (Azure-compatible endpoints such as Azurite), and S3's own encryption at
//! rest in the chart's style: `s3ServerSideEncryption` (`AES256`, `aws:kms`, `aws:kms:dsse`),
//! `s3SseKmsKeyId`, `s3SseBucketKeyEnabled`, and for `SSE-C` (a key of the customer's own)
//! `s3SseCustomerKeySecretName` / `s3SseCustomerKeySecretKey`. `azureEncryptionScope` and
//! `gcsKmsKeyName` are recognised and refused at start: object_store 0.14 cannot send them, and
//! a backup must never be written without the encryption it was asked for.
//!
//! [`StorageConfig::build`] validates once, with errors that name the keys involved, and
//! returns a [`Storage`]: the store, already scoped to the prefix, plus any warnings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::HttpConnector;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::credentials::{self, AwsCredentialSource};
use crate::named::NamedStore;

/// Which kind of store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CloudProvider {
    /// A local directory (`cloudProvider: ""`): the chart's `/backups` mount, or `localPath`.
    #[default]
    #[serde(rename = "")]
    Local,
    /// Amazon S3 or any S3-compatible endpoint.
    #[serde(rename = "aws")]
    Aws,
    /// Google Cloud Storage.
    #[serde(rename = "gcp")]
    Gcp,
    /// Azure Blob Storage.
    #[serde(rename = "azure")]
    Azure,
    /// In memory (tests and demos; not a seed value).
    #[serde(rename = "memory")]
    Memory,
}

fn default_secrets_dir() -> PathBuf {
    PathBuf::from("/var/run/secrets/catena")
}

fn default_local_path() -> PathBuf {
    PathBuf::from("/backups")
}

/// Where backups are stored. See the module documentation for the keys.
///
/// `Debug` is written by hand: it shows which keys are set, never a CA or a secret value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageConfig {
    /// `aws`, `gcp`, `azure`, or empty for a local directory.
    #[serde(default)]
    pub cloud_provider: CloudProvider,
    /// The bucket (Azure: the container).
    #[serde(default)]
    pub bucket_name: String,
    /// A key prefix inside the bucket (Catena).
    #[serde(default)]
    pub prefix: String,
    /// An S3-compatible endpoint, `https://host[:port]` or `host[:port]`.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// TLS for `s3Endpoint` (the scheme when the endpoint has none).
    #[serde(default, rename = "s3EndpointTLS")]
    pub s3_endpoint_tls: Option<bool>,
    /// A CA certificate for the endpoint, base64 of PEM.
    #[serde(default, rename = "s3CACert")]
    pub s3_ca_cert: Option<String>,
    /// The secret holding a CA file (`<secretsDir>/<s3CASecretName>/<s3CASecretKey>`).
    #[serde(default, rename = "s3CASecretName")]
    pub s3_ca_secret_name: Option<String>,
    /// The key of the CA file in that secret (default `ca.crt`).
    #[serde(default, rename = "s3CASecretKey")]
    pub s3_ca_secret_key: Option<String>,
    /// Skip TLS certificate verification (dangerous; warns loudly).
    #[serde(default)]
    pub s3_skip_verify: bool,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted style.
    #[serde(default)]
    pub s3_force_path_style: bool,
    /// The S3 region.
    #[serde(default)]
    pub s3_region: Option<String>,
    /// Deprecated alias of `s3Endpoint` (accepted, with a warning).
    #[serde(default)]
    pub minio_endpoint: Option<String>,
    /// S3 server-side encryption of every object written: `AES256` (SSE-S3), `aws:kms`
    /// (SSE-KMS) or `aws:kms:dsse` (Catena; unset: the bucket's default encryption).
    #[serde(default)]
    pub s3_server_side_encryption: Option<String>,
    /// The KMS key of `aws:kms` / `aws:kms:dsse` (Catena; unset: the account's AWS-managed
    /// key).
    #[serde(default)]
    pub s3_sse_kms_key_id: Option<String>,
    /// An S3 Bucket Key for SSE-KMS, fewer KMS requests (Catena).
    #[serde(default)]
    pub s3_sse_bucket_key_enabled: bool,
    /// The secret holding the SSE-C key, when `s3ServerSideEncryption` is `SSE-C` (Catena):
    /// `<secretsDir>/<this>/<s3SseCustomerKeySecretKey>` holds 32 bytes, raw or base64.
    #[serde(default)]
    pub s3_sse_customer_key_secret_name: Option<String>,
    /// The key of the SSE-C key file in that secret (Catena; default `sse-c.key`).
    #[serde(default)]
    pub s3_sse_customer_key_secret_key: Option<String>,
    /// An Azure encryption scope (Catena): refused at start, see the module documentation.
    #[serde(default)]
    pub azure_encryption_scope: Option<String>,
    /// A GCS KMS key (Catena): refused at start, see the module documentation.
    #[serde(default)]
    pub gcs_kms_key_name: Option<String>,
    /// The secret holding the credentials file.
    #[serde(default)]
    pub secret_name: Option<String>,
    /// The key of the credentials file in that secret (default `credentials`).
    #[serde(default)]
    pub secret_key_name: Option<String>,
    /// The Azure storage account, for workload identity.
    #[serde(default)]
    pub azure_storage_account_name: Option<String>,
    /// A Kubernetes service account: use ambient / workload-identity credentials.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Where secrets are mounted (Catena; default `/var/run/secrets/catena`).
    #[serde(default = "default_secrets_dir")]
    pub secrets_dir: PathBuf,
    /// The directory used when `cloudProvider` is empty (Catena; default `/backups`).
    #[serde(default = "default_local_path")]
    pub local_path: PathBuf,
    /// An Azure-compatible blob endpoint (Catena).
    #[serde(default)]
    pub azure_endpoint: Option<String>,
    /// Talk to the Azurite emulator (Catena; its URL comes from `AZURITE_BLOB_STORAGE_URL`,
    /// default `http://127.0.0.1:10000`).
    #[serde(default)]
    pub azure_use_emulator: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cloud_provider: CloudProvider::Local,
            bucket_name: String::new(),
            prefix: String::new(),
            s3_endpoint: None,
            s3_endpoint_tls: None,
            s3_ca_cert: None,
            s3_ca_secret_name: None,
            s3_ca_secret_key: None,
            s3_skip_verify: false,
            s3_force_path_style: false,
            s3_region: None,
            minio_endpoint: None,
            s3_server_side_encryption: None,
            s3_sse_kms_key_id: None,
            s3_sse_bucket_key_enabled: false,
            s3_sse_customer_key_secret_name: None,
            s3_sse_customer_key_secret_key: None,
            azure_encryption_scope: None,
            gcs_kms_key_name: None,
            secret_name: None,
            secret_key_name: None,
            azure_storage_account_name: None,
            service_account_name: None,
            secrets_dir: default_secrets_dir(),
            local_path: default_local_path(),
            azure_endpoint: None,
            azure_use_emulator: false,
        }
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| o.as_deref().map(|_| "<set>");
        f.debug_struct("StorageConfig")
            .field("cloud_provider", &self.cloud_provider)
            .field("bucket_name", &self.bucket_name)
            .field("prefix", &self.prefix)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_endpoint_tls", &self.s3_endpoint_tls)
            .field("s3_ca_cert", &set(&self.s3_ca_cert))
            .field("s3_ca_secret_name", &self.s3_ca_secret_name)
            .field("s3_ca_secret_key", &self.s3_ca_secret_key)
            .field("s3_skip_verify", &self.s3_skip_verify)
            .field("s3_force_path_style", &self.s3_force_path_style)
            .field("s3_region", &self.s3_region)
            .field("minio_endpoint", &self.minio_endpoint)
            .field("s3_server_side_encryption", &self.s3_server_side_encryption)
            .field("s3_sse_kms_key_id", &self.s3_sse_kms_key_id)
            .field("s3_sse_bucket_key_enabled", &self.s3_sse_bucket_key_enabled)
            .field(
                "s3_sse_customer_key_secret_name",
                &self.s3_sse_customer_key_secret_name,
            )
            .field(
                "s3_sse_customer_key_secret_key",
                &self.s3_sse_customer_key_secret_key,
            )
            .field("azure_encryption_scope", &self.azure_encryption_scope)
            .field("gcs_kms_key_name", &self.gcs_kms_key_name)
            .field("secret_name", &self.secret_name)
            .field("secret_key_name", &self.secret_key_name)
            .field(
                "azure_storage_account_name",
                &self.azure_storage_account_name,
            )
            .field("service_account_name", &self.service_account_name)
            .field("secrets_dir", &self.secrets_dir)
            .field("local_path", &self.local_path)
            .field("azure_endpoint", &self.azure_endpoint)
            .field("azure_use_emulator", &self.azure_use_emulator)
            .finish()
    }
}

/// S3 server-side encryption, checked ([`StorageConfig`]'s `s3ServerSideEncryption` keys).
struct Sse {
    /// `AES256`, `aws:kms`, `aws:kms:dsse` or `SSE-C`.
    kind: &'static str,
    /// The file holding the SSE-C key, for `SSE-C`.
    customer_key_file: Option<PathBuf>,
    /// The KMS key of `aws:kms*`.
    kms_key: Option<String>,
    /// An S3 Bucket Key for SSE-KMS.
    bucket_key: bool,
}

/// Storage settings laid over a configuration, as flags and environment variables are laid
/// over a values file: every field that is `Some` replaces the configuration's value, and
/// `Some("")` clears a text setting (so a flag can take back what a file set). The endpoint
/// and its deprecated alias go together: giving `s3Endpoint` or `minioEndpoint` here
/// replaces both of the configuration's.
///
/// This is the one description of the storage keys: serde names are the chart's keys (the
/// values file's `backup.*` storage keys deserialize into it), and with the `clap` feature
/// it is also the command line (`#[command(flatten)]`: `--s3-endpoint` and
/// `CATENA_S3_ENDPOINT`, and so on for every key). Where backups go (`cloudProvider`,
/// `bucketName`, `prefix`) is not here: a storage URL says that
/// ([`StorageConfig::from_url`]). `Debug` shows which keys are set, never a CA.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageOverrides {
    /// S3-compatible endpoint (s3Endpoint).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_ENDPOINT"))]
    pub s3_endpoint: Option<String>,
    /// TLS for an endpoint given without scheme (s3EndpointTLS).
    #[serde(rename = "s3EndpointTLS")]
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_ENDPOINT_TLS", num_args = 0..=1, default_missing_value = "true"))]
    pub s3_endpoint_tls: Option<bool>,
    /// CA certificate, base64 of PEM (s3CACert).
    #[serde(rename = "s3CACert")]
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "CATENA_S3_CA_CERT", hide_env_values = true)
    )]
    pub s3_ca_cert: Option<String>,
    /// Secret holding a CA file (s3CASecretName).
    #[serde(rename = "s3CASecretName")]
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_CA_SECRET_NAME"))]
    pub s3_ca_secret_name: Option<String>,
    /// Key of the CA file in that secret (s3CASecretKey).
    #[serde(rename = "s3CASecretKey")]
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_CA_SECRET_KEY"))]
    pub s3_ca_secret_key: Option<String>,
    /// Skip TLS verification (s3SkipVerify; dangerous).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_SKIP_VERIFY", num_args = 0..=1, default_missing_value = "true"))]
    pub s3_skip_verify: Option<bool>,
    /// Path-style requests (s3ForcePathStyle).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_FORCE_PATH_STYLE", num_args = 0..=1, default_missing_value = "true"))]
    pub s3_force_path_style: Option<bool>,
    /// Region (s3Region).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_REGION"))]
    pub s3_region: Option<String>,
    /// Deprecated alias of the S3 endpoint (minioEndpoint).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_MINIO_ENDPOINT"))]
    pub minio_endpoint: Option<String>,
    /// S3 server-side encryption: AES256, aws:kms, aws:kms:dsse or SSE-C
    /// (s3ServerSideEncryption; not a chart key).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_SERVER_SIDE_ENCRYPTION"))]
    pub s3_server_side_encryption: Option<String>,
    /// The KMS key id or ARN of aws:kms (s3SseKmsKeyId; not a chart key).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_SSE_KMS_KEY_ID"))]
    pub s3_sse_kms_key_id: Option<String>,
    /// An S3 Bucket Key for SSE-KMS (s3SseBucketKeyEnabled; not a chart key).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_S3_SSE_BUCKET_KEY_ENABLED", num_args = 0..=1, default_missing_value = "true"))]
    pub s3_sse_bucket_key_enabled: Option<bool>,
    /// Secret holding the SSE-C key: SECRETS_DIR/NAME/KEY holds 32 bytes, raw or base64
    /// (s3SseCustomerKeySecretName; not a chart key).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "CATENA_S3_SSE_CUSTOMER_KEY_SECRET_NAME")
    )]
    pub s3_sse_customer_key_secret_name: Option<String>,
    /// Key of the SSE-C key file in that secret (s3SseCustomerKeySecretKey; default
    /// sse-c.key; not a chart key).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "CATENA_S3_SSE_CUSTOMER_KEY_SECRET_KEY")
    )]
    pub s3_sse_customer_key_secret_key: Option<String>,
    /// An Azure encryption scope (azureEncryptionScope; not a chart key): refused, as
    /// object_store 0.14 cannot send it; give the container a default scope instead.
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_AZURE_ENCRYPTION_SCOPE"))]
    pub azure_encryption_scope: Option<String>,
    /// A GCS KMS key (gcsKmsKeyName; not a chart key): refused, as object_store 0.14
    /// cannot send it; give the bucket a default KMS key instead.
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_GCS_KMS_KEY_NAME"))]
    pub gcs_kms_key_name: Option<String>,
    /// Secret holding the credentials file (secretName).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_SECRET_NAME"))]
    pub secret_name: Option<String>,
    /// Key of the credentials file in that secret (secretKeyName).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_SECRET_KEY_NAME"))]
    pub secret_key_name: Option<String>,
    /// Azure storage account for workload identity (azureStorageAccountName).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_AZURE_STORAGE_ACCOUNT_NAME"))]
    pub azure_storage_account_name: Option<String>,
    /// Use workload identity (serviceAccountName; top level in the chart's values).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_SERVICE_ACCOUNT_NAME"))]
    pub service_account_name: Option<String>,
    /// Where secrets are mounted: DIR/secretName/secretKeyName (default
    /// /var/run/secrets/catena; not a chart key).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_SECRETS_DIR"))]
    pub secrets_dir: Option<PathBuf>,
    /// Azure-compatible endpoint, such as Azurite's (not a chart key).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_AZURE_ENDPOINT"))]
    pub azure_endpoint: Option<String>,
    /// Use the Azurite emulator at AZURITE_BLOB_STORAGE_URL (not a chart key).
    #[cfg_attr(feature = "clap", arg(long, env = "CATENA_AZURE_USE_EMULATOR", num_args = 0..=1, default_missing_value = "true"))]
    pub azure_use_emulator: Option<bool>,
}

impl std::fmt::Debug for StorageOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("StorageOverrides");
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (k, v) in map.iter().filter(|(_, v)| !v.is_null()) {
                if k == "s3CACert" {
                    d.field(k, &"<set>");
                } else {
                    d.field(k, v);
                }
            }
        }
        d.finish()
    }
}

impl StorageConfig {
    /// This configuration with `overrides` laid over it (see [`StorageOverrides`]).
    pub fn with_overrides(mut self, o: &StorageOverrides) -> Self {
        fn text(slot: &mut Option<String>, value: &Option<String>) {
            if let Some(v) = value {
                *slot = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
            }
        }
        if o.s3_endpoint.is_some() || o.minio_endpoint.is_some() {
            self.s3_endpoint = None;
            self.minio_endpoint = None;
        }
        text(&mut self.s3_endpoint, &o.s3_endpoint);
        text(&mut self.minio_endpoint, &o.minio_endpoint);
        text(
            &mut self.s3_server_side_encryption,
            &o.s3_server_side_encryption,
        );
        text(&mut self.s3_sse_kms_key_id, &o.s3_sse_kms_key_id);
        if let Some(v) = o.s3_sse_bucket_key_enabled {
            self.s3_sse_bucket_key_enabled = v;
        }
        text(
            &mut self.s3_sse_customer_key_secret_name,
            &o.s3_sse_customer_key_secret_name,
        );
        text(
            &mut self.s3_sse_customer_key_secret_key,
            &o.s3_sse_customer_key_secret_key,
        );
        text(&mut self.azure_encryption_scope, &o.azure_encryption_scope);
        text(&mut self.gcs_kms_key_name, &o.gcs_kms_key_name);
        if o.s3_endpoint_tls.is_some() {
            self.s3_endpoint_tls = o.s3_endpoint_tls;
        }
        text(&mut self.s3_ca_cert, &o.s3_ca_cert);
        text(&mut self.s3_ca_secret_name, &o.s3_ca_secret_name);
        text(&mut self.s3_ca_secret_key, &o.s3_ca_secret_key);
        if let Some(v) = o.s3_skip_verify {
            self.s3_skip_verify = v;
        }
        if let Some(v) = o.s3_force_path_style {
            self.s3_force_path_style = v;
        }
        text(&mut self.s3_region, &o.s3_region);
        text(&mut self.secret_name, &o.secret_name);
        text(&mut self.secret_key_name, &o.secret_key_name);
        text(
            &mut self.azure_storage_account_name,
            &o.azure_storage_account_name,
        );
        text(&mut self.service_account_name, &o.service_account_name);
        if let Some(dir) = &o.secrets_dir {
            self.secrets_dir = dir.clone();
        }
        text(&mut self.azure_endpoint, &o.azure_endpoint);
        if let Some(v) = o.azure_use_emulator {
            self.azure_use_emulator = v;
        }
        self
    }
}

/// A built store: scoped to the configured prefix, with a description that is safe to
/// print, and the warnings the configuration earned (also logged with `tracing`).
#[derive(Clone)]
pub struct Storage {
    /// The store; keys are relative to the configured prefix.
    pub store: Arc<dyn ObjectStore>,
    /// Where it points, for people (`s3://bucket/prefix at https://endpoint`); no secrets.
    pub description: String,
    /// Warnings: deprecated keys, disabled verification.
    pub warnings: Vec<String>,
    /// The effective settings, for people and tests: endpoint, region, addressing style,
    /// TLS verification, CA, where credentials come from. Never a secret value.
    pub settings: Vec<(String, String)>,
    /// The directory of a local-directory store, `None` for other stores: interrupted
    /// uploads leave staging files there that no listing shows (see [`crate::staging`]).
    pub local_root: Option<std::path::PathBuf>,
    /// The store's ranged server-side copy, where it has one (see [`crate::assemble`]):
    /// S3 and S3-compatible stores, the local directory, memory. `None` for GCS and Azure,
    /// where aggregation copies through the client.
    pub server_copy: Option<Arc<dyn crate::assemble::ServerCopy>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("description", &self.description)
            .field("settings", &self.settings)
            .field(
                "server_copy",
                &self.server_copy.as_ref().map(|c| c.method()),
            )
            .finish_non_exhaustive()
    }
}

/// The seed writes unset values as `""`: treat them as absent.
fn given(o: &Option<String>) -> Option<&str> {
    o.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// How S3 requests name the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    /// `scheme://<bucket>.<endpoint host>[:port]/<key>`: AWS's way, the chart's default
    /// (`s3ForcePathStyle: false`).
    VirtualHosted,
    /// `<endpoint>/<bucket>/<key>` (`s3ForcePathStyle: true`).
    Path,
}

impl std::fmt::Display for Addressing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Addressing::VirtualHosted => "virtual-hosted",
            Addressing::Path => "path-style",
        })
    }
}

/// Whether `bucket` can be the first label of the endpoint's host name, or why not: an
/// endpoint that is an IP address or `localhost`, a bucket name that is not a DNS label,
/// or one with dots under TLS (they break the certificate match).
fn bucket_as_host_name(endpoint: Option<&url::Url>, bucket: &str) -> Result<(), String> {
    if let Some(url) = endpoint {
        match url.host() {
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
                return Err(
                    "the endpoint is an IP address, which cannot carry the bucket in its host name"
                        .into(),
                );
            }
            Some(url::Host::Domain("localhost")) => {
                return Err("the endpoint is localhost, whose subdomains do not resolve".into());
            }
            _ => {}
        }
    }
    let tls = endpoint.is_none_or(|u| u.scheme() == "https");
    let dns_label = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.'])
        && !bucket.contains("..");
    if !dns_label {
        return Err(format!("the bucket name {bucket:?} cannot be a host name"));
    }
    if tls && bucket.contains('.') {
        return Err(format!(
            "the bucket name {bucket:?} has dots, which break the TLS certificate match of a host name"
        ));
    }
    Ok(())
}

/// The endpoint with the bucket as the first label of its host name, unless the host
/// already starts with it (an endpoint given as the bucket's own address).
fn bucket_host_endpoint(url: &url::Url, bucket: &str) -> String {
    let host = url.host_str().unwrap_or_default();
    if host.starts_with(&format!("{bucket}.")) {
        return url.as_str().trim_end_matches('/').to_owned();
    }
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    format!("{}://{bucket}.{host}{port}{path}", url.scheme())
}

impl StorageConfig {
    /// Parses a storage URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (also `azure://`), `file:///absolute/path`, a plain absolute
    /// or relative directory path, or `memory://`.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let shown = url.split('?').next().unwrap_or("").to_owned();
        let invalid = |why: &str| Error::InvalidUrl {
            url: shown.clone(),
            why: why.to_owned(),
        };
        if url.contains('?') || url.contains('#') {
            return Err(invalid(
                "query strings and fragments are not accepted (put credentials in a secret file)",
            ));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err(invalid("it is empty"));
            }
            // A plain directory path.
            return Ok(Self {
                cloud_provider: CloudProvider::Local,
                local_path: PathBuf::from(url),
                ..Self::default()
            });
        };
        let provider = match scheme {
            "s3" => CloudProvider::Aws,
            "gs" => CloudProvider::Gcp,
            "az" | "azure" => CloudProvider::Azure,
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid("file URLs must be absolute: file:///path"));
                }
                return Ok(Self {
                    cloud_provider: CloudProvider::Local,
                    local_path: PathBuf::from(rest),
                    ..Self::default()
                });
            }
            "memory" => {
                return Ok(Self {
                    cloud_provider: CloudProvider::Memory,
                    prefix: rest.trim_matches('/').to_owned(),
                    ..Self::default()
                });
            }
            _ => return Err(invalid("unknown scheme")),
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("the bucket (container) name is missing"));
        }
        if bucket.contains('@') || bucket.contains(':') {
            return Err(invalid(
                "credentials or ports do not belong in the bucket name",
            ));
        }
        Ok(Self {
            cloud_provider: provider,
            bucket_name: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            ..Self::default()
        })
    }

    /// The path of a secret file: `<secretsDir>/<name>/<key>`.
    fn secret_path(&self, name: &str, key: &str, name_key: &str) -> Result<PathBuf, Error> {
        for (what, value) in [(name_key, name), ("its key", key)] {
            if value.contains('/') || value.contains("..") || value.contains('\0') {
                return Err(Error::config(format!(
                    "{what} {value:?} must be a plain name (no '/' or '..')"
                )));
            }
        }
        Ok(self.secrets_dir.join(name).join(key))
    }

    /// The credentials file named by `secretName` / `secretKeyName`, if any.
    pub fn credentials_file(&self) -> Result<Option<PathBuf>, Error> {
        match (given(&self.secret_name), given(&self.secret_key_name)) {
            (None, None) => Ok(None),
            // `credentials` is the key's default: a copy of the chart's values may carry it.
            (None, Some(key)) if key != "credentials" => Err(Error::config(
                "secretKeyName is set but secretName is not: set secretName to the secret holding the credentials file",
            )),
            (None, Some(_)) => Ok(None),
            (Some(name), key) => self
                .secret_path(name, key.unwrap_or("credentials"), "secretName")
                .map(Some),
        }
    }

    /// The effective S3 endpoint URL (with scheme), from `s3Endpoint` / `minioEndpoint` and
    /// `s3EndpointTLS`, with the warnings it earned.
    fn s3_endpoint(&self, warnings: &mut Vec<String>) -> Result<Option<String>, Error> {
        let endpoint = match (given(&self.s3_endpoint), given(&self.minio_endpoint)) {
            (Some(s3), Some(minio)) if s3 != minio => {
                return Err(Error::config(
                    "s3Endpoint and minioEndpoint are both set and differ: minioEndpoint is a deprecated alias, remove it",
                ));
            }
            (Some(s3), _) => Some(s3),
            (None, Some(minio)) => {
                warnings.push(
                    "minioEndpoint is deprecated: use s3Endpoint (same value) instead".to_owned(),
                );
                Some(minio)
            }
            (None, None) => None,
        };
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let with_scheme = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            // `s3EndpointTLS: false` is the chart's default, so it does not contradict an
            // https:// endpoint (the scheme given wins); `true` asks for TLS, and an http://
            // endpoint would silently send everything in clear: that is refused.
            if self.s3_endpoint_tls == Some(true) && !endpoint.starts_with("https://") {
                return Err(Error::config(format!(
                    "s3EndpointTLS is true but s3Endpoint {endpoint:?} is http://: use an https:// endpoint or set s3EndpointTLS: false"
                )));
            }
            endpoint.to_owned()
        } else {
            let scheme = if self.s3_endpoint_tls.unwrap_or(true) {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{endpoint}")
        };
        let parsed = url::Url::parse(&with_scheme).map_err(|e| {
            Error::config(format!("s3Endpoint {endpoint:?} is not a valid URL: {e}"))
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::config(
                "s3Endpoint must not carry credentials: put them in the secret file",
            ));
        }
        Ok(Some(with_scheme.trim_end_matches('/').to_owned()))
    }

    /// The CA certificate (PEM bytes) from `s3CACert` or `s3CASecretName`/`s3CASecretKey`.
    fn s3_ca(&self) -> Result<Option<Vec<u8>>, Error> {
        match (given(&self.s3_ca_cert), given(&self.s3_ca_secret_name)) {
            (Some(_), Some(_)) => Err(Error::config(
                "s3CACert and s3CASecretName are both set: give the CA one way only",
            )),
            (Some(b64), None) => {
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(b64.split_whitespace().collect::<String>())
                    .map_err(|e| {
                        Error::config(format!(
                            "s3CACert is not valid base64 ({e}): give the base64 of the PEM file, e.g. `base64 -w0 ca.crt`"
                        ))
                    })?;
                Ok(Some(pem))
            }
            (None, Some(name)) => {
                let key = given(&self.s3_ca_secret_key).unwrap_or("ca.crt");
                let path = self.secret_path(name, key, "s3CASecretName")?;
                let pem = std::fs::read(&path).map_err(|e| Error::CaFile {
                    path: path.clone(),
                    why: format!(
                        "cannot read it ({e}); it is named by s3CASecretName/s3CASecretKey under the secrets directory"
                    ),
                })?;
                Ok(Some(pem))
            }
            (None, None) => {
                // `ca.crt` is the key's default: a copy of the chart's values may carry it.
                if given(&self.s3_ca_secret_key).is_some_and(|k| k != "ca.crt") {
                    return Err(Error::config(
                        "s3CASecretKey is set but s3CASecretName is not: set s3CASecretName",
                    ));
                }
                Ok(None)
            }
        }
    }

    /// Client options shared by every cloud store: timeouts that suit large parts, and
    /// the TLS settings.
    fn client_options(
        &self,
        ca: Option<&[u8]>,
        warnings: &mut Vec<String>,
    ) -> Result<ClientOptions, Error> {
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(300))
            .with_pool_idle_timeout(Duration::from_secs(60));
        if let Some(pem) = ca {
            let certs = object_store::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::config(format!("the CA certificate is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::config(
                    "the CA certificate holds no certificate: give a PEM file with -----BEGIN CERTIFICATE-----",
                ));
            }
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
        }
        if self.s3_skip_verify {
            let warning = "s3SkipVerify is true: TLS certificates are NOT verified, anyone on the network path can read and alter backups; give the CA with s3CACert instead".to_owned();
            tracing::warn!("{warning}");
            warnings.push(warning);
            options = options.with_allow_invalid_certificates(true);
        }
        Ok(options)
    }

    fn retry() -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 10,
            retry_timeout: Duration::from_secs(600),
        }
    }

    fn check_keys_apply(&self) -> Result<(), Error> {
        let s3_keys = [
            ("s3Endpoint", given(&self.s3_endpoint).is_some()),
            // `false` is the chart's default: a copy of its values file has it everywhere.
            ("s3EndpointTLS", self.s3_endpoint_tls == Some(true)),
            ("s3CACert", given(&self.s3_ca_cert).is_some()),
            ("s3CASecretName", given(&self.s3_ca_secret_name).is_some()),
            ("s3SkipVerify", self.s3_skip_verify),
            ("s3ForcePathStyle", self.s3_force_path_style),
            ("s3Region", given(&self.s3_region).is_some()),
            ("minioEndpoint", given(&self.minio_endpoint).is_some()),
            (
                "s3ServerSideEncryption",
                given(&self.s3_server_side_encryption).is_some(),
            ),
            ("s3SseKmsKeyId", given(&self.s3_sse_kms_key_id).is_some()),
            ("s3SseBucketKeyEnabled", self.s3_sse_bucket_key_enabled),
            (
                "s3SseCustomerKeySecretName",
                given(&self.s3_sse_customer_key_secret_name).is_some(),
            ),
            (
                "s3SseCustomerKeySecretKey",
                given(&self.s3_sse_customer_key_secret_key).is_some(),
            ),
        ];
        if self.cloud_provider != CloudProvider::Aws
            && let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set)
        {
            return Err(Error::config(format!(
                "{key} applies only to cloudProvider \"aws\" (S3 and S3-compatible stores), but cloudProvider is {:?}: remove {key} or set cloudProvider: aws",
                self.provider_name()
            )));
        }
        if self.cloud_provider != CloudProvider::Azure
            && given(&self.azure_storage_account_name).is_some()
        {
            return Err(Error::config(format!(
                "azureStorageAccountName applies only to cloudProvider \"azure\", but cloudProvider is {:?}",
                self.provider_name()
            )));
        }
        // Never write unencrypted because a setting could not be sent: refuse it.
        if let Some(scope) = given(&self.azure_encryption_scope) {
            return Err(Error::config(format!(
                "azureEncryptionScope {scope:?} cannot be honoured: the Azure client Catena uses (object_store 0.14) cannot send an encryption scope, and Catena will not write without the encryption asked for. Give the container {scope:?} as its default scope instead (az storage container create --default-encryption-scope {scope} --prevent-encryption-scope-override true): every blob Catena writes then gets it. Then remove azureEncryptionScope"
            )));
        }
        if let Some(key) = given(&self.gcs_kms_key_name) {
            return Err(Error::config(format!(
                "gcsKmsKeyName {key:?} cannot be honoured: the GCS client Catena uses (object_store 0.14) cannot send a KMS key, and Catena will not write without the encryption asked for. Make it the bucket's default key instead (gcloud storage buckets update gs://BUCKET --default-encryption-key={key}): every object Catena writes then gets it. Then remove gcsKmsKeyName"
            )));
        }
        self.sse()?;
        if given(&self.s3_ca_cert).is_some() && self.s3_skip_verify {
            return Err(Error::config(
                "s3CACert and s3SkipVerify are both set: with a CA, verification works; remove s3SkipVerify",
            ));
        }
        if given(&self.s3_ca_secret_name).is_some() && self.s3_skip_verify {
            return Err(Error::config(
                "s3CASecretName and s3SkipVerify are both set: with a CA, verification works; remove s3SkipVerify",
            ));
        }
        if given(&self.service_account_name).is_some() && given(&self.secret_name).is_some() {
            return Err(Error::config(
                "serviceAccountName (workload identity) and secretName (a credentials file) are both set: choose one",
            ));
        }
        Ok(())
    }

    /// The HTTP client of a store's server copy, built by the store's connector and client
    /// options (CA, skip-verify, timeouts), and the repository prefix its requests name
    /// (the store behind the repository adds it itself).
    fn copy_client(
        &self,
        ca: Option<&[u8]>,
        allow_http: bool,
        store: &str,
    ) -> Result<
        (
            object_store::client::HttpClient,
            Option<object_store::path::Path>,
        ),
        Error,
    > {
        let options = self
            .client_options(ca, &mut Vec::new())?
            .with_allow_http(allow_http);
        let http = crate::fail_fast::FailFastTls
            .connect(&options)
            .map_err(|e| Error::config(format!("the {store} client could not be built ({e})")))?;
        let prefix = self.prefix.trim_matches('/');
        Ok((
            http,
            (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix)),
        ))
    }

    /// The S3 server-side encryption asked for, checked. Nothing is ever written
    /// unencrypted because a setting was not understood.
    fn sse(&self) -> Result<Option<Sse>, Error> {
        let kind = match given(&self.s3_server_side_encryption) {
            None => None,
            Some("AES256") => Some("AES256"),
            Some("aws:kms") => Some("aws:kms"),
            Some("aws:kms:dsse") => Some("aws:kms:dsse"),
            Some(other) if other.eq_ignore_ascii_case("sse-c") => Some("SSE-C"),
            Some(other) => {
                return Err(Error::config(format!(
                    "s3ServerSideEncryption {other:?} is not AES256 (SSE-S3), aws:kms (SSE-KMS), aws:kms:dsse or SSE-C: set one of them, or remove the key to use the bucket's default encryption"
                )));
            }
        };
        let customer_key_file = match (
            kind == Some("SSE-C"),
            given(&self.s3_sse_customer_key_secret_name),
        ) {
            (true, Some(name)) => Some(self.secret_path(
                name,
                given(&self.s3_sse_customer_key_secret_key).unwrap_or("sse-c.key"),
                "s3SseCustomerKeySecretName",
            )?),
            (true, None) => {
                return Err(Error::config(
                    "s3ServerSideEncryption SSE-C needs the key: set s3SseCustomerKeySecretName to the secret holding it (a file of 32 bytes, raw or base64, under the secrets directory)",
                ));
            }
            (false, Some(_)) => {
                return Err(Error::config(
                    "s3SseCustomerKeySecretName is set but s3ServerSideEncryption is not SSE-C: set s3ServerSideEncryption: SSE-C, or remove s3SseCustomerKeySecretName",
                ));
            }
            (false, None) => {
                if given(&self.s3_sse_customer_key_secret_key).is_some() {
                    return Err(Error::config(
                        "s3SseCustomerKeySecretKey is set but s3SseCustomerKeySecretName is not: set s3SseCustomerKeySecretName",
                    ));
                }
                None
            }
        };
        let key = given(&self.s3_sse_kms_key_id);
        let kms = matches!(kind, Some("aws:kms" | "aws:kms:dsse"));
        if !kms && key.is_some() {
            return Err(Error::config(
                "s3SseKmsKeyId is set but s3ServerSideEncryption is not aws:kms: set s3ServerSideEncryption: aws:kms (or aws:kms:dsse), or remove s3SseKmsKeyId",
            ));
        }
        if !kms && self.s3_sse_bucket_key_enabled {
            return Err(Error::config(
                "s3SseBucketKeyEnabled applies to SSE-KMS: set s3ServerSideEncryption: aws:kms, or remove s3SseBucketKeyEnabled",
            ));
        }
        Ok(kind.map(|kind| Sse {
            kind,
            customer_key_file,
            kms_key: key.map(str::to_owned),
            bucket_key: self.s3_sse_bucket_key_enabled,
        }))
    }

    fn provider_name(&self) -> &'static str {
        match self.cloud_provider {
            CloudProvider::Local => "",
            CloudProvider::Aws => "aws",
            CloudProvider::Gcp => "gcp",
            CloudProvider::Azure => "azure",
            CloudProvider::Memory => "memory",
        }
    }

    fn require_bucket(&self) -> Result<&str, Error> {
        let bucket = self.bucket_name.trim();
        if bucket.is_empty() {
            return Err(Error::config(format!(
                "bucketName is empty: cloudProvider {:?} needs the bucket{} to write to",
                self.provider_name(),
                if self.cloud_provider == CloudProvider::Azure {
                    " (the container)"
                } else {
                    ""
                }
            )));
        }
        Ok(bucket)
    }

    /// How S3 requests name the bucket, and why: path style with `s3ForcePathStyle`, or when
    /// the bucket cannot be a host name (an endpoint that is an IP address or `localhost`, a
    /// bucket name that is not a DNS label); otherwise virtual-hosted, as AWS says.
    fn addressing(&self, endpoint: Option<&url::Url>, bucket: &str) -> (Addressing, String) {
        if self.s3_force_path_style {
            return (Addressing::Path, "s3ForcePathStyle is true".into());
        }
        match bucket_as_host_name(endpoint, bucket) {
            Err(why) => (Addressing::Path, why),
            Ok(()) => (
                Addressing::VirtualHosted,
                "s3ForcePathStyle is false, the chart's default".into(),
            ),
        }
    }

    /// The S3 builder for this configuration, before credentials (exposed for tests that
    /// check every key reaches it).
    pub fn s3_builder(&self, warnings: &mut Vec<String>) -> Result<AmazonS3Builder, Error> {
        self.s3_builder_as(warnings, None).map(|(b, _, _)| b)
    }

    /// The S3 builder, addressing the bucket as `forced` says or as [`Self::addressing`]
    /// decides; also returns the addressing used and why.
    fn s3_builder_as(
        &self,
        warnings: &mut Vec<String>,
        forced: Option<Addressing>,
    ) -> Result<(AmazonS3Builder, Addressing, String), Error> {
        let bucket = self.require_bucket()?;
        let ca = self.s3_ca()?;
        let endpoint = self.s3_endpoint(warnings)?;
        if ca.is_some()
            && endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        {
            return Err(Error::config(
                "a CA certificate (s3CACert / s3CASecretName) is given but s3Endpoint is http://: a CA only matters with TLS; use https:// or remove the CA",
            ));
        }
        // UNSIGNED-PAYLOAD: the request headers are signed, the body is not hashed a second
        // time for the signature (~0.3 CPU-s per GiB). Integrity of the body rests on TLS
        // and on Catena's own SHA-256 of every block and object, verified on every read.
        // The self-test's other addressing style may name a host that does not exist: it
        // is tried once, not retried for minutes.
        let retry = match forced {
            None => Self::retry(),
            Some(_) => RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 0,
                retry_timeout: Duration::from_secs(10),
            },
        };
        let mut b = AmazonS3Builder::new()
            .with_unsigned_payload(true)
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_http_connector(crate::fail_fast::FailFastTls)
            .with_client_options(self.client_options(ca.as_deref(), warnings)?);
        if let Some(region) = given(&self.s3_region) {
            b = b.with_region(region);
        }
        let parsed = endpoint
            .as_deref()
            .map(url::Url::parse)
            .transpose()
            .map_err(|e| Error::config(format!("s3Endpoint is not a valid URL: {e}")))?;
        let (addressing, why) = match forced {
            Some(Addressing::VirtualHosted) => {
                // Where the bucket cannot be a host name, do not try (object_store panics
                // on a host name that looks like a broken IP address).
                bucket_as_host_name(parsed.as_ref(), bucket).map_err(|why| {
                    Error::config(format!("virtual-hosted addressing is not possible: {why}"))
                })?;
                (Addressing::VirtualHosted, "forced by the probe".to_owned())
            }
            Some(Addressing::Path) => (Addressing::Path, "forced by the probe".to_owned()),
            None => self.addressing(parsed.as_ref(), bucket),
        };
        b = b.with_virtual_hosted_style_request(addressing == Addressing::VirtualHosted);
        if let (Some(endpoint), Some(url)) = (&endpoint, &parsed) {
            // object_store sends virtual-hosted requests to the endpoint as given, so the
            // endpoint must carry the bucket in its host name; without it, the server takes
            // the first segment of the key for the bucket and writes somewhere else.
            let request_endpoint = match addressing {
                Addressing::Path => endpoint.clone(),
                Addressing::VirtualHosted => bucket_host_endpoint(url, bucket),
            };
            b = b
                .with_endpoint(request_endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        Ok((b, addressing, why))
    }

    /// Validates the configuration and builds the store. Reads credentials files; contacts
    /// no server (see [`crate::probe()`] for that).
    pub async fn build(&self) -> Result<Storage, Error> {
        self.build_as(None).await
    }

    /// Builds an S3 store that names the bucket as `addressing` says, whatever
    /// `s3ForcePathStyle` and the endpoint would choose: for the endpoint self-test, which
    /// tries both. Other providers build as [`Self::build`] does.
    pub async fn build_addressed(&self, addressing: Addressing) -> Result<Storage, Error> {
        self.build_as(Some(addressing)).await
    }

    async fn build_as(&self, forced: Option<Addressing>) -> Result<Storage, Error> {
        self.check_keys_apply()?;
        let mut warnings = Vec::new();
        let mut settings: Vec<(String, String)> = vec![(
            "provider".into(),
            match self.cloud_provider {
                CloudProvider::Local => "local directory".to_owned(),
                _ => self.provider_name().to_owned(),
            },
        )];
        let mut server_copy: Option<Arc<dyn crate::assemble::ServerCopy>> = None;
        let (store, description): (Arc<dyn ObjectStore>, String) = match self.cloud_provider {
            CloudProvider::Memory => {
                server_copy = Some(Arc::new(crate::assemble::InProcessCopy));
                (Arc::new(InMemory::new()), "memory://".to_owned())
            }
            CloudProvider::Local => {
                let path = &self.local_path;
                std::fs::create_dir_all(path).map_err(|e| {
                    Error::config(format!(
                        "cannot create the local backup directory {} ({e}); set localPath (or --to-path) to a writable directory",
                        path.display()
                    ))
                })?;
                let fs = LocalFileSystem::new_with_prefix(path).map_err(|e| {
                    Error::config(format!("local backup directory {}: {e}", path.display()))
                })?;
                (Arc::new(fs), format!("file://{}", path.display()))
            }
            CloudProvider::Aws => {
                let (mut b, addressing, why) = self.s3_builder_as(&mut warnings, forced)?;
                let creds = match self.credentials_file()? {
                    Some(path) => AwsCredentialSource::File(path),
                    None => AwsCredentialSource::Ambient,
                };
                settings.push((
                    "credentials".into(),
                    match &creds {
                        AwsCredentialSource::File(p) => format!("file {}", p.display()),
                        AwsCredentialSource::Ambient => {
                            "ambient (workload identity / environment)".into()
                        }
                    },
                ));
                let (b2, region) = credentials::apply_aws(b, creds).await?;
                b = b2;
                if given(&self.s3_region).is_none()
                    && let Some(region) = region
                {
                    b = b.with_region(region);
                }
                use object_store::aws::AmazonS3ConfigKey as K;
                // object_store's own keys (its encryption key enum is not exported).
                let encryption = |name: &str| {
                    name.parse::<K>()
                        .map_err(|e| Error::config(format!("S3 encryption setting {name}: {e}")))
                };
                let mut sse_c = None;
                match self.sse()? {
                    Some(Sse {
                        customer_key_file: Some(path),
                        ..
                    }) => {
                        let key = crate::assemble::SseCustomerKey::read(&path)?;
                        b = b
                            .with_config(encryption("aws_server_side_encryption")?, "sse-c")
                            .with_config(encryption("aws_sse_customer_key_base64")?, key.base64());
                        settings.push((
                            "server_side_encryption".into(),
                            format!("SSE-C, the key in {}", path.display()),
                        ));
                        sse_c = Some(key);
                    }
                    Some(Sse {
                        kind,
                        kms_key: key,
                        bucket_key,
                        ..
                    }) => {
                        b = b.with_config(encryption("aws_server_side_encryption")?, kind);
                        if let Some(key) = &key {
                            b = b.with_config(encryption("aws_sse_kms_key_id")?, key);
                        }
                        if bucket_key {
                            b = b.with_config(encryption("aws_sse_bucket_key_enabled")?, "true");
                        }
                        settings.push((
                            "server_side_encryption".into(),
                            format!(
                                "{kind}{}{}",
                                key.map(|k| format!(", key {k}")).unwrap_or_default(),
                                if bucket_key { ", bucket key" } else { "" }
                            ),
                        ));
                    }
                    None => settings.push((
                        "server_side_encryption".into(),
                        "the bucket's default".into(),
                    )),
                }
                for (name, key) in [
                    ("bucket", K::Bucket),
                    ("endpoint", K::Endpoint),
                    ("region", K::Region),
                    ("virtual_hosted_style", K::VirtualHostedStyleRequest),
                ] {
                    if let Some(v) = b.get_config_value(&key) {
                        settings.push((name.into(), v));
                    }
                }
                settings.push((
                    "addressing".into(),
                    format!(
                        "{addressing}: requests go to {} ({why})",
                        match (addressing, b.get_config_value(&K::Endpoint)) {
                            (Addressing::VirtualHosted, Some(e)) => format!("{e}/<key>"),
                            (Addressing::Path, Some(e)) =>
                                format!("{e}/{}/<key>", self.bucket_name.trim()),
                            (Addressing::VirtualHosted, None) => format!(
                                "https://{}.s3.<region>.amazonaws.com/<key>",
                                self.bucket_name.trim()
                            ),
                            (Addressing::Path, None) => format!(
                                "https://s3.<region>.amazonaws.com/{}/<key>",
                                self.bucket_name.trim()
                            ),
                        }
                    ),
                ));
                let endpoint = self.s3_endpoint(&mut Vec::new())?;
                let region = b
                    .get_config_value(&K::Region)
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let virtual_hosted = b
                    .get_config_value(&K::VirtualHostedStyleRequest)
                    .is_some_and(|v| v == "true");
                let request_endpoint = b.get_config_value(&K::Endpoint);
                let store = b.build().map_err(|e| {
                    Error::config(format!(
                        "the S3 client could not be built ({e}); check s3Endpoint, s3Region and the CA given by s3CACert / s3CASecretName"
                    ))
                })?;
                let at = endpoint.map(|e| format!(" at {e}")).unwrap_or_default();
                let store = Arc::new(store);
                let (http, prefix) = self.copy_client(
                    self.s3_ca()?.as_deref(),
                    request_endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                    "S3",
                )?;
                server_copy = Some(Arc::new(
                    crate::assemble::S3Copy::new(
                        Arc::clone(&store),
                        http,
                        self.bucket_name.trim(),
                        &region,
                        request_endpoint.as_deref(),
                        virtual_hosted,
                        prefix,
                    )
                    .with_sse_c(sse_c),
                ));
                (store, format!("s3://{}{at}", self.bucket_name))
            }
            CloudProvider::Gcp => {
                let bucket = self.require_bucket()?;
                let mut b = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(bucket)
                    .with_retry(Self::retry())
                    .with_http_connector(crate::fail_fast::FailFastTls)
                    .with_client_options(self.client_options(None, &mut warnings)?);
                if let Some(path) = self.credentials_file()? {
                    credentials::check_readable(&path)?;
                    settings.push((
                        "credentials".into(),
                        format!("service account file {}", path.display()),
                    ));
                    b = b.with_service_account_path(path.to_string_lossy());
                } else {
                    settings.push((
                        "credentials".into(),
                        "application default credentials".into(),
                    ));
                    b = credentials::gcp_ambient(b);
                }
                let store = b.build().map_err(|e| Error::config(format!("GCS: {e}")))?;
                (Arc::new(store), format!("gs://{bucket}"))
            }
            CloudProvider::Azure => {
                let container = self.require_bucket()?;
                let mut b = MicrosoftAzureBuilder::new()
                    .with_container_name(container)
                    .with_retry(Self::retry())
                    .with_http_connector(crate::fail_fast::FailFastTls)
                    .with_client_options(self.client_options(None, &mut warnings)?);
                if self.azure_use_emulator {
                    b = b.with_use_emulator(true);
                }
                if let Some(endpoint) = given(&self.azure_endpoint) {
                    b = b
                        .with_endpoint(endpoint.to_owned())
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                match self.credentials_file()? {
                    Some(path) => {
                        let (account, key) = credentials::read_azure_file(&path)?;
                        settings.push((
                            "credentials".into(),
                            format!("account key file {}", path.display()),
                        ));
                        settings.push(("account".into(), account.clone()));
                        b = b.with_account(account).with_access_key(key.expose());
                    }
                    None if self.azure_use_emulator => {
                        settings
                            .push(("credentials".into(), "emulator development account".into()));
                    }
                    None => {
                        let account = given(&self.azure_storage_account_name).ok_or_else(|| {
                            Error::config(
                                "cloudProvider azure without secretName needs azureStorageAccountName (workload identity): set it to the storage account",
                            )
                        })?;
                        settings.push((
                            "credentials".into(),
                            "workload identity (federated token)".into(),
                        ));
                        settings.push(("account".into(), account.to_owned()));
                        b = credentials::azure_ambient(b.with_account(account));
                    }
                }
                let store = Arc::new(
                    b.build()
                        .map_err(|e| Error::config(format!("Azure: {e}")))?,
                );
                let (http, prefix) = self.copy_client(
                    None,
                    self.azure_use_emulator
                        || given(&self.azure_endpoint).is_some_and(|e| e.starts_with("http://")),
                    "Azure",
                )?;
                server_copy = Some(Arc::new(crate::assemble::AzureCopy::new(
                    Arc::clone(&store),
                    http,
                    prefix,
                )));
                (store, format!("az://{container}"))
            }
        };
        let prefix = self.prefix.trim_matches('/');
        let (store, description): (Arc<dyn ObjectStore>, String) = if prefix.is_empty() {
            (store, description)
        } else {
            let p = object_store::path::Path::parse(prefix)
                .map_err(|e| Error::config(format!("prefix {prefix:?}: {e}")))?;
            (
                Arc::new(PrefixStore::new(store, p)),
                format!("{description}/{prefix}"),
            )
        };
        for w in &warnings {
            tracing::warn!(storage = %description, "{w}");
        }
        if matches!(
            self.cloud_provider,
            CloudProvider::Aws | CloudProvider::Gcp | CloudProvider::Azure
        ) {
            settings.push((
                "tls_verify".into(),
                if self.s3_skip_verify { "off" } else { "on" }.into(),
            ));
            let ca = match (given(&self.s3_ca_cert), given(&self.s3_ca_secret_name)) {
                (Some(_), _) => "s3CACert".to_owned(),
                (None, Some(name)) => format!("file from secret {name}"),
                (None, None) => "system roots".to_owned(),
            };
            settings.push(("ca".into(), ca));
        }
        if !self.prefix.trim_matches('/').is_empty() {
            settings.push(("prefix".into(), self.prefix.trim_matches('/').to_owned()));
        }
        let local_root = (self.cloud_provider == CloudProvider::Local).then(|| {
            let mut root = self.local_path.clone();
            for part in self.prefix.split('/').filter(|p| !p.is_empty()) {
                root.push(part);
            }
            root
        });
        if let Some(root) = &local_root {
            server_copy = Some(Arc::new(crate::assemble::LocalCopy::new(root)?));
        }
        Ok(Storage {
            store: Arc::new(NamedStore::new(store, description.clone())),
            description,
            warnings,
            settings,
            local_root,
            server_copy,
        })
    }
}
