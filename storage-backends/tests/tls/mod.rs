//! S3 over TLS with a self-signed certificate on loopback: a TLS-terminating proxy in front
//! of moto. Verification fails by default with an error that says what to do; the CA given
//! as base64 (`s3CACert`) or as a file (`s3CASecretName`/`s3CASecretKey`) makes it work;
//! `s3SkipVerify` makes it work and warns.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use storage_backends::StorageConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::common::*;

/// Starts a TLS proxy on 127.0.0.1 forwarding to `upstream` (`http://host:port`); returns
/// its `https://` endpoint, the certificate's PEM and a count of the connections accepted.
async fn tls_proxy(upstream: &str) -> (String, String, Arc<AtomicUsize>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let pem = cert.pem();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return; // the client refused our certificate
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), pem, connections)
}

async fn round_trip(store: &Arc<dyn ObjectStore>) -> Result<(), String> {
    let key = Path::from(format!("tls/{}", unique("object")));
    store
        .put(&key, Bytes::from_static(b"over TLS").into())
        .await
        .map_err(|e| storage_backends::Error::store("writing", &key, e).to_string())?;
    let back = store
        .get(&key)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(&back[..], b"over TLS");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_over_tls_with_a_self_signed_certificate() {
    let Some(moto) = server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let (endpoint, pem, connections) = tls_proxy(&moto).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = || s3_config(&endpoint, dir.path(), "k", "s", &unique("tls"));

    // Default: verification fails, and the error says what to do.
    let storage = base().build().await.expect("builds");
    let err = round_trip(&storage.store)
        .await
        .expect_err("an untrusted certificate");
    assert!(
        err.contains("s3CACert") && err.contains("not trusted"),
        "the error does not say what to do: {err}"
    );
    // Retrying cannot mend a certificate: one attempt, not object_store's ten.
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "an untrusted certificate was retried"
    );
    // And it is permanent for the layers above: `catena schedule` does not retry it either.
    let key = object_store::path::Path::from("probe");
    let e = object_store::ObjectStoreExt::put(
        storage.store.as_ref(),
        &key,
        object_store::PutPayload::from_static(b"x"),
    )
    .await
    .expect_err("an untrusted certificate");
    assert!(
        storage_backends::Error::store("writing", &key, e).is_permanent(),
        "an untrusted certificate is not a passing failure"
    );

    eprintln!("default verification: {err}");
    // The CA as base64 of the PEM (s3CACert).
    use base64::Engine;
    let config = StorageConfig {
        s3_ca_cert: Some(base64::engine::general_purpose::STANDARD.encode(&pem)),
        ..base()
    };
    let storage = config.build().await.expect("builds");
    round_trip(&storage.store)
        .await
        .expect("works with s3CACert");

    // The CA as a file, as a mounted secret (s3CASecretName / s3CASecretKey).
    std::fs::create_dir_all(dir.path().join("s3-ca")).expect("mkdir");
    std::fs::write(dir.path().join("s3-ca/ca.crt"), &pem).expect("write");
    let config = StorageConfig {
        s3_ca_secret_name: Some("s3-ca".into()),
        s3_ca_secret_key: Some("ca.crt".into()),
        ..base()
    };
    let storage = config.build().await.expect("builds");
    round_trip(&storage.store)
        .await
        .expect("works with the CA file");

    // s3SkipVerify: works, with a loud warning.
    let config = StorageConfig {
        s3_skip_verify: true,
        ..base()
    };
    let storage = config.build().await.expect("builds");
    assert!(
        storage.warnings.iter().any(|w| w.contains("NOT verified")),
        "{:?}",
        storage.warnings
    );
    round_trip(&storage.store)
        .await
        .expect("works with s3SkipVerify");

    // Another certificate as CA: still refused.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("certificate")
        .cert
        .pem();
    let config = StorageConfig {
        s3_ca_cert: Some(base64::engine::general_purpose::STANDARD.encode(other)),
        ..base()
    };
    let storage = config.build().await.expect("builds");
    round_trip(&storage.store)
        .await
        .expect_err("a CA that did not sign the certificate");
}
