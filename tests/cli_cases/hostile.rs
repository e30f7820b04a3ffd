//! Hostile repositories through the command line: bounded memory on crafted bytes.

use std::path::Path;

use catena::chain_core::*;

use crate::{catena, text};

/// Writes an artifact of `db` into the local repository at `root` whose index object is
/// `index` and whose manifest records `sizes`, as a hostile writer could.
fn plant(root: &Path, db: &str, index: Vec<u8>, sizes: Sizes) -> ArtifactId {
    let id = ArtifactId::new(
        DatabaseName::new(db).expect("db"),
        jiff::Timestamp::now(),
        rand::random(),
    );
    let dir = root.join(db);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let index_key = ObjectRole::Index.key_for(&id);
    std::fs::write(root.join(&index_key), &index).expect("index");
    let decision = decide_backup(
        &Catalog::new(id.database().clone(), []),
        BackupRequest::default(),
        SourceCapability::DIRECTORY,
    )
    .expect("decision");
    let manifest = ManifestBuilder::new(id.clone(), decision)
        .objects(vec![ObjectRef {
            role: ObjectRole::Index,
            key: index_key,
            size: index.len() as u64,
            sha256: Some(Sha256Digest::of(&index)),
        }])
        .sizes(sizes)
        .build()
        .expect("manifest");
    std::fs::write(
        root.join(format!("{db}/{id}.manifest.json")),
        manifest.to_json(),
    )
    .expect("manifest");
    id
}

/// An index object whose zstd payload inflates to `len` zero bytes (a decompression bomb
/// of about 64 KiB per GiB), its header claiming exactly that length.
fn bomb(len: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    {
        let mut enc = zstd::stream::write::Encoder::new(&mut payload, 19).expect("encoder");
        let zeros = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            std::io::Write::write_all(&mut enc, &zeros[..n]).expect("compress");
            left -= n as u64;
        }
        enc.finish().expect("finish");
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"CTNI");
    out.extend_from_slice(&[1, 1, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0u8; 32]);
    out.extend_from_slice(&payload);
    out
}

/// Peak resident memory (KiB) and output of a catena run under GNU time.
fn measured(args: &[&str]) -> (Option<i32>, u64, String) {
    let exe = catena().get_program().to_owned();
    let o = std::process::Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib %M"])
        .arg(exe)
        .args(args)
        .output()
        .expect("/usr/bin/time runs");
    let out = text(&o);
    let kib = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|n| n.trim().parse().ok())
        .expect("GNU time's line");
    (o.status.code(), kib, out)
}

/// A small crafted index must not make Catena allocate gigabytes: before, a 66 KB index
/// made a restore reach 2.1 GB of resident memory, four of them 4.2 GB. Each of these
/// fails with a clear error naming the object, under 200 MiB: bombs of 2 GiB behind a
/// manifest that records a tiny state (refused by the manifest's bound before any
/// decompression), and behind a manifest that claims an enormous state (refused at the
/// first byte that is not an index's JSON), restored and checked, four in a chain's worth.
#[test]
fn crafted_indexes_fail_clearly_in_bounded_memory() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("repo");
    let two_gib = 2u64 << 30;
    let index = bomb(two_gib);
    assert!(index.len() < 200_000, "{} bytes", index.len());
    let honest = Sizes::default();
    let lying = Sizes {
        logical_bytes: 1 << 50,
        entries: 1 << 40,
        blocks: 1 << 40,
        ..Sizes::default()
    };
    let mut keys = Vec::new();
    for (db, sizes) in [("small", honest), ("huge", lying)] {
        for _ in 0..4 {
            let id = plant(&root, db, index.clone(), sizes);
            keys.push(ObjectRole::Index.key_for(&id));
        }
    }
    let root_s = root.to_str().expect("utf8");
    let mut peaks = Vec::new();
    for db in ["small", "huge"] {
        for args in [
            vec!["restore", db, "--from-path", root_s, "--to"],
            vec!["check", db, "--from-path", root_s],
        ] {
            let mut args = args.clone();
            let dest = t.path().join(format!("out-{db}"));
            if args[0] == "restore" {
                args.push(dest.to_str().expect("utf8"));
            }
            let (code, kib, out) = measured(&args);
            assert_eq!(code, Some(1), "{args:?}: {out}");
            assert!(kib < 200 * 1024, "{args:?}: peak RSS {kib} KiB: {out}");
            assert!(
                keys.iter().any(|k| out.contains(k.as_str())),
                "{args:?}: the error names the index object: {out}"
            );
            assert!(!out.contains("panicked"), "{out}");
            peaks.push(format!("{} {db}: {} MiB", args[0], kib / 1024));
        }
    }
    eprintln!("crafted indexes: {}", peaks.join("; "));
}
