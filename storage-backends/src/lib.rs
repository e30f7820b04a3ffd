//! # storage-backends: where Catena's artifacts live
//!
//! The storage side of Catena. It makes no chain decisions (those are [`chain_core`]'s) and
//! prints nothing; it turns configuration into stores and bytes into verified objects.
//!
//! - [`StorageConfig`]: the seed's storage keys (or a URL such as `s3://bucket/prefix`) ->
//!   a [`Storage`] holding an `Arc<dyn ObjectStore>` scoped to the prefix, for S3 and any
//!   S3-compatible endpoint, Google Cloud Storage, Azure Blob Storage, a local directory or
//!   memory. Every store is wrapped in a [`NamedStore`] whose `Debug` shows no secret.
//! - [`credentials`]: the seed's credentials files, and ambient / workload identity.
//! - [`layout`]: the object keys.
//! - [`upload`]: the streaming pipeline: blocks hashed and compressed on every core, parts
//!   uploaded with N in flight, memory bounded by configuration.
//! - [`commit()`]: index, then manifest, create-only, last.
//! - [`assemble`]: a new object from byte ranges of stored ones, copied by the server where
//!   the store can (aggregation planning).
//! - [`read`]: whole objects and ranged blocks, verified before they are handed out.
//! - [`probe()`]: the endpoint self-test.
//! - [`FaultStore`]: fails a chosen call, for failure tests.
//!
//! ## Example
//!
//! Store one artifact's data and commit it, then read a block back:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use chain_core::*;
//! use storage_backends::{StorageConfig, upload::{ArtifactWriter, KnownBlocks, UploadOptions}, layout, read};
//!
//! let storage = StorageConfig::from_url("memory://")?.build().await?;
//! let id = ArtifactId::new(DatabaseName::new("neo4j")?, "2026-11-25T02:00:00Z".parse()?, 1);
//! let mut writer = ArtifactWriter::new(
//!     storage.store.clone(), layout::data_key(&id), KnownBlocks::default(), UploadOptions::default(), None)?;
//! let input = futures::stream::iter([Ok(bytes::Bytes::from_static(b"hello, chain"))]);
//! let blocks = writer.write_stream(input).await?;
//! let stored = writer.finish().await?;
//!
//! let decision = decide_backup(&Catalog::new(id.database().clone(), []),
//!     BackupRequest::default(), SourceCapability::DIRECTORY)?;
//! let index = Index { changes: ChangeSet::default(), blocks: stored.locations.clone() };
//! let manifest = storage_backends::commit(&storage.store, &id,
//!     ManifestBuilder::new(id.clone(), decision), index, &stored, Compression::Zstd { level: 3 },
//!     None /* the key of an encrypted repository */).await?;
//!
//! let index = read::read_index(storage.store.as_ref(), &manifest, None).await?;
//! let data = read::data_object(&manifest).expect("one block was stored");
//! use futures::TryStreamExt;
//! let back: Vec<_> = read::read_blocks(storage.store.clone(),
//!     object_store::path::Path::parse(&data.key)?, index.blocks, 4, None).try_collect().await?;
//! assert_eq!(back[0].as_ref(), b"hello, chain");
//! assert_eq!(blocks.len(), 1);
//! # Ok(()) }
//! ```

pub mod assemble;
mod buffers;
pub mod commit;
mod config;
pub mod credentials;
mod error;
mod fail_fast;
mod fault;
pub mod fuzz_checks;
pub mod layout;
mod named;
pub mod probe;
pub mod read;
pub mod staging;
pub mod upload;

pub use chain_core;
pub use commit::commit;
pub use config::{Addressing, CloudProvider, Storage, StorageConfig, StorageOverrides};
pub use error::Error;
pub use fault::{Fault, FaultStore};
pub use named::NamedStore;
pub use probe::{
    AddressingReport, ProbeReport, ServerCopyReport, probe, probe_addressing, probe_server_copy,
};
pub use tokio_util::sync::CancellationToken;
