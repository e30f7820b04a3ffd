//! [`plan_aggregate`]: collapse a chain into one FULL, and what may be deleted afterwards.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{ArtifactId, ArtifactKind, Catalog, Error, PositionRange, RestoreTarget, Sha256Digest};

/// Which chain to aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "target", content = "value", rename_all = "snake_case")]
pub enum AggregateTarget {
    /// The chain of the newest usable state (as [`RestoreTarget::Latest`]).
    Latest,
    /// The chain ending at this artifact.
    Artifact(ArtifactId),
}

/// Why an artifact is deleted after the aggregated FULL is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// A member of the aggregated chain, which the new FULL replaces (`keepOldBackup = false`).
    AggregatedChain,
    /// An EMPTY artifact hanging off the aggregated chain.
    EmptyOffAggregatedChain,
    /// Expired by the policy.
    Expired,
}

/// Why an artifact is kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "keep", rename_all = "snake_case")]
pub enum KeepReason {
    /// `keepOldBackup = true`.
    KeepOldBackup,
    /// A live artifact depends on it.
    ParentOfLive {
        /// One live descendant that needs it.
        descendant: ArtifactId,
    },
    /// In one of the newest chains the policy keeps.
    InLastChains,
    /// Created within the policy's keep-within duration.
    WithinDuration,
    /// Belongs to the tree of the newest usable backup, which is never expired.
    NewestBackup,
    /// Its chain is broken or it is invalid: left for `check` and a person to judge.
    Unusable {
        /// Why it is unusable.
        why: String,
    },
}

/// An artifact the plan deletes, with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlannedDeletion {
    /// The artifact.
    pub artifact: ArtifactId,
    /// Why.
    pub reason: DeleteReason,
}

/// An artifact the plan keeps although it was a deletion candidate, with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlannedKeep {
    /// The artifact.
    pub artifact: ArtifactId,
    /// Why.
    pub reason: KeepReason,
}

/// The aggregation of one chain, computed but not carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatePlan {
    /// The chain to collapse, FULL first.
    pub chain: Vec<ArtifactId>,
    /// The positions the new FULL covers: `(0, target.to]`.
    pub positions: PositionRange,
    /// The digest the new FULL's state must have (the target's).
    pub state_digest: Sha256Digest,
    /// The chain is a single FULL already: nothing to write.
    pub already_full: bool,
    /// What to delete once the new FULL is committed, children before parents.
    pub delete: Vec<PlannedDeletion>,
    /// Deletion candidates that are kept, with the reason.
    pub keep: Vec<PlannedKeep>,
}

/// Plans the aggregation of the chain ending at `target`.
///
/// With `keep_old_backup = false`, the chain's artifacts (and EMPTY artifacts hanging off it)
/// are to be deleted after the new FULL is committed, except any that a remaining artifact
/// depends on: nothing is ever left without its parent.
pub fn plan_aggregate(
    catalog: &Catalog,
    target: &AggregateTarget,
    keep_old_backup: bool,
) -> Result<AggregatePlan, Error> {
    let restore_target = match target {
        AggregateTarget::Latest => RestoreTarget::Latest,
        AggregateTarget::Artifact(id) => RestoreTarget::Artifact(id.clone()),
    };
    let restore = crate::plan_restore(catalog, &restore_target).map_err(|e| match e {
        // Restore's advice (`--restore-until`) is not aggregate's.
        Error::NewestUnusable {
            database,
            artifact,
            why,
            ..
        } => Error::NewestUnusable {
            database,
            artifact,
            why,
            hint: "Aggregate refuses rather than aggregate an older chain: run `catena check` to see the damage and the points still usable; `catena restore` says how to restore the newest usable one".to_owned(),
        },
        e => e,
    })?;
    let chain = restore.chain;
    let already_full = chain.len() == 1
        && catalog
            .get(&chain[0])
            .is_some_and(|m| m.kind == ArtifactKind::Full);

    let mut delete = Vec::new();
    let mut keep = Vec::new();
    if !already_full {
        let members: BTreeSet<&ArtifactId> = chain.iter().collect();
        let mut candidates: Vec<(ArtifactId, DeleteReason)> = chain
            .iter()
            .map(|id| (id.clone(), DeleteReason::AggregatedChain))
            .collect();
        for id in &chain {
            for child in catalog.children(id) {
                if child.empty && !members.contains(&child.id) {
                    candidates.push((child.id.clone(), DeleteReason::EmptyOffAggregatedChain));
                }
            }
        }
        if keep_old_backup {
            keep = candidates
                .into_iter()
                .map(|(artifact, _)| PlannedKeep {
                    artifact,
                    reason: KeepReason::KeepOldBackup,
                })
                .collect();
        } else {
            let doomed: BTreeSet<ArtifactId> =
                candidates.iter().map(|(id, _)| id.clone()).collect();
            let needed = needed_by_survivors(catalog, &doomed);
            for (artifact, reason) in candidates {
                match needed.iter().find(|(a, _)| *a == artifact) {
                    Some((_, descendant)) => keep.push(PlannedKeep {
                        artifact,
                        reason: KeepReason::ParentOfLive {
                            descendant: descendant.clone(),
                        },
                    }),
                    None => delete.push(PlannedDeletion { artifact, reason }),
                }
            }
        }
    }
    delete.sort_by(|a, b| b.artifact.cmp(&a.artifact));
    keep.sort_by(|a, b| a.artifact.cmp(&b.artifact));
    Ok(AggregatePlan {
        positions: PositionRange {
            from: crate::Position::ZERO,
            to: restore.position,
        },
        state_digest: restore.state_digest,
        already_full,
        chain,
        delete,
        keep,
    })
}

/// The members of `doomed` that an artifact outside `doomed` depends on (is a descendant
/// of), each with one such descendant. Removing them from `doomed` is closed: their own
/// ancestors are ancestors of the same survivor.
pub(crate) fn needed_by_survivors(
    catalog: &Catalog,
    doomed: &BTreeSet<ArtifactId>,
) -> Vec<(ArtifactId, ArtifactId)> {
    let mut needed: Vec<(ArtifactId, ArtifactId)> = Vec::new();
    let mut seen = BTreeSet::new();
    for m in catalog.artifacts().rev() {
        if doomed.contains(&m.id) {
            continue;
        }
        for ancestor in catalog.ancestors(&m.id) {
            if doomed.contains(ancestor) && seen.insert(ancestor.clone()) {
                needed.push((ancestor.clone(), m.id.clone()));
            }
        }
    }
    needed
}

/// Deletions an aggregate promised and did not finish (a crash between its commit and its
/// deletions), computed but not carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupersededPlan {
    /// The aggregated FULLs whose superseded chains still have members here.
    pub by: Vec<ArtifactId>,
    /// What to delete, children before parents.
    pub delete: Vec<PlannedDeletion>,
    /// Members kept because a remaining artifact depends on them.
    pub keep: Vec<PlannedKeep>,
}

impl SupersededPlan {
    /// Whether there is nothing left over.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.keep.is_empty()
    }
}

/// For every FULL in `catalog` that supersedes a chain ([`crate::Manifest::supersedes`]):
/// the members of that chain still present, and EMPTY artifacts hanging off them, to be
/// deleted as the aggregate that wrote the FULL promised, except any that a remaining
/// artifact depends on (as in [`plan_aggregate`], nothing is left without its parent).
pub fn plan_superseded(catalog: &Catalog) -> SupersededPlan {
    let mut by = Vec::new();
    let mut candidates: Vec<(ArtifactId, DeleteReason)> = Vec::new();
    let mut doomed: BTreeSet<ArtifactId> = BTreeSet::new();
    for full in catalog.artifacts() {
        let members: Vec<&ArtifactId> = full
            .supersedes
            .iter()
            .filter(|a| catalog.get(a).is_some() && **a != full.id)
            .collect();
        if members.is_empty() {
            continue;
        }
        by.push(full.id.clone());
        let listed: BTreeSet<&ArtifactId> = full.supersedes.iter().collect();
        for id in members {
            if doomed.insert(id.clone()) {
                candidates.push((id.clone(), DeleteReason::AggregatedChain));
            }
            for child in catalog.children(id) {
                if child.empty && !listed.contains(&child.id) && doomed.insert(child.id.clone()) {
                    candidates.push((child.id.clone(), DeleteReason::EmptyOffAggregatedChain));
                }
            }
        }
    }
    let needed = needed_by_survivors(catalog, &doomed);
    let mut plan = SupersededPlan {
        by,
        ..SupersededPlan::default()
    };
    for (artifact, reason) in candidates {
        match needed.iter().find(|(a, _)| *a == artifact) {
            Some((_, descendant)) => plan.keep.push(PlannedKeep {
                artifact,
                reason: KeepReason::ParentOfLive {
                    descendant: descendant.clone(),
                },
            }),
            None => plan.delete.push(PlannedDeletion { artifact, reason }),
        }
    }
    plan.delete.sort_by(|a, b| b.artifact.cmp(&a.artifact));
    plan.keep.sort_by(|a, b| a.artifact.cmp(&b.artifact));
    plan
}
