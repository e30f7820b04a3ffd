//! S3's copy: a multipart upload whose parts are `UploadPartCopy` requests with
//! `x-amz-copy-source-range`, or (for the short runs the plan sends) ordinary parts.
//!
//! object_store starts, fills, completes and aborts the multipart upload; it has no
//! `UploadPartCopy`, so that one request is signed here with `aws-sigv4` (the AWS SDK's
//! signer) and sent over an HTTP client built by the same connector and client options as
//! the store's (endpoint, TLS CA or skip-verify), with the store's own credential provider
//! (credentials file, workload identity). With SSE-C, each `UploadPartCopy` carries the
//! customer key twice, as S3 asks: for the part written and for the source read.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use chain_core::{Part, PartLimits};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{AssemblyJob, ServerCopy};
use crate::Error;

/// What S3 leaves unencoded in a key (object_store's set: RFC 3986 unreserved and `/`).
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// The same for a query value (`/` encoded too).
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Parts copied at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Attempts of one `UploadPartCopy` before the error is returned.
const ATTEMPTS: u32 = 5;

/// S3's ranged server-side copy; see the module documentation.
#[derive(Debug)]
pub(crate) struct S3Copy {
    s3: Arc<AmazonS3>,
    http: HttpClient,
    bucket: String,
    region: String,
    /// The URL of the bucket's objects, ending in `/`: the key follows.
    objects_url: String,
    /// The repository prefix, which the store behind [`AssemblyJob::store`] adds itself.
    prefix: Option<Path>,
    /// The SSE-C key, when the store writes with one.
    sse_c: Option<SseCustomerKey>,
}

/// An SSE-C key: 32 bytes the server encrypts with and forgets, sent with every request that
/// reads or writes an object. `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct SseCustomerKey {
    /// Base64 of the 32 bytes.
    base64: zeroize::Zeroizing<String>,
    /// Base64 of their MD5, which S3 checks the key against.
    md5: String,
}

impl std::fmt::Debug for SseCustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseCustomerKey(<redacted>)")
    }
}

impl SseCustomerKey {
    /// Reads the key file: 32 bytes, raw or as base64 text.
    pub(crate) fn read(path: &std::path::Path) -> Result<Self, Error> {
        use base64::Engine as _;
        use md5::Digest as _;
        let fail = |why: String| Error::CredentialsFile {
            path: path.to_owned(),
            why,
        };
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
            fail(format!(
                "cannot read the SSE-C key ({e}); it is named by s3SseCustomerKeySecretName/s3SseCustomerKeySecretKey under the secrets directory"
            ))
        })?);
        let b64 = base64::engine::general_purpose::STANDARD;
        let key: zeroize::Zeroizing<Vec<u8>> = if bytes.len() == 32 {
            zeroize::Zeroizing::new(bytes.to_vec())
        } else {
            let text: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
                bytes
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect(),
            );
            zeroize::Zeroizing::new(b64.decode(&text[..]).unwrap_or_default())
        };
        if key.len() != 32 {
            return Err(fail(format!(
                "the SSE-C key must be 32 bytes, raw or base64 ({} bytes found); make one with `openssl rand 32 > sse-c.key`",
                bytes.len()
            )));
        }
        Ok(Self {
            base64: zeroize::Zeroizing::new(b64.encode(&key[..])),
            md5: b64.encode(md5::Md5::digest(&key[..])),
        })
    }

    /// The key as base64, as object_store's `aws_sse_customer_key_base64` takes it.
    pub(crate) fn base64(&self) -> &str {
        &self.base64
    }

    /// The six headers of an `UploadPartCopy` from and to SSE-C objects.
    fn copy_headers(&self) -> [(&'static str, &str); 6] {
        [
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
            ("x-amz-server-side-encryption-customer-key", &self.base64),
            ("x-amz-server-side-encryption-customer-key-md5", &self.md5),
            (
                "x-amz-copy-source-server-side-encryption-customer-algorithm",
                "AES256",
            ),
            (
                "x-amz-copy-source-server-side-encryption-customer-key",
                &self.base64,
            ),
            (
                "x-amz-copy-source-server-side-encryption-customer-key-md5",
                &self.md5,
            ),
        ]
    }
}

impl S3Copy {
    /// A copy over `s3`; `endpoint` and `virtual_hosted` as the store was configured.
    pub(crate) fn new(
        s3: Arc<AmazonS3>,
        http: HttpClient,
        bucket: &str,
        region: &str,
        endpoint: Option<&str>,
        virtual_hosted: bool,
        prefix: Option<Path>,
    ) -> Self {
        // object_store's rule (S3Config::bucket_endpoint): a virtual-hosted endpoint
        // already names the bucket.
        let objects_url = match (endpoint.map(|e| e.trim_end_matches('/')), virtual_hosted) {
            (Some(e), true) => format!("{e}/"),
            (Some(e), false) => format!("{e}/{bucket}/"),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com/"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}/"),
        };
        Self {
            s3,
            http,
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            objects_url,
            prefix,
            sse_c: None,
        }
    }

    /// This copy, sending `key` with every `UploadPartCopy` (the store's SSE-C key).
    pub(crate) fn with_sse_c(mut self, key: Option<SseCustomerKey>) -> Self {
        self.sse_c = key;
        self
    }

    /// The key in the bucket.
    fn full(&self, key: &Path) -> Path {
        super::prefixed(self.prefix.as_ref(), key)
    }

    /// One `UploadPartCopy`, retried on what retrying can mend; returns the part's ETag.
    async fn copy_part(
        &self,
        dest: &Path,
        upload: &str,
        part: usize,
        source: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<PartId, Error> {
        let url = format!(
            "{}{}?partNumber={}&uploadId={}",
            self.objects_url,
            utf8_percent_encode(dest.as_ref(), KEY_SET),
            part + 1,
            utf8_percent_encode(upload, QUERY_SET)
        );
        let copy_source = format!(
            "/{}/{}",
            utf8_percent_encode(&self.bucket, QUERY_SET),
            utf8_percent_encode(source.as_ref(), KEY_SET)
        );
        let copy_range = format!("bytes={}-{}", range.start, range.end - 1);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.try_copy_part(&url, &copy_source, &copy_range).await {
                Ok(etag) => return Ok(PartId { content_id: etag }),
                Err(CopyError::Retry(why)) => last = why,
                Err(CopyError::Fail(why)) => {
                    last = why;
                    break;
                }
            }
        }
        Err(Error::Store {
            operation: "server-side copy (UploadPartCopy) into",
            key: dest.to_string(),
            source: object_store::Error::Generic {
                store: "S3",
                source: format!("{copy_source} {copy_range}: {last}").into(),
            },
        })
    }

    async fn try_copy_part(
        &self,
        url: &str,
        copy_source: &str,
        copy_range: &str,
    ) -> Result<String, CopyError> {
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| CopyError::Fail(format!("no credentials: {e}")))?;
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new(
                credential.key_id.clone(),
                credential.secret_key.clone(),
                credential.token.clone(),
                None,
                "catena",
            )
            .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| CopyError::Fail(format!("signing: {e}")))?
            .into();
        let uri: http::Uri = url
            .parse()
            .map_err(|e| CopyError::Fail(format!("URL {url}: {e}")))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| CopyError::Fail(format!("URL {url} has no host")))?;
        let mut headers = vec![
            ("host", host.as_str()),
            ("x-amz-copy-source", copy_source),
            ("x-amz-copy-source-range", copy_range),
        ];
        if let Some(key) = &self.sse_c {
            headers.extend(key.copy_headers());
        }
        let signable = SignableRequest::new(
            "PUT",
            url,
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| CopyError::Fail(format!("signing: {e}")))?;
        // aws-sigv4 traces the signing parameters, access key id included: keep them out of
        // whatever subscriber the application has.
        let signed = tracing::dispatcher::with_default(&tracing::Dispatch::none(), || {
            sign(signable, &params)
        });
        let (instructions, _) = signed
            .map_err(|e| CopyError::Fail(format!("signing: {e}")))?
            .into_parts();
        let mut request = http::Request::builder().method("PUT").uri(uri);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let request = request
            .header("content-length", "0")
            .body(HttpRequestBody::empty())
            .map_err(|e| CopyError::Fail(format!("request: {e}")))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| CopyError::Retry(format!("request failed: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| CopyError::Retry(format!("reading the answer: {e}")))?;
        let text = String::from_utf8_lossy(&body);
        // S3 may answer 200 with an error in the body.
        if status.is_success()
            && let Ok(r) = quick_xml::de::from_str::<CopyPartResult>(&text)
        {
            return Ok(r.etag);
        }
        let why = match super::ErrorBody::parse(&text) {
            Some((code, message)) => format!("HTTP {status}: {code}: {message}"),
            // Not the raw body: an S3 error body can carry the access key id.
            None => format!("HTTP {status} without an S3 error body"),
        };
        if status.is_server_error()
            || status.as_u16() == 429
            || (status.is_success() && (why.contains("InternalError") || why.contains("SlowDown")))
        {
            Err(CopyError::Retry(why))
        } else {
            Err(CopyError::Fail(why))
        }
    }

    /// Sends or copies every part, then completes the upload.
    async fn parts(&self, job: &AssemblyJob<'_>, dest: &Path, upload: &str) -> Result<(), Error> {
        let parts: Vec<PartId> =
            futures::stream::iter(job.plan.parts.clone().into_iter().enumerate())
                .map(|(i, part)| async move {
                    match part {
                        Part::Copy { source, range } => {
                            let source = self.full(job.source(source)?);
                            self.copy_part(dest, upload, i, &source, range).await
                        }
                        Part::Send { ranges } => {
                            let payload = job.read_ranges(&ranges).await?;
                            self.s3
                                .put_part(
                                    dest,
                                    &upload.to_owned(),
                                    i,
                                    object_store::PutPayload::from_iter(payload),
                                )
                                .await
                                .map_err(|e| Error::store("sending a part of", dest, e))
                        }
                    }
                })
                .buffered(PARTS_IN_FLIGHT)
                .try_collect()
                .await?;
        self.s3
            .complete_multipart(dest, &upload.to_owned(), parts)
            .await
            .map_err(|e| Error::store("completing", dest, e))?;
        Ok(())
    }
}

enum CopyError {
    Retry(String),
    Fail(String),
}

#[derive(serde::Deserialize)]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    etag: String,
}

#[async_trait::async_trait]
impl ServerCopy for S3Copy {
    fn method(&self) -> &'static str {
        "S3 UploadPartCopy"
    }

    fn limits(&self) -> PartLimits {
        PartLimits::S3
    }

    async fn assemble(&self, job: &AssemblyJob<'_>) -> Result<(), Error> {
        let dest = self.full(job.dest);
        let upload = self
            .s3
            .create_multipart(&dest)
            .await
            .map_err(|e| Error::store("starting the assembly of", job.dest, e))?;
        let result = tokio::select! {
            r = self.parts(job, &dest, &upload) => r,
            () = job.cancel.cancelled() => Err(Error::Cancelled),
        };
        if result.is_err()
            && let Err(e) = self.s3.abort_multipart(&dest, &upload).await
        {
            tracing::warn!(key = %dest, error = %e, "could not abort the multipart upload; an AbortIncompleteMultipartUpload lifecycle rule removes it");
        }
        result
    }
}
