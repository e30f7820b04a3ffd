//! `catena`, the command-line wrapper: neo4j-admin's vocabulary and the Neo4j chart's values
//! file in, library calls out, progress bars and tables or JSON out. No backup logic lives
//! here.
//!
//! ```text
//! cargo run --release --example catena -- demo
//! cargo run --release --example catena -- backup --from /data/databases --to-path s3://bucket/prefix
//! cargo run --release --example catena -- backup --values backup-values.yaml --from /data/databases
//! cargo run --release --example catena -- restore neo4j --from-path s3://bucket/prefix --to /restore/neo4j
//! ```
//!
//! Exit codes, like neo4j-admin: 0 success, 1 failure or success with problems.

#[path = "catena/demo.rs"]
mod demo;
#[path = "catena/output.rs"]
mod output;
#[path = "catena/schedule.rs"]
mod schedule;
#[path = "catena/values.rs"]
mod values;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use catena::chain_core::{
    AggregateTarget, BackupRequest, BackupType, DatabaseName, ExpirePolicy, Position, RestoreTarget,
};
use catena::storage_backends::CloudProvider;
use catena::storage_backends::upload::UploadOptions;
use catena::*;
use clap::{Args, Parser, Subcommand};
use output::{Format, Reporter};
use values::Values;

#[derive(Parser, Debug)]
#[command(
    name = "catena",
    version,
    about = "Backups as chains of immutable FULL and DIFF artifacts in object storage"
)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Output: TABULAR (default) or JSON.
    #[arg(long, value_enum, default_value = "TABULAR", global = true)]
    format: Format,
    /// Wait this long for a database lock another run holds (e.g. 30s, 10m) before failing.
    #[arg(long, global = true, value_parser = parse_duration)]
    retry_lock: Option<std::time::Duration>,
    /// Block compression of what backup and aggregate write: zstd-1 .. zstd-22, or none
    /// (default zstd-3).
    #[arg(long, global = true, value_parser = parse_compression)]
    compression: Option<catena::chain_core::Compression>,
    /// Multipart part size in MiB (default 8; at least 5).
    #[arg(long, global = true)]
    part_size_mib: Option<usize>,
    /// Parts uploaded at once (default 8).
    #[arg(long, global = true)]
    parts_in_flight: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Storage settings beyond the URL: every storage key of the chart, as flags and variables.
#[derive(Args, Debug, Clone, Default)]
struct StorageFlags {
    /// S3-compatible endpoint (s3Endpoint).
    #[arg(long, env = "CATENA_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// TLS for the endpoint (s3EndpointTLS).
    #[arg(long, env = "CATENA_S3_ENDPOINT_TLS")]
    s3_endpoint_tls: Option<bool>,
    /// CA certificate, base64 of PEM (s3CACert).
    #[arg(long, env = "CATENA_S3_CA_CERT", hide_env_values = true)]
    s3_ca_cert: Option<String>,
    /// Secret holding a CA file (s3CASecretName).
    #[arg(long, env = "CATENA_S3_CA_SECRET_NAME")]
    s3_ca_secret_name: Option<String>,
    /// Key of the CA file in that secret (s3CASecretKey).
    #[arg(long, env = "CATENA_S3_CA_SECRET_KEY")]
    s3_ca_secret_key: Option<String>,
    /// Skip TLS verification (s3SkipVerify; dangerous).
    #[arg(long, env = "CATENA_S3_SKIP_VERIFY")]
    s3_skip_verify: bool,
    /// Path-style requests (s3ForcePathStyle).
    #[arg(long, env = "CATENA_S3_FORCE_PATH_STYLE")]
    s3_force_path_style: bool,
    /// Region (s3Region).
    #[arg(long, env = "CATENA_S3_REGION")]
    s3_region: Option<String>,
    /// Deprecated alias of --s3-endpoint (minioEndpoint).
    #[arg(long, env = "CATENA_MINIO_ENDPOINT")]
    minio_endpoint: Option<String>,
    /// Secret holding the credentials file (secretName).
    #[arg(long, env = "CATENA_SECRET_NAME")]
    secret_name: Option<String>,
    /// Key of the credentials file in that secret (secretKeyName).
    #[arg(long, env = "CATENA_SECRET_KEY_NAME")]
    secret_key_name: Option<String>,
    /// Azure storage account for workload identity (azureStorageAccountName).
    #[arg(long, env = "CATENA_AZURE_STORAGE_ACCOUNT_NAME")]
    azure_storage_account_name: Option<String>,
    /// Use workload identity (serviceAccountName).
    #[arg(long, env = "CATENA_SERVICE_ACCOUNT_NAME")]
    service_account_name: Option<String>,
    /// Where secrets are mounted: <dir>/<secretName>/<secretKeyName>.
    #[arg(
        long,
        env = "CATENA_SECRETS_DIR",
        default_value = "/var/run/secrets/catena"
    )]
    secrets_dir: PathBuf,
    /// Azure-compatible endpoint (Azurite).
    #[arg(long, env = "CATENA_AZURE_ENDPOINT")]
    azure_endpoint: Option<String>,
    /// Use the Azurite emulator (AZURITE_BLOB_STORAGE_URL).
    #[arg(long, env = "CATENA_AZURE_USE_EMULATOR")]
    azure_use_emulator: bool,
}

impl StorageFlags {
    /// Applies the flags that are set over `c`.
    fn apply(&self, mut c: StorageConfig) -> StorageConfig {
        macro_rules! set {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f.clone(); } )* };
        }
        set!(
            s3_endpoint,
            s3_endpoint_tls,
            s3_ca_cert,
            s3_ca_secret_name,
            s3_ca_secret_key,
            s3_region,
            minio_endpoint,
            secret_name,
            secret_key_name,
            azure_storage_account_name,
            service_account_name,
            azure_endpoint
        );
        c.s3_skip_verify |= self.s3_skip_verify;
        c.s3_force_path_style |= self.s3_force_path_style;
        c.azure_use_emulator |= self.azure_use_emulator;
        c.secrets_dir = self.secrets_dir.clone();
        c
    }

    fn config(&self, url: &str) -> Result<StorageConfig, String> {
        let c = StorageConfig::from_url(url).map_err(|e| e.to_string())?;
        Ok(self.apply(c))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up databases (one subdirectory of --from each).
    Backup(BackupArgs),
    /// Collapse a chain into one FULL.
    Aggregate(AggregateArgs),
    /// Restore a database.
    Restore(RestoreArgs),
    /// List backups.
    Inspect(InspectArgs),
    /// Check backups for consistency.
    Check(CheckArgs),
    /// Delete old chains under a retention policy.
    Expire(ExpireArgs),
    /// Remove what interrupted runs left behind (objects no manifest names, staging files).
    Gc(GcArgs),
    /// Break a database's lock left by a process that is known to be gone.
    Unlock(UnlockArgs),
    /// Self-test of a storage endpoint.
    Probe(ProbeArgs),
    /// Run the values file's job on its cron schedule.
    Schedule(ScheduleArgs),
    /// Back up, check, aggregate and restore a sample data set, verifying the result.
    Demo {
        /// Keep the data, store and restores in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
struct BackupArgs {
    /// Databases (comma lists accepted); default: every subdirectory of --from, or the
    /// values file's backup.database.
    databases: Vec<String>,
    /// The source root: one subdirectory per database.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Where backups go: s3://, gs://, az://, file:// URL or a directory.
    #[arg(long)]
    to_path: Option<String>,
    /// FULL, DIFF or AUTO.
    #[arg(long = "type", value_parser = parse_type)]
    backup_type: Option<BackupType>,
    /// Prefer the newest DIFF as parent.
    #[arg(long)]
    prefer_diff_as_parent: bool,
    /// Take a FULL when a DIFF cannot be taken (default true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    fallback_to_full: Option<bool>,
    /// Keep a failed run's pieces under _failed/.
    #[arg(long)]
    keep_failed: bool,
    /// Optional local spool directory (accepted; Catena streams and needs none).
    #[arg(long)]
    temp_path: Option<PathBuf>,
    /// Print the decisions and their reasons; upload nothing.
    #[arg(long)]
    dry_run: bool,
    /// The Neo4j chart's values file.
    #[arg(long)]
    values: Option<PathBuf>,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct AggregateArgs {
    /// Database name or glob (* and ?).
    database: Option<String>,
    /// Where the backups are.
    #[arg(long)]
    from_path: Option<String>,
    /// Keep the old chain.
    #[arg(long)]
    keep_old_backup: bool,
    /// Optional spool directory (accepted; not needed).
    #[arg(long)]
    temp_path: Option<PathBuf>,
    /// The Neo4j chart's values file (backup.aggregate.*).
    #[arg(long)]
    values: Option<PathBuf>,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// The database to restore.
    database: String,
    /// Where the backups are.
    #[arg(long)]
    from_path: String,
    /// Destination directory.
    #[arg(long)]
    to: PathBuf,
    /// A position (exclusive) or a UTC time "YYYY-MM-DD HH:MM:SS" (committed before it).
    #[arg(long)]
    restore_until: Option<String>,
    /// Restore this artifact.
    #[arg(long)]
    artifact: Option<String>,
    /// Replace a non-empty destination.
    #[arg(long)]
    overwrite_destination: bool,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Databases (default all).
    databases: Vec<String>,
    #[arg(long)]
    from_path: String,
    /// Only the newest backup of each database.
    #[arg(long, conflicts_with = "latest_chain")]
    latest_backup: bool,
    /// Only the chain of the newest restore point.
    #[arg(long)]
    latest_chain: bool,
    /// Show EMPTY artifacts too.
    #[arg(long)]
    empty: bool,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Databases (default all).
    databases: Vec<String>,
    #[arg(long)]
    from_path: String,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct ExpireArgs {
    /// Databases (default all).
    databases: Vec<String>,
    #[arg(long)]
    from_path: String,
    /// Keep the N newest chains.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Keep everything newer than this (e.g. 7d, 12h).
    #[arg(long)]
    keep_within: Option<String>,
    /// Show what would be deleted.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct GcArgs {
    /// Databases (default all).
    databases: Vec<String>,
    #[arg(long)]
    from_path: String,
    /// Only remove pieces older than this (default 24h), so that no upload in progress is
    /// touched.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    grace: std::time::Duration,
    /// Show what would be removed.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct UnlockArgs {
    /// The database.
    database: String,
    #[arg(long)]
    from_path: String,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// The store to test.
    #[arg(long)]
    to_path: String,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Args, Debug, Clone)]
struct ScheduleArgs {
    #[command(flatten)]
    backup: BackupArgs,
    /// Stop after this many runs (tests).
    #[arg(long, hide = true)]
    max_runs: Option<u32>,
}

fn parse_type(s: &str) -> Result<BackupType, String> {
    s.parse()
        .map_err(|e: catena::chain_core::Error| e.to_string())
}

fn main() -> ExitCode {
    // Exit codes like neo4j-admin: a usage error is a failure (1), not clap's 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // aws-config logs the access key id of the credentials it loads (never the secret) at
    // INFO and below: keep it at WARN whatever RUST_LOG says, so that no key is printed.
    let quiet_aws = "aws_config=warn"
        .parse()
        .expect("a constant directive parses");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
        .add_directive(quiet_aws);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // A few blocking threads are enough for the pipelines (their work is bounded by the
    // workers and parts in flight); each extra one would keep an allocator arena of its own,
    // which shows as resident memory that grows with the data size.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(
            std::env::var("CATENA_BLOCKING_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(8),
        )
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<bool, String>;

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode the result: {e}"),
    }
}

fn db_names(list: &[String]) -> Result<Vec<DatabaseName>, String> {
    list.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| DatabaseName::new(s).map_err(|e| e.to_string()))
        .collect()
}

/// `--compression`, `--part-size-mib`, `--parts-in-flight`, set once from the command line.
static UPLOAD: std::sync::OnceLock<UploadOptions> = std::sync::OnceLock::new();

/// The upload settings of this invocation.
fn upload_options() -> UploadOptions {
    UPLOAD.get().cloned().unwrap_or_default()
}

fn parse_compression(s: &str) -> Result<catena::chain_core::Compression, String> {
    use catena::chain_core::Compression;
    let lower = s.trim().to_ascii_lowercase();
    if lower == "none" {
        return Ok(Compression::None);
    }
    lower
        .strip_prefix("zstd-")
        .or_else(|| lower.strip_prefix("zstd"))
        .and_then(|l| {
            if l.is_empty() {
                Some(3)
            } else {
                l.parse().ok()
            }
        })
        .filter(|l| (1..=22).contains(l))
        .map(|level| Compression::Zstd { level })
        .ok_or_else(|| format!("compression {s:?}: use none or zstd-1 .. zstd-22"))
}

/// `--retry-lock`, set once from the command line.
static RETRY_LOCK: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

async fn repository(config: StorageConfig) -> Result<Repository, String> {
    let storage = config.build().await.map_err(|e| e.to_string())?;
    for w in &storage.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Repository::new(storage).with_lock_options(LockOptions {
        wait: RETRY_LOCK.get().copied().unwrap_or_default(),
        ..LockOptions::default()
    }))
}

async fn run(cli: Cli) -> Outcome {
    let reporter: Arc<dyn Progress> = Arc::new(Reporter::new(cli.format));
    let format = cli.format;
    if let Some(wait) = cli.retry_lock {
        let _ = RETRY_LOCK.set(wait);
    }
    let mut upload = UploadOptions::default();
    if let Some(c) = cli.compression {
        upload.compression = c;
    }
    if let Some(mib) = cli.part_size_mib {
        upload.part_size = mib << 20;
    }
    if let Some(n) = cli.parts_in_flight {
        upload.parts_in_flight = n;
    }
    if let Err(e) = upload.validate() {
        return Err(e.to_string());
    }
    let _ = UPLOAD.set(upload);
    match cli.command {
        Command::Demo { keep } => demo::demo(keep).await.map_err(|e| e.to_string()),
        Command::Backup(args) => backup_command(args, format, &reporter).await,
        Command::Schedule(args) => schedule::schedule(args, format, reporter).await,
        Command::Aggregate(args) => aggregate_command(args, format, &reporter).await,
        Command::Restore(args) => {
            let repo = repository(args.storage.config(&args.from_path)?).await?;
            let db = DatabaseName::new(&args.database).map_err(|e| e.to_string())?;
            let target = match (&args.restore_until, &args.artifact) {
                (Some(_), Some(_)) => {
                    return Err("--restore-until and --artifact exclude each other".into());
                }
                (Some(u), None) => parse_until(u)?,
                (None, Some(a)) => RestoreTarget::Artifact(
                    a.parse()
                        .map_err(|e: catena::chain_core::Error| e.to_string())?,
                ),
                (None, None) => RestoreTarget::Latest,
            };
            let options = RestoreOptions {
                target,
                overwrite: args.overwrite_destination,
                ..RestoreOptions::new(&args.to)
            };
            let report = restore(&repo, &db, &options, &reporter)
                .await
                .map_err(|e| e.to_string())?;
            if format == Format::Json {
                print_json(&report);
            } else {
                println!(
                    "restored {} ({} files, {} bytes, position {}) into {} from a chain of {}; state digest {} verified",
                    report.artifact,
                    report.files,
                    report.bytes,
                    report.position,
                    report.destination.display(),
                    report.chain.len(),
                    report.state_digest
                );
            }
            Ok(true)
        }
        Command::Inspect(args) => {
            let repo = repository(args.storage.config(&args.from_path)?).await?;
            let scope = if args.latest_backup {
                InspectScope::LatestBackup
            } else if args.latest_chain {
                InspectScope::LatestChain
            } else {
                InspectScope::All
            };
            let rows = inspect(&repo, &db_names(&args.databases)?, scope, args.empty)
                .await
                .map_err(|e| e.to_string())?;
            if format == Format::Json {
                print_json(&rows);
            } else {
                println!(
                    "{:<50} {:<10} {:<20} {:<5} {:<11} {:>6} {:>6} {:>12} {:>12} REASON",
                    "ARTIFACT",
                    "DATABASE",
                    "TIME (UTC)",
                    "FULL",
                    "COMPRESSED",
                    "LOWEST",
                    "HIGHEST",
                    "SIZE",
                    "STORED",
                );
                for r in &rows {
                    println!(
                        "{:<50} {:<10} {:<20} {:<5} {:<11} {:>6} {:>6} {:>12} {:>12} {}{}{}",
                        r.artifact,
                        r.database,
                        r.created_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                        r.kind == catena::chain_core::ArtifactKind::Full,
                        r.compression,
                        r.from + 1,
                        r.to,
                        r.logical_bytes,
                        r.stored_bytes,
                        r.reason,
                        if r.empty { " EMPTY" } else { "" },
                        r.problem
                            .as_deref()
                            .map(|p| format!(" UNUSABLE: {p}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(rows.iter().all(|r| r.usable))
        }
        Command::Check(args) => {
            let repo = repository(args.storage.config(&args.from_path)?).await?;
            check_databases(
                &repo,
                db_names(&args.databases)?,
                &CheckOptions::default(),
                format,
                &reporter,
            )
            .await
        }
        Command::Expire(args) => {
            let repo = repository(args.storage.config(&args.from_path)?).await?;
            let policy = ExpirePolicy {
                keep_last_chains: args.keep_last,
                keep_within: args
                    .keep_within
                    .as_deref()
                    .map(parse_duration)
                    .transpose()?,
            };
            let mut dbs = db_names(&args.databases)?;
            if dbs.is_empty() {
                dbs = repo.databases().await.map_err(|e| e.to_string())?;
            }
            let mut reports = Vec::new();
            for db in dbs {
                reports.push(
                    expire(&repo, &db, &policy, jiff::Timestamp::now(), args.dry_run)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            if format == Format::Json {
                print_json(&reports);
            } else {
                for r in &reports {
                    println!(
                        "{}: {} {} deleted, {} kept",
                        r.database,
                        r.deleted.len(),
                        if r.dry_run { "would be" } else { "" },
                        r.kept.len()
                    );
                    for d in &r.deleted {
                        println!("  - {d}");
                    }
                }
            }
            Ok(true)
        }
        Command::Gc(args) => {
            let repo = repository(args.storage.config(&args.from_path)?).await?;
            let mut dbs = db_names(&args.databases)?;
            if dbs.is_empty() {
                dbs = repo.databases().await.map_err(|e| e.to_string())?;
            }
            let options = GcOptions {
                grace: args.grace,
                dry_run: args.dry_run,
            };
            let mut reports = Vec::new();
            for db in dbs {
                reports.push(gc(&repo, &db, &options).await.map_err(|e| e.to_string())?);
            }
            if format == Format::Json {
                print_json(&reports);
            } else {
                for r in &reports {
                    println!(
                        "{}: {} pieces ({} bytes) {}removed, {} younger than the grace period left",
                        r.database,
                        r.removed.len(),
                        r.bytes_removed,
                        if r.dry_run { "would be " } else { "" },
                        r.too_young.len()
                    );
                    for k in &r.removed {
                        println!("  - {k}");
                    }
                }
            }
            Ok(true)
        }
        Command::Unlock(args) => {
            let repo = repository(args.storage.config(&args.from_path)?).await?;
            let db = DatabaseName::new(&args.database).map_err(|e| e.to_string())?;
            match catena::lock::break_lock(repo.store().as_ref(), &db)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(r) => println!(
                    "{db}: broke the lock of {} (pid {}, {}), taken {}",
                    r.owner.host,
                    r.owner.pid,
                    r.owner.operation,
                    r.written_at.strftime("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => println!("{db}: not locked"),
            }
            Ok(true)
        }
        Command::Probe(args) => {
            let storage = args
                .storage
                .config(&args.to_path)?
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let report = catena::storage_backends::probe(Arc::clone(&storage.store)).await;
            if format == Format::Json {
                print_json(
                    &serde_json::json!({"store": storage.description, "settings": storage.settings, "report": report}),
                );
            } else {
                println!("{}", storage.description);
                for (k, v) in &storage.settings {
                    println!("  {k}: {v}");
                }
                let problems = report.problems();
                if problems.is_empty() {
                    println!(
                        "all checks passed: create-only put, multipart upload, ranged get, list, delete"
                    );
                }
                for p in &problems {
                    println!("PROBLEM: {p}");
                }
            }
            Ok(report.all_ok())
        }
    }
}

fn parse_until(s: &str) -> Result<RestoreTarget, String> {
    if let Ok(n) = s.trim().parse::<u64>() {
        return Ok(RestoreTarget::UntilPosition(Position(n)));
    }
    let dt: jiff::civil::DateTime = s.trim().parse().map_err(|_| {
        format!(
            "--restore-until {s:?} is neither a position nor a time \"YYYY-MM-DD HH:MM:SS\" (UTC)"
        )
    })?;
    let ts = jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|e| e.to_string())?;
    Ok(RestoreTarget::UntilTime(ts))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("duration {s:?}: use a number and a unit: 30m, 12h, 7d, 4w"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("duration {s:?}: the unit must be s, m, h, d or w")),
    };
    Ok(std::time::Duration::from_secs(n * secs))
}

/// The job a backup invocation describes, from flags and an optional values file.
pub(crate) struct Job {
    pub values: Values,
    pub storage: StorageConfig,
    pub from: Option<PathBuf>,
    pub databases: Vec<DatabaseName>,
    pub options: BackupOptions,
    pub metadata: catena::MetadataLevel,
}

pub(crate) fn job(args: &BackupArgs) -> Result<Job, String> {
    let values = match &args.values {
        Some(p) => Values::load(p)?,
        None => Values::default(),
    };
    if !values.not_applicable.is_empty() {
        eprintln!(
            "note: not applicable outside Kubernetes, ignored: {}",
            values.not_applicable.join(", ")
        );
    }
    for note in values.notes() {
        eprintln!("note: {note}");
    }
    if values.backup.keep_backup_files == Some(true) && args.values.is_some() {
        tracing::info!(
            "keepBackupFiles: Catena stages nothing locally, so there are no backup files to keep"
        );
    }
    let storage = match (&args.to_path, args.values.is_some()) {
        (Some(url), _) => {
            let mut c = StorageConfig::from_url(url).map_err(|e| e.to_string())?;
            if args.values.is_some() && c.cloud_provider != CloudProvider::Local {
                // The URL names bucket and prefix; the values' credentials still apply.
                let v = values.storage(&args.storage.secrets_dir, None)?;
                c = StorageConfig {
                    bucket_name: c.bucket_name,
                    prefix: c.prefix,
                    cloud_provider: c.cloud_provider,
                    local_path: c.local_path,
                    ..v
                };
            }
            args.storage.apply(c)
        }
        (None, true) => args
            .storage
            .apply(values.storage(&args.storage.secrets_dir, None)?),
        (None, false) => return Err("give --to-path (a URL or a directory) or --values".into()),
    };
    let mut databases = db_names(&args.databases)?;
    if databases.is_empty()
        && let Some(list) = &values.backup.database
    {
        databases = db_names(std::slice::from_ref(list))?;
    }
    let mut request = BackupRequest::default();
    if let Some(t) = &values.backup.backup_type {
        request.backup_type = parse_type(t).map_err(|e| format!("backup.type: {e}"))?;
    }
    if let Some(p) = values.backup.prefer_diff_as_parent {
        request.prefer_diff_as_parent = p;
    }
    if let Some(f) = values.backup.fallback_to_full {
        request.fallback_to_full = f;
    }
    if let Some(t) = args.backup_type {
        request.backup_type = t;
    }
    request.prefer_diff_as_parent |= args.prefer_diff_as_parent;
    if let Some(f) = args.fallback_to_full {
        request.fallback_to_full = f;
    }
    let options = BackupOptions {
        request,
        keep_failed: args.keep_failed || values.backup.keep_failed.unwrap_or(false),
        dry_run: args.dry_run,
        upload: upload_options(),
        ..BackupOptions::default()
    };
    let metadata = values.metadata();
    Ok(Job {
        values,
        storage,
        from: args.from.clone(),
        databases,
        options,
        metadata,
    })
}

pub(crate) async fn backup_command(
    args: BackupArgs,
    format: Format,
    reporter: &Arc<dyn Progress>,
) -> Outcome {
    let job = job(&args)?;
    if job.values.aggregate_only() {
        let a = &job.values.backup.aggregate;
        let storage = match &a.from_path {
            Some(url) => {
                let c = StorageConfig::from_url(url).map_err(|e| e.to_string())?;
                StorageConfig {
                    bucket_name: c.bucket_name,
                    prefix: c.prefix,
                    cloud_provider: c.cloud_provider,
                    local_path: c.local_path,
                    ..job.storage.clone()
                }
            }
            None => job.storage.clone(),
        };
        let repo = repository(storage).await?;
        let options = AggregateOptions {
            keep_old_backup: a.keep_old_backup.unwrap_or(false),
            upload: upload_options(),
            ..AggregateOptions::default()
        };
        return aggregate_print(
            &repo,
            a.database.as_deref().unwrap_or("*"),
            &options,
            format,
            reporter,
        )
        .await;
    }
    let Some(from) = &job.from else {
        return Err("give --from: the directory with one subdirectory per database".into());
    };
    let mut sources: Vec<(DatabaseName, Arc<dyn BackupSource>)> = Vec::new();
    if job.databases.is_empty() {
        for (db, s) in DirectorySource::databases(from).map_err(|e| e.to_string())? {
            sources.push((db, Arc::new(s.with_metadata(job.metadata))));
        }
    } else {
        for db in &job.databases {
            sources.push((
                db.clone(),
                Arc::new(DirectorySource::new(from.join(db.as_str())).with_metadata(job.metadata)),
            ));
        }
    }
    if sources.is_empty() {
        return Err(format!("no database directories under {}", from.display()));
    }
    let repo = repository(job.storage.clone()).await?;
    let report = backup(&repo, sources, &job.options, reporter)
        .await
        .map_err(|e| e.to_string())?;
    let mut ok = report.succeeded();
    if format == Format::Json {
        print_json(&report);
    } else {
        for d in &report.run.databases {
            let decision = d
                .decision
                .as_ref()
                .map(|x| format!("{} {} (reason {})", x.kind, x.positions, x.reason))
                .unwrap_or_default();
            match &d.error {
                None if args.dry_run => println!("{}: would take {decision}", d.database),
                None => println!(
                    "{}: {decision}: {} bytes read, {} stored, artifact {}{}",
                    d.database,
                    d.bytes_read,
                    d.stored_bytes,
                    d.artifact.as_deref().unwrap_or("-"),
                    if d.empty { " (EMPTY)" } else { "" }
                ),
                Some(e) => println!("{}: FAILED: {e}", d.database),
            }
            for w in &d.warnings {
                println!("  warning: {w}");
            }
        }
        if let Some(k) = &report.run_record_key {
            println!("run record: {k}");
        }
    }
    if ok && !args.dry_run && job.values.check_after() {
        let mut dbs = db_names(job.values.consistency_check.database.as_slice())?;
        if dbs.is_empty() {
            dbs = report
                .run
                .databases
                .iter()
                .filter_map(|d| DatabaseName::new(&d.database).ok())
                .collect();
        }
        let c = &job.values.consistency_check;
        let options = CheckOptions {
            structure: c.check_graph.unwrap_or(true),
            indexes: c.check_indexes.unwrap_or(true),
            objects: c.check_counts.unwrap_or(true),
            blocks: c.check_property_owners.unwrap_or(true),
            ..CheckOptions::default()
        };
        ok &= check_databases(&repo, dbs, &options, format, reporter).await?;
    }
    Ok(ok)
}

async fn aggregate_command(
    args: AggregateArgs,
    format: Format,
    reporter: &Arc<dyn Progress>,
) -> Outcome {
    let values = match &args.values {
        Some(p) => Values::load(p)?,
        None => Values::default(),
    };
    let a = &values.backup.aggregate;
    let url = args
        .from_path
        .clone()
        .or_else(|| a.from_path.clone())
        .ok_or("give --from-path (or backup.aggregate.fromPath in --values)")?;
    let mut config = args.storage.config(&url)?;
    if args.values.is_some() {
        let v = values.storage(&args.storage.secrets_dir, None)?;
        config = args.storage.apply(StorageConfig {
            bucket_name: config.bucket_name,
            prefix: config.prefix,
            cloud_provider: config.cloud_provider,
            local_path: config.local_path,
            ..v
        });
    }
    let repo = repository(config).await?;
    let pattern = args
        .database
        .clone()
        .or_else(|| a.database.clone())
        .unwrap_or_else(|| "*".into());
    let options = AggregateOptions {
        keep_old_backup: args.keep_old_backup || a.keep_old_backup.unwrap_or(false),
        target: AggregateTarget::Latest,
        upload: upload_options(),
        ..AggregateOptions::default()
    };
    aggregate_print(&repo, &pattern, &options, format, reporter).await
}

async fn aggregate_print(
    repo: &Repository,
    pattern: &str,
    options: &AggregateOptions,
    format: Format,
    reporter: &Arc<dyn Progress>,
) -> Outcome {
    let reports = aggregate(repo, pattern, options, reporter)
        .await
        .map_err(|e| e.to_string())?;
    if format == Format::Json {
        print_json(&reports);
    } else {
        for r in &reports {
            match &r.artifact {
                Some(a) => println!(
                    "{}: {} artifacts aggregated into {a}; deleted {}",
                    r.database,
                    r.chain.len(),
                    r.deleted.len()
                ),
                None => println!("{}: already a single FULL", r.database),
            }
        }
    }
    Ok(true)
}

async fn check_databases(
    repo: &Repository,
    mut dbs: Vec<DatabaseName>,
    options: &CheckOptions,
    format: Format,
    reporter: &Arc<dyn Progress>,
) -> Outcome {
    if dbs.is_empty() {
        dbs = repo.databases().await.map_err(|e| e.to_string())?;
    }
    let mut all_ok = true;
    let mut reports = Vec::new();
    for db in dbs {
        let (report, key) = check(repo, &db, options, reporter)
            .await
            .map_err(|e| e.to_string())?;
        all_ok &= report.ok;
        if format == Format::Tabular {
            println!(
                "check {}: {} ({} artifacts, {} objects, {} blocks verified; report {})",
                report.database,
                if report.ok {
                    "OK".into()
                } else {
                    format!("{} PROBLEMS", report.problems.len())
                },
                report.artifacts,
                report.objects_verified,
                report.blocks_verified,
                key.as_deref().unwrap_or("-")
            );
            for p in &report.problems {
                println!(
                    "  {}{}{}: {}",
                    p.key.as_deref().unwrap_or("-"),
                    p.offset
                        .map(|o| format!(" at offset {o}"))
                        .unwrap_or_default(),
                    p.artifact
                        .as_deref()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default(),
                    p.problem
                );
            }
        }
        reports.push(serde_json::json!({"report": report, "key": key}));
    }
    if format == Format::Json {
        print_json(&reports);
    }
    Ok(all_ok)
}
