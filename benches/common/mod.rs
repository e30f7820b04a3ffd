//! What both benchmarks share: an S3 store for a local server, and what they read about
//! their own process from /proc.

use std::sync::Arc;

use catena::storage_backends::{CloudProvider, StorageConfig};

/// An S3 store for a server on loopback, signed with `key`/`secret` through a credentials
/// file in the seed's format (kept in the returned directory while the store is used).
pub async fn s3_store(
    endpoint: String,
    key: &str,
    secret: &str,
    bucket: String,
    region: &str,
    prefix: String,
) -> Result<(Arc<dyn object_store::ObjectStore>, tempfile::TempDir), Box<dyn std::error::Error>> {
    let secrets = tempfile::tempdir()?;
    let creds = secrets.path().join("bench/credentials");
    std::fs::create_dir_all(creds.parent().ok_or("no parent")?)?;
    std::fs::write(
        &creds,
        format!(
            "[ default ]\nregion = {region}\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        ),
    )?;
    let storage = StorageConfig {
        cloud_provider: CloudProvider::Aws,
        bucket_name: bucket,
        prefix,
        s3_endpoint: Some(endpoint),
        s3_force_path_style: true,
        s3_region: Some(region.to_owned()),
        secret_name: Some("bench".into()),
        secrets_dir: secrets.path().to_owned(),
        ..StorageConfig::default()
    }
    .build()
    .await?;
    Ok((storage.store, secrets))
}

/// (user + sys) CPU seconds of this process, from /proc/self/stat.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5), counted after the command name: indexes 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set of this process in MiB, from /proc/self/status.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
