//! The Neo4j chart's values file (`--values backup-values.yaml`), read outside Kubernetes,
//! for any tool that runs the chart's job: [`Values::load`], then [`Values::storage`] (or
//! [`storage_config`], which merges a URL and overrides in too), [`Values::metadata`],
//! [`Values::check_after`], and the schedule keys for [`crate::schedule`].
//!
//! Every key of `helm show values neo4j/neo4j-admin` is known: the backup, aggregate and
//! consistency-check keys drive Catena; the Kubernetes-only ones are accepted and listed once
//! as not applicable. An unknown key is an error naming it and the closest known key.

use std::path::{Path, PathBuf};

use storage_backends::{CloudProvider, StorageConfig, StorageOverrides};

use crate::Error;
use serde::Deserialize;
use serde_json::Value;

/// How a known key is treated.
enum Shape {
    /// A value Catena reads.
    Leaf,
    /// A Kubernetes-only key: accepted, reported as not applicable, contents not checked.
    K8s,
    /// A mapping whose keys are known.
    Map(&'static [(&'static str, Shape)]),
}

use Shape::{K8s, Leaf, Map};

const AGGREGATE: &[(&str, Shape)] = &[
    ("enabled", Leaf),
    ("verbose", Leaf),
    ("keepOldBackup", Leaf),
    ("parallelRecovery", Leaf),
    ("fromPath", Leaf),
    ("database", Leaf),
    ("tempDir", Leaf),
];

const BACKUP: &[(&str, Shape)] = &[
    ("bucketName", Leaf),
    ("databaseBackupEndpoints", K8s),
    ("databaseAdminServiceName", K8s),
    ("databaseAdminServiceIP", K8s),
    ("databaseNamespace", K8s),
    ("databaseBackupPort", K8s),
    ("databaseClusterDomain", K8s),
    ("s3Endpoint", Leaf),
    ("s3EndpointTLS", Leaf),
    ("s3CACert", Leaf),
    ("s3SkipVerify", Leaf),
    ("s3ForcePathStyle", Leaf),
    ("s3Region", Leaf),
    ("s3CASecretName", Leaf),
    ("s3CASecretKey", Leaf),
    ("minioEndpoint", Leaf),
    // Catena's own storage keys, in the chart's style.
    ("s3ServerSideEncryption", Leaf),
    ("s3SseKmsKeyId", Leaf),
    ("s3SseBucketKeyEnabled", Leaf),
    ("s3SseCustomerKeySecretName", Leaf),
    ("s3SseCustomerKeySecretKey", Leaf),
    ("azureEncryptionScope", Leaf),
    ("gcsKmsKeyName", Leaf),
    ("database", Leaf),
    ("cloudProvider", Leaf),
    ("secretName", Leaf),
    ("secretKeyName", Leaf),
    ("azureStorageAccountName", Leaf),
    ("keepBackupFiles", Leaf),
    ("pageCache", Leaf),
    ("includeMetadata", Leaf),
    ("type", Leaf),
    ("keepFailed", Leaf),
    ("forceRead", Leaf),
    ("parallelRecovery", Leaf),
    ("verbose", Leaf),
    ("heapSize", Leaf),
    ("preferDiffAsParent", Leaf),
    ("fallbackToFull", Leaf),
    ("aggregate", Map(AGGREGATE)),
];

const NEO4J: &[(&str, Shape)] = &[
    ("image", K8s),
    ("imageTag", K8s),
    ("podLabels", K8s),
    ("podAnnotations", K8s),
    ("jobSchedule", Leaf),
    ("successfulJobsHistoryLimit", Leaf),
    ("failedJobsHistoryLimit", Leaf),
    ("backoffLimit", Leaf),
    ("labels", K8s),
];

const CONSISTENCY: &[(&str, Shape)] = &[
    ("enable", Leaf),
    ("enabled", Leaf),
    ("checkIndexes", Leaf),
    ("checkGraph", Leaf),
    ("checkCounts", Leaf),
    ("checkPropertyOwners", Leaf),
    ("database", Leaf),
    ("maxOffHeapMemory", Leaf),
    ("threads", Leaf),
    ("verbose", Leaf),
];

const TOP: &[(&str, Shape)] = &[
    ("nameOverride", K8s),
    ("fullnameOverride", K8s),
    ("disableLookups", K8s),
    ("neo4j", Map(NEO4J)),
    ("backup", Map(BACKUP)),
    ("consistencyCheck", Map(CONSISTENCY)),
    ("serviceAccountName", Leaf),
    ("tempVolume", Leaf),
    ("securityContext", K8s),
    ("containerSecurityContext", K8s),
    ("resources", K8s),
    ("nodeSelector", K8s),
    ("affinity", K8s),
    ("tolerations", K8s),
];

fn walk(v: &Value, shape: &[(&str, Shape)], at: &str, k8s: &mut Vec<String>) -> Result<(), String> {
    let Value::Object(map) = v else {
        if v.is_null() {
            return Ok(());
        }
        return Err(format!(
            "{} must be a mapping",
            if at.is_empty() { "the values file" } else { at }
        ));
    };
    for (key, value) in map {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match shape.iter().find(|(k, _)| k == key) {
            Some((_, Leaf)) => {}
            Some((_, K8s)) => k8s.push(path),
            Some((_, Map(inner))) => walk(value, inner, &path, k8s)?,
            None => {
                let closest = shape
                    .iter()
                    .map(|(k, _)| *k)
                    .min_by_key(|k| strsim::levenshtein(&k.to_lowercase(), &key.to_lowercase()))
                    .unwrap_or("");
                let parent = if at.is_empty() {
                    String::new()
                } else {
                    format!("{at}.")
                };
                return Err(format!(
                    "unknown key {path:?} in the values file; did you mean {parent}{closest}?"
                ));
            }
        }
    }
    Ok(())
}

/// `backup.aggregate`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregateValues {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `verbose`.
    pub verbose: Option<bool>,
    /// `keepOldBackup`.
    pub keep_old_backup: Option<bool>,
    /// `parallelRecovery`.
    pub parallel_recovery: Option<bool>,
    /// `fromPath`.
    pub from_path: Option<String>,
    /// `database`.
    pub database: Option<String>,
    /// `tempDir`.
    pub temp_dir: Option<String>,
}

/// `backup`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupValues {
    /// `bucketName`.
    pub bucket_name: Option<String>,
    /// `database`.
    pub database: Option<String>,
    /// `cloudProvider`.
    pub cloud_provider: Option<String>,
    /// The storage keys (`s3Endpoint`, `s3CACert`, `minioEndpoint`, `secretName`,
    /// `azureStorageAccountName`, ...), read into the one description of them that the
    /// command line's flags also come from. An empty string is the chart's "not set".
    #[serde(flatten)]
    pub storage: StorageOverrides,
    /// `keepBackupFiles`.
    pub keep_backup_files: Option<bool>,
    /// `pageCache`.
    pub page_cache: Option<String>,
    /// `includeMetadata`.
    pub include_metadata: Option<String>,
    /// `type`.
    #[serde(rename = "type")]
    pub backup_type: Option<String>,
    /// `keepFailed`.
    pub keep_failed: Option<bool>,
    /// Catena's own key (not the chart's): read every file on a DIFF.
    pub force_read: Option<bool>,
    /// `parallelRecovery`.
    pub parallel_recovery: Option<bool>,
    /// `verbose`.
    pub verbose: Option<bool>,
    /// `heapSize`.
    pub heap_size: Option<String>,
    /// `preferDiffAsParent`.
    pub prefer_diff_as_parent: Option<bool>,
    /// `fallbackToFull`.
    pub fallback_to_full: Option<bool>,
    /// `aggregate`.
    #[serde(default)]
    pub aggregate: AggregateValues,
}

/// `neo4j` (the job's schedule and history).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobValues {
    /// `jobSchedule`.
    pub job_schedule: Option<String>,
    /// `successfulJobsHistoryLimit`.
    pub successful_jobs_history_limit: Option<u32>,
    /// `failedJobsHistoryLimit`.
    pub failed_jobs_history_limit: Option<u32>,
    /// `backoffLimit`.
    pub backoff_limit: Option<u32>,
}

/// `consistencyCheck`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencyValues {
    /// `enable`.
    pub enable: Option<bool>,
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `checkIndexes`.
    pub check_indexes: Option<bool>,
    /// `checkGraph`.
    pub check_graph: Option<bool>,
    /// `checkCounts`.
    pub check_counts: Option<bool>,
    /// `checkPropertyOwners`.
    pub check_property_owners: Option<bool>,
    /// `database`.
    pub database: Option<String>,
    /// `maxOffHeapMemory`.
    pub max_off_heap_memory: Option<String>,
    /// `threads`.
    pub threads: Option<Value>,
    /// `verbose`.
    pub verbose: Option<bool>,
}

/// A parsed values file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Values {
    /// `neo4j`.
    #[serde(default)]
    pub neo4j: JobValues,
    /// `backup`.
    #[serde(default)]
    pub backup: BackupValues,
    /// `consistencyCheck`.
    #[serde(default)]
    pub consistency_check: ConsistencyValues,
    /// `serviceAccountName`.
    pub service_account_name: Option<String>,
    /// `tempVolume`.
    pub temp_volume: Option<Value>,
    /// Kubernetes-only keys found (not applicable here).
    #[serde(skip)]
    pub not_applicable: Vec<String>,
}

fn given(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Values {
    /// Reads and checks a values file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Values(format!(
                "values file {}: {e}; check the --values path (the chart's values YAML)",
                path.display()
            ))
        })?;
        Self::parse_text(&text)
            .map_err(|e| Error::Values(format!("values file {}: {e}", path.display())))
    }

    /// Parses values YAML.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::parse_text(text).map_err(Error::Values)
    }

    fn parse_text(text: &str) -> Result<Self, String> {
        let raw: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
        };
        let mut k8s = Vec::new();
        walk(&raw, TOP, "", &mut k8s)?;
        let mut values: Values = if raw.is_null() {
            Values::default()
        } else {
            serde_json::from_value(raw).map_err(|e| format!("{e}"))?
        };
        values.not_applicable = k8s;
        Ok(values)
    }

    /// Keys that are accepted but change nothing here, with why (printed once per run).
    pub fn notes(&self) -> Vec<String> {
        let b = &self.backup;
        let a = &b.aggregate;
        let mut out = Vec::new();
        let set = |o: &Option<String>| given(o).is_some();
        if set(&b.page_cache) || set(&b.heap_size) {
            out.push("backup.pageCache / heapSize: Catena's memory is parts in flight x part size, not a JVM heap".into());
        }
        if b.parallel_recovery.is_some() || a.parallel_recovery.is_some() {
            out.push(
                "parallelRecovery: restore and aggregate always read blocks in parallel".into(),
            );
        }
        if set(&a.temp_dir) || self.temp_volume.is_some() {
            out.push(
                "aggregate.tempDir / tempVolume: Catena streams and needs no local spool".into(),
            );
        }
        if b.verbose == Some(true)
            || a.verbose == Some(true)
            || self.consistency_check.verbose == Some(true)
        {
            out.push("verbose: use -v / RUST_LOG for log levels".into());
        }
        if b.keep_backup_files == Some(true) {
            out.push("backup.keepBackupFiles: Catena stages nothing locally, so there are no backup files to keep".into());
        }
        let c = &self.consistency_check;
        let threads_set = c
            .threads
            .as_ref()
            .is_some_and(|t| !t.is_null() && t.as_str() != Some(""));
        if set(&c.max_off_heap_memory) || threads_set {
            out.push("consistencyCheck.maxOffHeapMemory / threads: the check reads blocks with bounded memory and its own parallelism".into());
        }
        let n = &self.neo4j;
        if set(&n.job_schedule)
            || n.successful_jobs_history_limit.is_some()
            || n.failed_jobs_history_limit.is_some()
            || n.backoff_limit.is_some()
        {
            out.push("neo4j.jobSchedule / backoffLimit / *JobsHistoryLimit: used by `catena schedule`; a single run ignores them".into());
        }
        out
    }

    /// `backup.includeMetadata`: `all` also records ownership.
    pub fn metadata(&self) -> crate::MetadataLevel {
        match given(&self.backup.include_metadata).as_deref() {
            Some("all") | Some("ownership") => crate::MetadataLevel::Ownership,
            _ => crate::MetadataLevel::Basic,
        }
    }

    /// Whether the run only aggregates (`backup.aggregate.enabled`).
    pub fn aggregate_only(&self) -> bool {
        self.backup.aggregate.enabled.unwrap_or(false)
    }

    /// Whether to check after the backup (`consistencyCheck.enable` or `.enabled`).
    pub fn check_after(&self) -> bool {
        self.consistency_check
            .enabled
            .or(self.consistency_check.enable)
            .unwrap_or(false)
    }

    /// The storage configuration the values describe. `local_path` is the chart's
    /// `/backups` mount stand-in for `cloudProvider: ""`.
    pub fn storage(
        &self,
        secrets_dir: &Path,
        local_path: Option<PathBuf>,
    ) -> Result<StorageConfig, Error> {
        let b = &self.backup;
        let provider = match given(&b.cloud_provider).as_deref() {
            None => CloudProvider::Local,
            Some("aws") => CloudProvider::Aws,
            Some("gcp") => CloudProvider::Gcp,
            Some("azure") => CloudProvider::Azure,
            Some(other) => {
                return Err(Error::Values(format!(
                    "backup.cloudProvider {other:?} is not aws, gcp, azure or \"\" (a local directory)"
                )));
            }
        };
        let mut c = StorageConfig {
            cloud_provider: provider,
            bucket_name: given(&b.bucket_name).unwrap_or_default(),
            service_account_name: given(&self.service_account_name),
            secrets_dir: secrets_dir.to_owned(),
            ..StorageConfig::default()
        }
        .with_overrides(&b.storage);
        if let Some(p) = local_path {
            c.local_path = p;
        }
        Ok(c)
    }
}

/// Where a job's backups are, merged from every place a setting can come from: the values
/// file's storage keys, then `url` (which names provider, bucket and prefix, or the
/// directory), then `overrides` (flags and environment) over both. The one place storage
/// settings are merged; every wrapper calls it.
///
/// A local URL given with a values file that names a cloud takes the URL alone: the file's
/// endpoint, CA and credentials are for the cloud, not for the directory.
pub fn storage_config(
    url: Option<&str>,
    values: Option<&Values>,
    overrides: &StorageOverrides,
) -> Result<StorageConfig, Error> {
    let from_file = values
        .map(|v| v.storage(&StorageConfig::default().secrets_dir, None))
        .transpose()?;
    let local = |c: &StorageConfig| {
        matches!(
            c.cloud_provider,
            CloudProvider::Local | CloudProvider::Memory
        )
    };
    let base = match (url, from_file) {
        (Some(url), Some(file)) => {
            let at = StorageConfig::from_url(url)?;
            if local(&at) && !local(&file) {
                at
            } else {
                // The URL says where; the file's endpoint, CA and credentials apply.
                StorageConfig {
                    cloud_provider: at.cloud_provider,
                    bucket_name: at.bucket_name,
                    prefix: at.prefix,
                    local_path: at.local_path,
                    ..file
                }
            }
        }
        (Some(url), None) => StorageConfig::from_url(url)?,
        (None, Some(file)) => file,
        (None, None) => {
            return Err(Error::Options(
                "no storage given: give --to-path (a URL or a directory) or --values".into(),
            ));
        }
    };
    Ok(base.with_overrides(overrides))
}

/// The fuzz check of the values decoder (`fuzz/fuzz_targets/values.rs`, replayed by
/// `cargo test`): any bytes give values or an error, never a panic; what parses yields its
/// notes, settings and storage configuration (read from nothing on disk).
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(v) = Values::parse(&text) {
        let _ = v.notes();
        let _ = v.metadata();
        let _ = v.aggregate_only();
        let _ = v.check_after();
        if let Ok(c) = v.storage(Path::new("/nonexistent-secrets"), None) {
            let _ = format!("{c:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage keys that are not under `backup` in the chart: `serviceAccountName` is a
    /// top-level key, the others are Catena's own (flags and variables only).
    const NOT_UNDER_BACKUP: &[&str] = &[
        "serviceAccountName",
        "secretsDir",
        "azureEndpoint",
        "azureUseEmulator",
    ];

    fn storage_keys() -> Vec<String> {
        match serde_json::to_value(StorageOverrides::default()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            other => panic!("StorageOverrides is not a JSON object: {other:?}"),
        }
    }

    #[test]
    fn the_schema_knows_every_storage_key_of_the_chart_and_no_other() {
        let keys = storage_keys();
        assert!(keys.len() >= 16, "{keys:?}");
        for key in &keys {
            let under_backup = BACKUP
                .iter()
                .any(|(k, shape)| k == key && matches!(shape, Leaf));
            assert_eq!(
                under_backup,
                !NOT_UNDER_BACKUP.contains(&key.as_str()),
                "{key}"
            );
        }
        assert!(
            TOP.iter()
                .any(|(k, shape)| *k == "serviceAccountName" && matches!(shape, Leaf))
        );
        // A Catena-only key under `backup` is refused, naming the key.
        let e = Values::parse("backup:\n  secretsDir: /x\n").expect_err("refused");
        assert!(e.to_string().contains("backup.secretsDir"), "{e}");
    }

    #[test]
    fn every_storage_key_of_the_values_file_reaches_the_configuration() {
        let yaml = "\
backup:
  cloudProvider: aws
  bucketName: bucket
  s3Endpoint: ' http://127.0.0.1:9 '
  s3EndpointTLS: false
  s3CACert: Q0EtU0VDUkVU
  s3CASecretName: ca
  s3CASecretKey: ca.pem
  s3SkipVerify: true
  s3ForcePathStyle: true
  s3Region: eu-west-3
  minioEndpoint: ''
  secretName: creds
  secretKeyName: credentials
  azureStorageAccountName: account
serviceAccountName: workload
";
        let v = Values::parse(yaml).expect("parses");
        let c = v.storage(Path::new("/secrets"), None).expect("storage");
        assert_eq!(c.cloud_provider, CloudProvider::Aws);
        assert_eq!(c.bucket_name, "bucket");
        assert_eq!(c.s3_endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(c.s3_endpoint_tls, Some(false));
        assert_eq!(c.s3_ca_cert.as_deref(), Some("Q0EtU0VDUkVU"));
        assert_eq!(c.s3_ca_secret_name.as_deref(), Some("ca"));
        assert_eq!(c.s3_ca_secret_key.as_deref(), Some("ca.pem"));
        assert!(c.s3_skip_verify && c.s3_force_path_style);
        assert_eq!(c.s3_region.as_deref(), Some("eu-west-3"));
        assert_eq!(c.minio_endpoint, None, "the chart's '' is not set");
        assert_eq!(c.secret_name.as_deref(), Some("creds"));
        assert_eq!(c.secret_key_name.as_deref(), Some("credentials"));
        assert_eq!(c.azure_storage_account_name.as_deref(), Some("account"));
        assert_eq!(c.service_account_name.as_deref(), Some("workload"));
        assert_eq!(c.secrets_dir, Path::new("/secrets"));
        // The CA never shows in Debug output, here or in the configuration's.
        assert!(!format!("{v:?}").contains("Q0EtU0VDUkVU"), "{v:?}");
        assert!(!format!("{c:?}").contains("Q0EtU0VDUkVU"), "{c:?}");
    }
}
