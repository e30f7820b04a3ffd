//! What every command of one invocation shares (output, cancellation, upload and lock
//! settings), signals, logging and the runtime; small helpers.

use std::sync::Arc;

use catena::chain_core::DatabaseName;
use catena::storage_backends::upload::UploadOptions;
use catena::*;

use crate::output::{Format, Reporter};
use crate::signals::Interrupt;

/// How a command ended: `Ok(true)` success, `Ok(false)` done with problems it printed.
pub(crate) type Outcome = Result<bool, Failure>;

/// A command's failure: what to print (nothing when the command printed it already), and
/// whether running it again unchanged cannot help (`schedule` retries only what can).
#[derive(Debug)]
pub(crate) struct Failure {
    message: Option<String>,
    pub(crate) permanent: bool,
}

impl Failure {
    /// A failure the command has printed already (a failed database, a check's problems).
    pub(crate) fn reported(permanent: bool) -> Self {
        Self {
            message: None,
            permanent,
        }
    }

    /// What to print, unless printed already.
    pub(crate) fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

/// Argument and configuration errors: the same arguments fail the same way.
impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message: Some(message),
            permanent: true,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<catena::Error> for Failure {
    fn from(e: catena::Error) -> Self {
        Self {
            message: Some(e.to_string()),
            permanent: e.is_permanent(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or("failed (reported above)"))
    }
}

/// What every command of one invocation shares: output, cancellation (signals), upload and
/// lock settings. Built once; the CLI keeps no process-wide state.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) format: Format,
    pub(crate) reporter: Arc<dyn Progress>,
    pub(crate) cancel: CancellationToken,
    pub(crate) upload: UploadOptions,
    pub(crate) retry_lock: std::time::Duration,
    /// Where an encrypted repository's passphrase or key file comes from.
    pub(crate) encryption: crate::keys::EncryptionFlags,
    /// Set by `schedule` when a signal found it waiting, with no run to cancel: a clean stop.
    pub(crate) stopped_idle: Arc<std::sync::atomic::AtomicBool>,
}

impl Ctx {
    /// The context of one invocation, from the global flags.
    pub(crate) fn new(
        format: Format,
        interrupt: &Interrupt,
        compression: Option<catena::chain_core::Compression>,
        part_size_mib: Option<usize>,
        parts_in_flight: Option<usize>,
        retry_lock: Option<std::time::Duration>,
        encryption: crate::keys::EncryptionFlags,
    ) -> Result<Self, String> {
        let mut upload = UploadOptions::default();
        if let Some(c) = compression {
            upload.compression = c;
        }
        if let Some(mib) = part_size_mib {
            upload.part_size = mib << 20;
        }
        if let Some(n) = parts_in_flight {
            upload.parts_in_flight = n;
        }
        upload.validate().map_err(|e| e.to_string())?;
        Ok(Self {
            format,
            reporter: Arc::new(Reporter::new(format)),
            cancel: interrupt.cancel.clone(),
            upload,
            retry_lock: retry_lock.unwrap_or_default(),
            encryption,
            stopped_idle: Arc::clone(&interrupt.stopped_idle),
        })
    }
}

/// Logs to stderr at the level of `-v`s (RUST_LOG overrides), colours only on a terminal.
pub(crate) fn init_logging(verbose: u8) {
    let level = match verbose {
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
}

/// The runtime. Its blocking pool does the pipelines' CPU work (hashing, compressing,
/// decoding) and their file I/O; one thread per core (at least 2, at most 8) keeps every core
/// busy, and each thread beyond that only keeps a glibc allocator arena of its own, which
/// shows as resident memory (docs/DESIGN.md, "Why one blocking thread per core").
/// `CATENA_BLOCKING_THREADS` sets another number (for slow file systems, where more reads or
/// writes in flight help).
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match std::env::var("CATENA_BLOCKING_THREADS") {
        Ok(v) => blocking_threads(&v)?,
        Err(_) => std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(threads)
        .build()
}

/// `CATENA_BLOCKING_THREADS`, read: a whole number from 1 up.
fn blocking_threads(value: &str) -> std::io::Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "CATENA_BLOCKING_THREADS must be a whole number from 1 up, not {value:?}: \
                 set it so, or unset it for one per core"
            ),
        )),
    }
}

/// The repository a command works on, opened (see [`open_repository`]); never created.
pub(crate) async fn repository(config: StorageConfig, ctx: &Ctx) -> Result<Repository, String> {
    open_repository(config, ctx, false).await
}

/// Builds the store and opens the repository with the secret the flags give: an encrypted
/// one needs it (asked for on a terminal when no flag gives one), a plain one refuses it;
/// with `create` (backup), an empty location given a secret becomes an encrypted
/// repository.
pub(crate) async fn open_repository(
    config: StorageConfig,
    ctx: &Ctx,
    create: bool,
) -> Result<Repository, String> {
    let secret = ctx.encryption.secret(&config.secrets_dir)?;
    let storage = config.build().await.map_err(|e| e.to_string())?;
    for w in &storage.warnings {
        eprintln!("warning: {w}");
    }
    let repo = Repository::new(storage).with_lock_options(LockOptions {
        wait: ctx.retry_lock,
        cancel: ctx.cancel.clone(),
        ..LockOptions::default()
    });
    let secret = match secret {
        Some(s) => Some(s),
        None if repo
            .config()
            .await
            .map_err(|e| e.to_string())?
            .is_some_and(|c| c.encryption != catena::chain_core::crypto::Encryption::None) =>
        {
            crate::keys::prompt(&format!("passphrase of {}: ", repo.description()))?
        }
        None => None,
    };
    repo.open(secret.as_ref(), create)
        .await
        .map_err(|e| e.to_string())
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode the result: {e}"),
    }
}

pub(crate) fn db_names(list: &[String]) -> Result<Vec<DatabaseName>, String> {
    list.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| DatabaseName::new(s).map_err(|e| e.to_string()))
        .collect()
}
