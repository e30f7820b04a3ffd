//! `catena expire`.

use catena::chain_core::ExpirePolicy;
use catena::*;
use clap::Args;

use crate::ctx::{Ctx, Outcome, db_names, print_json, repository};
use crate::output::Format;
use crate::parse::parse_duration;
use crate::storage::StorageFlags;

/// What a signal that stops this command leaves behind, true at any moment.
pub(crate) const INTERRUPTED: &str = "expire stopped; artifacts deleted before the signal are gone, the rest are kept, none is left without its parent; the lock was released";

#[derive(Args, Debug)]
pub(crate) struct ExpireArgs {
    /// Databases (default all).
    pub(crate) databases: Vec<String>,
    #[arg(long)]
    pub(crate) from_path: String,
    /// Keep the N newest chains.
    #[arg(long)]
    pub(crate) keep_last: Option<u32>,
    /// Keep everything newer than this (e.g. 7d, 12h).
    #[arg(long)]
    pub(crate) keep_within: Option<String>,
    /// Show what would be deleted.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

/// `catena expire`.
pub(crate) async fn run(args: ExpireArgs, ctx: &Ctx) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
    let _ = reporter;
    let repo = repository(
        crate::storage::config(&args.storage, Some(&args.from_path), None)?,
        ctx,
    )
    .await?;
    if args.keep_last.is_none() && args.keep_within.is_none() {
        return Err(
                "expire needs a retention policy: give --keep-last N (keep the N newest chains), --keep-within DURATION (e.g. 30d), or both".into(),
            );
    }
    let policy = ExpirePolicy {
        keep_last_chains: args.keep_last,
        keep_within: args
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()?,
    };
    let mut dbs = db_names(&args.databases)?;
    if dbs.is_empty() {
        dbs = repo.databases().await.map_err(|e| e.to_string())?;
    }
    let mut reports = Vec::new();
    for db in dbs {
        let options = ExpireOptions {
            dry_run: args.dry_run,
            cancel: ctx.cancel.clone(),
            ..ExpireOptions::new(policy.clone())
        };
        reports.push(
            expire(&repo, &db, &options, &ctx.reporter)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    if format == Format::Json {
        print_json(&reports);
    } else {
        for r in &reports {
            println!(
                "{}: {} {}, {} kept",
                r.database,
                r.deleted.len(),
                if r.dry_run {
                    "would be deleted"
                } else {
                    "deleted"
                },
                r.kept.len()
            );
            for d in &r.deleted {
                println!("  - {d}");
            }
        }
    }
    Ok(true)
}
