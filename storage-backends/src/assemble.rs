//! Assembling a new object from byte ranges of stored ones: the storage half of
//! aggregation planning (the plan is [`chain_core::plan_assembly`]).
//!
//! A [`ServerCopy`] is a store's ranged server-side copy: the bytes of a
//! [`chain_core::Part::Copy`] never pass through the client.
//!
//! | store | [`ServerCopy`] | limits |
//! |---|---|---|
//! | S3 and S3-compatible | `UploadPartCopy` with `x-amz-copy-source-range`, signed by `aws-sigv4` over object_store's own HTTP client (same endpoint, TLS and credentials) | [`PartLimits::S3`] |
//! | local directory | a kernel copy (`copy_file_range`, block sharing on XFS / btrfs) into a staging file renamed into place | [`PartLimits::NONE`] |
//! | Azure Blob Storage | `Put Block From URL` with `x-ms-source-range`, then a create-only `Put Block List`, each request on a SAS URL signed by object_store's own signer (same endpoint, TLS and credentials) | [`PartLimits::AZURE`] |
//! | memory | in-process: ranges of the stored bytes | [`PartLimits::NONE`] |
//! | GCS | none (GCS's compose takes whole objects, not ranges): [`client_copy`] | - |
//!
//! [`client_copy`] is the fallback for every store: ranged GETs of the records, uploaded as
//! they are by the streaming multipart upload, never decoded or compressed again.
//! [`verify_assembled`] checks what was assembled before anything names it.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chain_core::{AssemblyPlan, BlockLocation, Part, PartLimits};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::upload::{ObjectWriter, UploadOptions, WrittenObject};
use crate::{Error, read};

mod azure;
mod local;
mod s3;

pub(crate) use azure::AzureCopy;
pub(crate) use local::LocalCopy;
pub(crate) use s3::{S3Copy, SseCustomerKey};

/// Largest range one GET of [`client_copy`] or of a sent part asks for.
const READ_CHUNK: u64 = 8 << 20;

/// A store's error answer (`<Error><Code/><Message/></Error>`: S3 and Azure alike).
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

impl ErrorBody {
    /// `code: first line of message` of an error answer, `None` if `text` is not one.
    fn parse(text: &str) -> Option<(String, String)> {
        let e = quick_xml::de::from_str::<ErrorBody>(text).ok()?;
        let first = e.message.lines().next().unwrap_or("").to_owned();
        Some((e.code, first))
    }
}

/// `key` under the repository prefix: the name a copy request uses, where the store behind
/// [`AssemblyJob::store`] adds the prefix itself.
fn prefixed(prefix: Option<&Path>, key: &Path) -> Path {
    match prefix {
        Some(p) => p.parts().chain(key.parts()).collect(),
        None => key.clone(),
    }
}

/// What a [`ServerCopy`] assembles: the plan's parts, from `sources`, into `dest`.
#[derive(Debug)]
pub struct AssemblyJob<'a> {
    /// The repository's store (keys relative to its prefix): where sent parts are read.
    pub store: &'a Arc<dyn ObjectStore>,
    /// The new object's key.
    pub dest: &'a Path,
    /// The plan's sources, by number.
    pub sources: &'a [Path],
    /// The plan.
    pub plan: &'a AssemblyPlan,
    /// Stops the assembly; nothing is left at `dest` then.
    pub cancel: &'a CancellationToken,
}

impl AssemblyJob<'_> {
    fn source(&self, n: usize) -> Result<&Path, Error> {
        self.sources.get(n).ok_or_else(|| {
            Error::Chain(chain_core::Error::InvalidAssembly {
                why: format!("the plan names source {n} of {}", self.sources.len()),
            })
        })
    }

    /// Reads the bytes of a sent part, in order.
    async fn read_ranges(&self, ranges: &[(usize, Range<u64>)]) -> Result<Vec<Bytes>, Error> {
        let mut out = Vec::with_capacity(ranges.len());
        for (n, range) in ranges {
            let key = self.source(*n)?;
            let mut at = range.start;
            while at < range.end {
                let end = range.end.min(at + READ_CHUNK);
                out.push(crate::read::read_range(self.store.as_ref(), key, at..end).await?);
                at = end;
            }
        }
        Ok(out)
    }
}

/// A store's ranged server-side copy: see the module documentation.
#[async_trait::async_trait]
pub trait ServerCopy: Debug + Send + Sync {
    /// How it copies, for reports (`S3 UploadPartCopy`).
    fn method(&self) -> &'static str;
    /// The parts it accepts: plan with these.
    fn limits(&self) -> PartLimits;
    /// Writes `job.dest` as the concatenation of the plan's parts, create-only. On error or
    /// cancellation nothing is visible at `job.dest` and no upload is left open.
    async fn assemble(&self, job: &AssemblyJob<'_>) -> Result<(), Error>;
}

/// The memory store's copy: the parts' ranges of the stored bytes (no copy of the bytes
/// until the new object is put). It works over any store (the ranges are read through
/// [`AssemblyJob::store`], the object is put whole), which makes it the copy that tests put
/// behind a fault-injecting store; only for memory is it a copy "on the server".
#[derive(Debug, Default)]
pub struct InProcessCopy;

#[async_trait::async_trait]
impl ServerCopy for InProcessCopy {
    fn method(&self) -> &'static str {
        "in-process copy (memory store)"
    }

    fn limits(&self) -> PartLimits {
        PartLimits::NONE
    }

    async fn assemble(&self, job: &AssemblyJob<'_>) -> Result<(), Error> {
        let mut chunks = Vec::new();
        for part in &job.plan.parts {
            if job.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            match part {
                Part::Copy { source, range } => {
                    chunks.push(
                        crate::read::read_range(
                            job.store.as_ref(),
                            job.source(*source)?,
                            range.clone(),
                        )
                        .await?,
                    );
                }
                Part::Send { ranges } => chunks.extend(job.read_ranges(ranges).await?),
            }
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        job.store
            .put_opts(job.dest, PutPayload::from_iter(chunks), opts)
            .await
            .map_err(|e| Error::store("writing", job.dest, e))?;
        Ok(())
    }
}

/// The fallback of every store: reads the plan's segments with ranged GETs and uploads
/// them as they are through the streaming multipart upload (`options`' part size and
/// parts in flight bound the memory). The records are not decoded, decompressed or hashed.
pub async fn client_copy(job: &AssemblyJob<'_>, options: &UploadOptions) -> Result<(), Error> {
    let mut ranges = Vec::new();
    for s in &job.plan.segments {
        let key = job.source(s.source)?.clone();
        let mut at = s.range.start;
        while at < s.range.end {
            let end = s.range.end.min(at + READ_CHUNK);
            ranges.push((key.clone(), at..end));
            at = end;
        }
    }
    let mut writer = ObjectWriter::new(
        Arc::clone(job.store),
        job.dest.clone(),
        options,
        Some(job.plan.size),
    )
    .without_digest();
    let store = Arc::clone(job.store);
    let mut reads = futures::stream::iter(ranges)
        .map(move |(key, range)| {
            let store = Arc::clone(&store);
            async move { crate::read::read_range(store.as_ref(), &key, range).await }
        })
        .buffered(options.parts_in_flight.max(1));
    let copied = async {
        while let Some(bytes) = reads.try_next().await? {
            writer.write_bytes(bytes).await?;
        }
        Ok::<_, Error>(())
    };
    let result = tokio::select! {
        r = copied => r,
        () = job.cancel.cancelled() => Err(Error::Cancelled),
    };
    match result {
        Ok(()) => {
            writer.finish().await?;
            Ok(())
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// What [`verify_assembled`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AssemblyCheck {
    /// Records read back and verified.
    pub records: usize,
    /// Bytes read back.
    pub bytes: u64,
}

/// Records checked by [`verify_assembled`] beyond the part boundaries.
const EXTRA_SAMPLES: usize = 8;
/// Most records [`verify_assembled`] reads (evenly chosen among the candidates beyond).
const MAX_SAMPLES: usize = 128;

/// The records [`verify_assembled`] reads: the first and last of the object and of every
/// part (a wrong range shows at a part's edges), and a few more spread evenly; at most
/// 128, evenly chosen among those where there are more.
pub fn sample_records(plan: &AssemblyPlan) -> Vec<BlockLocation> {
    let blocks = &plan.blocks;
    if blocks.is_empty() {
        return Vec::new();
    }
    let holding = |byte: u64| blocks.partition_point(|b| b.range().end <= byte);
    let mut picked = std::collections::BTreeSet::new();
    picked.insert(0);
    picked.insert(blocks.len() - 1);
    for at in plan.part_offsets() {
        picked.insert(holding(at).min(blocks.len() - 1));
        if at > 0 {
            picked.insert(holding(at - 1).min(blocks.len() - 1));
        }
    }
    let step = (blocks.len() / (EXTRA_SAMPLES + 1)).max(1);
    picked.extend((step..blocks.len()).step_by(step).take(EXTRA_SAMPLES));
    let picked: Vec<usize> = picked.into_iter().collect();
    let keep = picked.len().min(MAX_SAMPLES);
    (0..keep)
        .map(|k| blocks[picked[k * (picked.len() - 1) / (keep - 1).max(1)]])
        .collect()
}

/// Verifies an assembled object without reading it whole: its size must be the plan's
/// exactly, and the [`sample_records`] are read back, decoded and checked against their
/// digests. A server that copied a wrong range is caught here, before a manifest names
/// the object; `catena check` later verifies every record. `key` is the repository's key
/// when it is encrypted (records are then authenticated as they are decoded).
pub async fn verify_assembled(
    store: &Arc<dyn ObjectStore>,
    dest: &Path,
    plan: &AssemblyPlan,
    key: Option<Arc<chain_core::RepoKey>>,
) -> Result<AssemblyCheck, Error> {
    let meta = store
        .head(dest)
        .await
        .map_err(|e| Error::store("checking the assembled", dest, e))?;
    if meta.size != plan.size {
        return Err(Error::Corrupt {
            key: dest.to_string(),
            offset: meta.size.min(plan.size),
            why: format!(
                "the assembled object has {} bytes, the plan {}: the store assembled something else",
                meta.size, plan.size
            ),
        });
    }
    let sample = sample_records(plan);
    let check = AssemblyCheck {
        records: sample.len(),
        bytes: sample.iter().map(|b| u64::from(b.stored_len)).sum(),
    };
    // Each record is decoded and checked against its digest by the read; the bytes are
    // dropped as they come (never all held at once).
    let expected = sample.len();
    let read = read::read_blocks(Arc::clone(store), dest.clone(), sample, 2, key)
        .try_fold(0usize, |n, _| async move { Ok(n + 1) })
        .await
        .map_err(|e| match e {
            Error::Corrupt { key, offset, why } => Error::Corrupt {
                key,
                offset,
                why: format!("the assembled object is not what was planned: {why}"),
            },
            e => e,
        })?;
    if read != expected {
        return Err(Error::Corrupt {
            key: dest.to_string(),
            offset: 0,
            why: format!("{read} of the {expected} sampled records could be read back"),
        });
    }
    Ok(check)
}

/// Deletes what an assembly that failed may have left at `dest` (best effort).
pub async fn discard(store: &dyn ObjectStore, dest: &Path) {
    crate::commit::delete_quietly(store, std::slice::from_ref(dest)).await;
}

/// The written object an assembly produced (no whole-object digest: format 2).
pub fn assembled_object(dest: &Path, plan: &AssemblyPlan) -> WrittenObject {
    WrittenObject {
        key: dest.clone(),
        size: plan.size,
        sha256: None,
    }
}

/// A [`ServerCopy`] that misbehaves on purpose, for failure tests: it wraps a working one.
#[derive(Debug)]
pub struct FaultCopy {
    inner: Arc<dyn ServerCopy>,
    fault: CopyFault,
}

/// How a [`FaultCopy`] misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFault {
    /// Copies one server-copied range one byte off (same length): a server that copied the
    /// wrong range and said nothing.
    ShiftRange,
    /// Fails after the inner copy wrote its object (an error after the fact).
    FailAfter,
    /// Never finishes (a timeout); only cancellation ends it.
    Hang,
    /// Deletes the job's first source object, then copies: another writer that deleted a
    /// data object of the chain while the copy ran.
    RemoveSource,
}

impl FaultCopy {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ServerCopy>, fault: CopyFault) -> Self {
        Self { inner, fault }
    }
}

#[async_trait::async_trait]
impl ServerCopy for FaultCopy {
    fn method(&self) -> &'static str {
        self.inner.method()
    }

    fn limits(&self) -> PartLimits {
        self.inner.limits()
    }

    async fn assemble(&self, job: &AssemblyJob<'_>) -> Result<(), Error> {
        match self.fault {
            CopyFault::ShiftRange => {
                // One byte earlier where the range does not start its source (so that the
                // range stays inside it), else one byte further on.
                let mut plan = job.plan.clone();
                let copies = |p: &Part, inner: bool| matches!(p, Part::Copy { range, .. } if !inner || range.start > 0);
                let pick = match plan.parts.iter().position(|p| copies(p, true)) {
                    Some(i) => Some(i),
                    None => plan.parts.iter().position(|p| copies(p, false)),
                };
                if let Some(Part::Copy { range, .. }) = pick.map(|i| &mut plan.parts[i]) {
                    *range = if range.start > 0 {
                        range.start - 1..range.end - 1
                    } else {
                        range.start + 1..range.end + 1
                    };
                }
                let shifted = AssemblyJob {
                    plan: &plan,
                    ..*job
                };
                self.inner.assemble(&shifted).await
            }
            CopyFault::FailAfter => {
                self.inner.assemble(job).await?;
                Err(Error::Task(
                    "injected fault: the copy failed after writing".into(),
                ))
            }
            CopyFault::Hang => {
                job.cancel.cancelled().await;
                Err(Error::Cancelled)
            }
            CopyFault::RemoveSource => {
                if let Some(first) = job.sources.first() {
                    job.store
                        .delete(first)
                        .await
                        .map_err(|e| Error::store("delete", first, e))?;
                }
                self.inner.assemble(job).await
            }
        }
    }
}
