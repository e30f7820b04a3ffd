//! The Neo4j chart's values file (`--values backup-values.yaml`), read outside Kubernetes.
//!
//! Every key of `helm show values neo4j/neo4j-admin` is known: the backup, aggregate and
//! consistency-check keys drive Catena; the Kubernetes-only ones are accepted and listed once
//! as not applicable. An unknown key is an error naming it and the closest known key.

use std::path::{Path, PathBuf};

use catena::StorageConfig;
use catena::storage_backends::CloudProvider;
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

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (
        a.to_lowercase().chars().collect(),
        b.to_lowercase().chars().collect(),
    );
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

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
                    .min_by_key(|k| distance(k, key))
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
    pub enabled: Option<bool>,
    pub verbose: Option<bool>,
    pub keep_old_backup: Option<bool>,
    pub parallel_recovery: Option<bool>,
    pub from_path: Option<String>,
    pub database: Option<String>,
    pub temp_dir: Option<String>,
}

/// `backup`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupValues {
    pub bucket_name: Option<String>,
    #[serde(rename = "s3Endpoint")]
    pub s3_endpoint: Option<String>,
    #[serde(rename = "s3EndpointTLS")]
    pub s3_endpoint_tls: Option<bool>,
    #[serde(rename = "s3CACert")]
    pub s3_ca_cert: Option<String>,
    #[serde(rename = "s3SkipVerify")]
    pub s3_skip_verify: Option<bool>,
    #[serde(rename = "s3ForcePathStyle")]
    pub s3_force_path_style: Option<bool>,
    #[serde(rename = "s3Region")]
    pub s3_region: Option<String>,
    #[serde(rename = "s3CASecretName")]
    pub s3_ca_secret_name: Option<String>,
    #[serde(rename = "s3CASecretKey")]
    pub s3_ca_secret_key: Option<String>,
    pub minio_endpoint: Option<String>,
    pub database: Option<String>,
    pub cloud_provider: Option<String>,
    pub secret_name: Option<String>,
    pub secret_key_name: Option<String>,
    pub azure_storage_account_name: Option<String>,
    pub keep_backup_files: Option<bool>,
    pub page_cache: Option<String>,
    pub include_metadata: Option<String>,
    #[serde(rename = "type")]
    pub backup_type: Option<String>,
    pub keep_failed: Option<bool>,
    /// Catena's own key (not the chart's): read every file on a DIFF.
    pub force_read: Option<bool>,
    pub parallel_recovery: Option<bool>,
    pub verbose: Option<bool>,
    pub heap_size: Option<String>,
    pub prefer_diff_as_parent: Option<bool>,
    pub fallback_to_full: Option<bool>,
    #[serde(default)]
    pub aggregate: AggregateValues,
}

/// `neo4j` (the job's schedule and history).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobValues {
    pub job_schedule: Option<String>,
    pub successful_jobs_history_limit: Option<u32>,
    pub failed_jobs_history_limit: Option<u32>,
    pub backoff_limit: Option<u32>,
}

/// `consistencyCheck`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencyValues {
    pub enable: Option<bool>,
    pub enabled: Option<bool>,
    pub check_indexes: Option<bool>,
    pub check_graph: Option<bool>,
    pub check_counts: Option<bool>,
    pub check_property_owners: Option<bool>,
    pub database: Option<String>,
    pub max_off_heap_memory: Option<String>,
    pub threads: Option<Value>,
    pub verbose: Option<bool>,
}

/// A parsed values file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Values {
    #[serde(default)]
    pub neo4j: JobValues,
    #[serde(default)]
    pub backup: BackupValues,
    #[serde(default)]
    pub consistency_check: ConsistencyValues,
    pub service_account_name: Option<String>,
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
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "values file {}: {e}; check the --values path (the chart's values YAML)",
                path.display()
            )
        })?;
        Self::parse(&text).map_err(|e| format!("values file {}: {e}", path.display()))
    }

    /// Parses values YAML.
    pub fn parse(text: &str) -> Result<Self, String> {
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
    pub fn metadata(&self) -> catena::MetadataLevel {
        match given(&self.backup.include_metadata).as_deref() {
            Some("all") | Some("ownership") => catena::MetadataLevel::Ownership,
            _ => catena::MetadataLevel::Basic,
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
    ) -> Result<StorageConfig, String> {
        let b = &self.backup;
        let provider = match given(&b.cloud_provider).as_deref() {
            None => CloudProvider::Local,
            Some("aws") => CloudProvider::Aws,
            Some("gcp") => CloudProvider::Gcp,
            Some("azure") => CloudProvider::Azure,
            Some(other) => {
                return Err(format!(
                    "backup.cloudProvider {other:?} is not aws, gcp, azure or \"\" (a local directory)"
                ));
            }
        };
        let mut c = StorageConfig {
            cloud_provider: provider,
            bucket_name: given(&b.bucket_name).unwrap_or_default(),
            s3_endpoint: given(&b.s3_endpoint),
            s3_endpoint_tls: b.s3_endpoint_tls,
            s3_ca_cert: given(&b.s3_ca_cert),
            s3_ca_secret_name: given(&b.s3_ca_secret_name),
            s3_ca_secret_key: given(&b.s3_ca_secret_key),
            s3_skip_verify: b.s3_skip_verify.unwrap_or(false),
            s3_force_path_style: b.s3_force_path_style.unwrap_or(false),
            s3_region: given(&b.s3_region),
            minio_endpoint: given(&b.minio_endpoint),
            secret_name: given(&b.secret_name),
            secret_key_name: given(&b.secret_key_name),
            azure_storage_account_name: given(&b.azure_storage_account_name),
            service_account_name: given(&self.service_account_name),
            secrets_dir: secrets_dir.to_owned(),
            ..StorageConfig::default()
        };
        if let Some(p) = local_path {
            c.local_path = p;
        }
        Ok(c)
    }
}

/// The fuzz check of the values decoder (`fuzz/fuzz_targets/values.rs`, replayed by
/// `cargo test`): any bytes give values or an error, never a panic; what parses yields its
/// notes, settings and storage configuration (read from nothing on disk).
#[allow(
    dead_code,
    reason = "used by the fuzz target and the corpus replay in tests/cli.rs"
)]
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
