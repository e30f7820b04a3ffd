//! Builders shared by chain-core's tests: a forest of artifacts made the way the engine
//! makes them (ids in creation order, positions from Catena's own sequence or given).

#![allow(dead_code)]

use chain_core::*;
use jiff::Timestamp;

/// Builds one database's artifacts, each one second after the previous.
pub struct Forest {
    pub db: DatabaseName,
    pub base: Timestamp,
    pub manifests: Vec<Manifest>,
    next_suffix: u64,
}

impl Forest {
    pub fn new(db: &str) -> Self {
        Self {
            db: DatabaseName::new(db).expect("test database name"),
            base: "2026-01-01T00:00:00Z".parse().expect("base time"),
            manifests: Vec::new(),
            next_suffix: 1,
        }
    }

    fn next_id(&mut self) -> ArtifactId {
        let n = self.next_suffix;
        self.next_suffix += 1;
        let at = self
            .base
            .checked_add(jiff::SignedDuration::from_secs(n as i64))
            .expect("time in range");
        ArtifactId::new(self.db.clone(), at, n)
    }

    pub fn get(&self, id: &ArtifactId) -> &Manifest {
        self.manifests
            .iter()
            .find(|m| &m.id == id)
            .expect("artifact in forest")
    }

    pub fn max_to(&self) -> u64 {
        self.manifests
            .iter()
            .map(|m| m.positions.to.0)
            .max()
            .unwrap_or(0)
    }

    fn push(
        &mut self,
        kind: ArtifactKind,
        parent: Option<ArtifactId>,
        from: u64,
        to: u64,
        empty: bool,
    ) -> ArtifactId {
        let id = self.next_id();
        let decision = BackupDecision {
            request: BackupRequest::default(),
            kind,
            parent: parent.clone(),
            positions: PositionRange {
                from: Position(from),
                to: Position(to),
            },
            reason: if kind == ArtifactKind::Full {
                ReasonCode::FullRequested
            } else {
                ReasonCode::DiffFromNewest
            },
            skipped: Vec::new(),
            detail: None,
        };
        let digest = Sha256Digest::of(id.to_string().as_bytes());
        let m = ManifestBuilder::new(id.clone(), decision)
            .empty(empty)
            .state_digest(digest)
            .objects(vec![ObjectRef {
                role: ObjectRole::Index,
                key: format!("{}/{}.index", self.db, id),
                size: 100,
                sha256: Some(digest),
            }])
            .build()
            .expect("valid test manifest");
        self.manifests.push(m);
        id
    }

    /// A FULL covering `(0, to]`.
    pub fn full_to(&mut self, to: u64) -> ArtifactId {
        self.push(ArtifactKind::Full, None, 0, to, false)
    }

    /// A DIFF of `parent` covering `(parent.to, to]`.
    pub fn diff_to(&mut self, parent: &ArtifactId, to: u64) -> ArtifactId {
        let from = self.get(parent).positions.to.0;
        self.push(ArtifactKind::Diff, Some(parent.clone()), from, to, false)
    }

    /// An EMPTY DIFF of `parent` covering `(parent.to, to]`.
    pub fn empty_to(&mut self, parent: &ArtifactId, to: u64) -> ArtifactId {
        let from = self.get(parent).positions.to.0;
        self.push(ArtifactKind::Diff, Some(parent.clone()), from, to, true)
    }

    /// A FULL at the next sequence position.
    pub fn full(&mut self) -> ArtifactId {
        let to = self.max_to() + 1;
        self.full_to(to)
    }

    /// A DIFF at the next sequence position.
    pub fn diff(&mut self, parent: &ArtifactId) -> ArtifactId {
        let to = self.max_to() + 1;
        self.diff_to(parent, to)
    }

    /// An EMPTY DIFF at the next sequence position.
    pub fn empty(&mut self, parent: &ArtifactId) -> ArtifactId {
        let to = self.max_to() + 1;
        self.empty_to(parent, to)
    }

    pub fn catalog(&self) -> Catalog {
        Catalog::new(self.db.clone(), self.manifests.clone())
    }

    pub fn time(&self, secs: i64) -> Timestamp {
        self.base
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .expect("time in range")
    }
}

pub fn request(backup_type: BackupType, prefer: bool, fallback: bool) -> BackupRequest {
    BackupRequest {
        backup_type,
        prefer_diff_as_parent: prefer,
        fallback_to_full: fallback,
    }
}

/// Checks a restore plan's shape: starts at a FULL, follows parents, positions contiguous,
/// ends at the target.
pub fn assert_chain_shape(catalog: &Catalog, plan: &RestorePlan) {
    let first = catalog.get(&plan.chain[0]).expect("chain member");
    assert_eq!(first.kind, ArtifactKind::Full, "chain starts at a FULL");
    for w in plan.chain.windows(2) {
        let (p, c) = (
            catalog.get(&w[0]).expect("member"),
            catalog.get(&w[1]).expect("member"),
        );
        assert_eq!(c.parent.as_ref(), Some(&p.id), "chain follows parents");
        assert_eq!(c.positions.from, p.positions.to, "positions contiguous");
        assert!(!p.empty, "an EMPTY artifact is never inside a chain");
    }
    assert_eq!(plan.chain.last(), Some(&plan.target));
}
