//! Test servers and stores. The servers are started by `scripts/test` (see
//! `scripts/servers.sh`), which exports where they are. Outside CI a missing server skips
//! its tests with a printed line; with `CI` set, a missing server fails them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use storage_backends::{CloudProvider, Storage, StorageConfig};

/// The bucket / container `scripts/servers.sh` creates on each server.
pub const BUCKET: &str = "catena-test";

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// `Some(value)` of a server's variable; `None` (skip, printed) outside CI; panics in CI.
pub fn server_var(var: &str, server: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "{server} is not running ({var} unset): CI must run the tests through scripts/test"
            )
        }
        _ => {
            eprintln!(
                "skipped: {server} tests ({var} unset; run scripts/test to start the servers)"
            );
            None
        }
    }
}

/// Writes the seed's AWS credentials file (`[ default ]` with spaces, and a region) under a
/// secrets directory, as Kubernetes would mount `secretName`/`secretKeyName`.
pub fn aws_secret(
    dir: &Path,
    secret_name: &str,
    key_id: &str,
    secret: &str,
    region: &str,
) -> PathBuf {
    let path = dir.join(secret_name).join("credentials");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &path,
        format!("[ default ]\nregion = {region}\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"),
    )
    .expect("write credentials");
    path
}

/// An S3 config for a local server, credentials from the seed's file format.
pub fn s3_config(
    endpoint: &str,
    secrets: &Path,
    key_id: &str,
    secret: &str,
    prefix: &str,
) -> StorageConfig {
    aws_secret(secrets, "awscreds", key_id, secret, "us-east-1");
    StorageConfig {
        cloud_provider: CloudProvider::Aws,
        bucket_name: BUCKET.into(),
        prefix: prefix.into(),
        s3_endpoint: Some(endpoint.into()),
        s3_force_path_style: true,
        secret_name: Some("awscreds".into()),
        secret_key_name: Some("credentials".into()),
        secrets_dir: secrets.to_owned(),
        ..StorageConfig::default()
    }
}

pub struct Backend {
    pub name: &'static str,
    pub storage: Storage,
    /// Whether concurrent create-only puts are atomic (and sequential ones refused).
    pub create_only: bool,
    pub moto_endpoint: Option<String>,
    _dir: tempfile::TempDir,
}

impl Backend {
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.storage.store)
    }

    /// On moto: no multipart upload is open under this backend's prefix.
    pub async fn assert_no_open_uploads(&self) {
        if let Some(endpoint) = &self.moto_endpoint {
            let prefix = self
                .storage
                .settings
                .iter()
                .find(|(k, _)| k == "prefix")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            assert_eq!(
                moto_open_uploads(endpoint, &prefix).await,
                0,
                "{}: no multipart upload left open",
                self.name
            );
        }
    }
}

/// Every backend available here, each under a fresh prefix.
pub async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    let prefix = unique("conformance");

    let dir = tempfile::tempdir().expect("tempdir");
    out.push(Backend {
        name: "memory",
        storage: StorageConfig::from_url("memory://")
            .expect("url")
            .build()
            .await
            .expect("memory"),
        create_only: true,
        moto_endpoint: None,
        _dir: dir,
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("repo").display());
    out.push(Backend {
        name: "local",
        storage: StorageConfig::from_url(&url)
            .expect("url")
            .build()
            .await
            .expect("local"),
        create_only: true,
        moto_endpoint: None,
        _dir: dir,
    });

    if let Some(endpoint) = server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = s3_config(&endpoint, dir.path(), "moto-key", "moto-secret", &prefix);
        out.push(Backend {
            name: "moto",
            storage: config.build().await.expect("moto"),
            create_only: true,
            moto_endpoint: Some(endpoint),
            _dir: dir,
        });
    }

    if let Some(endpoint) = server_var("CATENA_TEST_S3S_ENDPOINT", "s3s-fs") {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = std::env::var("CATENA_TEST_S3S_ACCESS_KEY").expect("s3s key");
        let secret = std::env::var("CATENA_TEST_S3S_SECRET_KEY").expect("s3s secret");
        let config = s3_config(&endpoint, dir.path(), &key, &secret, &prefix);
        out.push(Backend {
            name: "s3s-fs",
            storage: config.build().await.expect("s3s-fs"),
            create_only: false,
            moto_endpoint: None,
            _dir: dir,
        });
    }

    if server_var("CATENA_TEST_AZURITE", "azurite").is_some() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StorageConfig {
            cloud_provider: CloudProvider::Azure,
            bucket_name: BUCKET.into(),
            prefix: prefix.clone(),
            azure_use_emulator: true,
            ..StorageConfig::default()
        };
        out.push(Backend {
            name: "azurite",
            storage: config.build().await.expect("azurite"),
            create_only: true,
            moto_endpoint: None,
            _dir: dir,
        });
    }
    out
}

/// Deterministic bytes: incompressible when `noisy`, else repetitive text.
pub fn data(len: usize, seed: u64, noisy: bool) -> Vec<u8> {
    if noisy {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    } else {
        let line = format!("record {seed}: the quick brown fox jumps over the lazy dog\n");
        line.bytes().cycle().take(len).collect()
    }
}

/// Multipart uploads still open in the moto bucket under `prefix` (its ListMultipartUploads,
/// unsigned). Scoped by prefix: tests running beside each other have uploads in flight.
pub async fn moto_open_uploads(endpoint: &str, prefix: &str) -> usize {
    let body = reqwest::get(format!("{endpoint}/{BUCKET}?uploads&prefix={prefix}/"))
        .await
        .expect("list uploads")
        .text()
        .await
        .expect("body");
    body.matches("<Upload>").count()
}
