//! The backup decision: FULL or DIFF, against which parent, and why.
//!
//! [`decide_backup`] implements the chain semantics of `DESIGN.md` exactly:
//!
//! | requested | usable parent | source can diff from it | result |
//! |---|---|---|---|
//! | `FULL` | (any) | (any) | FULL, [`ReasonCode::FullRequested`] |
//! | `AUTO` | no earlier non-empty artifact | - | FULL, [`ReasonCode::FullFirstBackup`] |
//! | `DIFF` | no earlier non-empty artifact | - | FULL if `fallback_to_full` ([`ReasonCode::FullFallbackNoParent`]), else error |
//! | `AUTO`/`DIFF` | candidates exist, none usable | - | FULL if `fallback_to_full` ([`ReasonCode::FullFallbackParentUnusable`]), else error |
//! | `AUTO`/`DIFF` | yes | no | FULL if `fallback_to_full` ([`ReasonCode::FullFallbackSourceCannotDiff`]), else error |
//! | `AUTO`/`DIFF` | yes | yes | DIFF, reason by parent choice |
//!
//! Parent choice: by default the newest (by creation time) non-empty artifact, FULL or DIFF
//! ([`ReasonCode::DiffFromNewest`]). With `prefer_diff_as_parent`, the newest non-empty DIFF
//! even when a newer FULL exists ([`ReasonCode::DiffFromNewestDiff`]); when no DIFF is usable,
//! the newest FULL ([`ReasonCode::DiffFromNewestFull`]). Unusable candidates (chain broken,
//! invalid manifest, ...) are skipped, each recorded with its reason in
//! [`BackupDecision::skipped`]. EMPTY artifacts are never candidates.
//!
//! When a planned DIFF then fails at run time (the parent's index cannot be read, or is
//! corrupt), [`fallback_after_diff_failure`] turns it into a FULL
//! ([`ReasonCode::FullFallbackDiffFailed`]) or an error, by `fallback_to_full` again.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ArtifactId, ArtifactKind, Catalog, Error, Manifest, Position, PositionRange};

/// The `type` of a backup request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackupType {
    /// Always a FULL.
    Full,
    /// A DIFF; fails without a usable parent unless `fallback_to_full`.
    Diff,
    /// A DIFF when a usable parent exists, otherwise a FULL.
    #[default]
    Auto,
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupType::Full => "FULL",
            BackupType::Diff => "DIFF",
            BackupType::Auto => "AUTO",
        })
    }
}

impl std::str::FromStr for BackupType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_uppercase().as_str() {
            "FULL" => Ok(BackupType::Full),
            "DIFF" => Ok(BackupType::Diff),
            "AUTO" => Ok(BackupType::Auto),
            _ => Err(Error::InvalidBackupType {
                value: crate::id::truncate_for_message(s),
            }),
        }
    }
}

/// What the user asked for: the seed's `type`, `preferDiffAsParent` and `fallbackToFull`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// FULL, DIFF or AUTO.
    pub backup_type: BackupType,
    /// Prefer the newest DIFF as parent even when a newer FULL exists.
    pub prefer_diff_as_parent: bool,
    /// Take a FULL when a DIFF cannot be taken, instead of failing.
    pub fallback_to_full: bool,
}

impl Default for BackupRequest {
    /// The seed's defaults: `AUTO`, `preferDiffAsParent: false`, `fallbackToFull: true`.
    fn default() -> Self {
        Self {
            backup_type: BackupType::Auto,
            prefer_diff_as_parent: false,
            fallback_to_full: true,
        }
    }
}

/// From which earlier position a source can produce changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "diff", content = "position", rename_all = "snake_case")]
pub enum DiffSupport {
    /// From any earlier state (a directory source compares contents with the parent's
    /// state, so it can always diff).
    Any,
    /// Only from this position on (a source that keeps change logs for a while).
    Since(Position),
    /// Never: every backup of this source is a FULL.
    Never,
}

/// What the source can do, as far as the decision is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCapability {
    /// The source's current position, when it has positions; `None` lets Catena number
    /// backups itself (one past the highest position in the catalog).
    pub position: Option<Position>,
    /// From where it can produce changes.
    pub diff_support: DiffSupport,
}

impl SourceCapability {
    /// A source with no positions of its own that can diff against any earlier state (a
    /// directory tree).
    pub const DIRECTORY: SourceCapability = SourceCapability {
        position: None,
        diff_support: DiffSupport::Any,
    };
}

/// Why a backup is the kind it is. Recorded in every manifest and report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// `type = FULL` was requested.
    FullRequested,
    /// `type = AUTO` and there is no earlier non-empty artifact: the first backup.
    FullFirstBackup,
    /// `type = DIFF`, no earlier non-empty artifact, and `fallbackToFull = true`.
    FullFallbackNoParent,
    /// Earlier artifacts exist but none is usable (see `skipped`), and
    /// `fallbackToFull = true`.
    FullFallbackParentUnusable,
    /// The source cannot produce changes since the parent's position (or its position is
    /// behind the parent's), and `fallbackToFull = true`.
    FullFallbackSourceCannotDiff,
    /// The DIFF was attempted and failed (parent unreadable or corrupt), and
    /// `fallbackToFull = true`.
    FullFallbackDiffFailed,
    /// A DIFF against the newest usable non-empty artifact.
    DiffFromNewest,
    /// `preferDiffAsParent`: a DIFF against the newest usable non-empty DIFF.
    DiffFromNewestDiff,
    /// `preferDiffAsParent`, but no DIFF is usable: a DIFF against the newest FULL.
    DiffFromNewestFull,
    /// A FULL written by aggregating a chain.
    FullAggregated,
}

impl ReasonCode {
    /// Every reason code, for documentation and exhaustive tests.
    pub const ALL: [ReasonCode; 10] = [
        ReasonCode::FullRequested,
        ReasonCode::FullFirstBackup,
        ReasonCode::FullFallbackNoParent,
        ReasonCode::FullFallbackParentUnusable,
        ReasonCode::FullFallbackSourceCannotDiff,
        ReasonCode::FullFallbackDiffFailed,
        ReasonCode::DiffFromNewest,
        ReasonCode::DiffFromNewestDiff,
        ReasonCode::DiffFromNewestFull,
        ReasonCode::FullAggregated,
    ];

    /// The code as written in manifests (`snake_case`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::FullRequested => "full_requested",
            ReasonCode::FullFirstBackup => "full_first_backup",
            ReasonCode::FullFallbackNoParent => "full_fallback_no_parent",
            ReasonCode::FullFallbackParentUnusable => "full_fallback_parent_unusable",
            ReasonCode::FullFallbackSourceCannotDiff => "full_fallback_source_cannot_diff",
            ReasonCode::FullFallbackDiffFailed => "full_fallback_diff_failed",
            ReasonCode::DiffFromNewest => "diff_from_newest",
            ReasonCode::DiffFromNewestDiff => "diff_from_newest_diff",
            ReasonCode::DiffFromNewestFull => "diff_from_newest_full",
            ReasonCode::FullAggregated => "full_aggregated",
        }
    }

    /// One sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            ReasonCode::FullRequested => "a FULL backup was requested",
            ReasonCode::FullFirstBackup => "no earlier backup of this database: first FULL",
            ReasonCode::FullFallbackNoParent => {
                "DIFF requested but there is no earlier backup; fallbackToFull took a FULL"
            }
            ReasonCode::FullFallbackParentUnusable => {
                "no earlier backup is usable as a parent; fallbackToFull took a FULL"
            }
            ReasonCode::FullFallbackSourceCannotDiff => {
                "the source cannot produce changes since the parent; fallbackToFull took a FULL"
            }
            ReasonCode::FullFallbackDiffFailed => {
                "the DIFF failed (parent unreadable or corrupt); fallbackToFull took a FULL"
            }
            ReasonCode::DiffFromNewest => "DIFF against the newest backup",
            ReasonCode::DiffFromNewestDiff => "DIFF against the newest DIFF (preferDiffAsParent)",
            ReasonCode::DiffFromNewestFull => {
                "DIFF against the newest FULL (preferDiffAsParent, no DIFF yet)"
            }
            ReasonCode::FullAggregated => "FULL made by aggregating a chain",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parent candidate that was passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedParent {
    /// The candidate.
    pub artifact: ArtifactId,
    /// Why it was not used, for people.
    pub why: String,
}

/// The decision for one database's backup: plain data, computed before anything is written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupDecision {
    /// What was asked for.
    pub request: BackupRequest,
    /// FULL or DIFF.
    pub kind: ArtifactKind,
    /// The parent of a DIFF.
    pub parent: Option<ArtifactId>,
    /// The positions the new artifact will cover.
    pub positions: PositionRange,
    /// Why.
    pub reason: ReasonCode,
    /// Candidates passed over, newest first, each with its reason.
    #[serde(default)]
    pub skipped: Vec<SkippedParent>,
    /// More detail for people (for a fallback: what went wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl BackupDecision {
    /// The decision an aggregation records for the FULL it writes: a FULL of `positions`
    /// (the collapsed chain's), reason [`ReasonCode::FullAggregated`].
    pub fn aggregated(positions: PositionRange, detail: String) -> Self {
        Self {
            request: BackupRequest {
                backup_type: BackupType::Full,
                prefer_diff_as_parent: false,
                fallback_to_full: false,
            },
            kind: ArtifactKind::Full,
            parent: None,
            positions,
            reason: ReasonCode::FullAggregated,
            skipped: Vec::new(),
            detail: Some(detail),
        }
    }

    fn full(
        request: BackupRequest,
        to: Position,
        reason: ReasonCode,
        skipped: Vec<SkippedParent>,
        detail: Option<String>,
    ) -> Self {
        Self {
            request,
            kind: ArtifactKind::Full,
            parent: None,
            positions: PositionRange {
                from: Position::ZERO,
                to,
            },
            reason,
            skipped,
            detail,
        }
    }
}

/// Decides FULL or DIFF and the parent for the next backup of `catalog`'s database. See the
/// module documentation for the rules. Errors only where the request forbids a FULL
/// (`fallback_to_full = false`) and a DIFF cannot be taken.
pub fn decide_backup(
    catalog: &Catalog,
    request: BackupRequest,
    source: SourceCapability,
) -> Result<BackupDecision, Error> {
    let database = catalog.database().clone();
    // Positions are never reused: with Catena's own sequence, the next one follows the
    // highest any manifest holds, readable or not; one whose range cannot be read at all
    // leaves the highest unknown.
    let to = match source.position {
        Some(p) => p,
        None => {
            if let Some(artifact) = catalog.unknown_positions() {
                return Err(Error::PositionsUnknown {
                    database,
                    artifact: artifact.clone(),
                });
            }
            catalog.max_position().next()
        }
    };
    if request.backup_type == BackupType::Full {
        return Ok(BackupDecision::full(
            request,
            to,
            ReasonCode::FullRequested,
            Vec::new(),
            None,
        ));
    }

    // Candidates in order of preference; EMPTY artifacts never qualify. An artifact whose
    // manifest cannot be read is a candidate of unknown kind (it may be a DIFF): passed
    // over with its reason, never taken for "no earlier backup".
    let newest_first = |kind: Option<ArtifactKind>| {
        let mut c: Vec<Candidate<'_>> = catalog
            .artifacts()
            .filter(|m| !m.empty && kind.is_none_or(|k| m.kind == k))
            .map(Candidate::Readable)
            .chain(
                catalog
                    .unreadable()
                    .filter(|_| kind != Some(ArtifactKind::Full))
                    .map(Candidate::Unreadable),
            )
            .collect();
        c.sort_by(|a, b| b.id().cmp(a.id()));
        c
    };
    let candidates: Vec<(Candidate<'_>, ReasonCode)> = if request.prefer_diff_as_parent {
        newest_first(Some(ArtifactKind::Diff))
            .into_iter()
            .map(|m| (m, ReasonCode::DiffFromNewestDiff))
            .chain(
                newest_first(Some(ArtifactKind::Full))
                    .into_iter()
                    .map(|m| (m, ReasonCode::DiffFromNewestFull)),
            )
            .collect()
    } else {
        newest_first(None)
            .into_iter()
            .map(|m| (m, ReasonCode::DiffFromNewest))
            .collect()
    };

    let mut skipped = Vec::new();
    let mut chosen = None;
    for (candidate, reason) in candidates {
        let m = match candidate {
            Candidate::Unreadable(d) => {
                skipped.push(SkippedParent {
                    artifact: d.artifact.clone(),
                    why: format!("its manifest cannot be read: {}", d.why),
                });
                continue;
            }
            Candidate::Readable(m) => m,
        };
        match catalog.usability(&m.id) {
            Some(Ok(())) => {
                chosen = Some((m, reason));
                break;
            }
            Some(Err(why)) => skipped.push(SkippedParent {
                artifact: m.id.clone(),
                why: why.to_string(),
            }),
            None => unreachable!("candidates come from the catalog"),
        }
    }

    let fallback = |reason: ReasonCode, skipped: Vec<SkippedParent>, detail: Option<String>| {
        Ok(BackupDecision::full(request, to, reason, skipped, detail))
    };
    let Some((parent, reason)) = chosen else {
        if skipped.is_empty() {
            return match (request.backup_type, request.fallback_to_full) {
                (BackupType::Auto, _) => fallback(ReasonCode::FullFirstBackup, skipped, None),
                (_, true) => fallback(ReasonCode::FullFallbackNoParent, skipped, None),
                (_, false) => Err(Error::DiffWithoutParent { database }),
            };
        }
        return if request.fallback_to_full {
            fallback(ReasonCode::FullFallbackParentUnusable, skipped, None)
        } else {
            Err(Error::NoUsableParent { database, skipped })
        };
    };

    let parent_to = parent.positions.to;
    let cannot_diff = match source.diff_support {
        DiffSupport::Never => Some("the source cannot produce changes at all".to_owned()),
        DiffSupport::Since(p) if p > parent_to => Some(format!(
            "the source can produce changes since position {p}, but the parent ends at {parent_to}"
        )),
        _ if to < parent_to => Some(format!(
            "the source is at position {to}, behind the parent's {parent_to}"
        )),
        _ => None,
    };
    if let Some(why) = cannot_diff {
        let detail = format!("parent {}: {why}", parent.id);
        return if request.fallback_to_full {
            fallback(
                ReasonCode::FullFallbackSourceCannotDiff,
                skipped,
                Some(detail),
            )
        } else {
            Err(Error::SourceCannotDiff {
                database,
                parent: parent.id.clone(),
                why,
            })
        };
    }

    Ok(BackupDecision {
        request,
        kind: ArtifactKind::Diff,
        parent: Some(parent.id.clone()),
        positions: PositionRange {
            from: parent_to,
            to,
        },
        reason,
        skipped,
        detail: None,
    })
}

/// A parent candidate: a committed artifact, or one whose manifest cannot be read.
enum Candidate<'a> {
    Readable(&'a Manifest),
    Unreadable(&'a crate::Damage),
}

impl Candidate<'_> {
    fn id(&self) -> &ArtifactId {
        match self {
            Candidate::Readable(m) => &m.id,
            Candidate::Unreadable(d) => &d.artifact,
        }
    }
}

/// Turns a planned DIFF that failed at run time (`why`: the parent's index unreadable or
/// corrupt, ...) into a FULL when the request allows it, recording the failed parent among
/// the skipped candidates; otherwise an error that names the parent and the cause.
/// A decision that is already a FULL is returned unchanged.
pub fn fallback_after_diff_failure(
    decision: &BackupDecision,
    database: &crate::DatabaseName,
    why: &str,
) -> Result<BackupDecision, Error> {
    let Some(parent) = &decision.parent else {
        return Ok(decision.clone());
    };
    if !decision.request.fallback_to_full {
        return Err(Error::DiffFailed {
            database: database.clone(),
            parent: parent.clone(),
            why: why.to_owned(),
        });
    }
    let mut skipped = decision.skipped.clone();
    skipped.push(SkippedParent {
        artifact: parent.clone(),
        why: why.to_owned(),
    });
    Ok(BackupDecision::full(
        decision.request,
        decision.positions.to,
        ReasonCode::FullFallbackDiffFailed,
        skipped,
        Some(format!("DIFF against {parent} failed: {why}")),
    ))
}
