//! Credentials: the three files the seed tells users to create, and ambient (workload
//! identity) credentials when no file is given.
//!
//! - AWS: a shared-credentials file (the seed writes its section as `[ default ]`, with
//!   spaces, and may put `region` in it). Parsed by `aws-config`, not by hand, and bridged
//!   into object_store's [`CredentialProvider`] with caching and refresh before expiry.
//! - GCP: a service-account JSON key file, handed to object_store.
//! - Azure: a file of `AZURE_STORAGE_ACCOUNT_NAME=` / `AZURE_STORAGE_ACCOUNT_KEY=` lines.
//!
//! Ambient: AWS static keys from the environment, else aws-config's profile chain (profiles,
//! SSO, `credential_process`) when a profile is configured, else object_store's own chain
//! (web identity, ECS, IMDS); GCP application default credentials / metadata server; Azure
//! federated token (workload identity) with `azureStorageAccountName`.
//!
//! No secret value is ever logged, put in an error, or printed by `Debug`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::meta::region::ProvideRegion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use object_store::CredentialProvider;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;

use crate::Error;

/// A secret string: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself: hand it to the client that needs it, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where AWS credentials come from.
#[derive(Clone, Debug)]
pub enum AwsCredentialSource {
    /// A shared-credentials file (profile `default`).
    File(PathBuf),
    /// The environment: workload identity, instance roles, profiles.
    Ambient,
}

pub(crate) fn check_readable(path: &Path) -> Result<(), Error> {
    std::fs::metadata(path)
        .map_err(|e| Error::CredentialsFile {
            path: path.to_owned(),
            why: format!(
                "cannot read it ({e}); check secretName / secretKeyName and secretsDir, or use serviceAccountName for workload identity"
            ),
        })
        .map(|_| ())
}

/// Adds AWS credentials to `b`; returns the builder and the region found alongside the
/// credentials (the seed's file has one), if any.
pub(crate) async fn apply_aws(
    b: AmazonS3Builder,
    source: AwsCredentialSource,
) -> Result<(AmazonS3Builder, Option<String>), Error> {
    match source {
        AwsCredentialSource::File(path) => {
            check_readable(&path)?;
            let files = EnvConfigFiles::builder()
                .include_default_config_file(false)
                .include_default_credentials_file(false)
                .with_file(EnvConfigFileKind::Credentials, &path)
                .build();
            let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_files(files.clone())
                .profile_name("default")
                .build();
            let region = aws_config::profile::ProfileFileRegionProvider::builder()
                .profile_files(files)
                .profile_name("default")
                .build()
                .region()
                .await
                .map(|r| r.to_string());
            let bridge = AwsConfigBridge::new(SharedCredentialsProvider::new(provider));
            // Fail now, with the file's name, rather than on the first request.
            bridge.fetch().await.map_err(|e| Error::CredentialsFile {
                path: path.clone(),
                why: format!(
                    "no usable [default] profile ({e}); the file needs aws_access_key_id and aws_secret_access_key under [default]"
                ),
            })?;
            Ok((b.with_credentials(Arc::new(bridge)), region))
        }
        AwsCredentialSource::Ambient => {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            if let (Some(id), Some(secret)) =
                (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
            {
                let mut b = b.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = env("AWS_SESSION_TOKEN") {
                    b = b.with_token(token);
                }
                return Ok((b, env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"))));
            }
            let home_aws = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws"));
            let has_profile = env("AWS_PROFILE").is_some()
                || env("AWS_CONFIG_FILE").is_some()
                || env("AWS_SHARED_CREDENTIALS_FILE").is_some()
                || home_aws
                    .is_some_and(|d| d.join("config").exists() || d.join("credentials").exists());
            if has_profile && env("AWS_WEB_IDENTITY_TOKEN_FILE").is_none() {
                let chain =
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .build()
                        .await;
                let region = aws_config::default_provider::region::DefaultRegionChain::builder()
                    .build()
                    .region()
                    .await
                    .map(|r| r.to_string());
                let bridge = AwsConfigBridge::new(SharedCredentialsProvider::new(chain));
                return Ok((b.with_credentials(Arc::new(bridge)), region));
            }
            // object_store's own chain: web identity, ECS task role, instance metadata.
            let mut b = b;
            for (var, key) in [
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    object_store::aws::AmazonS3ConfigKey::WebIdentityTokenFile,
                ),
                (
                    "AWS_ROLE_ARN",
                    object_store::aws::AmazonS3ConfigKey::RoleArn,
                ),
                (
                    "AWS_ROLE_SESSION_NAME",
                    object_store::aws::AmazonS3ConfigKey::RoleSessionName,
                ),
                (
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    object_store::aws::AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
                ),
                (
                    // EKS Pod Identity.
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    object_store::aws::AmazonS3ConfigKey::ContainerCredentialsFullUri,
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    object_store::aws::AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
                ),
                (
                    // The AWS SDKs' setting for where instance metadata is served.
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                    object_store::aws::AmazonS3ConfigKey::MetadataEndpoint,
                ),
            ] {
                if let Some(v) = env(var) {
                    b = b.with_config(key, v);
                }
            }
            Ok((b, env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"))))
        }
    }
}

/// aws-config's credentials, served to object_store, cached until five minutes before they
/// expire.
pub struct AwsConfigBridge {
    provider: SharedCredentialsProvider,
    cache: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl AwsConfigBridge {
    /// Wraps an aws-config provider.
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<Arc<AwsCredential>, String> {
        const REFRESH_BEFORE: Duration = Duration::from_secs(300);
        let mut cache = self.cache.lock().await;
        if let Some((cred, expiry)) = cache.as_ref() {
            let fresh = expiry.is_none_or(|e| {
                e.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REFRESH_BEFORE)
            });
            if fresh {
                return Ok(Arc::clone(cred));
            }
        }
        let c = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| e.to_string())?;
        let cred = Arc::new(AwsCredential {
            key_id: c.access_key_id().to_owned(),
            secret_key: c.secret_access_key().to_owned(),
            token: c.session_token().map(str::to_owned),
        });
        *cache = Some((Arc::clone(&cred), c.expiry()));
        Ok(cred)
    }
}

impl std::fmt::Debug for AwsConfigBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsConfigBridge")
    }
}

#[async_trait::async_trait]
impl CredentialProvider for AwsConfigBridge {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.fetch()
            .await
            .map_err(|why| object_store::Error::Generic {
                store: "S3",
                source: format!("AWS credentials unavailable: {why}").into(),
            })
    }
}

/// Reads the seed's Azure credentials file: `AZURE_STORAGE_ACCOUNT_NAME=...` and
/// `AZURE_STORAGE_ACCOUNT_KEY=...` lines (blank lines, `#` comments, `export ` prefixes and
/// quotes allowed).
pub fn read_azure_file(path: &Path) -> Result<(String, Secret), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::CredentialsFile {
        path: path.to_owned(),
        why: format!("cannot read it ({e}); check secretName / secretKeyName and secretsDir"),
    })?;
    let bad = |why: String| Error::CredentialsFile {
        path: path.to_owned(),
        why,
    };
    let (mut account, mut key) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad(format!(
                "line {} is not NAME=VALUE; the file holds AZURE_STORAGE_ACCOUNT_NAME= and AZURE_STORAGE_ACCOUNT_KEY= lines",
                n + 1
            )));
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
        match k.trim() {
            "AZURE_STORAGE_ACCOUNT_NAME" => account = Some(v),
            "AZURE_STORAGE_ACCOUNT_KEY" => key = Some(Secret::new(v)),
            other => {
                return Err(bad(format!(
                    "line {} sets {other:?}; only AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY are read",
                    n + 1
                )));
            }
        }
    }
    match (account, key) {
        (Some(a), Some(k)) if !a.is_empty() && !k.expose().is_empty() => Ok((a, k)),
        _ => Err(bad(
            "it needs both AZURE_STORAGE_ACCOUNT_NAME= and AZURE_STORAGE_ACCOUNT_KEY=".into(),
        )),
    }
}

/// GCP application default credentials: `GOOGLE_APPLICATION_CREDENTIALS`, then the
/// metadata server (object_store's fallback).
pub(crate) fn gcp_ambient(b: GoogleCloudStorageBuilder) -> GoogleCloudStorageBuilder {
    match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
        Ok(path) if !path.is_empty() => b.with_application_credentials(path),
        _ => b,
    }
}

/// Azure workload identity: the federated token file, client and tenant ids that the AKS
/// webhook puts in the environment.
pub(crate) fn azure_ambient(mut b: MicrosoftAzureBuilder) -> MicrosoftAzureBuilder {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(file) = env("AZURE_FEDERATED_TOKEN_FILE") {
        b = b.with_federated_token_file(file);
    }
    if let Some(id) = env("AZURE_CLIENT_ID") {
        b = b.with_client_id(id);
    }
    if let Some(tenant) = env("AZURE_TENANT_ID") {
        b = b.with_tenant_id(tenant);
    }
    if let Some(host) = env("AZURE_AUTHORITY_HOST") {
        b = b.with_authority_host(host);
    }
    // Managed identity (the fallback without a federated token) where the platform serves
    // it elsewhere than the instance metadata address (App Service, Arc).
    if let Some(endpoint) = env("IDENTITY_ENDPOINT").or_else(|| env("MSI_ENDPOINT")) {
        b = b.with_msi_endpoint(endpoint);
    }
    b
}
