//! Aggregation planning: a new FULL's data object as byte ranges of its ancestors' data
//! objects, cut into the parts a backend's server-side copy accepts.
//!
//! Every stored block record is self-contained (a 48-byte header and its payload, verified
//! alone; see `docs/FORMAT.md`), so the data object of a FULL that collapses a chain can be
//! assembled from the records the chain already stores, by the store itself, without the
//! client downloading, decoding, compressing and uploading them again. [`plan_assembly`]
//! decides where each record goes and how the object is cut into parts:
//!
//! 1. **Layout.** Records are grouped by the artifact that stores them (sources in the order
//!    the caller numbers them, oldest first), each group in its source's order, so records
//!    that lie back to back in a source stay back to back: they form one **segment**, a
//!    single byte range to copy. The new index lists every record at its new offset.
//! 2. **Parts.** Segments are cut into parts under the backend's [`PartLimits`]. A segment
//!    at least [`PartLimits::min_part`] long is copied by the server in parts of at most
//!    [`PartLimits::max_part`]. A shorter segment cannot be a part of its own (S3 refuses
//!    parts under 5 MiB but the last), so its bytes are sent by the client, joined with
//!    the following segments' bytes until the part is long enough; the first part that
//!    reaches the minimum takes only what it needs of a long segment, whose remainder is
//!    copied by the server again.
//!
//! The plan reports the bytes copied on the server and the bytes that pass through the
//! client. For a plan with `r` maximal runs of consecutive short segments holding `s`
//! bytes in all, the client bytes are at most `s + 2 * r * min_part` (each run ends in a
//! part that borrows less than two minimum parts from its neighbour); with no minimum
//! (Azure's Put Block From URL, a local file, memory) they are zero.

use std::ops::Range;

use serde::Serialize;

use crate::{BlockLocation, Error};

/// One record the new object must hold, and where it is stored now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    /// The source object (data object of an artifact), as numbered by the caller: sources
    /// are laid out in this order, so number them oldest first.
    pub source: usize,
    /// The record's place in its source: offset and stored length, digest and length.
    pub location: BlockLocation,
}

/// What a backend's multipart upload with server-side copies accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PartLimits {
    /// Every part but the last is at least this long (S3: 5 MiB); 0 for no minimum.
    pub min_part: u64,
    /// Every part is at most this long (S3: 5 GiB; Azure: 4000 MiB).
    pub max_part: u64,
    /// At most this many parts (S3: 10,000; Azure: 50,000).
    pub max_parts: usize,
}

impl PartLimits {
    /// Amazon S3's and every S3-compatible store's: parts of 5 MiB to 5 GiB (the last one
    /// shorter), at most 10,000, each `UploadPartCopy` one copy-source range.
    pub const S3: Self = Self {
        min_part: 5 << 20,
        max_part: 5 << 30,
        max_parts: 10_000,
    };
    /// Azure Blob Storage's block blobs: blocks of up to 4000 MiB, at most 50,000, no
    /// minimum.
    pub const AZURE: Self = Self {
        min_part: 0,
        max_part: 4000 << 20,
        max_parts: 50_000,
    };
    /// No limits: a local file, memory.
    pub const NONE: Self = Self {
        min_part: 0,
        max_part: u64::MAX,
        max_parts: usize::MAX,
    };

    fn check(&self) -> Result<(), Error> {
        if self.max_part == 0
            || self.max_parts == 0
            || (self.min_part > 0 && self.max_part < self.min_part.saturating_mul(2))
        {
            return Err(Error::InvalidPartLimits {
                why: format!(
                    "parts of {} to {} bytes, at most {}: the largest part must be at least twice the smallest",
                    self.min_part, self.max_part, self.max_parts
                ),
            });
        }
        Ok(())
    }
}

/// A run of back-to-back records of one source, and where it lands in the new object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// The source object.
    pub source: usize,
    /// The byte range in the source.
    pub range: Range<u64>,
    /// Where its first byte lands in the new object.
    pub at: u64,
}

/// One part of the new object, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Part {
    /// A byte range of one source, copied by the server.
    Copy {
        /// The source object.
        source: usize,
        /// The byte range in it.
        range: Range<u64>,
    },
    /// Bytes the client reads from these ranges, in order, and sends as one part.
    Send {
        /// `(source, range)` pairs, concatenated.
        ranges: Vec<(usize, Range<u64>)>,
    },
}

impl Part {
    /// The part's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Part::Copy { range, .. } => range.end - range.start,
            Part::Send { ranges } => ranges.iter().map(|(_, r)| r.end - r.start).sum(),
        }
    }

    /// Whether the part holds no byte (never, in a plan).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The plan of a new data object: see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AssemblyPlan {
    /// The new index's block list: every record at its offset in the new object, back to
    /// back from 0.
    pub blocks: Vec<BlockLocation>,
    /// The source ranges, in the new object's order.
    pub segments: Vec<Segment>,
    /// The parts, in order.
    pub parts: Vec<Part>,
    /// The new object's size.
    pub size: u64,
    /// Bytes copied by the server.
    pub server_bytes: u64,
    /// Bytes the client reads and sends.
    pub client_bytes: u64,
}

impl AssemblyPlan {
    /// Where each part starts in the new object.
    pub fn part_offsets(&self) -> Vec<u64> {
        let mut at = 0;
        self.parts
            .iter()
            .map(|p| {
                let start = at;
                at += p.len();
                start
            })
            .collect()
    }
}

/// Plans a new data object holding `records` (each digest once; a record the caller lists
/// twice is an error), cut into parts under `limits`. Pure; see the module documentation
/// for the layout and the bound on client bytes.
pub fn plan_assembly(
    records: impl IntoIterator<Item = SourceRecord>,
    limits: &PartLimits,
) -> Result<AssemblyPlan, Error> {
    limits.check()?;
    let mut records: Vec<SourceRecord> = records.into_iter().collect();
    records.sort_by_key(|r| (r.source, r.location.offset));
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    let mut blocks = Vec::with_capacity(records.len());
    let mut segments: Vec<Segment> = Vec::new();
    let mut at = 0u64;
    for r in &records {
        if !seen.insert(r.location.digest) {
            return Err(Error::InvalidAssembly {
                why: format!("block {} is listed twice", r.location.digest),
            });
        }
        let range = r.location.range();
        if range.is_empty() {
            return Err(Error::InvalidAssembly {
                why: format!("block {} has no stored bytes", r.location.digest),
            });
        }
        match segments.last_mut() {
            Some(s) if s.source == r.source && s.range.end == range.start => {
                s.range.end = range.end;
            }
            Some(s) if s.source == r.source && s.range.end > range.start => {
                return Err(Error::InvalidAssembly {
                    why: format!(
                        "block {} overlaps the one before it in source {}",
                        r.location.digest, r.source
                    ),
                });
            }
            _ => segments.push(Segment {
                source: r.source,
                range: range.clone(),
                at,
            }),
        }
        blocks.push(BlockLocation {
            offset: at,
            ..r.location
        });
        at += range.end - range.start;
    }
    let parts = cut(&segments, limits);
    if parts.len() > limits.max_parts {
        return Err(Error::InvalidAssembly {
            why: format!(
                "it needs {} parts, more than the {} the store accepts",
                parts.len(),
                limits.max_parts
            ),
        });
    }
    let client_bytes = parts
        .iter()
        .filter(|p| matches!(p, Part::Send { .. }))
        .map(Part::len)
        .sum();
    Ok(AssemblyPlan {
        blocks,
        segments,
        parts,
        size: at,
        server_bytes: at - client_bytes,
        client_bytes,
    })
}

/// Cuts segments into parts (see the module documentation).
fn cut(segments: &[Segment], limits: &PartLimits) -> Vec<Part> {
    let min = limits.min_part;
    let mut parts = Vec::new();
    let mut pending: Vec<(usize, Range<u64>)> = Vec::new();
    let mut pending_len = 0u64;
    for s in segments {
        let mut range = s.range.clone();
        if pending_len > 0 {
            let need = min - pending_len;
            let len = range.end - range.start;
            if len >= need + min {
                // Borrow just enough of this long segment; the server copies the rest.
                pending.push((s.source, range.start..range.start + need));
                range.start += need;
                parts.push(Part::Send {
                    ranges: std::mem::take(&mut pending),
                });
                pending_len = 0;
            } else {
                pending.push((s.source, range.clone()));
                pending_len += len;
                if pending_len >= min {
                    parts.push(Part::Send {
                        ranges: std::mem::take(&mut pending),
                    });
                    pending_len = 0;
                }
                continue;
            }
        }
        let len = range.end - range.start;
        if len < min {
            pending.push((s.source, range));
            pending_len = len;
            continue;
        }
        // Near-equal parts, each at most max_part (and at least max_part / 2 >= min_part
        // when there are several).
        let n = len.div_ceil(limits.max_part);
        let mut start = range.start;
        for i in 0..n {
            let end = range.start + len * (i + 1) / n;
            parts.push(Part::Copy {
                source: s.source,
                range: start..end,
            });
            start = end;
        }
    }
    if !pending.is_empty() {
        parts.push(Part::Send { ranges: pending });
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sha256Digest;
    use proptest::prelude::*;

    fn loc(n: u32, offset: u64, stored_len: u32) -> BlockLocation {
        BlockLocation {
            digest: Sha256Digest::of(&n.to_be_bytes()),
            len: 1,
            offset,
            stored_len,
        }
    }

    /// Random sources: per source, records back to back with random gaps (blocks of the
    /// source that the new state does not use); returns the records wanted and each
    /// source's length.
    fn chain() -> impl Strategy<Value = (Vec<SourceRecord>, Vec<u64>)> {
        prop::collection::vec(
            prop::collection::vec((1u32..40, 0u64..60, any::<bool>()), 0..40),
            1..6,
        )
        .prop_map(|sources| {
            let mut records = Vec::new();
            let mut lens = Vec::new();
            let mut n = 0u32;
            for (source, recs) in sources.into_iter().enumerate() {
                let mut at = 0u64;
                for (stored, gap, wanted) in recs {
                    at += if wanted { 0 } else { gap };
                    n += 1;
                    records.push(SourceRecord {
                        source,
                        location: loc(n, at, stored),
                    });
                    at += u64::from(stored);
                }
                lens.push(at + 7);
            }
            (records, lens)
        })
    }

    fn limits() -> impl Strategy<Value = PartLimits> {
        prop_oneof![
            Just(PartLimits::NONE),
            (1u64..80, 2u64..6, 1usize..400).prop_map(|(min, k, max_parts)| PartLimits {
                min_part: min,
                max_part: min * k,
                max_parts,
            }),
            (1u64..80, 1usize..400).prop_map(|(max, max_parts)| PartLimits {
                min_part: 0,
                max_part: max,
                max_parts,
            }),
        ]
    }

    /// The bytes of source `s`: distinct per source and offset.
    fn byte(s: usize, at: u64) -> u8 {
        (at.wrapping_mul(31) ^ (s as u64).wrapping_mul(0x9e37)) as u8
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn planned_objects_are_the_records_at_their_offsets_within_the_limits(
            (records, lens) in chain(),
            limits in limits(),
            order in any::<u64>(),
        ) {
            // The caller's order does not matter.
            let mut given = records.clone();
            let k = given.len().max(1);
            given.rotate_left((order as usize) % k);
            let plan = match plan_assembly(given, &limits) {
                Ok(plan) => plan,
                Err(Error::InvalidAssembly { why }) => {
                    prop_assert!(why.contains("parts"), "{why}");
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            // Assemble the object as the parts say.
            let mut object = Vec::new();
            for p in &plan.parts {
                let ranges = match p {
                    Part::Copy { source, range } => vec![(*source, range.clone())],
                    Part::Send { ranges } => ranges.clone(),
                };
                for (s, r) in ranges {
                    prop_assert!(r.end <= lens[s]);
                    object.extend(r.map(|at| byte(s, at)));
                }
            }
            prop_assert_eq!(object.len() as u64, plan.size);
            // Every record wanted, once, at its new offset, back to back, with its bytes.
            prop_assert_eq!(plan.blocks.len(), records.len());
            let mut end = 0u64;
            for b in &plan.blocks {
                prop_assert_eq!(b.offset, end);
                end = b.range().end;
                let original = records.iter().find(|r| r.location.digest == b.digest).expect("wanted");
                let want: Vec<u8> = original.location.range().map(|at| byte(original.source, at)).collect();
                prop_assert_eq!(&object[b.offset as usize..end as usize], &want[..]);
            }
            prop_assert_eq!(end, plan.size);
            // Limits.
            prop_assert!(plan.parts.len() <= limits.max_parts);
            for (i, p) in plan.parts.iter().enumerate() {
                prop_assert!(!p.is_empty());
                prop_assert!(p.len() <= limits.max_part, "part {} is {} bytes", i, p.len());
                if i + 1 < plan.parts.len() {
                    prop_assert!(p.len() >= limits.min_part, "part {} is {} bytes", i, p.len());
                }
            }
            // Client bytes: at most the short runs plus two minimum parts per run of them.
            let (mut short, mut runs, mut in_run) = (0u64, 0u64, false);
            for s in &plan.segments {
                let len = s.range.end - s.range.start;
                if len < limits.min_part {
                    short += len;
                    runs += u64::from(!in_run);
                    in_run = true;
                } else {
                    in_run = false;
                }
            }
            prop_assert!(plan.client_bytes <= short + 2 * runs * limits.min_part,
                "client {} > {} + 2 * {} * {}", plan.client_bytes, short, runs, limits.min_part);
            prop_assert_eq!(plan.client_bytes + plan.server_bytes, plan.size);
            if limits.min_part == 0 {
                prop_assert_eq!(plan.client_bytes, 0);
            }
        }
    }

    #[test]
    fn back_to_back_records_of_one_source_are_one_segment() {
        let records = (0..10u32).map(|n| SourceRecord {
            source: 0,
            location: loc(n, u64::from(n) * 100, 100),
        });
        let plan = plan_assembly(records, &PartLimits::S3).expect("plan");
        assert_eq!(plan.segments.len(), 1);
        assert_eq!(plan.parts.len(), 1);
        // Short, and the only part: sent by the client.
        assert_eq!(plan.client_bytes, 1000);
    }

    #[test]
    fn a_long_segment_is_copied_by_the_server_and_a_short_one_borrows_from_it() {
        let mib = 1u64 << 20;
        let records = [
            SourceRecord {
                source: 0,
                location: loc(1, 0, mib as u32),
            },
            SourceRecord {
                source: 1,
                location: loc(2, 0, (20 * mib) as u32),
            },
        ];
        let plan = plan_assembly(records, &PartLimits::S3).expect("plan");
        assert_eq!(plan.parts.len(), 2);
        assert_eq!(plan.client_bytes, 5 * mib);
        assert_eq!(plan.server_bytes, 16 * mib);
        assert!(
            matches!(&plan.parts[1], Part::Copy { source: 1, range } if range.start == 4 * mib)
        );
    }

    #[test]
    fn a_record_listed_twice_or_overlapping_is_refused() {
        let a = SourceRecord {
            source: 0,
            location: loc(1, 0, 10),
        };
        assert!(plan_assembly([a, a], &PartLimits::NONE).is_err());
        let b = SourceRecord {
            source: 0,
            location: loc(2, 5, 10),
        };
        assert!(plan_assembly([a, b], &PartLimits::NONE).is_err());
        let bad = PartLimits {
            min_part: 10,
            max_part: 15,
            max_parts: 5,
        };
        assert!(plan_assembly([a], &bad).is_err());
    }
}
