//! Upload throughput: the raw object_store multipart put (the ceiling) against Catena's
//! pipeline (blocks, zstd, SHA-256, parts in flight) on the same bytes and server.
//!
//! Run by `benches/run-upload.sh`, which starts s3s-fs and runs each variant in its own
//! process (so that peak RSS is the variant's own), interleaved, several times:
//!
//! ```text
//! cargo bench --bench upload -- <ceiling|writer|zstd1|zstd3> [GiB]
//! ```
//!
//! Prints one JSON line: input and sent bytes, wall seconds, MiB/s of input and of bytes
//! sent, client CPU seconds (user+sys), peak RSS. Asserts nothing about time.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use catena::chain_core::Compression;
use catena::storage_backends::upload::{ArtifactWriter, KnownBlocks, ObjectWriter, UploadOptions};
use futures::StreamExt;
use object_store::path::Path;

const MIB: usize = 1 << 20;

/// Block `i` of the data set: alternating incompressible and compressible MiBs, each
/// unique (its index in the first 8 bytes), so nothing deduplicates.
struct DataSet {
    noise: Vec<u8>,
    text: Vec<u8>,
}

impl DataSet {
    fn new() -> Self {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise = (0..MIB)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut text = Vec::with_capacity(MIB);
        let mut n = 0u64;
        while text.len() < MIB {
            text.extend_from_slice(
                format!("{{\"id\":{n},\"name\":\"node-{n}\",\"labels\":[\"Person\",\"Customer\"],\"since\":\"2026-01-{:02}\"}}\n", n % 28 + 1)
                    .as_bytes(),
            );
            n += 1;
        }
        text.truncate(MIB);
        Self { noise, text }
    }

    fn block(&self, i: u64) -> Bytes {
        let mut b = if i.is_multiple_of(2) {
            self.noise.clone()
        } else {
            self.text.clone()
        };
        b[..8].copy_from_slice(&i.to_le_bytes());
        Bytes::from(b)
    }
}

#[path = "common/mod.rs"]
mod common;
use common::{cpu_seconds, peak_rss_mib};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let variant = args
        .first()
        .map(String::as_str)
        .unwrap_or("zstd1")
        .to_owned();
    let gib: f64 = args.get(1).and_then(|g| g.parse().ok()).unwrap_or(1.0);
    let blocks = (gib * 1024.0) as u64;
    let endpoint = std::env::var("CATENA_TEST_S3S_ENDPOINT")
        .map_err(|_| "CATENA_TEST_S3S_ENDPOINT is not set: run benches/run-upload.sh")?;
    let (store, _secrets) = common::s3_store(
        endpoint,
        &std::env::var("CATENA_TEST_S3S_ACCESS_KEY")?,
        &std::env::var("CATENA_TEST_S3S_SECRET_KEY")?,
        "catena-test".into(),
        "us-east-1",
        format!("bench-{:x}", rand::random::<u32>()),
    )
    .await?;
    let data = DataSet::new();
    let options = |compression| UploadOptions {
        block_size: MIB as u32,
        compression,
        parts_in_flight: 8,
        part_size: 8 * MIB,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        key: None,
    };

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let key = Path::from(format!("{variant}.data"));
    let sent = match variant.as_str() {
        "ceiling" => {
            // The raw object_store multipart put: 8 MiB parts, 8 in flight, no hashing.
            use object_store::ObjectStoreExt;
            let upload = store.put_multipart(&key).await?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 8 * MIB);
            for i in 0..blocks {
                w.wait_for_capacity(8).await?;
                w.put(data.block(i));
            }
            w.finish().await?;
            blocks * MIB as u64
        }
        "writer" => {
            // Catena's ObjectWriter alone: the same, plus the whole-object SHA-256.
            let mut w = ObjectWriter::new(
                Arc::clone(&store),
                key.clone(),
                &options(Compression::None),
                Some(blocks * MIB as u64),
            );
            for i in 0..blocks {
                w.write_bytes(data.block(i)).await?;
            }
            w.finish().await?.size
        }
        "zstd1" | "zstd3" => {
            let level = if variant == "zstd1" { 1 } else { 3 };
            let mut w = ArtifactWriter::new(
                Arc::clone(&store),
                key.clone(),
                KnownBlocks::default(),
                options(Compression::Zstd { level }),
                Some(blocks * MIB as u64),
            )?;
            let data = Arc::new(data);
            let input = futures::stream::iter(0..blocks)
                .map(move |i| Ok::<_, std::io::Error>(data.block(i)));
            w.write_stream(input).await?;
            w.finish().await?.object.map_or(0, |o| o.size)
        }
        other => {
            return Err(format!("unknown variant {other}: ceiling, writer, zstd1 or zstd3").into());
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let input = blocks as f64 * MIB as f64;
    use object_store::ObjectStoreExt;
    store.delete(&key).await?;
    println!(
        "{{\"variant\":\"{variant}\",\"input_mib\":{:.0},\"sent_mib\":{:.1},\"seconds\":{secs:.3},\"input_mib_s\":{:.1},\"sent_mib_s\":{:.1},\"cpu_s\":{cpu:.2},\"peak_rss_mib\":{:.1}}}",
        input / MIB as f64,
        sent as f64 / MIB as f64,
        input / MIB as f64 / secs,
        sent as f64 / MIB as f64 / secs,
        peak_rss_mib()
    );
    Ok(())
}
