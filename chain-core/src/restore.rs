//! [`plan_restore`]: which chain to apply to reach a requested point.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{ArtifactId, Catalog, Error, Position, Sha256Digest};

/// What to restore.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "target", content = "value", rename_all = "snake_case")]
pub enum RestoreTarget {
    /// The newest usable state.
    Latest,
    /// Exactly this artifact's state.
    Artifact(ArtifactId),
    /// The newest usable state strictly before this position (exclusive: the state includes
    /// positions up to but not including it).
    UntilPosition(Position),
    /// The newest usable state committed strictly before this time (UTC).
    UntilTime(Timestamp),
}

/// The chain to apply, computed but not carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// The artifact whose state is restored.
    pub target: ArtifactId,
    /// The artifacts to apply, FULL first, ending at `target`.
    pub chain: Vec<ArtifactId>,
    /// The position the restored state reaches.
    pub position: Position,
    /// The digest the composed state must have.
    pub state_digest: Sha256Digest,
}

/// Plans a restore of `catalog`'s database to `target`.
///
/// "Newest" means the highest position; among artifacts at the same position the shortest
/// chain wins (an aggregated FULL over the chain it replaced), then the newest. Only usable
/// artifacts are considered; an explicit artifact that is unusable is an error saying why.
pub fn plan_restore(catalog: &Catalog, target: &RestoreTarget) -> Result<RestorePlan, Error> {
    let database = catalog.database().clone();
    if catalog.is_empty() && catalog.damage().is_empty() {
        return Err(Error::NoBackups { database });
    }
    let chosen = match target {
        RestoreTarget::Artifact(id) => catalog.get(id).ok_or_else(|| Error::ArtifactNotFound {
            artifact: id.clone(),
        })?,
        RestoreTarget::Latest => {
            // The newest backup (by creation, readable or not) must be what is restored:
            // when it is unusable, an older state restored without a word would be a
            // wrong answer. The error says how to restore the newest usable point on
            // purpose.
            let newest_readable = catalog.newest_backup(true);
            let newest_unreadable = catalog.unreadable().next();
            let unusable = match (newest_readable, newest_unreadable) {
                (Some(m), d) if d.is_none_or(|d| d.artifact < m.id) => catalog
                    .usability(&m.id)
                    .and_then(Result::err)
                    .map(|why| (m.id.clone(), why.to_string())),
                (_, Some(d)) => Some((
                    d.artifact.clone(),
                    format!("its manifest cannot be read: {}", d.why),
                )),
                (_, None) => None,
            };
            if let Some((artifact, why)) = unusable {
                let hint = match catalog.latest_usable(|_| true) {
                    Some(m) => format!(
                        "To restore the newest usable point, {} at position {}, say so: --restore-until {} (or --artifact {})",
                        m.id,
                        m.positions.to,
                        m.positions.to.next(),
                        m.id
                    ),
                    None => "No earlier point is usable either; run `catena check`.".to_owned(),
                };
                return Err(Error::NewestUnusable {
                    database,
                    artifact,
                    why,
                    hint,
                });
            }
            catalog
                .latest_usable(|_| true)
                .ok_or_else(|| Error::NoUsableBackup {
                    database: database.clone(),
                    problems: catalog.problems().len(),
                })?
        }
        RestoreTarget::UntilPosition(p) => catalog
            .latest_usable(|m| m.positions.to < *p)
            .ok_or_else(|| Error::NothingBefore {
                database: database.clone(),
                bound: format!("position {p}"),
            })?,
        RestoreTarget::UntilTime(t) => {
            catalog
                .latest_usable(|m| m.committed_at < *t)
                .ok_or_else(|| Error::NothingBefore {
                    database: database.clone(),
                    bound: format!("time {t}"),
                })?
        }
    };
    let chain = catalog.chain(&chosen.id)?;
    Ok(RestorePlan {
        target: chosen.id.clone(),
        chain: chain.iter().map(|m| m.id.clone()).collect(),
        position: chosen.positions.to,
        state_digest: chosen.state_digest,
    })
}
