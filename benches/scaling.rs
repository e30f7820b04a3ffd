//! How the cost of reading a chain grows (issue "Many files", point 5): for synthetic chains
//! of one FULL of N files plus L-1 DIFFs (each rewriting 1% of the files), the time and
//! memory of what every restore, check, aggregate and DIFF does before it moves a byte:
//! decoding the indexes, composing the state, its digest, the restorability check, and the
//! map of where each block lives. Synthetic indexes, no store: the figures are the
//! planning's own.
//!
//! ```sh
//! cargo bench --bench scaling                 # N in 10k, 100k, 1M; L in 1, 11, 31
//! cargo bench --bench scaling -- 100000 31    # one case
//! ```
//!
//! Each case runs in its own process, so that its peak RSS (`VmHWM`) is its own; the parent
//! prints one table: time per file, what each further chain link adds, peak RSS per file.

use std::collections::HashMap;
use std::time::Instant;

use chain_core::{
    ArtifactId, BlockLocation, BlockRef, ChangeSet, Compression, DatabaseName, Entry, EntryKind,
    EntryPath, FileStamp, Index, Metadata, Sha256Digest, State, check_restorable, compose_owned,
};

fn file(i: usize, version: u64) -> (Entry, BlockLocation) {
    let digest = Sha256Digest::of(format!("{i}/{version}").as_bytes());
    let len = 4096 + (i % 12_288) as u32;
    let entry = Entry {
        path: EntryPath::new(&format!("d{:04}/f{i:07}", i / 1000)).expect("valid path"),
        kind: EntryKind::File {
            size: u64::from(len),
            blocks: vec![BlockRef { digest, len }],
        },
        meta: Metadata {
            mode: 0o644,
            mtime_ns: 1_700_000_000_000_000_000 + version as i64,
            ..Metadata::default()
        },
        stamp: Some(FileStamp {
            dev: 2049,
            ino: i as u64,
            ctime_ns: version as i64,
        }),
    };
    let location = BlockLocation {
        digest,
        len,
        offset: 0,
        stored_len: len + 48,
    };
    (entry, location)
}

/// The encoded indexes of a chain of `links` artifacts over `files` files, FULL first.
fn chain(files: usize, links: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(links);
    // Back to back from offset 0 in each artifact's data object.
    let placed = |blocks: Vec<BlockLocation>| {
        let mut offset = 0u64;
        blocks
            .into_iter()
            .map(|mut l| {
                l.offset = offset;
                offset += u64::from(l.stored_len);
                l
            })
            .collect::<Vec<_>>()
    };
    let (entries, blocks): (Vec<_>, Vec<_>) = (0..files).map(|i| file(i, 0)).unzip();
    let full = Index {
        changes: ChangeSet::full(&State::from_entries(entries)),
        blocks: placed(blocks),
    };
    out.push(
        full.encode(Compression::Zstd { level: 1 }, None)
            .expect("encode"),
    );
    let changed = (files / 100).max(1);
    for link in 1..links {
        let (entries, blocks): (Vec<_>, Vec<_>) = (0..changed)
            .map(|k| file((k * 97 + link * 13) % files, link as u64))
            .unzip();
        let mut entries = entries;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|a, b| a.path == b.path);
        let diff = Index {
            changes: ChangeSet {
                changed: entries,
                ..ChangeSet::default()
            },
            blocks: placed(blocks),
        };
        out.push(
            diff.encode(Compression::Zstd { level: 1 }, None)
                .expect("encode"),
        );
    }
    out
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Writes a case's encoded indexes under `dir` (a process of its own, so that building
/// them does not count in the planning's peak RSS).
fn generate(files: usize, links: usize, dir: &std::path::Path) {
    for (n, bytes) in chain(files, links).into_iter().enumerate() {
        std::fs::write(dir.join(format!("{n:03}.index")), bytes).expect("write an index");
    }
}

/// One case, in this process, from the indexes under `dir`: prints one line of JSON.
fn one(files: usize, links: usize, dir: &std::path::Path) {
    let encoded: Vec<Vec<u8>> = (0..links)
        .map(|n| std::fs::read(dir.join(format!("{n:03}.index"))).expect("read an index"))
        .collect();
    let index_bytes: usize = encoded.iter().map(Vec::len).sum();
    let base_rss = peak_rss_kib();
    let db = DatabaseName::new("neo4j").expect("name");
    let ids: Vec<ArtifactId> = (0..links)
        .map(|i| {
            let at = jiff::Timestamp::from_second(1_700_000_000 + i as i64).expect("time");
            ArtifactId::new(db.clone(), at, i as u64)
        })
        .collect();

    let t = Instant::now();
    let indexes: Vec<Index> = encoded
        .iter()
        .map(|b| Index::decode(b).expect("decode"))
        .collect();
    drop(encoded);
    let decode_s = t.elapsed().as_secs_f64();

    // Where each block lives, nearest artifact first; then the entries move from the
    // indexes into the state, as the engine's chain state does.
    // The engine's map (`Repository::chain_state`): the indexes' block lists move into it.
    let t = Instant::now();
    let mut indexes = indexes;
    let blocks = catena::BlockMap::new(indexes.iter_mut().enumerate().map(|(n, index)| {
        (
            object_store::path::Path::from(format!("neo4j/{}.data", ids[n])),
            std::mem::take(&mut index.blocks),
        )
    }));
    let map_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let state =
        compose_owned(ids.iter().zip(indexes.into_iter().map(|i| i.changes))).expect("compose");
    let compose_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let digest = state.digest();
    let digest_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    check_restorable(&state, |d| blocks.get(d).map(|(_, l)| l.len)).expect("restorable");
    let plan_s = map_s + t.elapsed().as_secs_f64();

    let rss = peak_rss_kib();
    println!(
        "{{\"files\": {files}, \"links\": {links}, \"index_bytes\": {index_bytes}, \"decode_s\": {decode_s:.4}, \"compose_s\": {compose_s:.4}, \"digest_s\": {digest_s:.4}, \"plan_s\": {plan_s:.4}, \"peak_rss_kib\": {rss}, \"base_rss_kib\": {base_rss}, \"entries\": {}, \"digest\": \"{}\"}}",
        state.len(),
        &digest.to_string()[..12]
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let number = |s: &String| s.parse::<usize>().expect("a number");
    match args.as_slice() {
        [mode, files, links, dir] if mode == "gen" => {
            return generate(number(files), number(links), dir.as_ref());
        }
        [mode, files, links, dir] if mode == "run" => {
            return one(number(files), number(links), dir.as_ref());
        }
        _ => {}
    }
    let cases: Vec<(usize, usize)> = match args.as_slice() {
        [files, links] => vec![(number(files), number(links))],
        _ => [10_000usize, 100_000, 1_000_000]
            .into_iter()
            .flat_map(|f| [1usize, 11, 31].map(|l| (f, l)))
            .collect(),
    };
    let exe = std::env::current_exe().expect("own path");
    println!(
        "{:>9} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>14} {:>9} {:>11}",
        "files",
        "links",
        "index MB",
        "decode s",
        "compose s",
        "digest s",
        "plan s",
        "total s",
        "us/file",
        "ms/extra link",
        "RSS MiB",
        "RSS B/file"
    );
    // The one-link total per file count: what each further link adds is measured against it.
    let mut single: HashMap<usize, f64> = HashMap::new();
    for (files, links) in cases {
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let at = dir.path().display().to_string();
            let case = |mode: &str| {
                std::process::Command::new(&exe)
                    .args([
                        mode.to_owned(),
                        files.to_string(),
                        links.to_string(),
                        at.clone(),
                    ])
                    .output()
                    .expect("run a case")
            };
            let made = case("gen");
            assert!(made.status.success(), "generating {files} x {links} failed");
            let out = case("run");
            let line = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = match serde_json::from_str(line.trim()) {
                Ok(v) => v,
                Err(_) => {
                    eprintln!("case {files} x {links} failed: {line}");
                    continue;
                }
            };
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let total = f("decode_s") + f("compose_s") + f("digest_s") + f("plan_s");
            if links == 1 {
                single.insert(files, total);
            }
            let per_link = match single.get(&files) {
                Some(one) if links > 1 => {
                    format!("{:.1}", (total - one) / (links - 1) as f64 * 1e3)
                }
                _ => "-".to_owned(),
            };
            println!(
                "{:>9} {:>6} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.2} {:>14} {:>9.0} {:>11.0}",
                files,
                links,
                f("index_bytes") / 1e6,
                f("decode_s"),
                f("compose_s"),
                f("digest_s"),
                f("plan_s"),
                total,
                total / files as f64 * 1e6,
                per_link,
                f("peak_rss_kib") / 1024.0,
                f("peak_rss_kib") * 1024.0 / files as f64
            );
        }
    }
}
