//! `catena`, the command-line wrapper.
//!
//! Today it has one command, `demo`: a walk through chain planning on the example from
//! Neo4j's documentation, printing every decision with its reason. The backup engine and the
//! full command set (`backup`, `restore`, `aggregate`, `check`, `inspect`, `expire`, `probe`,
//! `schedule`) come with the engine and CLI issues; `demo` then becomes a real backup and
//! restore on a local directory store.
//!
//! ```text
//! cargo run --release --example catena -- demo
//! ```

use std::process::ExitCode;

use catena::chain_core::*;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") if args.len() == 1 => match demo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("-h" | "--help" | "help") | None => {
            println!(
                "usage: catena demo\n\n  demo   walk through chain planning and print each decision"
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "error: unknown command {other:?}; this build knows `demo` (run `catena --help`)"
            );
            ExitCode::FAILURE
        }
    }
}

/// One simulated backup: decide, then commit a manifest the way the engine will.
struct Demo {
    db: DatabaseName,
    manifests: Vec<Manifest>,
    clock: jiff::Timestamp,
    suffix: u64,
}

impl Demo {
    fn catalog(&self) -> Catalog {
        Catalog::new(self.db.clone(), self.manifests.clone())
    }

    fn backup(
        &mut self,
        label: &str,
        request: BackupRequest,
        position: u64,
        empty: bool,
    ) -> Result<ArtifactId, Box<dyn std::error::Error>> {
        let source = SourceCapability {
            position: Some(Position(position)),
            diff_support: DiffSupport::Any,
        };
        let decision = decide_backup(&self.catalog(), request, source)?;
        self.clock = self
            .clock
            .checked_add(jiff::SignedDuration::from_hours(1))?;
        self.suffix += 1;
        let id = ArtifactId::new(self.db.clone(), self.clock, self.suffix);
        let parent = decision.parent.as_ref().map_or("-".to_owned(), short);
        println!(
            "  {label:<28} {:<4} {:<10} parent {:<14} reason {}{}",
            decision.kind,
            decision.positions.to_string(),
            parent,
            decision.reason,
            if empty {
                "  (EMPTY: nothing changed)"
            } else {
                ""
            }
        );
        let manifest = ManifestBuilder::new(id.clone(), decision)
            .empty(empty)
            .state_digest(Sha256Digest::of(id.to_string().as_bytes()))
            .build()?;
        self.manifests.push(manifest);
        Ok(id)
    }
}

/// The id's time and suffix start, enough to tell the demo's artifacts apart.
fn short(id: &ArtifactId) -> String {
    let s = id.to_string();
    let time = s.split('-').nth(1).unwrap_or("");
    time.get(9..13).map_or(s.clone(), |hm| format!("@{hm}"))
}

fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let mut d = Demo {
        db: DatabaseName::new("neo4j")?,
        manifests: Vec::new(),
        clock: "2026-11-25T00:00:00Z".parse()?,
        suffix: 0,
    };
    let auto = BackupRequest::default();
    let full = BackupRequest {
        backup_type: BackupType::Full,
        ..auto
    };
    println!("Catena chain-planning demo (database neo4j; positions are transaction ids)\n");
    println!("Backups, as Neo4j's documentation of preferDiffAsParent describes them:");
    d.backup("first backup (AUTO)", auto, 10, false)?;
    d.backup("changes 11-20 (AUTO)", auto, 20, false)?;
    let diff_30 = d.backup("changes 21-30 (AUTO)", auto, 30, false)?;
    d.backup("nothing changed (AUTO)", auto, 30, true)?;
    d.backup("a FULL on request", full, 40, false)?;

    println!("\nThe next backup, source at 50, decided both ways (nothing is written):");
    let catalog = d.catalog();
    for prefer in [false, true] {
        let request = BackupRequest {
            prefer_diff_as_parent: prefer,
            ..auto
        };
        let source = SourceCapability {
            position: Some(Position(50)),
            diff_support: DiffSupport::Any,
        };
        let decision = decide_backup(&catalog, request, source)?;
        println!(
            "  preferDiffAsParent={prefer:<5}  {} {} parent {} ({})",
            decision.kind,
            decision.positions,
            decision.parent.as_ref().map_or("-".into(), short),
            decision.reason.describe()
        );
    }
    d.backup(
        "changes 31-50 (prefer DIFF)",
        BackupRequest {
            prefer_diff_as_parent: true,
            ..auto
        },
        50,
        false,
    )?;
    let catalog = d.catalog();
    println!(
        "\nCatalog: {} artifacts, {} problems",
        catalog.len(),
        catalog.validate().len()
    );

    println!("\nRestore plans:");
    for (what, target) in [
        ("latest", RestoreTarget::Latest),
        (
            "until position 45",
            RestoreTarget::UntilPosition(Position(45)),
        ),
        (
            "until position 30",
            RestoreTarget::UntilPosition(Position(30)),
        ),
        ("the DIFF ending at 30", RestoreTarget::Artifact(diff_30)),
    ] {
        let plan = plan_restore(&catalog, &target)?;
        let chain: Vec<String> = plan.chain.iter().map(short).collect();
        println!(
            "  {what:<24} reaches position {:<3} via {}",
            plan.position,
            chain.join(" -> ")
        );
    }

    let plan = plan_aggregate(&catalog, &AggregateTarget::Latest, false)?;
    println!(
        "\nAggregate latest into one FULL {}: collapses {} artifacts, then deletes {} and keeps {}",
        plan.positions,
        plan.chain.len(),
        plan.delete.len(),
        plan.keep.len()
    );
    for k in &plan.keep {
        println!("  keeps {} because {:?}", short(&k.artifact), k.reason);
    }

    let policy = ExpirePolicy {
        keep_last_chains: Some(1),
        keep_within: None,
    };
    let plan = plan_expire(&catalog, &policy, d.clock)?;
    println!(
        "\nExpire keeping the last chain: deletes {}, keeps {}",
        plan.delete.len(),
        plan.keep.len()
    );
    for del in &plan.delete {
        println!("  deletes {} ({:?})", short(&del.artifact), del.reason);
    }
    println!("\ndemo finished: every plan above was computed by chain-core without storage");
    Ok(())
}
