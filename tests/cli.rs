//! The `catena` command line, driven as a user would: exit codes, JSON shapes, error
//! messages, the seed's values files, scheduling, and a progress bar on a terminal.

#[path = "../storage-backends/tests/common/mod.rs"]
mod common;
#[path = "cli_cases/format1.rs"]
mod format1;
#[path = "cli_cases/hostile.rs"]
mod hostile;
#[path = "cli_cases/keys.rs"]
mod keys;
#[path = "cli_cases/operator.rs"]
mod operator;
#[path = "cli_cases/reliability.rs"]
mod reliability;
#[path = "cli_cases/xchacha.rs"]
mod xchacha;
use catena::values;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The example binary, built by `cargo test` next to the test binaries.
fn catena() -> Command {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("examples").join("catena");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds examples",
        bin.display()
    );
    let mut c = Command::new(bin);
    c.env_remove("RUST_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    catena().args(args).output().expect("catena runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The seed's values files, vendored from `../shared/seeds/values` so the tests do not
/// depend on where the repository is checked out.
fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-values")
}

#[test]
fn the_vendored_seed_values_match_shared_when_it_is_there() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds/values");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        eprintln!("skipped: {} is not beside this checkout", shared.display());
        return;
    };
    for e in entries {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name");
        let vendored = seeds().join(name);
        assert_eq!(
            std::fs::read(&p).expect("shared"),
            std::fs::read(&vendored).unwrap_or_default(),
            "{} differs from the vendored copy: copy it into tests/fixtures/seed-values",
            p.display()
        );
    }
}

fn make_data(root: &Path) {
    for (db, len) in [("neo4j", 400_000usize), ("system", 10_000)] {
        std::fs::create_dir_all(root.join(db)).expect("mkdir");
        std::fs::write(
            root.join(db).join("store"),
            common::data(len, len as u64, true),
        )
        .expect("write");
    }
}

#[test]
fn every_command_works_with_exit_codes_and_json() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let repo = t.path().join("repo");
    let repo_s = repo.to_str().expect("utf8");
    let data_s = data.to_str().expect("utf8");

    let o = run(&[
        "backup",
        "--from",
        data_s,
        "--to-path",
        repo_s,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("backup JSON");
    assert_eq!(v["run"]["ok"], true);
    assert_eq!(
        v["run"]["databases"][0]["decision"]["reason"],
        "full_first_backup"
    );
    assert!(
        v["run_record_key"]
            .as_str()
            .expect("key")
            .starts_with("_runs/")
    );

    let o = run(&[
        "backup",
        "neo4j",
        "--from",
        data_s,
        "--to-path",
        repo_s,
        "--dry-run",
        "--type",
        "DIFF",
    ]);
    assert!(o.status.success());
    assert!(
        text(&o).contains("neo4j: would take DIFF (1, 2] (reason diff_from_newest)"),
        "{}",
        text(&o)
    );

    let o = run(&["inspect", "--from-path", repo_s, "--format", "json"]);
    assert!(o.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect JSON");
    assert_eq!(rows.as_array().expect("rows").len(), 2);
    assert_eq!(rows[0]["kind"], "FULL");
    let o = run(&["inspect", "--from-path", repo_s, "--latest-backup"]);
    assert!(text(&o).contains("ARTIFACT") && text(&o).contains("full_first_backup"));

    let o = run(&["check", "--from-path", repo_s, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check JSON");
    assert_eq!(reports[0]["report"]["ok"], true);

    let out = t.path().join("restored");
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        out.to_str().expect("utf8"),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("restore JSON");
    assert_eq!(r["files"], 1);
    assert_eq!(
        std::fs::read(out.join("store")).expect("read"),
        std::fs::read(data.join("neo4j/store")).expect("read")
    );
    // A non-empty destination without --overwrite-destination: exit 1, message says what to do.
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--overwrite-destination"), "{}", text(&o));
    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        out.to_str().expect("utf8"),
        "--restore-until",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "nothing before position 1");

    std::fs::write(data.join("neo4j/more"), b"x").expect("write");
    assert!(
        run(&["backup", "--from", data_s, "--to-path", repo_s])
            .status
            .success()
    );
    let o = run(&[
        "aggregate",
        "neo*",
        "--from-path",
        repo_s,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).expect("aggregate JSON");
    assert_eq!(a[0]["chain"].as_array().expect("chain").len(), 2);
    // A local directory assembles the new FULL by a kernel copy, and the report says so.
    let copy = &a[0]["copy"];
    assert!(
        copy["method"]
            .as_str()
            .is_some_and(|m| m.starts_with("server")),
        "{copy}"
    );
    assert_eq!(copy["client_sent_bytes"], 0, "{copy}");
    assert!(
        copy["verified_records"].as_u64().is_some_and(|n| n > 0),
        "{copy}"
    );
    // Another DIFF, aggregated by the client's copy in text form; a bad mode is refused.
    std::fs::write(data.join("neo4j/more"), b"xy").expect("write");
    assert!(
        run(&["backup", "--from", data_s, "--to-path", repo_s])
            .status
            .success()
    );
    let o = run(&[
        "aggregate",
        "neo4j",
        "--from-path",
        repo_s,
        "--copy",
        "fast",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("reencode"), "{}", text(&o));
    let o = run(&[
        "aggregate",
        "neo4j",
        "--from-path",
        repo_s,
        "--copy",
        "client",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("copy: client (records copied as they are)"),
        "{}",
        text(&o)
    );

    let o = run(&[
        "expire",
        "--from-path",
        repo_s,
        "--keep-last",
        "1",
        "--dry-run",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["expire", "--from-path", repo_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("--keep-last") && text(&o).contains("--keep-within"),
        "{}",
        text(&o)
    );

    let o = run(&["probe", "--to-path", repo_s, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).expect("probe JSON");
    assert_eq!(p["report"]["create_only_put"]["status"], "ok");
}

#[test]
fn errors_are_clear_and_exit_1() {
    let t = tempfile::tempdir().expect("tempdir");
    let repo = t.path().join("repo");
    let repo_s = repo.to_str().expect("utf8");

    let o = run(&["backup", "--frmo", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--from"), "{}", text(&o));

    let bad = t.path().join("bad.yaml");
    std::fs::write(&bad, "backup:\n  bucketNmae: x\n").expect("write");
    let o = run(&[
        "backup",
        "--values",
        bad.to_str().expect("utf8"),
        "--from",
        ".",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("backup.bucketNmae")
            && text(&o).contains("did you mean backup.bucketName"),
        "{}",
        text(&o)
    );

    let creds = t.path().join("secrets");
    let o = run(&[
        "inspect",
        "--from-path",
        "s3://bucket/x",
        "--secret-name",
        "awscreds",
        "--secrets-dir",
        creds.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("awscreds/credentials") && text(&o).contains("cannot read"),
        "{}",
        text(&o)
    );

    let dir = t.path().join("aws");
    common::aws_secret(&dir, "awscreds", "k", "s", "us-east-1");
    let o = run(&[
        "inspect",
        "--from-path",
        "s3://bucket/x",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "--s3-force-path-style",
        "--secret-name",
        "awscreds",
        "--secrets-dir",
        dir.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("127.0.0.1:9") || text(&o).to_lowercase().contains("connect"),
        "{}",
        text(&o)
    );

    let o = run(&[
        "restore",
        "neo4j",
        "--from-path",
        repo_s,
        "--to",
        t.path().join("o").to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("has no backups"), "{}", text(&o));
    let o = run(&[
        "backup",
        "--from",
        t.path().join("none").to_str().expect("utf8"),
        "--to-path",
        repo_s,
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn the_seed_values_files_parse() {
    let mut n = 0;
    for entry in std::fs::read_dir(seeds()).expect("seeds/values") {
        let p = entry.expect("entry").path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let v = values::Values::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("aggregate-") {
            assert!(v.aggregate_only(), "{name}");
        }
        if name.starts_with("backup-")
            && name != "backup-s3-ca-secret.yaml"
            && name != "backup-s3-custom-ca.yaml"
            && name != "backup-minio-deprecated.yaml"
        {
            assert!(v.check_after(), "{name}: consistencyCheck.enabled");
        }
        n += 1;
    }
    assert!(n >= 17, "only {n} values files");
}

/// Copies a seed values file, changing only bucket, endpoint and credential values.
fn adapt(seed: &str, edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(seeds().join(seed)).expect("seed");
    for (from, to) in edits {
        assert!(text.contains(from), "{seed} has no {from:?}");
        text = text.replace(from, to);
    }
    text
}

#[test]
fn the_local_values_file_backs_up_and_checks() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let values = t.path().join("backup-local.yaml");
    std::fs::copy(seeds().join("backup-local.yaml"), &values).expect("copy");
    let backups = t.path().join("backups");
    let o = run(&[
        "backup",
        "--values",
        values.to_str().expect("utf8"),
        "--from",
        data.to_str().expect("utf8"),
        "--to-path",
        backups.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("neo4j: FULL") && out.contains("system: FULL"),
        "{out}"
    );
    assert!(
        out.contains("check neo4j: OK") && out.contains("check system: OK"),
        "{out}"
    );
    assert!(
        out.contains("not applicable outside Kubernetes") && out.contains("neo4j.image"),
        "{out}"
    );
    let reports = std::fs::read_dir(backups.join("_reports"))
        .expect("reports")
        .count();
    assert_eq!(
        reports, 2,
        "the check reports are uploaded next to the backups"
    );
}

#[test]
fn the_aws_values_file_backs_up_to_moto() {
    let Some(endpoint) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let text_values = adapt(
        "backup-aws-secret.yaml",
        &[(
            "bucketName: \"my-bucket\"",
            &format!(
                "bucketName: \"{}\"\n  s3Endpoint: \"{endpoint}\"\n  s3ForcePathStyle: true",
                common::BUCKET
            ),
        )],
    );
    let values = t.path().join("values.yaml");
    std::fs::write(&values, text_values).expect("write");
    let o = run(&[
        "backup",
        "--values",
        values.to_str().expect("utf8"),
        "--from",
        data.to_str().expect("utf8"),
        "--secrets-dir",
        secrets.to_str().expect("utf8"),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"ok\": true"), "{out}");
    // backup.database "neo4j,system", preferDiffAsParent true: a second run gives DIFFs.
    std::fs::write(data.join("neo4j/new"), b"n").expect("write");
    let o = run(&[
        "backup",
        "--values",
        values.to_str().expect("utf8"),
        "--from",
        data.to_str().expect("utf8"),
        "--secrets-dir",
        secrets.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("neo4j: DIFF") && text(&o).contains("check system: OK"),
        "{}",
        text(&o)
    );
}

#[test]
fn schedule_runs_the_job_and_keeps_its_history() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let values = t.path().join("values.yaml");
    std::fs::write(&values, "neo4j:\n  jobSchedule: \"*/5 * * * *\"\n  successfulJobsHistoryLimit: 1\nbackup:\n  database: \"neo4j\"\n  cloudProvider: \"\"\n").expect("write");
    let backups = t.path().join("backups");
    let o = run(&[
        "schedule",
        "--values",
        values.to_str().expect("utf8"),
        "--from",
        data.to_str().expect("utf8"),
        "--to-path",
        backups.to_str().expect("utf8"),
        "--max-runs",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let jobs: Vec<_> = std::fs::read_dir(backups.join("_jobs"))
        .expect("jobs")
        .collect();
    assert_eq!(
        jobs.len(),
        1,
        "history pruned to successfulJobsHistoryLimit"
    );
    let o = run(&[
        "inspect",
        "--from-path",
        backups.to_str().expect("utf8"),
        "--empty",
        "--format",
        "json",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        rows.as_array().expect("rows").len(),
        2,
        "two runs, two artifacts"
    );
}

/// A run that fails in a way a retry cannot mend (here: a DIFF with no FULL to build on and
/// fallbackToFull off) is reported once, not retried backoffLimit times.
#[test]
fn schedule_does_not_retry_a_permanent_failure() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let values = t.path().join("values.yaml");
    std::fs::write(
        &values,
        "neo4j:\n  backoffLimit: 3\nbackup:\n  database: \"neo4j\"\n  type: DIFF\n  fallbackToFull: false\n",
    )
    .expect("write");
    let backups = t.path().join("backups");
    let o = run(&[
        "schedule",
        "--values",
        values.to_str().expect("utf8"),
        "--from",
        data.to_str().expect("utf8"),
        "--to-path",
        backups.to_str().expect("utf8"),
        "--max-runs",
        "1",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("not retried"), "{out}");
    assert!(!out.contains("retry 1 of"), "{out}");
    let jobs: Vec<_> = std::fs::read_dir(backups.join("_jobs"))
        .expect("jobs")
        .flatten()
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(jobs[0].path()).expect("read")).expect("json");
    assert!(
        jobs[0].file_name().to_string_lossy().contains("-failed-") && record["retries"] == 0,
        "{record}"
    );
}

#[test]
fn a_backup_on_a_terminal_draws_a_progress_bar() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data/neo4j");
    std::fs::create_dir_all(&data).expect("mkdir");
    for i in 0..8u64 {
        std::fs::write(
            data.join(format!("store-{i}")),
            common::data(32 << 20, i, i % 2 == 0),
        )
        .expect("write");
    }
    let exe = catena().get_program().to_owned();
    let cmd = format!(
        "{} backup --from {} --to-path {}",
        exe.to_string_lossy(),
        t.path().join("data").display(),
        t.path().join("repo").display()
    );
    // `script` runs the command in a pseudo-terminal and copies what it drew.
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .output()
        .expect("script runs");
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(
        screen.contains("backup neo4j") && screen.contains("MiB/s") && screen.contains("ETA"),
        "no progress bar drawn: {screen}"
    );
}

#[test]
fn schedule_stops_cleanly_on_sigterm() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let values = t.path().join("values.yaml");
    // Once a year: the scheduler is waiting when the signal comes.
    std::fs::write(
        &values,
        "neo4j:\n  jobSchedule: \"0 0 1 1 *\"\nbackup:\n  cloudProvider: \"\"\n",
    )
    .expect("write");
    let mut child = catena()
        .args([
            "schedule",
            "--values",
            values.to_str().expect("utf8"),
            "--from",
            data.to_str().expect("utf8"),
        ])
        .args([
            "--to-path",
            t.path().join("backups").to_str().expect("utf8"),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until it says it is scheduled, then send SIGTERM.
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("Ctrl-C to stop") {
        let n = std::io::Read::read(&mut stderr, &mut buf).expect("read");
        assert!(n > 0, "the scheduler exited early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("read");
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "{seen}{rest}");
    assert!(rest.contains("stopping"), "{rest}");
}

#[test]
fn demo_ends_by_reporting_the_restore_verified() {
    let t = tempfile::tempdir().expect("tempdir");
    let o = run(&["demo", "--keep", t.path().to_str().expect("utf8")]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("restore verified:") && out.contains("byte-identical to the source"),
        "{out}"
    );
    assert!(out.contains("diff_from_newest_diff"), "{out}");
}

/// The values file fuzz corpus replays clean (`fuzz/run.sh` grows it).
#[test]
fn fuzz_corpus_values_replays_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/values");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        values::fuzz_check(&data);
        n += 1;
    }
    assert!(n >= 5, "only {n} inputs");
}

/// The examples for library users run (they are built by `cargo test` beside this one).
#[test]
fn library_examples_run() {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples");
    let o = Command::new(dir.join("backup_directory"))
        .output()
        .expect("backup_directory runs");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("full_first_backup") && text(&o).contains("verified"),
        "{}",
        text(&o)
    );
    // A source that is not a directory: a command's output, restored byte for byte; a
    // command that fails is a failed backup, not an empty one.
    let o = Command::new(dir.join("custom_source"))
        .output()
        .expect("custom_source runs");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("identical to the command's output"),
        "{}",
        text(&o)
    );
    let o = Command::new(dir.join("custom_source"))
        .args(["sh", "-c", "echo partial; exit 3"])
        .output()
        .expect("custom_source runs");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("exited with"), "{}", text(&o));
    let repo = tempfile::tempdir().expect("tempdir");
    let o = Command::new(dir.join("upload_throughput"))
        .arg("8")
        .arg(format!("file://{}", repo.path().display()))
        .output()
        .expect("upload_throughput runs");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("MiB/s"), "{}", text(&o));
    let left: Vec<_> = std::fs::read_dir(repo.path().join("throughput"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the uncommitted object is removed: {left:?}"
    );
}
