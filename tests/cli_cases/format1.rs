//! A repository written by format 1 (`tests/fixtures/format1/repo`: a FULL and a DIFF of a
//! small database, written by Catena at commit 133a2280, before format 2) stays readable,
//! checkable, restorable and aggregatable, and a backup on top of it writes format 2.

use std::path::Path;

use super::{run, text};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1")
}

/// Copies a tree, symlinks as symlinks.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        let t = e.file_type().expect("type");
        if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).expect("link"), &target)
                .expect("symlink");
        } else if t.is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The restored tree as `expected.txt` spells it: `<sha256> ./path` or `symlink ./p -> t`.
pub(crate) fn listing(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = format!("./{}", p.strip_prefix(root).expect("inside").display());
            let t = e.file_type().expect("type");
            if t.is_symlink() {
                let target = std::fs::read_link(&p).expect("readlink");
                out.push(format!("symlink {rel} -> {}", target.display()));
            } else if t.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.push(format!("{} {rel}", chain_core::Sha256Digest::of(&bytes)));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    let path = |line: &String| -> String {
        match line.strip_prefix("symlink ") {
            Some(rest) => rest.split(" -> ").next().unwrap_or_default().to_owned(),
            None => line
                .split_once(' ')
                .map(|(_, p)| p.to_owned())
                .unwrap_or_default(),
        }
    };
    out.sort_by_key(path);
    out.iter().map(|l| format!("{l}\n")).collect()
}

fn restore_matches(repo: &str, to: &Path) {
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo,
        "--to",
        to.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let expected = std::fs::read_to_string(fixture().join("expected.txt")).expect("expected");
    assert_eq!(listing(to), expected);
    assert!(to.join("empty").is_dir());
}

pub(crate) fn manifests(repo: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo.join("neo4j")).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.to_string_lossy().ends_with(".manifest.json") {
            out.push(serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json"));
        }
    }
    out
}

#[test]
fn a_format_1_repository_is_read_checked_restored_and_aggregated() {
    let t = tempfile::tempdir().expect("tempdir");
    let repo = t.path().join("repo");
    copy_dir(&fixture().join("repo"), &repo);
    let repo_s = repo.to_str().expect("utf8");
    assert!(manifests(&repo).iter().all(|m| m["format_version"] == 1));

    let o = run(&["inspect", "--from-path", repo_s, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["check", "--from-path", repo_s, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check JSON");
    assert_eq!(r[0]["report"]["ok"], true, "{r}");
    restore_matches(repo_s, &t.path().join("r1"));

    // A damaged format-1 data object is still caught by its whole-object SHA-256.
    let damaged = t.path().join("damaged");
    copy_dir(&repo, &damaged);
    let data = std::fs::read_dir(damaged.join("neo4j"))
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "data"))
        .expect("a data object");
    let mut bytes = std::fs::read(&data).expect("read");
    let at = bytes.len() - 5;
    bytes[at] ^= 1;
    std::fs::write(&data, bytes).expect("write");
    let o = run(&["check", "--from-path", damaged.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Aggregate the format-1 chain: the new FULL is format 2 and restores the same.
    let o = run(&[
        "aggregate",
        "neo4j",
        "--from-path",
        repo_s,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ms = manifests(&repo);
    assert_eq!(ms.len(), 1, "keepOldBackup false deletes the old chain");
    assert_eq!(ms[0]["format_version"], 2);
    assert!(
        ms[0]["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .all(|o| (o["role"] == "data") == o.get("sha256").is_none()),
        "format 2 hashes the index only: {}",
        ms[0]
    );
    let o = run(&["check", "--from-path", repo_s, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    restore_matches(repo_s, &t.path().join("r2"));
}

#[test]
fn a_backup_on_a_format_1_parent_writes_format_2_and_both_restore() {
    let t = tempfile::tempdir().expect("tempdir");
    let repo = t.path().join("repo");
    copy_dir(&fixture().join("repo"), &repo);
    let repo_s = repo.to_str().expect("utf8");
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("neo4j")).expect("mkdir");
    std::fs::write(src.join("neo4j/new.db"), b"written by format 2".repeat(100)).expect("write");
    let o = run(&[
        "backup",
        "--from",
        src.to_str().expect("utf8"),
        "--to-path",
        repo_s,
        "--type",
        "AUTO",
        "neo4j",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ms = manifests(&repo);
    assert_eq!(ms.iter().filter(|m| m["format_version"] == 2).count(), 1);
    assert!(
        ms.iter()
            .any(|m| m["format_version"] == 2 && m["kind"] == "DIFF")
    );
    let o = run(&["check", "--from-path", repo_s]);
    assert!(o.status.success(), "{}", text(&o));
    let out = t.path().join("restored");
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(out.join("new.db")).expect("read"),
        b"written by format 2".repeat(100)
    );
    assert!(!out.join("graph").exists());
}
