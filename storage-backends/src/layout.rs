//! Where things live in the store (keys are relative to the repository prefix):
//!
//! ```text
//! <database>/<artifact-id>.data            the data object (blocks), when the artifact stores any
//! <database>/<artifact-id>.index           the index object
//! <database>/<artifact-id>.manifest.json   the manifest: written last, create-only
//! _failed/<database>/<artifact-id>.*       pieces of a failed run kept by keepFailed
//! _runs/<run-id>.json                      run records
//! _reports/<report-id>.json                check reports
//! _probe/<random>/...                      the endpoint self-test's objects (removed after)
//! _locks/<database>/<generation>.json      the database's writer lock, one record per generation
//! _jobs/<time>-<status>-<random>.json      the job history of `catena schedule`
//! ```
//!
//! Top-level names starting with `_` can never be database names, so they never collide.
//! Artifact ids sort by creation time, so a listing of `<database>/` is in creation order.

use chain_core::{ArtifactId, DatabaseName, ObjectRole};
use object_store::path::Path;

/// Suffix of manifest keys.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Suffix of index keys.
pub const INDEX_SUFFIX: &str = ".index";
/// Suffix of data keys.
pub const DATA_SUFFIX: &str = ".data";

/// Prefix under which `keepFailed` keeps a failed run's pieces.
pub const FAILED_PREFIX: &str = "_failed";
/// Prefix of run records.
pub const RUNS_PREFIX: &str = "_runs";
/// Prefix of check reports.
pub const REPORTS_PREFIX: &str = "_reports";
/// Prefix of the endpoint self-test's objects.
pub const PROBE_PREFIX: &str = "_probe";
/// Prefix of database locks.
pub const LOCKS_PREFIX: &str = "_locks";
/// Prefix of the job history `catena schedule` keeps.
pub const JOBS_PREFIX: &str = "_jobs";

/// Whether a top-level name is one of Catena's own prefixes rather than a database.
pub fn is_reserved(top: &str) -> bool {
    top.starts_with('_')
}

fn key(id: &ArtifactId, suffix: &str) -> Path {
    Path::from_iter([id.database().as_str(), &format!("{id}{suffix}")])
}

/// The prefix holding one database's artifacts.
pub fn database_prefix(db: &DatabaseName) -> Path {
    Path::from(db.as_str())
}

/// The data object of `id` (see [`ObjectRole::key_for`], which manifests are checked
/// against).
pub fn data_key(id: &ArtifactId) -> Path {
    Path::from(ObjectRole::Data.key_for(id))
}

/// The index object of `id`.
pub fn index_key(id: &ArtifactId) -> Path {
    Path::from(ObjectRole::Index.key_for(id))
}

/// The manifest of `id`.
pub fn manifest_key(id: &ArtifactId) -> Path {
    key(id, MANIFEST_SUFFIX)
}

/// The artifact id of a manifest key, `None` for any other key.
pub fn manifest_id(path: &Path) -> Option<ArtifactId> {
    path.filename()?.strip_suffix(MANIFEST_SUFFIX)?.parse().ok()
}

/// Where `keepFailed` moves a failed artifact's object `key`.
pub fn failed_key(key: &Path) -> Path {
    Path::from_iter(
        std::iter::once(FAILED_PREFIX).chain(
            key.parts()
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout_and_parse_back() {
        let id: ArtifactId = "neo4j-20261125T164656.123456Z-9f86d081884c7d65"
            .parse()
            .expect("id");
        assert_eq!(
            manifest_key(&id).as_ref(),
            "neo4j/neo4j-20261125T164656.123456Z-9f86d081884c7d65.manifest.json"
        );
        assert_eq!(manifest_id(&manifest_key(&id)), Some(id.clone()));
        assert_eq!(manifest_id(&index_key(&id)), None);
        assert_eq!(
            failed_key(&data_key(&id)).as_ref(),
            "_failed/neo4j/neo4j-20261125T164656.123456Z-9f86d081884c7d65.data"
        );
    }
}
