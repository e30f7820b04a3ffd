//! Progress events and the [`Progress`] trait a front end implements to draw bars.

use serde::Serialize;

/// Something that happened during a long operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProgressEvent {
    /// Work on a database starts; `total_bytes` is the expected amount of data when known.
    DatabaseStarted {
        /// The database.
        database: String,
        /// What the operation is (backup, restore, aggregate, check).
        operation: &'static str,
        /// Bytes expected.
        total_bytes: Option<u64>,
    },
    /// The amount of data expected became known after the work started (a backup whose
    /// source lists more entries than it takes before it begins knows it when the listing
    /// ends); the database's [`ProgressEvent::DatabaseStarted`] came without it.
    TotalKnown {
        /// The database.
        database: String,
        /// Bytes expected.
        total_bytes: u64,
    },
    /// A file (or artifact, for check) is being processed.
    Item {
        /// The database.
        database: String,
        /// Its path or name.
        name: String,
    },
    /// Bytes read from the source, or restored, or verified.
    Bytes {
        /// The database.
        database: String,
        /// How many more.
        bytes: u64,
    },
    /// An artifact was committed.
    Committed {
        /// The database.
        database: String,
        /// The artifact.
        artifact: String,
        /// FULL or DIFF.
        kind: String,
        /// Nothing changed.
        empty: bool,
        /// Bytes stored in the bucket.
        stored_bytes: u64,
    },
    /// Work on a database ended.
    DatabaseFinished {
        /// The database.
        database: String,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// Receives progress events. Called from the engine's tasks: keep it quick.
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: ProgressEvent);
}

/// Ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: ProgressEvent) {}
}
