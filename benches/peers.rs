//! Helpers of `benches/run-peers.sh` (Catena against rclone, aws-cli and restic):
//!
//! ```text
//! cargo bench --bench peers -- gen FILE MIB SEED        # the mixed data set
//! cargo bench --bench peers -- mutate FILE PERCENT SEED # change PERCENT of it in place
//! cargo bench --bench peers -- ceiling FILE KEY         # raw object_store put, then get
//! cargo bench --bench peers -- sha256 FILE              # the whole-file hash format 1 paid
//! cargo bench --bench peers -- rm KEY...                # delete objects (benchmark cleanup)
//! ```
//!
//! `gen` writes alternating 1 MiB blocks: incompressible noise (unique everywhere, so
//! nothing deduplicates) and compressible JSON-like records. `mutate` overwrites 8 MiB
//! regions at unaligned offsets with new records and noise until PERCENT of the file has
//! changed, and prints how many bytes changed. `ceiling` reads FILE and puts it with
//! object_store's multipart upload (8 MiB parts, 8 in flight, no hashing, no compression),
//! then reads it back with 8 ranged GETs of 8 MiB in flight: the server's ceiling both
//! ways. The endpoint comes from `CATENA_BENCH_ENDPOINT`, `_ACCESS_KEY`, `_SECRET_KEY`,
//! `_BUCKET`, `_REGION`. Prints one JSON line; asserts nothing about time.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

const MIB: usize = 1 << 20;

struct Rng(u64);

impl Rng {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn next(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }
}

fn records(out: &mut Vec<u8>, n: &mut u64, len: usize, salt: u64) {
    out.clear();
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{{\"id\":{n},\"name\":\"node-{n}\",\"labels\":[\"Person\",\"Customer\"],\"score\":{},\"since\":\"2026-{:02}-{:02}\"}}\n",
                (*n * 7919 + salt) % 100_000,
                *n % 12 + 1,
                *n % 28 + 1
            )
            .as_bytes(),
        );
        *n += 1;
    }
    out.truncate(len);
}

fn gen_file(path: &str, mib: u64, seed: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(4 * MIB, std::fs::File::create(path)?);
    let mut rng = Rng(seed | 1);
    let (mut block, mut text, mut n) = (vec![0u8; MIB], Vec::with_capacity(MIB), 0u64);
    for i in 0..mib {
        if i % 2 == 0 {
            rng.fill(&mut block);
            f.write_all(&block)?;
        } else {
            records(&mut text, &mut n, MIB, seed);
            f.write_all(&text)?;
        }
    }
    f.flush()
}

fn mutate_file(path: &str, percent: f64, seed: u64) -> std::io::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let target = (len as f64 * percent / 100.0) as u64;
    let region = 8 * MIB as u64;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (mut changed, mut n) = (0u64, seed * 1_000_000);
    let mut buf = vec![0u8; region as usize];
    let mut text = Vec::with_capacity(MIB);
    while changed < target {
        let at = rng.next() % (len - region);
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut buf)?;
        // Half new noise, half new records, so the change compresses like the data set.
        for (j, chunk) in buf.chunks_mut(MIB).enumerate() {
            if j % 2 == 0 {
                rng.fill(chunk);
            } else {
                records(&mut text, &mut n, chunk.len(), seed);
                chunk.copy_from_slice(&text);
            }
        }
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&buf)?;
        changed += region;
    }
    f.sync_all()?;
    Ok(changed)
}

#[path = "common/mod.rs"]
mod common;
use common::{cpu_seconds, peak_rss_mib};

async fn ceiling(path: &str, key: &str) -> Result<(), Box<dyn std::error::Error>> {
    let var = |n: &str| std::env::var(format!("CATENA_BENCH_{n}"));
    let (store, _secrets) = common::s3_store(
        var("ENDPOINT")?,
        &var("ACCESS_KEY")?,
        &var("SECRET_KEY")?,
        var("BUCKET")?,
        &var("REGION").unwrap_or_else(|_| "us-east-1".into()),
        String::new(),
    )
    .await?;
    let key = Path::from(key);
    let size = std::fs::metadata(path)?.len();

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let upload = store.put_multipart(&key).await?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 8 * MIB);
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 8 * MIB];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = file.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        w.wait_for_capacity(8).await?;
        w.put(Bytes::copy_from_slice(&buf[..filled]));
        if filled < buf.len() {
            break;
        }
    }
    // Parts first (with 8 MiB-multiple files nothing is left buffered), then the
    // completion alone: s3s-fs assembles the object on one thread at this point.
    w.wait_for_capacity(0).await?;
    let parts_s = start.elapsed().as_secs_f64();
    w.finish().await?;
    let put_s = start.elapsed().as_secs_f64();
    let complete_s = put_s - parts_s;
    let put_cpu = cpu_seconds() - cpu0;

    let cpu1 = cpu_seconds();
    let start = Instant::now();
    let part = 8 * MIB as u64;
    let got: u64 = futures::stream::iter((0..size.div_ceil(part)).map(|i| i * part))
        .map(|off| {
            let (store, key) = (Arc::clone(&store), key.clone());
            async move {
                store
                    .get_range(&key, off..(off + part).min(size))
                    .await
                    .map(|b| b.len() as u64)
            }
        })
        .buffered(8)
        .try_fold(0u64, |a, n| async move { Ok(a + n) })
        .await?;
    let get_s = start.elapsed().as_secs_f64();
    let get_cpu = cpu_seconds() - cpu1;
    store.delete(&key).await?;
    let mib = size as f64 / MIB as f64;
    println!(
        "{{\"tool\":\"ceiling\",\"mib\":{mib:.0},\"put_s\":{put_s:.3},\"parts_s\":{parts_s:.3},\"complete_s\":{complete_s:.3},\"put_mib_s\":{:.1},\"put_cpu_s\":{put_cpu:.2},\"get_s\":{get_s:.3},\"get_mib_s\":{:.1},\"get_cpu_s\":{get_cpu:.2},\"got_mib\":{:.0},\"peak_rss_mib\":{:.1}}}",
        mib / put_s,
        mib / get_s,
        got as f64 / MIB as f64,
        peak_rss_mib()
    );
    Ok(())
}

/// The SHA-256 of a whole file, as format 1 computed it of every data object it sent: the
/// client CPU format 2 saves. Prints bytes, CPU seconds and MiB/s.
fn sha256_file(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 8 * MIB];
    let mut hasher = sha2::Sha256::new();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let digest = hasher.finalize();
    let (cpu, wall) = (cpu_seconds() - cpu0, start.elapsed().as_secs_f64());
    println!(
        "{{\"tool\":\"sha256\",\"bytes\":{bytes},\"cpu_s\":{cpu:.2},\"wall_s\":{wall:.2},\"mib_s\":{:.0},\"first_byte\":{}}}",
        bytes as f64 / MIB as f64 / wall,
        digest[0]
    );
    Ok(())
}

/// Deletes `keys` from the benchmark's S3 bucket.
async fn remove(keys: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let var = |n: &str| std::env::var(format!("CATENA_BENCH_{n}"));
    let (store, _secrets) = common::s3_store(
        var("ENDPOINT")?,
        &var("ACCESS_KEY")?,
        &var("SECRET_KEY")?,
        var("BUCKET")?,
        &var("REGION")?,
        String::new(),
    )
    .await?;
    for key in keys {
        store.delete(&Path::parse(key)?).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or("missing argument: see benches/peers.rs")
    };
    match args.first().map(String::as_str) {
        Some("gen") => gen_file(&arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?)?,
        Some("mutate") => {
            let changed = mutate_file(&arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?)?;
            println!("{changed}");
        }
        Some("ceiling") => ceiling(&arg(1)?, &arg(2)?).await?,
        Some("sha256") => sha256_file(&arg(1)?)?,
        Some("rm") => remove(&args[1..]).await?,
        _ => {
            return Err(
                "usage: peers gen FILE MIB SEED | mutate FILE PERCENT SEED | ceiling FILE KEY | sha256 FILE | rm KEY..."
                    .into(),
            );
        }
    }
    Ok(())
}
