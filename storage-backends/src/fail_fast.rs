//! An HTTP connector that does not retry what retrying cannot mend: a TLS certificate the
//! client does not trust fails the first request, so the error (with its CA advice, see
//! [`crate::Error::Store`]) comes at once instead of after object_store's ten retries.

use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};

/// object_store's reqwest connector, with untrusted certificates made permanent errors.
#[derive(Debug, Default)]
pub(crate) struct FailFastTls;

impl HttpConnector for FailFastTls {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(FailFastService(inner)))
    }
}

#[derive(Debug)]
struct FailFastService(HttpClient);

#[async_trait::async_trait]
impl HttpService for FailFastService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.0.execute(req).await.map_err(|e| {
            if untrusted_certificate(&e) {
                // `Unknown` is the one kind object_store never retries.
                HttpError::new(HttpErrorKind::Unknown, e)
            } else {
                e
            }
        })
    }
}

/// Whether the error's causes include a certificate the TLS client refused.
pub(crate) fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains("certificate") || text.contains("UnknownIssuer") {
            return true;
        }
        cur = err.source();
    }
    false
}
