//! The promises under attack: faults at every store call of backup, aggregate and expire;
//! concurrent writers on moto; corruption of every kind of object. CI runs reduced counts;
//! `scripts/reliability` sets `CATENA_RELIABILITY_FULL=1` for the full ones (figures in
//! `docs/RELIABILITY.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use catena::chain_core::*;
use catena::*;
use futures::TryStreamExt;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use storage_backends::{Fault, FaultStore};

use crate::common::{self, data};
use crate::*;

/// Full counts (`scripts/reliability`) or the reduced CI ones.
fn full() -> bool {
    std::env::var_os("CATENA_RELIABILITY_FULL").is_some()
}

/// Source versions: v0 (FULL), v1, v2 (DIFFs), v3 (the backup under test).
fn write_version(src: &Path, v: u64) {
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut big = data((6 << 20) + 12_345, 1, true);
    for i in 0..v {
        let at = ((i as usize) * 1_300_000 + 77) % (big.len() - 400_000);
        big[at..at + 300_000].copy_from_slice(&data(300_000, 100 + i, false));
    }
    std::fs::write(src.join("big.db"), big).expect("write");
    std::fs::write(
        src.join("sub/small.log"),
        data(20_000 + v as usize, 50 + v, false),
    )
    .expect("write");
    if v >= 2 {
        std::fs::write(src.join("sub/new.txt"), format!("version {v}\n")).expect("write");
    }
}

fn fault_options() -> BackupOptions {
    options(BackupRequest::default())
}

/// A store holding the seed: FULL(v0), DIFF(v1), DIFF(v2), FULL(v2), under `template`.
struct Seed {
    ids: Vec<ArtifactId>,
    digests: BTreeMap<ArtifactId, Sha256Digest>,
    v3: tempfile::TempDir,
}

async fn seed(root: &Arc<dyn ObjectStore>, template: &str) -> Seed {
    let repo = Repository::from_store(
        Arc::new(PrefixStore::new(Arc::clone(root), template)),
        "seed",
    );
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let mut ids = Vec::new();
    for (v, t) in [
        (0, BackupType::Auto),
        (1, BackupType::Auto),
        (2, BackupType::Auto),
        (2, BackupType::Full),
    ] {
        write_version(&src, v);
        let report = backup(
            &repo,
            vec![(
                db("rel"),
                Arc::new(DirectorySource::new(&src)) as Arc<dyn BackupSource>,
            )],
            &BackupOptions {
                request: BackupRequest {
                    backup_type: t,
                    ..BackupRequest::default()
                },
                ..fault_options()
            },
            &progress(),
        )
        .await
        .expect("seed backup");
        assert!(report.succeeded(), "{:?}", report.run);
        ids.push(
            report.run.databases[0]
                .artifact
                .as_ref()
                .expect("artifact")
                .parse()
                .expect("id"),
        );
    }
    let view = repo.catalog(&db("rel")).await.expect("catalog");
    let digests = view
        .catalog
        .artifacts()
        .map(|m| (m.id.clone(), m.state_digest))
        .collect();
    write_version(&src, 3);
    let v3 = tempfile::tempdir().expect("tempdir");
    std::fs::rename(&src, v3.path().join("src")).expect("rename");
    Seed { ids, digests, v3 }
}

/// Copies every object under `from/` to `to/` in `root` (server-side where the store can).
async fn clone_prefix(root: &Arc<dyn ObjectStore>, from: &str, to: &str) {
    let prefix = object_store::path::Path::from(from);
    let all: Vec<_> = root.list(Some(&prefix)).try_collect().await.expect("list");
    for m in all {
        let rest: Vec<_> = m
            .location
            .prefix_match(&prefix)
            .expect("under the prefix")
            .collect();
        let target = object_store::path::Path::from_iter(
            std::iter::once(object_store::path::PathPart::from(to)).chain(rest),
        );
        root.copy(&m.location, &target).await.expect("copy");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Backup,
    /// Aggregate copying through the client (a repository without a server copy).
    Aggregate,
    /// Aggregate by server copy (the in-process copy, whose every call goes through the
    /// fault-injecting store).
    AggregateServerCopy,
    Expire,
}

/// Runs `op` on `repo`; `Ok(true)` when it did what it was asked.
async fn run_op(op: Op, repo: &Repository, seed: &Seed) -> Result<bool, String> {
    match op {
        Op::Backup => {
            let source: Arc<dyn BackupSource> =
                Arc::new(DirectorySource::new(seed.v3.path().join("src")));
            backup(
                repo,
                vec![(db("rel"), source)],
                &fault_options(),
                &progress(),
            )
            .await
            .map(|r| r.succeeded())
            .map_err(|e| e.to_string())
        }
        Op::Aggregate | Op::AggregateServerCopy => {
            let (repo, copy) = if op == Op::AggregateServerCopy {
                let copy: Arc<dyn storage_backends::assemble::ServerCopy> =
                    Arc::new(storage_backends::assemble::InProcessCopy);
                (repo.clone().with_server_copy(Some(copy)), CopyMode::Server)
            } else {
                (repo.clone(), CopyMode::Auto)
            };
            aggregate(
                &repo,
                &db("rel"),
                &AggregateOptions {
                    target: AggregateTarget::Artifact(seed.ids[2].clone()),
                    keep_old_backup: false,
                    upload: fault_options().upload,
                    copy,
                    ..AggregateOptions::default()
                },
                &progress(),
            )
            .await
            .map(|_| true)
            .map_err(|e| e.to_string())
        }
        Op::Expire => expire(
            repo,
            &db("rel"),
            &ExpireOptions::new(ExpirePolicy {
                keep_last_chains: Some(1),
                keep_within: None,
            }),
            &progress(),
        )
        .await
        .map(|_| true)
        .map_err(|e| e.to_string()),
    }
}

/// What must hold after `op` ran (or failed) on the healthy store `repo`.
async fn assert_intact(op: Op, repo: &Repository, seed: &Seed, max_new: usize, what: &str) {
    let view = repo.catalog(&db("rel")).await.expect("catalog");
    assert!(view.unreadable.is_empty(), "{what}: {:?}", view.unreadable);
    assert!(
        view.catalog.problems().is_empty(),
        "{what}: the catalog does not validate: {:?}",
        view.catalog.problems()
    );
    let after: BTreeSet<ArtifactId> = view.catalog.artifacts().map(|m| m.id.clone()).collect();
    let before: BTreeSet<ArtifactId> = seed.ids.iter().cloned().collect();
    let new: Vec<_> = after.difference(&before).collect();
    let gone: Vec<_> = before.difference(&after).collect();
    assert!(
        new.len() <= max_new,
        "{what}: more than {max_new} new artifacts {new:?}"
    );
    assert!(
        after.contains(&seed.ids[3]),
        "{what}: the newest FULL was lost"
    );
    match op {
        Op::Backup => assert!(gone.is_empty(), "{what}: backup lost {gone:?}"),
        Op::Aggregate | Op::AggregateServerCopy => assert!(
            gone.is_empty() || !new.is_empty(),
            "{what}: old artifacts {gone:?} deleted without their replacement"
        ),
        Op::Expire => assert!(new.is_empty(), "{what}: expire created {new:?}"),
    }
    for m in view.catalog.artifacts() {
        if let Some(d) = seed.digests.get(&m.id) {
            assert_eq!(&m.state_digest, d, "{what}: {} changed", m.id);
        }
    }
    let report = check(
        repo,
        &db("rel"),
        &CheckOptions {
            write_report: false,
            ..CheckOptions::default()
        },
        &progress(),
    )
    .await
    .expect("check runs");
    assert!(report.ok, "{what}: check failed: {:?}", report.problems);
}

/// Multipart uploads open under `prefix` in moto's bucket.
async fn open_uploads_under(endpoint: &str, prefix: &str) -> usize {
    let body = reqwest::get(format!(
        "{endpoint}/{}?uploads&prefix={prefix}",
        common::BUCKET
    ))
    .await
    .expect("list uploads")
    .text()
    .await
    .expect("body");
    body.matches("<Upload>").count()
}

/// A repository over `inner` whose `k`-th store call (counted from 0) fails with `fault`.
fn faulty_at(inner: &Arc<dyn ObjectStore>, k: u64, fault: Fault) -> Repository {
    Repository::from_store(
        Arc::new(FaultStore::new(Arc::clone(inner), Some(k), fault)),
        "faulty",
    )
}

/// Fails every call of `op` in turn with each of `faults`, on a fresh copy of the seed each
/// time. Returns (calls of a healthy run, runs, runs that failed).
async fn faults_at_every_call(
    root: Arc<dyn ObjectStore>,
    op: Op,
    faults: &[Fault],
    moto: Option<&str>,
    root_prefix: &str,
) -> (u64, usize, usize) {
    let template = common::unique("template");
    let seed = seed(&root, &template).await;
    let healthy = common::unique("healthy");
    clone_prefix(&root, &template, &healthy).await;
    let counting = FaultStore::new(
        Arc::new(PrefixStore::new(Arc::clone(&root), healthy.as_str())),
        None,
        Fault::Error,
    );
    let repo = Repository::from_store(Arc::new(counting.clone()), "counting");
    assert_eq!(run_op(op, &repo, &seed).await, Ok(true), "{op:?} healthy");
    let total = counting.calls();
    let (mut runs, mut failed) = (0, 0);
    for &fault in faults {
        for k in 0..total {
            let run = common::unique("run");
            clone_prefix(&root, &template, &run).await;
            let inner: Arc<dyn ObjectStore> =
                Arc::new(PrefixStore::new(Arc::clone(&root), run.as_str()));
            let faulty = faulty_at(&inner, k, fault);
            let outcome = run_op(op, &faulty, &seed).await;
            let what = format!("{op:?} with {fault:?} at call {k}/{total} ({outcome:?})");
            runs += 1;
            failed += usize::from(outcome != Ok(true));
            // A response that breaks off is the store's failure, not damage in the bucket.
            if let (Fault::BrokenBody | Fault::Error | Fault::Timeout, Err(e)) = (fault, &outcome) {
                assert!(!e.contains("damaged"), "{what}");
            }
            let healthy = Repository::from_store(Arc::clone(&inner), "healthy");
            assert_intact(op, &healthy, &seed, 1, &what).await;
            if let Some(endpoint) = moto {
                assert_eq!(
                    open_uploads_under(endpoint, &format!("{root_prefix}/{run}")).await,
                    0,
                    "{what}: a multipart upload was left open"
                );
            }
            // Nothing is left locked or half-done: the same operation works now.
            let target_left = healthy
                .catalog(&db("rel"))
                .await
                .expect("catalog")
                .catalog
                .get(&seed.ids[2])
                .is_some();
            let again = run_op(op, &healthy, &seed).await;
            assert!(
                again == Ok(true)
                    || (matches!(op, Op::Aggregate | Op::AggregateServerCopy)
                        && !target_left
                        && again.is_err()),
                "{what}: running it again failed: {again:?}"
            );
            assert_intact(op, &healthy, &seed, 2, &format!("{what}, then again")).await;
        }
    }
    (total, runs, failed)
}

const ALL_FAULTS: [Fault; 5] = [
    Fault::Error,
    Fault::Timeout,
    Fault::TruncatedBody,
    Fault::BrokenBody,
    Fault::Slow,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_every_call_of_backup_aggregate_and_expire_in_memory() {
    for op in [
        Op::Backup,
        Op::Aggregate,
        Op::AggregateServerCopy,
        Op::Expire,
    ] {
        let root: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (total, runs, failed) = faults_at_every_call(root, op, &ALL_FAULTS, None, "").await;
        eprintln!(
            "memory: {op:?}: {total} calls, {runs} runs with a fault, {failed} failed cleanly, the rest succeeded"
        );
        assert!(failed > 0 && failed < runs, "{op:?}: {failed} of {runs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_every_call_of_backup_aggregate_and_expire_on_moto() {
    let Some(endpoint) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = common::unique("faults");
    let root = common::s3_config(&endpoint, dir.path(), "k", "s", &prefix)
        .build()
        .await
        .expect("moto")
        .store;
    let faults: &[Fault] = if full() { &ALL_FAULTS } else { &[Fault::Error] };
    for op in [Op::Backup, Op::Aggregate, Op::Expire] {
        let (total, runs, failed) =
            faults_at_every_call(Arc::clone(&root), op, faults, Some(&endpoint), &prefix).await;
        eprintln!(
            "moto: {op:?}: {total} calls, {runs} runs with a fault, {failed} failed cleanly, the rest succeeded"
        );
    }
}

/// A connection that drops in the middle of any response while a DIFF chain is restored
/// (a manifest, an index streamed into its decoder, a range of a data object): the restore
/// gives the same tree, or fails with the store's error, one a retry may pass, never
/// "damaged", and leaves nothing at the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_broken_at_any_read_of_a_restore_is_the_stores_error() {
    let root: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let seed = seed(&root, "seed").await;
    let inner: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(Arc::clone(&root), "seed"));
    let work = tempfile::tempdir().expect("tempdir");
    // ids[2]: a DIFF on a DIFF on a FULL, so three manifests, indexes and data objects.
    let to = |into: &Path| RestoreOptions {
        target: RestoreTarget::Artifact(seed.ids[2].clone()),
        ..RestoreOptions::new(into)
    };
    let counting = FaultStore::new(Arc::clone(&inner), None, Fault::Error);
    let reference = work.path().join("reference");
    let counted = Repository::from_store(Arc::new(counting.clone()), "counting");
    restore(&counted, &db("rel"), &to(&reference), &progress())
        .await
        .expect("restore");
    let expected = snapshot(&reference);
    let total = counting.calls();
    let mut failed = 0;
    for k in 0..total {
        let into = work.path().join(format!("at-{k}"));
        let faulty = faulty_at(&inner, k, Fault::BrokenBody);
        match restore(&faulty, &db("rel"), &to(&into), &progress()).await {
            Ok(_) => assert_eq!(snapshot(&into), expected, "call {k}: another tree"),
            Err(e) => {
                failed += 1;
                assert!(!e.is_permanent(), "call {k}/{total}: permanent: {e}");
                assert!(!e.to_string().contains("damaged"), "call {k}/{total}: {e}");
                assert!(!into.exists(), "call {k}: a failed restore left {into:?}");
            }
        }
    }
    eprintln!("{total} calls, {failed} runs failed with the store's error");
    assert!(failed > 0, "no broken response made the restore fail");
}

/// A connection that drops in the middle of any read of a check (manifests, whole objects
/// streamed through SHA-256, indexes, block ranges) makes the check fail with the store's
/// error, one a retry may pass, and write no report: it never reports a sound backup
/// damaged, which would make later restores and backups treat it as unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_broken_at_any_read_of_a_check_reports_no_damage() {
    let root: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    seed(&root, "seed").await;
    let inner: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(Arc::clone(&root), "seed"));
    let options = CheckOptions {
        write_report: false,
        ..CheckOptions::default()
    };
    let counting = FaultStore::new(Arc::clone(&inner), None, Fault::Error);
    let counted = Repository::from_store(Arc::new(counting.clone()), "counting");
    let healthy = check(&counted, &db("rel"), &options, &progress())
        .await
        .expect("check");
    assert!(healthy.ok, "{:?}", healthy.problems);
    let total = counting.calls();
    let mut failed = 0;
    for k in 0..total {
        let faulty = faulty_at(&inner, k, Fault::BrokenBody);
        match check(&faulty, &db("rel"), &options, &progress()).await {
            Ok(report) => assert!(
                report.ok,
                "call {k}/{total}: a broken response reported as damage: {:?}",
                report.problems
            ),
            Err(e) => {
                failed += 1;
                assert!(!e.is_permanent(), "call {k}/{total}: permanent: {e}");
                assert!(!e.to_string().contains("damaged"), "call {k}/{total}: {e}");
            }
        }
    }
    eprintln!("{total} calls, {failed} checks failed with the store's error");
    assert!(failed > 0, "no broken response made the check fail");
}

// ---------------------------------------------------------------------------------------
// Concurrency: 8 writers at once on moto (atomic create-only puts).
// ---------------------------------------------------------------------------------------

/// Writes version `(round, writer)` of a small data set into `dir`.
fn write_small_version(dir: &Path, round: u64, writer: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut base = data(200_000, 9, true);
    let at = ((round * 7 + writer * 13) as usize * 4099) % (base.len() - 5000);
    base[at..at + 5000].copy_from_slice(&data(5000, round * 100 + writer, false));
    std::fs::write(dir.join("store.db"), base).expect("write");
    std::fs::write(dir.join("writer"), format!("{round}/{writer}\n")).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_writers_never_orphan_a_diff_on_moto() {
    let Some(endpoint) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let rounds = if full() { 20 } else { 3 };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = common::unique("concurrency");
    let storage = common::s3_config(&endpoint, dir.path(), "k", "s", &prefix)
        .build()
        .await
        .expect("moto");
    let waiting = LockOptions {
        wait: std::time::Duration::from_secs(600),
        ..LockOptions::default()
    };
    let repo =
        Repository::from_store(Arc::clone(&storage.store), "moto").with_lock_options(waiting);
    let work = tempfile::tempdir().expect("tempdir");
    let upload = storage_backends::upload::UploadOptions {
        block_size: 64 << 10,
        ..fault_options().upload
    };
    // State digest -> the tree it restores to.
    let mut versions: BTreeMap<Sha256Digest, Snapshot> = BTreeMap::new();
    let (mut committed, mut aggregated, mut expired) = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        // Eight tasks on the runtime's two threads.
        let mut tasks: Vec<tokio::task::JoinHandle<(&'static str, Option<String>)>> = Vec::new();
        let mut sources = BTreeMap::new();
        for writer in 0..6u64 {
            let src = work.path().join(format!("r{round}w{writer}"));
            write_small_version(&src, round, writer);
            sources.insert(src.clone(), snapshot(&src));
            let (repo, upload) = (repo.clone(), upload.clone());
            tasks.push(tokio::spawn(async move {
                let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(&src));
                let report = backup(
                    &repo,
                    vec![(db("conc"), source)],
                    &BackupOptions {
                        upload,
                        // One FULL per round, so that there are chains to expire.
                        request: BackupRequest {
                            backup_type: if writer == 0 {
                                BackupType::Full
                            } else {
                                BackupType::Auto
                            },
                            ..BackupRequest::default()
                        },
                        ..BackupOptions::default()
                    },
                    &progress(),
                )
                .await
                .expect("run record");
                assert!(report.succeeded(), "backup: {:?}", report.run.databases);
                ("backup", report.run.databases[0].artifact.clone())
            }));
        }
        let (r, u) = (repo.clone(), upload.clone());
        tasks.push(tokio::spawn(async move {
            let out = aggregate(
                &r,
                &db("conc"),
                &AggregateOptions {
                    keep_old_backup: false,
                    upload: u,
                    ..AggregateOptions::default()
                },
                &progress(),
            )
            .await;
            match out {
                Ok(report) => ("aggregate", report.artifact),
                // The first round may find nothing to aggregate yet.
                Err(catena::Error::Chain(chain_core::Error::NoBackups { .. })) => {
                    ("aggregate", None)
                }
                Err(e) => panic!("aggregate: {e}"),
            }
        }));
        let r = repo.clone();
        tasks.push(tokio::spawn(async move {
            let report = expire(
                &r,
                &db("conc"),
                &ExpireOptions::new(ExpirePolicy {
                    keep_last_chains: Some(1),
                    keep_within: None,
                }),
                &progress(),
            )
            .await
            .expect("expire");
            (
                "expire",
                (!report.deleted.is_empty()).then(|| report.deleted.join(",")),
            )
        }));
        for done in futures::future::join_all(tasks).await {
            match done.expect("a writer panicked") {
                ("backup", Some(_)) => committed += 1,
                ("aggregate", Some(_)) => aggregated += 1,
                ("expire", Some(_)) => expired += 1,
                _ => {}
            }
        }

        // Every version backed up this round, by its state digest.
        let view = repo.catalog(&db("conc")).await.expect("catalog");
        assert!(
            view.unreadable.is_empty(),
            "round {round}: {:?}",
            view.unreadable
        );
        assert!(
            view.catalog.problems().is_empty(),
            "round {round}: the catalog does not validate: {:?}",
            view.catalog.problems()
        );
        for m in view.catalog.artifacts() {
            let into = work.path().join(format!("restore-{}", m.id));
            let report = restore(
                &repo,
                &db("conc"),
                &RestoreOptions {
                    target: RestoreTarget::Artifact(m.id.clone()),
                    ..RestoreOptions::new(&into)
                },
                &progress(),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: {} does not restore: {e}", m.id));
            assert_eq!(report.artifact, m.id.to_string());
            let got = snapshot(&into);
            match versions.get(&m.state_digest) {
                Some(known) => assert_same(&m.id.to_string(), known, &got),
                None => {
                    assert!(
                        sources.values().any(|s| {
                            s.keys().eq(got.keys())
                                && s.iter().zip(got.iter()).all(|(a, b)| a.1.1 == b.1.1)
                        }),
                        "round {round}: {} restores to a tree that no writer backed up",
                        m.id
                    );
                    versions.insert(m.state_digest, got);
                }
            }
            std::fs::remove_dir_all(&into).expect("clean");
        }
    }
    eprintln!(
        "moto: {rounds} rounds x 8 writers: {committed} backups committed, {aggregated} aggregates, {expired} expiries that deleted something; every round's catalog validated and every artifact restored"
    );
    assert_eq!(committed, rounds as usize * 6);
}

/// Library users spawn operations on their runtime: every engine future is `Send + 'static`
/// when its arguments are owned by the spawned task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_can_be_spawned() {
    let repo = Repository::from_store(Arc::new(object_store::memory::InMemory::new()), "memory");
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    write_small_version(&src, 0, 0);
    let (r, s) = (repo.clone(), src.clone());
    tokio::spawn(async move {
        let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(&s));
        backup(
            &r,
            vec![(db("spawn"), source)],
            &BackupOptions::default(),
            &progress(),
        )
        .await
    })
    .await
    .expect("task")
    .expect("backup");
    let r = repo.clone();
    tokio::spawn(async move {
        aggregate(&r, &db("spawn"), &AggregateOptions::default(), &progress()).await
    })
    .await
    .expect("task")
    .expect("aggregate");
    let (r, into) = (repo.clone(), work.path().join("into"));
    tokio::spawn(async move {
        restore(&r, &db("spawn"), &RestoreOptions::new(into), &progress()).await
    })
    .await
    .expect("task")
    .expect("restore");
    let r = repo.clone();
    tokio::spawn(
        async move { check(&r, &db("spawn"), &CheckOptions::default(), &progress()).await },
    )
    .await
    .expect("task")
    .expect("check");
    let r = repo.clone();
    tokio::spawn(async move {
        let policy = ExpirePolicy {
            keep_last_chains: Some(1),
            keep_within: None,
        };
        expire(&r, &db("spawn"), &ExpireOptions::new(policy), &progress()).await
    })
    .await
    .expect("task")
    .expect("expire");
    let r = repo.clone();
    tokio::spawn(async move { gc(&r, &db("spawn"), &GcOptions::default(), &progress()).await })
        .await
        .expect("task")
        .expect("gc");
}

// ---------------------------------------------------------------------------------------
// Corruption: every kind of object, single flipped bytes and truncation.
// ---------------------------------------------------------------------------------------

/// Offsets to flip in an object of `len` bytes: every one when short, else `n` spread over
/// it (first and last included) with a pseudo-random jitter.
fn sample_offsets(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ len as u64;
    let mut out: Vec<usize> = (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = i * (len - 1) / (n - 1);
            (base + (x as usize % (len / n).max(1))).min(len - 1)
        })
        .collect();
    out[0] = 0;
    out[n - 1] = len - 1;
    out.sort_unstable();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_byte_and_every_truncation_is_detected_and_named() {
    let samples = if full() { 2000 } else { 100 };
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let repo = Repository::from_store(Arc::clone(&store), "memory");
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.db"), data(700_000, 3, true)).expect("write");
    std::fs::write(src.join("b.log"), data(300_000, 4, false)).expect("write");
    let opts = BackupOptions {
        upload: storage_backends::upload::UploadOptions {
            block_size: 64 << 10,
            ..fault_options().upload
        },
        ..BackupOptions::default()
    };
    let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(&src));
    let report = backup(&repo, vec![(db("rot"), source)], &opts, &progress())
        .await
        .expect("backup");
    let id: ArtifactId = report.run.databases[0]
        .artifact
        .as_ref()
        .expect("artifact")
        .parse()
        .expect("id");
    let clean = check(&repo, &db("rot"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(clean.ok, "{:?}", clean.problems);
    let kinds = [
        (
            "manifest",
            storage_backends::layout::manifest_key(&id).to_string(),
            true,
        ),
        (
            "index",
            storage_backends::layout::index_key(&id).to_string(),
            true,
        ),
        (
            "data",
            storage_backends::layout::data_key(&id).to_string(),
            true,
        ),
        (
            "run record",
            report.run_record_key.clone().expect("run record"),
            false,
        ),
        (
            "check report",
            clean.report_key.clone().expect("report key"),
            false,
        ),
    ];
    let no_report = CheckOptions {
        write_report: false,
        ..CheckOptions::default()
    };
    let mut figures = Vec::new();
    for (kind, key, restores) in kinds {
        let path = object_store::path::Path::from(key.as_str());
        let original = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let len = original.len();
        let mut mutations: Vec<(String, Vec<u8>)> = sample_offsets(len, samples)
            .into_iter()
            .enumerate()
            .map(|(i, at)| {
                let mut b = original.to_vec();
                b[at] ^= 1u8 << (i % 8) | 0x01 << ((i + 3) % 8);
                (format!("byte {at} flipped"), b)
            })
            .collect();
        for cut in [0, 1, len / 2, len - 1] {
            mutations.push((format!("truncated to {cut}"), original[..cut].to_vec()));
        }
        let (mut detected, mut refused) = (0, 0);
        for (what, bytes) in &mutations {
            store
                .put(&path, bytes.clone().into())
                .await
                .expect("damage");
            let r = check(&repo, &db("rot"), &no_report, &progress())
                .await
                .unwrap_or_else(|e| panic!("{kind} {what}: check errs instead of reporting: {e}"));
            assert!(
                !r.ok,
                "{kind} {key} {what}: check passed: {}",
                String::from_utf8_lossy(bytes)
            );
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.key.as_deref() == Some(key.as_str())),
                "{kind} {what}: no problem names {key}: {:?}",
                r.problems
            );
            detected += 1;
            if restores {
                let into = work.path().join("restore");
                let err = restore(&repo, &db("rot"), &RestoreOptions::new(&into), &progress())
                    .await
                    .expect_err(&format!("{kind} {what}: restore succeeded"))
                    .to_string();
                assert!(
                    err.contains(&key),
                    "{kind} {what}: the error does not name {key}: {err}"
                );
                assert!(
                    !into.exists(),
                    "{kind} {what}: restore left {}",
                    into.display()
                );
                refused += 1;
            }
            store
                .put(&path, original.clone().into())
                .await
                .expect("repair");
        }
        figures.push(format!(
            "{kind} ({len} bytes): {} mutations, {detected} detected by check, {refused} refused by restore",
            mutations.len()
        ));
    }
    let r = check(&repo, &db("rot"), &no_report, &progress())
        .await
        .expect("check");
    assert!(r.ok, "repaired: {:?}", r.problems);
    eprintln!("corruption: {}", figures.join("; "));
}

/// A restore's parallelism is a library's public fields: no value of them overflows,
/// panics or waits for ever (each file reserves its reads from a byte budget), and every
/// value restores the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_restore_parallelism_restores_the_same_bytes() {
    let repo = Repository::from_store(Arc::new(object_store::memory::InMemory::new()), "memory");
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    write_small_version(&src, 1, 2);
    for i in 0..40 {
        std::fs::write(src.join(format!("small-{i}")), vec![i as u8; i * 700]).expect("write");
    }
    let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(&src));
    backup(
        &repo,
        vec![(db("par"), source)],
        &BackupOptions::default(),
        &progress(),
    )
    .await
    .expect("backup");
    for (n, (files, blocks)) in [(1, 1), (4, 8), (usize::MAX, usize::MAX), (1, usize::MAX)]
        .into_iter()
        .enumerate()
    {
        let into = work.path().join(format!("into-{n}"));
        let options = RestoreOptions {
            parallel_files: files,
            blocks_in_flight: blocks,
            ..RestoreOptions::new(&into)
        };
        restore(&repo, &db("par"), &options, &progress())
            .await
            .unwrap_or_else(|e| panic!("{files} files, {blocks} blocks: {e}"));
        for entry in std::fs::read_dir(&src).expect("list") {
            let name = entry.expect("entry").file_name();
            assert_eq!(
                std::fs::read(into.join(&name)).expect("restored"),
                std::fs::read(src.join(&name)).expect("source"),
                "{files} files, {blocks} blocks: {name:?}"
            );
        }
    }
}

/// A tree of many small files (some with the same bytes, one empty, one large) with their
/// own times and modes, in three directories.
fn write_many_small(src: &Path, round: u64) {
    use std::os::unix::fs::PermissionsExt;
    for i in 0..240u64 {
        let dir = src.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(format!("f{i:03}"));
        // Round 1 rewrites every eighth file and adds new ones.
        let seed = if round > 0 && i % 8 == 0 { 1000 + i } else { i };
        if round == 0 && i >= 230 {
            continue;
        }
        let body = match i {
            7 => Vec::new(),
            9 => data(2_500_000, seed, false),
            // The same bytes under two names: one block, stored once.
            _ if i % 50 == 1 => data(3_000, 1, false),
            _ => data((i as usize * 137) % 20_000 + 1, seed, i % 2 == 0),
        };
        std::fs::write(&p, body).expect("write");
        let mode = if i % 5 == 0 { 0o600 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let mtime = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(1_700_000_000_000_000_000 + i * 1_000_003 + round);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }
}

fn assert_same_files(src: &Path, into: &Path) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = 0;
    for dir in std::fs::read_dir(src).expect("list") {
        let dir = dir.expect("entry").path();
        for file in std::fs::read_dir(&dir).expect("list") {
            let file = file.expect("entry").path();
            let rel = file.strip_prefix(src).expect("under src");
            let got = into.join(rel);
            assert_eq!(
                std::fs::read(&got).expect("restored"),
                std::fs::read(&file).expect("source"),
                "{rel:?}"
            );
            let (a, b) = (
                std::fs::metadata(&got).expect("meta"),
                std::fs::metadata(&file).expect("meta"),
            );
            assert_eq!(a.mode(), b.mode(), "{rel:?}: mode");
            assert_eq!(
                (a.mtime(), a.mtime_nsec()),
                (b.mtime(), b.mtime_nsec()),
                "{rel:?}: mtime"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 240, "files compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_restored_together_keep_bytes_times_and_modes() {
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let repo = Repository::from_store(Arc::clone(&inner), "memory");
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    for (round, kind) in [(0, BackupType::Full), (1, BackupType::Diff)] {
        write_many_small(&src, round);
        let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(&src));
        let options = options(BackupRequest {
            backup_type: kind,
            ..BackupRequest::default()
        });
        backup(&repo, vec![(db("runs"), source)], &options, &progress())
            .await
            .expect("backup");
    }
    // Through a store that counts its calls: the small files of the FULL and of the DIFF
    // are restored a run at a time, one ranged read each, not one read per file.
    let counting = Arc::new(FaultStore::new(Arc::clone(&inner), None, Fault::Timeout));
    let counted = Repository::from_store(counting.clone(), "counted");
    let into = work.path().join("into");
    restore(
        &counted,
        &db("runs"),
        &RestoreOptions::new(&into),
        &progress(),
    )
    .await
    .expect("restore");
    assert_same_files(&src, &into);
    assert!(
        counting.calls() < 40,
        "{} store calls to restore 240 files",
        counting.calls()
    );

    // A damaged byte inside the data object, in the middle of the small files: the restore
    // fails naming the object, and nothing appears at the destination.
    let data_key = inner
        .list(None)
        .map_ok(|m| m.location)
        .try_filter(|k| futures::future::ready(k.as_ref().ends_with(".data")))
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .into_iter()
        .min()
        .expect("a data object");
    let mut bytes = inner
        .get(&data_key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body")
        .to_vec();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    inner.put(&data_key, bytes.into()).await.expect("put");
    let damaged = work.path().join("damaged");
    let err = restore(
        &repo,
        &db("runs"),
        &RestoreOptions::new(&damaged),
        &progress(),
    )
    .await
    .expect_err("a damaged block is refused");
    assert!(err.to_string().contains(data_key.as_ref()), "{err}");
    assert!(!damaged.exists(), "a failed restore left {damaged:?}");
}
