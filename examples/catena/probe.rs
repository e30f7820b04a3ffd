//! `catena probe`.

use clap::Args;
use std::sync::Arc;

use crate::ctx::{Ctx, Outcome, print_json};
use crate::output::Format;
use crate::storage::StorageFlags;

#[derive(Args, Debug)]
pub(crate) struct ProbeArgs {
    /// The store to test.
    #[arg(long)]
    pub(crate) to_path: String,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

/// `catena probe`.
pub(crate) async fn run(args: ProbeArgs, ctx: &Ctx) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
    let _ = reporter;
    let config = crate::storage::config(&args.storage, Some(&args.to_path), None)?;
    let storage = config.build().await.map_err(|e| e.to_string())?;
    let report = catena::storage_backends::probe(Arc::clone(&storage.store)).await;
    let addressing = catena::storage_backends::probe_addressing(&config).await;
    let server_copy = catena::storage_backends::probe_server_copy(&storage).await;
    if format == Format::Json {
        print_json(
            &serde_json::json!({"store": storage.description, "settings": storage.settings, "report": report, "addressing": addressing, "server_copy": server_copy}),
        );
    } else {
        println!("{}", storage.description);
        for (k, v) in &storage.settings {
            println!("  {k}: {v}");
        }
        if let Some(a) = &addressing {
            let show = |c: &catena::storage_backends::probe::CheckOutcome| match c {
                catena::storage_backends::probe::CheckOutcome::Ok => "works".to_owned(),
                catena::storage_backends::probe::CheckOutcome::Failed(d)
                | catena::storage_backends::probe::CheckOutcome::Ignored(d) => {
                    format!("does not work: {d}")
                }
            };
            println!("  virtual-hosted addressing: {}", show(&a.virtual_hosted));
            println!("  path-style addressing: {}", show(&a.path_style));
        }
        println!("  {}", server_copy.line());
        let mut problems = report.problems();
        problems.extend(addressing.iter().flat_map(|a| a.problems()));
        if problems.is_empty() {
            println!(
                "all checks passed: create-only put, multipart upload, ranged get, list, delete{}",
                if addressing.is_some() {
                    ", bucket addressing"
                } else {
                    ""
                }
            );
        }
        for p in &problems {
            println!("PROBLEM: {p}");
        }
    }
    Ok(report.all_ok() && addressing.is_none_or(|a| a.configured_works()))
}
