//! # storage-backends: where Catena's artifacts live
//!
//! This crate will hold the storage side of Catena: building an
//! `Arc<dyn object_store::ObjectStore>` from a storage configuration (S3 and S3-compatible
//! endpoints, Google Cloud Storage, Azure Blob Storage, a local directory, memory), the
//! credentials, the object layout, and the streaming upload and verified read pipelines.
//! It makes no chain decisions: those are [`chain_core`]'s.
//!
//! It is a skeleton for now; the storage issue fills it in.

pub use chain_core;
