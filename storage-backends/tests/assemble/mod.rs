//! Assembly on every backend: a new object from ranges of a FULL and a DIFF, by the store's
//! server-side copy where it has one and by the client otherwise; the object is the
//! planned concatenation byte for byte; a copy of a wrong range is caught by the
//! verification; a cancelled copy leaves nothing (and no open upload on moto).

use std::sync::Arc;

use chain_core::*;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use storage_backends::Error;
use storage_backends::assemble::{
    self, AssemblyJob, CopyFault, FaultCopy, ServerCopy, client_copy, verify_assembled,
};
use storage_backends::layout;
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::{TestFile, small_parts, write_artifact};

fn random(n: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The bytes `plan` says the object holds: its segments' ranges, read from the sources.
async fn expected_bytes(
    store: &Arc<dyn ObjectStore>,
    sources: &[Path],
    plan: &AssemblyPlan,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(plan.size as usize);
    for s in &plan.segments {
        let b = store
            .get_range(&sources[s.source], s.range.clone())
            .await
            .expect("source range");
        out.extend_from_slice(&b);
    }
    out
}

async fn assemble_on(b: &Backend, caught_by_verification: &mut Vec<&'static str>) {
    let name = b.name;
    let store = b.store();
    let db = DatabaseName::new("neo4j").expect("name");
    // A FULL of 12 blocks of 1 MiB (random: stored at full size), then a DIFF of 6 more.
    let catalog = Catalog::new(db.clone(), []);
    let (full, full_data, full_state) = write_artifact(
        &store,
        &catalog,
        &[TestFile {
            path: "a",
            bytes: random(12 << 20, 1),
        }],
        &State::new(),
        small_parts(),
        1,
    )
    .await
    .expect("full");
    let catalog = Catalog::new(db.clone(), [full.clone()]);
    let (diff, diff_data, _) = write_artifact(
        &store,
        &catalog,
        &[TestFile {
            path: "b",
            bytes: random(6 << 20, 2),
        }],
        &full_state,
        small_parts(),
        2,
    )
    .await
    .expect("diff");
    let sources = vec![layout::data_key(&full.id), layout::data_key(&diff.id)];
    // The new state keeps the FULL's blocks but block 2 and blocks 5 and 6 (as if later
    // DIFFs had replaced them), and the DIFF's: under S3's 5 MiB minimum the two short
    // runs before block 5 are sent by the client, the rest is copied by the server.
    let mut records: Vec<SourceRecord> = full_data
        .locations
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2 && !(5..7).contains(i))
        .map(|(_, l)| SourceRecord {
            source: 0,
            location: *l,
        })
        .collect();
    records.extend(diff_data.locations.iter().map(|l| SourceRecord {
        source: 1,
        location: *l,
    }));

    let server = b.storage.server_copy.clone();
    let limits = server.as_ref().map_or(PartLimits::NONE, |c| c.limits());
    let plan = plan_assembly(records, &limits).expect("plan");
    let want = expected_bytes(&store, &sources, &plan).await;
    let cancel = CancellationToken::new();

    // The store's copy (or the client's), then the client's: both give the planned bytes.
    for (i, by_server) in [(1u64, true), (2, false)] {
        let dest = Path::from(format!("{}/assembled-{i}.data", unique("assemble")));
        let job = AssemblyJob {
            store: &store,
            dest: &dest,
            sources: &sources,
            plan: &plan,
            cancel: &cancel,
        };
        match (&server, by_server) {
            (Some(copy), true) => copy
                .assemble(&job)
                .await
                .unwrap_or_else(|e| panic!("{name}: {} failed: {e}", copy.method())),
            _ => client_copy(&job, &small_parts())
                .await
                .unwrap_or_else(|e| panic!("{name}: client copy failed: {e}")),
        }
        let check = verify_assembled(&store, &dest, &plan, None)
            .await
            .unwrap_or_else(|e| panic!("{name}: verification failed: {e}"));
        assert!(check.records >= 2, "{name}: {check:?}");
        let got = store
            .get(&dest)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert!(
            got.as_ref() == want.as_slice(),
            "{name}: assembled bytes differ from the plan"
        );
    }
    if let Some(copy) = &server {
        eprintln!(
            "{name}: server copy by {}: {} parts, {} bytes on the server, {} through the client",
            copy.method(),
            plan.parts.len(),
            plan.server_bytes,
            plan.client_bytes
        );
        assert!(plan.server_bytes > 0, "{name}: the server copies something");
        if limits.min_part > 0 {
            assert!(
                plan.client_bytes > 0 && plan.parts.iter().any(|p| matches!(p, Part::Send { .. })),
                "{name}: short runs are sent by the client"
            );
        }
    }

    // A copy of a range one byte off is caught before anything names the object.
    let inner: Arc<dyn ServerCopy> = match &server {
        Some(c) => Arc::clone(c),
        None => return,
    };
    let dest = Path::from(format!("{}/shifted.data", unique("assemble")));
    let job = AssemblyJob {
        store: &store,
        dest: &dest,
        sources: &sources,
        plan: &plan,
        cancel: &cancel,
    };
    // A range that runs past its source's end may be refused by the store (s3s-fs: 416);
    // where the copy "succeeds", the verification must catch it.
    if FaultCopy::new(Arc::clone(&inner), CopyFault::ShiftRange)
        .assemble(&job)
        .await
        .is_ok()
    {
        let e = verify_assembled(&store, &dest, &plan, None)
            .await
            .expect_err("a shifted range must be caught");
        // Caught by a record that fails its digest, or by the size (moto answers a range
        // past the end one byte short).
        assert!(
            matches!(e, Error::Corrupt { .. })
                && (e.to_string().contains("not what was planned")
                    || e.to_string().contains("the store assembled something else")),
            "{name}: {e}"
        );
        caught_by_verification.push(name);
    }
    assemble::discard(store.as_ref(), &dest).await;
    assert!(store.head(&dest).await.is_err(), "{name}: discarded");

    // A copy that never ends stops when cancelled, leaving nothing.
    let cancel = CancellationToken::new();
    let dest = Path::from(format!("{}/hung.data", unique("assemble")));
    let job = AssemblyJob {
        store: &store,
        dest: &dest,
        sources: &sources,
        plan: &plan,
        cancel: &cancel,
    };
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        stopper.cancel();
    });
    let e = FaultCopy::new(Arc::clone(&inner), CopyFault::Hang)
        .assemble(&job)
        .await
        .expect_err("cancelled");
    assert!(matches!(e, Error::Cancelled), "{name}: {e}");
    // The real copy, cancelled before it starts, leaves nothing either.
    let e = inner.assemble(&job).await.expect_err("cancelled");
    assert!(matches!(e, Error::Cancelled), "{name}: {e}");
    assert!(
        store.head(&dest).await.is_err(),
        "{name}: nothing at the destination"
    );
    b.assert_no_open_uploads().await;
    let _ = diff;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assembly_on_every_backend() {
    let backends = backends().await;
    let mut caught = Vec::new();
    for b in &backends {
        assemble_on(b, &mut caught).await;
    }
    eprintln!("shifted copies caught by the verification on: {caught:?}");
    assert!(caught.contains(&"memory") && caught.contains(&"local"));
    let with_copy: Vec<_> = backends
        .iter()
        .filter(|b| b.storage.server_copy.is_some())
        .map(|b| b.name)
        .collect();
    eprintln!("backends with server copy: {with_copy:?}");
    assert!(with_copy.contains(&"memory") && with_copy.contains(&"local"));
    // S3's UploadPartCopy on moto, Azure's Put Block From URL on Azurite, where they run.
    for name in ["moto", "azurite"] {
        if backends.iter().any(|b| b.name == name) {
            assert!(with_copy.contains(&name), "{name} has a server copy");
        }
    }
}
