//! `catena aggregate`.

use std::path::PathBuf;

use catena::chain_core::AggregateTarget;
use catena::*;
use clap::Args;

use crate::backup::load_values;
use crate::ctx::{Ctx, Outcome, print_json, repository};
use crate::output::Format;
use crate::storage::StorageFlags;

/// What a signal that stops this command leaves behind, true at any moment.
pub(crate) const INTERRUPTED: &str = "aggregate stopped; a FULL not yet committed was abandoned and its upload aborted, the old chain is intact; deletions cut short after a commit are finished by the next aggregate or expire; the lock was released";

#[derive(Args, Debug)]
pub(crate) struct AggregateArgs {
    /// Database name or glob (* and ?).
    pub(crate) database: Option<String>,
    /// Where the backups are.
    #[arg(long)]
    pub(crate) from_path: Option<String>,
    /// Keep the old chain.
    #[arg(long)]
    pub(crate) keep_old_backup: bool,
    /// Optional spool directory (accepted; not needed).
    #[arg(long)]
    pub(crate) temp_path: Option<PathBuf>,
    /// The Neo4j chart's values file (backup.aggregate.*).
    #[arg(long)]
    pub(crate) values: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

pub(crate) async fn aggregate_command(args: AggregateArgs, ctx: &Ctx) -> Outcome {
    let values = load_values(args.values.as_deref())?;
    let a = &values.backup.aggregate;
    let url = args
        .from_path
        .clone()
        .or_else(|| a.from_path.clone())
        .ok_or("give --from-path (or backup.aggregate.fromPath in --values)")?;
    let config = args
        .storage
        .config(Some(&url), args.values.as_ref().map(|_| &values))?;
    let repo = repository(config, ctx).await?;
    let pattern = args
        .database
        .clone()
        .or_else(|| a.database.clone())
        .unwrap_or_else(|| "*".into());
    let options = AggregateOptions {
        keep_old_backup: args.keep_old_backup || a.keep_old_backup.unwrap_or(false),
        target: AggregateTarget::Latest,
        upload: ctx.upload.clone(),
        cancel: ctx.cancel.clone(),
        ..AggregateOptions::default()
    };
    aggregate_print(&repo, &pattern, &options, ctx).await
}

pub(crate) async fn aggregate_print(
    repo: &Repository,
    pattern: &str,
    options: &AggregateOptions,
    ctx: &Ctx,
) -> Outcome {
    let format = ctx.format;
    let reports = aggregate(repo, pattern, options, &ctx.reporter)
        .await
        .map_err(|e| e.to_string())?;
    if format == Format::Json {
        print_json(&reports);
    } else {
        for r in &reports {
            match &r.artifact {
                Some(a) => println!(
                    "{}: {} artifacts aggregated into {a}; deleted {}",
                    r.database,
                    r.chain.len(),
                    r.deleted.len()
                ),
                None => println!("{}: already a single FULL", r.database),
            }
        }
    }
    Ok(true)
}
