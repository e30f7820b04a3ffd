//! Azure's copy: a block blob staged block by block, each copied block a `Put Block From
//! URL` with `x-ms-source-range` (or, for the short runs the plan sends, an ordinary `Put
//! Block`), committed by one create-only `Put Block List`.
//!
//! object_store has neither request, but it signs: every request here goes to a service SAS
//! URL made by the store's own [`Signer`] (the account key, or a user delegation key under
//! workload identity), a write SAS of the new blob with the unsigned `comp=block` and
//! `blockid` operation parameters appended (object_store documents this use), and a read
//! SAS of each source blob as the copy source. Requests go over an HTTP client built by the
//! same connector and client options as the store's (endpoint, TLS CA or skip-verify).
//! No signing is written here, and no SAS ever reaches an error, a log or a report: it is a
//! credential for its lifetime.
//!
//! A block blob has no upload to abort: staged blocks are invisible, and the service
//! discards uncommitted blocks after a week (or at the next commit of that name). Until
//! `Put Block List` nothing is visible at the new name.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chain_core::{Part, PartLimits};
use futures::{StreamExt, TryStreamExt};
use http::Method;
use object_store::PutPayload;
use object_store::azure::MicrosoftAzure;
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::path::Path;
use object_store::signer::Signer;

use super::{AssemblyJob, ServerCopy};
use crate::Error;

/// Blocks staged at once.
const BLOCKS_IN_FLIGHT: usize = 4;
/// Attempts of one request before its error is returned.
const ATTEMPTS: u32 = 5;
/// How long a SAS made for one request is valid: long enough for a 4000 MiB block copy.
const SAS_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// The REST version asked for (Put Block From URL with ranges of up to 4000 MiB).
const REST_VERSION: &str = "2021-08-06";

/// Azure's ranged server-side copy; see the module documentation.
#[derive(Debug)]
pub(crate) struct AzureCopy {
    azure: Arc<MicrosoftAzure>,
    http: HttpClient,
    /// The repository prefix, which the store behind [`AssemblyJob::store`] adds itself.
    prefix: Option<Path>,
}

/// One request of an assembly.
enum Request {
    /// `Put Block From URL`: block `n` from `range` of `source`.
    CopyBlock {
        n: usize,
        source: Path,
        range: std::ops::Range<u64>,
    },
    /// `Put Block`: block `n` from the client.
    SendBlock { n: usize, bytes: PutPayload },
    /// `Put Block List` of blocks `0..count`, create-only.
    Commit { count: usize },
}

/// What one request came to: retry it, or give up with this.
enum Failure {
    Retry(String),
    Fail(String),
}

impl AzureCopy {
    pub(crate) fn new(azure: Arc<MicrosoftAzure>, http: HttpClient, prefix: Option<Path>) -> Self {
        Self {
            azure,
            http,
            prefix,
        }
    }

    /// The blob's name in the container.
    fn full(&self, key: &Path) -> Path {
        super::prefixed(self.prefix.as_ref(), key)
    }

    /// A SAS URL of `key` for `method`, with `query` appended.
    async fn sas(&self, method: Method, key: &Path, query: &str) -> Result<String, Failure> {
        let url = self
            .azure
            .signed_url(method, key, SAS_LIFETIME)
            .await
            .map_err(|e| Failure::Fail(format!("no SAS for {key}: {}", safe(&e.to_string()))))?;
        let mut url = url.to_string();
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(query);
        }
        Ok(url)
    }

    /// The SAS URLs `what` needs: the new blob's, and the source's for a copy. Made once
    /// per request and kept through its retries: object_store starts a SAS's validity at
    /// the signing second, so on a service whose clock is behind the client's a fresh SAS
    /// is refused as not yet valid, and the same SAS a moment later is not.
    async fn urls(&self, dest: &Path, what: &Request) -> Result<(String, Option<String>), Failure> {
        Ok(match what {
            Request::CopyBlock { n, source, .. } => (
                self.sas(Method::PUT, dest, &block_query(*n)).await?,
                Some(self.sas(Method::GET, source, "").await?),
            ),
            Request::SendBlock { n, .. } => {
                (self.sas(Method::PUT, dest, &block_query(*n)).await?, None)
            }
            Request::Commit { .. } => (self.sas(Method::PUT, dest, "comp=blocklist").await?, None),
        })
    }

    /// The request `what` asks for, on `urls` (see [`Self::urls`]).
    fn request(
        what: &Request,
        (url, source): &(String, Option<String>),
    ) -> Result<http::Request<HttpRequestBody>, Failure> {
        let builder = http::Request::builder()
            .method(Method::PUT)
            .uri(url.as_str())
            .header("x-ms-version", REST_VERSION);
        let built = match what {
            Request::CopyBlock { range, .. } => builder
                .header("x-ms-copy-source", source.as_deref().unwrap_or(""))
                .header(
                    "x-ms-source-range",
                    format!("bytes={}-{}", range.start, range.end - 1),
                )
                .header("content-length", "0")
                .body(HttpRequestBody::empty()),
            Request::SendBlock { bytes, .. } => builder
                .header("content-length", bytes.content_length().to_string())
                .body(HttpRequestBody::from(bytes.clone())),
            Request::Commit { count } => {
                let mut list = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
                for n in 0..*count {
                    list.push_str("<Latest>");
                    list.push_str(&block_id(n));
                    list.push_str("</Latest>");
                }
                list.push_str("</BlockList>");
                builder
                    .header("if-none-match", "*")
                    .header("content-type", "application/xml")
                    .header("content-length", list.len().to_string())
                    .body(HttpRequestBody::from(list))
            }
        };
        built.map_err(|e| Failure::Fail(format!("request: {}", safe(&e.to_string()))))
    }

    /// Sends `what`, retrying what may pass (the same SAS URLs each attempt).
    async fn send(&self, dest: &Path, what: Request) -> Result<(), Error> {
        let mut last = String::new();
        match self.urls(dest, &what).await {
            Err(Failure::Retry(why) | Failure::Fail(why)) => last = why,
            Ok(urls) => {
                for attempt in 0..ATTEMPTS {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                    let outcome = match Self::request(&what, &urls) {
                        Ok(request) => self.try_send(request).await,
                        Err(f) => Err(f),
                    };
                    match outcome {
                        Ok(()) => return Ok(()),
                        Err(Failure::Retry(why)) => last = why,
                        Err(Failure::Fail(why)) => {
                            last = why;
                            break;
                        }
                    }
                }
            }
        }
        let (operation, detail) = match &what {
            Request::CopyBlock { source, range, .. } => (
                "server-side copy (Put Block From URL) into",
                format!("{source} bytes {}..{}: ", range.start, range.end),
            ),
            Request::SendBlock { .. } => ("sending a block of", String::new()),
            Request::Commit { .. } => ("committing (Put Block List)", String::new()),
        };
        Err(Error::Store {
            operation,
            key: dest.to_string(),
            source: object_store::Error::Generic {
                store: "MicrosoftAzure",
                source: format!("{detail}{last}").into(),
            },
        })
    }

    async fn try_send(&self, request: http::Request<HttpRequestBody>) -> Result<(), Failure> {
        // Not the error's text: it names the URL, and the URL carries the SAS.
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| Failure::Retry(format!("request failed ({:?})", e.kind())))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| Failure::Retry(format!("reading the answer ({:?})", e.kind())))?;
        if status == http::StatusCode::CREATED {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&body);
        let parsed = super::ErrorBody::parse(&text);
        let why = match &parsed {
            Some((code, message)) => format!("HTTP {status}: {code}: {}", safe(message)),
            None => format!("HTTP {status} without an Azure error body"),
        };
        if retryable(status, parsed.as_ref().map(|(code, _)| code.as_str())) {
            Err(Failure::Retry(why))
        } else {
            Err(Failure::Fail(why))
        }
    }

    /// Stages every block, then commits them.
    async fn blocks(&self, job: &AssemblyJob<'_>, dest: &Path) -> Result<(), Error> {
        futures::stream::iter(job.plan.parts.clone().into_iter().enumerate())
            .map(|(n, part)| async move {
                match part {
                    Part::Copy { source, range } => {
                        let source = self.full(job.source(source)?);
                        self.send(dest, Request::CopyBlock { n, source, range })
                            .await
                    }
                    Part::Send { ranges } => {
                        // The ranges as read, not copied into one buffer (as S3's parts).
                        let bytes = PutPayload::from_iter(job.read_ranges(&ranges).await?);
                        self.send(dest, Request::SendBlock { n, bytes }).await
                    }
                }
            })
            .buffer_unordered(BLOCKS_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        let count = job.plan.parts.len();
        self.send(dest, Request::Commit { count }).await
    }
}

/// Whether an answer may change on a retry: a server error (but "not implemented"), a
/// throttle, or a SAS refused as not valid yet (the service's clock behind the client's;
/// the same SAS becomes valid as it catches up).
fn retryable(status: http::StatusCode, code: Option<&str>) -> bool {
    (status.is_server_error() && status != http::StatusCode::NOT_IMPLEMENTED)
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || (status == http::StatusCode::FORBIDDEN
            && matches!(
                code,
                Some("AuthenticationFailed" | "CannotVerifyCopySource")
            ))
}

/// Block `n`'s id: base64 of a fixed-width number (a blob's ids must all be as long).
fn block_id(n: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("catena-block-{n:08}"))
}

/// The query of a block operation (the id's base64 `+`, `/` and `=` encoded).
fn block_query(n: usize) -> String {
    let id = block_id(n);
    let id = percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC);
    format!("comp=block&blockid={id}")
}

/// Text from a request or an answer, with anything that looks like a SAS cut off.
fn safe(text: &str) -> String {
    match text.find("sig=") {
        Some(at) => format!("{}<SAS withheld>", &text[..at]),
        None => text.to_owned(),
    }
}

#[async_trait::async_trait]
impl ServerCopy for AzureCopy {
    fn method(&self) -> &'static str {
        "Azure Put Block From URL"
    }

    fn limits(&self) -> PartLimits {
        PartLimits::AZURE
    }

    async fn assemble(&self, job: &AssemblyJob<'_>) -> Result<(), Error> {
        let dest = self.full(job.dest);
        tokio::select! {
            r = self.blocks(job, &dest) => r,
            () = job.cancel.cancelled() => Err(Error::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_are_all_as_long_and_distinct() {
        let ids: Vec<String> = [0, 1, 9_999, 49_999, 99_999_999]
            .iter()
            .map(|n| block_id(*n))
            .collect();
        assert!(
            ids.windows(2)
                .all(|w| w[0].len() == w[1].len() && w[0] != w[1])
        );
    }

    #[test]
    fn what_is_retried() {
        use http::StatusCode as S;
        assert!(retryable(S::SERVICE_UNAVAILABLE, Some("ServerBusy")));
        assert!(retryable(S::TOO_MANY_REQUESTS, None));
        assert!(retryable(S::FORBIDDEN, Some("AuthenticationFailed")));
        assert!(retryable(S::FORBIDDEN, Some("CannotVerifyCopySource")));
        assert!(!retryable(S::NOT_IMPLEMENTED, Some("APINotImplemented")));
        assert!(!retryable(
            S::FORBIDDEN,
            Some("AuthorizationPermissionMismatch")
        ));
        assert!(!retryable(S::CONFLICT, Some("BlobAlreadyExists")));
        assert!(!retryable(S::NOT_FOUND, Some("CannotVerifyCopySource")));
        assert!(!retryable(S::RANGE_NOT_SATISFIABLE, Some("InvalidRange")));
    }

    #[test]
    fn a_sas_never_survives_safe() {
        let t = "error for url (http://h/c/b?sv=2021&sig=SECRET%3D)";
        assert!(!safe(t).contains("SECRET"), "{}", safe(t));
    }
}
