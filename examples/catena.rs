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
use catena::storage_backends::upload::UploadOptions;
use catena::storage_backends::{CloudProvider, StorageOverrides};
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
/// The field names are the chart's keys (`StorageOverrides`, which these become, refuses any
/// other), so flags, environment and values file cannot drift apart.
#[derive(Args, Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StorageFlags {
    /// S3-compatible endpoint (s3Endpoint).
    #[arg(long, env = "CATENA_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// TLS for an endpoint given without scheme (s3EndpointTLS).
    #[arg(long, env = "CATENA_S3_ENDPOINT_TLS", num_args = 0..=1, default_missing_value = "true")]
    #[serde(rename = "s3EndpointTLS")]
    s3_endpoint_tls: Option<bool>,
    /// CA certificate, base64 of PEM (s3CACert).
    #[arg(long, env = "CATENA_S3_CA_CERT", hide_env_values = true)]
    #[serde(rename = "s3CACert")]
    s3_ca_cert: Option<String>,
    /// Secret holding a CA file (s3CASecretName).
    #[arg(long, env = "CATENA_S3_CA_SECRET_NAME")]
    #[serde(rename = "s3CASecretName")]
    s3_ca_secret_name: Option<String>,
    /// Key of the CA file in that secret (s3CASecretKey).
    #[arg(long, env = "CATENA_S3_CA_SECRET_KEY")]
    #[serde(rename = "s3CASecretKey")]
    s3_ca_secret_key: Option<String>,
    /// Skip TLS verification (s3SkipVerify; dangerous).
    #[arg(long, env = "CATENA_S3_SKIP_VERIFY", num_args = 0..=1, default_missing_value = "true")]
    s3_skip_verify: Option<bool>,
    /// Path-style requests (s3ForcePathStyle).
    #[arg(long, env = "CATENA_S3_FORCE_PATH_STYLE", num_args = 0..=1, default_missing_value = "true")]
    s3_force_path_style: Option<bool>,
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
    /// Where secrets are mounted: <dir>/<secretName>/<secretKeyName> (default
    /// /var/run/secrets/catena).
    #[arg(long, env = "CATENA_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// Azure-compatible endpoint (Azurite).
    #[arg(long, env = "CATENA_AZURE_ENDPOINT")]
    azure_endpoint: Option<String>,
    /// Use the Azurite emulator (AZURITE_BLOB_STORAGE_URL).
    #[arg(long, env = "CATENA_AZURE_USE_EMULATOR", num_args = 0..=1, default_missing_value = "true")]
    azure_use_emulator: Option<bool>,
}

impl StorageFlags {
    /// The flags that are set, as overrides of the chart's keys.
    fn overrides(&self) -> Result<StorageOverrides, String> {
        serde_json::to_value(self)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("storage flags: {e}"))
    }

    /// Where a command's backups are: the values file's storage keys, then the URL (which
    /// names provider, bucket and prefix, or the directory), then flags and environment
    /// over both. The one place storage settings are merged.
    fn config(&self, url: Option<&str>, values: Option<&Values>) -> Result<StorageConfig, String> {
        let from_file = values
            .map(|v| v.storage(&StorageConfig::default().secrets_dir, None))
            .transpose()?;
        let base = match (url, from_file) {
            (Some(url), Some(file)) => {
                let at = StorageConfig::from_url(url).map_err(|e| e.to_string())?;
                let here = matches!(
                    at.cloud_provider,
                    CloudProvider::Local | CloudProvider::Memory
                );
                let cloud = !matches!(
                    file.cloud_provider,
                    CloudProvider::Local | CloudProvider::Memory
                );
                if here && cloud {
                    // A directory instead of the file's cloud: its keys are for elsewhere.
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
            (Some(url), None) => StorageConfig::from_url(url).map_err(|e| e.to_string())?,
            (None, Some(file)) => file,
            (None, None) => return Err("give --to-path (a URL or a directory) or --values".into()),
        };
        Ok(base.with_overrides(&self.overrides()?))
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
    /// Restore the newest state before this bound: a position (exclusive), or a time
    /// (committed before it) as inspect shows it ("YYYY-MM-DD HH:MM:SS.ffffff", UTC) or
    /// RFC 3339 ("2026-11-25T18:12:29Z", "...+01:00").
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
    /// Break the lock even if its holder is a process running on this host.
    #[arg(long)]
    force: bool,
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let format = cli.format;
    let interrupt = Interrupt::default();
    let what = cli.command.interrupted_note();
    let outcome = rt.block_on(async {
        interrupt.listen(what);
        run(
            cli,
            interrupt.cancel.clone(),
            Arc::clone(&interrupt.stopped_idle),
        )
        .await
    });
    if interrupt
        .stopped_idle
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        // `schedule` was waiting for its next run: stopping it is its normal end.
        return ExitCode::SUCCESS;
    }
    if let Some(signal) = interrupt.signal() {
        // One line: what the signal stopped and what it left (the command's own lines
        // above say what it finished before).
        eprintln!("interrupted by {}: {what}", signal.name());
        // Background tasks (a lock's renewal, a cancelled upload's abort) end with the
        // runtime, within a bounded time.
        rt.shutdown_timeout(std::time::Duration::from_secs(2));
        return ExitCode::from(signal.exit_code());
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            if format == Format::Json {
                print_json(&serde_json::json!({ "error": e }));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The signal that stopped this invocation, if any, and the cancellation it triggers.
#[derive(Clone, Default)]
struct Interrupt {
    cancel: CancellationToken,
    signal: Arc<std::sync::OnceLock<Signal>>,
    stopped_idle: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Term,
    Int,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        }
    }

    /// 128 + the signal's number, as shells and Kubernetes report a process it stopped.
    fn exit_code(self) -> u8 {
        match self {
            Signal::Term => 143,
            Signal::Int => 130,
        }
    }
}

/// How long a command may take to wind down after a signal before the process exits
/// anyway: Kubernetes sends SIGKILL 30 s after SIGTERM, and what a cancel leaves is safe
/// to leave at any moment (nothing half-written is visible).
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);

impl Interrupt {
    /// On SIGTERM or SIGINT: cancels, and makes sure the process exits within
    /// [`STOP_WITHIN`] even if something does not listen. Needs the runtime.
    fn listen(&self, what: &'static str) {
        let this = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let got = tokio::select! {
                _ = term.recv() => Signal::Term,
                _ = int.recv() => Signal::Int,
            };
            let _ = this.signal.set(got);
            this.cancel.cancel();
            std::thread::spawn(move || {
                std::thread::sleep(STOP_WITHIN);
                eprintln!(
                    "interrupted by {}: {what} (it did not wind down within {} s; exiting anyway)",
                    got.name(),
                    STOP_WITHIN.as_secs()
                );
                std::process::exit(i32::from(got.exit_code()));
            });
        });
    }

    fn signal(&self) -> Option<Signal> {
        self.signal.get().copied()
    }
}

impl Command {
    /// What stopping this command by a signal leaves behind, true at any moment.
    fn interrupted_note(&self) -> &'static str {
        match self {
            Command::Backup(_) => {
                "backup stopped; the database in progress was not committed, its upload was aborted and nothing of it is visible; its lock was released"
            }
            Command::Schedule(_) => {
                "the scheduler stopped; a run in progress was cancelled like a stopped backup (nothing half-written is visible, its lock released)"
            }
            Command::Aggregate(_) => {
                "aggregate stopped; a FULL not yet committed was abandoned and its upload aborted, the old chain is intact; deletions cut short after a commit are finished by the next aggregate or expire; the lock was released"
            }
            Command::Restore(_) => {
                "restore stopped; the destination was left as it was and the staging directory removed"
            }
            Command::Expire(_) => {
                "expire stopped; artifacts deleted before the signal are gone, the rest are kept, none is left without its parent; the lock was released"
            }
            Command::Gc(_) => {
                "gc stopped; pieces removed before the signal are gone, nothing committed was touched; the lock was released"
            }
            _ => "stopped; this command writes nothing that a stop can leave half-done",
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

/// What every command of one invocation shares: output, cancellation (signals), upload and
/// lock settings. Built once in [`run`]; the CLI keeps no process-wide state.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub format: Format,
    pub reporter: Arc<dyn Progress>,
    pub cancel: CancellationToken,
    pub upload: UploadOptions,
    pub retry_lock: std::time::Duration,
    /// Set by `schedule` when a signal found it waiting, with no run to cancel: a clean stop.
    pub stopped_idle: Arc<std::sync::atomic::AtomicBool>,
}

async fn repository(config: StorageConfig, ctx: &Ctx) -> Result<Repository, String> {
    let storage = config.build().await.map_err(|e| e.to_string())?;
    for w in &storage.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Repository::new(storage).with_lock_options(LockOptions {
        wait: ctx.retry_lock,
        cancel: ctx.cancel.clone(),
        ..LockOptions::default()
    }))
}

async fn run(
    cli: Cli,
    cancel: CancellationToken,
    stopped_idle: Arc<std::sync::atomic::AtomicBool>,
) -> Outcome {
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
    let ctx = Ctx {
        format: cli.format,
        reporter: Arc::new(Reporter::new(cli.format)),
        cancel,
        upload,
        retry_lock: cli.retry_lock.unwrap_or_default(),
        stopped_idle: Arc::clone(&stopped_idle),
    };
    let format = ctx.format;
    let reporter = Arc::clone(&ctx.reporter);
    match cli.command {
        Command::Demo { keep } => demo::demo(keep).await.map_err(|e| e.to_string()),
        Command::Backup(args) => backup_command(args, &ctx).await,
        Command::Schedule(args) => schedule::schedule(args, &ctx).await,
        Command::Aggregate(args) => aggregate_command(args, &ctx).await,
        Command::Restore(args) => {
            let repo = repository(args.storage.config(Some(&args.from_path), None)?, &ctx).await?;
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
                cancel: ctx.cancel.clone(),
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
                for note in &report.notes {
                    println!("  note: {note}");
                }
            }
            Ok(true)
        }
        Command::Inspect(args) => {
            let repo = repository(args.storage.config(Some(&args.from_path), None)?, &ctx).await?;
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
                    "{:<50} {:<10} {:<26} {:<5} {:<11} {:>6} {:>6} {:>12} {:>12} REASON",
                    "ARTIFACT",
                    "DATABASE",
                    "COMMITTED (UTC)",
                    "FULL",
                    "COMPRESSED",
                    "LOWEST",
                    "HIGHEST",
                    "SIZE",
                    "STORED",
                );
                for r in &rows {
                    println!(
                        "{:<50} {:<10} {:<26} {:<5} {:<11} {:>6} {:>6} {:>12} {:>12} {}{}{}",
                        r.artifact,
                        r.database,
                        // Exactly what --restore-until takes back: microseconds, like the
                        // manifest's committed_at, so backups of one second are told apart.
                        r.committed_at.strftime("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                        match r.kind {
                            Some(k) => (k == catena::chain_core::ArtifactKind::Full).to_string(),
                            None => "?".into(),
                        },
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
            let repo = repository(args.storage.config(Some(&args.from_path), None)?, &ctx).await?;
            check_databases(
                &repo,
                db_names(&args.databases)?,
                &CheckOptions::default(),
                &ctx,
            )
            .await
        }
        Command::Expire(args) => {
            let repo = repository(args.storage.config(Some(&args.from_path), None)?, &ctx).await?;
            if args.keep_last.is_none() && args.keep_within.is_none() {
                return Err(
                    "expire needs a retention policy: give --keep-last N (keep the N newest chains), --keep-within DURATION (e.g. 30d), or both".into(),
                );
            }
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
                let options = ExpireOptions {
                    dry_run: args.dry_run,
                    cancel: ctx.cancel.clone(),
                    ..ExpireOptions::new(policy.clone())
                };
                reports.push(
                    expire(&repo, &db, &options)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            if format == Format::Json {
                print_json(&reports);
            } else {
                for r in &reports {
                    println!(
                        "{}: {} {}, {} kept",
                        r.database,
                        r.deleted.len(),
                        if r.dry_run {
                            "would be deleted"
                        } else {
                            "deleted"
                        },
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
            let repo = repository(args.storage.config(Some(&args.from_path), None)?, &ctx).await?;
            let mut dbs = db_names(&args.databases)?;
            if dbs.is_empty() {
                dbs = repo.databases().await.map_err(|e| e.to_string())?;
            }
            let options = GcOptions {
                grace: args.grace,
                dry_run: args.dry_run,
                cancel: ctx.cancel.clone(),
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
            let repo = repository(args.storage.config(Some(&args.from_path), None)?, &ctx).await?;
            let db = DatabaseName::new(&args.database).map_err(|e| e.to_string())?;
            match catena::lock::break_lock(repo.store().as_ref(), &db, args.force)
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
            let config = args.storage.config(Some(&args.to_path), None)?;
            let storage = config.build().await.map_err(|e| e.to_string())?;
            let report = catena::storage_backends::probe(Arc::clone(&storage.store)).await;
            let addressing = catena::storage_backends::probe_addressing(&config).await;
            if format == Format::Json {
                print_json(
                    &serde_json::json!({"store": storage.description, "settings": storage.settings, "report": report, "addressing": addressing}),
                );
            } else {
                println!("{}", storage.description);
                for (k, v) in &storage.settings {
                    println!("  {k}: {v}");
                }
                if let Some(a) = &addressing {
                    let show = |c: &catena::storage_backends::probe::CheckOutcome| match c {
                        catena::storage_backends::probe::CheckOutcome::Ok => "works".to_owned(),
                        catena::storage_backends::probe::CheckOutcome::Failed(d)
                        | catena::storage_backends::probe::CheckOutcome::Ignored(d) => {
                            format!("does not work: {d}")
                        }
                    };
                    println!("  virtual-hosted addressing: {}", show(&a.virtual_hosted));
                    println!("  path-style addressing: {}", show(&a.path_style));
                }
                let mut problems = report.problems();
                problems.extend(addressing.iter().flat_map(|a| a.problems()));
                if problems.is_empty() {
                    println!(
                        "all checks passed: create-only put, multipart upload, ranged get, list, delete{}",
                        if addressing.is_some() {
                            ", bucket addressing"
                        } else {
                            ""
                        }
                    );
                }
                for p in &problems {
                    println!("PROBLEM: {p}");
                }
            }
            Ok(report.all_ok() && addressing.is_none_or(|a| a.configured_works()))
        }
    }
}

/// The time formats `--restore-until` takes: exactly what Catena prints (inspect's
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC; RFC 3339 in JSON and run records), and RFC 3339
/// with any offset.
const TIME_FORMATS: &str = "a position (a whole number), a UTC time \"YYYY-MM-DD HH:MM:SS[.ffffff]\" as inspect shows it, or RFC 3339 (\"2026-11-25T18:12:29.232432Z\", \"2026-11-25T19:12:29+01:00\")";

fn parse_until(s: &str) -> Result<RestoreTarget, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(RestoreTarget::UntilPosition(Position(n)));
    }
    let bad = || format!("--restore-until {s:?} is not {TIME_FORMATS}");
    // RFC 3339 (with `Z` or an offset), as JSON and run records print times.
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(RestoreTarget::UntilTime(ts));
    }
    // A civil time, as inspect prints it: UTC.
    let dt: jiff::civil::DateTime = t.parse().map_err(|_| bad())?;
    let ts = jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|_| bad())?;
    Ok(RestoreTarget::UntilTime(ts))
}

/// The longest duration accepted anywhere (100 years): anything longer is a typo.
const MAX_DURATION_SECS: u64 = 100 * 366 * 86_400;

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
    match n.checked_mul(secs) {
        Some(total) if total <= MAX_DURATION_SECS => Ok(std::time::Duration::from_secs(total)),
        _ => Err(format!(
            "duration {s:?} is longer than 100 years; give a shorter one, e.g. 30d"
        )),
    }
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

/// Reads `--values` (if given) and says once what in it has no effect here.
fn load_values(path: Option<&std::path::Path>) -> Result<Values, String> {
    let Some(path) = path else {
        return Ok(Values::default());
    };
    let values = Values::load(path)?;
    if !values.not_applicable.is_empty() {
        eprintln!(
            "note: not applicable outside Kubernetes, ignored: {}",
            values.not_applicable.join(", ")
        );
    }
    for note in values.notes() {
        eprintln!("note: {note}");
    }
    Ok(values)
}

pub(crate) fn job(args: &BackupArgs, ctx: &Ctx) -> Result<Job, String> {
    let values = load_values(args.values.as_deref())?;
    // An aggregate-only values file names its repository in backup.aggregate.fromPath, as
    // `aggregate --values` reads it; --to-path still wins.
    let url = args.to_path.clone().or_else(|| {
        values
            .aggregate_only()
            .then(|| values.backup.aggregate.from_path.clone())
            .flatten()
            .filter(|p| !p.trim().is_empty())
    });
    let storage = args
        .storage
        .config(url.as_deref(), args.values.as_ref().map(|_| &values))?;
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
        upload: ctx.upload.clone(),
        cancel: ctx.cancel.clone(),
        skipped: Vec::new(),
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

pub(crate) async fn backup_command(args: BackupArgs, ctx: &Ctx) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
    let job = job(&args, ctx)?;
    if job.values.aggregate_only() {
        let a = &job.values.backup.aggregate;
        let storage = job.storage.clone();
        let repo = repository(storage, ctx).await?;
        let options = AggregateOptions {
            keep_old_backup: a.keep_old_backup.unwrap_or(false),
            upload: ctx.upload.clone(),
            cancel: ctx.cancel.clone(),
            ..AggregateOptions::default()
        };
        return aggregate_print(&repo, a.database.as_deref().unwrap_or("*"), &options, ctx).await;
    }
    let Some(from) = &job.from else {
        return Err("give --from: the directory with one subdirectory per database".into());
    };
    let mut sources: Vec<(DatabaseName, Arc<dyn BackupSource>)> = Vec::new();
    let mut options = job.options.clone();
    if job.databases.is_empty() {
        let scan = DirectorySource::scan(from).map_err(|e| e.to_string())?;
        for (db, s) in scan.databases {
            sources.push((db, Arc::new(s.with_metadata(job.metadata))));
        }
        options.skipped = scan.skipped;
    } else {
        for db in &job.databases {
            sources.push((
                db.clone(),
                Arc::new(DirectorySource::new(from.join(db.as_str())).with_metadata(job.metadata)),
            ));
        }
    }
    if sources.is_empty() {
        let skipped: Vec<String> = options
            .skipped
            .iter()
            .map(|s| format!("{} ({})", s.name, s.why))
            .collect();
        return Err(format!(
            "no database directories under {}{}",
            from.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; passed over: {}", skipped.join(", "))
            }
        ));
    }
    let repo = repository(job.storage.clone(), ctx).await?;
    let report = backup(&repo, sources, &options, reporter)
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
        for s in &report.run.skipped {
            println!(
                "{}: NOT BACKED UP: {}{}",
                s.name,
                s.why,
                if s.fails_run { "" } else { " (noted)" }
            );
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
        ok &= check_databases(&repo, dbs, &options, ctx).await?;
    }
    Ok(ok)
}

async fn aggregate_command(args: AggregateArgs, ctx: &Ctx) -> Outcome {
    let values = load_values(args.values.as_deref())?;
    let a = &values.backup.aggregate;
    let url = args
        .from_path
        .clone()
        .or_else(|| a.from_path.clone())
        .ok_or("give --from-path (or backup.aggregate.fromPath in --values)")?;
    let config = args
        .storage
        .config(Some(&url), args.values.as_ref().map(|_| &values))?;
    let repo = repository(config, ctx).await?;
    let pattern = args
        .database
        .clone()
        .or_else(|| a.database.clone())
        .unwrap_or_else(|| "*".into());
    let options = AggregateOptions {
        keep_old_backup: args.keep_old_backup || a.keep_old_backup.unwrap_or(false),
        target: AggregateTarget::Latest,
        upload: ctx.upload.clone(),
        cancel: ctx.cancel.clone(),
        ..AggregateOptions::default()
    };
    aggregate_print(&repo, &pattern, &options, ctx).await
}

async fn aggregate_print(
    repo: &Repository,
    pattern: &str,
    options: &AggregateOptions,
    ctx: &Ctx,
) -> Outcome {
    let format = ctx.format;
    let reports = aggregate(repo, pattern, options, &ctx.reporter)
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
    ctx: &Ctx,
) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
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
