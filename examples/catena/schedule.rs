//! `catena schedule`: the chart's CronJob outside Kubernetes, on the library's runner
//! ([`catena::schedule`]): the values file's job on `neo4j.jobSchedule`, one run at a time,
//! failed runs retried up to `backoffLimit` times unless their failure is permanent, a
//! history under `_jobs/`; Ctrl-C or SIGTERM cancels the run in flight and stops.

use std::time::Duration;

use catena::schedule::{JobSchedule, RunOutcome, ScheduleOptions};
use clap::Args;

use crate::backup::{BackupArgs, backup_command};
use crate::ctx::{Ctx, Outcome};
use crate::job::job;

/// What a signal that stops this command leaves behind, true at any moment.
pub(crate) const INTERRUPTED: &str = "the scheduler stopped; a run in progress was cancelled like a stopped backup (nothing half-written is visible, its lock released)";

#[derive(Args, Debug, Clone)]
pub(crate) struct ScheduleArgs {
    #[command(flatten)]
    pub(crate) backup: BackupArgs,
    /// Stop after this many runs, started at once (tests).
    #[arg(long, hide = true)]
    pub(crate) max_runs: Option<u32>,
}

pub(crate) async fn schedule(args: ScheduleArgs, ctx: &Ctx) -> Outcome {
    let job = job(&args.backup, ctx)?;
    let when = JobSchedule::from_values(&job.values)?;
    // The history goes where the job's backups (or, for an aggregate-only values file, its
    // aggregate.fromPath) are.
    let repo = crate::ctx::open_repository(job.storage.clone(), ctx, true).await?;
    let options = ScheduleOptions {
        cancel: ctx.cancel.clone(),
        max_runs: args.max_runs,
        first_retry_delay: if args.max_runs.is_some() {
            Duration::from_millis(10)
        } else {
            ScheduleOptions::default().first_retry_delay
        },
    };
    eprintln!(
        "schedule {:?} (backoffLimit {}); Ctrl-C to stop",
        when.pattern(),
        when.backoff_limit
    );
    let report = catena::schedule::schedule(&repo, &when, &options, async || {
        match backup_command(args.backup.clone(), ctx).await {
            Ok(true) => RunOutcome::Succeeded,
            // Done with problems it printed: a retry may find them gone.
            Ok(false) => RunOutcome::Failed {
                error: "the run reported problems (above)".into(),
                permanent: false,
            },
            Err(f) => {
                if let Some(m) = f.message() {
                    eprintln!("run failed: {m}");
                }
                RunOutcome::Failed {
                    error: f.to_string(),
                    permanent: f.permanent,
                }
            }
        }
    })
    .await?;
    if report.interrupted_run {
        // Interrupted: main says so and exits with the signal's code.
        return Ok(false);
    }
    if report.stopped_idle {
        eprintln!("stopping: no run was in progress");
        ctx.stopped_idle
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(true)
}
