//! Inspect: what is stored, as structured rows for tables and JSON.

use std::sync::Arc;

use chain_core::{ArtifactKind, Compression, DatabaseName, Manifest};
use jiff::Timestamp;
use serde::Serialize;
use storage_backends::CancellationToken;

use crate::progress::{Progress, ProgressEvent};
use crate::{Error, Repository};

/// Which artifacts to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InspectScope {
    /// The newest backup of each database.
    LatestBackup,
    /// The chain of the newest restore point of each database.
    LatestChain,
    /// Everything.
    #[default]
    All,
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct InspectOptions {
    /// Which artifacts.
    pub scope: InspectScope,
    /// List EMPTY artifacts (DIFFs of no change) too.
    pub include_empty: bool,
    /// Stops between databases.
    pub cancel: CancellationToken,
}

/// What an inspection found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InspectReport {
    /// The artifacts, oldest first per database; damaged ones marked, never hidden.
    pub rows: Vec<InspectRow>,
}

/// One artifact, as `catena inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InspectRow {
    /// The database.
    pub database: String,
    /// The artifact id.
    pub artifact: String,
    /// FULL or DIFF; `None` for an artifact whose manifest cannot be read.
    pub kind: Option<ArtifactKind>,
    /// Nothing changed since the parent.
    pub empty: bool,
    /// The parent of a DIFF.
    pub parent: Option<String>,
    /// Lowest position covered (exclusive).
    pub from: u64,
    /// Highest position covered.
    pub to: u64,
    /// When the backup started (UTC).
    pub created_at: Timestamp,
    /// When it was committed (UTC).
    pub committed_at: Timestamp,
    /// Bytes of file content in the state it restores to.
    pub logical_bytes: u64,
    /// Bytes it stores.
    pub stored_bytes: u64,
    /// `none` or `zstd-<level>`.
    pub compression: String,
    /// Why it is a FULL or a DIFF.
    pub reason: String,
    /// The state digest.
    pub state_digest: String,
    /// Whether it can be restored.
    pub usable: bool,
    /// Why not, when it cannot.
    pub problem: Option<String>,
}

fn row(catalog: &chain_core::Catalog, m: &Manifest) -> InspectRow {
    let usability = catalog.usability(&m.id);
    InspectRow {
        database: m.database.to_string(),
        artifact: m.id.to_string(),
        kind: Some(m.kind),
        empty: m.empty,
        parent: m.parent.as_ref().map(ToString::to_string),
        from: m.positions.from.0,
        to: m.positions.to.0,
        created_at: m.created_at,
        committed_at: m.committed_at,
        logical_bytes: m.sizes.logical_bytes,
        stored_bytes: m.sizes.stored_bytes,
        compression: match m.compression {
            Compression::None => "none".into(),
            Compression::Zstd { level } => format!("zstd-{level}"),
        },
        reason: m.decision.reason.to_string(),
        state_digest: m.state_digest.to_string(),
        usable: matches!(usability, Some(Ok(()))),
        problem: usability.and_then(Result::err).map(|u| u.to_string()),
    }
}

/// Lists artifacts of `databases` (all databases when empty), oldest first per database.
/// Reads only manifests and listings; `progress` hears of each database.
pub async fn inspect(
    repo: &Repository,
    databases: &[DatabaseName],
    options: &InspectOptions,
    progress: &Arc<dyn Progress>,
) -> Result<InspectReport, Error> {
    let (scope, include_empty) = (options.scope, options.include_empty);
    let dbs = if databases.is_empty() {
        repo.databases().await?
    } else {
        databases.to_vec()
    };
    let mut rows = Vec::new();
    for db in dbs {
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        progress.event(ProgressEvent::Item {
            database: db.to_string(),
            name: "manifests".into(),
        });
        let view = repo.catalog(&db).await?;
        let c = &view.catalog;
        let chosen: Vec<&Manifest> = match scope {
            InspectScope::All => c.artifacts().collect(),
            InspectScope::LatestBackup => c.newest_backup(include_empty).into_iter().collect(),
            InspectScope::LatestChain => c.newest_chain().unwrap_or_default(),
        };
        let mut found: Vec<InspectRow> = chosen
            .into_iter()
            .filter(|m| include_empty || !m.empty)
            .map(|m| row(c, m))
            .collect();
        // Damaged artifacts are listed, marked, never hidden: a backup that is there but
        // cannot be read is not "no backup".
        if scope == InspectScope::All {
            found.extend(c.unreadable().map(damaged_row));
            found.sort_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then(a.artifact.cmp(&b.artifact))
            });
        }
        rows.extend(found);
    }
    Ok(InspectReport { rows })
}

fn damaged_row(d: &chain_core::Damage) -> InspectRow {
    let to = match d.kind {
        chain_core::DamageKind::Unreadable { positions_to } => positions_to.map_or(0, |p| p.0),
        chain_core::DamageKind::Found => 0,
    };
    InspectRow {
        database: d.artifact.database().to_string(),
        artifact: d.artifact.to_string(),
        kind: None,
        empty: false,
        parent: None,
        from: 0,
        to,
        created_at: d.artifact.created_at(),
        committed_at: d.artifact.created_at(),
        logical_bytes: 0,
        stored_bytes: 0,
        compression: "?".into(),
        reason: "damaged".into(),
        state_digest: String::new(),
        usable: false,
        problem: Some(format!("DAMAGED: {}", d.why)),
    }
}
