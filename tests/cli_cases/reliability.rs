//! The command line under attack: a backup SIGKILLed at random moments, bad input of every
//! kind, and secrets at TRACE logging. CI runs reduced counts; `scripts/reliability` sets
//! `CATENA_RELIABILITY_FULL=1` for the full ones (figures in `docs/RELIABILITY.md`).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{catena, common, run, text};

fn full() -> bool {
    std::env::var_os("CATENA_RELIABILITY_FULL").is_some()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Runs `catena check` on `repo` and returns (every report ok, artifacts, unreferenced keys).
fn check(repo: &str) -> (bool, u64, Vec<String>) {
    let o = run(&["check", "--from-path", repo, "--format", "JSON"]);
    let v = json(&o);
    let reports = v.as_array().expect("an array of reports");
    let mut ok = o.status.success();
    let (mut artifacts, mut unreferenced) = (0, Vec::new());
    for r in reports {
        let r = &r["report"];
        ok &= r["ok"].as_bool().expect("ok");
        artifacts += r["artifacts"].as_u64().expect("artifacts");
        for k in r["unreferenced"].as_array().expect("unreferenced") {
            unreferenced.push(k.as_str().expect("key").to_owned());
        }
        if !r["ok"].as_bool().unwrap_or(false) {
            eprintln!("check problems: {}", r["problems"]);
        }
    }
    (ok, artifacts, unreferenced)
}

/// 256 MiB in 8 files, half noise, half text.
fn big_data(root: &Path) {
    let db = root.join("neo4j");
    std::fs::create_dir_all(&db).expect("mkdir");
    for i in 0..8u64 {
        std::fs::write(
            db.join(format!("part{i}.db")),
            common::data(32 << 20, i, i % 2 == 0),
        )
        .expect("write");
    }
}

/// Deterministic "random" moments.
fn moments(n: usize, span: Duration) -> Vec<Duration> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            span.mul_f64((x % 10_000) as f64 / 10_000.0)
        })
        .collect()
}

#[test]
fn a_backup_killed_at_random_moments_leaves_nothing_half_visible() {
    let kills = if full() { 50 } else { 5 };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    big_data(&data);
    let repo = t.path().join("repo");
    let (data_s, repo_s) = (data.to_str().expect("utf-8"), repo.to_str().expect("utf-8"));
    let backup_args = [
        "backup",
        "--from",
        data_s,
        "--to-path",
        repo_s,
        "--type",
        "FULL",
    ];

    // One complete FULL first: its duration sets the span of the kill moments.
    let started = Instant::now();
    let o = run(&backup_args);
    assert!(o.status.success(), "{}", text(&o));
    let span = started.elapsed().mul_f64(1.2);
    let (ok, mut artifacts, _) = check(repo_s);
    assert!(ok && artifacts == 1);

    let (mut left_something, mut committed_anyway, mut removed) = (0, 0, 0usize);
    for (i, at) in moments(kills, span).into_iter().enumerate() {
        let mut child = catena()
            .args(backup_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(at);
        let finished = child.try_wait().expect("wait").is_some();
        child.kill().ok(); // SIGKILL
        child.wait().expect("reaped");

        // What is committed checks clean; nothing half-written is listed.
        let (ok, now, unreferenced) = check(repo_s);
        assert!(ok, "kill {i} at {at:?}: check failed");
        assert!(
            now == artifacts || now == artifacts + 1,
            "kill {i}: {artifacts} artifacts before, {now} after"
        );
        committed_anyway += usize::from(now == artifacts + 1 && !finished);
        artifacts = now;
        if !unreferenced.is_empty() {
            left_something += 1;
        }
        let o = run(&[
            "inspect",
            "--from-path",
            repo_s,
            "--empty",
            "--format",
            "JSON",
        ]);
        assert_eq!(
            json(&o).as_array().expect("rows").len() as u64,
            artifacts,
            "kill {i}: inspect lists what check counts"
        );

        // A process killed outright holds its lock until the lease runs out (the lease is
        // the rule, never host and pid); the operator's step after a SIGKILL is `unlock`,
        // which breaks it since the holder is gone.
        let o = run(&["unlock", "neo4j", "--from-path", repo_s]);
        assert!(o.status.success(), "kill {i}: unlock: {}", text(&o));
        // Garbage collection removes the leftovers and nothing committed.
        let o = run(&[
            "gc",
            "--from-path",
            repo_s,
            "--grace",
            "0s",
            "--format",
            "JSON",
        ]);
        assert!(o.status.success(), "kill {i}: gc: {}", text(&o));
        let gc = json(&o);
        let gone = gc[0]["removed"].as_array().expect("removed").len();
        removed += gone;
        assert_eq!(
            gone,
            unreferenced.len(),
            "kill {i}: gc removes what check listed: {gc}"
        );
        let (ok, after_gc, unreferenced) = check(repo_s);
        assert!(
            ok && after_gc == artifacts && unreferenced.is_empty(),
            "kill {i}: after gc {unreferenced:?}"
        );

        // The next backup succeeds.
        let o = run(&["backup", "--from", data_s, "--to-path", repo_s]);
        assert!(
            o.status.success(),
            "kill {i}: the next backup: {}",
            text(&o)
        );
        artifacts += 1;
    }
    let (ok, n, unreferenced) = check(repo_s);
    assert!(ok && n == artifacts && unreferenced.is_empty());
    eprintln!(
        "crash: 256 MiB FULL killed {kills} times within {span:?}: {left_something} kills left pieces (all listed by check, {removed} removed by gc), {committed_anyway} committed before the kill; every check passed and, after `unlock`, every next backup succeeded"
    );
    assert!(left_something > 0, "no kill landed inside a backup");
}

/// An aggregate by server copy (the local directory's kernel copy) SIGKILLed at random
/// moments: each time the repository holds either the old chain whole or the new FULL
/// (with the old chain's deletions finished by the next aggregate), `check` passes, what
/// was left (a staging file of the copy) is listed by `check` and removed by `gc`, and the
/// data restores byte for byte.
#[test]
fn an_aggregate_by_server_copy_killed_at_random_moments_leaves_the_chain_or_the_new_full() {
    let kills = if full() { 30 } else { 4 };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    big_data(&data);
    let repo = t.path().join("repo");
    let (data_s, repo_s) = (data.to_str().expect("utf-8"), repo.to_str().expect("utf-8"));
    let backup = |round: u64| {
        std::fs::write(
            data.join(format!("neo4j/part{}.db", round % 8)),
            common::data(32 << 20, 100 + round, round.is_multiple_of(2)),
        )
        .expect("write");
        let o = run(&["backup", "--from", data_s, "--to-path", repo_s]);
        assert!(o.status.success(), "{}", text(&o));
    };
    let aggregate = [
        "aggregate",
        "neo4j",
        "--from-path",
        repo_s,
        "--copy",
        "server",
    ];
    let o = run(&["backup", "--from", data_s, "--to-path", repo_s]);
    assert!(o.status.success(), "{}", text(&o));
    backup(0);
    let started = Instant::now();
    let o = run(&aggregate);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("copy: server"), "{}", text(&o));
    let span = started.elapsed().mul_f64(1.2);

    let mut left_something = 0;
    for (i, at) in moments(kills, span).into_iter().enumerate() {
        backup(2 * i as u64 + 1);
        backup(2 * i as u64 + 2);
        let (ok, before, _) = check(repo_s);
        assert!(ok && before == 3, "kill {i}: a FULL and two DIFFs before");
        let mut child = catena()
            .args(aggregate)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(at);
        child.kill().ok(); // SIGKILL
        child.wait().expect("reaped");
        let (ok, now, unreferenced) = check(repo_s);
        assert!(ok, "kill {i} at {at:?}: check failed");
        // The old chain whole (3), or the new FULL beside what is left of it (1 to 4).
        assert!((1..=4).contains(&now), "kill {i}: {now} artifacts");
        left_something += usize::from(!unreferenced.is_empty());
        assert!(
            run(&["unlock", "neo4j", "--from-path", repo_s])
                .status
                .success()
        );
        let o = run(&["gc", "--from-path", repo_s, "--grace", "0s"]);
        assert!(o.status.success(), "kill {i}: gc: {}", text(&o));
        // The next aggregate finishes the work: one FULL.
        let o = run(&aggregate);
        assert!(o.status.success(), "kill {i}: {}", text(&o));
        let (ok, after, unreferenced) = check(repo_s);
        assert!(
            ok && after == 1 && unreferenced.is_empty(),
            "kill {i}: {after} artifacts, {unreferenced:?}"
        );
    }
    let out = t.path().join("restored");
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for i in 0..8 {
        let name = format!("part{i}.db");
        assert!(
            std::fs::read(out.join(&name)).expect("restored")
                == std::fs::read(data.join("neo4j").join(&name)).expect("source"),
            "{name} differs"
        );
    }
    eprintln!(
        "crash: aggregate by server copy of a 256 MiB chain killed {kills} times within {span:?}: {left_something} kills left pieces (listed by check, removed by gc); every check passed, every next aggregate succeeded, the restore is identical"
    );
}

/// Secrets at TRACE: every command and error path with distinctive credentials; nothing it
/// prints or stores contains them.
#[test]
fn secrets_never_appear_in_output_logs_or_stored_objects() {
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let s3s = common::server_var("CATENA_TEST_S3S_ENDPOINT", "s3s-fs");
    let azurite = common::server_var("AZURITE_BLOB_STORAGE_URL", "azurite");
    const KEY_ID: &str = "AKIDCATENASCANME0001";
    const SECRET: &str = "Zq9catenaSECRETneverPRINT7731xyz";
    const AZURE_KEY: &str = "Y2F0ZW5hLWF6dXJlLWtleS1ORVZFUi1QUklOVC0xMjM0NTY3OA==";
    // Azurite's well-known development key, from a credentials file like any other, and the
    // signature of the SAS URLs that Azure's server copy makes (a credential while it lasts).
    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    // An encrypted repository's passphrases and key file.
    const PASSPHRASE: &str = "catena-PASSPHRASE-never-print-4417";
    const NEW_PASSPHRASE: &str = "catena-NEWPASS-never-print-9902";
    const SECRET_NAME_PASSPHRASE: &str = "catena-MOUNTED-pass-never-print-5150";
    const KEY_FILE: &str = "catena-KEYFILE-never-print-0123456789abcdef";
    let needles = [
        KEY_ID,
        SECRET,
        AZURE_KEY,
        "catena-azure-key-NEVER-PRINT",
        AZURITE_KEY,
        "sig=",
        PASSPHRASE,
        NEW_PASSPHRASE,
        SECRET_NAME_PASSPHRASE,
        KEY_FILE,
    ];

    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("neo4j")).expect("mkdir");
    std::fs::write(data.join("neo4j/store"), common::data(300_000, 1, true)).expect("write");
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", KEY_ID, SECRET, "us-east-1");
    std::fs::create_dir_all(secrets.join("broken")).expect("mkdir");
    std::fs::write(
        secrets.join("broken/credentials"),
        format!("[ default ]\naws_access_key_id {KEY_ID}\naws_secret_access_key: {SECRET}\n[[\n"),
    )
    .expect("write");
    std::fs::create_dir_all(secrets.join("azcreds")).expect("mkdir");
    std::fs::write(
        secrets.join("azcreds/credentials"),
        format!(
            "AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1\nAZURE_STORAGE_ACCOUNT_KEY={AZURE_KEY}\n"
        ),
    )
    .expect("write");
    std::fs::create_dir_all(secrets.join("azdev")).expect("mkdir");
    std::fs::write(
        secrets.join("azdev/credentials"),
        format!(
            "AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1\nAZURE_STORAGE_ACCOUNT_KEY={AZURITE_KEY}\n"
        ),
    )
    .expect("write");
    std::fs::create_dir_all(secrets.join("azbroken")).expect("mkdir");
    std::fs::write(
        secrets.join("azbroken/credentials"),
        format!("AZURE_STORAGE_ACCOUNT_KEY: {AZURE_KEY}\n"),
    )
    .expect("write");

    for (file, text) in [
        ("pass", PASSPHRASE),
        ("newpass", NEW_PASSPHRASE),
        ("keyfile", KEY_FILE),
        ("wrongpass", "not-the-passphrase"),
    ] {
        std::fs::write(t.path().join(file), format!("{text}\n")).expect("write");
    }
    std::fs::create_dir_all(secrets.join("encsecret")).expect("mkdir");
    std::fs::write(secrets.join("encsecret/passphrase"), SECRET_NAME_PASSPHRASE).expect("write");
    let prefix = common::unique("secrets");
    let url = format!("s3://{}/{prefix}", common::BUCKET);
    let (data_s, secrets_s) = (
        data.to_str().expect("utf-8"),
        secrets.to_str().expect("utf-8"),
    );
    let s3 = |endpoint: &str, secret: &str| -> Vec<String> {
        [
            "--s3-endpoint",
            endpoint,
            "--s3-force-path-style",
            "--secret-name",
            secret,
            "--secret-key-name",
            "credentials",
            "--secrets-dir",
            secrets_s,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let restore_to = t.path().join("restored");
    let restore_s = restore_to.to_str().expect("utf-8");
    let mut runs: Vec<(Vec<String>, bool)> = Vec::new();
    let mut add = |args: &[&str], extra: Vec<String>, ok: bool| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(extra);
        runs.push((v, ok));
    };
    // What works, on moto.
    add(
        &["backup", "--from", data_s, "--to-path", &url],
        s3(&moto, "awscreds"),
        true,
    );
    add(
        &["backup", "--from", data_s, "--to-path", &url, "--dry-run"],
        s3(&moto, "awscreds"),
        true,
    );
    add(
        &[
            "backup",
            "--from",
            data_s,
            "--to-path",
            &url,
            "--type",
            "FULL",
        ],
        s3(&moto, "awscreds"),
        true,
    );
    add(
        &["inspect", "--from-path", &url],
        s3(&moto, "awscreds"),
        true,
    );
    add(&["check", "--from-path", &url], s3(&moto, "awscreds"), true);
    add(
        &["aggregate", "neo4j", "--from-path", &url],
        s3(&moto, "awscreds"),
        true,
    );
    add(
        &["restore", "neo4j", "--from-path", &url, "--to", restore_s],
        s3(&moto, "awscreds"),
        true,
    );
    add(
        &["expire", "--from-path", &url, "--keep-last", "1"],
        s3(&moto, "awscreds"),
        true,
    );
    add(
        &["gc", "--from-path", &url, "--grace", "0s"],
        s3(&moto, "awscreds"),
        true,
    );
    add(&["probe", "--to-path", &url], s3(&moto, "awscreds"), true);
    // What fails.
    add(
        &["restore", "neo4j", "--from-path", &url, "--to", restore_s],
        s3(&moto, "awscreds"),
        false,
    );
    add(
        &["restore", "nosuchdb", "--from-path", &url, "--to", "/tmp/x"],
        s3(&moto, "awscreds"),
        false,
    );
    add(
        &[
            "backup",
            "--from",
            data_s,
            "--to-path",
            "s3://no-such-bucket-here/x",
        ],
        s3(&moto, "awscreds"),
        false,
    );
    add(
        &["backup", "--from", data_s, "--to-path", &url],
        s3("http://127.0.0.1:1", "awscreds"),
        false,
    );
    add(
        &["backup", "--from", data_s, "--to-path", &url],
        s3(&moto, "broken"),
        false,
    );
    add(
        &["backup", "--from", data_s, "--to-path", &url],
        s3(&moto, "missing"),
        false,
    );
    add(
        &[
            "backup",
            "--from",
            data_s,
            "--to-path",
            &url,
            "--s3-ca-cert",
            "not-base64!",
        ],
        s3(&moto, "awscreds"),
        false,
    );
    // An encrypted repository beside the plain one (after it: the plain repository's
    // commands cover every database under the prefix): created by a backup with a
    // passphrase file, given a key file and a mounted secret's passphrase as more slots,
    // its passphrase changed; every command at TRACE, and the error paths of keys.
    let enc_url = format!("{url}/enc");
    let file = |name: &str| t.path().join(name).display().to_string();
    let (pass, newpass, keyfile, wrongpass) = (
        file("pass"),
        file("newpass"),
        file("keyfile"),
        file("wrongpass"),
    );
    let enc = |args: &[&str], flags: &[&str], ok: bool| {
        let mut v: Vec<String> = args.iter().chain(flags).map(|s| s.to_string()).collect();
        v.extend(s3(&moto, "awscreds"));
        (v, ok)
    };
    let with_pass = ["--passphrase-file", pass.as_str()];
    let with_key = ["--key-file", keyfile.as_str()];
    let with_mounted = ["--encryption-secret-name", "encsecret"];
    let with_new = ["--passphrase-file", newpass.as_str()];
    let enc_runs = [
        enc(
            &["backup", "--from", data_s, "--to-path", &enc_url],
            &with_pass,
            true,
        ),
        enc(
            &[
                "key",
                "add",
                "--from-path",
                &enc_url,
                "--new-key-file",
                &keyfile,
            ],
            &with_pass,
            true,
        ),
        enc(
            &[
                "key",
                "add",
                "--from-path",
                &enc_url,
                "--new-passphrase-file",
                &secrets.join("encsecret/passphrase").display().to_string(),
            ],
            &with_key,
            true,
        ),
        enc(
            &["backup", "--from", data_s, "--to-path", &enc_url],
            &with_mounted,
            true,
        ),
        enc(&["key", "list", "--from-path", &enc_url], &with_key, true),
        enc(
            &[
                "key",
                "passwd",
                "--from-path",
                &enc_url,
                "--new-passphrase-file",
                &newpass,
            ],
            &with_pass,
            true,
        ),
        enc(&["check", "--from-path", &enc_url], &with_new, true),
        enc(
            &[
                "aggregate",
                "neo4j",
                "--from-path",
                &enc_url,
                "--copy",
                "server",
            ],
            &with_key,
            true,
        ),
        enc(
            &[
                "restore",
                "neo4j",
                "--from-path",
                &enc_url,
                "--to",
                &file("enc-restored"),
            ],
            &with_mounted,
            true,
        ),
        enc(&["check", "--from-path", &enc_url], &with_pass, false),
        enc(
            &["check", "--from-path", &enc_url],
            &["--passphrase-file", wrongpass.as_str()],
            false,
        ),
        enc(&["check", "--from-path", &enc_url], &[], false),
        enc(&["check", "--from-path", &url], &with_key, false),
        enc(
            &["backup", "--from", data_s, "--to-path", &enc_url],
            &["--key-file", pass.as_str()],
            false,
        ),
    ];
    for (args, ok) in enc_runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        add(&args, Vec::new(), ok);
    }
    if let Some(s3s) = &s3s {
        // s3s-fs checks signatures: these credentials are wrong there.
        add(
            &["backup", "--from", data_s, "--to-path", &url],
            s3(s3s, "awscreds"),
            false,
        );
        add(
            &["inspect", "--from-path", &url],
            s3(s3s, "awscreds"),
            false,
        );
    }
    if let Some(az) = &azurite {
        let az_args = |secret: &str| -> Vec<String> {
            [
                "--azure-endpoint",
                az,
                "--secret-name",
                secret,
                "--secret-key-name",
                "credentials",
                "--secrets-dir",
                secrets_s,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        add(
            &[
                "backup",
                "--from",
                data_s,
                "--to-path",
                "az://catena-test/secrets",
            ],
            az_args("azcreds"),
            false,
        );
        add(
            &[
                "backup",
                "--from",
                data_s,
                "--to-path",
                "az://catena-test/secrets",
            ],
            az_args("azbroken"),
            false,
        );
        // A chain on Azurite aggregated by Azure's server copy (Put Block From URL on SAS
        // URLs), at TRACE.
        let az_url = format!("az://{}/{}", common::BUCKET, common::unique("secrets"));
        let account_url = format!("{az}/devstoreaccount1");
        let dev = |args: &[&str]| -> Vec<String> {
            let flags = [
                "--azure-endpoint",
                &account_url,
                "--secret-name",
                "azdev",
                "--secret-key-name",
                "credentials",
                "--secrets-dir",
                secrets_s,
            ];
            args.iter()
                .chain(flags.iter())
                .map(|s| s.to_string())
                .collect()
        };
        for _ in 0..2 {
            runs.push((
                dev(&["backup", "--from", data_s, "--to-path", &az_url]),
                true,
            ));
        }
        runs.push((
            dev(&["aggregate", "--from-path", &az_url, "--copy", "server"]),
            true,
        ));
    }

    let mut scanned = 0usize;
    for (args, ok) in &runs {
        let o = catena()
            .args(["-vvv", "--format", "JSON"])
            .args(args)
            .env("RUST_LOG", "trace")
            .output()
            .expect("catena runs");
        let all = text(&o);
        // On a surprise, what the command reported (its JSON on stdout) and the last of what
        // it said on stderr above DEBUG, not the last screen of TRACE lines.
        let stderr = String::from_utf8_lossy(&o.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains(" TRACE ") && !l.contains(" DEBUG "))
            .collect();
        let warned = &said[said.len().saturating_sub(20)..];
        assert_eq!(
            o.status.success(),
            *ok,
            "{args:?}: stdout: {}\nwarnings: {warned:#?}",
            String::from_utf8_lossy(&o.stdout)
        );
        for n in needles {
            assert!(!all.contains(n), "{args:?} printed a secret ({n})");
        }
        scanned += all.len();
    }

    // Everything stored: manifests, indexes, data, run records, check reports, locks.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stored = rt.block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = common::s3_config(&moto, dir.path(), "k", "s", &prefix)
            .build()
            .await
            .expect("moto")
            .store;
        let all: Vec<_> = store.list(None).try_collect().await.expect("list");
        let mut bytes = 0;
        for m in &all {
            let b = store
                .get(&m.location)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes");
            let hay = String::from_utf8_lossy(&b);
            for n in needles {
                assert!(!hay.contains(n), "{} holds a secret ({n})", m.location);
            }
            bytes += b.len();
        }
        (all.len(), bytes)
    });
    eprintln!(
        "secrets: {} runs at TRACE ({} error paths), {scanned} bytes of output and {} stored objects ({} bytes) scanned for {} distinctive strings: 0 found",
        runs.len(),
        runs.iter().filter(|r| !r.1).count(),
        stored.0,
        stored.1,
        needles.len()
    );
    assert!(stored.0 > 5);
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Malformed values files, URLs, flags and credentials files: one clear error each, exit
/// code 1, no panic, nothing written to storage.
#[test]
fn bad_input_gets_one_clear_error_and_writes_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("neo4j")).expect("mkdir");
    std::fs::write(data.join("neo4j/store"), b"graph").expect("write");
    let repo = t.path().join("repo");
    let secrets = t.path().join("secrets");
    for (name, body) in [
        ("aws-broken", "[ default ]\naws_access_key_id AKID\n[[\n"),
        ("aws-empty", ""),
        ("aws-no-secret", "[ default ]\naws_access_key_id = AKID\n"),
        ("az-broken", "AZURE_STORAGE_ACCOUNT_KEY: abc\n"),
        ("az-partial", "AZURE_STORAGE_ACCOUNT_NAME=acct\n"),
    ] {
        std::fs::create_dir_all(secrets.join(name)).expect("mkdir");
        std::fs::write(secrets.join(name).join("credentials"), body).expect("write");
    }
    let values = |name: &str, body: &str| -> String {
        let p = t.path().join(format!("{name}.yaml"));
        std::fs::write(&p, body).expect("write");
        p.display().to_string()
    };
    let (data_s, repo_s, secrets_s) = (
        data.display().to_string(),
        repo.display().to_string(),
        secrets.display().to_string(),
    );
    let backup = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["backup", "--from", &data_s, "--to-path", &repo_s]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let s3_with = |secret: &str| -> Vec<String> {
        [
            "backup",
            "--from",
            &data_s,
            "--to-path",
            "s3://bucket/x",
            "--s3-endpoint",
            "http://127.0.0.1:1",
            "--secret-name",
            secret,
            "--secret-key-name",
            "credentials",
            "--secrets-dir",
            &secrets_s,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let az_with = |secret: &str| -> Vec<String> {
        [
            "backup",
            "--from",
            &data_s,
            "--to-path",
            "az://container/x",
            "--secret-name",
            secret,
            "--secret-key-name",
            "credentials",
            "--secrets-dir",
            &secrets_s,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        // Values files.
        (
            "values: not YAML",
            backup(&["--values", &values("v1", "backup: [unclosed\n  : :")]),
        ),
        (
            "values: unknown key",
            backup(&["--values", &values("v2", "backup:\n  bucketNmae: x\n")]),
        ),
        (
            "values: wrong type",
            backup(&["--values", &values("v3", "backup: 5\n")]),
        ),
        (
            "values: bad type value",
            backup(&["--values", &values("v4", "backup:\n  type: WEEKLY\n")]),
        ),
        (
            "values: bad database",
            backup(&[
                "--values",
                &values("v5", "backup:\n  database: \"neo/4j\"\n"),
            ]),
        ),
        (
            "values: bad cron",
            vec![
                "schedule".into(),
                "--from".into(),
                data_s.clone(),
                "--to-path".into(),
                repo_s.clone(),
                "--values".into(),
                values("v6", "neo4j:\n  jobSchedule: \"every day\"\n"),
            ],
        ),
        (
            "values: binary",
            backup(&["--values", &values("v7", "\u{0}\u{1}\u{2}\u{fffd}")]),
        ),
        (
            "values: missing file",
            backup(&["--values", "/nonexistent/values.yaml"]),
        ),
        // URLs.
        (
            "url: no bucket",
            vec![
                "backup".into(),
                "--from".into(),
                data_s.clone(),
                "--to-path".into(),
                "s3://".into(),
            ],
        ),
        (
            "url: scheme",
            vec![
                "backup".into(),
                "--from".into(),
                data_s.clone(),
                "--to-path".into(),
                "ftp://host/x".into(),
            ],
        ),
        (
            "url: gs empty",
            vec!["inspect".into(), "--from-path".into(), "gs:///x".into()],
        ),
        (
            "url: az empty",
            vec!["inspect".into(), "--from-path".into(), "az://".into()],
        ),
        // Flags.
        ("flag: type", backup(&["--type", "WEEKLY"])),
        ("flag: fallback", backup(&["--fallback-to-full=maybe"])),
        ("flag: unknown", backup(&["--frobnicate"])),
        ("flag: retry-lock", backup(&["--retry-lock", "5x"])),
        (
            "flag: restore-until",
            vec![
                "restore".into(),
                "neo4j".into(),
                "--from-path".into(),
                repo_s.clone(),
                "--to".into(),
                t.path().join("out").display().to_string(),
                "--restore-until".into(),
                "yesterday".into(),
            ],
        ),
        (
            "flag: keep-within",
            vec![
                "expire".into(),
                "--from-path".into(),
                repo_s.clone(),
                "--keep-within".into(),
                "3q".into(),
            ],
        ),
        ("flag: database name", backup(&["neo/4j"])),
        // Credentials files.
        ("credentials: broken", s3_with("aws-broken")),
        ("credentials: empty", s3_with("aws-empty")),
        ("credentials: no secret", s3_with("aws-no-secret")),
        ("credentials: missing", s3_with("nonexistent")),
        ("credentials: azure broken", az_with("az-broken")),
        ("credentials: azure partial", az_with("az-partial")),
    ];
    for (what, args) in &cases {
        let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: exit code; {}", text(&o));
        assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
        let errors = stderr.lines().filter(|l| l.starts_with("error")).count();
        assert_eq!(errors, 1, "{what}: one error line: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_default();
        assert!(line.len() > 25, "{what}: a clear error, not {line:?}");
        assert!(
            files_under(&repo).is_empty(),
            "{what}: wrote {:?}",
            files_under(&repo)
        );
        eprintln!("{what}: {line}");
    }
    eprintln!(
        "bad input: {} cases, each exit 1 with one error line, nothing written",
        cases.len()
    );
}
