//! A repository encrypted with XChaCha20-Poly1305 (`tests/fixtures/xchacha/repo`: a FULL and
//! a DIFF of a small database, written with the key file `key` by Catena at commit aefcf80b,
//! before new repositories got XAES-256-GCM) stays readable, checkable, restorable,
//! aggregatable and writable with its key, keeps its cipher, and refuses anyone without it.

use std::path::{Path, PathBuf};

use super::format1::{copy_dir, listing, manifests};
use super::{run, text};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xchacha")
}

/// A copy of the fixture's repository in a new temporary directory, and the key file's path.
fn copied() -> (tempfile::TempDir, PathBuf, String) {
    let t = tempfile::tempdir().expect("tempdir");
    let repo = t.path().join("repo");
    copy_dir(&fixture().join("repo"), &repo);
    let key = fixture().join("key").to_str().expect("utf8").to_owned();
    (t, repo, key)
}

fn encryption(repo: &Path) -> String {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("_config.json")).expect("config"))
            .expect("config JSON");
    config["encryption"].as_str().expect("a string").to_owned()
}

fn restore(repo: &str, to: &Path, key: &str) -> String {
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo,
        "--to",
        to.to_str().expect("utf8"),
        "--key-file",
        key,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    listing(to)
}

#[test]
fn an_xchacha_repository_is_checked_restored_grown_and_aggregated_with_its_cipher() {
    let (t, repo, key) = copied();
    let repo_s = repo.to_str().expect("utf8");
    let key = key.as_str();
    let expected = std::fs::read_to_string(fixture().join("expected.txt")).expect("expected");
    assert_eq!(encryption(&repo), "xchacha20-poly1305");
    assert!(manifests(&repo).iter().all(|m| m["format_version"] == 3));

    let o = run(&[
        "check",
        "--from-path",
        repo_s,
        "--key-file",
        key,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check JSON");
    assert_eq!(r[0]["report"]["ok"], true, "{r}");
    assert_eq!(restore(repo_s, &t.path().join("r1"), key), expected);
    assert!(t.path().join("r1/empty").is_dir());

    // Without the key, or with another one: refused, nothing restored.
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        t.path().join("nokey").to_str().expect("utf8"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let other = t.path().join("other.key");
    std::fs::write(&other, "b7".repeat(32)).expect("write");
    let o = run(&[
        "check",
        "--from-path",
        repo_s,
        "--key-file",
        other.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no key slot opens"), "{}", text(&o));

    // A DIFF on top is written with the repository's own cipher, and the chain restores.
    let src = t.path().join("src");
    copy_dir(&t.path().join("r1"), &src.join("neo4j"));
    std::fs::write(src.join("neo4j/tx/log.3"), b"written after XAES".repeat(50)).expect("write");
    let o = run(&[
        "backup",
        "--from",
        src.to_str().expect("utf8"),
        "--to-path",
        repo_s,
        "--key-file",
        key,
        "--type",
        "AUTO",
        "neo4j",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(encryption(&repo), "xchacha20-poly1305");
    let ms = manifests(&repo);
    assert_eq!(
        ms.iter().filter(|m| m["kind"] == "DIFF").count(),
        2,
        "{ms:?}"
    );
    let grown = restore(repo_s, &t.path().join("r2"), key);
    assert_eq!(
        std::fs::read(t.path().join("r2/tx/log.3")).expect("read"),
        b"written after XAES".repeat(50)
    );

    // Aggregated into one FULL: the same tree, and check passes.
    let o = run(&[
        "aggregate",
        "neo4j",
        "--from-path",
        repo_s,
        "--key-file",
        key,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(manifests(&repo).len(), 1);
    assert_eq!(restore(repo_s, &t.path().join("r3"), key), grown);
    let o = run(&["check", "--from-path", repo_s, "--key-file", key]);
    assert!(o.status.success(), "{}", text(&o));

    // A new repository with the same key file is XAES-256-GCM.
    let fresh = t.path().join("fresh");
    let o = run(&[
        "backup",
        "--from",
        src.to_str().expect("utf8"),
        "--to-path",
        fresh.to_str().expect("utf8"),
        "--key-file",
        key,
        "neo4j",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(encryption(&fresh), "xaes-256-gcm");
    let fresh_s = fresh.to_str().expect("utf8");
    assert_eq!(restore(fresh_s, &t.path().join("r4"), key), grown);
}

/// Damage between objects: the config object rewritten (and resealed) to name the other
/// cipher. The key slots still open, but no index or record authenticates: check reports
/// the chain damaged, restore writes nothing under the target, and neither exits 0.
#[test]
fn a_config_naming_the_wrong_cipher_restores_nothing_and_check_says_so() {
    use chain_core::crypto::{Encryption, RepoConfig};
    let (t, repo, key) = copied();
    let repo_s = repo.to_str().expect("utf8");
    let key = key.as_str();
    let config_path = repo.join("_config.json");
    let mut config =
        RepoConfig::from_json(&std::fs::read(&config_path).expect("read")).expect("config");
    config.encryption = Encryption::Xaes256Gcm;
    std::fs::write(&config_path, config.to_json()).expect("write");

    let to = t.path().join("restored");
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        to.to_str().expect("utf8"),
        "--key-file",
        key,
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("failed authentication"), "{}", text(&o));
    assert!(!to.exists(), "nothing restored under the target");

    let o = run(&["check", "--from-path", repo_s, "--key-file", key]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The message names the cipher the config gave, so the operator can see it is wrong.
    assert!(
        text(&o).contains(
            "failed authentication under xaes-256-gcm, the cipher the repository's config names"
        ),
        "{}",
        text(&o)
    );
}
