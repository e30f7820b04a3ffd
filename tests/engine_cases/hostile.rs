//! Damaged and hostile repositories: Catena does exactly what was asked, or refuses naming
//! the object and the next step; it never silently does something else. Every repository
//! here is damaged by test code.

use std::path::Path;

use bytes::Bytes;
use catena::chain_core::*;
use catena::*;
use object_store::ObjectStoreExt;
use object_store::path::Path as Key;
use storage_backends::layout;

use crate::common::data;
use crate::engine_cases::{committed, inspect_rows, local_repo, mutate};
use crate::*;

/// Reads `id`'s manifest, changes it with `change`, and writes it back sealed (as a buggy
/// or hostile writer with access to the bucket could).
async fn rewrite_manifest(repo: &Repository, id: &ArtifactId, change: impl FnOnce(&mut Manifest)) {
    let key = layout::manifest_key(id);
    let bytes = object_bytes(repo, &key).await;
    let mut m = Manifest::from_json(&bytes).expect("manifest");
    change(&mut m);
    repo.store().delete(&key).await.expect("delete");
    repo.store()
        .put(&key, Bytes::from(m.to_json()).into())
        .await
        .expect("put");
}

/// Replaces `id`'s index with `index`, encoded as its manifest says, and pins the new
/// object in the manifest (size, SHA-256, stored bytes), as a hostile writer can.
async fn replace_index(repo: &Repository, id: &ArtifactId, index: &Index) {
    let manifest = Manifest::from_json(&object_bytes(repo, &layout::manifest_key(id)).await)
        .expect("manifest");
    let encoded = index.encode(manifest.compression, None).expect("encode");
    let (size, digest) = (encoded.len() as u64, Sha256Digest::of(&encoded));
    overwrite(repo, &layout::index_key(id), encoded).await;
    rewrite_manifest(repo, id, |m| {
        let o = m
            .objects
            .iter_mut()
            .find(|o| o.role == ObjectRole::Index)
            .expect("an index");
        let old = std::mem::replace(&mut o.size, size);
        o.sha256 = Some(digest);
        m.sizes.stored_bytes = m.sizes.stored_bytes - old + size;
    })
    .await;
}

/// The bytes of the object at `key`.
pub(crate) async fn object_bytes(repo: &Repository, key: &Key) -> Bytes {
    repo.store()
        .get(key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
}

/// Overwrites an object's bytes with `bytes`.
pub(crate) async fn overwrite(repo: &Repository, key: &Key, bytes: Vec<u8>) {
    repo.store().delete(key).await.expect("delete");
    repo.store()
        .put(key, Bytes::from(bytes).into())
        .await
        .expect("put");
}

/// A FULL and two DIFFs of `neo4j`, the ids oldest first.
async fn chain_of_three(repo: &Repository, work: &Path) -> Vec<ArtifactId> {
    let src = work.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("store"), data(1 << 20, 5, true)).expect("write");
    let mut ids =
        vec![committed(&backup_dir(repo, "neo4j", &src, BackupRequest::default()).await).0];
    for round in 0..2u64 {
        mutate(&src, round + 30);
        ids.push(committed(&backup_dir(repo, "neo4j", &src, BackupRequest::default()).await).0);
    }
    ids
}

/// Restore of "the latest" when the newest backup is unusable fails, naming it, why, and
/// the `--restore-until` that restores the newest usable point on purpose; before, each of
/// these restored an older state and succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_of_the_latest_refuses_an_unusable_newest_backup() {
    let cases: [(&str, &str); 5] = [
        ("unreadable manifest", "cannot be read"),
        ("missing parent", "is missing"),
        ("parent loop", "cycle"),
        ("self parent", "cycle"),
        ("broken position range", "starts at position"),
    ];
    for (case, why) in cases {
        let work = tempfile::tempdir().expect("tempdir");
        let repo = local_repo(&work.path().join("repo")).await;
        let ids = chain_of_three(&repo, work.path()).await;
        let (full, d1, d2) = (&ids[0], &ids[1], &ids[2]);
        match case {
            "unreadable manifest" => {
                let key = layout::manifest_key(d2);
                let mut bytes = object_bytes(&repo, &key).await.to_vec();
                bytes[40] ^= 0x20;
                overwrite(&repo, &key, bytes).await;
            }
            "missing parent" => {
                repo.store()
                    .delete(&layout::manifest_key(d1))
                    .await
                    .expect("delete");
            }
            "parent loop" => {
                let (a, b) = (d1.clone(), d2.clone());
                rewrite_manifest(&repo, d1, |m| {
                    m.parent = Some(b.clone());
                    m.decision.parent = Some(b);
                })
                .await;
                rewrite_manifest(&repo, d2, |m| {
                    m.parent = Some(a.clone());
                    m.decision.parent = Some(a);
                })
                .await;
            }
            "self parent" => {
                let me = d2.clone();
                rewrite_manifest(&repo, d2, |m| {
                    m.parent = Some(me.clone());
                    m.decision.parent = Some(me);
                })
                .await;
            }
            _ => {
                rewrite_manifest(&repo, d2, |m| {
                    m.positions.from = Position(m.positions.from.0 + 7);
                    m.positions.to = Position(m.positions.to.0 + 7);
                    m.decision.positions = m.positions;
                })
                .await;
            }
        }
        let into = work.path().join("restored");
        let err = restore(
            &repo,
            &db("neo4j"),
            &RestoreOptions::new(&into),
            &progress(),
        )
        .await
        .expect_err(case)
        .to_string();
        assert!(err.contains(why), "{case}: {err}");
        assert!(!into.exists(), "{case}: nothing restored");
        // What the message suggests restores the newest usable point: a position bound,
        // or (where an unreadable manifest leaves positions unknown) the artifact itself.
        let word = |flag: &str| {
            err.split(flag)
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .map(|w| w.trim_end_matches([')', ',', ';']).to_owned())
        };
        let target = match (word("--restore-until "), word("--artifact ")) {
            (Some(p), _) => RestoreTarget::UntilPosition(Position(p.parse().expect("position"))),
            (None, Some(a)) => RestoreTarget::Artifact(a.parse().expect("id")),
            _ => panic!("{case}: the message does not say how: {err}"),
        };
        let report = restore(
            &repo,
            &db("neo4j"),
            &RestoreOptions {
                target,
                ..RestoreOptions::new(&into)
            },
            &progress(),
        )
        .await
        .unwrap_or_else(|e| panic!("{case}: the suggested bound: {e}"));
        let usable = if case == "missing parent" || case == "parent loop" {
            full
        } else {
            d1
        };
        assert_eq!(&report.artifact, &usable.to_string(), "{case}");
    }
}

/// An artifact whose manifest exists but cannot be read is not "no earlier backup": AUTO
/// takes a FULL saying `full_fallback_parent_unusable` with the artifact and why, DIFF
/// without fallback fails, positions continue after what the damaged bytes still show,
/// and inspect lists it as damaged. With nothing readable at all, the next backup refuses
/// rather than reuse a position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_decisions_see_damaged_manifests() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"one").expect("write");
    let (full, _) = committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    for _ in 0..2 {
        std::fs::write(src.join("f"), rand::random::<[u8; 8]>()).expect("write");
        committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    }
    // Damage every manifest but keep its JSON readable: a flipped letter in a string.
    let view = repo.catalog(&db("neo4j")).await.expect("catalog");
    let highest = view.catalog.max_position();
    for m in view.catalog.artifacts() {
        let key = layout::manifest_key(&m.id);
        let text = String::from_utf8(object_bytes(&repo, &key).await.to_vec()).expect("utf8");
        overwrite(
            &repo,
            &key,
            text.replacen("\"zstd\"", "\"zsTd\"", 1).into_bytes(),
        )
        .await;
    }
    let rows = inspect_rows(&repo, &[db("neo4j")], InspectScope::All, true)
        .await
        .expect("inspect");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| !r.usable
            && r.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("DAMAGED"))),
        "{rows:?}"
    );

    let no_fallback = BackupRequest {
        fallback_to_full: false,
        ..BackupRequest::default()
    };
    let report = backup_dir(&repo, "neo4j", &src, no_fallback).await;
    let error = report.run.databases[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("none of its 3 earlier backups is usable"),
        "{error}"
    );

    let report = backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await;
    let (id, decision) = committed(&report);
    assert_eq!(decision.reason, ReasonCode::FullFallbackParentUnusable);
    assert_eq!(decision.skipped.len(), 3);
    assert!(
        decision
            .skipped
            .iter()
            .all(|s| s.why.contains("cannot be read")),
        "{decision:?}"
    );
    assert!(
        decision.positions.to > highest,
        "positions are never reused: {decision:?}"
    );
    assert_ne!(id, full);

    // A manifest with nothing left to read: the highest position is unknown.
    overwrite(&repo, &layout::manifest_key(&id), b"\x00garbage".to_vec()).await;
    let report = backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await;
    let error = report.run.databases[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("highest position used is unknown") && error.contains(&id.to_string()),
        "{error}"
    );
}

/// A chain that `check` found damaged (its report is in the bucket) is not used as a DIFF
/// parent by the next backup without saying so, and inspect marks it; once the object is
/// repaired and a check passes, it is a parent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_check_found_damaged_is_not_a_silent_parent() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("store"), data(1 << 20, 8, true)).expect("write");
    let (full, _) = committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    let key = layout::data_key(&full);
    let good = object_bytes(&repo, &key).await.to_vec();
    let mut bad = good.clone();
    bad[100] ^= 1;
    overwrite(&repo, &key, bad).await;
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(!report.ok);

    let rows = inspect_rows(&repo, &[db("neo4j")], InspectScope::All, false)
        .await
        .expect("inspect");
    assert!(!rows[0].usable, "{rows:?}");
    assert!(
        rows[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("check report")),
        "{rows:?}"
    );
    mutate(&src, 40);
    let (_, decision) =
        committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    assert_eq!(
        decision.reason,
        ReasonCode::FullFallbackParentUnusable,
        "{decision:?}"
    );
    assert!(
        decision
            .skipped
            .iter()
            .any(|s| s.artifact == full && s.why.contains("check report")),
        "{decision:?}"
    );

    // Repaired, checked again: a parent again.
    overwrite(&repo, &key, good).await;
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(report.ok, "{report:?}");
    mutate(&src, 41);
    let (_, decision) =
        committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    assert_eq!(decision.reason, ReasonCode::DiffFromNewest, "{decision:?}");
}

/// A manifest names its own objects only. Two manifests that list the same data object:
/// the hostile (older) one is invalid, so it is never restored or used, and expiring it
/// deletes only keys derived from its own id: the newest backup's data stays and restores.
/// Before, expire deleted the objects the old manifest listed: the live backup's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_cannot_get_another_artifacts_objects_deleted() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("old"), data(300_000, 1, true)).expect("write");
    let full_request = BackupRequest {
        backup_type: BackupType::Full,
        ..BackupRequest::default()
    };
    let (old, _) = committed(&backup_dir(&repo, "neo4j", &src, full_request).await);
    std::fs::write(src.join("new"), data(300_000, 2, true)).expect("write");
    let (new, _) = committed(&backup_dir(&repo, "neo4j", &src, full_request).await);
    let expected = snapshot(&src);
    // The old manifest now lists the new artifact's data object (with its size and hash).
    let view = repo.catalog(&db("neo4j")).await.expect("catalog");
    let theirs = view
        .catalog
        .get(&new)
        .expect("new")
        .objects
        .iter()
        .find(|o| o.role == ObjectRole::Data)
        .expect("data")
        .clone();
    rewrite_manifest(&repo, &old, |m| {
        for o in &mut m.objects {
            if o.role == ObjectRole::Data {
                *o = theirs.clone();
            }
        }
        m.sizes.stored_bytes = m.objects.iter().map(|o| o.size).sum();
    })
    .await;
    // It does not open (it names an object that is not its own), so it is damaged: never
    // restored, never a parent, listed as such; deleters refuse while it is there.
    let view = repo.catalog(&db("neo4j")).await.expect("catalog");
    assert!(
        view.unreadable
            .iter()
            .any(|u| u.key.contains(&old.to_string()) && u.why.contains("not its own")),
        "{:?}",
        view.unreadable
    );
    let options = ExpireOptions::new(ExpirePolicy {
        keep_last_chains: Some(1),
        keep_within: None,
    });
    let err = expire(&repo, &db("neo4j"), &options, &progress())
        .await
        .expect_err("expire refuses while a manifest is damaged")
        .to_string();
    assert!(err.contains(&old.to_string()), "{err}");
    // And a deleter given that manifest deletes the keys of its own id only.
    let key = layout::manifest_key(&old);
    let text = String::from_utf8(object_bytes(&repo, &key).await.to_vec()).expect("utf8");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    value.as_object_mut().expect("object").remove("sha256");
    let hostile: Manifest =
        serde_json::from_value(value).expect("the hostile manifest, decoded without checks");
    assert_eq!(
        hostile
            .objects
            .iter()
            .filter(|o| o.key == theirs.key)
            .count(),
        1
    );
    repo.delete_artifact(&hostile).await.expect("delete");
    assert!(
        repo.store()
            .head(&Key::from(theirs.key.as_str()))
            .await
            .is_ok(),
        "the newest backup's data object was deleted"
    );
    let into = work.path().join("restored");
    let r = restore(
        &repo,
        &db("neo4j"),
        &RestoreOptions::new(&into),
        &progress(),
    )
    .await
    .expect("restore");
    assert_eq!(r.artifact, new.to_string());
    assert_same("the newest backup", &expected, &snapshot(&into));
}

/// An object missing, or of another size than its manifest says, makes the artifact
/// unusable when the catalog is read, naming the object: restore of the latest refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_missing_or_of_another_size_make_their_artifact_unusable() {
    for damage in ["truncated", "missing"] {
        let work = tempfile::tempdir().expect("tempdir");
        let repo = local_repo(&work.path().join("repo")).await;
        let ids = chain_of_three(&repo, work.path()).await;
        let key = layout::index_key(&ids[2]);
        if damage == "missing" {
            repo.store().delete(&key).await.expect("delete");
        } else {
            let bytes = object_bytes(&repo, &key).await;
            overwrite(&repo, &key, bytes[..bytes.len() - 1].to_vec()).await;
        }
        let err = restore(
            &repo,
            &db("neo4j"),
            &RestoreOptions::new(work.path().join("restored")),
            &progress(),
        )
        .await
        .expect_err(damage)
        .to_string();
        assert!(
            err.contains(key.as_ref()) && err.contains(&ids[2].to_string()),
            "{damage}: {err}"
        );
        assert!(err.contains("--restore-until"), "{damage}: {err}");
    }
}

/// Every reason restore can refuse a chain is a reason check reports it not OK: one
/// validation of a chain's state serves both. Before, a symlink with entries below it and
/// block lengths out of bounds passed check and were then refused by restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_chain_restore_refuses() {
    use crate::engine_cases::commit_crafted;
    let dir_entry = |path: &str| Entry {
        stamp: None,
        path: EntryPath::new(path).expect("path"),
        kind: EntryKind::Directory,
        meta: Metadata {
            mode: 0o755,
            ..Metadata::default()
        },
    };
    let file_entry = |path: &str, len: u32| Entry {
        stamp: None,
        path: EntryPath::new(path).expect("path"),
        kind: EntryKind::File {
            size: u64::from(len),
            blocks: vec![BlockRef {
                digest: Sha256Digest::of(b"somewhere else"),
                len,
            }],
        },
        meta: Metadata {
            mode: 0o644,
            ..Metadata::default()
        },
    };
    let crafted = |entries: Vec<Entry>| {
        let state = State::from_entries(entries);
        let index = Index {
            changes: ChangeSet::full(&state),
            blocks: vec![],
        };
        (serde_json::to_vec(&index).expect("json"), state.digest())
    };
    let cases: Vec<&str> = vec![
        "an entry below a symbolic link",
        "a block longer than a block can be",
        "a block stored nowhere",
        "a state digest that differs",
        "an entry path that escapes",
        "a hard link to a file not in the state",
        "a hard link to a directory",
        "a missing parent",
        "an unreadable manifest",
        "a missing object",
        "a corrupt block",
    ];
    for case in cases {
        let work = tempfile::tempdir().expect("tempdir");
        let repo = local_repo(&work.path().join("repo")).await;
        match case {
            "an entry below a symbolic link" => {
                let (body, digest) = crafted(vec![
                    Entry {
                        stamp: None,
                        path: EntryPath::new("link").expect("path"),
                        kind: EntryKind::Symlink {
                            target: "/tmp".into(),
                        },
                        meta: Metadata::default(),
                    },
                    dir_entry("link/below"),
                ]);
                commit_crafted(&repo, "neo4j", body, digest).await;
            }
            "a block longer than a block can be" => {
                let (body, digest) = crafted(vec![file_entry("big", MAX_BLOCK_SIZE + 1)]);
                commit_crafted(&repo, "neo4j", body, digest).await;
            }
            "a block stored nowhere" => {
                let (body, digest) = crafted(vec![file_entry("f", 14)]);
                commit_crafted(&repo, "neo4j", body, digest).await;
            }
            "a hard link to a file not in the state" | "a hard link to a directory" => {
                let (body, digest) = crafted(vec![
                    dir_entry("d"),
                    Entry {
                        stamp: None,
                        path: EntryPath::new("link").expect("path"),
                        kind: EntryKind::HardLink {
                            target: EntryPath::new(if case.ends_with("directory") {
                                "d"
                            } else {
                                "gone"
                            })
                            .expect("path"),
                        },
                        meta: Metadata::default(),
                    },
                ]);
                commit_crafted(&repo, "neo4j", body, digest).await;
            }
            "a state digest that differs" => {
                let (body, _) = crafted(vec![dir_entry("d")]);
                commit_crafted(&repo, "neo4j", body, Sha256Digest::of(b"another")).await;
            }
            "an entry path that escapes" => {
                let body = br#"{"changes":{"added":[{"path":"../x","kind":{"type":"directory"},"meta":{"mode":493,"mtime_ns":0}}],"changed":[],"removed":[]},"blocks":[]}"#;
                commit_crafted(&repo, "neo4j", body.to_vec(), Sha256Digest::of(b"x")).await;
            }
            _ => {
                let ids = chain_of_three(&repo, work.path()).await;
                match case {
                    "a missing parent" => {
                        repo.store()
                            .delete(&layout::manifest_key(&ids[1]))
                            .await
                            .expect("delete");
                    }
                    "an unreadable manifest" => {
                        overwrite(&repo, &layout::manifest_key(&ids[2]), b"{".to_vec()).await;
                    }
                    "a missing object" => {
                        repo.store()
                            .delete(&layout::data_key(&ids[0]))
                            .await
                            .expect("delete");
                    }
                    _ => {
                        let key = layout::data_key(&ids[0]);
                        let mut bytes = object_bytes(&repo, &key).await.to_vec();
                        bytes[200] ^= 0x40;
                        overwrite(&repo, &key, bytes).await;
                    }
                }
            }
        }
        let into = work.path().join("restored");
        let refused = restore(
            &repo,
            &db("neo4j"),
            &RestoreOptions::new(&into),
            &progress(),
        )
        .await
        .expect_err(case)
        .to_string();
        let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
            .await
            .expect("check runs");
        assert!(
            !report.ok,
            "{case}: restore refuses ({refused}) but check passes: {report:?}"
        );
    }
}

/// Everything Catena writes outside the artifacts is sealed, and a damaged record under
/// any of its prefixes is reported by check with its key, never trusted: run records,
/// check reports, lock records, job records, failed-run notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_damaged_record_under_every_prefix() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"data").expect("write");
    committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(report.ok, "{report:?}");
    repo.lock(&db("neo4j"), "test")
        .await
        .expect("lock")
        .release()
        .await;
    for (key, value) in [
        (
            "_jobs/20261202T000000.000000Z-succeeded-00000001.json",
            serde_json::json!({"status": "succeeded"}),
        ),
        (
            "_failed/neo4j/neo4j-20261202T000000.000000Z-0000000000000001.error.json",
            serde_json::json!({"error": "x"}),
        ),
    ] {
        repo.store()
            .put(
                &Key::from(key),
                Bytes::from(chain_core::sealed::seal(&value)).into(),
            )
            .await
            .expect("put");
    }
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(report.ok, "every record verifies: {report:?}");

    let mut keys = Vec::new();
    for prefix in [
        "_runs/",
        "_reports/check-neo4j-",
        "_locks/neo4j/",
        "_jobs/",
        "_failed/neo4j/",
    ] {
        let all: Vec<String> = {
            use futures::TryStreamExt;
            repo.store()
                .list(None)
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .expect("list")
        };
        let key = all
            .into_iter()
            .find(|k| k.starts_with(prefix) && k.ends_with(".json"))
            .unwrap_or_else(|| panic!("no record under {prefix}"));
        let path = Key::from(key.as_str());
        let mut bytes = object_bytes(&repo, &path).await.to_vec();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x01;
        overwrite(&repo, &path, bytes).await;
        keys.push(key);
    }
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(!report.ok);
    for key in &keys {
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.key.as_deref() == Some(key.as_str())),
            "{key} not reported: {:?}",
            report.problems
        );
    }
}

/// A file name that is not UTF-8 is refused alone: the backup commits everything else,
/// names the path, and reports the database failed (before, the whole database failed
/// without naming it). Symbolic links come back with their own modification time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_name_is_refused_alone_and_links_keep_their_times() {
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("good"), b"kept").expect("write");
    let bad = src.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    std::fs::write(&bad, b"not kept").expect("write");
    std::os::unix::fs::symlink("good", src.join("link")).expect("symlink");
    let old = filetime::FileTime::from_unix_time(1_600_000_000, 123_000_000);
    filetime::set_symlink_file_times(src.join("link"), old, old).expect("link time");
    let report = backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await;
    assert!(!report.succeeded(), "the run is marked failed");
    let outcome = &report.run.databases[0];
    let error = outcome.error.clone().unwrap_or_default();
    assert!(
        error.contains("not UTF-8") && error.contains("bad"),
        "{error}"
    );
    let id = outcome.artifact.clone().expect("the rest is committed");
    let into = work.path().join("restored");
    let r = restore(
        &repo,
        &db("neo4j"),
        &RestoreOptions::new(&into),
        &progress(),
    )
    .await
    .expect("restore");
    assert_eq!(r.artifact, id);
    assert_eq!(std::fs::read(into.join("good")).expect("read"), b"kept");
    assert_eq!(
        std::fs::read_link(into.join("link")).expect("link"),
        Path::new("good")
    );
    let md = std::fs::symlink_metadata(into.join("link")).expect("lstat");
    assert_eq!(
        filetime::FileTime::from_last_modification_time(&md),
        old,
        "the link's own mtime"
    );
}

/// The file tree comes back as it was: a file with three names comes back as one inode with
/// three names (read and stored once); the database root's own mode and mtime come back.
/// Changed through one name, all names show it after the DIFF; with the first name gone,
/// the next one carries the file; an aggregated FULL keeps the links. Before, every name
/// came back as a separate copy and the root directory as the restore created it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_and_the_root_directory_come_back_as_they_were() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    std::fs::create_dir_all(src.join("b")).expect("mkdir");
    let content = data(3 << 20, 7, true);
    std::fs::write(src.join("a/store.db"), &content).expect("write");
    std::fs::hard_link(src.join("a/store.db"), src.join("b/again.db")).expect("link");
    std::fs::hard_link(src.join("a/store.db"), src.join("third")).expect("link");
    std::fs::write(src.join("alone"), b"one name").expect("write");
    let root_time = filetime::FileTime::from_unix_time(1_650_000_000, 5_000);
    let set_root = |mode: u32| {
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).expect("chmod");
        filetime::set_file_mtime(&src, root_time).expect("root time");
    };
    set_root(0o750);

    let restored = |name: &str| work.path().join(name);
    let restore_latest = |into: std::path::PathBuf| {
        let repo = &repo;
        async move {
            restore(repo, &db("neo4j"), &RestoreOptions::new(&into), &progress())
                .await
                .expect("restore")
        }
    };
    let ino = |p: std::path::PathBuf| std::fs::metadata(p).expect("stat").ino();

    let report = backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await;
    committed(&report);
    assert_eq!(
        report.run.databases[0].bytes_read,
        content.len() as u64 + 8,
        "each file is read once, whatever its number of names"
    );
    let r = restore_latest(restored("full")).await;
    let into = restored("full");
    let first = ino(into.join("a/store.db"));
    assert_eq!(ino(into.join("b/again.db")), first);
    assert_eq!(ino(into.join("third")), first);
    assert_ne!(ino(into.join("alone")), first);
    assert_eq!(
        std::fs::metadata(into.join("third")).expect("stat").nlink(),
        3
    );
    assert_eq!(
        std::fs::read(into.join("b/again.db")).expect("read"),
        content
    );
    let root = std::fs::metadata(&into).expect("stat root");
    assert_eq!(root.permissions().mode() & 0o7777, 0o750, "the root's mode");
    assert_eq!(
        filetime::FileTime::from_last_modification_time(&root),
        root_time,
        "the root's mtime"
    );
    assert_eq!(r.files, 2, "two files written, the other names linked");

    // Changed through one name: every name shows it.
    let mut changed = content.clone();
    changed[100] ^= 0xff;
    std::fs::write(src.join("third"), &changed).expect("write");
    set_root(0o700);
    let report = backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await;
    committed(&report);
    let into = restored("diff");
    restore_latest(into.clone()).await;
    assert_eq!(
        std::fs::read(into.join("a/store.db")).expect("read"),
        changed
    );
    assert_eq!(ino(into.join("b/again.db")), ino(into.join("a/store.db")));
    assert_eq!(
        std::fs::metadata(&into).expect("stat").permissions().mode() & 0o7777,
        0o700
    );

    // The first name removed: the next one in order carries the file.
    std::fs::remove_file(src.join("a/store.db")).expect("rm");
    set_root(0o700);
    committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    let into = restored("removed");
    restore_latest(into.clone()).await;
    assert!(!into.join("a/store.db").exists());
    assert_eq!(std::fs::read(into.join("third")).expect("read"), changed);
    assert_eq!(ino(into.join("b/again.db")), ino(into.join("third")));

    // Aggregated into one FULL: the same tree.
    aggregate(
        &repo,
        &db("neo4j"),
        &AggregateOptions::default(),
        &progress(),
    )
    .await
    .expect("aggregate");
    let into = restored("aggregated");
    restore_latest(into.clone()).await;
    assert_eq!(ino(into.join("b/again.db")), ino(into.join("third")));
    assert_eq!(
        std::fs::read(into.join("b/again.db")).expect("read"),
        changed
    );
    let root = std::fs::metadata(&into).expect("stat root");
    assert_eq!(root.permissions().mode() & 0o7777, 0o700);
    assert_eq!(
        filetime::FileTime::from_last_modification_time(&root),
        root_time
    );
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check");
    assert!(report.ok, "{report:?}");
}

/// A data object of the chain that is gone: aggregate refuses, naming the object and
/// `catena check`, and leaves the repository as it was. Gone before aggregate starts, the
/// catalog finds it, whatever the way of copying; gone while the store copies (deleted by
/// another writer), on every backend with a server copy, the error names it too, and `auto`
/// does not try again through the client (the object is as gone for it). Before, the copy
/// failed with the store's own words (S3 NoSuchKey, a local "No such file") and `auto`
/// then read the chain a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_names_a_missing_source_object_and_does_not_retry() {
    use std::sync::Arc;
    use storage_backends::assemble::{CopyFault, FaultCopy, ServerCopy};
    for copy in [
        CopyMode::Auto,
        CopyMode::Server,
        CopyMode::Client,
        CopyMode::Reencode,
    ] {
        let work = tempfile::tempdir().expect("tempdir");
        let repo = local_repo(&work.path().join("repo")).await;
        let ids = chain_of_three(&repo, work.path()).await;
        let gone = layout::data_key(&ids[1]);
        repo.store().delete(&gone).await.expect("delete");
        let before = crate::engine_cases::keys(&repo).await;
        let options = AggregateOptions {
            copy,
            ..AggregateOptions::default()
        };
        let err = aggregate(&repo, &db("neo4j"), &options, &progress())
            .await
            .expect_err("a source object is missing")
            .to_string();
        assert!(
            err.contains(gone.as_ref()) && err.contains("catena check"),
            "{copy:?}: {err}"
        );
        assert!(!err.contains("--restore-until"), "{copy:?}: {err}");
        assert_eq!(
            crate::engine_cases::keys(&repo).await,
            before,
            "{copy:?}: nothing written or deleted"
        );
    }
    for r in crate::repos().await {
        for copy in [CopyMode::Auto, CopyMode::Server] {
            let work = tempfile::tempdir().expect("tempdir");
            let db_name = format!("gone{}", copy == CopyMode::Auto);
            let src = work.path().join("src");
            std::fs::create_dir_all(&src).expect("mkdir");
            std::fs::write(src.join("store"), data(12 << 20, 5, true)).expect("write");
            let mut ids = vec![
                committed(&backup_dir(&r.repo, &db_name, &src, BackupRequest::default()).await).0,
            ];
            mutate(&src, 40);
            ids.push(
                committed(&backup_dir(&r.repo, &db_name, &src, BackupRequest::default()).await).0,
            );
            let gone = layout::data_key(&ids[0]);
            let mut before = crate::engine_cases::keys(&r.repo).await;
            before.remove(gone.as_ref());
            let inner = Arc::clone(r.repo.server_copy().expect("server copy"));
            let fault: Arc<dyn ServerCopy> =
                Arc::new(FaultCopy::new(inner, CopyFault::RemoveSource));
            let repo = r.repo.clone().with_server_copy(Some(fault));
            let options = AggregateOptions {
                copy,
                ..AggregateOptions::default()
            };
            let err = aggregate(&repo, &db(&db_name), &options, &progress())
                .await
                .expect_err("a source object went away")
                .to_string();
            assert!(
                err.contains(gone.as_ref())
                    && err.contains("someone deleted it")
                    && err.contains("catena check"),
                "{} {copy:?}: {err}",
                r.name
            );
            assert_eq!(
                crate::engine_cases::keys(&r.repo).await,
                before,
                "{} {copy:?}: nothing written or deleted but the deleted source",
                r.name
            );
        }
    }
}

/// A format-1 index rewritten, with its manifest, by a hostile or buggy writer to place a
/// block past the end of its data object (format 1 pins the data object by its whole
/// digest, not by the record layout of format 2, so the rewritten index is self-consistent):
/// restore and check take it for damage, naming the index, not for a failed request that
/// a retry could cure. Before, the range read past the end came back as the store's
/// (retryable) "invalid range" error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_index_placing_a_block_past_its_data_object_is_damage() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).expect("mkdir");
    crate::engine_cases::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1/repo"),
        &root,
    );
    let repo = local_repo(&root).await;
    // The fixture's DIFF, the newest of its two artifacts.
    let id: ArtifactId = "neo4j-20261202T061640.663336Z-6abc591bd94ac085"
        .parse()
        .expect("id");
    let manifest_key = layout::manifest_key(&id);
    let manifest =
        Manifest::from_json(&object_bytes(&repo, &manifest_key).await).expect("manifest");
    assert_eq!(manifest.format_version, 1);
    let data_size = manifest
        .objects
        .iter()
        .find(|o| o.role == ObjectRole::Data)
        .expect("a data object")
        .size;
    let index_key = layout::index_key(&id);
    let bytes = object_bytes(&repo, &index_key).await;
    let mut index = Index::decode(&bytes).expect("index");
    let last = index.blocks.last_mut().expect("a block");
    assert!(last.range().end <= data_size);
    last.offset = data_size;
    replace_index(&repo, &id, &index).await;

    let err = restore(
        &repo,
        &db("neo4j"),
        &RestoreOptions::new(work.path().join("restored")),
        &progress(),
    )
    .await
    .expect_err("a block past the end of its data object");
    let text = err.to_string();
    assert!(err.is_permanent(), "{text}");
    assert!(text.contains(index_key.as_ref()), "{text}");
    assert!(text.contains("damaged"), "{text}");
    assert!(!work.path().join("restored").exists());

    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check runs: damage is a problem of its report");
    assert!(!report.ok, "{report:?}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.key.as_deref() == Some(index_key.as_ref())),
        "{report:?}"
    );
}

/// An index that lists one block twice, rewritten with its manifest (as a hostile writer
/// can, keeping every size and count): a backup reads its parent's index without keeping
/// the block list, checking each record as it streams past, and refuses it as restore and
/// check do, naming the index; with `fallbackToFull: false` it writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_index_listing_a_block_twice_is_refused_by_the_next_backup() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), data(3 << 20, 7, true)).expect("write");
    let (full, _) = committed(&backup_dir(&repo, "neo4j", &src, BackupRequest::default()).await);
    let index_key = layout::index_key(&full);
    let mut index = Index::decode(&object_bytes(&repo, &index_key).await).expect("index");
    assert!(index.blocks.len() >= 2, "{} blocks", index.blocks.len());
    // Same offsets, lengths and counts: only the second record's digest names the first's.
    index.blocks[1].digest = index.blocks[0].digest;
    replace_index(&repo, &full, &index).await;

    mutate(&src, 3);
    let request = BackupRequest {
        fallback_to_full: false,
        ..BackupRequest::default()
    };
    let report = backup_dir(&repo, "neo4j", &src, request).await;
    let error = report.run.databases[0].error.clone().unwrap_or_default();
    assert!(error.contains(index_key.as_ref()), "{error}");
    assert!(error.contains("stored twice"), "{error}");
    let view = repo.catalog(&db("neo4j")).await.expect("catalog");
    assert_eq!(view.catalog.artifacts().count(), 1, "nothing was committed");

    let err = restore(
        &repo,
        &db("neo4j"),
        &RestoreOptions::new(work.path().join("restored")),
        &progress(),
    )
    .await
    .expect_err("the same index, read whole");
    assert!(err.to_string().contains("stored twice"), "{err}");
    let report = check(&repo, &db("neo4j"), &CheckOptions::default(), &progress())
        .await
        .expect("check runs");
    assert!(!report.ok, "{report:?}");
}
