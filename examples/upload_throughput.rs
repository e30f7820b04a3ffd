//! The streaming upload pipeline alone (blocks hashed and compressed on the blocking pool,
//! parts uploaded with several in flight), printing MiB/s.
//!
//! ```text
//! cargo run --release --example upload_throughput                # 256 MiB into memory
//! cargo run --release --example upload_throughput -- 1024 file:///tmp/catena-throughput
//! ```

use std::time::Instant;

use catena::chain_core::{ArtifactId, DatabaseName};
use catena::storage_backends::upload::{ArtifactWriter, KnownBlocks, UploadOptions};
use catena::storage_backends::{StorageConfig, layout};
use object_store::ObjectStoreExt;

/// 1 MiB of input: compressible text for even `i`, noise for odd `i` (like a database's
/// mix of records and already-compressed pages).
fn chunk(i: usize) -> bytes::Bytes {
    if i.is_multiple_of(2) {
        let line = format!("record {i}: the quick brown fox jumps over the lazy dog\n");
        return line
            .bytes()
            .cycle()
            .take(1 << 20)
            .collect::<Vec<u8>>()
            .into();
    }
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let url = args.get(1).map_or("memory://", String::as_str);
    let storage = StorageConfig::from_url(url)?.build().await?;
    let id = ArtifactId::new(
        DatabaseName::new("throughput")?,
        jiff::Timestamp::now(),
        rand::random(),
    );
    let options = UploadOptions::default();
    let mut writer = ArtifactWriter::new(
        storage.store.clone(),
        layout::data_key(&id),
        KnownBlocks::default(),
        options.clone(),
        Some((mib as u64) << 20),
    )?;
    let input = futures::stream::iter((0..mib).map(|i| Ok::<_, std::io::Error>(chunk(i))));
    let started = Instant::now();
    writer.write_stream(input).await?;
    let stored = writer.finish().await?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = stored.object.as_ref().map_or(0, |o| o.size);
    println!(
        "{mib} MiB in {seconds:.2} s: {:.1} MiB/s; {bytes} bytes stored ({}, {} parts of {} MiB in flight)",
        mib as f64 / seconds,
        storage.description,
        options.parts_in_flight,
        options.part_size >> 20
    );
    // Never committed (no manifest): remove the object.
    storage.store.delete(&layout::data_key(&id)).await?;
    Ok(())
}
