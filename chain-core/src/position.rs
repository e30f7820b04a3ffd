//! Positions: where in a database's history an artifact sits.
//!
//! A position is a source-supplied logical clock (a transaction id, a log sequence number)
//! or, when the source has none, Catena's own sequence (one more than the highest position
//! already in the catalog). An artifact covers the half-open range `(from, to]`: it holds the
//! changes after `from` up to and including `to`. A FULL covers `(0, to]`; a DIFF starts
//! where its parent ends (`from == parent.to`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A logical position in a database's history.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The position before anything happened; every FULL starts here.
    pub const ZERO: Position = Position(0);

    /// The position after this one, saturating at `u64::MAX`.
    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The positions `(from, to]` that an artifact covers. `from <= to` always holds for a
/// range built with [`PositionRange::new`] or read from a validated manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionRange {
    /// Exclusive lower bound: the position of the parent's end (0 for a FULL).
    pub from: Position,
    /// Inclusive upper bound: the last position this artifact includes.
    pub to: Position,
}

impl PositionRange {
    /// `(from, to]`, or `None` when `from > to`.
    pub fn new(from: Position, to: Position) -> Option<Self> {
        (from <= to).then_some(Self { from, to })
    }

    /// Whether the range is well formed (`from <= to`).
    pub fn is_valid(&self) -> bool {
        self.from <= self.to
    }
}

impl fmt::Display for PositionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}]", self.from, self.to)
    }
}
