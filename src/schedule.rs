//! The chart's CronJob outside Kubernetes: run a job on `neo4j.jobSchedule`, never two runs
//! at once (`concurrencyPolicy: Forbid`: a run that comes due while one is going is
//! skipped), retry a failed run up to `backoffLimit` times with exponential backoff, but
//! only when its failure may pass ([`Error::is_permanent`]: bad credentials, an untrusted
//! certificate, a damaged repository are reported at once, not retried), and keep a sealed
//! history record of each run under `_jobs/`, pruned to `successfulJobsHistoryLimit` /
//! `failedJobsHistoryLimit`. Cancelling stops it cleanly: the run in flight is cancelled
//! (the job shares the token), and a cancelled run leaves nothing half-written visible.
//!
//! ```no_run
//! # async fn example(repo: catena::Repository, values: catena::values::Values) -> Result<(), catena::Error> {
//! use catena::schedule::{JobSchedule, RunOutcome, ScheduleOptions, schedule};
//!
//! let when = JobSchedule::from_values(&values)?;
//! let report = schedule(&repo, &when, &ScheduleOptions::default(), async || {
//!     // Back up, aggregate, check: whatever the job is.
//!     RunOutcome::Succeeded
//! })
//! .await?;
//! println!("{} runs", report.runs);
//! # Ok(()) }
//! ```

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;
use storage_backends::CancellationToken;
use storage_backends::layout::JOBS_PREFIX;

use crate::values::Values;
use crate::{Error, Repository};

/// When a job runs and how much history it keeps: the chart's `neo4j.*` keys.
#[derive(Clone, Debug)]
pub struct JobSchedule {
    pattern: String,
    cron: croner::Cron,
    /// Retries of a failed run whose failure may pass (`neo4j.backoffLimit`, default 3).
    pub backoff_limit: u32,
    /// History records of succeeded runs kept (`neo4j.successfulJobsHistoryLimit`,
    /// default 3).
    pub successful_jobs_history_limit: usize,
    /// History records of failed runs kept (`neo4j.failedJobsHistoryLimit`, default 1).
    pub failed_jobs_history_limit: usize,
}

impl JobSchedule {
    /// A schedule on the cron `pattern` (five fields; empty: every minute), with the
    /// chart's default limits.
    pub fn new(pattern: &str) -> Result<Self, Error> {
        let pattern = match pattern.trim() {
            "" => "* * * * *",
            p => p,
        };
        let cron = croner::Cron::from_str(pattern).map_err(|e| {
            Error::Values(format!(
                "neo4j.jobSchedule {pattern:?}: {e}; give five cron fields, e.g. \"0 2 * * *\""
            ))
        })?;
        Ok(Self {
            pattern: pattern.to_owned(),
            cron,
            backoff_limit: 3,
            successful_jobs_history_limit: 3,
            failed_jobs_history_limit: 1,
        })
    }

    /// The schedule a values file describes (`neo4j.jobSchedule`, `backoffLimit`,
    /// `successfulJobsHistoryLimit`, `failedJobsHistoryLimit`).
    pub fn from_values(values: &Values) -> Result<Self, Error> {
        let n = &values.neo4j;
        let mut s = Self::new(n.job_schedule.as_deref().unwrap_or(""))?;
        s.backoff_limit = n.backoff_limit.unwrap_or(s.backoff_limit);
        s.successful_jobs_history_limit = n
            .successful_jobs_history_limit
            .map_or(s.successful_jobs_history_limit, |l| l as usize);
        s.failed_jobs_history_limit = n
            .failed_jobs_history_limit
            .map_or(s.failed_jobs_history_limit, |l| l as usize);
        Ok(s)
    }

    /// The cron pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// How long from now until the next time the job is due.
    pub fn until_next(&self) -> Result<Duration, Error> {
        let now = chrono::Utc::now();
        let next = self
            .cron
            .find_next_occurrence(&now, false)
            .map_err(|e| Error::Values(format!("neo4j.jobSchedule {:?}: {e}", self.pattern)))?;
        Ok((next - now).to_std().unwrap_or(Duration::ZERO))
    }
}

/// How [`schedule`] runs.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    /// Stops the schedule; the job should share it, so that the run in flight stops too.
    pub cancel: CancellationToken,
    /// Stop after this many runs. A bounded schedule runs at once, without waiting for
    /// the cron times (to run a job N times now, and for tests).
    pub max_runs: Option<u32>,
    /// The wait before the first retry, doubled for each next one (at most 64 times;
    /// default 20 s).
    pub first_retry_delay: Duration,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        Self {
            cancel: CancellationToken::new(),
            max_runs: None,
            first_retry_delay: Duration::from_secs(20),
        }
    }
}

/// How one attempt of a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// It did what it should.
    Succeeded,
    /// It did not.
    Failed {
        /// What went wrong, for people.
        error: String,
        /// Running again unchanged cannot help (see [`Error::is_permanent`]): not retried.
        permanent: bool,
    },
}

impl From<Result<(), Error>> for RunOutcome {
    fn from(result: Result<(), Error>) -> Self {
        match result {
            Ok(()) => RunOutcome::Succeeded,
            Err(e) => RunOutcome::Failed {
                error: e.to_string(),
                permanent: e.is_permanent(),
            },
        }
    }
}

/// What a schedule did until it stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleReport {
    /// Runs started (retries not counted).
    pub runs: u32,
    /// Runs that succeeded, at the first attempt or a retry.
    pub succeeded: u32,
    /// Runs that failed after their retries, or at once with a permanent failure.
    pub failed: u32,
    /// Retries made.
    pub retries: u32,
    /// Cancelled while a run was in flight (it was cancelled too).
    pub interrupted_run: bool,
    /// Cancelled while waiting for the next run: nothing was in flight.
    pub stopped_idle: bool,
}

/// Runs `job` on `when` until [`ScheduleOptions::cancel`] or `max_runs`; see the module
/// documentation. Each run's history record goes to `repo` (where the job's backups are);
/// failing to write it is logged and the schedule goes on.
pub async fn schedule(
    repo: &Repository,
    when: &JobSchedule,
    options: &ScheduleOptions,
    mut job: impl AsyncFnMut() -> RunOutcome,
) -> Result<ScheduleReport, Error> {
    let stop = &options.cancel;
    let mut report = ScheduleReport::default();
    while !stop.is_cancelled() && options.max_runs.is_none_or(|m| report.runs < m) {
        if options.max_runs.is_none() {
            let wait = when.until_next()?;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => break,
            }
        }
        report.runs += 1;
        // One run at a time: the loop waits for the run (with its retries) to end, so a run
        // that comes due meanwhile is skipped, like concurrencyPolicy: Forbid.
        let mut attempt = 0;
        let ok = loop {
            let (error, permanent) = match job().await {
                RunOutcome::Succeeded => break true,
                RunOutcome::Failed { error, permanent } => (error, permanent),
            };
            if stop.is_cancelled() {
                break false;
            }
            if permanent {
                tracing::warn!(
                    %error,
                    "the run failed in a way a retry cannot mend; not retried: fix the cause (the error says how)"
                );
                break false;
            }
            if attempt >= when.backoff_limit {
                tracing::warn!(%error, attempts = attempt + 1, "the run failed; backoffLimit reached");
                break false;
            }
            attempt += 1;
            let delay = options.first_retry_delay * (1u32 << (attempt - 1).min(6));
            tracing::warn!(%error, "the run failed; retry {attempt} of {} in {:?}", when.backoff_limit, delay);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => break false,
            }
        };
        report.retries += attempt;
        if stop.is_cancelled() {
            report.interrupted_run = true;
            return Ok(report);
        }
        if ok {
            report.succeeded += 1;
        } else {
            report.failed += 1;
        }
        // The history is for people; failing to write it does not stop the schedule.
        if let Err(e) = record(repo, when, ok, attempt).await {
            tracing::warn!(
                error = %e,
                "could not write the job history record; the schedule goes on"
            );
        }
    }
    report.stopped_idle = stop.is_cancelled();
    Ok(report)
}

/// Writes a run's history record (sealed, like every record Catena writes: docs/FORMAT.md,
/// "Job records") and prunes the history to its limits.
async fn record(
    repo: &Repository,
    when: &JobSchedule,
    ok: bool,
    retries: u32,
) -> Result<(), Error> {
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
    let body =
        serde_json::json!({"finished_at": now.to_string(), "status": status, "retries": retries});
    storage_backends::commit::put_create(
        repo.store().as_ref(),
        &key,
        Bytes::from(chain_core::sealed::seal(&body)),
    )
    .await?;
    let prefix = Path::from(JOBS_PREFIX);
    let mut all: Vec<String> = repo
        .store()
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .map_err(|e| storage_backends::Error::store("listing", &prefix, e))?;
    all.sort();
    for (status, keep) in [
        ("-succeeded-", when.successful_jobs_history_limit),
        ("-failed-", when.failed_jobs_history_limit),
    ] {
        let of: Vec<&String> = all.iter().filter(|k| k.contains(status)).collect();
        for old in of.iter().take(of.len().saturating_sub(keep)) {
            let _ = repo.store().delete(&Path::from(old.as_str())).await;
        }
    }
    Ok(())
}
