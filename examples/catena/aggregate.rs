//! `catena aggregate`.

use std::path::PathBuf;

use catena::chain_core::AggregateTarget;
use catena::*;
use clap::Args;

use crate::ctx::{Ctx, Outcome, print_json, repository};
use crate::job::load_values;
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
    /// How the new FULL is made: auto (the store copies the records itself where it can,
    /// else the client copies them as they are), server (fail where the store cannot),
    /// client, or reencode (decode and compress every block again).
    #[arg(long, default_value = "auto", value_parser = ["auto", "server", "client", "reencode"])]
    pub(crate) copy: String,
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
    let config = crate::storage::config(
        &args.storage,
        Some(&url),
        args.values.as_ref().map(|_| &values),
    )?;
    let repo = repository(config, ctx).await?;
    let pattern = args
        .database
        .clone()
        .or_else(|| a.database.clone())
        .unwrap_or_else(|| "*".into());
    let options = AggregateOptions {
        keep_old_backup: args.keep_old_backup || a.keep_old_backup.unwrap_or(false),
        target: AggregateTarget::Latest,
        copy: args
            .copy
            .parse()
            .map_err(|e: catena::Error| e.to_string())?,
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
    let mut reports = Vec::new();
    for db in repo.databases_matching(pattern).await? {
        reports.push(aggregate(repo, &db, options, &ctx.reporter).await?);
    }
    if format == Format::Json {
        print_json(&reports);
    } else {
        for r in &reports {
            match &r.artifact {
                Some(a) => {
                    println!(
                        "{}: {} artifacts aggregated into {a}; deleted {}",
                        r.database,
                        r.chain.len(),
                        r.deleted.len()
                    );
                    if let Some(c) = &r.copy {
                        println!(
                            "  copy: {}; {} copied by the server, {} read and {} sent by the client, {} records verified before the commit",
                            c.method,
                            bytes(c.server_bytes),
                            bytes(c.client_read_bytes),
                            bytes(c.client_sent_bytes),
                            c.verified_records
                        );
                    }
                }
                None => println!("{}: already a single FULL", r.database),
            }
        }
    }
    Ok(true)
}

/// Bytes for people: `1.5 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
