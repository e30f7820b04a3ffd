//! [`FaultStore`]: an `ObjectStore` that fails one chosen call, for failure tests.
//!
//! Every call through the store counts, including the calls on a multipart upload it hands
//! out (`put_part`, `complete`, `abort`). Run an operation once to learn how many calls it
//! makes ([`FaultStore::calls`]), then once per call index with that call failing, and
//! check what the operation left behind.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// How the chosen call fails (more kinds may come: match with a wildcard arm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// It returns an error at once.
    Error,
    /// It waits, then returns an error, as a request that timed out.
    Timeout,
    /// A read returns a body cut in half (other calls fail with an error).
    TruncatedBody,
    /// A read returns the first half of its body, then fails, as a connection that drops
    /// in the middle of a response (other calls fail with an error).
    BrokenBody,
    /// The call succeeds, after a delay (a slow response).
    Slow,
}

/// How long [`Fault::Slow`] and [`Fault::Timeout`] wait.
const DELAY: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Plan {
    fail_at: Option<u64>,
    fault: Fault,
    calls: AtomicU64,
}

impl Plan {
    /// Counts a call; `Some(fault)` when this is the one to fail.
    fn next(&self) -> Option<Fault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        (self.fail_at == Some(n)).then_some(self.fault)
    }

    /// Counts a call in an async method: a slow call waits here and goes on as healthy.
    async fn gate(&self) -> Option<Fault> {
        match self.next() {
            Some(Fault::Slow) => {
                tokio::time::sleep(DELAY).await;
                None
            }
            other => other,
        }
    }
}

fn injected(fault: Fault) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: format!("injected fault: {fault:?}").into(),
    }
}

async fn fail(fault: Fault) -> object_store::Error {
    if fault == Fault::Timeout {
        tokio::time::sleep(DELAY).await;
    }
    injected(fault)
}

/// `result` with its body replaced by what `body` makes of the whole body.
async fn rebodied(
    result: GetResult,
    body: impl FnOnce(Bytes) -> BoxStream<'static, Result<Bytes>>,
) -> Result<GetResult> {
    let (meta, range, attributes, extensions) = (
        result.meta.clone(),
        result.range.clone(),
        result.attributes.clone(),
        result.extensions.clone(),
    );
    let whole = result.bytes().await?;
    Ok(GetResult {
        payload: GetResultPayload::Stream(body(whole)),
        meta,
        range,
        attributes,
        extensions,
    })
}

/// A listing that starts after [`DELAY`].
fn slowly(inner: BoxStream<'static, Result<ObjectMeta>>) -> BoxStream<'static, Result<ObjectMeta>> {
    futures::stream::once(tokio::time::sleep(DELAY))
        .flat_map(move |()| futures::stream::empty())
        .chain(inner)
        .boxed()
}

/// A store that fails call number `fail_at` (counting from 0) with `fault`.
#[derive(Debug, Clone)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<Plan>,
    part_gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl FaultStore {
    /// Wraps `inner`; `fail_at: None` only counts calls.
    pub fn new(inner: Arc<dyn ObjectStore>, fail_at: Option<u64>, fault: Fault) -> Self {
        Self {
            inner,
            plan: Arc::new(Plan {
                fail_at,
                fault,
                calls: AtomicU64::new(0),
            }),
            part_gate: None,
        }
    }

    /// Holds every part upload until `gate` has a permit (a test adds one to let them all
    /// through): what a writer keeps in memory while its uploads are slow.
    pub fn with_part_gate(mut self, gate: Arc<tokio::sync::Semaphore>) -> Self {
        self.part_gate = Some(gate);
        self
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.plan.calls.load(Ordering::SeqCst)
    }
}

impl std::fmt::Display for FaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[derive(Debug)]
struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    plan: Arc<Plan>,
    part_gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl FaultUpload {
    fn put_part_ungated(&mut self, data: PutPayload) -> UploadPart {
        match self.plan.next() {
            Some(Fault::Slow) => {
                let part = self.inner.put_part(data);
                Box::pin(async move {
                    tokio::time::sleep(DELAY).await;
                    part.await
                })
            }
            Some(f) => Box::pin(async move { Err(fail(f).await) }),
            None => self.inner.put_part(data),
        }
    }
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        if let Some(gate) = self.part_gate.clone() {
            // The part is held (its payload alive) until the gate opens.
            let part = self.put_part_ungated(data);
            return Box::pin(async move {
                let _open = gate.acquire().await.map_err(|_| injected(Fault::Error))?;
                part.await
            });
        }
        self.put_part_ungated(data)
    }
    async fn complete(&mut self) -> Result<PutResult> {
        match self.plan.gate().await {
            Some(f) => Err(fail(f).await),
            None => self.inner.complete().await,
        }
    }

    async fn abort(&mut self) -> Result<()> {
        match self.plan.gate().await {
            Some(f) => Err(fail(f).await),
            None => self.inner.abort().await,
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match self.plan.gate().await {
            Some(f) => Err(fail(f).await),
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        match self.plan.gate().await {
            Some(f) => Err(fail(f).await),
            None => Ok(Box::new(FaultUpload {
                inner: self.inner.put_multipart_opts(location, opts).await?,
                plan: Arc::clone(&self.plan),
                part_gate: self.part_gate.clone(),
            })),
        }
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.plan.gate().await {
            Some(Fault::TruncatedBody) => {
                let result = self.inner.get_opts(location, options).await?;
                rebodied(result, |body| {
                    futures::stream::once(async move { Ok(body.slice(..body.len() / 2)) }).boxed()
                })
                .await
            }
            Some(Fault::BrokenBody) => {
                let result = self.inner.get_opts(location, options).await?;
                rebodied(result, |body| {
                    let half = body.slice(..body.len() / 2);
                    futures::stream::iter([Ok(half), Err(injected(Fault::BrokenBody))]).boxed()
                })
                .await
            }
            Some(f) => Err(fail(f).await),
            None => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self.plan.gate().await {
            Some(Fault::TruncatedBody) => {
                let mut out = self.inner.get_ranges(location, ranges).await?;
                if let Some(last) = out.last_mut() {
                    last.truncate(last.len() / 2);
                }
                Ok(out)
            }
            Some(f) => Err(fail(f).await),
            None => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let plan = Arc::clone(&self.plan);
        let inner = Arc::clone(&self.inner);
        locations
            .and_then(move |path| {
                let plan = Arc::clone(&plan);
                let inner = Arc::clone(&inner);
                async move {
                    match plan.gate().await {
                        Some(f) => Err(fail(f).await),
                        None => {
                            let mut done = inner.delete_stream(
                                futures::stream::once(async move { Ok(path) }).boxed(),
                            );
                            done.next()
                                .await
                                .unwrap_or_else(|| Err(injected(Fault::Error)))
                        }
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.plan.next() {
            Some(Fault::Slow) => slowly(self.inner.list(prefix)),
            Some(f) => futures::stream::once(async move { Err(fail(f).await) }).boxed(),
            None => self.inner.list(prefix),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.plan.next() {
            Some(Fault::Slow) => slowly(self.inner.list_with_offset(prefix, offset)),
            Some(f) => futures::stream::once(async move { Err(fail(f).await) }).boxed(),
            None => self.inner.list_with_offset(prefix, offset),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        match self.plan.gate().await {
            Some(f) => Err(fail(f).await),
            None => self.inner.list_with_delimiter(prefix).await,
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        match self.plan.gate().await {
            Some(f) => Err(fail(f).await),
            None => self.inner.copy_opts(from, to, options).await,
        }
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        match self.plan.gate().await {
            Some(f) => Err(fail(f).await),
            None => self.inner.rename_opts(from, to, options).await,
        }
    }
}
