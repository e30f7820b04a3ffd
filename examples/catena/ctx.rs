//! What every command of one invocation shares (output, cancellation, upload and lock
//! settings), signals, logging and the runtime; small helpers.

use std::sync::Arc;

use catena::chain_core::DatabaseName;
use catena::storage_backends::upload::UploadOptions;
use catena::*;

use crate::output::{Format, Reporter};

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

/// The runtime. A few blocking threads are enough for the pipelines (their work is bounded
/// by the workers and parts in flight); each extra one would keep an allocator arena of its
/// own, which shows as resident memory that grows with the data size.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(
            std::env::var("CATENA_BLOCKING_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(8),
        )
        .build()
}

pub(crate) async fn repository(config: StorageConfig, ctx: &Ctx) -> Result<Repository, String> {
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

/// The signal that stopped this invocation, if any, and the cancellation it triggers.
#[derive(Clone, Default)]
pub(crate) struct Interrupt {
    pub(crate) cancel: CancellationToken,
    /// The exit code of the signal received (0: none yet).
    pub(crate) signal: Arc<std::sync::atomic::AtomicU8>,
    pub(crate) stopped_idle: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Signal {
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
pub(crate) const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);

impl Interrupt {
    /// On SIGTERM or SIGINT: cancels, and makes sure the process exits within
    /// [`STOP_WITHIN`] even if something does not listen. Needs the runtime.
    pub(crate) fn listen(&self, what: &'static str) {
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
            this.signal
                .store(got.exit_code(), std::sync::atomic::Ordering::SeqCst);
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
        match self.signal.load(std::sync::atomic::Ordering::SeqCst) {
            143 => Some(Signal::Term),
            130 => Some(Signal::Int),
            _ => None,
        }
    }

    /// How the process ends: 143 / 130 after a signal, with one line saying what the stop
    /// left (`what`); 0 when `schedule` was stopped while it waited; else by `outcome`,
    /// an error printed once (as JSON with `--format JSON`).
    pub(crate) fn exit_code(
        &self,
        rt: tokio::runtime::Runtime,
        what: &str,
        format: Format,
        outcome: Outcome,
    ) -> std::process::ExitCode {
        use std::process::ExitCode;
        if self.stopped_idle.load(std::sync::atomic::Ordering::SeqCst) {
            return ExitCode::SUCCESS;
        }
        if let Some(signal) = self.signal() {
            // The command's own lines above say what it finished before.
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
                match e.message() {
                    None => {}
                    Some(m) if format == Format::Json => {
                        print_json(&serde_json::json!({ "error": m }));
                    }
                    Some(m) => eprintln!("error: {m}"),
                }
                ExitCode::FAILURE
            }
        }
    }
}
