//! Fault injection at every call of an upload: each run leaves either a committed artifact
//! that verifies, or nothing visible, and no multipart upload open.

use std::sync::Arc;

use chain_core::*;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use storage_backends::{Fault, FaultStore, layout};

use crate::common::*;
use crate::{TestFile, read_state, small_parts, write_artifact};

fn files() -> Vec<TestFile> {
    vec![
        TestFile {
            path: "a",
            bytes: data((11 << 20) + 100, 7, true),
        },
        TestFile {
            path: "b",
            bytes: data(100_000, 8, false),
        },
    ]
}

/// Runs one upload through a `FaultStore` failing call `k`, then checks the outcome against
/// the healthy `inner` store.
async fn one_run(
    inner: Arc<dyn ObjectStore>,
    k: Option<u64>,
    fault: Fault,
    suffix: u64,
) -> (u64, bool) {
    let faulty = FaultStore::new(Arc::clone(&inner), k, fault);
    let calls = faulty.clone();
    let store: Arc<dyn ObjectStore> = Arc::new(faulty);
    let db = DatabaseName::new("faults").expect("name");
    let catalog = Catalog::new(db.clone(), []);
    let files = files();
    let outcome = write_artifact(
        &store,
        &catalog,
        &files,
        &State::new(),
        small_parts(),
        suffix,
    )
    .await;

    let listed: Vec<_> = inner.list(None).try_collect().await.expect("list");
    let manifests: Vec<_> = listed
        .iter()
        .filter_map(|m| layout::manifest_id(&m.location))
        .collect();
    match outcome {
        Ok((manifest, _, state)) => {
            assert_eq!(
                manifests,
                vec![manifest.id.clone()],
                "k={k:?}: exactly the committed manifest"
            );
            let back = read_state(&inner, std::slice::from_ref(&manifest), &state).await;
            for f in &files {
                assert!(back[f.path] == f.bytes, "k={k:?}: {} verifies", f.path);
            }
            (calls.calls(), true)
        }
        Err(e) => {
            assert!(
                manifests.is_empty(),
                "k={k:?} {fault:?}: failed ({e}) but a manifest is visible"
            );
            // One fault per run: the cleanup after it succeeds, so nothing at all is left.
            let left: Vec<_> = listed.iter().map(|m| m.location.to_string()).collect();
            assert!(
                left.is_empty(),
                "k={k:?} {fault:?}: failed ({e}) and left {left:?}"
            );
            (calls.calls(), false)
        }
    }
}

async fn clear(store: &Arc<dyn ObjectStore>) {
    let all: Vec<_> = store.list(None).try_collect().await.expect("list");
    for m in all {
        store.delete(&m.location).await.expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_an_upload_can_fail_in_memory() {
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let (total, ok) = one_run(Arc::clone(&inner), None, Fault::Error, 1).await;
    assert!(
        ok && total >= 6,
        "a healthy upload makes several calls ({total})"
    );
    clear(&inner).await;
    let mut failures = 0;
    for fault in [Fault::Error, Fault::Timeout, Fault::TruncatedBody] {
        for k in 0..total {
            let (_, ok) = one_run(Arc::clone(&inner), Some(k), fault, 2 + k).await;
            failures += usize::from(!ok);
            clear(&inner).await;
        }
    }
    eprintln!("memory: {total} calls per upload, 3 faults each, {failures} runs failed cleanly");
    assert!(
        failures as u64 >= total,
        "most injected faults make the upload fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_an_upload_can_fail_on_moto() {
    let Some(endpoint) = server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique("faults");
    let storage = s3_config(&endpoint, dir.path(), "k", "s", &prefix)
        .build()
        .await
        .expect("moto");
    let inner = Arc::clone(&storage.store);
    let (total, ok) = one_run(Arc::clone(&inner), None, Fault::Error, 1).await;
    assert!(ok);
    clear(&inner).await;
    for k in 0..total {
        one_run(Arc::clone(&inner), Some(k), Fault::Error, 2 + k).await;
        clear(&inner).await;
        assert_eq!(
            moto_open_uploads(&endpoint, &prefix).await,
            0,
            "k={k}: a multipart upload was left open"
        );
    }
    eprintln!("moto: {total} calls per upload, each failed once");
}

/// Cancels an upload in the middle (after 12 MiB of input) and checks that nothing is left:
/// no object, and on moto no multipart upload open.
async fn cancel_midway(store: Arc<dyn ObjectStore>, moto: Option<(&str, &str)>) {
    use bytes::Bytes;
    use storage_backends::upload::ArtifactWriter;
    use storage_backends::{CancellationToken, Error};
    let token = CancellationToken::new();
    let id: ArtifactId = "cancel-20260101T000000.000000Z-0000000000000001"
        .parse()
        .expect("id");
    let mut writer = ArtifactWriter::new(
        Arc::clone(&store),
        layout::data_key(&id),
        storage_backends::upload::KnownBlocks::default(),
        crate::small_parts(),
        None,
    )
    .expect("writer")
    .with_cancellation(token.clone());
    let trigger = token.clone();
    let input = futures::stream::iter(0..40u64).map(move |i| {
        if i == 12 {
            trigger.cancel();
        }
        Ok::<_, std::io::Error>(Bytes::from(data(1 << 20, i, true)))
    });
    use futures::StreamExt;
    let err = writer.write_stream(input).await.expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled), "{err}");
    writer.abort().await;
    let left: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert!(left.is_empty(), "a cancelled upload left {left:?}");
    if let Some((endpoint, prefix)) = moto {
        assert_eq!(
            moto_open_uploads(endpoint, prefix).await,
            0,
            "a cancelled upload left a multipart upload open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_upload_leaves_nothing() {
    cancel_midway(Arc::new(object_store::memory::InMemory::new()), None).await;
    if let Some(endpoint) = server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = unique("cancel");
        let storage = s3_config(&endpoint, dir.path(), "k", "s", &prefix)
            .build()
            .await
            .expect("moto");
        cancel_midway(Arc::clone(&storage.store), Some((&endpoint, &prefix))).await;
    }
}
