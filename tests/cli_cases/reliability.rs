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

        // The next backup succeeds (a stale lock of the killed process does not block it).
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
        "crash: 256 MiB FULL killed {kills} times within {span:?}: {left_something} kills left pieces (all listed by check, {removed} removed by gc), {committed_anyway} committed before the kill; every check passed and every next backup succeeded"
    );
    assert!(left_something > 0, "no kill landed inside a backup");
}
