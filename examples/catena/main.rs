//! `catena`, the command-line wrapper: neo4j-admin's vocabulary and the Neo4j chart's values
//! file in, library calls out, progress bars and tables or JSON out. No backup logic lives
//! here; each command is a module of this folder, and this file holds the arguments and
//! the dispatch.
//!
//! ```text
//! cargo run --release --example catena -- demo
//! cargo run --release --example catena -- backup --from /data/databases --to-path s3://bucket/prefix
//! cargo run --release --example catena -- backup --values backup-values.yaml --from /data/databases
//! cargo run --release --example catena -- restore neo4j --from-path s3://bucket/prefix --to /restore/neo4j
//! ```
//!
//! Exit codes, like neo4j-admin: 0 success, 1 failure or success with problems; 143 / 130
//! when SIGTERM / SIGINT stopped a command.

mod aggregate;
mod backup;
mod check;
mod ctx;
mod demo;
mod expire;
mod gc;
mod inspect;
mod job;
mod keys;
mod output;
mod parse;
mod probe;
mod restore;
mod sample;
mod schedule;
mod signals;
mod storage;
mod unlock;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ctx::{Ctx, Outcome};
use output::Format;
use parse::{parse_compression, parse_duration};
use signals::Interrupt;

#[derive(Parser, Debug)]
#[command(
    name = "catena",
    version,
    about = "Backups as chains of immutable FULL and DIFF artifacts in object storage"
)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Output: TABULAR (default) or JSON.
    #[arg(long, value_enum, default_value = "TABULAR", global = true)]
    format: Format,
    /// Wait this long for a database lock another run holds (e.g. 30s, 10m) before failing.
    #[arg(long, global = true, value_parser = parse_duration)]
    retry_lock: Option<std::time::Duration>,
    /// Block compression of what backup and aggregate write: zstd-1 .. zstd-22, or none
    /// (default zstd-3).
    #[arg(long, global = true, value_parser = parse_compression)]
    compression: Option<catena::chain_core::Compression>,
    /// Multipart part size in MiB (default 8; at least 5).
    #[arg(long, global = true)]
    part_size_mib: Option<usize>,
    /// Parts held at once, the one being filled included: the others upload (default 8).
    #[arg(long, global = true)]
    parts_in_flight: Option<usize>,
    #[command(flatten)]
    encryption: keys::EncryptionFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up databases (one subdirectory of --from each).
    Backup(backup::BackupArgs),
    /// Collapse a chain into one FULL.
    Aggregate(aggregate::AggregateArgs),
    /// Restore a database.
    Restore(restore::RestoreArgs),
    /// List backups.
    Inspect(inspect::InspectArgs),
    /// Check backups for consistency.
    Check(check::CheckArgs),
    /// Delete old chains under a retention policy.
    Expire(expire::ExpireArgs),
    /// Remove what interrupted runs left behind (objects no manifest names, staging files).
    Gc(gc::GcArgs),
    /// Break a database's lock left by a process that is known to be gone.
    Unlock(unlock::UnlockArgs),
    /// Manage the key slots of an encrypted repository.
    Key(keys::KeyArgs),
    /// Self-test of a storage endpoint.
    Probe(probe::ProbeArgs),
    /// Run the values file's job on its cron schedule.
    Schedule(schedule::ScheduleArgs),
    /// Back up, check, aggregate and restore a sample data set, verifying the result.
    Demo {
        /// Keep the data, store and restores in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

impl Command {
    /// What stopping this command by a signal leaves behind, true at any moment.
    fn interrupted_note(&self) -> &'static str {
        match self {
            Command::Backup(_) => backup::INTERRUPTED,
            Command::Schedule(_) => schedule::INTERRUPTED,
            Command::Aggregate(_) => aggregate::INTERRUPTED,
            Command::Restore(_) => restore::INTERRUPTED,
            Command::Expire(_) => expire::INTERRUPTED,
            Command::Gc(_) => gc::INTERRUPTED,
            _ => "stopped; this command writes nothing that a stop can leave half-done",
        }
    }
}

fn main() -> ExitCode {
    // Exit codes like neo4j-admin: a usage error is a failure (1), not clap's 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    ctx::init_logging(cli.verbose);
    let rt = match ctx::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (format, what) = (cli.format, cli.command.interrupted_note());
    let interrupt = Interrupt::default();
    let outcome = rt.block_on(async {
        interrupt.listen(what);
        run(cli, &interrupt).await
    });
    interrupt.exit_code(rt, what, format, outcome)
}

async fn run(cli: Cli, interrupt: &Interrupt) -> Outcome {
    let ctx = Ctx::new(
        cli.format,
        interrupt,
        cli.compression,
        cli.part_size_mib,
        cli.parts_in_flight,
        cli.retry_lock,
        cli.encryption,
    )?;
    match cli.command {
        Command::Demo { keep } => demo::demo(keep).await.map_err(|e| e.to_string().into()),
        Command::Backup(args) => backup::backup_command(args, &ctx).await,
        Command::Schedule(args) => schedule::schedule(args, &ctx).await,
        Command::Aggregate(args) => aggregate::aggregate_command(args, &ctx).await,
        Command::Restore(args) => restore::run(args, &ctx).await,
        Command::Inspect(args) => inspect::run(args, &ctx).await,
        Command::Check(args) => check::run(args, &ctx).await,
        Command::Expire(args) => expire::run(args, &ctx).await,
        Command::Gc(args) => gc::run(args, &ctx).await,
        Command::Unlock(args) => unlock::run(args, &ctx).await,
        Command::Probe(args) => probe::run(args, &ctx).await,
        Command::Key(args) => keys::run(args, &ctx).await,
    }
}
