//! chain-core's tests: the decision matrix, the planners, the catalog's validation, the
//! state model, property tests over random forests and change sets, and the replay of the
//! fuzz corpora.

mod common;
mod props;

use chain_core::*;
use common::*;

// ---------------------------------------------------------------------------------------
// The backup decision
// ---------------------------------------------------------------------------------------

/// The example from Neo4j's documentation of `preferDiffAsParent`: full 1-10, diff 11-20,
/// diff 21-30, an empty diff, then full 1-40. The next DIFF (the source is at 50) covers
/// 41-50 by default and 31-50 with preferDiffAsParent.
#[test]
fn neo4j_documented_example_prefer_diff_as_parent() {
    let mut f = Forest::new("neo4j");
    let full_10 = f.full_to(10);
    let diff_20 = f.diff_to(&full_10, 20);
    let diff_30 = f.diff_to(&diff_20, 30);
    let _empty = f.empty_to(&diff_30, 30);
    let full_40 = f.full_to(40);
    let catalog = f.catalog();
    assert!(catalog.validate().is_empty(), "{:?}", catalog.validate());
    let source = SourceCapability {
        position: Some(Position(50)),
        diff_support: DiffSupport::Any,
    };

    let default =
        decide_backup(&catalog, request(BackupType::Auto, false, true), source).expect("decision");
    assert_eq!(default.kind, ArtifactKind::Diff);
    assert_eq!(default.parent, Some(full_40));
    assert_eq!(default.positions.to_string(), "(40, 50]");
    assert_eq!(default.reason, ReasonCode::DiffFromNewest);

    let prefer =
        decide_backup(&catalog, request(BackupType::Auto, true, true), source).expect("decision");
    assert_eq!(prefer.kind, ArtifactKind::Diff);
    assert_eq!(prefer.parent, Some(diff_30));
    assert_eq!(prefer.positions.to_string(), "(30, 50]");
    assert_eq!(prefer.reason, ReasonCode::DiffFromNewestDiff);
}

/// One situation of the decision table: a catalog and a source.
struct Situation {
    name: &'static str,
    forest: Forest,
    source: SourceCapability,
    /// Labels of the forest's artifacts, to name expected parents.
    labels: Vec<(&'static str, ArtifactId)>,
}

fn situations() -> Vec<Situation> {
    let any = SourceCapability::DIRECTORY;
    let mut out = Vec::new();

    out.push(Situation {
        name: "empty",
        forest: Forest::new("db"),
        source: any,
        labels: vec![],
    });

    let mut f = Forest::new("db");
    let f1 = f.full();
    out.push(Situation {
        name: "full",
        forest: f,
        source: any,
        labels: vec![("F1", f1)],
    });

    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    let f2 = f.full();
    out.push(Situation {
        name: "full-diff-newer-full",
        forest: f,
        source: any,
        labels: vec![("F1", f1), ("D1", d1), ("F2", f2)],
    });

    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    let e1 = f.empty(&d1);
    out.push(Situation {
        name: "newest-is-empty",
        forest: f,
        source: any,
        labels: vec![("F1", f1), ("D1", d1), ("E1", e1)],
    });

    // A DIFF whose FULL is gone: the only candidate, and unusable.
    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    f.manifests.retain(|m| m.id != f1);
    out.push(Situation {
        name: "only-orphan-diff",
        forest: f,
        source: any,
        labels: vec![("D1", d1)],
    });

    // The newest DIFF is broken (positions not contiguous): skipped, the FULL is used.
    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    let m = f.manifests.iter_mut().find(|m| m.id == d1).expect("d1");
    m.positions.from = Position(0);
    m.decision.positions.from = Position(0);
    out.push(Situation {
        name: "newest-diff-broken",
        forest: f,
        source: any,
        labels: vec![("F1", f1), ("D1", d1)],
    });

    let mut f = Forest::new("db");
    let f1 = f.full_to(10);
    out.push(Situation {
        name: "source-logs-pruned",
        forest: f,
        source: SourceCapability {
            position: Some(Position(20)),
            diff_support: DiffSupport::Since(Position(15)),
        },
        labels: vec![("F1", f1)],
    });

    let mut f = Forest::new("db");
    let f1 = f.full_to(10);
    out.push(Situation {
        name: "source-behind-parent",
        forest: f,
        source: SourceCapability {
            position: Some(Position(5)),
            diff_support: DiffSupport::Any,
        },
        labels: vec![("F1", f1)],
    });

    let mut f = Forest::new("db");
    let f1 = f.full_to(10);
    out.push(Situation {
        name: "source-never-diffs",
        forest: f,
        source: SourceCapability {
            position: Some(Position(20)),
            diff_support: DiffSupport::Never,
        },
        labels: vec![("F1", f1)],
    });
    out
}

/// The expected outcome of a row: `FULL <reason>`, `DIFF <parent label> <reason>` or
/// `ERR <variant>`. `*` in a row's type, prefer or fallback column matches any value.
const DECISION_TABLE: &[(&str, &str, &str, &str, &str)] = &[
    // situation,             type,   prefer, fallback, expected
    ("*", "FULL", "*", "*", "FULL full_requested"),
    ("empty", "AUTO", "*", "*", "FULL full_first_backup"),
    ("empty", "DIFF", "*", "true", "FULL full_fallback_no_parent"),
    ("empty", "DIFF", "*", "false", "ERR DiffWithoutParent"),
    ("full", "*", "false", "*", "DIFF F1 diff_from_newest"),
    ("full", "*", "true", "*", "DIFF F1 diff_from_newest_full"),
    (
        "full-diff-newer-full",
        "*",
        "false",
        "*",
        "DIFF F2 diff_from_newest",
    ),
    (
        "full-diff-newer-full",
        "*",
        "true",
        "*",
        "DIFF D1 diff_from_newest_diff",
    ),
    (
        "newest-is-empty",
        "*",
        "false",
        "*",
        "DIFF D1 diff_from_newest",
    ),
    (
        "newest-is-empty",
        "*",
        "true",
        "*",
        "DIFF D1 diff_from_newest_diff",
    ),
    (
        "only-orphan-diff",
        "*",
        "*",
        "true",
        "FULL full_fallback_parent_unusable",
    ),
    ("only-orphan-diff", "*", "*", "false", "ERR NoUsableParent"),
    (
        "newest-diff-broken",
        "*",
        "false",
        "*",
        "DIFF F1 diff_from_newest",
    ),
    (
        "newest-diff-broken",
        "*",
        "true",
        "*",
        "DIFF F1 diff_from_newest_full",
    ),
    (
        "source-logs-pruned",
        "*",
        "*",
        "true",
        "FULL full_fallback_source_cannot_diff",
    ),
    (
        "source-logs-pruned",
        "*",
        "*",
        "false",
        "ERR SourceCannotDiff",
    ),
    (
        "source-behind-parent",
        "*",
        "*",
        "true",
        "FULL full_fallback_source_cannot_diff",
    ),
    (
        "source-behind-parent",
        "*",
        "*",
        "false",
        "ERR SourceCannotDiff",
    ),
    (
        "source-never-diffs",
        "*",
        "*",
        "true",
        "FULL full_fallback_source_cannot_diff",
    ),
    (
        "source-never-diffs",
        "*",
        "*",
        "false",
        "ERR SourceCannotDiff",
    ),
];

fn outcome(s: &Situation, result: Result<BackupDecision, Error>) -> String {
    match result {
        Ok(d) => match (&d.kind, &d.parent) {
            (ArtifactKind::Full, None) => format!("FULL {}", d.reason),
            (ArtifactKind::Diff, Some(p)) => {
                let label = s
                    .labels
                    .iter()
                    .find(|(_, id)| id == p)
                    .map(|(l, _)| *l)
                    .unwrap_or("?");
                format!("DIFF {label} {}", d.reason)
            }
            other => format!("MALFORMED {other:?}"),
        },
        Err(e) => {
            let dbg = format!("{e:?}");
            let variant = dbg.split([' ', '{', '(']).next().unwrap_or("").to_owned();
            format!("ERR {variant}")
        }
    }
}

/// Every combination of situation x type x preferDiffAsParent x fallbackToFull is covered
/// by exactly one row of the table (the first that matches), and gives that row's outcome.
#[test]
fn decision_matrix_matches_the_table() {
    let mut checked = 0;
    for s in situations() {
        let catalog = s.forest.catalog();
        for t in [BackupType::Full, BackupType::Diff, BackupType::Auto] {
            for prefer in [false, true] {
                for fallback in [false, true] {
                    let row = DECISION_TABLE
                        .iter()
                        .find(|(sit, ty, p, fb, _)| {
                            (*sit == "*" || *sit == s.name)
                                && (*ty == "*" || *ty == t.to_string())
                                && (*p == "*" || *p == prefer.to_string())
                                && (*fb == "*" || *fb == fallback.to_string())
                        })
                        .unwrap_or_else(|| {
                            panic!(
                                "no row for {} {t} prefer={prefer} fallback={fallback}",
                                s.name
                            )
                        });
                    let got = outcome(
                        &s,
                        decide_backup(&catalog, request(t, prefer, fallback), s.source),
                    );
                    assert_eq!(
                        got, row.4,
                        "situation {} type {t} prefer={prefer} fallback={fallback}",
                        s.name
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 9 * 3 * 2 * 2);
}

#[test]
fn skipped_parents_are_recorded_with_their_reason() {
    let s = situations()
        .into_iter()
        .find(|s| s.name == "newest-diff-broken")
        .expect("situation");
    let d = decide_backup(
        &s.forest.catalog(),
        BackupRequest::default(),
        SourceCapability::DIRECTORY,
    )
    .expect("decision");
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(&d.skipped[0].artifact, &s.labels[1].1);
    assert!(
        d.skipped[0].why.contains("starts at position 0"),
        "{}",
        d.skipped[0].why
    );
}

#[test]
fn unusable_parent_error_names_the_candidates_and_next_step() {
    let s = situations()
        .into_iter()
        .find(|s| s.name == "only-orphan-diff")
        .expect("situation");
    let err = decide_backup(
        &s.forest.catalog(),
        request(BackupType::Diff, false, false),
        SourceCapability::DIRECTORY,
    )
    .expect_err("no usable parent");
    let msg = err.to_string();
    assert!(msg.contains(&s.labels[0].1.to_string()), "{msg}");
    assert!(msg.contains("is missing"), "{msg}");
    assert!(msg.contains("fallbackToFull"), "{msg}");
}

#[test]
fn diff_falls_back_to_full_when_parent_turns_out_corrupt() {
    let mut f = Forest::new("db");
    let f1 = f.full();
    let catalog = f.catalog();
    let planned = decide_backup(
        &catalog,
        BackupRequest::default(),
        SourceCapability::DIRECTORY,
    )
    .expect("decision");
    assert_eq!(planned.parent, Some(f1.clone()));

    let full = fallback_after_diff_failure(&planned, &f.db, "index checksum mismatch")
        .expect("fallback allowed");
    assert_eq!(full.kind, ArtifactKind::Full);
    assert_eq!(full.parent, None);
    assert_eq!(full.reason, ReasonCode::FullFallbackDiffFailed);
    assert_eq!(full.positions.from, Position::ZERO);
    assert_eq!(full.positions.to, planned.positions.to);
    assert_eq!(full.skipped.last().map(|s| &s.artifact), Some(&f1));
    assert!(
        full.detail
            .as_deref()
            .unwrap_or("")
            .contains("index checksum mismatch")
    );

    let strict = BackupDecision {
        request: request(BackupType::Auto, false, false),
        ..planned
    };
    let err = fallback_after_diff_failure(&strict, &f.db, "index checksum mismatch")
        .expect_err("fallback forbidden");
    assert!(matches!(err, Error::DiffFailed { .. }));
    assert!(err.to_string().contains(&f1.to_string()));
}

#[test]
fn catena_sequence_continues_after_the_highest_position() {
    let mut f = Forest::new("db");
    let f1 = f.full_to(7);
    let _f2 = f.full_to(12);
    let catalog = f.catalog();
    let d = decide_backup(
        &catalog,
        request(BackupType::Auto, true, true),
        SourceCapability::DIRECTORY,
    )
    .expect("decision");
    // preferDiffAsParent with no DIFF: the newest FULL; the sequence goes on from 12.
    assert_eq!(d.positions.to, Position(13));
    assert_ne!(d.parent, Some(f1));
}

#[test]
fn every_reason_code_has_a_distinct_name_and_description() {
    let names: std::collections::BTreeSet<_> = ReasonCode::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), ReasonCode::ALL.len());
    for r in ReasonCode::ALL {
        let json = serde_json::to_string(&r).expect("serialize");
        assert_eq!(json, format!("\"{}\"", r.as_str()));
        assert!(!r.describe().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------

#[test]
fn restore_until_position_is_exclusive_and_until_time_uses_commit_time() {
    let mut f = Forest::new("neo4j");
    let full_10 = f.full_to(10);
    let diff_20 = f.diff_to(&full_10, 20);
    let diff_30 = f.diff_to(&diff_20, 30);
    let catalog = f.catalog();

    let p = plan_restore(&catalog, &RestoreTarget::Latest).expect("latest");
    assert_eq!(
        p.chain,
        vec![full_10.clone(), diff_20.clone(), diff_30.clone()]
    );
    assert_eq!(p.position, Position(30));

    let p = plan_restore(&catalog, &RestoreTarget::UntilPosition(Position(30))).expect("until 30");
    assert_eq!(p.target, diff_20, "position 30 itself is excluded");
    let p = plan_restore(&catalog, &RestoreTarget::UntilPosition(Position(31))).expect("until 31");
    assert_eq!(p.target, diff_30);
    let err = plan_restore(&catalog, &RestoreTarget::UntilPosition(Position(10)))
        .expect_err("nothing before 10");
    assert!(matches!(err, Error::NothingBefore { .. }), "{err}");

    // diff_20 was committed at base + 2 s.
    let t = f.time(2);
    let p = plan_restore(&catalog, &RestoreTarget::UntilTime(t)).expect("until time");
    assert_eq!(p.target, full_10, "committed strictly before");
    let p = plan_restore(&catalog, &RestoreTarget::UntilTime(f.time(3))).expect("until time");
    assert_eq!(p.target, diff_20);
}

#[test]
fn restore_latest_prefers_an_aggregated_full_over_the_chain_it_replaced() {
    let mut f = Forest::new("db");
    let f1 = f.full_to(10);
    let d1 = f.diff_to(&f1, 20);
    let agg = f.full_to(20);
    let catalog = f.catalog();
    let p = plan_restore(&catalog, &RestoreTarget::Latest).expect("latest");
    assert_eq!(p.chain, vec![agg]);
    let p = plan_restore(&catalog, &RestoreTarget::Artifact(d1.clone())).expect("d1");
    assert_eq!(p.chain, vec![f1, d1]);
}

#[test]
fn restore_of_a_broken_chain_says_where_it_breaks() {
    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    let d2 = f.diff(&d1);
    f.manifests.retain(|m| m.id != d1);
    let catalog = f.catalog();
    let err = plan_restore(&catalog, &RestoreTarget::Artifact(d2.clone())).expect_err("broken");
    let msg = err.to_string();
    assert!(
        msg.contains(&d1.to_string()) && msg.contains("missing"),
        "{msg}"
    );
    // Latest does not quietly restore the FULL instead of the broken newest DIFF: it says
    // why, and how to restore the newest usable point on purpose.
    let err = plan_restore(&catalog, &RestoreTarget::Latest).expect_err("newest unusable");
    let full_to = catalog.get(&f1).expect("f1").positions.to;
    let msg = err.to_string();
    assert!(
        matches!(err, Error::NewestUnusable { ref artifact, .. } if *artifact == d2),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("--restore-until {}", full_to.next()))
            && msg.contains(&f1.to_string()),
        "{msg}"
    );
    let p = plan_restore(&catalog, &RestoreTarget::UntilPosition(full_to.next())).expect("until");
    assert_eq!(p.chain, vec![f1]);
    let empty = Catalog::new(f.db.clone(), []);
    assert!(matches!(
        plan_restore(&empty, &RestoreTarget::Latest),
        Err(Error::NoBackups { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Aggregate and expire
// ---------------------------------------------------------------------------------------

#[test]
fn aggregate_deletes_the_chain_but_keeps_parents_of_live_branches() {
    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    let d2 = f.diff(&d1);
    let e = f.empty(&d2);
    let branch = f.diff(&d1); // a DIFF of d1 made later (e.g. preferDiffAsParent)
    let d3 = f.diff(&d2);
    let catalog = f.catalog();

    let plan =
        plan_aggregate(&catalog, &AggregateTarget::Artifact(d3.clone()), false).expect("plan");
    assert_eq!(
        plan.chain,
        vec![f1.clone(), d1.clone(), d2.clone(), d3.clone()]
    );
    assert!(!plan.already_full);
    let deleted: Vec<_> = plan.delete.iter().map(|d| d.artifact.clone()).collect();
    assert_eq!(
        deleted,
        vec![d3, e, d2],
        "children first; f1 and d1 carry `branch`"
    );
    let kept: Vec<_> = plan.keep.iter().map(|k| k.artifact.clone()).collect();
    assert_eq!(kept, vec![f1, d1]);
    assert!(plan.keep.iter().all(|k| matches!(
        &k.reason,
        KeepReason::ParentOfLive { descendant } if *descendant == branch
    )));

    let keep_all = plan_aggregate(&catalog, &AggregateTarget::Latest, true).expect("plan");
    assert!(keep_all.delete.is_empty());
}

#[test]
fn aggregate_of_a_lone_full_has_nothing_to_do() {
    let mut f = Forest::new("db");
    let f1 = f.full();
    let plan = plan_aggregate(&f.catalog(), &AggregateTarget::Latest, false).expect("plan");
    assert!(plan.already_full);
    assert_eq!(plan.chain, vec![f1]);
    assert!(plan.delete.is_empty());
}

#[test]
fn expire_keeps_last_chains_and_never_the_newest_tree() {
    let mut f = Forest::new("db");
    let a = f.full();
    let a1 = f.diff(&a);
    let b = f.full();
    let b1 = f.diff(&b);
    let c = f.full();
    let catalog = f.catalog();
    let now = f.time(1_000_000);

    let plan = plan_expire(
        &catalog,
        &ExpirePolicy {
            keep_last_chains: Some(2),
            keep_within: None,
        },
        now,
    )
    .expect("plan");
    let deleted: Vec<_> = plan.delete.iter().map(|d| d.artifact.clone()).collect();
    assert_eq!(deleted, vec![a1, a]);
    assert!(plan.keep.iter().any(|k| k.artifact == b1));

    // Everything is older than a minute, but the newest tree stays.
    let plan = plan_expire(
        &catalog,
        &ExpirePolicy {
            keep_last_chains: None,
            keep_within: Some(std::time::Duration::from_secs(60)),
        },
        now,
    )
    .expect("plan");
    assert!(
        plan.keep
            .iter()
            .any(|k| k.artifact == c && k.reason == KeepReason::NewestBackup)
    );
    assert_eq!(plan.delete.len(), 4);

    for bad in [
        ExpirePolicy::default(),
        ExpirePolicy {
            keep_last_chains: Some(0),
            keep_within: None,
        },
    ] {
        assert!(matches!(
            plan_expire(&catalog, &bad, now),
            Err(Error::InvalidExpirePolicy { .. })
        ));
    }
}

#[test]
fn expire_orders_trees_by_their_newest_artifact() {
    // preferDiffAsParent keeps extending the old tree after a newer FULL.
    let mut f = Forest::new("db");
    let old = f.full();
    let old_d = f.diff(&old);
    let newer_full = f.full();
    let old_d2 = f.diff(&old_d);
    let plan = plan_expire(
        &f.catalog(),
        &ExpirePolicy {
            keep_last_chains: Some(1),
            keep_within: None,
        },
        f.time(10_000),
    )
    .expect("plan");
    let deleted: Vec<_> = plan.delete.iter().map(|d| d.artifact.clone()).collect();
    assert_eq!(deleted, vec![newer_full]);
    assert!(plan.keep.iter().any(|k| k.artifact == old_d2));
}

/// The state digest is the byte encoding FORMAT.md gives ("State digest"), written out here
/// by hand: a hard link is kind 0x03 with its target, the recorded root follows the entries,
/// and a state without hard links or root hashes as format 1 did (its digests stay valid).
#[test]
fn the_state_digest_is_the_documented_encoding() {
    fn put(v: &mut Vec<u8>, b: &[u8]) {
        v.extend((b.len() as u64).to_be_bytes());
        v.extend(b);
    }
    fn meta(v: &mut Vec<u8>, mode: u32, mtime: i64) {
        v.extend(mode.to_be_bytes());
        v.extend(mtime.to_be_bytes());
        v.push(0); // no owner
        v.extend(0u64.to_be_bytes()); // no xattrs
    }
    let block = BlockRef {
        digest: Sha256Digest::of(b"content"),
        len: 7,
    };
    let path = |p: &str| EntryPath::new(p).expect("path");
    let m = |mode, mtime_ns| Metadata {
        mode,
        mtime_ns,
        ..Metadata::default()
    };
    let entries = vec![
        Entry {
            stamp: None,
            path: path("a"),
            kind: EntryKind::File {
                size: 7,
                blocks: vec![block],
            },
            meta: m(0o644, 1),
        },
        Entry {
            stamp: None,
            path: path("b"),
            kind: EntryKind::HardLink { target: path("a") },
            meta: m(0o644, 1),
        },
    ];
    let mut v = b"catena-state-v1\n".to_vec();
    v.extend(2u64.to_be_bytes());
    put(&mut v, b"a");
    v.push(1);
    v.extend(7u64.to_be_bytes());
    v.extend(1u64.to_be_bytes());
    v.extend(block.digest.0);
    v.extend(7u32.to_be_bytes());
    meta(&mut v, 0o644, 1);
    put(&mut v, b"b");
    v.push(3);
    put(&mut v, b"a");
    meta(&mut v, 0o644, 1);
    let without_root = State::from_entries(entries.clone());
    assert_eq!(without_root.digest(), Sha256Digest::of(&v));
    v.extend(b"root");
    meta(&mut v, 0o750, -5);
    let with_root = State::from_entries(entries).with_root(Some(m(0o750, -5)));
    assert_eq!(with_root.digest(), Sha256Digest::of(&v));
    assert_ne!(with_root.digest(), without_root.digest());
}

/// A hard link must name a regular file of the same state: one validation refuses the
/// others for restore and check alike.
#[test]
fn a_hard_link_must_name_a_file_of_the_state() {
    let path = |p: &str| EntryPath::new(p).expect("path");
    let entry = |p: &str, kind| Entry {
        stamp: None,
        path: path(p),
        kind,
        meta: Metadata::default(),
    };
    let link = |t: &str| entry("l", EntryKind::HardLink { target: path(t) });
    let file = entry(
        "f",
        EntryKind::File {
            size: 0,
            blocks: vec![],
        },
    );
    let ok = State::from_entries([file.clone(), link("f")]);
    assert!(check_restorable(&ok, |_| None).is_ok());
    for (state, why) in [
        (State::from_entries([link("f")]), "not in the state"),
        (
            State::from_entries([entry("f", EntryKind::Directory), link("f")]),
            "not a regular file",
        ),
        (State::from_entries([file, link("l")]), "not a regular file"),
    ] {
        let err = check_restorable(&state, |_| None)
            .expect_err(why)
            .to_string();
        assert!(err.contains(why) && err.contains('l'), "{err}");
    }
    assert!(link("l").validate().is_err(), "a link naming itself");
}

// ---------------------------------------------------------------------------------------
// Catalog validation
// ---------------------------------------------------------------------------------------

#[test]
fn validate_reports_every_problem_with_the_artifacts_involved() {
    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    let d2 = f.diff(&d1);
    let e = f.empty(&d2);
    let gone = f.diff(&d2);
    let orphan = f.diff(&gone);
    f.manifests.retain(|m| m.id != gone);
    let on_empty = {
        let id = f.diff(&d2);
        let m = f.manifests.last_mut().expect("just pushed");
        m.parent = Some(e.clone());
        m.decision.parent = Some(e.clone());
        id
    };
    let dup = f.manifests[0].clone();
    f.manifests.push(dup);
    let mut other = Forest::new("other");
    let stranger = other.full();
    f.manifests.push(other.manifests[0].clone());

    let catalog = f.catalog();
    let problems = catalog.validate();
    let has = |wanted: &dyn Fn(&CatalogProblem) -> bool| problems.iter().any(wanted);
    assert!(has(
        &|p| matches!(p, CatalogProblem::MissingParent { artifact, parent } if *artifact == orphan && *parent == gone)
    ));
    assert!(has(
        &|p| matches!(p, CatalogProblem::EmptyParent { artifact, .. } if *artifact == on_empty)
    ));
    assert!(has(
        &|p| matches!(p, CatalogProblem::DuplicateId { artifact } if *artifact == f1)
    ));
    assert!(has(
        &|p| matches!(p, CatalogProblem::MixedDatabase { artifact, .. } if *artifact == stranger)
    ));
    // A duplicated FULL makes everything above it unusable, with the reason.
    match catalog.usability(&d2) {
        Some(Err(Unusable::ChainBroken { ancestor, .. })) => assert_eq!(ancestor, f1),
        other => panic!("d2 should be broken at f1: {other:?}"),
    }
    for p in &problems {
        assert!(!p.artifacts().is_empty());
        assert!(!p.to_string().is_empty());
    }
}

#[test]
fn validate_finds_cycles_without_looping() {
    let mut f = Forest::new("db");
    let f1 = f.full();
    let d1 = f.diff(&f1);
    let d2 = f.diff(&d1);
    let m = f.manifests.iter_mut().find(|m| m.id == d1).expect("d1");
    m.parent = Some(d2.clone());
    m.decision.parent = Some(d2.clone());
    let catalog = f.catalog();
    let problems = catalog.validate();
    assert!(
        problems.iter().any(|p| matches!(p, CatalogProblem::Cycle { artifacts } if artifacts.contains(&d1) && artifacts.contains(&d2))),
        "{problems:?}"
    );
    assert!(!catalog.is_usable(&d1) && !catalog.is_usable(&d2));
    assert!(catalog.is_usable(&f1));
}

// ---------------------------------------------------------------------------------------
// Manifests and ids
// ---------------------------------------------------------------------------------------

#[test]
fn manifest_round_trips_through_json() {
    let mut f = Forest::new("neo4j");
    let f1 = f.full();
    let _ = f.diff(&f1);
    for m in &f.manifests {
        let json = m.to_json();
        assert_eq!(&Manifest::from_json(&json).expect("decode"), m);
    }
}

#[test]
fn manifest_of_a_newer_format_is_refused_with_upgrade_advice() {
    let mut f = Forest::new("neo4j");
    f.full();
    let mut v: serde_json::Value = serde_json::from_slice(&f.manifests[0].to_json()).expect("json");
    // Format 3 is an encrypted repository's; the first unknown one comes after it.
    v["format_version"] = serde_json::json!(ENCRYPTED_MANIFEST_FORMAT_VERSION + 1);
    v["a_field_from_the_future"] = serde_json::json!(true);
    let err = Manifest::from_json(&serde_json::to_vec(&v).expect("json")).expect_err("newer");
    assert!(matches!(err, Error::UnsupportedManifestVersion { .. }));
    assert!(err.to_string().contains("upgrade"), "{err}");
}

/// Re-seals an edited manifest (when it still has the manifest's shape), so that the
/// decoder's own checks, not the seal, are what refuses it.
fn reseal(mut v: serde_json::Value) -> Vec<u8> {
    v.as_object_mut()
        .expect("object")
        .remove(chain_core::sealed::SEAL_FIELD);
    match serde_json::from_value::<Manifest>(v.clone()) {
        Ok(m) => chain_core::sealed::seal(&m),
        Err(_) => serde_json::to_vec(&v).expect("json"),
    }
}

#[test]
fn manifest_with_a_changed_byte_is_refused_by_its_seal() {
    let mut f = Forest::new("neo4j");
    f.full();
    let json = f.manifests[0].to_json();
    let text = String::from_utf8(json.clone()).expect("utf8");
    // A change that still parses: one digit of the commit time.
    let at = text.find("\"committed_at\": \"2026").expect("field") + 20;
    let mut bad = json.clone();
    bad[at] = if bad[at] == b'1' { b'2' } else { b'1' };
    let err = Manifest::from_json(&bad).expect_err("altered");
    assert!(err.to_string().contains("seal"), "{err}");
}

#[test]
fn manifest_with_unknown_field_or_inconsistent_fields_is_refused() {
    let mut f = Forest::new("neo4j");
    f.full();
    let good: serde_json::Value = serde_json::from_slice(&f.manifests[0].to_json()).expect("json");
    type Damage = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "unknown field",
            Box::new(|v| v["extra"] = serde_json::json!(1)),
        ),
        (
            "no version",
            Box::new(|v| {
                v.as_object_mut().expect("object").remove("format_version");
            }),
        ),
        (
            "other database",
            Box::new(|v| v["database"] = serde_json::json!("system")),
        ),
        (
            "full not from 0",
            Box::new(|v| v["positions"]["from"] = serde_json::json!(1)),
        ),
        (
            "bad key",
            Box::new(|v| v["objects"][0]["key"] = serde_json::json!("../x")),
        ),
        (
            "size mismatch",
            Box::new(|v| v["sizes"]["stored_bytes"] = serde_json::json!(1)),
        ),
        (
            "empty full",
            Box::new(|v| v["empty"] = serde_json::json!(true)),
        ),
        (
            "bad digest",
            Box::new(|v| v["state_digest"] = serde_json::json!("00")),
        ),
    ];
    for (name, damage) in cases {
        let mut v = good.clone();
        damage(&mut v);
        assert!(
            Manifest::from_json(&reseal(v)).is_err(),
            "{name} was accepted"
        );
    }
    // A DIFF whose positions run backwards.
    let f1 = f.manifests[0].id.clone();
    f.diff_to(&f1, 20);
    let mut v: serde_json::Value = serde_json::from_slice(&f.manifests[1].to_json()).expect("json");
    v["positions"]["from"] = serde_json::json!(30);
    v["decision"]["positions"]["from"] = serde_json::json!(30);
    let err = Manifest::from_json(&reseal(v)).expect_err("backwards");
    assert!(err.to_string().contains("run backwards"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Fuzz corpora, replayed
// ---------------------------------------------------------------------------------------

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        check(&data);
        n += 1;
    }
    assert!(n >= 5, "corpus {target} has only {n} inputs");
}

#[test]
fn fuzz_corpus_manifest_replays_clean() {
    replay("manifest", chain_core::fuzz_checks::manifest);
}

#[test]
fn fuzz_corpus_artifact_id_replays_clean() {
    replay("artifact_id", chain_core::fuzz_checks::artifact_id);
}

#[test]
fn fuzz_corpus_index_replays_clean() {
    replay("index", chain_core::fuzz_checks::index);
}

#[test]
fn fuzz_corpus_block_replays_clean() {
    replay("block", chain_core::fuzz_checks::block);
}

#[test]
fn fuzz_corpus_key_slot_replays_clean() {
    replay("key_slot", chain_core::fuzz_checks::key_slot);
}

#[test]
fn fuzz_corpus_repo_config_replays_clean() {
    replay("repo_config", chain_core::fuzz_checks::repo_config);
}

/// Writes the hand-picked seeds of the fuzz corpora (valid manifests and ids, and near
/// misses). Run with `cargo test -p chain-core -- --ignored write_fuzz_seeds` after a format
/// change; the fuzzers add their own finds beside them.
#[test]
#[ignore = "writes files; run by hand to refresh the fuzz seeds"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut f = Forest::new("neo4j");
    let f1 = f.full_to(10);
    let d1 = f.diff_to(&f1, 20);
    f.empty_to(&d1, 20);
    let dir = root.join("manifest");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (i, m) in f.manifests.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}.json")), m.to_json()).expect("write");
    }
    std::fs::write(dir.join("seed-empty-object.json"), b"{}").expect("write");
    std::fs::write(dir.join("seed-future.json"), br#"{"format_version": 99}"#).expect("write");
    std::fs::write(dir.join("seed-not-json.json"), b"\xff\x00[").expect("write");
    let dir = root.join("artifact_id");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (i, s) in [
        d1.to_string(),
        "a-20260101T000000.000000Z-0000000000000000".to_owned(),
        "my-db.v2-99991231T235959.999999Z-ffffffffffffffff".to_owned(),
        "neo4j-20260230T000000.000000Z-0000000000000000".to_owned(),
        "--".to_owned(),
        "neo4j".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(dir.join(format!("seed-{i}")), s).expect("write");
    }

    let block_dir = root.join("block");
    let index_dir = root.join("index");
    std::fs::create_dir_all(&block_dir).expect("mkdir");
    std::fs::create_dir_all(&index_dir).expect("mkdir");
    let mut entries = Vec::new();
    let mut locations = Vec::new();
    let mut offset = 0u64;
    for (i, (raw, c)) in [
        (b"x".to_vec(), Compression::None),
        (vec![0u8; 4096], Compression::Zstd { level: 1 }),
        (
            (0..3000u32).map(|i| (i * 7 % 256) as u8).collect(),
            Compression::Zstd { level: 3 },
        ),
        (b"plain text, stored".to_vec(), Compression::None),
        (
            (0..600u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
                .collect(),
            Compression::Zstd { level: 1 },
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let e = encode_block(&raw, c).expect("encode");
        std::fs::write(block_dir.join(format!("seed-{i}")), &e.bytes).expect("write");
        locations.push(BlockLocation {
            digest: e.block.digest,
            len: e.block.len,
            offset,
            stored_len: e.bytes.len() as u32,
        });
        offset += e.bytes.len() as u64;
        entries.push(Entry {
            stamp: None,
            path: EntryPath::new(&format!("dir/file-{i}")).expect("path"),
            kind: EntryKind::File {
                size: raw.len() as u64,
                blocks: vec![e.block],
            },
            meta: Metadata {
                mode: 0o640,
                mtime_ns: i as i64,
                ..Metadata::default()
            },
        });
    }
    entries.push(Entry {
        stamp: None,
        path: EntryPath::new("dir").expect("path"),
        kind: EntryKind::Directory,
        meta: Metadata::default(),
    });
    entries.push(Entry {
        stamp: None,
        path: EntryPath::new("link").expect("path"),
        kind: EntryKind::Symlink {
            target: "dir/file-0".into(),
        },
        meta: Metadata::default(),
    });
    entries.push(Entry {
        stamp: None,
        path: EntryPath::new("hard").expect("path"),
        kind: EntryKind::HardLink {
            target: EntryPath::new("dir/file-0").expect("path"),
        },
        meta: Metadata::default(),
    });
    let state = State::from_entries(entries).with_root(Some(Metadata {
        mode: 0o750,
        mtime_ns: 1,
        ..Metadata::default()
    }));
    let full = Index {
        changes: ChangeSet::full(&state),
        blocks: locations,
    };
    let diff = Index {
        changes: ChangeSet::between(
            &state,
            &State::from_entries(state.entries().skip(2).cloned()),
        ),
        blocks: Vec::new(),
    };
    for (i, (idx, c)) in [
        (&full, Compression::None),
        (&full, Compression::Zstd { level: 3 }),
        (&diff, Compression::None),
        (&diff, Compression::Zstd { level: 1 }),
        (&Index::default(), Compression::None),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(
            index_dir.join(format!("seed-{i}")),
            idx.encode(c, None).expect("encode"),
        )
        .expect("write");
    }
    for (i, idx) in [&full, &diff].into_iter().enumerate() {
        let body = serde_json::to_vec(idx).expect("json");
        std::fs::write(index_dir.join(format!("seed-body-{}.json", i * 2)), body).expect("write");
    }
}
