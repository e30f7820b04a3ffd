//! `catena unlock`.

use catena::chain_core::DatabaseName;
use clap::Args;

use crate::ctx::{Ctx, Outcome, repository};
use crate::storage::StorageFlags;

#[derive(Args, Debug)]
pub(crate) struct UnlockArgs {
    /// The database.
    pub(crate) database: String,
    #[arg(long)]
    pub(crate) from_path: String,
    /// Break the lock even if its holder is a process running on this host.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

/// `catena unlock`.
pub(crate) async fn run(args: UnlockArgs, ctx: &Ctx) -> Outcome {
    let repo = repository(
        crate::storage::config(&args.storage, Some(&args.from_path), None)?,
        ctx,
    )
    .await?;
    let db = DatabaseName::new(&args.database).map_err(|e| e.to_string())?;
    let options = catena::UnlockOptions {
        force: args.force,
        cancel: ctx.cancel.clone(),
    };
    match catena::unlock(&repo, &db, &options, &ctx.reporter)
        .await?
        .broken
    {
        Some(r) => println!(
            "{db}: broke the lock of {} (pid {}, {}), taken {}",
            r.owner.host,
            r.owner.pid,
            r.owner.operation,
            r.written_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => println!("{db}: not locked"),
    }
    Ok(true)
}
