//! Encrypted repositories (docs/FORMAT.md, "Encryption"): the whole cycle on every store,
//! the marker scan, byte flips in every kind of encrypted object, forged manifests, and
//! the errors people get.

use std::path::Path;

use bytes::Bytes;
use catena::chain_core::crypto::{Argon2Params, RecordCipher, Secret};
use catena::chain_core::*;
use catena::*;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as Key;
use proptest::prelude::*;
use storage_backends::layout;

use crate::common::data;
use crate::engine_cases::{committed, keys, local_repo, mutate};
use crate::*;

/// What no stored object of an encrypted repository may contain: the data's content and
/// the names of its files.
const MARKER: &[u8] = b"CATENA-MARKER-7f3a9c";
const FILE_NAME: &str = "payroll-secret-name";

fn key_file() -> Secret {
    Secret::key_file((0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect()).expect("key file")
}

/// Cheap Argon2id, so that tests do not spend seconds per slot.
fn cheap() -> Argon2Params {
    Argon2Params {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    }
}

/// A data set full of the marker, under file names holding [`FILE_NAME`].
fn marked_tree(root: &Path) {
    std::fs::create_dir_all(root.join(format!("{FILE_NAME}-dir"))).expect("mkdir");
    let marked: Vec<u8> = MARKER
        .iter()
        .copied()
        .chain(*b"\n")
        .cycle()
        .take(2 << 20)
        .collect();
    std::fs::write(
        root.join(format!("{FILE_NAME}-dir/{FILE_NAME}.db")),
        &marked,
    )
    .expect("write");
    std::fs::write(root.join(format!("{FILE_NAME}.log")), &marked[..50_000]).expect("write");
    // 16 MiB: the FULL's runs that the DIFFs leave are longer than S3's 5 MiB part
    // minimum, so that S3 stores copy them on the server.
    std::fs::write(root.join("big"), data(16 << 20, 9, true)).expect("write");
}

/// Every stored object's key and bytes.
async fn objects(repo: &Repository) -> Vec<(String, Bytes)> {
    let metas: Vec<_> = repo.store().list(None).try_collect().await.expect("list");
    let mut out = Vec::new();
    for m in metas {
        let bytes = repo
            .store()
            .get(&m.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        out.push((m.location.to_string(), bytes));
    }
    out
}

/// The objects (key, kind) that contain one of the needles.
fn leaks(objects: &[(String, Bytes)], needles: &[&[u8]]) -> Vec<String> {
    objects
        .iter()
        .filter(|(_, b)| needles.iter().any(|n| b.windows(n.len()).any(|w| w == *n)))
        .map(|(k, _)| k.clone())
        .collect()
}

fn uncompressed(mut o: BackupOptions) -> BackupOptions {
    o.upload.compression = Compression::None;
    o
}

async fn backup_with(repo: &Repository, name: &str, src: &Path, o: &BackupOptions) -> ArtifactId {
    let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(src));
    let report = backup(repo, vec![(db(name), source)], o, &progress())
        .await
        .expect("the run record is written");
    committed(&report).0
}

async fn restore_into(repo: &Repository, name: &str, target: RestoreTarget, into: &Path) {
    let options = RestoreOptions {
        target,
        ..RestoreOptions::new(into)
    };
    restore(repo, &db(name), &options, &progress())
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
}

/// Backup, DIFFs, restore of every point, check, aggregate by the store's copy and by the
/// client's, expire and gc, on every store that runs; then no stored object holds the
/// marker, a file name or the source's path. The same data in a plain repository does hold
/// them (the scan can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_repository_works_end_to_end_on_every_store_and_leaks_nothing() {
    let mut all = repos().await;
    all.extend(crate::azurite_repo().await);
    for r in all {
        let plain = r.repo.clone();
        let repo = &r
            .repo
            .create_encrypted(&key_file(), cheap())
            .await
            .unwrap_or_else(|e| panic!("{}: create: {e}", r.name));
        let name = "enc";
        let work = tempfile::tempdir().expect("tempdir");
        let src = work.path().join("src");
        marked_tree(&src);
        let opts = uncompressed(options(BackupRequest::default()));
        let mut points = vec![(backup_with(repo, name, &src, &opts).await, snapshot(&src))];
        for round in 0..3u64 {
            mutate(&src, round + 40);
            points.push((backup_with(repo, name, &src, &opts).await, snapshot(&src)));
        }
        // The DIFFs stored only what changed: block identities compare under the key.
        let view = repo.catalog(&db(name)).await.expect("catalog");
        let full = view
            .catalog
            .get(&points[0].0)
            .expect("full")
            .sizes
            .block_bytes;
        let diff = view
            .catalog
            .get(&points[1].0)
            .expect("diff")
            .sizes
            .block_bytes;
        assert!(
            diff * 4 < full,
            "{}: a DIFF stores {diff} of {full}",
            r.name
        );
        for (i, (id, expected)) in points.iter().enumerate() {
            let into = work.path().join(format!("restored-{i}"));
            restore_into(repo, name, RestoreTarget::Artifact(id.clone()), &into).await;
            assert_same(&format!("{} point {i}", r.name), expected, &snapshot(&into));
        }
        let report = check(repo, &db(name), &CheckOptions::default(), &progress())
            .await
            .expect("check");
        assert!(report.ok, "{}: {report:?}", r.name);
        let last = points.last().expect("points").0.clone();
        for mode in [CopyMode::Server, CopyMode::Client] {
            if mode == CopyMode::Server && repo.server_copy().is_none() {
                continue;
            }
            let options = AggregateOptions {
                target: AggregateTarget::Artifact(last.clone()),
                keep_old_backup: true,
                copy: mode,
                ..AggregateOptions::default()
            };
            let report = aggregate(repo, &db(name), &options, &progress())
                .await
                .unwrap_or_else(|e| panic!("{} {mode:?}: {e}", r.name));
            let copy = report.copy.clone().expect("copy report");
            if mode == CopyMode::Server {
                assert!(copy.server_bytes > 0, "{}: {copy:?}", r.name);
            }
            let new: ArtifactId = report.artifact.expect("new").parse().expect("id");
            let into = work.path().join(format!("aggregated-{mode:?}"));
            restore_into(repo, name, RestoreTarget::Artifact(new), &into).await;
            assert_same(
                &format!("{} {mode:?}", r.name),
                &points.last().expect("points").1,
                &snapshot(&into),
            );
        }
        let report = check(repo, &db(name), &CheckOptions::default(), &progress())
            .await
            .expect("check");
        assert!(report.ok, "{}: {report:?}", r.name);
        let expired = expire(
            repo,
            &db(name),
            &ExpireOptions::new(ExpirePolicy {
                keep_last_chains: Some(1),
                keep_within: None,
            }),
            &progress(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: expire: {e}", r.name));
        assert!(!expired.deleted.is_empty(), "{}: {expired:?}", r.name);
        gc(repo, &db(name), &GcOptions::default(), &progress())
            .await
            .unwrap_or_else(|e| panic!("{}: gc: {e}", r.name));
        let into = work.path().join("after-expire");
        restore_into(repo, name, RestoreTarget::Latest, &into).await;
        assert_same(
            &format!("{} after expire", r.name),
            &points.last().expect("points").1,
            &snapshot(&into),
        );

        let stored = objects(repo).await;
        let src_path = src.display().to_string();
        let needles: [&[u8]; 3] = [MARKER, FILE_NAME.as_bytes(), src_path.as_bytes()];
        assert_eq!(
            leaks(&stored, &needles),
            Vec::<String>::new(),
            "{}: objects holding the marker, a file name or the source path",
            r.name
        );
        // The repository refuses a caller without the key, and the plain handle.
        let err = plain
            .catalog(&db(name))
            .await
            .expect_err("no key, no catalog");
        assert!(
            err.to_string().contains("is an encrypted repository"),
            "{err}"
        );
        let err = plain
            .clone()
            .open(Some(&Secret::key_file(vec![1; 32]).expect("key")), false)
            .await
            .expect_err("another key file");
        assert!(err.to_string().contains("no key slot opens"), "{err}");
        let reopened = plain
            .clone()
            .open(Some(&key_file()), false)
            .await
            .expect("opens");
        reopened
            .catalog(&db(name))
            .await
            .expect("catalog with the key");
    }
    // The scan finds the marker and the names where they are stored in clear.
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    marked_tree(&src);
    let repo = local_repo(&work.path().join("plain")).await;
    backup_with(
        &repo,
        "plain",
        &src,
        &uncompressed(options(BackupRequest::default())),
    )
    .await;
    let stored = objects(&repo).await;
    assert!(!leaks(&stored, &[MARKER]).is_empty());
    assert!(!leaks(&stored, &[FILE_NAME.as_bytes()]).is_empty());
}

/// A FULL and a DIFF in an encrypted local repository, the ids.
async fn encrypted_chain(work: &Path) -> (Repository, Vec<ArtifactId>) {
    let repo = local_repo(&work.join("repo"))
        .await
        .create_encrypted(&key_file(), cheap())
        .await
        .expect("create");
    let src = work.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("store"), data(600 << 10, 5, true)).expect("write");
    std::fs::write(src.join("text"), data(100 << 10, 6, false)).expect("write");
    let o = options(BackupRequest::default());
    let mut ids = vec![backup_with(&repo, "neo4j", &src, &o).await];
    mutate(&src, 50);
    ids.push(backup_with(&repo, "neo4j", &src, &o).await);
    (repo, ids)
}

/// Replaces the object at `key` with `bytes`.
async fn put(repo: &Repository, key: &Key, bytes: Bytes) {
    super::hostile::overwrite(repo, key, bytes.to_vec()).await;
}

/// Every kind of encrypted object (data, index, manifest, key slot, config), a byte flipped
/// at sampled positions: each flip is found by check, by opening, or by restore, naming
/// the object; with the byte back, everything passes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_byte_of_every_encrypted_object_kind_is_detected() {
    let work = tempfile::tempdir().expect("tempdir");
    let (repo, ids) = encrypted_chain(work.path()).await;
    let plain = local_repo(&work.path().join("repo")).await;
    let stored = objects(&repo).await;
    let mut flips = 0;
    for (key, bytes) in &stored {
        let kind = if key.ends_with(".data") {
            "data"
        } else if key.ends_with(".index") {
            "index"
        } else if key.ends_with(".manifest.json") {
            "manifest"
        } else if key.starts_with("_keys/") {
            "slot"
        } else if key == "_config.json" {
            "config"
        } else {
            continue; // run records, locks, reports: sealed, tested elsewhere
        };
        let at = Key::from(key.as_str());
        let n = bytes.len();
        // The first 72 bytes (a header and its nonce), then 16 spread over the rest.
        let head = n.min(72);
        let positions: std::collections::BTreeSet<usize> = (0..head)
            .chain((0..16).map(|i| head + i * (n - head) / 16))
            .filter(|&p| p < n)
            .collect();
        for p in positions {
            let mut bad = bytes.to_vec();
            bad[p] ^= 0x04;
            put(&repo, &at, Bytes::from(bad)).await;
            let found = match kind {
                "slot" | "config" => plain.clone().open(Some(&key_file()), false).await.is_err(),
                _ => {
                    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
                        .await
                        .expect("check runs");
                    let into = work.path().join(format!("r-{flips}"));
                    let restored = restore(
                        &repo,
                        &db("neo4j"),
                        &RestoreOptions::new(&into),
                        &progress(),
                    )
                    .await;
                    !report.ok && restored.is_err()
                }
            };
            assert!(found, "{kind} {key}: the flip at byte {p} went unnoticed");
            flips += 1;
            put(&repo, &at, bytes.clone()).await;
        }
    }
    eprintln!("{flips} flips, each detected");
    assert!(flips > 100);
    // Nothing is left damaged: the chain checks and restores.
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    // The flips were reported by check reports; the last check report passes.
    assert!(report.ok, "{report:?}");
    let into = work.path().join("clean");
    restore_into(
        &repo,
        "neo4j",
        RestoreTarget::Artifact(ids[1].clone()),
        &into,
    )
    .await;
}

/// A manifest written without the repository's key (a plain one, one signed by another
/// key, one altered after signing) is refused as forged by restore, check and expire: none
/// of them acts on it, and none answers with something else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_forged_without_the_key_is_refused_by_restore_check_and_expire() {
    type Forge = fn(Manifest, &RepoKey) -> Manifest;
    let other = RepoKey::generate(&"00".repeat(16), RecordCipher::Xaes256Gcm);
    let forgeries: [(&str, Forge); 3] = [
        ("plain", |mut m, _| {
            m.format_version = 2;
            m.mac = None;
            m
        }),
        ("another key", |m, other| other.sign_manifest(m)),
        ("altered", |mut m, _| {
            m.committed_at += jiff::SignedDuration::from_secs(1);
            m
        }),
    ];
    for (what, forge) in forgeries {
        let work = tempfile::tempdir().expect("tempdir");
        let (repo, ids) = encrypted_chain(work.path()).await;
        let before = keys(&repo).await;
        // The forged manifest replaces the newest artifact's: a writer without the key
        // trying to change what the newest point restores to.
        let at = layout::manifest_key(&ids[1]);
        let bytes = repo
            .store()
            .get(&at)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let forged = forge(Manifest::from_json(&bytes).expect("manifest"), &other);
        put(&repo, &at, Bytes::from(forged.to_json())).await;

        let into = work.path().join("restored");
        let err = restore(
            &repo,
            &db("neo4j"),
            &RestoreOptions::new(&into),
            &progress(),
        )
        .await
        .expect_err("restore of a forged newest point");
        eprintln!("{what}: restore: {err}");
        assert!(!into.exists(), "{what}: nothing restored");
        let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
            .await
            .expect("check runs");
        assert!(!report.ok, "{what}: check passed a forged manifest");
        let named = report
            .problems
            .iter()
            .any(|p| format!("{p:?}").contains("does not verify under this repository's key"));
        assert!(named, "{what}: {report:?}");
        let err = expire(
            &repo,
            &db("neo4j"),
            &ExpireOptions::new(ExpirePolicy {
                keep_last_chains: Some(1),
                keep_within: None,
            }),
            &progress(),
        )
        .await
        .expect_err("expire with a forged manifest");
        eprintln!("{what}: expire: {err}");
        let mut after = keys(&repo).await;
        after.retain(|k| !k.starts_with("_reports/"));
        let mut before = before.clone();
        before.retain(|k| !k.starts_with("_reports/"));
        assert_eq!(after, before, "{what}: nothing deleted");
    }
}

/// Random trees through a FULL and DIFFs of an encrypted repository and a server-copy
/// aggregate: every point and the aggregated FULL restore byte-identically.
#[test]
fn encrypted_round_trip_and_server_copy_aggregate_of_random_trees() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    });
    runner
        .run(&crate::engine_cases::tree(), |nodes| {
            rt.block_on(async {
                let work = tempfile::tempdir().expect("tempdir");
                let repo = local_repo(&work.path().join("repo"))
                    .await
                    .create_encrypted(&key_file(), cheap())
                    .await
                    .expect("create");
                let src = work.path().join("src");
                std::fs::create_dir(&src).expect("mkdir");
                crate::engine_cases::build_tree(&src, &nodes, 0);
                let o = options(BackupRequest::default());
                let mut last = backup_with(&repo, "rt", &src, &o).await;
                for round in 1..3u64 {
                    mutate(&src, round);
                    last = backup_with(&repo, "rt", &src, &o).await;
                }
                let expected = snapshot(&src);
                let into = work.path().join("restored");
                restore_into(&repo, "rt", RestoreTarget::Artifact(last.clone()), &into).await;
                assert_same("encrypted point", &expected, &snapshot(&into));
                let options = AggregateOptions {
                    target: AggregateTarget::Artifact(last),
                    copy: CopyMode::Server,
                    ..AggregateOptions::default()
                };
                let report = aggregate(&repo, &db("rt"), &options, &progress())
                    .await
                    .expect("aggregate");
                let new: ArtifactId = report.artifact.expect("new").parse().expect("id");
                let into = work.path().join("aggregated");
                restore_into(&repo, "rt", RestoreTarget::Artifact(new), &into).await;
                assert_same("encrypted aggregate", &expected, &snapshot(&into));
            });
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// What an encrypted repository stores in clear beside its artifacts withholds the messages
/// that can name a file: the note of a `keepFailed` backup (the plain repository's note
/// holds the message, as the control) and a stored check report, whose problems keep their
/// artifact and object while the returned report keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_reports_stored_in_clear_withhold_what_can_name_a_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("a-good"), data(2 << 20, 1, true)).expect("write");
    std::fs::write(src.join("b-broken"), data(3 << 20, 2, true)).expect("write");
    for encrypted in [false, true] {
        let plain = local_repo(&work.path().join(format!("repo-{encrypted}"))).await;
        let repo = if encrypted {
            plain
                .create_encrypted(&key_file(), cheap())
                .await
                .expect("create")
        } else {
            plain
        };
        let source: Arc<dyn BackupSource> = Arc::new(super::broken_source(&src));
        let mut opts = options(BackupRequest::default());
        opts.keep_failed = true;
        let report = backup(&repo, vec![(db("kept"), source)], &opts, &progress())
            .await
            .expect("run");
        let outcome = &report.run.databases[0];
        let error = outcome.error.clone().unwrap_or_default();
        assert!(error.contains("disk read error"), "{outcome:?}");
        let note = outcome.kept_failed.clone().expect("a note");
        let stored = objects(&repo).await;
        assert!(stored.iter().any(|(k, _)| *k == note), "{note}");
        let leaked = leaks(&stored, &[b"disk read error"]);
        if encrypted {
            assert_eq!(leaked, Vec::<String>::new(), "the message is withheld");
        } else {
            assert!(leaked.contains(&note), "control: {leaked:?}");
        }
    }
    // A stored check report of a damaged chain: where, not what.
    let (repo, ids) = encrypted_chain(&work.path().join("chain")).await;
    let data_key = layout::data_key(&ids[0]);
    let mut bad = repo
        .store()
        .get(&data_key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    bad[100] ^= 1;
    put(&repo, &data_key, Bytes::from(bad)).await;
    let options = CheckOptions {
        write_report: true,
        ..CheckOptions::default()
    };
    let report = check(&repo, &db("neo4j"), &options, &progress())
        .await
        .expect("check");
    assert!(!report.ok);
    let returned = &report.problems[0];
    assert!(returned.problem.contains("authentication"), "{returned:?}");
    let key = Key::from(report.report_key.clone().expect("stored").as_str());
    let bytes = repo
        .store()
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let stored: CheckReport = chain_core::sealed::open(&bytes).expect("a sealed report");
    assert_eq!(stored.problems.len(), report.problems.len());
    for (s, r) in stored.problems.iter().zip(&report.problems) {
        assert_eq!(
            (&s.artifact, &s.key, s.offset),
            (&r.artifact, &r.key, r.offset)
        );
        assert!(s.problem.contains("withheld"), "{s:?}");
    }
}
