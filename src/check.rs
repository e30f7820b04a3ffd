//! Check: structure, objects, indexes, blocks and state digests of every chain, without
//! aggregating first. A sealed JSON report is written under `_reports/` and returned.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chain_core::{ArtifactId, DatabaseName, Index, Manifest, ObjectRole};
use futures::StreamExt;
use jiff::Timestamp;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use storage_backends::{CancellationToken, commit, layout, read};

use crate::progress::{Progress, ProgressEvent};
use crate::{Error, Repository};

/// What to check (the seed's `consistencyCheck.check*` levels).
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Chain structure: links, positions, roots (`checkGraph`).
    pub structure: bool,
    /// Index objects decode (`checkIndexes`).
    pub indexes: bool,
    /// Object sizes and SHA-256 (`checkCounts`).
    pub objects: bool,
    /// Every block decodes and matches its hash; composed states match their digests
    /// (`checkPropertyOwners`).
    pub blocks: bool,
    /// Blocks read at once.
    pub blocks_in_flight: usize,
    /// Write the report under `_reports/`.
    pub write_report: bool,
    /// Stops between artifacts; nothing is written.
    pub cancel: CancellationToken,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            structure: true,
            indexes: true,
            objects: true,
            blocks: true,
            blocks_in_flight: 8,
            write_report: true,
            cancel: CancellationToken::new(),
        }
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckProblem {
    /// The artifact, when the problem belongs to one.
    pub artifact: Option<String>,
    /// The object key, when the problem is in an object.
    pub key: Option<String>,
    /// The byte offset in that object, when known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

/// The report of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The database.
    pub database: String,
    /// When the check ran.
    pub checked_at: Timestamp,
    /// Artifacts found.
    pub artifacts: usize,
    /// Objects verified (sizes and SHA-256).
    pub objects_verified: usize,
    /// Blocks decoded and verified.
    pub blocks_verified: u64,
    /// Everything wrong.
    pub problems: Vec<CheckProblem>,
    /// Objects under the database's prefix that no manifest names, and staging files of
    /// interrupted writes in a local directory (`<key>#<n>`): left by interrupted runs,
    /// removable by garbage collection ([`crate::gc()`]). Not a failure.
    pub unreferenced: Vec<String>,
    /// No problems.
    pub ok: bool,
    /// Where the report was written (`None` when not asked to write it); not part of the
    /// stored report itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
}

impl CheckReport {
    /// The report as an encrypted repository stores it (reports are stored in clear): each
    /// problem keeps its artifact, object and offset, and its text, which may name a file,
    /// is withheld.
    pub fn redacted(&self) -> Self {
        let mut report = self.clone();
        for p in &mut report.problems {
            p.problem = "damaged; the details are withheld from an encrypted repository's stored report: run `catena check` with the key to see them".into();
        }
        report
    }
}

fn problem(
    artifact: Option<&ArtifactId>,
    key: Option<String>,
    offset: Option<u64>,
    what: impl Into<String>,
) -> CheckProblem {
    CheckProblem {
        artifact: artifact.map(ToString::to_string),
        key,
        offset,
        problem: what.into(),
    }
}

/// What a failed read means for a check: damage in the bucket (a problem of the report:
/// bytes that do not verify, an object gone, a record that does not decode), or a failure
/// to look (a dropped connection, a refused request, a cancel), which stops the check with
/// its error and writes no report: a later catalog takes a report's problems for damage,
/// and a sound backup must not be marked unusable because the network failed.
fn from_storage(artifact: &ArtifactId, e: storage_backends::Error) -> Result<CheckProblem, Error> {
    match e {
        storage_backends::Error::Corrupt { key, offset, why } => {
            Ok(problem(Some(artifact), Some(key), Some(offset), why))
        }
        storage_backends::Error::Store {
            key,
            source: source @ object_store::Error::NotFound { .. },
            ..
        } => Ok(problem(Some(artifact), Some(key), None, source.to_string())),
        storage_backends::Error::Chain(e) => Ok(problem(Some(artifact), None, None, e.to_string())),
        other => Err(other.into()),
    }
}

/// Checks `db`. Returns the report (also written under `_reports/` when asked, its key in
/// [`CheckReport::report_key`]); a report with problems is not an `Err`: callers exit
/// non-zero on `!report.ok`.
pub async fn check(
    repo: &Repository,
    db: &DatabaseName,
    options: &CheckOptions,
    progress: &Arc<dyn Progress>,
) -> Result<CheckReport, Error> {
    // As found: an earlier report's findings must not make this check fail for ever.
    let view = repo.catalog_as_found(db).await?;
    let catalog = &view.catalog;
    progress.event(ProgressEvent::DatabaseStarted {
        database: db.to_string(),
        operation: "check",
        total_bytes: Some(catalog.artifacts().map(|m| m.sizes.stored_bytes).sum()),
    });
    let mut problems = Vec::new();
    for u in &view.unreadable {
        problems.push(problem(
            None,
            Some(u.key.clone()),
            None,
            format!("manifest does not decode: {}", u.why),
        ));
    }
    if options.structure {
        // Objects missing or of another size are reported with their key below.
        for p in catalog
            .problems()
            .iter()
            .filter(|p| !matches!(p, chain_core::CatalogProblem::Damaged { .. }))
        {
            let first = p.artifacts().first().map(|a| (*a).clone());
            problems.push(problem(
                first.as_ref(),
                first.as_ref().map(|a| layout::manifest_key(a).to_string()),
                None,
                p.to_string(),
            ));
        }
    }

    let mut indexes: BTreeMap<ArtifactId, Index> = BTreeMap::new();
    let mut objects_verified = 0;
    let mut blocks_verified = 0u64;
    for m in catalog.artifacts() {
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        progress.event(ProgressEvent::Item {
            database: db.to_string(),
            name: m.id.to_string(),
        });
        // The data object is missing or not the size recorded: reported here, and its
        // blocks are not read (ranges past its end fail as requests, not as damage).
        let mut data_unsound = false;
        for o in &m.objects {
            match view.objects.get(&o.key) {
                None => {
                    data_unsound |= o.role == ObjectRole::Data;
                    problems.push(problem(
                        Some(&m.id),
                        Some(o.key.clone()),
                        None,
                        "the object is missing",
                    ));
                }
                Some(size) if *size != o.size => {
                    data_unsound |= o.role == ObjectRole::Data;
                    problems.push(problem(
                        Some(&m.id),
                        Some(o.key.clone()),
                        Some((*size).min(o.size)),
                        format!("{size} bytes, the manifest records {}", o.size),
                    ));
                }
                Some(_) if options.objects => {
                    match read::verify_object(repo.store().as_ref(), o).await {
                        Ok(()) => objects_verified += 1,
                        Err(e) => {
                            problems.push(from_storage(&m.id, e)?);
                        }
                    }
                }
                Some(_) => {}
            }
        }
        if !(options.indexes || options.blocks) {
            continue;
        }
        let index = match read::read_index(repo.store().as_ref(), m, repo.key()).await {
            Ok(i) => i,
            Err(e) => {
                problems.push(from_storage(&m.id, e)?);
                continue;
            }
        };
        if options.blocks && !data_unsound {
            blocks_verified +=
                check_blocks(repo, m, &index, options, progress, &mut problems).await?;
        }
        indexes.insert(m.id.clone(), index);
    }

    if options.blocks {
        check_states(catalog, &indexes, &mut problems);
    }
    check_records(repo, db, &mut problems).await?;
    let mut unreferenced: Vec<String> = view.unreferenced().into_iter().collect();
    unreferenced.extend(crate::gc::staging_keys(repo, db));
    let mut report = CheckReport {
        database: db.to_string(),
        checked_at: Timestamp::now(),
        artifacts: catalog.len(),
        objects_verified,
        blocks_verified,
        ok: problems.is_empty(),
        problems,
        unreferenced,
        report_key: None,
    };
    progress.event(ProgressEvent::DatabaseFinished {
        database: db.to_string(),
        ok: report.ok,
    });
    report.report_key = if options.write_report {
        let key = Path::from_iter([
            layout::REPORTS_PREFIX,
            &format!(
                "check-{db}-{}-{:08x}.json",
                report.checked_at.strftime("%Y%m%dT%H%M%S%.6fZ"),
                rand::random::<u32>()
            ),
        ]);
        // Stored in clear: an encrypted repository's copy keeps where, not what (a
        // composition error can name a file); the returned report keeps it whole.
        let stored = if repo.key().is_some() {
            report.redacted()
        } else {
            report.clone()
        };
        commit::put_create(
            repo.store().as_ref(),
            &key,
            Bytes::from(chain_core::sealed::seal(&stored)),
        )
        .await?;
        Some(key.to_string())
    } else {
        None
    };
    Ok(report)
}

async fn check_blocks(
    repo: &Repository,
    m: &Manifest,
    index: &Index,
    options: &CheckOptions,
    progress: &Arc<dyn Progress>,
    problems: &mut Vec<CheckProblem>,
) -> Result<u64, Error> {
    let Some(data) = m.objects.iter().find(|o| o.role == ObjectRole::Data) else {
        if !index.blocks.is_empty() {
            problems.push(problem(
                Some(&m.id),
                None,
                None,
                "the index lists blocks but there is no data object",
            ));
        }
        return Ok(0);
    };
    let Ok(key) = Path::parse(&data.key) else {
        return Ok(0);
    };
    let mut stream = Box::pin(read::read_blocks(
        Arc::clone(repo.store()),
        key,
        index.blocks.clone(),
        options.blocks_in_flight,
        repo.key().cloned(),
    ));
    let mut n = 0;
    while let Some(r) = stream.next().await {
        match r {
            Ok(b) => {
                n += 1;
                progress.event(ProgressEvent::Bytes {
                    database: m.database.to_string(),
                    bytes: b.len() as u64,
                });
            }
            Err(e) => problems.push(from_storage(&m.id, e)?),
        }
    }
    Ok(n)
}

/// Composes every usable artifact's chain from the indexes read and compares its state
/// digest, and checks that every block a state uses is stored somewhere on its chain.
fn check_states(
    catalog: &chain_core::Catalog,
    indexes: &BTreeMap<ArtifactId, Index>,
    problems: &mut Vec<CheckProblem>,
) {
    for m in catalog.artifacts() {
        let Ok(chain) = catalog.chain(&m.id) else {
            continue;
        };
        if chain.iter().any(|c| !indexes.contains_key(&c.id)) {
            continue; // an index is unreadable: already reported
        }
        let links = chain.iter().map(|c| (&c.id, &indexes[&c.id].changes));
        let key = Some(layout::manifest_key(&m.id).to_string());
        match chain_core::compose(links) {
            Err(e) => problems.push(problem(Some(&m.id), key, None, e.to_string())),
            Ok(state) => {
                if state.digest() != m.state_digest {
                    problems.push(problem(
                        Some(&m.id),
                        key.clone(),
                        None,
                        format!(
                            "its chain composes to state {}, the manifest records {}",
                            state.digest(),
                            m.state_digest
                        ),
                    ));
                }
                // What restore would refuse, by the same validation it runs.
                let stored: BTreeMap<_, _> = chain
                    .iter()
                    .flat_map(|c| indexes[&c.id].blocks.iter().map(|b| (b.digest, b.len)))
                    .collect();
                if let Err(e) = chain_core::check_restorable(&state, |d| stored.get(d).copied()) {
                    problems.push(problem(
                        Some(&m.id),
                        key,
                        None,
                        format!("restore would refuse it: {e}"),
                    ));
                }
            }
        }
    }
}

/// Opens every record Catena writes outside the artifacts that concerns `db` or the whole
/// repository (run records, `db`'s check reports and lock records, job history records,
/// the notes of failed runs kept under `_failed/<db>/`) and checks its seal: a record that
/// was altered or damaged is a problem named by its key, never trusted.
async fn check_records(
    repo: &Repository,
    db: &DatabaseName,
    problems: &mut Vec<CheckProblem>,
) -> Result<(), Error> {
    use object_store::ObjectStoreExt;
    let report_prefix = format!("{}/check-{db}-", layout::REPORTS_PREFIX);
    let prefixes = [
        (Path::from(layout::RUNS_PREFIX), "run record"),
        (Path::from(layout::REPORTS_PREFIX), "check report"),
        (
            Path::from_iter([layout::LOCKS_PREFIX, db.as_str()]),
            "lock record",
        ),
        (Path::from(layout::JOBS_PREFIX), "job record"),
        (
            Path::from_iter([layout::FAILED_PREFIX, db.as_str()]),
            "failed-run note",
        ),
    ];
    for (p, what) in prefixes {
        for meta in repo.list(&p).await? {
            let key = meta.location.to_string();
            let relevant = match what {
                "check report" => key.starts_with(&report_prefix),
                "failed-run note" => key.ends_with(".error.json"),
                _ => key.ends_with(".json"),
            };
            if !relevant {
                continue;
            }
            if meta.size > chain_core::sealed::MAX_RECORD_LEN as u64 {
                problems.push(problem(
                    None,
                    Some(key),
                    None,
                    format!(
                        "this {what} is {} bytes, more than a record may be",
                        meta.size
                    ),
                ));
                continue;
            }
            let bytes = match repo.store().get(&meta.location).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match bytes {
                Ok(b) => b,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(storage_backends::Error::store("reading", &meta.location, e).into());
                }
            };
            let opened = match what {
                "run record" => chain_core::sealed::open::<crate::RunRecord>(&bytes).map(|_| ()),
                "check report" => chain_core::sealed::open::<CheckReport>(&bytes).map(|_| ()),
                "lock record" => {
                    chain_core::sealed::open::<crate::lock::LockRecord>(&bytes).map(|_| ())
                }
                _ => chain_core::sealed::open::<serde_json::Value>(&bytes).map(|_| ()),
            };
            if let Err(e) = opened {
                problems.push(problem(
                    None,
                    Some(key),
                    None,
                    format!("this {what} does not verify: {e}"),
                ));
            }
        }
    }
    Ok(())
}
