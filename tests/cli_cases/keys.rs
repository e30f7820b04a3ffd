//! An encrypted repository from the command line: created by its first backup, every
//! command with the key, `catena key list|add|remove|passwd`, and the errors people get.

use std::path::Path;

use crate::{catena, text};

fn ok(args: &[&str]) -> String {
    let o = catena().args(args).output().expect("catena runs");
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    text(&o)
}

fn fails(args: &[&str], says: &str) {
    let o = catena().args(args).output().expect("catena runs");
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
    assert!(
        text(&o).contains(says),
        "{args:?}: wanted {says:?}, got {}",
        text(&o)
    );
}

fn slots(repo: &str, secret: &[&str]) -> Vec<(String, String, bool)> {
    let mut args = vec!["--format", "JSON", "key", "list", "--from-path", repo];
    args.extend(secret);
    let o = catena().args(&args).output().expect("catena runs");
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["kind"].as_str().expect("kind").to_owned(),
                s["current"].as_bool().expect("current"),
            )
        })
        .collect()
}

#[test]
fn an_encrypted_repository_from_the_command_line() {
    let t = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| t.path().join(name).display().to_string();
    std::fs::create_dir_all(t.path().join("data/neo4j")).expect("mkdir");
    std::fs::write(
        t.path().join("data/neo4j/store"),
        crate::common::data(300_000, 3, true),
    )
    .expect("write");
    std::fs::write(t.path().join("pass"), "first passphrase\n").expect("write");
    std::fs::write(t.path().join("pass2"), "second passphrase").expect("write");
    std::fs::write(t.path().join("short"), "too short").expect("write");
    std::fs::write(t.path().join("key"), [7u8; 40]).expect("write");
    std::fs::create_dir_all(t.path().join("secrets/enc")).expect("mkdir");
    std::fs::write(
        t.path().join("secrets/enc/passphrase"),
        "mounted passphrase",
    )
    .expect("write");
    let (data, repo) = (p("data"), p("repo"));
    let pass = ["--passphrase-file", &p("pass")];
    let pass2 = ["--passphrase-file", &p("pass2")];
    let key = ["--key-file", &p("key")];
    let secrets = p("secrets");
    let mounted = [
        "--encryption-secret-name",
        "enc",
        "--secrets-dir",
        secrets.as_str(),
    ];
    let with = |args: &[&str], secret: &[&str]| -> Vec<String> {
        args.iter().chain(secret).map(|s| s.to_string()).collect()
    };
    let run_ok = |args: Vec<String>| ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let run_fails = |args: Vec<String>, says: &str| {
        fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), says)
    };

    // Created by the first backup given a passphrase.
    run_ok(with(
        &["backup", "--from", &data, "--to-path", &repo],
        &pass,
    ));
    assert!(t.path().join("repo/_config.json").exists());
    let first = slots(&repo, &pass);
    assert_eq!(first.len(), 1);
    assert!(first[0].2, "the slot that opened is marked");
    // Without the key, with a wrong one, with a short key file: refused, saying what to do.
    fails(
        &["inspect", "--from-path", &repo],
        "is an encrypted repository; give its passphrase or key file",
    );
    run_fails(
        with(&["check", "--from-path", &repo], &pass2),
        "no key slot opens with this passphrase; `catena key list` shows the 1 slot(s)",
    );
    run_fails(
        with(
            &["check", "--from-path", &repo],
            &["--key-file", &p("short")],
        ),
        "at least 32 random bytes",
    );
    // The last slot stays.
    run_fails(
        with(&["key", "remove", &first[0].0, "--from-path", &repo], &pass),
        "last",
    );
    // More slots: a key file and the chart-mounted secret.
    run_ok(with(
        &[
            "key",
            "add",
            "--from-path",
            &repo,
            "--new-key-file",
            &p("key"),
        ],
        &pass,
    ));
    run_ok(with(
        &[
            "key",
            "add",
            "--from-path",
            &repo,
            "--new-passphrase-file",
            &p("secrets/enc/passphrase"),
        ],
        &key,
    ));
    assert_eq!(slots(&repo, &mounted).len(), 3);
    // A DIFF with the key file, a check with the mounted secret, a restore.
    run_ok(with(&["backup", "--from", &data, "--to-path", &repo], &key));
    let checked = run_ok(with(&["check", "--from-path", &repo], &mounted));
    assert!(checked.contains("OK"), "{checked}");
    run_ok(with(
        &[
            "restore",
            "neo4j",
            "--from-path",
            &repo,
            "--to",
            &p("restored"),
        ],
        &pass,
    ));
    assert_eq!(
        std::fs::read(t.path().join("restored/store")).expect("restored"),
        std::fs::read(t.path().join("data/neo4j/store")).expect("source")
    );
    // passwd replaces the slot that opened: the old passphrase no longer opens.
    run_ok(with(
        &[
            "key",
            "passwd",
            "--from-path",
            &repo,
            "--new-passphrase-file",
            &p("pass2"),
        ],
        &pass,
    ));
    run_fails(
        with(&["check", "--from-path", &repo], &pass),
        "no key slot opens",
    );
    run_ok(with(&["check", "--from-path", &repo], &pass2));
    // remove by id.
    let key_slot = slots(&repo, &pass2)
        .into_iter()
        .find(|s| s.1 == "key_file")
        .expect("key file slot");
    run_ok(with(
        &["key", "remove", &key_slot.0, "--from-path", &repo],
        &pass2,
    ));
    run_fails(
        with(&["check", "--from-path", &repo], &key),
        "no key slot opens with this key file",
    );
    assert_eq!(slots(&repo, &pass2).len(), 2);
    // A damaged or foreign object under _keys/ is passed over: the real slots still open.
    std::fs::write(
        t.path().join("repo/_keys/0000000000000000.json"),
        b"{not a slot",
    )
    .expect("write");
    run_ok(with(&["check", "--from-path", &repo], &pass2));
    assert_eq!(slots(&repo, &pass2).len(), 2);
    // A plain repository refuses a key; `key` refuses a plain repository.
    let plain = p("plain");
    ok(&["backup", "--from", &data, "--to-path", &plain]);
    run_fails(
        with(&["check", "--from-path", &plain], &pass),
        "is a plain repository",
    );
    run_fails(
        with(&["backup", "--from", &data, "--to-path", &plain], &pass),
        "is a plain repository",
    );
    fails(
        &["key", "list", "--from-path", &plain],
        "works on an encrypted repository",
    );
    assert!(!Path::new(&plain).join("_config.json").exists());
}

/// SIGTERM during the first backup of an encrypted repository (its config and key slot
/// written, the data upload in flight): nothing is committed and no upload stays open; what
/// is left is a valid empty encrypted repository that opens with the same key and no other,
/// and the next backup with that key commits.
#[test]
fn a_first_encrypted_backup_stopped_by_sigterm_leaves_a_repository_its_key_opens() {
    let Some(moto) = crate::common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("neo4j")).expect("mkdir");
    std::fs::write(
        data.join("neo4j/store"),
        crate::common::data(48 << 20, 9, true),
    )
    .expect("write");
    std::fs::write(t.path().join("key"), [9u8; 32]).expect("write");
    std::fs::write(t.path().join("other"), [8u8; 32]).expect("write");
    let secrets = t.path().join("secrets");
    crate::common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let prefix = crate::common::unique("enc-signal");
    let url = format!("s3://{}/{prefix}", crate::common::BUCKET);
    let with = |key: &str, args: &[&str]| {
        let mut c = catena();
        c.args(args)
            .args(["--s3-endpoint", &moto, "--secret-name", "awscreds"])
            .arg("--secrets-dir")
            .arg(&secrets)
            .arg("--key-file")
            .arg(t.path().join(key))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let data_s = data.to_str().expect("utf8");
    let backup = ["backup", "--from", data_s, "--to-path", &url];
    let child = with("key", &backup)
        .args(["--parts-in-flight", "1", "--part-size-mib", "5"])
        .spawn()
        .expect("spawn");
    let (code, _, out) = super::operator::signal_when(
        child,
        "backup neo4j: started",
        std::time::Duration::from_millis(300),
        "TERM",
    );
    assert_eq!(code, Some(143), "{out}");
    assert_eq!(super::operator::moto_open_uploads(&moto, &prefix), 0);
    let artifacts = |key: &str| {
        let o = with(key, &["--format", "JSON", "inspect", "--from-path", &url])
            .output()
            .expect("runs");
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        v.as_array().expect("array").len()
    };
    assert_eq!(artifacts("key"), 0, "nothing committed");
    let o = with(
        "key",
        &["--format", "JSON", "key", "list", "--from-path", &url],
    )
    .output()
    .expect("runs");
    assert!(o.status.success(), "{}", text(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let o = with("other", &backup).output().expect("runs");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no key slot opens"), "{}", text(&o));
    let o = with("key", &backup).output().expect("runs");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(artifacts("key"), 1);
}
