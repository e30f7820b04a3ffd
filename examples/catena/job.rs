//! The job a `backup` (or `schedule`) invocation describes: its flags over the values file,
//! resolved once into storage, databases and backup options.

use std::path::PathBuf;

use catena::chain_core::{BackupRequest, DatabaseName};
use catena::values::Values;
use catena::*;

use crate::backup::BackupArgs;
use crate::ctx::{Ctx, db_names};
use crate::parse::parse_type;

/// The job a backup invocation describes, from flags and an optional values file.
pub(crate) struct Job {
    pub values: Values,
    pub storage: StorageConfig,
    pub from: Option<PathBuf>,
    pub databases: Vec<DatabaseName>,
    pub options: BackupOptions,
    pub metadata: catena::MetadataLevel,
}

/// Reads `--values` (if given) and says once what in it has no effect here.
pub(crate) fn load_values(path: Option<&std::path::Path>) -> Result<Values, String> {
    let Some(path) = path else {
        return Ok(Values::default());
    };
    let values = Values::load(path).map_err(|e| e.to_string())?;
    if !values.not_applicable.is_empty() {
        eprintln!(
            "note: not applicable outside Kubernetes, ignored: {}",
            values.not_applicable.join(", ")
        );
    }
    for note in values.notes() {
        eprintln!("note: {note}");
    }
    Ok(values)
}

pub(crate) fn job(args: &BackupArgs, ctx: &Ctx) -> Result<Job, String> {
    let values = load_values(args.values.as_deref())?;
    // An aggregate-only values file names its repository in backup.aggregate.fromPath, as
    // `aggregate --values` reads it; --to-path still wins.
    let url = args.to_path.clone().or_else(|| {
        values
            .aggregate_only()
            .then(|| values.backup.aggregate.from_path.clone())
            .flatten()
            .filter(|p| !p.trim().is_empty())
    });
    let storage = crate::storage::config(
        &args.storage,
        url.as_deref(),
        args.values.as_ref().map(|_| &values),
    )?;
    let mut databases = db_names(&args.databases)?;
    if databases.is_empty()
        && let Some(list) = &values.backup.database
    {
        databases = db_names(std::slice::from_ref(list))?;
    }
    let mut request = BackupRequest::default();
    if let Some(t) = &values.backup.backup_type {
        request.backup_type = parse_type(t).map_err(|e| format!("backup.type: {e}"))?;
    }
    if let Some(p) = values.backup.prefer_diff_as_parent {
        request.prefer_diff_as_parent = p;
    }
    if let Some(f) = values.backup.fallback_to_full {
        request.fallback_to_full = f;
    }
    if let Some(t) = args.backup_type {
        request.backup_type = t;
    }
    request.prefer_diff_as_parent |= args.prefer_diff_as_parent;
    if let Some(f) = args.fallback_to_full {
        request.fallback_to_full = f;
    }
    let options = BackupOptions {
        request,
        keep_failed: args.keep_failed || values.backup.keep_failed.unwrap_or(false),
        dry_run: args.dry_run,
        upload: ctx.upload.clone(),
        cancel: ctx.cancel.clone(),
        skipped: Vec::new(),
        force_read: args.force_read || values.backup.force_read.unwrap_or(false),
    };
    let metadata = values.metadata();
    Ok(Job {
        values,
        storage,
        from: args.from.clone(),
        databases,
        options,
        metadata,
    })
}
