//! # Catena: backups as chains of immutable artifacts in object storage
//!
//! Catena keeps backups of data sets ("databases", one directory tree each) as chains of
//! immutable FULL and DIFF artifacts in object storage (S3 and S3-compatible stores, Google
//! Cloud Storage, Azure Blob Storage, or a local directory). It decides FULL, DIFF or AUTO
//! with Neo4j's `preferDiffAsParent` and `fallbackToFull` rules, aggregates a chain into one
//! FULL, checks consistency, expires old chains and restores any point.
//!
//! The workspace has three layers, each usable on its own:
//!
//! - [`chain_core`]: the pure model and planners (re-exported here as [`chain_core`]);
//! - [`storage_backends`]: object stores, credentials and the streaming pipelines;
//! - this crate: the engine that carries out chain-core's plans over storage (the
//!   `Repository` with backup, restore, aggregate, check, inspect and expire is being built;
//!   today the crate re-exports the two layers below it).

pub use chain_core;
pub use storage_backends;
