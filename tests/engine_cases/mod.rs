//! The engine's acceptance tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use catena::chain_core::*;
use catena::*;
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};
use proptest::prelude::*;
use storage_backends::layout;

mod encryption;
mod hostile;
mod listing;
mod reliability;

use crate::common::data;
use crate::*;

fn auto() -> BackupRequest {
    BackupRequest::default()
}

fn req(t: BackupType, prefer: bool, fallback: bool) -> BackupRequest {
    BackupRequest {
        backup_type: t,
        prefer_diff_as_parent: prefer,
        fallback_to_full: fallback,
    }
}

async fn restore_to(
    repo: &Repository,
    name: &str,
    target: RestoreTarget,
    into: &Path,
) -> RestoreReport {
    let options = RestoreOptions {
        target,
        ..RestoreOptions::new(into)
    };
    restore(repo, &db(name), &options, &progress())
        .await
        .expect("restore")
}

pub(crate) fn committed(report: &BackupReport) -> (ArtifactId, BackupDecision) {
    assert!(report.succeeded(), "{:?}", report.run.databases);
    let d = &report.run.databases[0];
    (
        d.artifact
            .as_ref()
            .expect("an artifact")
            .parse()
            .expect("id"),
        d.decision.clone().expect("a decision"),
    )
}

// ---------------------------------------------------------------------------------------
// Round trip: random trees, FULL then three DIFFs, every point restored byte-identical.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) enum Node {
    Dir,
    File {
        len: usize,
        seed: u64,
        noisy: bool,
        mode: u32,
    },
    Link {
        target: String,
    },
}

pub(crate) fn tree() -> impl Strategy<Value = Vec<(Vec<&'static str>, Node)>> {
    let name = prop_oneof![
        Just("a"),
        Just("b"),
        Just("graph"),
        Just("x.db"),
        Just("empty")
    ];
    let node = prop_oneof![
        1 => Just(Node::Dir),
        4 => (prop_oneof![Just(0usize), 1usize..5000, 200_000usize..3_000_000], any::<u64>(), any::<bool>(), prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o640)])
            .prop_map(|(len, seed, noisy, mode)| Node::File { len, seed, noisy, mode }),
        1 => prop_oneof![Just("a"), Just("../outside"), Just("/etc/hostname")].prop_map(|t| Node::Link { target: t.to_owned() }),
    ];
    prop::collection::vec((prop::collection::vec(name, 1..4), node), 1..10)
}

/// Writes `nodes` under `root` (skipping those whose parent is a file or link).
pub(crate) fn build_tree(root: &Path, nodes: &[(Vec<&'static str>, Node)], generation: u64) {
    for (parts, node) in nodes {
        let p = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        if p.exists() || std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        let parent = p.parent().expect("parent");
        if std::fs::create_dir_all(parent).is_err() {
            continue; // a file or link stands where a directory would be
        }
        match node {
            Node::Dir => {
                let _ = std::fs::create_dir(&p);
            }
            Node::File {
                len,
                seed,
                noisy,
                mode,
            } => {
                std::fs::write(&p, data(*len, seed ^ generation, *noisy)).expect("write");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                    .expect("chmod");
            }
            Node::Link { target } => {
                std::os::unix::fs::symlink(target, &p).expect("symlink");
            }
        }
    }
}

/// Changes a tree: overwrite part of some files in place, delete one, add new ones.
pub(crate) fn mutate(root: &Path, round: u64) {
    let snap = snapshot(root);
    let files: Vec<_> = snap
        .iter()
        .filter(|(_, v)| v.0 == 'f')
        .map(|(k, _)| k.clone())
        .collect();
    for (i, f) in files.iter().enumerate() {
        let p = root.join(f);
        match (i as u64 + round) % 4 {
            0 => {
                let mut bytes = std::fs::read(&p).expect("read");
                if !bytes.is_empty() {
                    let at = bytes.len() / 3;
                    let end = (at + 70_000).min(bytes.len());
                    for b in &mut bytes[at..end] {
                        *b = b.wrapping_add(1);
                    }
                    std::fs::write(&p, bytes).expect("write");
                }
            }
            1 if round == 2 => {
                std::fs::remove_file(&p).expect("remove");
            }
            2 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod")
            }
            _ => {}
        }
    }
    std::fs::write(
        root.join(format!("new-{round}.log")),
        data(10_000 + round as usize * 1000, round, false),
    )
    .expect("write");
}

async fn round_trip(repo: &Repository, nodes: &[(Vec<&'static str>, Node)]) {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    build_tree(&src, nodes, 0);
    let name = format!("rt{:08x}", rand::random::<u32>());
    let mut points = Vec::new();
    for round in 0..4u64 {
        if round > 0 {
            mutate(&src, round);
        }
        let report = backup_dir(repo, &name, &src, auto()).await;
        let (id, decision) = committed(&report);
        assert_eq!(
            decision.kind,
            if round == 0 {
                ArtifactKind::Full
            } else {
                ArtifactKind::Diff
            }
        );
        points.push((id, snapshot(&src)));
    }
    for (i, (id, expected)) in points.iter().enumerate() {
        let into = work.path().join(format!("restored-{i}"));
        restore_to(repo, &name, RestoreTarget::Artifact(id.clone()), &into).await;
        assert_same(&format!("point {i}"), expected, &snapshot(&into));
    }
}

#[test]
fn round_trip_of_random_trees_through_a_full_and_three_diffs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let repos = rt.block_on(repos());
    for r in &repos {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: if r.name == "local" { 8 } else { 3 },
            ..ProptestConfig::default()
        });
        runner
            .run(&tree(), |nodes| {
                rt.block_on(round_trip(&r.repo, &nodes));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", r.name));
    }
}

// ---------------------------------------------------------------------------------------
// DIFF size: 5% changed in place.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_after_changing_five_percent_in_place_stores_about_five_percent() {
    for r in repos().await.iter().filter(|r| r.name != "moto") {
        let work = tempfile::tempdir().expect("tempdir");
        let src = work.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        // 256 MiB: eight files of 32 MiB, half noise, half text.
        for i in 0..8u64 {
            std::fs::write(
                src.join(format!("store-{i}.db")),
                data(32 << 20, i, i % 2 == 0),
            )
            .expect("write");
        }
        let full = backup_dir(&r.repo, "sized", &src, auto()).await;
        let full_stored = full.run.databases[0].stored_bytes;
        // 5% of 256 MiB = 12.8 MiB, changed in place in two files, not block-aligned.
        for (i, at) in [(0u64, 5_000_001usize), (3, 9_999_999)] {
            let p = src.join(format!("store-{i}.db"));
            let mut bytes = std::fs::read(&p).expect("read");
            for b in &mut bytes[at..at + 6_710_886] {
                *b ^= 0x5a;
            }
            std::fs::write(&p, bytes).expect("write");
        }
        let diff = backup_dir(&r.repo, "sized", &src, auto()).await;
        let (_, decision) = committed(&diff);
        assert_eq!(decision.kind, ArtifactKind::Diff);
        let diff_stored = diff.run.databases[0].stored_bytes;
        let ratio = diff_stored as f64 / full_stored as f64;
        eprintln!(
            "{}: FULL {full_stored} bytes, DIFF {diff_stored} bytes, {:.2}%",
            r.name,
            ratio * 100.0
        );
        assert!(
            ratio <= 0.07,
            "{}: the DIFF stores {:.2}% of the FULL",
            r.name,
            ratio * 100.0
        );
    }
}

// ---------------------------------------------------------------------------------------
// Decisions end to end.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_end_to_end_mirror_chain_core() {
    for r in repos().await {
        let work = tempfile::tempdir().expect("tempdir");
        let src = work.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("a"), b"one").expect("write");
        let repo = &r.repo;
        let name = "decide";

        // DIFF with no parent and no fallback fails; with fallback, a FULL with its reason.
        let report = backup_dir(repo, name, &src, req(BackupType::Diff, false, false)).await;
        assert!(!report.succeeded());
        assert!(
            report.run.databases[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("no earlier backup")
        );
        let (full1, d) =
            committed(&backup_dir(repo, name, &src, req(BackupType::Diff, false, true)).await);
        assert_eq!(d.reason, ReasonCode::FullFallbackNoParent);

        // Nothing changed: an EMPTY DIFF, never a parent afterwards.
        let (empty, d) = committed(&backup_dir(repo, name, &src, auto()).await);
        assert_eq!(
            (d.kind, d.reason),
            (ArtifactKind::Diff, ReasonCode::DiffFromNewest)
        );
        let view = repo.catalog(&db(name)).await.expect("catalog");
        assert!(view.catalog.get(&empty).expect("committed").empty);

        std::fs::write(src.join("a"), b"two").expect("write");
        let (diff1, d) = committed(&backup_dir(repo, name, &src, auto()).await);
        assert_eq!(
            d.parent,
            Some(full1.clone()),
            "the EMPTY one is never a parent"
        );
        let (full2, d) =
            committed(&backup_dir(repo, name, &src, req(BackupType::Full, false, true)).await);
        assert_eq!(d.reason, ReasonCode::FullRequested);

        std::fs::write(src.join("a"), b"three").expect("write");
        let (_, d) =
            committed(&backup_dir(repo, name, &src, req(BackupType::Auto, true, true)).await);
        assert_eq!(
            (d.parent.as_ref(), d.reason),
            (Some(&diff1), ReasonCode::DiffFromNewestDiff)
        );
        std::fs::write(src.join("b"), b"four").expect("write");
        let (newest, d) = committed(&backup_dir(repo, name, &src, auto()).await);
        assert_ne!(
            d.parent,
            Some(full2.clone()),
            "the newest backup is the DIFF, not the FULL"
        );

        // The newest artifact's index is damaged: with fallback a FULL, reason recorded in
        // the manifest; without, the database fails.
        let view = repo.catalog(&db(name)).await.expect("catalog");
        let m = view.catalog.get(&newest).expect("newest");
        let index_key = layout::index_key(&newest);
        let mut bytes = repo
            .store()
            .get(&index_key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes")
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        repo.store()
            .put(&index_key, PutPayload::from(bytes))
            .await
            .expect("damage");
        let failed = backup_dir(repo, name, &src, req(BackupType::Auto, false, false)).await;
        assert!(!failed.succeeded());
        assert!(
            failed.run.databases[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains(&newest.to_string())
        );
        let (fallback, d) = committed(&backup_dir(repo, name, &src, auto()).await);
        assert_eq!(
            (d.kind, d.reason),
            (ArtifactKind::Full, ReasonCode::FullFallbackDiffFailed)
        );
        assert!(
            d.skipped
                .iter()
                .any(|s| s.artifact == m.id && s.why.contains(".index")),
            "{:?}",
            d.skipped
        );
        let view = repo.catalog(&db(name)).await.expect("catalog");
        assert_eq!(
            view.catalog
                .get(&fallback)
                .expect("committed")
                .decision
                .reason,
            ReasonCode::FullFallbackDiffFailed
        );
    }
}

// ---------------------------------------------------------------------------------------
// Aggregate.
// ---------------------------------------------------------------------------------------

/// Every key, but the lock records (generations come and go with every writer).
/// Inspect's rows, as the tests read them.
pub(crate) async fn inspect_rows(
    repo: &Repository,
    databases: &[DatabaseName],
    scope: InspectScope,
    include_empty: bool,
) -> Result<Vec<InspectRow>, catena::Error> {
    let options = InspectOptions {
        scope,
        include_empty,
        ..InspectOptions::default()
    };
    Ok(inspect(repo, databases, &options, &progress()).await?.rows)
}

/// Aggregates every database matching `pattern`, as the CLI does.
pub(crate) async fn aggregate_matching(
    repo: &Repository,
    pattern: &str,
    options: &AggregateOptions,
    progress: &std::sync::Arc<dyn Progress>,
) -> Result<Vec<AggregateReport>, catena::Error> {
    let mut reports = Vec::new();
    for db in repo.databases_matching(pattern).await? {
        reports.push(aggregate(repo, &db, options, progress).await?);
    }
    Ok(reports)
}

pub(crate) async fn keys(repo: &Repository) -> std::collections::BTreeSet<String> {
    repo.store()
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|k| !k.starts_with(&format!("{}/", layout::LOCKS_PREFIX)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_replaces_the_chain_with_an_identical_full() {
    for r in repos().await {
        let repo = &r.repo;
        let name = "agg";
        let work = tempfile::tempdir().expect("tempdir");
        let src = work.path().join("src");
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::write(src.join("d/big"), data(3 << 20, 1, true)).expect("write");
        std::fs::write(src.join("text"), data(1 << 20, 2, false)).expect("write");
        let mut chain = vec![committed(&backup_dir(repo, name, &src, auto()).await).0];
        for round in 0..2u64 {
            mutate(&src, round + 10);
            chain.push(committed(&backup_dir(repo, name, &src, auto()).await).0);
        }
        let expected = snapshot(&src);
        let view = repo.catalog(&db(name)).await.expect("catalog");
        let mut old_objects: std::collections::BTreeSet<String> = Default::default();
        for id in &chain {
            let m = view.catalog.get(id).expect("m");
            old_objects.insert(layout::manifest_key(id).to_string());
            old_objects.extend(m.objects.iter().map(|o| o.key.clone()));
        }
        let before = keys(repo).await;

        let options = AggregateOptions {
            keep_old_backup: false,
            ..AggregateOptions::default()
        };
        let reports = aggregate_matching(repo, "ag*", &options, &progress())
            .await
            .expect("aggregate");
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.chain.len(), 3);
        let after = keys(repo).await;
        let gone: std::collections::BTreeSet<_> = before.difference(&after).cloned().collect();
        assert_eq!(
            gone, old_objects,
            "{}: exactly the old chain's objects are gone",
            r.name
        );

        let into = work.path().join("restored");
        let restored = restore_to(repo, name, RestoreTarget::Latest, &into).await;
        assert_eq!(Some(&restored.artifact), report.artifact.as_ref());
        assert_eq!(restored.chain.len(), 1);
        assert_same("aggregated", &expected, &snapshot(&into));
        let view = repo.catalog(&db(name)).await.expect("catalog");
        let new = view
            .catalog
            .get(&restored.artifact.parse().expect("id"))
            .expect("new full");
        assert_eq!(
            (new.kind, new.decision.reason),
            (ArtifactKind::Full, ReasonCode::FullAggregated)
        );
        assert_eq!(new.state_digest.to_string(), report.state_digest);
    }
}

/// A FULL and five DIFFs, aggregated by the store's copy, by the client's raw copy and by
/// re-encoding: each new FULL restores byte-identically with the chain's state digest, and
/// the report says how it was made and what passed through the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_by_server_copy_client_copy_and_reencode_restore_identically() {
    let mut all = repos().await;
    let memory = StorageConfig::from_url("memory://")
        .expect("url")
        .build()
        .await
        .expect("memory");
    let dir = tempfile::tempdir().expect("tempdir");
    all.push(TestRepo {
        name: "memory",
        repo: Repository::new(memory),
        _dir: dir,
    });
    all.extend(crate::azurite_repo().await);
    for r in &all {
        let repo = &r.repo;
        assert!(
            repo.server_copy().is_some(),
            "{}: has a server copy",
            r.name
        );
        let name = "sixlinks";
        let work = tempfile::tempdir().expect("tempdir");
        let src = work.path().join("src");
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        // 16 MiB: the runs of the FULL that the DIFFs leave are longer than S3's 5 MiB part
        // minimum, so that S3 copies them on the server.
        std::fs::write(src.join("d/big"), data(16 << 20, 1, true)).expect("write");
        std::fs::write(src.join("text"), data(1 << 20, 2, false)).expect("write");
        let mut last = committed(&backup_dir(repo, name, &src, auto()).await).0;
        for round in 0..5u64 {
            mutate(&src, round + 20);
            last = committed(&backup_dir(repo, name, &src, auto()).await).0;
        }
        let expected = snapshot(&src);
        let digest = repo
            .catalog(&db(name))
            .await
            .expect("catalog")
            .catalog
            .get(&last)
            .expect("last")
            .state_digest;
        for mode in [CopyMode::Server, CopyMode::Client, CopyMode::Reencode] {
            let options = AggregateOptions {
                target: AggregateTarget::Artifact(last.clone()),
                keep_old_backup: true,
                copy: mode,
                ..AggregateOptions::default()
            };
            let report = aggregate(repo, &db(name), &options, &progress())
                .await
                .unwrap_or_else(|e| panic!("{} {mode:?}: {e}", r.name));
            assert_eq!(report.chain.len(), 6, "{} {mode:?}", r.name);
            let copy = report.copy.clone().expect("a copy report");
            let new: ArtifactId = report.artifact.expect("new full").parse().expect("id");
            match mode {
                CopyMode::Server => {
                    assert!(copy.method.starts_with("server"), "{copy:?}");
                    assert!(
                        copy.server_bytes > 0 && copy.verified_records > 0,
                        "{copy:?}"
                    );
                    assert_eq!(copy.server_bytes + copy.client_sent_bytes, copy.data_bytes);
                }
                CopyMode::Client => {
                    assert!(copy.method.starts_with("client"), "{copy:?}");
                    assert_eq!(
                        (copy.server_bytes, copy.client_sent_bytes),
                        (0, copy.data_bytes)
                    );
                }
                _ => assert_eq!(copy.method, "reencode"),
            }
            eprintln!("{} {mode:?}: {copy:?}", r.name);
            let into = work.path().join(format!("restored-{mode:?}"));
            let restored =
                restore_to(repo, name, RestoreTarget::Artifact(new.clone()), &into).await;
            assert_eq!(
                restored.chain.len(),
                1,
                "{} {mode:?}: the new FULL alone",
                r.name
            );
            assert_same(&format!("{} {mode:?}", r.name), &expected, &snapshot(&into));
            let view = repo.catalog(&db(name)).await.expect("catalog");
            assert_eq!(view.catalog.get(&new).expect("new").state_digest, digest);
        }
        let report = check(repo, &db(name), &CheckOptions::default(), &progress())
            .await
            .expect("check");
        assert!(report.ok, "{}: {report:?}", r.name);
    }
}

/// S3 server-side encryption (SSE-KMS with a key and a bucket key) reaches every object a
/// backup writes, single puts and multipart uploads, and the FULL an aggregate assembles by
/// `UploadPartCopy`: each object's HEAD on moto names the encryption and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_side_encryption_reaches_every_object_and_the_server_copy() {
    let Some(endpoint) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/catena-sse-test";
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = common::unique("sse");
    let config = StorageConfig {
        s3_server_side_encryption: Some("aws:kms".into()),
        s3_sse_kms_key_id: Some(KEY.into()),
        s3_sse_bucket_key_enabled: true,
        ..common::s3_config(&endpoint, dir.path(), "k", "s", &prefix)
    };
    let storage = config.build().await.expect("moto with SSE-KMS");
    let said = storage
        .settings
        .iter()
        .find(|(k, _)| k == "server_side_encryption")
        .map(|(_, v)| v.clone());
    assert_eq!(said, Some(format!("aws:kms, key {KEY}, bucket key")));
    let repo = Repository::new(storage);
    let name = "sse";
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    // 12 MiB: a multipart data object, and runs long enough for UploadPartCopy.
    std::fs::write(src.join("big"), data(12 << 20, 5, true)).expect("write");
    committed(&backup_dir(&repo, name, &src, auto()).await);
    mutate(&src, 1);
    committed(&backup_dir(&repo, name, &src, auto()).await);
    let options = AggregateOptions {
        copy: CopyMode::Server,
        ..AggregateOptions::default()
    };
    let report = aggregate(&repo, &db(name), &options, &progress())
        .await
        .expect("aggregate by server copy");
    let copy = report.copy.expect("copy report");
    assert!(
        copy.method.starts_with("server") && copy.server_bytes > 0,
        "{copy:?}"
    );
    let objects = keys(&repo).await;
    assert!(objects.len() >= 4, "{objects:?}");
    // S3 answers SSE-KMS objects only to signed requests: boto3 (moto's own dependency)
    // signs the HEADs, as an independent reader of what was stored.
    let script = r#"
import boto3, json, sys
endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k",
                  aws_secret_access_key="s", region_name="us-east-1")
out = {}
for key in sys.stdin.read().split():
    h = s3.head_object(Bucket=bucket, Key=prefix + "/" + key)
    out[key] = [h.get("ServerSideEncryption"), h.get("SSEKMSKeyId"), h.get("BucketKeyEnabled")]
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, &endpoint, common::BUCKET, &prefix])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        for key in &objects {
            writeln!(stdin, "{key}").expect("write");
        }
    }
    let out = child.wait_with_output().expect("python3 ends");
    assert!(out.status.success(), "boto3 HEAD failed");
    /// What a HEAD says: encryption, KMS key, bucket key.
    type Head = (Option<String>, Option<String>, Option<bool>);
    let heads: std::collections::BTreeMap<String, Head> =
        serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(heads.len(), objects.len());
    for (key, (sse, kms_key, bucket_key)) in &heads {
        assert_eq!(
            (sse.as_deref(), kms_key.as_deref()),
            (Some("aws:kms"), Some(KEY)),
            "{key}"
        );
        // Moto does not record BucketKeyEnabled of a multipart upload (boto3's own
        // CreateMultipartUpload shows the same), and the data objects here are multipart.
        if !key.ends_with(".data") {
            assert_eq!(*bucket_key, Some(true), "{key}");
        }
    }
    eprintln!(
        "SSE-KMS on {} objects (aggregated by {}): every HEAD names aws:kms, the key and the bucket key",
        heads.len(),
        copy.method
    );
    let into = work.path().join("restored");
    restore_to(&repo, name, RestoreTarget::Latest, &into).await;
    assert_same("sse", &snapshot(&src), &snapshot(&into));
}

/// A plain-HTTP proxy on 127.0.0.1 in front of `upstream` (`host:port`) that forwards every
/// byte both ways and keeps the head (request line and headers) of each request it carries.
/// Requests are told apart by `Content-Length`; a chunked body ends the test, as the heads
/// after it could not be found.
fn recording_proxy(upstream: String) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = format!("http://{}", listener.local_addr().expect("addr"));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                return;
            };
            let (mut client_back, mut server_back) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_back, &mut client_back);
                let _ = client_back.shutdown(std::net::Shutdown::Both);
            });
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let (mut pending, mut body_left) = (Vec::<u8>::new(), 0usize);
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let mut input = buf[..n].to_vec();
                    loop {
                        let skip = body_left.min(input.len());
                        body_left -= skip;
                        input.drain(..skip);
                        if input.is_empty() {
                            break;
                        }
                        pending.append(&mut input);
                        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                            break;
                        };
                        let head = String::from_utf8_lossy(&pending[..end]).to_string();
                        let lower = head.to_ascii_lowercase();
                        assert!(!lower.contains("transfer-encoding: chunked"), "{head}");
                        body_left = lower
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().expect("length"))
                            .unwrap_or(0);
                        seen.lock().expect("lock").push(head);
                        input = pending.split_off(end + 4);
                        pending.clear();
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (at, heads)
}

/// S3 SSE-C (a key of the customer's own) reaches every request that reads or writes an
/// object: the puts, each part, each read of a restore and a check, and each
/// `UploadPartCopy` of a server-copy aggregate, which also names the key of its source.
/// Moto ignores SSE-C, so a recording proxy in front of it reads the requests themselves; the
/// key never shows in the settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sse_c_goes_with_every_object_request_and_the_server_copy() {
    use base64::Engine as _;
    let Some(endpoint) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (proxy, heads) = recording_proxy(upstream);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = [0x42u8; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    std::fs::create_dir_all(dir.path().join("ssec")).expect("mkdir");
    std::fs::write(dir.path().join("ssec/sse-c.key"), key).expect("write");
    let prefix = common::unique("ssec");
    let config = StorageConfig {
        s3_server_side_encryption: Some("SSE-C".into()),
        s3_sse_customer_key_secret_name: Some("ssec".into()),
        ..common::s3_config(&proxy, dir.path(), "k", "s", &prefix)
    };
    let storage = config.build().await.expect("moto with SSE-C");
    let said = storage
        .settings
        .iter()
        .find(|(k, _)| k == "server_side_encryption")
        .map(|(_, v)| v.clone())
        .expect("said");
    assert!(said.starts_with("SSE-C, the key in "), "{said}");
    let repo = Repository::new(storage);
    let name = "ssec";
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("big"), data(12 << 20, 6, true)).expect("write");
    committed(&backup_dir(&repo, name, &src, auto()).await);
    mutate(&src, 1);
    committed(&backup_dir(&repo, name, &src, auto()).await);
    let options = AggregateOptions {
        copy: CopyMode::Server,
        ..AggregateOptions::default()
    };
    let report = aggregate(&repo, &db(name), &options, &progress())
        .await
        .expect("aggregate by server copy");
    let copy = report.copy.expect("copy report");
    assert!(copy.server_bytes > 0, "{copy:?}");
    let into = work.path().join("restored");
    restore_to(&repo, name, RestoreTarget::Latest, &into).await;
    assert_same("ssec", &snapshot(&src), &snapshot(&into));
    let checked = check(&repo, &db(name), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(checked.ok, "{checked:?}");

    let heads = heads.lock().expect("lock").clone();
    let key_b64 = b64.encode(key);
    let md5 = b64.encode(<md5::Md5 as md5::Digest>::digest(key));
    let has = |head: &str, name: &str, value: &str| {
        head.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case(name) && v.trim() == value)
        })
    };
    let sse_c = |head: &str, pre: &str| {
        has(
            head,
            &format!("x-amz-{pre}server-side-encryption-customer-algorithm"),
            "AES256",
        ) && has(
            head,
            &format!("x-amz-{pre}server-side-encryption-customer-key"),
            &key_b64,
        ) && has(
            head,
            &format!("x-amz-{pre}server-side-encryption-customer-key-md5"),
            &md5,
        )
    };
    let (mut object_requests, mut part_copies) = (0, 0);
    for head in &heads {
        let line = head.lines().next().unwrap_or_default();
        let (method, target) = line.split_once(' ').unwrap_or_default();
        let path = target.split(' ').next().unwrap_or_default();
        // Requests on one object under the repository: reads, writes, multipart starts and
        // parts. Listings, deletes, completions and aborts carry no object data.
        let on_object = path.contains(&prefix)
            && !path.contains("list-type")
            && (matches!(method, "GET" | "HEAD" | "PUT")
                || (method == "POST" && path.contains("?uploads")));
        if !on_object {
            continue;
        }
        object_requests += 1;
        assert!(sse_c(head, ""), "a request without the SSE-C key: {line}");
        if head.to_ascii_lowercase().contains("x-amz-copy-source:") {
            part_copies += 1;
            assert!(
                sse_c(head, "copy-source-"),
                "an UploadPartCopy without the source's SSE-C key: {line}"
            );
        }
    }
    assert!(
        part_copies > 0 && object_requests > part_copies + 8,
        "{object_requests} {part_copies}"
    );
    eprintln!(
        "SSE-C: {object_requests} object requests of {} carried the key, {part_copies} UploadPartCopy also the source's",
        heads.len()
    );
}

/// A server copy that goes wrong (a range one byte off, an error after writing, a copy that
/// never ends and is cancelled) leaves the repository as it was: no new artifact, no new
/// object, the old chain whole, even with `keepOldBackup: false`; `auto` then copies
/// through the client instead, and says so. Where the store has no server copy,
/// `--copy server` says so and what to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_server_copy_leaves_the_chain_and_nothing_else() {
    use storage_backends::assemble::{CopyFault, FaultCopy, ServerCopy};
    let mut all: Vec<_> = repos().await.into_iter().take(2).collect();
    all.extend(crate::azurite_repo().await);
    for r in all {
        let name = "badcopy";
        let work = tempfile::tempdir().expect("tempdir");
        let src = work.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("big"), data(12 << 20, 3, true)).expect("write");
        committed(&backup_dir(&r.repo, name, &src, auto()).await);
        mutate(&src, 0);
        std::fs::write(src.join("more"), data(6 << 20, 4, true)).expect("write");
        let last = committed(&backup_dir(&r.repo, name, &src, auto()).await).0;
        let before = keys(&r.repo).await;
        let inner = Arc::clone(r.repo.server_copy().expect("server copy"));
        for fault in [CopyFault::ShiftRange, CopyFault::FailAfter, CopyFault::Hang] {
            let copy: Arc<dyn ServerCopy> = Arc::new(FaultCopy::new(Arc::clone(&inner), fault));
            let repo = r.repo.clone().with_server_copy(Some(copy));
            let cancel = storage_backends::CancellationToken::new();
            if fault == CopyFault::Hang {
                let c = cancel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    c.cancel();
                });
            }
            let options = AggregateOptions {
                keep_old_backup: false,
                copy: CopyMode::Server,
                cancel,
                ..AggregateOptions::default()
            };
            let e = aggregate(&repo, &db(name), &options, &progress())
                .await
                .expect_err("a bad copy is not committed");
            let what = format!("{} {fault:?}: {e}", r.name);
            match fault {
                CopyFault::ShiftRange => assert!(
                    e.to_string().contains("not what was planned")
                        || e.to_string().contains("assembled something else")
                        || e.to_string().contains("UploadPartCopy")
                        || e.to_string().contains("Put Block From URL"),
                    "{what}"
                ),
                CopyFault::FailAfter => assert!(e.to_string().contains("injected"), "{what}"),
                CopyFault::Hang => assert!(matches!(e, catena::Error::Cancelled), "{what}"),
                CopyFault::RemoveSource => unreachable!("not among the faults of this test"),
            }
            assert_eq!(
                keys(&r.repo).await,
                before,
                "{what}: the repository changed"
            );
        }
        // `auto` falls back to the client's copy when the store's copy fails, and says so.
        let copy: Arc<dyn ServerCopy> =
            Arc::new(FaultCopy::new(Arc::clone(&inner), CopyFault::ShiftRange));
        let repo = r.repo.clone().with_server_copy(Some(copy));
        let options = AggregateOptions {
            keep_old_backup: true,
            ..AggregateOptions::default()
        };
        let report = aggregate(&repo, &db(name), &options, &progress())
            .await
            .expect("auto falls back to the client");
        let copy = report.copy.expect("copy report");
        assert!(
            copy.method.starts_with("client") && copy.fallback.is_some(),
            "{}: {copy:?}",
            r.name
        );
        let into = work.path().join("restored");
        restore_to(&r.repo, name, RestoreTarget::Latest, &into).await;
        assert_same(
            &format!("{} fallback", r.name),
            &snapshot(&src),
            &snapshot(&into),
        );
        let before = keys(&r.repo).await;
        // Without a server copy, `server` is refused and says what to use.
        let plain = Repository::from_store(Arc::clone(r.repo.store()), "plain");
        let options = AggregateOptions {
            copy: CopyMode::Server,
            target: AggregateTarget::Artifact(last),
            keep_old_backup: true,
            ..AggregateOptions::default()
        };
        let e = aggregate(&plain, &db(name), &options, &progress())
            .await
            .expect_err("no server copy");
        assert!(e.to_string().contains("--copy auto"), "{e}");
        assert_eq!(keys(&r.repo).await, before);
    }
}

// ---------------------------------------------------------------------------------------
// Check.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_clean_chain_and_names_every_damaged_object() {
    for r in repos().await {
        check_one(&r.repo).await;
    }
}

async fn check_one(repo: &Repository) {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), data(2 << 20, 3, true)).expect("write");
    let (full, _) = committed(&backup_dir(repo, "chk", &src, auto()).await);
    mutate(&src, 20);
    let (diff, _) = committed(&backup_dir(repo, "chk", &src, auto()).await);
    let opts = CheckOptions::default();
    let report = check(repo, &db("chk"), &opts, &progress())
        .await
        .expect("check");
    assert!(report.ok, "{:?}", report.problems);
    assert!(
        report
            .report_key
            .clone()
            .expect("report written")
            .starts_with("_reports/check-chk-")
    );

    for id in [&full, &diff] {
        for key in [
            layout::manifest_key(id),
            layout::index_key(id),
            layout::data_key(id),
        ] {
            let Ok(got) = repo.store().get(&key).await else {
                continue;
            };
            let original = got.bytes().await.expect("bytes");
            let mut bad = original.to_vec();
            let at = bad.len() / 2;
            bad[at] ^= 0x10;
            repo.store()
                .put(&key, PutPayload::from(bad))
                .await
                .expect("damage");
            let report = check(
                repo,
                &db("chk"),
                &CheckOptions {
                    write_report: false,
                    ..opts.clone()
                },
                &progress(),
            )
            .await
            .expect("check");
            assert!(!report.ok, "flip in {key} went unnoticed");
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.key.as_deref() == Some(key.as_ref())),
                "{key} not named: {:?}",
                report.problems
            );
            repo.store()
                .put(&key, PutPayload::from(original))
                .await
                .expect("repair");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Restore refuses crafted artifacts.
// ---------------------------------------------------------------------------------------

/// Commits a FULL whose index body is `body` (JSON, possibly invalid for Catena).
pub(crate) async fn commit_crafted(
    repo: &Repository,
    name: &str,
    body: Vec<u8>,
    state_digest: Sha256Digest,
) -> ArtifactId {
    let id = ArtifactId::new(db(name), jiff::Timestamp::now(), rand::random());
    // Index object: header + raw body, as Index::encode would write it.
    let mut index = Vec::new();
    index.extend_from_slice(b"CTNI");
    index.extend_from_slice(&[1, 0, 0, 0]);
    index.extend_from_slice(&(body.len() as u64).to_be_bytes());
    index.extend_from_slice(&Sha256Digest::of(&body).0);
    index.extend_from_slice(&body);
    let index_key = layout::index_key(&id);
    let written =
        storage_backends::commit::put_create(repo.store().as_ref(), &index_key, Bytes::from(index))
            .await
            .expect("index");
    let catalog = Catalog::new(db(name), []);
    let decision = decide_backup(
        &catalog,
        BackupRequest::default(),
        SourceCapability::DIRECTORY,
    )
    .expect("decision");
    let manifest = ManifestBuilder::new(id.clone(), decision)
        .state_digest(state_digest)
        .objects(vec![written.to_ref(ObjectRole::Index)])
        .build()
        .expect("manifest");
    storage_backends::commit::put_create(
        repo.store().as_ref(),
        &layout::manifest_key(&id),
        Bytes::from(manifest.to_json()),
    )
    .await
    .expect("manifest");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_entries_that_escape_the_destination() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    for (i, path) in ["../x", "/etc/x", "a/../../x"].iter().enumerate() {
        let name = format!("evil{i}");
        let body = format!(
            r#"{{"changes":{{"added":[{{"path":"{path}","kind":{{"type":"directory"}},"meta":{{"mode":493,"mtime_ns":0}}}}],"changed":[],"removed":[]}},"blocks":[]}}"#
        );
        let id = commit_crafted(repo, &name, body.into_bytes(), Sha256Digest::of(b"x")).await;
        let into = work.path().join(format!("out{i}"));
        let err = restore(repo, &db(&name), &RestoreOptions::new(&into), &progress())
            .await
            .expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&layout::index_key(&id).to_string()) && msg.contains("invalid entry path"),
            "{msg}"
        );
        assert!(!into.exists() && !work.path().join("x").exists());
    }

    // A link that points outside, then a file written "through" it.
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let state = State::from_entries([
        Entry {
            stamp: None,
            path: EntryPath::new("link").expect("path"),
            kind: EntryKind::Symlink {
                target: outside.display().to_string(),
            },
            meta: Metadata::default(),
        },
        Entry {
            stamp: None,
            path: EntryPath::new("link/planted").expect("path"),
            kind: EntryKind::Directory,
            meta: Metadata {
                mode: 0o755,
                ..Metadata::default()
            },
        },
    ]);
    let index = Index {
        changes: ChangeSet::full(&state),
        blocks: vec![],
    };
    let body = serde_json::to_vec(&index).expect("json");
    commit_crafted(repo, "evillink", body, state.digest()).await;
    let into = work.path().join("out-link");
    let err = restore(
        repo,
        &db("evillink"),
        &RestoreOptions::new(&into),
        &progress(),
    )
    .await
    .expect_err("refused");
    assert!(
        err.to_string().contains("refusing to write through a link"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&outside).expect("read").next().is_none(),
        "nothing was written outside"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_non_empty_destination_unless_told_to_overwrite() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"backed up").expect("write");
    committed(&backup_dir(repo, "dest", &src, auto()).await);
    let into = work.path().join("busy");
    std::fs::create_dir(&into).expect("mkdir");
    std::fs::write(into.join("precious"), b"keep me").expect("write");
    let err = restore(repo, &db("dest"), &RestoreOptions::new(&into), &progress())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("overwrite"), "{err}");
    assert_eq!(
        std::fs::read(into.join("precious")).expect("untouched"),
        b"keep me"
    );
    let options = RestoreOptions {
        overwrite: true,
        ..RestoreOptions::new(&into)
    };
    restore(repo, &db("dest"), &options, &progress())
        .await
        .expect("overwrite");
    assert_eq!(
        std::fs::read(into.join("f")).expect("restored"),
        b"backed up"
    );
    assert!(!into.join("precious").exists());
}

// ---------------------------------------------------------------------------------------
// Several databases in one run.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_database_fails_the_run_and_the_other_is_committed_and_recorded() {
    for r in repos().await {
        let repo = &r.repo;
        let work = tempfile::tempdir().expect("tempdir");
        let good = work.path().join("neo4j");
        std::fs::create_dir(&good).expect("mkdir");
        std::fs::write(good.join("store"), data(300_000, 9, true)).expect("write");
        let sources: Vec<(DatabaseName, Arc<dyn BackupSource>)> = vec![
            (db("neo4j"), Arc::new(DirectorySource::new(&good))),
            (
                db("system"),
                Arc::new(DirectorySource::new(work.path().join("missing"))),
            ),
        ];
        let report = backup(repo, sources, &options(auto()), &progress())
            .await
            .expect("run record");
        assert!(!report.succeeded(), "{}", r.name);
        let key = report.run_record_key.clone().expect("a run record");
        let bytes = repo
            .store()
            .get(&Key::parse(&key).expect("key"))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let record: RunRecord = chain_core::sealed::open(&bytes).expect("sealed run record");
        assert!(!record.ok);
        let neo4j = record
            .databases
            .iter()
            .find(|d| d.database == "neo4j")
            .expect("neo4j listed");
        let system = record
            .databases
            .iter()
            .find(|d| d.database == "system")
            .expect("system listed");
        assert!(neo4j.error.is_none() && neo4j.artifact.is_some());
        assert!(
            system.error.as_deref().unwrap_or("").contains("missing"),
            "{:?}",
            system.error
        );
        let into = work.path().join("restored");
        let restored = restore_to(repo, "neo4j", RestoreTarget::Latest, &into).await;
        assert_eq!(Some(&restored.artifact), neo4j.artifact.as_ref());
        assert_eq!(
            std::fs::read(into.join("store")).expect("read"),
            data(300_000, 9, true)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Inspect, expire, restore until.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_expire_and_restore_until() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"v1").expect("write");
    let (a, _) = committed(&backup_dir(repo, "life", &src, auto()).await);
    committed(&backup_dir(repo, "life", &src, auto()).await); // EMPTY
    std::fs::write(src.join("f"), b"v2").expect("write");
    let (b, _) = committed(&backup_dir(repo, "life", &src, auto()).await);
    let (c, _) =
        committed(&backup_dir(repo, "life", &src, req(BackupType::Full, false, true)).await);

    let rows = inspect_rows(repo, &[], InspectScope::All, false)
        .await
        .expect("inspect");
    let ids: Vec<_> = rows.iter().map(|r| r.artifact.clone()).collect();
    assert_eq!(
        ids,
        vec![a.to_string(), b.to_string(), c.to_string()],
        "EMPTY hidden"
    );
    assert_eq!(
        inspect_rows(repo, &[], InspectScope::All, true)
            .await
            .expect("inspect")
            .len(),
        4
    );
    let latest = inspect_rows(repo, &[db("life")], InspectScope::LatestChain, false)
        .await
        .expect("inspect");
    assert_eq!(
        latest
            .iter()
            .map(|r| r.artifact.clone())
            .collect::<Vec<_>>(),
        vec![c.to_string()]
    );

    // Until position 3 (exclusive): the state of the DIFF ending at... the first artifacts.
    let into = work.path().join("until");
    let r = restore_to(
        repo,
        "life",
        RestoreTarget::UntilPosition(Position(2)),
        &into,
    )
    .await;
    assert_eq!(r.artifact, a.to_string());
    assert_eq!(std::fs::read(into.join("f")).expect("read"), b"v1");

    let report = expire(
        repo,
        &db("life"),
        &ExpireOptions::new(ExpirePolicy {
            keep_last_chains: Some(1),
            keep_within: None,
        }),
        &progress(),
    )
    .await
    .expect("expire");
    assert_eq!(report.deleted.len(), 3, "{report:?}");
    let left = inspect_rows(repo, &[db("life")], InspectScope::All, true)
        .await
        .expect("inspect");
    assert_eq!(
        left.iter().map(|r| r.artifact.clone()).collect::<Vec<_>>(),
        vec![c.to_string()]
    );
}

// ---------------------------------------------------------------------------------------
// Cancellation.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_backup_leaves_nothing_visible() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), data(8 << 20, 1, true)).expect("write");
    let opts = options(auto());
    opts.cancel.cancel();
    let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(&src));
    let report = backup(repo, vec![(db("cancel"), source)], &opts, &progress())
        .await
        .expect("run record");
    assert!(!report.succeeded());
    assert!(
        report.run.databases[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("cancelled")
    );
    let view = repo.catalog(&db("cancel")).await.expect("catalog");
    assert!(
        view.catalog.is_empty() && view.objects.is_empty(),
        "{:?}",
        view.objects
    );
}

// ---------------------------------------------------------------------------------------
// Sources: files that change while read, special files, keepFailed, progress.
// ---------------------------------------------------------------------------------------

type Stream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;
type OpenHook = Box<dyn Fn(&EntryPath, PathBuf, Stream) -> Stream + Send + Sync>;

/// A directory source whose `open` streams pass through a hook (to change a file while it
/// is read, or fail a read).
struct HookedSource {
    inner: DirectorySource,
    hook: OpenHook,
}

impl std::fmt::Debug for HookedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HookedSource({:?})", self.inner)
    }
}

#[async_trait::async_trait]
impl BackupSource for HookedSource {
    fn capability(&self) -> SourceCapability {
        self.inner.capability()
    }
    async fn list(&self) -> Result<SourceListing, catena::Error> {
        self.inner.list().await
    }
    async fn open(&self, path: &EntryPath) -> Result<Stream, catena::Error> {
        let stream = self.inner.open(path).await?;
        Ok((self.hook)(
            path,
            self.inner.root().join(path.as_str()),
            stream,
        ))
    }
    async fn stat(&self, path: &EntryPath) -> Result<Option<SourceEntry>, catena::Error> {
        self.inner.stat(path).await
    }
}

/// Files grow by one line right after each is read the first time: the engine must see the
/// change and read the file again.
fn changing_source(root: &Path) -> HookedSource {
    use futures::StreamExt;
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    HookedSource {
        inner: DirectorySource::new(root),
        hook: Box::new(move |path, full, stream| {
            if !seen.lock().expect("lock").insert(path.to_string()) {
                return stream;
            }
            stream
                .chain(futures::stream::once(async move {
                    // Written after the content was read: a torn copy would miss this line.
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&full)
                        .expect("append");
                    std::io::Write::write_all(&mut f, b"\nwritten during the backup")
                        .expect("write");
                    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
                    f.set_modified(later).expect("mtime");
                    Ok(Bytes::new())
                }))
                .boxed()
        }),
    }
}

/// The file `b-broken` fails after its first chunk.
fn broken_source(root: &Path) -> HookedSource {
    use futures::StreamExt;
    HookedSource {
        inner: DirectorySource::new(root),
        hook: Box::new(|path, _, stream| {
            if path.as_str() != "b-broken" {
                return stream;
            }
            stream
                .take(1)
                .chain(futures::stream::once(async {
                    Err(std::io::Error::other("disk read error"))
                }))
                .boxed()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_read_is_read_again_never_stored_torn() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("live.db"), data(700_000, 4, true)).expect("write");
    // Small files are read in batches: one changed while read, between steady ones.
    for i in 0..20 {
        std::fs::write(src.join(format!("small-{i:02}")), data(9_000, i, true)).expect("write");
    }
    let steady = snapshot(&src);
    let source: Arc<dyn BackupSource> = Arc::new(HookedSource {
        inner: DirectorySource::new(&src),
        hook: {
            let changing = changing_source(&src);
            Box::new(move |path, full, stream| {
                if path.as_str() == "live.db" || path.as_str() == "small-07" {
                    (changing.hook)(path, full, stream)
                } else {
                    stream
                }
            })
        },
    });
    let report = backup(
        repo,
        vec![(db("live"), source)],
        &options(auto()),
        &progress(),
    )
    .await
    .expect("run");
    assert!(report.succeeded(), "{:?}", report.run.databases);
    let into = work.path().join("restored");
    restore_to(repo, "live", RestoreTarget::Latest, &into).await;
    for name in ["live.db", "small-07"] {
        // Not assert_eq: its message would print every byte.
        assert!(
            std::fs::read(into.join(name)).expect("read")
                == std::fs::read(src.join(name)).expect("read"),
            "{name}: the restored file is the complete, final version"
        );
        assert_ne!(
            steady.get(name).map(|s| &s.1),
            snapshot(&src).get(name).map(|s| &s.1),
            "{name} changed during the backup"
        );
    }
    assert_same("changing", &snapshot(&src), &snapshot(&into));
}

/// A small file, read in a batch with others, that fails while read fails its database as a
/// large one does: nothing committed, the error names the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_that_fails_while_read_fails_the_database() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("a-good"), data(5_000, 1, true)).expect("write");
    std::fs::write(src.join("b-broken"), data(5_000, 2, true)).expect("write");
    std::fs::write(src.join("c-good"), data(5_000, 3, true)).expect("write");
    let source: Arc<dyn BackupSource> = Arc::new(broken_source(&src));
    let report = backup(
        repo,
        vec![(db("smallfail"), source)],
        &options(auto()),
        &progress(),
    )
    .await
    .expect("run");
    assert!(!report.succeeded());
    let outcome = &report.run.databases[0];
    let error = outcome.error.as_deref().unwrap_or("");
    assert!(
        error.contains("b-broken") && error.contains("disk read error"),
        "{outcome:?}"
    );
    let view = repo.catalog(&db("smallfail")).await.expect("catalog");
    assert!(view.catalog.is_empty() && view.objects.is_empty());
}

/// A directory source whose listing names one path twice (a bug a library user's source
/// could have).
#[derive(Debug)]
struct DoubledSource {
    inner: DirectorySource,
    twice: String,
}

#[async_trait::async_trait]
impl BackupSource for DoubledSource {
    fn capability(&self) -> SourceCapability {
        self.inner.capability()
    }
    async fn list(&self) -> Result<SourceListing, catena::Error> {
        let mut listing = self.inner.list().await?;
        let again = listing
            .entries
            .iter()
            .find(|e| e.path.as_str() == self.twice)
            .cloned()
            .expect("the doubled path is listed");
        listing.entries.push(again);
        Ok(listing)
    }
    async fn open(&self, path: &EntryPath) -> Result<Stream, catena::Error> {
        self.inner.open(path).await
    }
    async fn stat(&self, path: &EntryPath) -> Result<Option<SourceEntry>, catena::Error> {
        self.inner.stat(path).await
    }
}

/// A listing that names a path twice is refused, not resolved by a guess: the database
/// fails with an error naming the path, whether the parent has the path (found while the
/// walk compares entries with the parent's) or not (found when the change set is sorted,
/// after the data object was written), and nothing is committed or left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_lists_a_path_twice_is_refused() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("old"), data(5_000, 1, true)).expect("write");
    std::fs::write(src.join("large"), data(700_000, 2, true)).expect("write");
    assert!(backup_dir(repo, "twice", &src, auto()).await.succeeded());
    let before = repo.catalog(&db("twice")).await.expect("catalog");
    std::fs::write(src.join("new"), data(5_000, 3, true)).expect("write");
    for twice in ["old", "new"] {
        let source: Arc<dyn BackupSource> = Arc::new(DoubledSource {
            inner: DirectorySource::new(&src),
            twice: twice.to_owned(),
        });
        let report = backup(
            repo,
            vec![(db("twice"), source)],
            &options(auto()),
            &progress(),
        )
        .await
        .expect("run");
        assert!(!report.succeeded(), "{twice}: {:?}", report.run.databases);
        let error = report.run.databases[0].error.as_deref().unwrap_or("");
        assert!(
            error.contains(twice) && error.contains("listed this path twice"),
            "{twice}: {error}"
        );
        let after = repo.catalog(&db("twice")).await.expect("catalog");
        assert_eq!(
            after.objects.keys().collect::<Vec<_>>(),
            before.objects.keys().collect::<Vec<_>>(),
            "{twice}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_skipped_with_a_warning() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("regular"), b"data").expect("write");
    let status = std::process::Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let report = backup_dir(repo, "special", &src, auto()).await;
    assert!(report.succeeded());
    let warnings = &report.run.databases[0].warnings;
    assert!(warnings.iter().any(|w| w.contains("pipe")), "{warnings:?}");
    let into = work.path().join("restored");
    restore_to(repo, "special", RestoreTarget::Latest, &into).await;
    assert!(into.join("regular").exists() && !into.join("pipe").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_failed_keeps_the_pieces_under_failed_and_commits_nothing() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("a-good"), data(6 << 20, 1, true)).expect("write");
    std::fs::write(src.join("b-broken"), data(3 << 20, 2, true)).expect("write");
    for keep in [false, true] {
        let name = if keep { "keep" } else { "drop" };
        let source: Arc<dyn BackupSource> = Arc::new(broken_source(&src));
        let mut opts = options(auto());
        opts.keep_failed = keep;
        let report = backup(repo, vec![(db(name), source)], &opts, &progress())
            .await
            .expect("run");
        assert!(!report.succeeded());
        let outcome = &report.run.databases[0];
        assert!(
            outcome
                .error
                .as_deref()
                .unwrap_or("")
                .contains("disk read error"),
            "{outcome:?}"
        );
        let view = repo.catalog(&db(name)).await.expect("catalog");
        assert!(
            view.catalog.is_empty() && view.objects.is_empty(),
            "nothing committed or left under {name}/"
        );
        let failed: Vec<_> = keys(repo)
            .await
            .into_iter()
            .filter(|k| k.starts_with(&format!("_failed/{name}/")))
            .collect();
        if keep {
            assert!(
                failed.iter().any(|k| k.ends_with(".data"))
                    && failed.iter().any(|k| k.ends_with(".error.json")),
                "{failed:?}"
            );
            assert!(outcome.kept_failed.is_some());
        } else {
            assert!(failed.is_empty(), "{failed:?}");
        }
    }
}

/// Records the progress events it is given.
#[derive(Default)]
pub(crate) struct Recorder(pub(crate) std::sync::Mutex<Vec<ProgressEvent>>);

impl Progress for Recorder {
    fn event(&self, event: ProgressEvent) {
        self.0.lock().expect("lock").push(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_bytes_and_commits() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), data(3 << 20, 1, true)).expect("write");
    let recorder = Arc::new(Recorder::default());
    let p: Arc<dyn Progress> = recorder.clone();
    let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(&src));
    backup(repo, vec![(db("prog"), source)], &options(auto()), &p)
        .await
        .expect("run");
    let events = recorder.0.lock().expect("lock").clone();
    let bytes: u64 = events
        .iter()
        .map(|e| match e {
            ProgressEvent::Bytes { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(bytes, 3 << 20);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::Committed { .. }))
    );
    assert!(matches!(
        events.first(),
        Some(ProgressEvent::DatabaseStarted { .. })
    ));
    assert!(matches!(
        events.last(),
        Some(ProgressEvent::DatabaseFinished { ok: true, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_with_one_directory_per_database_backs_up_each() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("databases");
    for name in ["neo4j", "system"] {
        std::fs::create_dir_all(root.join(name)).expect("mkdir");
        std::fs::write(root.join(name).join("store"), name.as_bytes()).expect("write");
    }
    std::fs::create_dir_all(root.join(".hidden")).expect("mkdir");
    std::fs::write(root.join("not-a-dir"), b"x").expect("write");
    let sources: Vec<(DatabaseName, Arc<dyn BackupSource>)> = DirectorySource::databases(&root)
        .expect("databases")
        .into_iter()
        .map(|(n, s)| (n, Arc::new(s) as Arc<dyn BackupSource>))
        .collect();
    let names: Vec<String> = sources.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["neo4j", "system"]);
    let report = backup(repo, sources, &options(auto()), &progress())
        .await
        .expect("run");
    assert!(report.succeeded());
    assert_eq!(
        repo.databases().await.expect("list"),
        vec![db("neo4j"), db("system")]
    );
    for name in ["neo4j", "system"] {
        let into = work.path().join(format!("restored-{name}"));
        restore_to(repo, name, RestoreTarget::Latest, &into).await;
        assert_eq!(
            std::fs::read(into.join("store")).expect("read"),
            name.as_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_with_keep_old_backup_deletes_nothing() {
    let rs = repos().await;
    let repo = &rs[0].repo;
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"v1").expect("write");
    committed(&backup_dir(repo, "keepold", &src, auto()).await);
    std::fs::write(src.join("f"), b"v2").expect("write");
    committed(&backup_dir(repo, "keepold", &src, auto()).await);
    let before = keys(repo).await;
    let options = AggregateOptions {
        keep_old_backup: true,
        ..AggregateOptions::default()
    };
    let reports = aggregate_matching(repo, "keepold", &options, &progress())
        .await
        .expect("aggregate");
    assert!(reports[0].deleted.is_empty());
    let after = keys(repo).await;
    assert!(before.is_subset(&after));
    assert_eq!(
        after.len(),
        before.len() + 3,
        "one new FULL: data, index, manifest"
    );
    assert!(
        aggregate_matching(repo, "nomatch*", &options, &progress())
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------
// Interrupted work is finished or named.
// ---------------------------------------------------------------------------------------

/// A repository in a local directory.
pub(crate) async fn local_repo(root: &Path) -> Repository {
    Repository::new(
        StorageConfig::from_url(&format!("file://{}", root.display()))
            .expect("url")
            .build()
            .await
            .expect("local"),
    )
}

/// Copies every file under `from` into `to` (a local store's objects are plain files).
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else if !target.exists() {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// An aggregate stopped between its commit and its deletions (a SIGKILL, a lost pod)
/// leaves the new FULL and the old chain side by side. Its manifest says what it
/// supersedes, so the next aggregate, or expire, deletes the old chain as promised, and
/// the result restores byte-identically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_stopped_after_its_commit_is_finished_by_the_next_aggregate_or_expire() {
    for next in ["aggregate", "expire"] {
        let work = tempfile::tempdir().expect("tempdir");
        let root = work.path().join("repo");
        let repo = local_repo(&root).await;
        let src = work.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("store"), data(2 << 20, 3, true)).expect("write");
        let mut chain = vec![committed(&backup_dir(&repo, "neo4j", &src, auto()).await).0];
        for round in 0..2u64 {
            mutate(&src, round + 20);
            chain.push(committed(&backup_dir(&repo, "neo4j", &src, auto()).await).0);
        }
        let expected = snapshot(&src);
        // The repository as it is before the aggregate, kept aside.
        let before = work.path().join("before");
        std::fs::create_dir_all(&before).expect("mkdir");
        copy_tree(&root, &before);
        let report = aggregate(
            &repo,
            &db("neo4j"),
            &AggregateOptions::default(),
            &progress(),
        )
        .await
        .expect("aggregate");
        let full = report.artifact.clone().expect("a new FULL");
        assert_eq!(report.deleted.len(), 3);
        // As if it had been killed before deleting: the old chain is back beside the FULL.
        copy_tree(&before, &root);
        let view = repo.catalog(&db("neo4j")).await.expect("catalog");
        assert_eq!(
            view.catalog.artifacts().len(),
            4,
            "the old chain and the new FULL"
        );
        let m = view
            .catalog
            .get(&full.parse().expect("id"))
            .expect("the FULL");
        assert_eq!(m.supersedes, chain, "the FULL names the chain it replaces");

        let finished = match next {
            "aggregate" => {
                aggregate(
                    &repo,
                    &db("neo4j"),
                    &AggregateOptions::default(),
                    &progress(),
                )
                .await
                .expect("aggregate again")
                .finished_interrupted
            }
            _ => {
                let options = ExpireOptions::new(ExpirePolicy {
                    keep_last_chains: Some(5),
                    keep_within: None,
                });
                expire(&repo, &db("neo4j"), &options, &progress())
                    .await
                    .expect("expire")
                    .finished_interrupted
            }
        };
        let mut wanted: Vec<String> = chain.iter().map(ToString::to_string).collect();
        wanted.reverse();
        assert_eq!(
            finished, wanted,
            "{next}: the promised deletions, newest first"
        );
        let view = repo.catalog(&db("neo4j")).await.expect("catalog");
        let left: Vec<String> = view.catalog.artifacts().map(|m| m.id.to_string()).collect();
        assert_eq!(
            left,
            vec![full.clone()],
            "{next}: only the new FULL is left"
        );
        let into = work.path().join("restored");
        let restored = restore_to(&repo, "neo4j", RestoreTarget::Latest, &into).await;
        assert_eq!(restored.artifact, full);
        assert_same(next, &expected, &snapshot(&into));
    }
}

/// A restore stopped by SIGKILL leaves its staging directory beside the destination; the
/// next restore there removes it and says so. A destination set aside by a restore
/// stopped between its two renames is named, never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_removes_an_interrupted_restores_staging_and_names_a_set_aside_destination() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"data").expect("write");
    committed(&backup_dir(&repo, "neo4j", &src, auto()).await);
    let into = work.path().join("restores");
    let staging = into.join(".neo4j.catena-restore-0badf00d");
    std::fs::create_dir_all(staging.join("partial")).expect("mkdir");
    std::fs::write(staging.join("partial/f"), b"da").expect("write");
    let set_aside = into.join(".neo4j.catena-old-12345678");
    std::fs::create_dir_all(&set_aside).expect("mkdir");
    std::fs::write(set_aside.join("earlier"), b"kept").expect("write");
    let report = restore_to(&repo, "neo4j", RestoreTarget::Latest, &into.join("neo4j")).await;
    assert!(!staging.exists(), "the staging directory is removed");
    assert!(
        set_aside.join("earlier").exists(),
        "the set-aside destination is kept"
    );
    assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("catena-restore-0badf00d") && n.contains("removed")),
        "{:?}",
        report.notes
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("catena-old-12345678") && n.contains("move it back")),
        "{:?}",
        report.notes
    );
    assert_eq!(std::fs::read(into.join("neo4j/f")).expect("read"), b"data");
}

/// A DIFF reads only the files whose size, mtime, device, inode or ctime changed since the
/// parent; the others keep the parent's blocks unread. A write that puts the old mtime back
/// is still read (its ctime moved). `force_read` reads everything. A tree restored
/// elsewhere (new inodes) is read once, recorded, and then skipped again. Before, every DIFF
/// read every byte of every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_reads_only_files_that_changed() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    for i in 0..20u64 {
        std::fs::write(src.join(format!("d/f{i}")), data(64 << 10, i, true)).expect("write");
    }
    std::fs::write(src.join("big"), data(1 << 20, 99, true)).expect("write");
    let total = 20 * (64 << 10) + (1 << 20);
    let run = |options: BackupOptions, from: PathBuf| {
        let repo = &repo;
        async move {
            let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(from));
            let report = backup(repo, vec![(db("skip"), source)], &options, &progress())
                .await
                .expect("backup");
            committed(&report);
            report.run.databases[0].clone()
        }
    };
    let diff = || crate::options(BackupRequest::default());

    let full = run(diff(), src.clone()).await;
    assert_eq!((full.bytes_read, full.unchanged_bytes), (total, 0));

    let same = run(diff(), src.clone()).await;
    assert_eq!((same.bytes_read, same.unchanged_bytes), (0, total));
    assert!(same.empty, "nothing changed: an EMPTY DIFF");

    // One file rewritten: only it is read.
    std::fs::write(src.join("d/f3"), data(64 << 10, 1003, true)).expect("write");
    let one = run(diff(), src.clone()).await;
    assert_eq!(
        (one.bytes_read, one.unchanged_bytes),
        (64 << 10, total - (64 << 10))
    );

    // Same size, and the old mtime put back: the ctime still tells.
    let f7 = src.join("d/f7");
    let mtime =
        filetime::FileTime::from_last_modification_time(&std::fs::metadata(&f7).expect("stat"));
    let mut sneaky = std::fs::read(&f7).expect("read");
    sneaky[10] ^= 0xff;
    std::fs::write(&f7, &sneaky).expect("write");
    filetime::set_file_mtime(&f7, mtime).expect("mtime back");
    let kept = run(diff(), src.clone()).await;
    assert_eq!(
        kept.bytes_read,
        64 << 10,
        "read although size and mtime are the old ones"
    );

    let forced = run(
        BackupOptions {
            force_read: true,
            ..diff()
        },
        src.clone(),
    )
    .await;
    assert_eq!((forced.bytes_read, forced.unchanged_bytes), (total, 0));

    // Restored elsewhere: new inodes, so read once, then skipped again.
    let into = work.path().join("restored");
    restore(&repo, &db("skip"), &RestoreOptions::new(&into), &progress())
        .await
        .expect("restore");
    assert_eq!(std::fs::read(into.join("d/f7")).expect("read"), sneaky);
    let moved = run(diff(), into.clone()).await;
    assert_eq!(moved.bytes_read, total, "new inodes: every file read once");
    assert!(moved.stored_bytes < 64 << 10, "and no block stored again");
    let again = run(diff(), into.clone()).await;
    assert_eq!((again.bytes_read, again.unchanged_bytes), (0, total));
    let report = check(&repo, &db("skip"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(report.ok, "{report:?}");
}

/// The library's scheduler retries a failure that may pass, up to backoffLimit, and never
/// one that cannot (bad credentials, an untrusted certificate, a damaged repository).
#[tokio::test]
async fn the_scheduler_retries_what_may_pass_and_not_what_cannot() {
    use catena::schedule::{JobSchedule, RunOutcome, ScheduleOptions, schedule};
    let repo = Repository::new(
        StorageConfig::from_url("memory://")
            .expect("url")
            .build()
            .await
            .expect("memory"),
    );
    let mut when = JobSchedule::new("").expect("every minute");
    when.backoff_limit = 3;
    let options = ScheduleOptions {
        max_runs: Some(1),
        first_retry_delay: std::time::Duration::from_millis(1),
        ..ScheduleOptions::default()
    };
    let passing = || RunOutcome::Failed {
        error: "503 Service Unavailable".into(),
        permanent: false,
    };

    let mut calls = 0;
    let report = schedule(&repo, &when, &options, async || {
        calls += 1;
        if calls < 3 {
            passing()
        } else {
            RunOutcome::Succeeded
        }
    })
    .await
    .expect("runs");
    assert_eq!((calls, report.retries, report.succeeded), (3, 2, 1));

    let mut calls = 0;
    let report = schedule(&repo, &when, &options, async || {
        calls += 1;
        RunOutcome::Failed {
            error: "the server's TLS certificate is not trusted".into(),
            permanent: true,
        }
    })
    .await
    .expect("runs");
    assert_eq!(
        (calls, report.retries, report.failed),
        (1, 0, 1),
        "a permanent failure is not retried"
    );

    let mut calls = 0;
    let report = schedule(&repo, &when, &options, async || {
        calls += 1;
        passing()
    })
    .await
    .expect("runs");
    assert_eq!(
        (calls, report.retries, report.failed),
        (4, 3, 1),
        "backoffLimit"
    );

    // The history: one record per run, failed ones pruned to failedJobsHistoryLimit (1).
    let jobs = keys(&repo).await;
    let (ok, failed): (Vec<_>, Vec<_>) = jobs
        .iter()
        .filter(|k| k.starts_with("_jobs/"))
        .partition(|k| k.contains("-succeeded-"));
    assert_eq!((ok.len(), failed.len()), (1, 1), "{jobs:?}");

    let e = JobSchedule::new("every day at two").expect_err("not cron");
    assert!(
        e.to_string().contains("neo4j.jobSchedule") && e.is_permanent(),
        "{e}"
    );
}

/// A chain's indexes are decoded as they are read from the store, each on a thread of its
/// own: with a blocking pool of one thread (which a local directory's reads need), DIFFs
/// and a restore of a chain of three still finish. Decoders on the pool held its threads
/// while their reads waited for one, for ever: the timeout guards against that hang (it
/// measures nothing).
#[test]
fn indexes_are_read_with_a_blocking_pool_of_one_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let work = tempfile::tempdir().expect("tempdir");
        let src = work.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        let chain = async {
            let repo = local_repo(&work.path().join("repo")).await;
            for round in 0..3u64 {
                std::fs::write(src.join(format!("f{round}")), data(70_000, round, true))
                    .expect("write");
                assert!(backup_dir(&repo, "pool", &src, auto()).await.succeeded());
            }
            let into = work.path().join("restored");
            restore_to(&repo, "pool", RestoreTarget::Latest, &into).await;
            assert_same("pool", &snapshot(&src), &snapshot(&into));
        };
        tokio::time::timeout(std::time::Duration::from_secs(120), chain)
            .await
            .expect("the chain is read without a hang");
    });
}
