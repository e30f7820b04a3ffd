//! The engine end to end, on a local directory store and on the real servers (moto,
//! s3s-fs) that `scripts/test` starts.

#[path = "../storage-backends/tests/common/mod.rs"]
mod common;
mod engine_cases;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use catena::chain_core::DatabaseName;
use catena::*;

/// A repository under test, with the directory that holds its temporary files.
pub(crate) struct TestRepo {
    pub(crate) name: &'static str,
    pub(crate) repo: Repository,
    _dir: tempfile::TempDir,
}

/// Local directory, moto and s3s-fs repositories (the servers when running).
pub(crate) async fn repos() -> Vec<TestRepo> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("repo").display());
    out.push(TestRepo {
        name: "local",
        repo: Repository::new(
            StorageConfig::from_url(&url)
                .expect("url")
                .build()
                .await
                .expect("local"),
        ),
        _dir: dir,
    });
    let prefix = common::unique("engine");
    if let Some(endpoint) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = common::s3_config(&endpoint, dir.path(), "k", "s", &prefix);
        out.push(TestRepo {
            name: "moto",
            repo: Repository::new(config.build().await.expect("moto")),
            _dir: dir,
        });
    }
    if let Some(endpoint) = common::server_var("CATENA_TEST_S3S_ENDPOINT", "s3s-fs") {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = std::env::var("CATENA_TEST_S3S_ACCESS_KEY").expect("key");
        let secret = std::env::var("CATENA_TEST_S3S_SECRET_KEY").expect("secret");
        let config = common::s3_config(&endpoint, dir.path(), &key, &secret, &prefix);
        out.push(TestRepo {
            name: "s3s-fs",
            repo: Repository::new(config.build().await.expect("s3s-fs")),
            _dir: dir,
        });
    }
    out
}

/// An Azurite repository, when Azurite runs: for the tests of Azure's server copy (the
/// other engine tests run on [`repos`]).
pub(crate) async fn azurite_repo() -> Option<TestRepo> {
    common::server_var("CATENA_TEST_AZURITE", "azurite")?;
    let config = StorageConfig {
        cloud_provider: storage_backends::CloudProvider::Azure,
        bucket_name: common::BUCKET.into(),
        prefix: common::unique("engine"),
        azure_use_emulator: true,
        ..StorageConfig::default()
    };
    Some(TestRepo {
        name: "azurite",
        repo: Repository::new(config.build().await.expect("azurite")),
        _dir: tempfile::tempdir().expect("tempdir"),
    })
}

pub(crate) fn db(name: &str) -> DatabaseName {
    DatabaseName::new(name).expect("database name")
}

pub(crate) fn progress() -> Arc<dyn Progress> {
    Arc::new(NoProgress)
}

/// Small parts and blocks, so that test data sets have several of each.
pub(crate) fn options(request: chain_core::BackupRequest) -> BackupOptions {
    BackupOptions {
        request,
        upload: storage_backends::upload::UploadOptions {
            block_size: 256 << 10,
            part_size: 5 << 20,
            parts_in_flight: 4,
            workers: 2,
            ..Default::default()
        },
        ..BackupOptions::default()
    }
}

pub(crate) async fn backup_dir(
    repo: &Repository,
    name: &str,
    dir: &Path,
    request: chain_core::BackupRequest,
) -> BackupReport {
    let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(dir));
    backup(
        repo,
        vec![(db(name), source)],
        &options(request),
        &progress(),
    )
    .await
    .expect("the run record is written")
}

/// What a tree holds: path -> (kind, content or target, mode, mtime for files).
pub(crate) type Snapshot = BTreeMap<String, (char, Vec<u8>, u32, i64)>;

pub(crate) fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let p: PathBuf = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let md = std::fs::symlink_metadata(&p).expect("metadata");
            let mode = md.permissions().mode() & 0o7777;
            if md.is_symlink() {
                let t = std::fs::read_link(&p).expect("link");
                out.insert(rel, ('l', t.to_string_lossy().as_bytes().to_vec(), 0, 0));
            } else if md.is_dir() {
                out.insert(rel, ('d', Vec::new(), mode, 0));
                stack.push(p);
            } else {
                out.insert(
                    rel,
                    ('f', std::fs::read(&p).expect("read"), mode, md.mtime()),
                );
            }
        }
    }
    out
}

pub(crate) fn assert_same(name: &str, a: &Snapshot, b: &Snapshot) {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "{name}: the same paths");
    for (k, va) in a {
        let vb = &b[k];
        assert_eq!(va.0, vb.0, "{name}: {k} kind");
        assert!(
            va.1 == vb.1,
            "{name}: {k} content differs ({} vs {} bytes)",
            va.1.len(),
            vb.1.len()
        );
        assert_eq!(va.2, vb.2, "{name}: {k} mode");
        assert_eq!(va.3, vb.3, "{name}: {k} mtime");
    }
}
