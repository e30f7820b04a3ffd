//! Every seed storage key reaches the built store (or is refused with the key's name), the
//! seed's credentials files work, and no secret shows in Debug output or errors.

use std::sync::Arc;

use base64::Engine as _;
use object_store::ObjectStoreExt;
use storage_backends::credentials::{Secret, read_azure_file};
use storage_backends::{CloudProvider, Error, StorageConfig};

use crate::common::*;

fn aws() -> StorageConfig {
    StorageConfig {
        cloud_provider: CloudProvider::Aws,
        bucket_name: "my-bucket".into(),
        ..StorageConfig::default()
    }
}

fn setting(s: &storage_backends::Storage, key: &str) -> Option<String> {
    s.settings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

async fn build_err(c: StorageConfig) -> String {
    match c.build().await {
        Ok(_) => panic!("expected an error for {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn self_signed_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("certificate")
        .cert
        .pem()
}

#[tokio::test]
async fn s3_keys_reach_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    aws_secret(
        dir.path(),
        "awscreds",
        "AKIDSEEDKEY",
        "seed-secret-value",
        "eu-west-3",
    );
    let c = StorageConfig {
        s3_endpoint: Some("minio.local:9000".into()),
        s3_endpoint_tls: Some(false),
        s3_force_path_style: true,
        s3_region: Some("us-east-2".into()),
        secret_name: Some("awscreds".into()),
        secret_key_name: Some("credentials".into()),
        secrets_dir: dir.path().to_owned(),
        prefix: "backups/prod".into(),
        ..aws()
    };
    let s = c.build().await.expect("build");
    assert_eq!(setting(&s, "bucket").as_deref(), Some("my-bucket"));
    assert_eq!(
        setting(&s, "endpoint").as_deref(),
        Some("http://minio.local:9000"),
        "s3EndpointTLS=false gives http"
    );
    assert_eq!(
        setting(&s, "region").as_deref(),
        Some("us-east-2"),
        "s3Region wins over the file's region"
    );
    assert_eq!(
        setting(&s, "virtual_hosted_style").as_deref(),
        Some("false"),
        "s3ForcePathStyle"
    );
    assert!(
        setting(&s, "credentials")
            .unwrap_or_default()
            .contains("awscreds/credentials"),
        "secretName/secretKeyName"
    );
    assert_eq!(setting(&s, "prefix").as_deref(), Some("backups/prod"));
    assert!(
        s.description
            .starts_with("s3://my-bucket at http://minio.local:9000/backups/prod"),
        "{}",
        s.description
    );

    // The region in the seed's credentials file is used when s3Region is not set.
    let s = StorageConfig {
        s3_region: None,
        ..c.clone()
    }
    .build()
    .await
    .expect("build");
    assert_eq!(setting(&s, "region").as_deref(), Some("eu-west-3"));

    // s3EndpointTLS defaults to https for an endpoint without scheme.
    let s = StorageConfig {
        s3_endpoint_tls: None,
        ..c.clone()
    }
    .build()
    .await
    .expect("build");
    assert_eq!(
        setting(&s, "endpoint").as_deref(),
        Some("https://minio.local:9000")
    );
    assert_eq!(
        setting(&s, "virtual_hosted_style").as_deref(),
        Some("false")
    );
}

#[tokio::test]
async fn minio_endpoint_is_a_deprecated_alias() {
    let dir = tempfile::tempdir().expect("tempdir");
    aws_secret(dir.path(), "awscreds", "k", "s", "us-east-1");
    let c = StorageConfig {
        minio_endpoint: Some("http://minio.example.com:9000".into()),
        secret_name: Some("awscreds".into()),
        secrets_dir: dir.path().to_owned(),
        ..aws()
    };
    let s = c.build().await.expect("build");
    // Virtual-hosted (the chart's default): the bucket goes into the host name.
    assert_eq!(
        setting(&s, "endpoint").as_deref(),
        Some("http://my-bucket.minio.example.com:9000")
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("minioEndpoint is deprecated")),
        "{:?}",
        s.warnings
    );
    let both = StorageConfig {
        s3_endpoint: Some("http://other:9000".into()),
        ..c
    };
    assert!(build_err(both).await.contains("minioEndpoint"));
}

#[tokio::test]
async fn ca_keys_reach_the_client_and_skip_verify_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    aws_secret(dir.path(), "awscreds", "k", "s", "us-east-1");
    let base = StorageConfig {
        s3_endpoint: Some("https://s3.custom.example".into()),
        s3_endpoint_tls: Some(true),
        secret_name: Some("awscreds".into()),
        secrets_dir: dir.path().to_owned(),
        ..aws()
    };
    // s3CACert: base64 of a PEM. Invalid base64 and PEM that holds no certificate are refused,
    // which shows the value reaches the client builder.
    let b64 = base64::engine::general_purpose::STANDARD.encode(self_signed_pem());
    let with_ca = StorageConfig {
        s3_ca_cert: Some(b64.clone()),
        ..base.clone()
    };
    let s = with_ca.build().await.expect("a valid CA builds");
    assert_eq!(setting(&s, "ca").as_deref(), Some("s3CACert"));
    let bad = StorageConfig {
        s3_ca_cert: Some("not base64!".into()),
        ..base.clone()
    };
    assert!(
        build_err(bad)
            .await
            .contains("s3CACert is not valid base64")
    );
    let empty_pem = base64::engine::general_purpose::STANDARD.encode("no certificate here");
    let bad = StorageConfig {
        s3_ca_cert: Some(empty_pem),
        ..base.clone()
    };
    assert!(build_err(bad).await.contains("CA certificate"));

    // s3CASecretName / s3CASecretKey: a CA file under the secrets directory.
    let missing = StorageConfig {
        s3_ca_secret_name: Some("s3-ca-cert".into()),
        s3_ca_secret_key: Some("ca.crt".into()),
        ..base.clone()
    };
    let msg = build_err(missing.clone()).await;
    assert!(
        msg.contains("s3-ca-cert/ca.crt") && msg.contains("s3CASecretName"),
        "{msg}"
    );
    std::fs::create_dir_all(dir.path().join("s3-ca-cert")).expect("mkdir");
    std::fs::write(dir.path().join("s3-ca-cert/ca.crt"), "garbage").expect("write");
    assert!(
        build_err(missing.clone()).await.contains("CA certificate"),
        "the CA file is read"
    );
    std::fs::write(dir.path().join("s3-ca-cert/ca.crt"), self_signed_pem()).expect("write");
    let s = missing.build().await.expect("a CA file builds");
    assert_eq!(
        setting(&s, "ca").as_deref(),
        Some("file from secret s3-ca-cert")
    );

    // s3SkipVerify works and warns loudly.
    let skip = StorageConfig {
        s3_skip_verify: true,
        ..base.clone()
    };
    let s = skip.build().await.expect("build");
    assert_eq!(setting(&s, "tls_verify").as_deref(), Some("off"));
    assert!(
        s.warnings.iter().any(|w| w.contains("NOT verified")),
        "{:?}",
        s.warnings
    );
}

#[tokio::test]
async fn wrong_combinations_name_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    aws_secret(dir.path(), "awscreds", "k", "s", "us-east-1");
    let with_secret = |c: StorageConfig| StorageConfig {
        secret_name: Some("awscreds".into()),
        secrets_dir: dir.path().to_owned(),
        ..c
    };
    let cases: Vec<(StorageConfig, &[&str])> = vec![
        (
            with_secret(StorageConfig {
                s3_endpoint: Some("http://h:9000".into()),
                s3_endpoint_tls: Some(true),
                ..aws()
            }),
            &["s3EndpointTLS", "http://"],
        ),
        (
            with_secret(StorageConfig {
                s3_endpoint: Some("https://h".into()),
                s3_ca_cert: Some("eA==".into()),
                s3_skip_verify: true,
                ..aws()
            }),
            &["s3CACert", "s3SkipVerify"],
        ),
        (
            with_secret(StorageConfig {
                s3_endpoint: Some("http://h".into()),
                s3_ca_cert: Some(
                    base64::engine::general_purpose::STANDARD.encode(self_signed_pem()),
                ),
                ..aws()
            }),
            &["http://", "CA"],
        ),
        (
            with_secret(StorageConfig {
                s3_ca_cert: Some("eA==".into()),
                s3_ca_secret_name: Some("x".into()),
                ..aws()
            }),
            &["s3CACert", "s3CASecretName"],
        ),
        (
            StorageConfig {
                cloud_provider: CloudProvider::Azure,
                bucket_name: "c".into(),
                service_account_name: Some("sa".into()),
                ..StorageConfig::default()
            },
            &["azureStorageAccountName"],
        ),
        (
            StorageConfig {
                cloud_provider: CloudProvider::Gcp,
                bucket_name: "b".into(),
                s3_region: Some("x".into()),
                ..StorageConfig::default()
            },
            &["s3Region", "aws"],
        ),
        (
            StorageConfig {
                azure_storage_account_name: Some("acct".into()),
                ..aws()
            },
            &["azureStorageAccountName"],
        ),
        (
            StorageConfig {
                cloud_provider: CloudProvider::Aws,
                ..StorageConfig::default()
            },
            &["bucketName"],
        ),
        (
            // (`credentials`, the key's default, alone is no setting: see
            // the_charts_defaults_are_not_settings.)
            StorageConfig {
                secret_key_name: Some("awskey".into()),
                ..aws()
            },
            &["secretKeyName", "secretName"],
        ),
        (
            StorageConfig {
                secret_name: Some("../etc".into()),
                ..aws()
            },
            &["secretName"],
        ),
        (
            with_secret(StorageConfig {
                service_account_name: Some("sa".into()),
                ..aws()
            }),
            &["serviceAccountName", "secretName"],
        ),
        (
            StorageConfig {
                secret_name: Some("nothere".into()),
                secrets_dir: dir.path().to_owned(),
                ..aws()
            },
            &["nothere/credentials", "secretName"],
        ),
    ];
    for (config, words) in cases {
        let msg = build_err(config).await;
        for w in words {
            assert!(msg.contains(w), "{msg:?} should name {w:?}");
        }
    }
}

#[tokio::test]
async fn azure_keys_reach_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("azurecred/credentials");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, "AZURE_STORAGE_ACCOUNT_NAME=myaccount\nAZURE_STORAGE_ACCOUNT_KEY=c2VjcmV0LWF6dXJlLWtleQ==\n").expect("write");
    let c = StorageConfig {
        cloud_provider: CloudProvider::Azure,
        bucket_name: "container".into(),
        secret_name: Some("azurecred".into()),
        secret_key_name: Some("credentials".into()),
        secrets_dir: dir.path().to_owned(),
        ..StorageConfig::default()
    };
    let s = c.build().await.expect("build");
    assert_eq!(setting(&s, "account").as_deref(), Some("myaccount"));
    assert_eq!(s.description, "az://container");

    let wi = StorageConfig {
        cloud_provider: CloudProvider::Azure,
        bucket_name: "container".into(),
        azure_storage_account_name: Some("storageAccountName".into()),
        service_account_name: Some("demo-service-account".into()),
        ..StorageConfig::default()
    };
    let s = wi.build().await.expect("workload identity");
    assert_eq!(
        setting(&s, "account").as_deref(),
        Some("storageAccountName")
    );
    assert!(
        setting(&s, "credentials")
            .unwrap_or_default()
            .contains("workload identity")
    );

    for (text, why) in [
        ("AZURE_STORAGE_ACCOUNT_NAME=a\n", "both"),
        ("garbage line\n", "NAME=VALUE"),
        ("AZURE_STORAGE_ACCOUNT_NAME=a\nOTHER=1\n", "OTHER"),
    ] {
        std::fs::write(&file, text).expect("write");
        let msg = read_azure_file(&file).expect_err("bad file").to_string();
        assert!(msg.contains(why), "{msg}");
    }
    std::fs::write(&file, "# comment\nexport AZURE_STORAGE_ACCOUNT_NAME=\"acct\"\n\nAZURE_STORAGE_ACCOUNT_KEY='k3y'\n").expect("write");
    let (account, key) = read_azure_file(&file).expect("lenient forms");
    assert_eq!((account.as_str(), key.expose()), ("acct", "k3y"));
}

#[tokio::test]
async fn gcp_keys_reach_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = StorageConfig {
        cloud_provider: CloudProvider::Gcp,
        bucket_name: "my-bucket".into(),
        secret_name: Some("gcpcreds".into()),
        secret_key_name: Some("credentials".into()),
        secrets_dir: dir.path().to_owned(),
        ..StorageConfig::default()
    };
    let msg = build_err(c.clone()).await;
    assert!(msg.contains("gcpcreds/credentials"), "{msg}");
    std::fs::create_dir_all(dir.path().join("gcpcreds")).expect("mkdir");
    std::fs::write(dir.path().join("gcpcreds/credentials"), "{}").expect("write");
    // A file that is not a service-account key is refused by the GCS builder.
    assert!(c.build().await.is_err());
}

#[tokio::test]
async fn storage_urls_parse_strictly() {
    let c = StorageConfig::from_url("s3://bucket/some/prefix/").expect("s3");
    assert_eq!(
        (c.cloud_provider, c.bucket_name.as_str(), c.prefix.as_str()),
        (CloudProvider::Aws, "bucket", "some/prefix")
    );
    assert_eq!(
        StorageConfig::from_url("gs://b")
            .expect("gs")
            .cloud_provider,
        CloudProvider::Gcp
    );
    assert_eq!(
        StorageConfig::from_url("az://c/p")
            .expect("az")
            .cloud_provider,
        CloudProvider::Azure
    );
    assert_eq!(
        StorageConfig::from_url("file:///backups")
            .expect("file")
            .local_path,
        std::path::PathBuf::from("/backups")
    );
    assert_eq!(
        StorageConfig::from_url("./relative")
            .expect("dir")
            .cloud_provider,
        CloudProvider::Local
    );
    for bad in [
        "",
        "s3://",
        "s3:///prefix",
        "ftp://x/y",
        "file://relative",
        "s3://user:pw@bucket/x",
        "az://c/p?sv=2020&sig=SECRETSIG",
    ] {
        let msg = StorageConfig::from_url(bad).expect_err(bad).to_string();
        assert!(!msg.contains("SECRETSIG"), "{msg}");
    }
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "SuperSecretValue-7f3a9c";
    aws_secret(dir.path(), "awscreds", "AKIDVISIBLEID", secret, "us-east-1");
    let ca = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}{}",
        self_signed_pem(),
        secret
    ));
    let c = StorageConfig {
        s3_endpoint: Some("http://127.0.0.1:9".into()),
        secret_name: Some("awscreds".into()),
        secrets_dir: dir.path().to_owned(),
        s3_ca_cert: Some(ca),
        ..aws()
    };
    assert!(!format!("{c:?}").contains(secret));
    let c = StorageConfig {
        s3_ca_cert: None,
        ..c
    };
    let s = c.build().await.expect("build");
    for text in [
        format!("{s:?}"),
        format!("{:?}", s.store),
        s.store.to_string(),
        format!("{:?}", s.settings),
    ] {
        assert!(!text.contains(secret), "secret in {text}");
    }
    // An error from the (unreachable) endpoint does not carry the secret either.
    let err = s
        .store
        .get(&object_store::path::Path::from("x"))
        .await
        .expect_err("nothing listens on port 9");
    assert!(!format!("{err} {err:?}").contains(secret));
    assert_eq!(
        format!("{:?} {}", Secret::new(secret), Secret::new(secret)),
        "[redacted] [redacted]"
    );
    let e = Error::CredentialsFile {
        path: "/x".into(),
        why: "bad".into(),
    };
    assert!(!e.to_string().contains(secret));
}

#[tokio::test]
async fn seed_credentials_file_signs_requests_that_s3s_fs_verifies() {
    let Some(endpoint) = server_var("CATENA_TEST_S3S_ENDPOINT", "s3s-fs") else {
        return;
    };
    let key = std::env::var("CATENA_TEST_S3S_ACCESS_KEY").expect("key");
    let secret = std::env::var("CATENA_TEST_S3S_SECRET_KEY").expect("secret");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = s3_config(&endpoint, dir.path(), &key, &secret, &unique("creds"));
    let storage = good.build().await.expect("build");
    let path = object_store::path::Path::from("signed");
    storage
        .store
        .put(&path, object_store::PutPayload::from_static(b"ok"))
        .await
        .expect("a correctly signed put works");
    storage.store.delete(&path).await.expect("delete");

    let dir2 = tempfile::tempdir().expect("tempdir");
    let bad = s3_config(
        &endpoint,
        dir2.path(),
        &key,
        "wrong-secret",
        &unique("creds"),
    );
    let storage = bad.build().await.expect("build");
    let err = storage
        .store
        .put(&path, object_store::PutPayload::from_static(b"no"))
        .await
        .expect_err("a wrong secret is refused");
    assert!(!err.to_string().contains("wrong-secret"));
    let _ = Arc::new(());
}

/// With an endpoint and virtual-hosted style (the chart's default), requests must go to
/// `<bucket>.<host>`: object_store sends them to the endpoint as given, so an endpoint
/// without the bucket made the server take the key's first segment for the bucket.
#[tokio::test]
async fn the_bucket_is_addressed_as_the_chart_means() {
    let dir = tempfile::tempdir().expect("tempdir");
    aws_secret(dir.path(), "awscreds", "k", "s", "us-east-1");
    let at = |endpoint: Option<&str>, bucket: &str, path_style: bool| StorageConfig {
        bucket_name: bucket.into(),
        s3_endpoint: endpoint.map(str::to_owned),
        s3_force_path_style: path_style,
        secret_name: Some("awscreds".into()),
        secrets_dir: dir.path().to_owned(),
        ..aws()
    };
    let cases = [
        // (endpoint, bucket, s3ForcePathStyle) -> (endpoint object_store gets, virtual?)
        (
            at(Some("https://minio.internal:9000"), "my-bucket", false),
            "https://my-bucket.minio.internal:9000",
            "true",
        ),
        (
            at(Some("https://minio.internal:9000"), "my-bucket", true),
            "https://minio.internal:9000",
            "false",
        ),
        (
            at(Some("https://s3.amazonaws.com"), "my-bucket", false),
            "https://my-bucket.s3.amazonaws.com",
            "true",
        ),
        // An endpoint that already is the bucket's own address stays as it is.
        (
            at(Some("https://my-bucket.s3.example.com"), "my-bucket", false),
            "https://my-bucket.s3.example.com",
            "true",
        ),
        // IP addresses and localhost cannot carry the bucket: path style.
        (
            at(Some("http://10.1.2.3:9000"), "my-bucket", false),
            "http://10.1.2.3:9000",
            "false",
        ),
        (
            at(Some("http://localhost:9000"), "my-bucket", false),
            "http://localhost:9000",
            "false",
        ),
        // A bucket with dots breaks TLS certificate matching as a host name: path style.
        (
            at(Some("https://minio.internal"), "my.bucket", false),
            "https://minio.internal",
            "false",
        ),
    ];
    for (c, endpoint, virtual_hosted) in cases {
        let s = c.build().await.unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(setting(&s, "endpoint").as_deref(), Some(endpoint), "{c:?}");
        assert_eq!(
            setting(&s, "virtual_hosted_style").as_deref(),
            Some(virtual_hosted),
            "{c:?}"
        );
        let addressing = setting(&s, "addressing").unwrap_or_default();
        assert!(
            addressing.starts_with(if virtual_hosted == "true" {
                "virtual-hosted"
            } else {
                "path-style"
            }),
            "{addressing}"
        );
    }
    // Without an endpoint: AWS, virtual-hosted.
    let s = at(None, "my-bucket", false).build().await.expect("build");
    assert_eq!(setting(&s, "virtual_hosted_style").as_deref(), Some("true"));
}

/// A copy of the chart's values carries every key at its default (`s3EndpointTLS: false`,
/// empty strings): defaults are not settings, so they neither apply to another provider
/// nor contradict an https:// endpoint. Asking for TLS on an http:// endpoint still fails.
#[tokio::test]
async fn the_charts_defaults_are_not_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = StorageConfig {
        s3_endpoint_tls: Some(false),
        s3_endpoint: Some(String::new()),
        s3_region: Some("  ".into()),
        local_path: dir.path().join("backups"),
        ..StorageConfig::default()
    };
    local
        .build()
        .await
        .expect("a local store with the chart's S3 defaults");
    aws_secret(dir.path(), "awscreds", "k", "s", "us-east-1");
    let https = StorageConfig {
        s3_endpoint: Some("https://minio.internal".into()),
        s3_endpoint_tls: Some(false),
        secret_name: Some("awscreds".into()),
        secrets_dir: dir.path().to_owned(),
        ..aws()
    };
    let s = https
        .build()
        .await
        .expect("https endpoint, s3EndpointTLS at its default");
    assert!(
        setting(&s, "endpoint")
            .unwrap_or_default()
            .starts_with("https://"),
        "the endpoint's scheme wins over the default"
    );
    let e = build_err(StorageConfig {
        s3_endpoint: Some("http://minio.internal".into()),
        s3_endpoint_tls: Some(true),
        ..https.clone()
    })
    .await;
    assert!(
        e.contains("s3EndpointTLS is true") && e.contains("http://"),
        "{e}"
    );
}

/// Every storage key but where-to (provider, bucket, prefix, local path: a URL says those)
/// can be overridden, and an empty text clears what the file set. The keys are taken from
/// the serialized forms, so a key added to `StorageConfig` without an override fails here.
#[tokio::test]
async fn every_storage_key_can_be_overridden() {
    use storage_backends::StorageOverrides;
    let keys = |v: serde_json::Value| -> std::collections::BTreeSet<String> {
        v.as_object().expect("object").keys().cloned().collect()
    };
    let config_keys = keys(serde_json::to_value(StorageConfig::default()).expect("json"));
    let override_keys = keys(serde_json::to_value(StorageOverrides::default()).expect("json"));
    let url_keys = ["cloudProvider", "bucketName", "prefix", "localPath"];
    let expected: std::collections::BTreeSet<String> = config_keys
        .iter()
        .filter(|k| !url_keys.contains(&k.as_str()))
        .cloned()
        .collect();
    assert_eq!(override_keys, expected);

    // A file that sets every key one way; overrides that set every key another way.
    let mut file = serde_json::to_value(aws()).expect("json");
    let mut wanted = serde_json::Map::new();
    for key in &override_keys {
        let (from_file, from_flag) = match file[key.as_str()] {
            serde_json::Value::Bool(_) => (serde_json::json!(false), serde_json::json!(true)),
            _ if key == "s3EndpointTLS" => (serde_json::json!(false), serde_json::json!(true)),
            _ => (
                serde_json::json!(format!("file-{key}")),
                serde_json::json!(format!("flag-{key}")),
            ),
        };
        file[key.as_str()] = from_file;
        wanted.insert(key.clone(), from_flag);
    }
    let file: StorageConfig = serde_json::from_value(file).expect("config");
    let overrides: StorageOverrides =
        serde_json::from_value(serde_json::Value::Object(wanted.clone())).expect("overrides");
    let merged = serde_json::to_value(file.clone().with_overrides(&overrides)).expect("json");
    for (key, value) in &wanted {
        // The endpoint and its deprecated alias go together: giving one replaces both.
        assert_eq!(&merged[key.as_str()], value, "{key} was not overridden");
    }
    // An empty text clears; the deprecated alias gives way to the endpoint.
    let cleared = file.with_overrides(&StorageOverrides {
        s3_endpoint: Some("http://h:1".into()),
        s3_ca_cert: Some(String::new()),
        ..StorageOverrides::default()
    });
    assert_eq!(cleared.s3_ca_cert, None);
    assert_eq!(
        cleared.minio_endpoint, None,
        "--s3-endpoint over minioEndpoint"
    );
    assert_eq!(cleared.s3_endpoint.as_deref(), Some("http://h:1"));
    assert!(
        !format!("{overrides:?}").contains("flag-s3CACert"),
        "{overrides:?}"
    );
}

/// S3 server-side encryption is checked before anything is written: an unknown type, SSE-C
/// without its key (or with a key file that is not 32 bytes), a KMS key or bucket key without
/// SSE-KMS, and any of them on a store that is not S3 are refused, naming the key; so are an
/// Azure encryption scope and a GCS KMS key, which the clients cannot send. What is set shows
/// in the settings, an SSE-C key never.
#[tokio::test]
async fn server_side_encryption_is_checked_at_start() {
    let sse = |kind: &str| StorageConfig {
        s3_server_side_encryption: Some(kind.into()),
        ..aws()
    };
    let cases = [
        (sse("aes"), "s3ServerSideEncryption \"aes\" is not AES256"),
        (
            sse("sse-c"),
            "SSE-C needs the key: set s3SseCustomerKeySecretName",
        ),
        (
            StorageConfig {
                s3_sse_customer_key_secret_name: Some("ssec".into()),
                ..sse("AES256")
            },
            "s3SseCustomerKeySecretName is set but s3ServerSideEncryption is not SSE-C",
        ),
        (
            StorageConfig {
                s3_sse_customer_key_secret_key: Some("k".into()),
                ..aws()
            },
            "s3SseCustomerKeySecretKey is set but s3SseCustomerKeySecretName is not",
        ),
        (
            StorageConfig {
                cloud_provider: CloudProvider::Azure,
                azure_encryption_scope: Some("backups".into()),
                ..StorageConfig::default()
            },
            "azureEncryptionScope \"backups\" cannot be honoured",
        ),
        (
            StorageConfig {
                cloud_provider: CloudProvider::Gcp,
                gcs_kms_key_name: Some("projects/p/keys/k".into()),
                ..StorageConfig::default()
            },
            "gcsKmsKeyName \"projects/p/keys/k\" cannot be honoured",
        ),
        (
            StorageConfig {
                s3_sse_kms_key_id: Some("k".into()),
                ..sse("AES256")
            },
            "s3SseKmsKeyId is set but s3ServerSideEncryption is not aws:kms",
        ),
        (
            StorageConfig {
                s3_sse_bucket_key_enabled: true,
                ..aws()
            },
            "s3SseBucketKeyEnabled applies to SSE-KMS",
        ),
        (
            StorageConfig {
                cloud_provider: CloudProvider::Gcp,
                ..sse("aws:kms")
            },
            "s3ServerSideEncryption applies only to cloudProvider \"aws\"",
        ),
    ];
    for (config, wanted) in cases {
        let e = build_err(config).await;
        assert!(e.contains(wanted), "{e}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let built = StorageConfig {
        s3_sse_kms_key_id: Some("alias/backups".into()),
        s3_sse_bucket_key_enabled: true,
        s3_endpoint: Some("http://127.0.0.1:9".into()),
        secrets_dir: dir.path().to_owned(),
        ..sse("aws:kms")
    }
    .build()
    .await
    .expect("builds");
    assert_eq!(
        setting(&built, "server_side_encryption").as_deref(),
        Some("aws:kms, key alias/backups, bucket key")
    );
    // SSE-C: the key file holds 32 bytes, raw or base64; anything else is refused at start.
    let secret = dir.path().join("ssec");
    std::fs::create_dir_all(&secret).expect("mkdir");
    let ssec = || StorageConfig {
        s3_sse_customer_key_secret_name: Some("ssec".into()),
        s3_endpoint: Some("http://127.0.0.1:9".into()),
        secrets_dir: dir.path().to_owned(),
        ..sse("SSE-C")
    };
    let e = build_err(ssec()).await;
    assert!(e.contains("cannot read the SSE-C key"), "{e}");
    std::fs::write(secret.join("sse-c.key"), "c2hvcnQ=\n").expect("write");
    let e = build_err(ssec()).await;
    assert!(e.contains("must be 32 bytes, raw or base64"), "{e}");
    // 32 bytes of base64 text that is also not 32 bytes long: decoded.
    let raw = [0x5au8; 32];
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    for content in [raw.to_vec(), format!("{b64}\n").into_bytes()] {
        std::fs::write(secret.join("sse-c.key"), &content).expect("write");
        let built = ssec().build().await.expect("SSE-C builds");
        let said = setting(&built, "server_side_encryption").expect("said");
        assert!(said.starts_with("SSE-C, the key in "), "{said}");
        let shown = format!("{said} {:?} {:?}", built.settings, ssec());
        assert!(!shown.contains(&b64), "the key is never shown: {shown}");
    }
    let plain = StorageConfig {
        s3_endpoint: Some("http://127.0.0.1:9".into()),
        secrets_dir: dir.path().to_owned(),
        ..aws()
    }
    .build()
    .await
    .expect("builds");
    assert_eq!(
        setting(&plain, "server_side_encryption").as_deref(),
        Some("the bucket's default")
    );
}
