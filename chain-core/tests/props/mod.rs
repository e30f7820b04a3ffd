//! Property tests: random forests of artifacts (valid and damaged), random states and change
//! sets, random bytes for the decoders.

use std::collections::{BTreeMap, BTreeSet};

use chain_core::*;
use proptest::prelude::*;

use crate::common::*;

/// One step of building a forest: a FULL, a DIFF of the k-th non-empty artifact (modulo
/// their count), or an EMPTY of it.
#[derive(Clone, Debug)]
enum Step {
    Full,
    Diff(usize),
    Empty(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        1 => Just(Step::Full),
        4 => any::<usize>().prop_map(Step::Diff),
        1 => any::<usize>().prop_map(Step::Empty),
    ];
    prop::collection::vec(step, 0..24)
}

/// A valid forest built the way the engine builds one (Catena's own sequence).
fn build(steps: &[Step]) -> Forest {
    let mut f = Forest::new("db");
    let mut parents: Vec<ArtifactId> = Vec::new();
    for step in steps {
        match step {
            Step::Full => parents.push(f.full()),
            Step::Diff(k) | Step::Empty(k) if parents.is_empty() => {
                let _ = k;
                parents.push(f.full());
            }
            Step::Diff(k) => {
                let p = parents[k % parents.len()].clone();
                parents.push(f.diff(&p));
            }
            Step::Empty(k) => {
                let p = parents[k % parents.len()].clone();
                f.empty(&p);
            }
        }
    }
    f
}

fn any_request() -> impl Strategy<Value = BackupRequest> {
    (
        prop_oneof![
            Just(BackupType::Full),
            Just(BackupType::Diff),
            Just(BackupType::Auto)
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(t, p, fb)| request(t, p, fb))
}

/// Kinds of damage injected into a valid forest, each with the problem it must produce.
#[derive(Clone, Copy, Debug)]
enum Damage {
    RemoveParent,
    ShiftPositions,
    Duplicate,
    ForeignDatabase,
    DiffWithoutParent,
    FullWithParent,
    ChildOfEmpty,
    Cycle,
}

fn damages() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::RemoveParent),
        Just(Damage::ShiftPositions),
        Just(Damage::Duplicate),
        Just(Damage::ForeignDatabase),
        Just(Damage::DiffWithoutParent),
        Just(Damage::FullWithParent),
        Just(Damage::ChildOfEmpty),
        Just(Damage::Cycle),
    ]
}

fn set_parent(m: &mut Manifest, parent: Option<ArtifactId>) {
    m.parent = parent.clone();
    m.decision.parent = parent;
}

/// Injects `damage` (at the artifact chosen by `pick`) and returns a check that the catalog
/// names it, or `None` when the forest has no place for that damage.
/// A check that a catalog's problem is the injected one.
type Expected = Box<dyn Fn(&CatalogProblem) -> bool>;

fn inject(f: &mut Forest, damage: Damage, pick: usize) -> Option<Expected> {
    let diffs: Vec<ArtifactId> = f
        .manifests
        .iter()
        .filter(|m| m.kind == ArtifactKind::Diff && !m.empty)
        .map(|m| m.id.clone())
        .collect();
    let fulls: Vec<ArtifactId> = f
        .manifests
        .iter()
        .filter(|m| m.kind == ArtifactKind::Full)
        .map(|m| m.id.clone())
        .collect();
    let nth = |v: &[ArtifactId]| (!v.is_empty()).then(|| v[pick % v.len()].clone());
    match damage {
        Damage::RemoveParent => {
            let d = nth(&diffs)?;
            let parent = f.get(&d).parent.clone()?;
            f.manifests.retain(|m| m.id != parent);
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::MissingParent { artifact, parent: q } if *artifact == d && *q == parent),
            ))
        }
        Damage::ShiftPositions => {
            let d = nth(&diffs)?;
            let m = f.manifests.iter_mut().find(|m| m.id == d)?;
            m.positions.from = Position(m.positions.from.0 + 1000);
            m.positions.to = Position(m.positions.to.0 + 1000);
            m.decision.positions = m.positions;
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::PositionsNotContiguous { artifact, .. } if *artifact == d),
            ))
        }
        Damage::Duplicate => {
            let all: Vec<ArtifactId> = f.manifests.iter().map(|m| m.id.clone()).collect();
            let a = nth(&all)?;
            let copy = f.get(&a).clone();
            f.manifests.push(copy);
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::DuplicateId { artifact } if *artifact == a),
            ))
        }
        Damage::ForeignDatabase => {
            let mut other = Forest::new("other");
            let stranger = other.full();
            f.manifests.push(other.manifests.remove(0));
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::MixedDatabase { artifact, .. } if *artifact == stranger),
            ))
        }
        Damage::DiffWithoutParent => {
            let d = nth(&diffs)?;
            let m = f.manifests.iter_mut().find(|m| m.id == d)?;
            set_parent(m, None);
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::RootNotFull { artifact } if *artifact == d),
            ))
        }
        Damage::FullWithParent => {
            if fulls.len() < 2 {
                return None;
            }
            let a = fulls[1 + pick % (fulls.len() - 1)].clone();
            let older = fulls[0].clone();
            let m = f.manifests.iter_mut().find(|m| m.id == a)?;
            set_parent(m, Some(older));
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::FullHasParent { artifact, .. } if *artifact == a),
            ))
        }
        Damage::ChildOfEmpty => {
            let empties: Vec<ArtifactId> = f
                .manifests
                .iter()
                .filter(|m| m.empty)
                .map(|m| m.id.clone())
                .collect();
            let e = nth(&empties)?;
            let e_to = f.get(&e).positions.to.0;
            // A DIFF of the EMPTY's parent, relinked to the EMPTY.
            let parent = f.get(&e).parent.clone()?;
            let child = f.diff(&parent);
            let m = f.manifests.iter_mut().find(|m| m.id == child)?;
            set_parent(m, Some(e.clone()));
            m.positions.from = Position(e_to);
            m.decision.positions = m.positions;
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::EmptyParent { artifact, parent } if *artifact == child && *parent == e),
            ))
        }
        Damage::Cycle => {
            // A DIFF whose parent is also a DIFF: point the parent back at the child.
            let (child, parent) = diffs
                .iter()
                .cycle()
                .skip(pick % diffs.len().max(1))
                .take(diffs.len())
                .find_map(|d| {
                    let p = f.get(d).parent.clone()?;
                    (f.get(&p).kind == ArtifactKind::Diff).then(|| (d.clone(), p))
                })?;
            let m = f.manifests.iter_mut().find(|m| m.id == parent)?;
            set_parent(m, Some(child.clone()));
            Some(Box::new(
                move |p| matches!(p, CatalogProblem::Cycle { artifacts } if artifacts.contains(&child) && artifacts.contains(&parent)),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// States and change sets
// ---------------------------------------------------------------------------------------

fn entry_path() -> impl Strategy<Value = EntryPath> {
    prop::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("c.db"), Just("x y")],
        1..4,
    )
    .prop_map(|parts| EntryPath::new(&parts.join("/")).expect("generated path is valid"))
}

fn entry_kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        Just(EntryKind::Directory),
        prop::collection::vec((0u8..4, 1u32..5), 0..4).prop_map(|blocks| {
            let blocks: Vec<BlockRef> = blocks
                .into_iter()
                .map(|(content, len)| BlockRef {
                    digest: Sha256Digest::of(&[content]),
                    len,
                })
                .collect();
            EntryKind::File {
                size: blocks.iter().map(|b| u64::from(b.len)).sum(),
                blocks,
            }
        }),
        prop_oneof![Just("target"), Just("../escape")].prop_map(|t| EntryKind::Symlink {
            target: t.to_owned()
        }),
        // Targets never generated as paths, so a link never names itself.
        prop_oneof![Just("z"), Just("a/z")].prop_map(|t| EntryKind::HardLink {
            target: EntryPath::new(t).expect("valid path")
        }),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        entry_path(),
        entry_kind(),
        0u32..3,
        0i64..3,
        prop::option::of(0u64..2),
    )
        .prop_map(|(path, kind, mode, mtime, ino)| Entry {
            stamp: ino.map(|ino| FileStamp {
                dev: 1,
                ino,
                ctime_ns: 0,
            }),
            path,
            kind,
            meta: Metadata {
                mode: 0o600 + mode,
                mtime_ns: mtime,
                ..Metadata::default()
            },
        })
}

fn state() -> impl Strategy<Value = State> {
    let root = prop::option::of((0u32..2, 0i64..2)).prop_map(|r| {
        r.map(|(mode, mtime)| Metadata {
            mode: 0o700 + mode,
            mtime_ns: mtime,
            ..Metadata::default()
        })
    });
    (prop::collection::vec(entry(), 0..12), root)
        .prop_map(|(v, root)| State::from_entries(v).with_root(root))
}

/// Whether paths are strictly increasing (sorted, none twice).
fn strictly_sorted<'a>(paths: impl IntoIterator<Item = &'a EntryPath>) -> bool {
    let v: Vec<&EntryPath> = paths.into_iter().collect();
    v.windows(2).all(|w| w[0] < w[1])
}

/// What `ChangeSet::between(a, b)` turns `a` into: `b`, keeping `a`'s recorded root
/// metadata when `b` records none (a change set cannot unrecord it).
fn reached(a: &State, b: &State) -> State {
    let root = b.root().or(a.root()).cloned();
    b.clone().with_root(root)
}

fn ids(n: usize) -> Vec<ArtifactId> {
    let db = DatabaseName::new("db").expect("name");
    (0..n)
        .map(|i| {
            let at = jiff::Timestamp::from_second(1_700_000_000 + i as i64).expect("time");
            ArtifactId::new(db.clone(), at, i as u64)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn generated_forests_validate_clean(steps in steps()) {
        let f = build(&steps);
        let catalog = f.catalog();
        prop_assert!(catalog.validate().is_empty(), "{:?}", catalog.validate());
        for m in catalog.artifacts() {
            prop_assert!(catalog.is_usable(&m.id));
        }
    }

    #[test]
    fn validate_names_the_injected_defect(steps in steps(), damage in damages(), pick in any::<usize>()) {
        let mut f = build(&steps);
        if let Some(expected) = inject(&mut f, damage, pick) {
            let problems = f.catalog().validate();
            prop_assert!(problems.iter().any(&expected), "{damage:?} not named in {problems:?}");
        }
    }

    #[test]
    fn restore_plans_start_at_a_full_and_follow_parents(steps in steps(), bound in 0u64..30) {
        let f = build(&steps);
        let catalog = f.catalog();
        let mut targets = vec![RestoreTarget::Latest, RestoreTarget::UntilPosition(Position(bound))];
        targets.extend(catalog.artifacts().map(|m| RestoreTarget::Artifact(m.id.clone())));
        for target in targets {
            match plan_restore(&catalog, &target) {
                Ok(plan) => {
                    assert_chain_shape(&catalog, &plan);
                    if let RestoreTarget::UntilPosition(p) = target {
                        prop_assert!(plan.position < p);
                        // Nothing usable lies strictly between the plan and the bound.
                        prop_assert!(catalog.artifacts().all(|m| m.positions.to >= p || m.positions.to <= plan.position));
                    }
                    if target == RestoreTarget::Latest {
                        prop_assert_eq!(plan.position, catalog.max_position());
                    }
                }
                Err(Error::NoBackups { .. }) => prop_assert!(catalog.is_empty()),
                Err(Error::NothingBefore { .. }) => {
                    prop_assert!(catalog.artifacts().all(|m| m.positions.to >= Position(bound)));
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }

    #[test]
    fn decisions_follow_the_parent_rules(steps in steps(), req in any_request()) {
        let f = build(&steps);
        let catalog = f.catalog();
        let result = decide_backup(&catalog, req, SourceCapability::DIRECTORY);
        let non_empty: Vec<&Manifest> = catalog.artifacts().filter(|m| !m.empty).collect();
        match result {
            Ok(d) if d.kind == ArtifactKind::Diff => {
                prop_assert!(req.backup_type != BackupType::Full);
                let parent = catalog.get(d.parent.as_ref().expect("a DIFF has a parent")).expect("parent in catalog");
                prop_assert!(!parent.empty && catalog.is_usable(&parent.id));
                prop_assert_eq!(d.positions.from, parent.positions.to);
                prop_assert_eq!(d.positions.to, catalog.max_position().next());
                let newest_diff = non_empty.iter().rev().find(|m| m.kind == ArtifactKind::Diff);
                let expected = match (req.prefer_diff_as_parent, newest_diff) {
                    (true, Some(diff)) => diff.id.clone(),
                    _ if req.prefer_diff_as_parent => non_empty.iter().rev().find(|m| m.kind == ArtifactKind::Full).expect("a full").id.clone(),
                    _ => non_empty.last().expect("a candidate").id.clone(),
                };
                prop_assert_eq!(&parent.id, &expected);
            }
            Ok(d) => {
                prop_assert!(d.parent.is_none());
                prop_assert_eq!(d.positions.from, Position::ZERO);
                prop_assert!(req.backup_type == BackupType::Full || non_empty.is_empty());
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::DiffWithoutParent { .. }), "{e}");
                prop_assert!(non_empty.is_empty() && req.backup_type == BackupType::Diff && !req.fallback_to_full);
            }
        }
    }

    #[test]
    fn aggregate_never_deletes_a_needed_parent(steps in steps(), pick in any::<usize>(), keep_old in any::<bool>()) {
        let f = build(&steps);
        let catalog = f.catalog();
        if catalog.is_empty() {
            return Ok(());
        }
        let all: Vec<&Manifest> = catalog.artifacts().collect();
        let target = all[pick % all.len()].id.clone();
        let plan = plan_aggregate(&catalog, &AggregateTarget::Artifact(target.clone()), keep_old).expect("plan");
        let restore = plan_restore(&catalog, &RestoreTarget::Artifact(target)).expect("restore plan");
        prop_assert_eq!(&plan.chain, &restore.chain);
        prop_assert_eq!(plan.state_digest, restore.state_digest);
        let deleted: BTreeSet<&ArtifactId> = plan.delete.iter().map(|d| &d.artifact).collect();
        if keep_old || plan.already_full {
            prop_assert!(deleted.is_empty());
        }
        for m in catalog.artifacts().filter(|m| !deleted.contains(&m.id)) {
            if let Some(p) = &m.parent {
                prop_assert!(!deleted.contains(p), "{} survives but its parent {} is deleted", m.id, p);
            }
        }
        for d in &deleted {
            prop_assert!(plan.chain.contains(d) || catalog.get(d).is_some_and(|m| m.empty));
        }
        // Children are deleted before their parents.
        for w in plan.delete.windows(2) {
            prop_assert!(w[0].artifact > w[1].artifact);
        }
    }

    #[test]
    fn expire_never_orphans_and_keeps_the_newest(steps in steps(), keep_last in prop::option::of(1u32..4), within in prop::option::of(0u64..30), now_offset in 0i64..40) {
        let f = build(&steps);
        let catalog = f.catalog();
        let policy = ExpirePolicy {
            keep_last_chains: keep_last,
            keep_within: within.map(std::time::Duration::from_secs),
        };
        let result = plan_expire(&catalog, &policy, f.time(now_offset));
        if keep_last.is_none() && within.is_none() {
            prop_assert!(result.is_err());
            return Ok(());
        }
        let plan = result.expect("plan");
        let deleted: BTreeSet<&ArtifactId> = plan.delete.iter().map(|d| &d.artifact).collect();
        prop_assert_eq!(plan.delete.len() + plan.keep.len(), catalog.len());
        for m in catalog.artifacts().filter(|m| !deleted.contains(&m.id)) {
            if let Some(p) = &m.parent {
                prop_assert!(!deleted.contains(p), "{} kept but its parent {} is deleted", m.id, p);
            }
        }
        if let Ok(latest) = plan_restore(&catalog, &RestoreTarget::Latest) {
            for id in &latest.chain {
                prop_assert!(!deleted.contains(id), "the newest restore point lost {}", id);
            }
        }
    }

    /// The state (one sorted vector) against a model, a sorted map of path to entry: the
    /// same entries from any list (the last of one path wins), the same lookups, and a change
    /// set applies exactly when the rules allow it (lists sorted, added paths absent, changed
    /// and removed present, none both changed and removed), to what the map gives, or fails
    /// and leaves the state as it was.
    #[test]
    fn states_behave_as_a_sorted_map(
        base in prop::collection::vec(entry(), 0..16),
        added in prop::collection::vec(entry(), 0..6),
        changed in prop::collection::vec(entry(), 0..6),
        removed in prop::collection::vec(entry_path(), 0..6),
        tidy in 0u8..3,
    ) {
        let mut model: BTreeMap<EntryPath, Entry> = BTreeMap::new();
        for e in &base {
            model.insert(e.path.clone(), e.clone());
        }
        let state = State::from_entries(base.clone());
        prop_assert_eq!(state.entries().collect::<Vec<_>>(), model.values().collect::<Vec<_>>());
        prop_assert_eq!(state.len(), model.len());
        for p in base.iter().chain(&added).map(|e| &e.path).chain(&removed) {
            prop_assert_eq!(state.get(p), model.get(p));
        }

        let (mut added, mut changed, mut removed) = (added, changed, removed);
        if tidy > 0 {
            // Mostly valid change sets (random lists almost never apply); with `tidy` 2, a
            // path may be both changed and removed, the one rule left to break.
            added.retain(|e| !model.contains_key(&e.path));
            changed.retain(|e| model.contains_key(&e.path));
            removed.retain(|p| {
                model.contains_key(p) && (tidy == 2 || !changed.iter().any(|e| e.path == *p))
            });
            for list in [&mut added, &mut changed] {
                list.sort_by(|a, b| a.path.cmp(&b.path));
                list.dedup_by(|a, b| a.path == b.path);
            }
            removed.sort();
            removed.dedup();
        }
        let valid = strictly_sorted(added.iter().map(|e| &e.path))
            && strictly_sorted(changed.iter().map(|e| &e.path))
            && strictly_sorted(&removed)
            && added.iter().all(|e| !model.contains_key(&e.path))
            && changed.iter().all(|e| model.contains_key(&e.path))
            && removed.iter().all(|p| model.contains_key(p))
            && !changed.iter().any(|e| removed.contains(&e.path));
        let changes = ChangeSet { added, changed, removed, root: None };
        let mut s = state.clone();
        match s.apply_owned(changes.clone()) {
            Ok(()) => {
                prop_assert!(valid, "an invalid change set applied: {:?}", changes);
                for p in &changes.removed {
                    model.remove(p);
                }
                for e in changes.added.iter().chain(&changes.changed) {
                    model.insert(e.path.clone(), e.clone());
                }
                prop_assert_eq!(s.entries().collect::<Vec<_>>(), model.values().collect::<Vec<_>>());
                for p in model.keys() {
                    prop_assert_eq!(s.get(p), model.get(p));
                }
            }
            Err(conflict) => {
                prop_assert!(!valid, "a valid change set was refused: {}", conflict);
                prop_assert_eq!(&s, &state, "a refused change set changed the state");
            }
        }
    }

    /// A backup's change set, built entry by entry in the order a walk finds them, is the
    /// one between the parent's state and the listed state, and so is its summary; a path
    /// listed twice is refused, whether the parent has it or not.
    #[test]
    fn change_sets_built_while_listing_are_those_between_the_states(a in state(), b in state(), seed in any::<u64>()) {
        let mut walk: Vec<Entry> = b.entries().cloned().collect();
        walk.sort_by_key(|e| Sha256Digest::of(format!("{seed}/{}", e.path).as_bytes()));
        let root = b.root().or(a.root()).cloned();
        let listed = reached(&a, &b);

        let mut builder = ChangeSetBuilder::new(&a);
        for e in walk.iter().cloned() {
            builder.push(e).expect("each path is listed once");
        }
        let (changes, summary) = builder.finish(root.clone()).expect("finishes");
        prop_assert_eq!(&changes, &ChangeSet::between_owned(&a, listed.clone()));
        prop_assert_eq!(summary, listed.summary());
        let mut applied = a.clone();
        applied.apply_owned(changes).expect("applies to the parent");
        prop_assert_eq!(&applied, &listed);

        if !walk.is_empty() {
            let again = walk[(seed % walk.len() as u64) as usize].clone();
            let mut builder = ChangeSetBuilder::new(&a);
            let mut refused = false;
            for e in walk.into_iter().chain([again]) {
                refused |= builder.push(e).is_err();
            }
            refused |= builder.finish(root).is_err();
            prop_assert!(refused, "a path listed twice was taken");
        }
    }

    /// A walk that offers each listed file as unchanged first (what a DIFF does) builds the
    /// change set between the parent's state and the listed state in which every file the
    /// parent records with the same size, mtime and stamp has the parent's blocks (trusted,
    /// not read: even when its content changed, as a write that puts the mtime back does);
    /// a trusted path listed again is refused.
    #[test]
    fn files_offered_as_unchanged_take_the_parents_blocks(
        a in state(),
        b in state(),
        picks in prop::collection::vec((0usize..16, 0u8..4), 0..8),
    ) {
        // The listing: b, with some of a's entries listed again as they were (0), with
        // another mode (1), with other content of the same size, mtime and stamp (2), or
        // touched (3).
        let mut listing: Vec<Entry> = b.entries().cloned().collect();
        let parents: Vec<&Entry> = a.entries().collect();
        for (i, how) in picks {
            let Some(p) = parents.get(i % parents.len().max(1)) else { break };
            let mut e = (*p).clone();
            match (how, &mut e.kind) {
                (1, _) => e.meta.mode ^= 0o7,
                (2, EntryKind::File { blocks, .. }) => {
                    for block in blocks.iter_mut() {
                        block.digest = Sha256Digest::of(block.digest.0.as_slice());
                    }
                }
                (3, _) => e.meta.mtime_ns += 10,
                _ => {}
            }
            listing.retain(|l| l.path != e.path);
            listing.push(e);
        }
        let listing = State::from_entries(listing);
        let mut model = Vec::new();
        let mut builder = ChangeSetBuilder::new(&a);
        for e in listing.entries() {
            let trusted = match (&e.kind, a.get(&e.path)) {
                (EntryKind::File { size, .. }, Some(p)) => {
                    FileStamp::unchanged(p, *size, e.meta.mtime_ns, e.stamp).then(|| p.kind.clone())
                }
                _ => None,
            };
            let offered = match e.kind {
                EntryKind::File { size, .. } => builder
                    .push_unchanged(&e.path, size, &e.meta, e.stamp)
                    .expect("listed once"),
                _ => false,
            };
            prop_assert_eq!(offered, trusted.is_some(), "trusted exactly when unchanged: {}", e.path);
            if !offered {
                builder.push(e.clone()).expect("listed once");
            }
            let mut m = e.clone();
            if let Some(kind) = trusted {
                m.kind = kind;
                if let EntryKind::File { size, .. } = e.kind {
                    prop_assert!(builder.push_unchanged(&e.path, size, &e.meta, e.stamp).is_err(), "listed twice");
                }
            }
            model.push(m);
        }
        let root = listing.root().or(a.root()).cloned();
        let (changes, summary) = builder.finish(root.clone()).expect("finishes");
        let model = State::from_entries(model).with_root(root);
        prop_assert_eq!(&changes, &ChangeSet::between_owned(&a, model.clone()));
        prop_assert_eq!(summary, model.summary());
    }

    #[test]
    fn change_sets_between_states_apply_exactly(a in state(), b in state()) {
        let cs = ChangeSet::between(&a, &b);
        prop_assert_eq!(&ChangeSet::between_owned(&a, b.clone()), &cs, "the owned form is the same");
        let mut owned = a.clone();
        owned.apply_owned(cs.clone()).expect("applies");
        prop_assert!(cs.validate().is_ok());
        let mut s = a.clone();
        s.apply(&cs).expect("between() applies to its base");
        let b = reached(&a, &b);
        prop_assert_eq!(&owned, &b);
        prop_assert_eq!(&s, &b);
        prop_assert_eq!(s.digest(), b.digest());
        prop_assert_eq!(cs.is_empty(), a == b);
        // Blocks to store are exactly those new to the base.
        let have = a.block_digests();
        for block in cs.blocks_missing_from(&a) {
            prop_assert!(!have.contains(&block.digest));
        }
        for d in b.block_digests() {
            prop_assert!(have.contains(&d) || cs.blocks_missing_from(&a).iter().any(|x| x.digest == d));
        }
    }

    #[test]
    fn compose_is_associative(states in prop::collection::vec(state(), 1..6), cut in any::<usize>()) {
        let mut states = states;
        for i in 1..states.len() {
            states[i] = reached(&states[i - 1], &states[i]);
        }
        let mut changes = vec![ChangeSet::full(&states[0])];
        for w in states.windows(2) {
            changes.push(ChangeSet::between(&w[0], &w[1]));
        }
        let ids = ids(changes.len());
        let whole = compose(ids.iter().zip(&changes)).expect("whole chain composes");
        let owned = compose_owned(ids.iter().zip(changes.iter().cloned())).expect("composes");
        prop_assert_eq!(&owned, &whole);
        prop_assert_eq!(&whole, states.last().expect("non-empty"));

        // Aggregate a prefix into one FULL, then compose with the rest.
        let k = cut % changes.len();
        let prefix = compose(ids[..=k].iter().zip(&changes[..=k])).expect("prefix composes");
        let aggregated = ChangeSet::full(&prefix);
        let rest = std::iter::once((&ids[k], &aggregated)).chain(ids[k + 1..].iter().zip(&changes[k + 1..]));
        let again = compose(rest).expect("aggregated chain composes");
        prop_assert_eq!(again.digest(), whole.digest());
        prop_assert_eq!(again, whole);
    }

    #[test]
    fn compose_names_the_artifact_whose_change_does_not_apply(s in state(), idx in any::<usize>()) {
        prop_assume!(!s.is_empty());
        let entries: Vec<&Entry> = s.entries().collect();
        let e = entries[idx % entries.len()].clone();
        let ids = ids(2);
        let full = ChangeSet::full(&s);
        let bad = ChangeSet { added: vec![e], ..ChangeSet::default() };
        match compose(ids.iter().zip([&full, &bad])) {
            Err(Error::ComposeConflict { artifact, .. }) => prop_assert_eq!(artifact, ids[1].clone()),
            other => prop_assert!(false, "expected a conflict, got {:?}", other.map(|s| s.len())),
        }
    }

    #[test]
    fn manifest_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        chain_core::fuzz_checks::manifest(&data);
    }

    #[test]
    fn manifest_decoder_survives_mutated_manifests(steps in steps(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let f = build(&steps);
        for m in &f.manifests {
            let mut json = m.to_json();
            for (at, byte) in &flips {
                let i = at % json.len();
                json[i] = *byte;
            }
            chain_core::fuzz_checks::manifest(&json);
        }
    }

    #[test]
    fn id_parser_never_panics(s in "\\PC{0,80}") {
        chain_core::fuzz_checks::artifact_id(s.as_bytes());
    }

    #[test]
    fn ids_round_trip(secs in 0i64..253_402_300_799, micros in 0i64..1_000_000, suffix in any::<u64>(), name in "[a-z0-9][a-z0-9._-]{0,20}") {
        let at = jiff::Timestamp::from_microsecond(secs * 1_000_000 + micros).expect("in range");
        let id = ArtifactId::new(DatabaseName::new(&name).expect("generated name"), at, suffix);
        let s = id.to_string();
        prop_assert_eq!(s.parse::<ArtifactId>().expect("parses"), id);
        chain_core::fuzz_checks::artifact_id(s.as_bytes());
    }
}
