//! Database locks: one writer (backup, aggregate, expire, garbage collection) per database
//! at a time, built on nothing but create-only puts, so that a concurrent aggregate or
//! expire can never delete the parent a running backup is about to commit a DIFF against.
//!
//! A lock is a sequence of records `_locks/<database>/<generation>.json` (sealed JSON). The
//! record with the highest generation says who holds the lock and until when, or that it was
//! released. Taking, renewing and releasing the lock each write the next generation with a
//! create-only put: of two writers racing for the same generation exactly one wins, on any
//! store whose create-only put is atomic (S3 with conditional writes, GCS, Azure, a local
//! directory; not s3s-fs, see `docs/DESIGN.md`). Older generations are deleted as the lock
//! moves on; the highest one never is.
//!
//! A holder renews its lease every third of the lease (default 5 minutes). A lock is stale,
//! and may be taken over, when its lease has run out: never by host name and pid, which
//! containers share and reuse; those are shown to a person deciding `catena unlock`. A
//! command stopped by SIGTERM or SIGINT releases its lock; one killed outright holds it
//! until the lease runs out (or `catena unlock`). Before committing and before deleting, an
//! operation checks that it still holds its lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chain_core::DatabaseName;
use futures::TryStreamExt;
use jiff::Timestamp;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use storage_backends::{commit, layout};

use crate::Error;

/// How locks are taken.
#[derive(Clone, Debug)]
pub struct LockOptions {
    /// How long to wait for a lock another writer holds before failing (`--retry-lock`).
    /// Zero: fail at once, naming the holder.
    pub wait: Duration,
    /// How long a lock stays valid without renewal; the holder renews every third of it.
    pub lease: Duration,
    /// Stops a wait for the lock ([`Error::Cancelled`]).
    pub cancel: storage_backends::CancellationToken,
}

impl PartialEq for LockOptions {
    fn eq(&self, other: &Self) -> bool {
        self.wait == other.wait && self.lease == other.lease
    }
}

impl Eq for LockOptions {}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            wait: Duration::ZERO,
            lease: Duration::from_secs(5 * 60),
            cancel: storage_backends::CancellationToken::new(),
        }
    }
}

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), to tell a reused pid.
    pub start: Option<u64>,
    /// What it is doing: `backup`, `aggregate`, `expire`, `gc`.
    pub operation: String,
    /// A random token naming this holding.
    pub token: String,
}

/// One generation of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Held (or released, when false).
    pub held: bool,
    /// The holder (or the last holder).
    pub owner: LockOwner,
    /// When this record was written.
    pub written_at: Timestamp,
    /// When the lease runs out.
    pub expires_at: Timestamp,
}

impl LockRecord {
    /// Whether this record still keeps others out at `now`: held, and its lease not run
    /// out. Host name and pid are never the rule (containers share host names, a restarted
    /// container's process is pid 1 again): they are shown to a person deciding `unlock`.
    pub fn live(&self, now: Timestamp) -> bool {
        self.held && now < self.expires_at
    }

    fn describe(&self) -> String {
        format!(
            "{} (pid {}) running {} since {}, lease until {}",
            self.owner.host,
            self.owner.pid,
            self.owner.operation,
            self.written_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            self.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner is a process that exists on this host now (same host name, a live
/// pid with the same start time).
fn holder_runs_here(owner: &LockOwner) -> bool {
    owner.host == host_name()
        && process_start(owner.pid).is_some_and(|start| owner.start.is_none_or(|s| s == start))
}

fn lock_prefix(db: &DatabaseName) -> Path {
    Path::from_iter([layout::LOCKS_PREFIX, db.as_str()])
}

fn generation_key(db: &DatabaseName, generation: u64) -> Path {
    Path::from_iter([
        layout::LOCKS_PREFIX,
        db.as_str(),
        &format!("{generation:020}.json"),
    ])
}

/// The generations present for `db`, ascending.
async fn generations(store: &dyn ObjectStore, db: &DatabaseName) -> Result<Vec<u64>, Error> {
    let prefix = lock_prefix(db);
    let metas: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| storage_backends::Error::store("listing", &prefix, e))?;
    let mut out: Vec<u64> = metas
        .iter()
        .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The newest record: `(generation, record)`, `None` when the lock was never taken.
/// `Ok(Err(()))` when the newest generation vanished while being read (look again).
async fn newest(
    store: &dyn ObjectStore,
    db: &DatabaseName,
) -> Result<Result<Option<(u64, LockRecord)>, ()>, Error> {
    let Some(&generation) = generations(store, db).await?.last() else {
        return Ok(Ok(None));
    };
    let key = generation_key(db, generation);
    let bytes = match store.get(&key).await {
        Ok(r) => r
            .bytes()
            .await
            .map_err(|e| storage_backends::Error::store("reading", &key, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(Err(())),
        Err(e) => return Err(storage_backends::Error::store("reading", &key, e).into()),
    };
    let record: LockRecord = chain_core::sealed::open(&bytes).map_err(|e| Error::Locked {
        database: db.clone(),
        why: format!(
            "the lock record {key} does not decode ({e}); if no other Catena is running on this database, run `catena unlock {db}`"
        ),
    })?;
    Ok(Ok(Some((generation, record))))
}

fn lease_of(options: &LockOptions) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(options.lease).unwrap_or(jiff::SignedDuration::from_hours(1))
}

#[derive(Debug)]
struct Shared {
    generation: AtomicU64,
    lost: AtomicBool,
}

/// A held database lock. Release it with [`DatabaseLock::release`]; dropped unreleased (a
/// panic, a cancelled future), it stops renewing and runs out after its lease.
#[derive(Debug)]
pub struct DatabaseLock {
    store: Arc<dyn ObjectStore>,
    db: DatabaseName,
    owner: LockOwner,
    shared: Arc<Shared>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for DatabaseLock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Writes `record` as generation `generation`; `Ok(false)` when another writer got it first.
async fn write_generation(
    store: &dyn ObjectStore,
    db: &DatabaseName,
    generation: u64,
    record: &LockRecord,
) -> Result<bool, Error> {
    let key = generation_key(db, generation);
    match commit::put_create(store, &key, Bytes::from(chain_core::sealed::seal(record))).await {
        Ok(_) => Ok(true),
        Err(storage_backends::Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes generations below `below`, best effort.
async fn prune(store: &dyn ObjectStore, db: &DatabaseName, below: u64) {
    if let Ok(gens) = generations(store, db).await {
        let keys: Vec<Path> = gens
            .into_iter()
            .filter(|g| *g < below)
            .map(|g| generation_key(db, g))
            .collect();
        commit::delete_quietly(store, &keys).await;
    }
}

impl DatabaseLock {
    /// Takes the lock of `db` for `operation`, waiting up to `options.wait` for another
    /// holder. Fails with [`Error::Locked`] naming the holder when it cannot.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        db: &DatabaseName,
        operation: &str,
        options: &LockOptions,
    ) -> Result<Self, Error> {
        let owner = LockOwner {
            host: host_name(),
            pid: std::process::id(),
            start: process_start(std::process::id()),
            operation: operation.to_owned(),
            token: format!("{:016x}", rand::random::<u64>()),
        };
        let deadline = tokio::time::Instant::now() + options.wait;
        let mut pause = Duration::from_millis(50);
        let mut said = false;
        loop {
            let now = Timestamp::now();
            let current = match newest(store.as_ref(), db).await? {
                Ok(c) => c,
                Err(()) => continue,
            };
            let next = match &current {
                Some((_, record)) if record.live(now) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Locked {
                            database: db.clone(),
                            why: format!(
                                "locked by {}; wait for it (or pass --retry-lock DURATION to wait), or, if that process is gone, run `catena unlock {db}`",
                                record.describe()
                            ),
                        });
                    }
                    if !said {
                        said = true;
                        tracing::info!(database = %db, holder = %record.describe(), "waiting for the lock");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = options.cancel.cancelled() => return Err(Error::Cancelled),
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
                Some((g, record)) => {
                    if record.held {
                        tracing::warn!(database = %db, holder = %record.describe(), "taking over a stale lock");
                    }
                    g + 1
                }
                None => 1,
            };
            let record = LockRecord {
                held: true,
                owner: owner.clone(),
                written_at: now,
                expires_at: now + lease_of(options),
            };
            if !write_generation(store.as_ref(), db, next, &record).await? {
                continue; // another writer took this generation first
            }
            prune(store.as_ref(), db, next).await;
            let shared = Arc::new(Shared {
                generation: AtomicU64::new(next),
                lost: AtomicBool::new(false),
            });
            let renewal = tokio::spawn(renew(
                Arc::clone(&store),
                db.clone(),
                owner.clone(),
                Arc::clone(&shared),
                options.clone(),
            ));
            tracing::debug!(database = %db, generation = next, operation, "lock taken");
            return Ok(Self {
                store,
                db: db.clone(),
                owner,
                shared,
                renewal,
            });
        }
    }

    /// Fails with [`Error::Locked`] unless this lock is still the newest record: called
    /// before committing and before deleting.
    pub async fn ensure_held(&self) -> Result<(), Error> {
        let newest = newest(self.store.as_ref(), &self.db).await?;
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let why = match &newest {
            Ok(Some((g, record)))
                if !self.shared.lost.load(Ordering::SeqCst)
                    && *g == generation
                    && record.owner.token == self.owner.token
                    && record.held =>
            {
                return Ok(());
            }
            Ok(Some((_, record))) if !record.held && record.owner.operation == "unlock" => {
                format!(
                    "this run's lock was broken by `catena unlock` on {} at {}",
                    record.owner.host,
                    record.written_at.strftime("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            Ok(Some((_, record))) if record.held && record.owner.token != self.owner.token => {
                format!(
                    "this run lost its lock: its lease ran out and another writer took over ({})",
                    record.describe()
                )
            }
            _ => "this run lost its lock (its lease ran out, or the lock was broken)".to_owned(),
        };
        Err(Error::Locked {
            database: self.db.clone(),
            why: format!("{why}; nothing more was committed or deleted: run it again"),
        })
    }

    /// Checks, just before a commit, that the lock is still held; when it is not, the
    /// artifact's stored data object is deleted (no manifest names it yet) and the error
    /// returned, so that a writer that lost its lock commits nothing.
    pub async fn ensure_held_for_commit(
        &self,
        store: &dyn ObjectStore,
        stored: &storage_backends::upload::StoredData,
    ) -> Result<(), Error> {
        if let Err(e) = self.ensure_held().await {
            let keys: Vec<Path> = stored.object.iter().map(|o| o.key.clone()).collect();
            commit::delete_quietly(store, &keys).await;
            return Err(e);
        }
        Ok(())
    }

    /// Releases the lock (best effort: a lock that cannot be released runs out after its
    /// lease, or at once for the next run on this host).
    pub async fn release(self) {
        self.renewal.abort();
        if self.shared.lost.load(Ordering::SeqCst) {
            return;
        }
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let now = Timestamp::now();
        let record = LockRecord {
            held: false,
            owner: self.owner.clone(),
            written_at: now,
            expires_at: now,
        };
        for attempt in 1..=3 {
            match write_generation(self.store.as_ref(), &self.db, generation + 1, &record).await {
                Ok(true) => {
                    prune(self.store.as_ref(), &self.db, generation + 1).await;
                    return;
                }
                Ok(false) => {
                    tracing::warn!(database = %self.db, "the lock had been taken over before it was released");
                    return;
                }
                Err(e) if attempt < 3 => {
                    tracing::debug!(database = %self.db, error = %e, attempt, "releasing the lock failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => {
                    tracing::warn!(database = %self.db, error = %e, "the lock could not be released; it runs out after its lease, or at once for the next process on this host");
                }
            }
        }
    }
}

async fn renew(
    store: Arc<dyn ObjectStore>,
    db: DatabaseName,
    owner: LockOwner,
    shared: Arc<Shared>,
    options: LockOptions,
) {
    let every = (options.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let generation = shared.generation.load(Ordering::SeqCst);
        let now = Timestamp::now();
        let record = LockRecord {
            held: true,
            owner: owner.clone(),
            written_at: now,
            expires_at: now + lease_of(&options),
        };
        match write_generation(store.as_ref(), &db, generation + 1, &record).await {
            Ok(true) => {
                shared.generation.store(generation + 1, Ordering::SeqCst);
                prune(store.as_ref(), &db, generation + 1).await;
            }
            Ok(false) => {
                tracing::error!(database = %db, "lost the lock: another writer took it over");
                shared.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                // Try again at the next turn; the lease still has two thirds to run.
                tracing::warn!(database = %db, error = %e, "could not renew the lock");
            }
        }
    }
}

/// Options of [`unlock`].
#[derive(Clone, Debug, Default)]
pub struct UnlockOptions {
    /// Break the lock even if its holder is a process running on this host.
    pub force: bool,
    /// Stops before the lock is broken.
    pub cancel: storage_backends::CancellationToken,
}

/// What [`unlock`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnlockReport {
    /// The database.
    pub database: String,
    /// The holder whose lock was broken (`None`: the database was not locked).
    pub broken: Option<LockRecord>,
}

/// Breaks `db`'s lock left by a process that is known to be gone (see [`break_lock`], which
/// it runs on the repository's store), in the engine's shape.
pub async fn unlock(
    repo: &crate::Repository,
    db: &DatabaseName,
    options: &UnlockOptions,
    progress: &Arc<dyn crate::Progress>,
) -> Result<UnlockReport, Error> {
    if options.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    progress.event(crate::ProgressEvent::DatabaseStarted {
        database: db.to_string(),
        operation: "unlock",
        total_bytes: None,
    });
    let result = break_lock(repo.store().as_ref(), db, options.force).await;
    progress.event(crate::ProgressEvent::DatabaseFinished {
        database: db.to_string(),
        ok: result.is_ok(),
    });
    Ok(UnlockReport {
        database: db.to_string(),
        broken: result?,
    })
}

/// Breaks the lock of `db`: writes a released record over whatever holds it. For a lock
/// left by a process on another host that is known to be gone. Returns the holder it
/// broke, if any.
///
/// A lock held by a process that is running on this host is not broken unless `force`:
/// that process is working, and breaking its lock lets another writer in beside it.
pub async fn break_lock(
    store: &dyn ObjectStore,
    db: &DatabaseName,
    force: bool,
) -> Result<Option<LockRecord>, Error> {
    loop {
        let current = match newest(store, db).await {
            Ok(Ok(c)) => c,
            Ok(Err(())) => continue,
            // An undecodable record is what unlock is for: write past it.
            Err(Error::Locked { .. }) => {
                let gens = generations(store, db).await?;
                gens.last().map(|g| {
                    (
                        *g,
                        LockRecord {
                            held: true,
                            owner: LockOwner {
                                host: "unknown".into(),
                                pid: 0,
                                start: None,
                                operation: "unknown".into(),
                                token: String::new(),
                            },
                            written_at: Timestamp::UNIX_EPOCH,
                            expires_at: Timestamp::UNIX_EPOCH,
                        },
                    )
                })
            }
            Err(e) => return Err(e),
        };
        let Some((g, record)) = current else {
            return Ok(None);
        };
        if !record.held {
            return Ok(None);
        }
        let now = Timestamp::now();
        if !force && record.live(now) && holder_runs_here(&record.owner) {
            return Err(Error::Locked {
                database: db.clone(),
                why: format!(
                    "not broken: it is held by {}, and that process is running on this host; stop it (it releases the lock when it ends, or on SIGTERM), or pass --force if you are sure it is stuck",
                    record.describe()
                ),
            });
        }
        let released = LockRecord {
            held: false,
            owner: LockOwner {
                operation: "unlock".into(),
                token: format!("{:016x}", rand::random::<u64>()),
                host: host_name(),
                pid: std::process::id(),
                start: process_start(std::process::id()),
            },
            written_at: now,
            expires_at: now,
        };
        if write_generation(store, db, g + 1, &released).await? {
            prune(store, db, g + 1).await;
            return Ok(Some(record));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn db() -> DatabaseName {
        DatabaseName::new("neo4j").expect("test")
    }

    #[tokio::test]
    async fn a_held_lock_keeps_others_out_until_released() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let opts = LockOptions::default();
        let first = DatabaseLock::acquire(Arc::clone(&store), &db(), "backup", &opts)
            .await
            .expect("test");
        let err = DatabaseLock::acquire(Arc::clone(&store), &db(), "expire", &opts)
            .await
            .expect_err("test")
            .to_string();
        assert!(err.contains("locked by") && err.contains("backup"), "{err}");
        first.ensure_held().await.expect("test");
        first.release().await;
        let second = DatabaseLock::acquire(Arc::clone(&store), &db(), "expire", &opts)
            .await
            .expect("test");
        second.ensure_held().await.expect("test");
        // Only the newest generation and at most one older remain.
        assert!(
            generations(store.as_ref(), &db())
                .await
                .expect("test")
                .len()
                <= 2
        );
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_the_old_holder_knows() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let short = LockOptions {
            wait: Duration::ZERO,
            lease: Duration::from_millis(1),
            ..LockOptions::default()
        };
        let old = DatabaseLock::acquire(Arc::clone(&store), &db(), "backup", &short)
            .await
            .expect("test");
        old.renewal.abort(); // as if it hung
        tokio::time::sleep(Duration::from_millis(20)).await;
        let new = DatabaseLock::acquire(Arc::clone(&store), &db(), "aggregate", &short)
            .await
            .expect("test");
        new.renewal.abort();
        let err = old.ensure_held().await.expect_err("test").to_string();
        assert!(err.contains("lost its lock"), "{err}");
    }

    #[tokio::test]
    async fn waiting_gets_the_lock_when_the_holder_releases() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let first =
            DatabaseLock::acquire(Arc::clone(&store), &db(), "backup", &LockOptions::default())
                .await
                .expect("test");
        let waiting = LockOptions {
            wait: Duration::from_secs(30),
            ..LockOptions::default()
        };
        let s2 = Arc::clone(&store);
        let second =
            tokio::spawn(async move { DatabaseLock::acquire(s2, &db(), "expire", &waiting).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        first.release().await;
        second
            .await
            .expect("test")
            .expect("test")
            .ensure_held()
            .await
            .expect("test");
    }

    /// The lease is the rule, never host name and pid: a holder recorded with this host and
    /// a pid that no longer exists, or with this very process's host and pid (another
    /// container with the same host name, a restarted container's pid 1), keeps others
    /// out until its lease runs out; then it is taken over.
    #[tokio::test]
    async fn a_lock_is_judged_by_its_lease_not_by_host_and_pid() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let now = Timestamp::now();
        let holders = [
            // A pid that does not exist here.
            LockOwner {
                host: host_name(),
                pid: u32::MAX - 1,
                start: Some(1),
                operation: "backup".into(),
                token: "gone".into(),
            },
            // The very host and pid of this process, another holder.
            LockOwner {
                host: host_name(),
                pid: std::process::id(),
                start: process_start(std::process::id()),
                operation: "backup".into(),
                token: "same-host-and-pid".into(),
            },
        ];
        for (g, owner) in holders.into_iter().enumerate() {
            let record = LockRecord {
                held: true,
                owner,
                written_at: now,
                expires_at: now + jiff::SignedDuration::from_hours(1),
            };
            assert!(record.live(now));
            assert!(
                write_generation(store.as_ref(), &db(), 2 * g as u64 + 1, &record)
                    .await
                    .expect("test")
            );
            let err =
                DatabaseLock::acquire(Arc::clone(&store), &db(), "backup", &LockOptions::default())
                    .await
                    .expect_err("a live lease keeps others out")
                    .to_string();
            assert!(err.contains("locked by"), "{err}");
            // The same record with its lease run out is taken over.
            let expired = LockRecord {
                expires_at: now - jiff::SignedDuration::from_secs(1),
                ..record
            };
            assert!(!expired.live(now));
            assert!(
                write_generation(store.as_ref(), &db(), 2 * g as u64 + 2, &expired)
                    .await
                    .expect("test")
            );
            let taken =
                DatabaseLock::acquire(Arc::clone(&store), &db(), "backup", &LockOptions::default())
                    .await
                    .expect("an expired lease is taken over");
            taken.release().await;
            prune(store.as_ref(), &db(), u64::MAX).await;
        }
    }

    #[tokio::test]
    async fn unlock_breaks_a_live_lock() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let held =
            DatabaseLock::acquire(Arc::clone(&store), &db(), "backup", &LockOptions::default())
                .await
                .expect("test");
        let refused = break_lock(store.as_ref(), &db(), false)
            .await
            .expect_err("a holder running here is not broken without force")
            .to_string();
        assert!(refused.contains("--force"), "{refused}");
        let broken = break_lock(store.as_ref(), &db(), true)
            .await
            .expect("test")
            .expect("test");
        assert_eq!(broken.owner.operation, "backup");
        let err = held.ensure_held().await.expect_err("broken").to_string();
        assert!(err.contains("broken by `catena unlock`"), "{err}");
        DatabaseLock::acquire(store, &db(), "gc", &LockOptions::default())
            .await
            .expect("test");
    }
}
