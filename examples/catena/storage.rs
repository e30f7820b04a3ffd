//! The storage flags: every storage key of the chart as a flag and a `CATENA_*` variable, and the one merge of values file, URL and flags.

use std::path::PathBuf;

use catena::StorageConfig;
use catena::storage_backends::StorageOverrides;
use catena::values::Values;
use clap::Args;

/// Storage settings beyond the URL: every storage key of the chart, as flags and variables.
/// The field names are the chart's keys (`StorageOverrides`, which these become, refuses any
/// other), so flags, environment and values file cannot drift apart.
#[derive(Args, Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StorageFlags {
    /// S3-compatible endpoint (s3Endpoint).
    #[arg(long, env = "CATENA_S3_ENDPOINT")]
    pub(crate) s3_endpoint: Option<String>,
    /// TLS for an endpoint given without scheme (s3EndpointTLS).
    #[arg(long, env = "CATENA_S3_ENDPOINT_TLS", num_args = 0..=1, default_missing_value = "true")]
    #[serde(rename = "s3EndpointTLS")]
    pub(crate) s3_endpoint_tls: Option<bool>,
    /// CA certificate, base64 of PEM (s3CACert).
    #[arg(long, env = "CATENA_S3_CA_CERT", hide_env_values = true)]
    #[serde(rename = "s3CACert")]
    pub(crate) s3_ca_cert: Option<String>,
    /// Secret holding a CA file (s3CASecretName).
    #[arg(long, env = "CATENA_S3_CA_SECRET_NAME")]
    #[serde(rename = "s3CASecretName")]
    pub(crate) s3_ca_secret_name: Option<String>,
    /// Key of the CA file in that secret (s3CASecretKey).
    #[arg(long, env = "CATENA_S3_CA_SECRET_KEY")]
    #[serde(rename = "s3CASecretKey")]
    pub(crate) s3_ca_secret_key: Option<String>,
    /// Skip TLS verification (s3SkipVerify; dangerous).
    #[arg(long, env = "CATENA_S3_SKIP_VERIFY", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) s3_skip_verify: Option<bool>,
    /// Path-style requests (s3ForcePathStyle).
    #[arg(long, env = "CATENA_S3_FORCE_PATH_STYLE", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) s3_force_path_style: Option<bool>,
    /// Region (s3Region).
    #[arg(long, env = "CATENA_S3_REGION")]
    pub(crate) s3_region: Option<String>,
    /// Deprecated alias of --s3-endpoint (minioEndpoint).
    #[arg(long, env = "CATENA_MINIO_ENDPOINT")]
    pub(crate) minio_endpoint: Option<String>,
    /// Secret holding the credentials file (secretName).
    #[arg(long, env = "CATENA_SECRET_NAME")]
    pub(crate) secret_name: Option<String>,
    /// Key of the credentials file in that secret (secretKeyName).
    #[arg(long, env = "CATENA_SECRET_KEY_NAME")]
    pub(crate) secret_key_name: Option<String>,
    /// Azure storage account for workload identity (azureStorageAccountName).
    #[arg(long, env = "CATENA_AZURE_STORAGE_ACCOUNT_NAME")]
    pub(crate) azure_storage_account_name: Option<String>,
    /// Use workload identity (serviceAccountName).
    #[arg(long, env = "CATENA_SERVICE_ACCOUNT_NAME")]
    pub(crate) service_account_name: Option<String>,
    /// Where secrets are mounted: <dir>/<secretName>/<secretKeyName> (default
    /// /var/run/secrets/catena).
    #[arg(long, env = "CATENA_SECRETS_DIR")]
    pub(crate) secrets_dir: Option<PathBuf>,
    /// Azure-compatible endpoint (Azurite).
    #[arg(long, env = "CATENA_AZURE_ENDPOINT")]
    pub(crate) azure_endpoint: Option<String>,
    /// Use the Azurite emulator (AZURITE_BLOB_STORAGE_URL).
    #[arg(long, env = "CATENA_AZURE_USE_EMULATOR", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) azure_use_emulator: Option<bool>,
}

impl StorageFlags {
    /// The flags that are set, as overrides of the chart's keys.
    pub(crate) fn overrides(&self) -> Result<StorageOverrides, String> {
        serde_json::to_value(self)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("storage flags: {e}"))
    }

    /// Where a command's backups are: the values file's storage keys, then the URL (which
    /// names provider, bucket and prefix, or the directory), then flags and environment
    /// over both. The one place storage settings are merged.
    pub(crate) fn config(
        &self,
        url: Option<&str>,
        values: Option<&Values>,
    ) -> Result<StorageConfig, String> {
        catena::values::storage_config(url, values, &self.overrides()?).map_err(|e| e.to_string())
    }
}
