//! `catena schedule`: the chart's CronJob outside Kubernetes. Runs the configured job on
//! `neo4j.jobSchedule`; never two runs at once (`concurrencyPolicy: Forbid`: a run that is
//! due while one is going is skipped); a failed run is retried up to `backoffLimit` times
//! with exponential backoff; each run leaves a history record under `_jobs/`, pruned to
//! `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`; Ctrl-C or SIGTERM stops it
//! cleanly: the run in progress is cancelled, and a cancel leaves nothing half-written
//! visible.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use catena::Repository;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use clap::Args;

use crate::backup::{BackupArgs, backup_command, job};
use crate::ctx::Ctx;

use catena::storage_backends::layout::JOBS_PREFIX;

/// What a signal that stops this command leaves behind, true at any moment.
pub(crate) const INTERRUPTED: &str = "the scheduler stopped; a run in progress was cancelled like a stopped backup (nothing half-written is visible, its lock released)";

#[derive(Args, Debug, Clone)]
pub(crate) struct ScheduleArgs {
    #[command(flatten)]
    pub(crate) backup: BackupArgs,
    /// Stop after this many runs (tests).
    #[arg(long, hide = true)]
    pub(crate) max_runs: Option<u32>,
}

pub(crate) async fn schedule(args: ScheduleArgs, ctx: &Ctx) -> Result<bool, String> {
    let job = job(&args.backup, ctx)?;
    let n = &job.values.neo4j;
    let pattern = n
        .job_schedule
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("* * * * *");
    let cron = croner::Cron::from_str(pattern)
        .map_err(|e| format!("neo4j.jobSchedule {pattern:?}: {e}"))?;
    let backoff_limit = n.backoff_limit.unwrap_or(3);
    let keep_ok = n.successful_jobs_history_limit.unwrap_or(3) as usize;
    let keep_failed = n.failed_jobs_history_limit.unwrap_or(1) as usize;
    // The history goes where the job's backups (or, for an aggregate-only values file, its
    // aggregate.fromPath) are.
    let storage = job
        .storage
        .clone()
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let repo = Repository::new(storage);
    let stop = ctx.cancel.clone();
    eprintln!("schedule {pattern:?} (backoffLimit {backoff_limit}); Ctrl-C to stop");
    let mut runs = 0u32;
    while !stop.is_cancelled() && args.max_runs.is_none_or(|m| runs < m) {
        let now = chrono::Utc::now();
        let next = cron
            .find_next_occurrence(&now, false)
            .map_err(|e| format!("neo4j.jobSchedule: {e}"))?;
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        if args.max_runs.is_none() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => break,
            }
        }
        runs += 1;
        // One run at a time: the loop waits for the run (with its retries) to end, so a run
        // that comes due meanwhile is skipped, like concurrencyPolicy: Forbid. A signal
        // cancels the run in flight (ctx.cancel reaches the engine) and ends the loop.
        let mut attempt = 0;
        let ok = loop {
            let result = backup_command(args.backup.clone(), ctx).await;
            let ok = matches!(result, Ok(true));
            if let Err(e) = &result {
                eprintln!("run failed: {e}");
            }
            if ok || attempt >= backoff_limit || stop.is_cancelled() {
                break ok;
            }
            attempt += 1;
            let delay = Duration::from_secs(10u64 << attempt.min(6));
            eprintln!("retry {attempt} of {backoff_limit} in {}s", delay.as_secs());
            tokio::select! {
                () = tokio::time::sleep(if args.max_runs.is_some() { Duration::from_millis(10) } else { delay }) => {}
                () = stop.cancelled() => break false,
            }
        };
        if stop.is_cancelled() {
            // Interrupted: main says so and exits with the signal's code.
            return Ok(false);
        }
        // The history is for people; failing to write it does not stop the schedule.
        if let Err(e) = record(&repo, ok, attempt, keep_ok, keep_failed).await {
            eprintln!(
                "warning: could not write the job history record ({e}); the schedule goes on"
            );
        }
    }
    if stop.is_cancelled() {
        eprintln!("stopping: no run was in progress");
        ctx.stopped_idle
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(true)
}

/// Writes the job history record and prunes the history to its limits.
async fn record(
    repo: &Repository,
    ok: bool,
    retries: u32,
    keep_ok: usize,
    keep_failed: usize,
) -> Result<(), String> {
    let now = jiff::Timestamp::now();
    let status = if ok { "succeeded" } else { "failed" };
    let key = Path::from_iter([
        JOBS_PREFIX,
        &format!(
            "{}-{status}-{:08x}.json",
            now.strftime("%Y%m%dT%H%M%S%.6fZ"),
            rand::random::<u32>()
        ),
    ]);
    // Sealed like every record Catena writes (docs/FORMAT.md, "Job records"), so that
    // `check` tells a damaged one.
    let body =
        serde_json::json!({"finished_at": now.to_string(), "status": status, "retries": retries});
    catena::storage_backends::commit::put_create(
        repo.store().as_ref(),
        &key,
        Bytes::from(catena::chain_core::sealed::seal(&body)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let prefix = Path::from(JOBS_PREFIX);
    let mut all: Vec<String> = repo
        .store()
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    all.sort();
    for (status, keep) in [("-succeeded-", keep_ok), ("-failed-", keep_failed)] {
        let of: Vec<&String> = all.iter().filter(|k| k.contains(status)).collect();
        for old in of.iter().take(of.len().saturating_sub(keep)) {
            let _ = repo.store().delete(&Path::from(old.as_str())).await;
        }
    }
    Ok(())
}
