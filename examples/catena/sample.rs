//! The demo's sample data: two databases of deterministic compressible and incompressible
//! files, the changes between its backups, and a byte-for-byte reading of a tree to compare
//! a restore with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Deterministic bytes: noise (incompressible) or JSON-like records (compressible).
pub(crate) fn sample(len: usize, seed: u64, noisy: bool) -> Vec<u8> {
    if noisy {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    } else {
        let mut out = Vec::with_capacity(len);
        let mut n = seed;
        while out.len() < len {
            out.extend_from_slice(
                format!(
                    "{{\"id\":{n},\"label\":\"Person\",\"name\":\"node-{n}\",\"since\":{}}}\n",
                    2000 + n % 26
                )
                .as_bytes(),
            );
            n += 1;
        }
        out.truncate(len);
        out
    }
}

pub(crate) fn make_data(root: &Path) -> std::io::Result<()> {
    let neo4j = root.join("neo4j");
    std::fs::create_dir_all(neo4j.join("schema/index"))?;
    for (i, (name, mib, noisy)) in [
        ("neostore.nodestore.db", 64, true),
        ("neostore.relationshipstore.db", 64, false),
        ("neostore.propertystore.db", 48, true),
        ("neostore.propertystore.db.strings", 32, false),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(neo4j.join(name), sample(mib << 20, i as u64, *noisy))?;
    }
    std::fs::write(
        neo4j.join("schema/index/index-1.db"),
        sample(3 << 20, 7, false),
    )?;
    std::fs::write(neo4j.join("neostore"), b"")?;
    std::os::unix::fs::symlink("neostore.nodestore.db", neo4j.join("current"))?;
    let system = root.join("system");
    std::fs::create_dir_all(&system)?;
    std::fs::write(
        system.join("neostore.nodestore.db"),
        sample(8 << 20, 11, true),
    )?;
    std::fs::write(system.join("users.json"), sample(1 << 20, 12, false))?;
    Ok(())
}

/// Changes about 5% of neo4j in place, and adds a file.
pub(crate) fn change(root: &Path, round: u64) -> std::io::Result<()> {
    let p = root.join("neo4j/neostore.nodestore.db");
    let mut bytes = std::fs::read(&p)?;
    let at = ((round as usize * 7) << 20) % (bytes.len() - (6 << 20));
    for b in &mut bytes[at..at + (5 << 20)] {
        *b = b.wrapping_add(1);
    }
    std::fs::write(&p, bytes)?;
    let p = root.join("neo4j/neostore.propertystore.db.strings");
    let mut bytes = std::fs::read(&p)?;
    bytes[1000..(2 << 20)].copy_from_slice(&sample((2 << 20) - 1000, 100 + round, false));
    std::fs::write(&p, bytes)?;
    std::fs::write(
        root.join(format!("neo4j/tx-{round}.log")),
        sample(1 << 20, 200 + round, false),
    )
}

pub(crate) fn files_of(root: &Path) -> std::io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            let md = std::fs::symlink_metadata(&p)?;
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            if md.is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(&p)?
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if md.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p)?);
            }
        }
    }
    Ok(out)
}
