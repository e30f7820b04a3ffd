//! `catena check`, and the check after a backup.

use catena::chain_core::DatabaseName;
use catena::*;
use clap::Args;

use crate::ctx::{Ctx, Outcome, db_names, print_json, repository};
use crate::output::Format;
use crate::storage::StorageFlags;

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Databases (default all).
    pub(crate) databases: Vec<String>,
    #[arg(long)]
    pub(crate) from_path: String,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

/// `catena check`.
pub(crate) async fn run(args: CheckArgs, ctx: &Ctx) -> Outcome {
    let (_format, reporter) = (ctx.format, &ctx.reporter);
    let _ = reporter;
    let repo = repository(
        crate::storage::config(&args.storage, Some(&args.from_path), None)?,
        ctx,
    )
    .await?;
    check_databases(
        &repo,
        db_names(&args.databases)?,
        &CheckOptions::default(),
        ctx,
    )
    .await
}

pub(crate) async fn check_databases(
    repo: &Repository,
    mut dbs: Vec<DatabaseName>,
    options: &CheckOptions,
    ctx: &Ctx,
) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
    if dbs.is_empty() {
        dbs = repo.databases().await.map_err(|e| e.to_string())?;
    }
    let mut all_ok = true;
    let mut reports = Vec::new();
    for db in dbs {
        let report = check(repo, &db, options, reporter)
            .await
            .map_err(|e| stopped(&db, &e))?;
        all_ok &= report.ok;
        if format == Format::Tabular {
            println!(
                "check {}: {} ({} artifacts, {} objects, {} blocks verified; report {})",
                report.database,
                if report.ok {
                    "OK".into()
                } else {
                    format!("{} PROBLEMS", report.problems.len())
                },
                report.artifacts,
                report.objects_verified,
                report.blocks_verified,
                report.report_key.as_deref().unwrap_or("-")
            );
            for p in &report.problems {
                println!(
                    "  {}{}{}: {}",
                    p.key.as_deref().unwrap_or("-"),
                    p.offset
                        .map(|o| format!(" at offset {o}"))
                        .unwrap_or_default(),
                    p.artifact
                        .as_deref()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default(),
                    p.problem
                );
            }
        }
        let key = report.report_key.clone();
        reports.push(serde_json::json!({"report": report, "key": key}));
    }
    if format == Format::Json {
        print_json(&reports);
    }
    Ok(all_ok)
}

/// A check that could not finish: the error, and when it may pass on another try (a store
/// that did not answer, a dropped connection), that the failure is a request's, not a
/// finding of damage, that no report was written (what the check had read so far is not
/// reported either way), and to run the check again. Damage is never an error here: it is
/// a problem of the report.
fn stopped(db: &DatabaseName, e: &Error) -> String {
    if e.is_permanent() {
        e.to_string()
    } else {
        format!(
            "the check of {db} stopped before it finished because a request failed (not a finding of damage) and wrote no report: {e}; run the check again when the store answers"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_stopped_by_the_store_says_to_run_it_again_and_damage_is_not_claimed() {
        let db: DatabaseName = "neo4j".parse().expect("name");
        let dropped = Error::Storage(storage_backends::Error::Store {
            operation: "reading",
            key: "neo4j/x.data".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "connection reset".into(),
            },
        });
        let text = stopped(&db, &dropped);
        assert!(text.contains("run the check again"), "{text}");
        assert!(text.contains("not a finding of damage"), "{text}");
        assert!(text.contains("wrote no report"), "{text}");
        assert!(text.contains("neo4j/x.data"), "{text}");
        // A permanent error (a cancel, bad credentials) is told as it is: running it again
        // unchanged cannot pass.
        assert_eq!(
            stopped(&db, &Error::Cancelled),
            Error::Cancelled.to_string()
        );
    }
}
