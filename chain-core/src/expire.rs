//! [`plan_expire`]: which old chains to delete under a retention policy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::aggregate::{KeepReason, PlannedDeletion, PlannedKeep, needed_by_survivors};
use crate::{ArtifactId, ArtifactKind, Catalog, DeleteReason, Error};

/// A retention policy. An artifact is kept when any rule keeps it; the tree of the newest
/// usable backup is always kept, and so is every ancestor of a kept artifact.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirePolicy {
    /// Keep the N most recent chains (trees rooted at a FULL, ordered by their newest
    /// artifact). At least 1 when given.
    pub keep_last_chains: Option<u32>,
    /// Keep every artifact created within this duration before `now`.
    pub keep_within: Option<Duration>,
}

/// The expiry of one database, computed but not carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpirePlan {
    /// What to delete, children before parents.
    pub delete: Vec<PlannedDeletion>,
    /// What is kept, with the first rule that keeps it.
    pub keep: Vec<PlannedKeep>,
}

/// Plans the expiry of `catalog` under `policy` at time `now`. Never deletes an artifact that
/// a kept one depends on; never deletes an unusable artifact (it is reported for a person to
/// judge); never deletes the tree of the newest usable backup.
pub fn plan_expire(
    catalog: &Catalog,
    policy: &ExpirePolicy,
    now: Timestamp,
) -> Result<ExpirePlan, Error> {
    if policy.keep_last_chains.is_none() && policy.keep_within.is_none() {
        return Err(Error::InvalidExpirePolicy {
            why: "it has no rule: give keep_last_chains, keep_within or both",
        });
    }
    if policy.keep_last_chains == Some(0) {
        return Err(Error::InvalidExpirePolicy {
            why: "keep_last_chains must be at least 1",
        });
    }
    let cutoff = match policy.keep_within {
        Some(d) => {
            let d = jiff::SignedDuration::try_from(d).map_err(|_| Error::InvalidExpirePolicy {
                why: "keep_within is too long",
            })?;
            Some(now.checked_sub(d).unwrap_or(Timestamp::MIN))
        }
        None => None,
    };

    // Trees of usable artifacts, keyed by their FULL root; ordered by newest member.
    let mut trees: BTreeMap<ArtifactId, ArtifactId> = BTreeMap::new();
    for m in catalog.artifacts() {
        if !catalog.is_usable(&m.id) {
            continue;
        }
        if let Some(root) = catalog
            .root_of(&m.id)
            .filter(|r| r.kind == ArtifactKind::Full)
        {
            let newest = trees.entry(root.id.clone()).or_insert_with(|| m.id.clone());
            if m.id > *newest {
                *newest = m.id.clone();
            }
        }
    }
    let mut order: Vec<(&ArtifactId, &ArtifactId)> = trees.iter().map(|(r, n)| (n, r)).collect();
    order.sort_by(|a, b| b.cmp(a));
    let last_roots: BTreeSet<&ArtifactId> = order
        .iter()
        .take(policy.keep_last_chains.unwrap_or(0) as usize)
        .map(|(_, r)| *r)
        .collect();
    let newest_root = catalog
        .latest_usable(|_| true)
        .and_then(|m| catalog.root_of(&m.id))
        .map(|r| r.id.clone());

    let mut keep = Vec::new();
    let mut doomed = BTreeSet::new();
    for m in catalog.artifacts() {
        let reason = match catalog.usability(&m.id) {
            Some(Err(why)) => Some(KeepReason::Unusable {
                why: why.to_string(),
            }),
            _ => {
                let root = catalog.root_of(&m.id).map(|r| r.id.clone());
                if root.as_ref().is_some_and(|r| last_roots.contains(r)) {
                    Some(KeepReason::InLastChains)
                } else if cutoff.is_some_and(|c| m.id.created_at() >= c) {
                    Some(KeepReason::WithinDuration)
                } else if root.is_some() && root == newest_root {
                    Some(KeepReason::NewestBackup)
                } else {
                    None
                }
            }
        };
        match reason {
            Some(reason) => keep.push(PlannedKeep {
                artifact: m.id.clone(),
                reason,
            }),
            None => {
                doomed.insert(m.id.clone());
            }
        }
    }
    for (artifact, descendant) in needed_by_survivors(catalog, &doomed) {
        doomed.remove(&artifact);
        keep.push(PlannedKeep {
            artifact,
            reason: KeepReason::ParentOfLive { descendant },
        });
    }
    let mut delete: Vec<PlannedDeletion> = doomed
        .into_iter()
        .map(|artifact| PlannedDeletion {
            artifact,
            reason: DeleteReason::Expired,
        })
        .collect();
    delete.sort_by(|a, b| b.artifact.cmp(&a.artifact));
    keep.sort_by(|a, b| a.artifact.cmp(&b.artifact));
    Ok(ExpirePlan { delete, keep })
}
