//! [`Catalog`]: one database's committed artifacts and the forest their parent links form.
//!
//! A catalog is built from the manifests found in storage, whatever state they are in. It
//! never refuses input: [`Catalog::problems`] lists every defect, each naming the artifacts
//! involved, and [`Catalog::usability`] says for each artifact whether it can be restored
//! or used as a parent, and if not, why. Planners only ever choose usable artifacts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ArtifactId, ArtifactKind, DatabaseName, Manifest, Position};

/// One defect of a catalog. Every variant names the artifact(s) involved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CatalogProblem {
    /// The manifest is inconsistent on its own ([`Manifest::validate`]).
    InvalidManifest {
        /// The artifact.
        artifact: ArtifactId,
        /// What is wrong.
        why: String,
    },
    /// Two manifests carry the same id.
    DuplicateId {
        /// The id.
        artifact: ArtifactId,
    },
    /// The manifest belongs to another database than the catalog's.
    MixedDatabase {
        /// The artifact.
        artifact: ArtifactId,
        /// The catalog's database.
        expected: DatabaseName,
    },
    /// A DIFF's parent is not in the catalog.
    MissingParent {
        /// The DIFF.
        artifact: ArtifactId,
        /// The parent it names.
        parent: ArtifactId,
    },
    /// A DIFF names no parent, so its tree is not rooted in a FULL.
    RootNotFull {
        /// The DIFF.
        artifact: ArtifactId,
    },
    /// A FULL names a parent.
    FullHasParent {
        /// The FULL.
        artifact: ArtifactId,
        /// The parent it names.
        parent: ArtifactId,
    },
    /// A DIFF's parent is an EMPTY artifact, which is never a parent.
    EmptyParent {
        /// The DIFF.
        artifact: ArtifactId,
        /// The EMPTY parent.
        parent: ArtifactId,
    },
    /// A DIFF's parent was not created before it.
    ParentNotOlder {
        /// The DIFF.
        artifact: ArtifactId,
        /// Its parent.
        parent: ArtifactId,
    },
    /// A DIFF does not start where its parent ends.
    PositionsNotContiguous {
        /// The DIFF.
        artifact: ArtifactId,
        /// Its parent.
        parent: ArtifactId,
        /// Where the parent ends.
        parent_to: Position,
        /// Where the DIFF starts.
        from: Position,
    },
    /// Parent links go round in a circle.
    Cycle {
        /// The artifacts on the cycle, sorted.
        artifacts: Vec<ArtifactId>,
    },
    /// Found damaged from outside the manifest (a check report, see [`Damage`]).
    Damaged {
        /// The artifact.
        artifact: ArtifactId,
        /// What was found, and where.
        why: String,
    },
}

impl CatalogProblem {
    /// The artifacts this problem is about.
    pub fn artifacts(&self) -> Vec<&ArtifactId> {
        use CatalogProblem::*;
        match self {
            InvalidManifest { artifact, .. }
            | Damaged { artifact, .. }
            | DuplicateId { artifact }
            | MixedDatabase { artifact, .. }
            | RootNotFull { artifact } => vec![artifact],
            MissingParent { artifact, parent }
            | FullHasParent { artifact, parent }
            | EmptyParent { artifact, parent }
            | ParentNotOlder { artifact, parent }
            | PositionsNotContiguous {
                artifact, parent, ..
            } => vec![artifact, parent],
            Cycle { artifacts } => artifacts.iter().collect(),
        }
    }
}

impl fmt::Display for CatalogProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CatalogProblem::*;
        match self {
            InvalidManifest { artifact, why } => {
                write!(f, "manifest of {artifact} is invalid: {why}")
            }
            DuplicateId { artifact } => write!(f, "two manifests carry the id {artifact}"),
            MixedDatabase { artifact, expected } => {
                write!(f, "{artifact} does not belong to database {expected}")
            }
            MissingParent { artifact, parent } => {
                write!(f, "parent {parent} of {artifact} is missing")
            }
            RootNotFull { artifact } => write!(f, "{artifact} is a DIFF with no parent"),
            FullHasParent { artifact, parent } => {
                write!(f, "{artifact} is a FULL but names parent {parent}")
            }
            EmptyParent { artifact, parent } => {
                write!(f, "parent {parent} of {artifact} is an EMPTY artifact")
            }
            ParentNotOlder { artifact, parent } => {
                write!(f, "parent {parent} of {artifact} is not older than it")
            }
            PositionsNotContiguous {
                artifact,
                parent,
                parent_to,
                from,
            } => write!(
                f,
                "{artifact} starts at position {from} but its parent {parent} ends at {parent_to}"
            ),
            Damaged { artifact, why } => write!(f, "{artifact} is damaged: {why}"),
            Cycle { artifacts } => {
                write!(f, "parent links form a cycle:")?;
                for a in artifacts {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why an artifact cannot be restored or used as a parent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "unusable", rename_all = "snake_case")]
pub enum Unusable {
    /// The artifact itself has this problem.
    Own {
        /// The first of its problems.
        problem: Box<CatalogProblem>,
    },
    /// An artifact on its chain has this problem, so the chain is broken.
    ChainBroken {
        /// The ancestor with the problem.
        ancestor: ArtifactId,
        /// The ancestor's problem.
        problem: Box<CatalogProblem>,
    },
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Own { problem } => write!(f, "{problem}"),
            Unusable::ChainBroken { ancestor, problem } => {
                write!(f, "its chain is broken at {ancestor}: {problem}")
            }
        }
    }
}

/// An artifact known to be damaged from outside its decoded manifest: the manifest object
/// exists but cannot be read or verified, or a check found the artifact damaged. Damage is
/// never "no backup": decisions and listings see it and say so.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Damage {
    /// The artifact (from the manifest's key where its content is unreadable).
    pub artifact: ArtifactId,
    /// What is wrong, naming the object or report, for people.
    pub why: String,
    /// Which kind of damage.
    pub kind: DamageKind,
}

/// Which kind of [`Damage`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "damage", rename_all = "snake_case")]
pub enum DamageKind {
    /// The manifest object exists but does not decode or verify; the artifact is not in the
    /// catalog. `positions_to` is the end of its range where that much could still be read
    /// from the damaged bytes, so that no position is used twice.
    Unreadable {
        /// The end of its range, if readable.
        positions_to: Option<Position>,
    },
    /// The manifest is fine but its objects were found damaged (by a check, or because the
    /// listing shows an object missing or of another size than the manifest says): the
    /// artifact, and everything whose chain runs through it, is unusable.
    Found,
}

/// One database's artifacts. See the module documentation.
#[derive(Clone, Debug)]
pub struct Catalog {
    database: DatabaseName,
    /// Sorted by id (creation time); one manifest per id.
    artifacts: Vec<Manifest>,
    index: HashMap<ArtifactId, usize>,
    parent_idx: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    problems: Vec<CatalogProblem>,
    status: Vec<Result<(), Unusable>>,
    depth: Vec<usize>,
    damage: Vec<Damage>,
}

impl Catalog {
    /// Builds the catalog of `database` from manifests found in storage. Never fails: defects
    /// are recorded as [`problems`](Self::problems).
    pub fn new(database: DatabaseName, manifests: impl IntoIterator<Item = Manifest>) -> Self {
        Self::with_damage(database, manifests, Vec::new())
    }

    /// Like [`Catalog::new`], knowing of `damage` found outside the manifests: reported
    /// damage makes its artifact unusable (and its descendants, whose chain is broken);
    /// unreadable manifests are candidates that decisions skip with their reason, and
    /// count for the highest position used.
    pub fn with_damage(
        database: DatabaseName,
        manifests: impl IntoIterator<Item = Manifest>,
        damage: Vec<Damage>,
    ) -> Self {
        let mut all: Vec<Manifest> = manifests.into_iter().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let mut problems = Vec::new();
        let mut artifacts: Vec<Manifest> = Vec::with_capacity(all.len());
        let mut duplicated: BTreeSet<usize> = BTreeSet::new();
        for m in all {
            if let Some(last) = artifacts.last()
                && last.id == m.id
            {
                if duplicated.insert(artifacts.len() - 1) {
                    problems.push(CatalogProblem::DuplicateId { artifact: m.id });
                }
                continue;
            }
            artifacts.push(m);
        }
        let index: HashMap<ArtifactId, usize> = artifacts
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let parent_idx: Vec<Option<usize>> = artifacts
            .iter()
            .map(|m| m.parent.as_ref().and_then(|p| index.get(p).copied()))
            .collect();
        let mut children = vec![Vec::new(); artifacts.len()];
        for (i, p) in parent_idx.iter().enumerate() {
            if let Some(p) = p {
                children[*p].push(i);
            }
        }

        // Problems of each artifact on its own and with its direct parent.
        let mut own: Vec<Vec<CatalogProblem>> = vec![Vec::new(); artifacts.len()];
        for i in &duplicated {
            own[*i].push(CatalogProblem::DuplicateId {
                artifact: artifacts[*i].id.clone(),
            });
        }
        for d in &damage {
            if let (DamageKind::Found, Some(&i)) = (&d.kind, index.get(&d.artifact)) {
                own[i].push(CatalogProblem::Damaged {
                    artifact: d.artifact.clone(),
                    why: d.why.clone(),
                });
            }
        }
        for (i, m) in artifacts.iter().enumerate() {
            let mine = &mut own[i];
            if let Err(e) = m.validate() {
                mine.push(CatalogProblem::InvalidManifest {
                    artifact: m.id.clone(),
                    why: e.to_string(),
                });
            }
            if m.database != database || m.id.database() != &database {
                mine.push(CatalogProblem::MixedDatabase {
                    artifact: m.id.clone(),
                    expected: database.clone(),
                });
            }
            match (m.kind, &m.parent) {
                (ArtifactKind::Diff, None) => mine.push(CatalogProblem::RootNotFull {
                    artifact: m.id.clone(),
                }),
                (ArtifactKind::Full, Some(p)) => mine.push(CatalogProblem::FullHasParent {
                    artifact: m.id.clone(),
                    parent: p.clone(),
                }),
                _ => {}
            }
            if let Some(p) = &m.parent {
                match parent_idx[i] {
                    None => mine.push(CatalogProblem::MissingParent {
                        artifact: m.id.clone(),
                        parent: p.clone(),
                    }),
                    Some(pi) => {
                        let pm = &artifacts[pi];
                        if pm.empty {
                            mine.push(CatalogProblem::EmptyParent {
                                artifact: m.id.clone(),
                                parent: p.clone(),
                            });
                        }
                        if pm.id >= m.id {
                            mine.push(CatalogProblem::ParentNotOlder {
                                artifact: m.id.clone(),
                                parent: p.clone(),
                            });
                        }
                        if pm.positions.to != m.positions.from {
                            mine.push(CatalogProblem::PositionsNotContiguous {
                                artifact: m.id.clone(),
                                parent: p.clone(),
                                parent_to: pm.positions.to,
                                from: m.positions.from,
                            });
                        }
                    }
                }
            }
        }

        // Walk parent links once per artifact, memoized: find cycles, then each artifact's
        // status from its own problems and its parent's status.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            InProgress,
            Done,
        }
        let n = artifacts.len();
        let mut mark = vec![Mark::New; n];
        let mut status: Vec<Result<(), Unusable>> = vec![Ok(()); n];
        let mut depth = vec![0usize; n];
        let mut cycles = Vec::new();
        for start in 0..n {
            if mark[start] != Mark::New {
                continue;
            }
            let mut path = Vec::new();
            let mut cur = Some(start);
            while let Some(c) = cur {
                match mark[c] {
                    Mark::Done => break,
                    Mark::InProgress => {
                        let at = path
                            .iter()
                            .position(|&p| p == c)
                            .expect("an in-progress artifact is on the current path");
                        let mut members: Vec<usize> = path[at..].to_vec();
                        members.sort_unstable();
                        let problem = CatalogProblem::Cycle {
                            artifacts: members.iter().map(|&m| artifacts[m].id.clone()).collect(),
                        };
                        for &m in &members {
                            own[m].insert(0, problem.clone());
                        }
                        cycles.push(problem);
                        break;
                    }
                    Mark::New => {
                        mark[c] = Mark::InProgress;
                        path.push(c);
                        cur = parent_idx[c];
                    }
                }
            }
            for &node in path.iter().rev() {
                let parent = parent_idx[node];
                status[node] = if let Some(problem) = own[node].first() {
                    Err(Unusable::Own {
                        problem: Box::new(problem.clone()),
                    })
                } else {
                    match parent {
                        None => Ok(()),
                        Some(p) => match &status[p] {
                            Ok(()) => Ok(()),
                            Err(Unusable::Own { problem }) => Err(Unusable::ChainBroken {
                                ancestor: artifacts[p].id.clone(),
                                problem: problem.clone(),
                            }),
                            Err(broken) => Err(broken.clone()),
                        },
                    }
                };
                depth[node] = match parent {
                    Some(p) if mark[p] == Mark::Done => depth[p] + 1,
                    _ => 0,
                };
                mark[node] = Mark::Done;
            }
        }

        for (i, mine) in own.iter().enumerate() {
            for p in mine {
                let reported_already = matches!(p, CatalogProblem::Cycle { .. })
                    || (duplicated.contains(&i) && matches!(p, CatalogProblem::DuplicateId { .. }));
                let first_seen = !reported_already;
                if first_seen {
                    problems.push(p.clone());
                }
            }
        }
        problems.extend(cycles);

        Self {
            database,
            artifacts,
            index,
            parent_idx,
            children,
            problems,
            status,
            depth,
            damage,
        }
    }

    /// The damage this catalog was built knowing of.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Artifacts whose manifest object exists but cannot be read, newest first.
    pub fn unreadable(&self) -> impl Iterator<Item = &Damage> {
        let mut out: Vec<&Damage> = self
            .damage
            .iter()
            .filter(|d| matches!(d.kind, DamageKind::Unreadable { .. }))
            .collect();
        out.sort_by(|a, b| b.artifact.cmp(&a.artifact));
        out.into_iter()
    }

    /// An unreadable manifest whose range could not be read at all: while there is one, the
    /// highest position used is unknown.
    pub fn unknown_positions(&self) -> Option<&ArtifactId> {
        self.damage.iter().find_map(|d| match d.kind {
            DamageKind::Unreadable { positions_to: None } => Some(&d.artifact),
            _ => None,
        })
    }

    /// The database this catalog describes.
    pub fn database(&self) -> &DatabaseName {
        &self.database
    }

    /// Number of distinct artifacts.
    pub fn len(&self) -> usize {
        self.artifacts.len()
    }

    /// Whether there are no artifacts.
    pub fn is_empty(&self) -> bool {
        self.artifacts.is_empty()
    }

    /// All artifacts, oldest first.
    pub fn artifacts(&self) -> impl DoubleEndedIterator<Item = &Manifest> + ExactSizeIterator {
        self.artifacts.iter()
    }

    /// The artifact with this id.
    pub fn get(&self, id: &ArtifactId) -> Option<&Manifest> {
        self.index.get(id).map(|&i| &self.artifacts[i])
    }

    /// The parent of `id`, when it is in the catalog.
    pub fn parent(&self, id: &ArtifactId) -> Option<&Manifest> {
        let i = *self.index.get(id)?;
        self.parent_idx[i].map(|p| &self.artifacts[p])
    }

    /// The artifacts that name `id` as their parent, oldest first.
    pub fn children(&self, id: &ArtifactId) -> Vec<&Manifest> {
        match self.index.get(id) {
            Some(&i) => self.children[i]
                .iter()
                .map(|&c| &self.artifacts[c])
                .collect(),
            None => Vec::new(),
        }
    }

    /// Every defect found, each naming the artifacts involved. Empty for a sound catalog.
    pub fn problems(&self) -> &[CatalogProblem] {
        &self.problems
    }

    /// Returns every problem (alias of [`problems`](Self::problems) that reads well in
    /// checks: `assert!(catalog.validate().is_empty())`).
    pub fn validate(&self) -> Vec<CatalogProblem> {
        self.problems.clone()
    }

    /// Whether `id` can be restored or used as a parent: committed (it is in the catalog),
    /// structurally valid, and its chain complete down to a FULL. `None` when `id` is not in
    /// the catalog.
    pub fn usability(&self, id: &ArtifactId) -> Option<Result<(), Unusable>> {
        self.index.get(id).map(|&i| self.status[i].clone())
    }

    /// Whether `id` is in the catalog and usable.
    pub fn is_usable(&self, id: &ArtifactId) -> bool {
        matches!(self.index.get(id), Some(&i) if self.status[i].is_ok())
    }

    /// The chain of `id`: the path from its FULL to it, FULL first. Errors when `id` is not
    /// in the catalog or not usable.
    pub fn chain(&self, id: &ArtifactId) -> Result<Vec<&Manifest>, crate::Error> {
        let &i = self
            .index
            .get(id)
            .ok_or_else(|| crate::Error::ArtifactNotFound {
                artifact: id.clone(),
            })?;
        if let Err(why) = &self.status[i] {
            return Err(crate::Error::ArtifactUnusable {
                artifact: id.clone(),
                why: Box::new(why.clone()),
            });
        }
        let mut chain = Vec::with_capacity(self.depth[i] + 1);
        let mut cur = Some(i);
        while let Some(c) = cur {
            chain.push(&self.artifacts[c]);
            cur = self.parent_idx[c];
        }
        chain.reverse();
        Ok(chain)
    }

    /// Number of links from `id` down to its root (0 for a root), following parents that are
    /// present. `None` when `id` is not in the catalog.
    pub fn depth(&self, id: &ArtifactId) -> Option<usize> {
        self.index.get(id).map(|&i| self.depth[i])
    }

    /// The newest artifact by creation time; EMPTY ones only when `include_empty`.
    pub fn newest_backup(&self, include_empty: bool) -> Option<&Manifest> {
        self.artifacts
            .iter()
            .rev()
            .find(|m| include_empty || !m.empty)
    }

    /// The chain of the newest usable restore point (what `restore` with no target restores),
    /// FULL first. `None` when nothing is usable.
    pub fn newest_chain(&self) -> Option<Vec<&Manifest>> {
        let latest = self.latest_usable(|_| true)?;
        self.chain(&latest.id).ok()
    }

    /// The highest position any artifact reaches (0 when empty): where Catena's own sequence
    /// continues for sources without positions.
    pub fn max_position(&self) -> Position {
        let unreadable = self.damage.iter().filter_map(|d| match d.kind {
            DamageKind::Unreadable { positions_to } => positions_to,
            DamageKind::Found => None,
        });
        self.artifacts
            .iter()
            .map(|m| m.positions.to)
            .chain(unreadable)
            .max()
            .unwrap_or(Position::ZERO)
    }

    /// The best usable artifact among those `eligible`: the highest position, then the
    /// shortest chain (an aggregated FULL beats the chain it replaced), then the newest.
    pub(crate) fn latest_usable(&self, eligible: impl Fn(&Manifest) -> bool) -> Option<&Manifest> {
        (0..self.artifacts.len())
            .filter(|&i| self.status[i].is_ok() && eligible(&self.artifacts[i]))
            .max_by(|&a, &b| {
                let (ma, mb) = (&self.artifacts[a], &self.artifacts[b]);
                ma.positions
                    .to
                    .cmp(&mb.positions.to)
                    .then(self.depth[b].cmp(&self.depth[a]))
                    .then(ma.id.cmp(&mb.id))
            })
            .map(|i| &self.artifacts[i])
    }

    /// Every ancestor of `id` present in the catalog, nearest first.
    pub fn ancestors(&self, id: &ArtifactId) -> Vec<&ArtifactId> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut cur = self.index.get(id).and_then(|&i| self.parent_idx[i]);
        while let Some(c) = cur {
            if !seen.insert(c) {
                break;
            }
            out.push(&self.artifacts[c].id);
            cur = self.parent_idx[c];
        }
        out
    }

    /// The root (the artifact with no present parent) reached from `id` by following parents,
    /// `None` when a cycle is reached first.
    pub(crate) fn root_of(&self, id: &ArtifactId) -> Option<&Manifest> {
        let mut seen = BTreeSet::new();
        let mut cur = *self.index.get(id)?;
        loop {
            if !seen.insert(cur) {
                return None;
            }
            match self.parent_idx[cur] {
                Some(p) => cur = p,
                None => return Some(&self.artifacts[cur]),
            }
        }
    }

    /// Artifacts grouped by problem, for reports: artifact id to its problems.
    pub fn problems_by_artifact(&self) -> BTreeMap<&ArtifactId, Vec<&CatalogProblem>> {
        let mut map: BTreeMap<&ArtifactId, Vec<&CatalogProblem>> = BTreeMap::new();
        for p in &self.problems {
            for a in p.artifacts() {
                map.entry(a).or_default().push(p);
            }
        }
        map
    }
}
