//! Signals: SIGTERM (as Kubernetes sends it) and SIGINT cancel the command's work through
//! the context's token, and decide the exit code (143 / 130) and the one line that says what
//! the stop left behind.

use std::sync::Arc;

use catena::CancellationToken;

use crate::ctx::{Outcome, print_json};
use crate::output::Format;

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
