//! The operator's day: the chart's settings as the chart means them, signals as Kubernetes
//! sends them, interrupted work finished or named, and errors that say what to do.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::{catena, common, make_data, run, text};

/// One request as a forward proxy saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    host: String,
    path: String,
    query: String,
}

/// A forward HTTP proxy on loopback that records the Host header and path of every
/// request and passes it on, unchanged but for the request line's absolute form, to
/// `upstream` (a moto server, which picks the bucket from the Host header when the host
/// name carries it, and from the path otherwise). One request per connection.
struct RecordingProxy {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RecordingProxy {
    fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let upstream = upstream.clone();
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let _ = forward(client, &upstream, &log);
                });
            }
        });
        Self { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

fn forward(mut client: TcpStream, upstream: &str, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    // Absolute form (what a client sends to a proxy) to origin form.
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let mut host = String::new();
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("host:") {
            host = line[5..].trim().to_owned();
        }
        if lower.starts_with("connection:") || lower.starts_with("proxy-connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    log.lock().expect("lock").push(Seen {
        method: method.to_owned(),
        host,
        path: path_only.to_owned(),
        query: query.replace("%2F", "/").replace("%2f", "/"),
    });
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(out.as_bytes())?;
    let mut to_server = client.try_clone()?;
    let mut server_in = server.try_clone()?;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut to_server, &mut server_in);
    });
    std::io::copy(&mut server, &mut client)?;
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
    Ok(())
}

/// A plain GET on a loopback server: the body.
fn http_get(endpoint: &str, path: &str) -> String {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

/// A plain PUT with an empty body (creates a moto bucket).
fn http_put(endpoint: &str, path: &str) {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("response");
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains(" 200 "),
        "{reply}"
    );
}

/// The keys of a moto bucket under `prefix` (unsigned ListObjectsV2).
fn moto_keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let body = http_get(endpoint, &format!("/{bucket}?list-type=2&prefix={prefix}"));
    body.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_owned)
        .collect()
}

/// The worst defect a backup tool can have is writing outside the bucket it was given. With
/// an `s3Endpoint` and the chart's default `s3ForcePathStyle: false`, requests must carry
/// the bucket in the host name; with path style, in the path. A moto server behind a
/// recording proxy shows where every request went, and a bucket named like the prefix's
/// first segment (where the bug wrote) must stay empty.
#[test]
fn every_object_lands_in_the_given_bucket_with_either_addressing_style() {
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let decoy = common::unique("decoy");
    http_put(&moto, &format!("/{decoy}"));
    let proxy = RecordingProxy::start(&moto);
    // Host names that resolve nowhere: only the proxy can take these requests. (moto reads
    // a host name with dots as `<bucket>.<endpoint>`, so the path-style one has none.)
    for (style, endpoint, flags) in [
        ("virtual", "http://s3.catena.invalid:9000", &[][..]),
        (
            "path",
            "http://s3-catena-invalid:9000",
            &["--s3-force-path-style"][..],
        ),
    ] {
        let prefix = format!("{decoy}/{style}");
        let url = format!("s3://{}/{prefix}", common::BUCKET);
        let mut cmd = catena();
        cmd.env("HTTP_PROXY", proxy.url())
            .env("http_proxy", proxy.url())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .args(["backup", "--from", data.to_str().expect("utf8")])
            .args(["--to-path", &url, "--s3-endpoint", endpoint])
            .args(["--secret-name", "awscreds", "--secrets-dir"])
            .arg(&secrets)
            .args(flags);
        let o = cmd.output().expect("catena runs");
        assert!(o.status.success(), "{style}: {}", text(&o));
        let seen = proxy.take();
        assert!(seen.len() >= 6, "{style}: only {} requests", seen.len());
        for r in &seen {
            // Objects by their key; listings (and multipart completions) at the bucket,
            // with the prefix in the query.
            let (host, bucket_path) = match style {
                "virtual" => (
                    format!("{}.s3.catena.invalid:9000", common::BUCKET),
                    "/".to_owned(),
                ),
                _ => (
                    "s3-catena-invalid:9000".to_owned(),
                    format!("/{}", common::BUCKET),
                ),
            };
            assert_eq!(r.host, host, "{style}: {r:?}");
            let object_path = format!("{}/{prefix}/", bucket_path.trim_end_matches('/'));
            assert!(
                r.path.starts_with(&object_path)
                    || (r.path.trim_end_matches('/') == bucket_path.trim_end_matches('/')
                        && (r.query.contains(&format!("prefix={prefix}/"))
                            // A bulk delete names its keys in the body.
                            || (r.method == "POST" && r.query == "delete"))),
                "{style}: a request outside {}/{prefix}: {r:?}",
                common::BUCKET
            );
        }
        assert!(
            seen.iter().any(|r| r.method == "PUT"),
            "{style}: nothing was written"
        );
        let keys = moto_keys(&moto, common::BUCKET, &format!("{prefix}/"));
        for wanted in ["/neo4j/", "/system/", "/_runs/"] {
            assert!(
                keys.iter().any(|k| k.contains(wanted)),
                "{style}: no {wanted} object in {}: {keys:?}",
                common::BUCKET
            );
        }
    }
    assert_eq!(
        moto_keys(&moto, &decoy, ""),
        Vec::<String>::new(),
        "objects were written to the bucket named like the prefix"
    );

    // The probe reads its object back both ways and says which works.
    let o = catena()
        .env("HTTP_PROXY", proxy.url())
        .env("http_proxy", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args([
            "probe",
            "--to-path",
            &format!("s3://{}/{decoy}", common::BUCKET),
        ])
        .args(["--s3-endpoint", "http://s3-catena-invalid:9000"])
        .args(["--secret-name", "awscreds"])
        .arg("--secrets-dir")
        .arg(&secrets)
        .output()
        .expect("catena runs");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("virtual-hosted addressing: works")
            && out.contains("path-style addressing: works")
            && out.contains("bucket addressing"),
        "{out}"
    );
}

/// With an endpoint that is an IP address, the bucket cannot be in the host name: path
/// style is used whatever s3ForcePathStyle says, and probe says why.
#[test]
fn an_ip_endpoint_is_addressed_by_path() {
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let o = run(&[
        "probe",
        "--to-path",
        &format!("s3://{}/{}", common::BUCKET, common::unique("ip")),
        "--s3-endpoint",
        &moto,
        "--secret-name",
        "awscreds",
        "--secrets-dir",
        secrets.to_str().expect("utf8"),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("addressing: path-style") && out.contains("IP address"),
        "{out}"
    );
}

#[allow(dead_code)]
fn _uses(_: &Path) {}

/// A loopback HTTP server that answers every request with 403 (a metadata service that
/// has no token for this pod). Returns its `host:port`.
fn forbidding_metadata_service() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nConnection: close\r\n\r\nforbidden",
                );
            });
        }
    });
    addr
}

/// Every values file of the chart's page, unchanged. The S3 ones, pointed at moto by flags
/// (or the environment) that change only endpoint, TLS, CA and credential values, back up
/// (the aggregate ones aggregate what a backup wrote first); the local ones back up into a
/// directory standing in for the chart's /backups mount; the GCS and Azure ones fail with
/// their provider's own clear error, naming the credentials file or the workload-identity
/// settings, instead of a raw metadata-service answer.
#[test]
fn every_seed_values_file_runs_unchanged() {
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let metadata = forbidding_metadata_service();
    let mut seen = 0;
    let mut files: Vec<_> = std::fs::read_dir(crate::seeds())
        .expect("seeds")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let v = crate::values::Values::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = &v.backup;
        let provider = b.cloud_provider.clone().unwrap_or_default();
        let s3_keys = [
            &b.storage.s3_endpoint,
            &b.storage.minio_endpoint,
            &b.storage.s3_region,
        ]
        .iter()
        .any(|k| k.as_deref().is_some_and(|s| !s.is_empty()));
        let mut cmd = catena();
        cmd.args(["backup", "--values"])
            .arg(&path)
            .arg("--from")
            .arg(&data)
            .env("GCE_METADATA_HOST", &metadata)
            .env("GCE_METADATA_IP", &metadata)
            .env("IDENTITY_ENDPOINT", format!("http://{metadata}/token"))
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://{metadata}"),
            )
            .env("HOME", t.path())
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE");
        let o = if provider == "aws" || s3_keys {
            let url = format!("s3://{}/{}", common::BUCKET, common::unique("seed"));
            let point = |cmd: &mut std::process::Command| {
                if name == "backup-s3-endpoint-aws.yaml" {
                    // The environment overrides the file as flags do.
                    cmd.env("CATENA_S3_ENDPOINT", &moto)
                        .env("CATENA_S3_ENDPOINT_TLS", "false");
                } else {
                    cmd.args(["--s3-endpoint", &moto, "--s3-endpoint-tls", "false"]);
                }
                cmd.args([
                    "--to-path",
                    &url,
                    "--s3-ca-cert",
                    "",
                    "--s3-ca-secret-name",
                    "",
                ]);
                if v.service_account_name
                    .as_deref()
                    .is_some_and(|s| !s.is_empty())
                {
                    // Workload identity: the ambient credentials of the pod.
                    cmd.env("AWS_ACCESS_KEY_ID", "moto-key")
                        .env("AWS_SECRET_ACCESS_KEY", "moto-secret");
                } else {
                    cmd.args(["--secret-name", "awscreds", "--secrets-dir"])
                        .arg(&secrets);
                }
            };
            if v.aggregate_only() {
                // Something to aggregate: a FULL and a DIFF written with flags alone.
                for round in 0..2 {
                    std::fs::write(data.join("neo4j/round"), [round]).expect("write");
                    let mut first = catena();
                    first.args(["backup", "--from"]).arg(&data);
                    point(&mut first);
                    first
                        .env("AWS_ACCESS_KEY_ID", "moto-key")
                        .env("AWS_SECRET_ACCESS_KEY", "moto-secret");
                    let o = first.output().expect("catena runs");
                    assert!(o.status.success(), "{name}: {}", text(&o));
                }
            }
            point(&mut cmd);
            cmd.output().expect("catena runs")
        } else if provider.is_empty() {
            let dir = t.path().join(&name);
            if v.aggregate_only() {
                for round in 0..2 {
                    std::fs::write(data.join("neo4j/round"), [round]).expect("write");
                    let o = run(&[
                        "backup",
                        "--from",
                        data.to_str().expect("utf8"),
                        "--to-path",
                        dir.to_str().expect("utf8"),
                    ]);
                    assert!(o.status.success(), "{name}: {}", text(&o));
                }
            }
            cmd.arg("--to-path").arg(&dir);
            cmd.output().expect("catena runs")
        } else {
            let empty = t.path().join("no-secrets");
            std::fs::create_dir_all(&empty).expect("mkdir");
            cmd.arg("--secrets-dir").arg(&empty);
            let o = cmd.output().expect("catena runs");
            let out = text(&o);
            assert_eq!(o.status.code(), Some(1), "{name}: {out}");
            let wanted: &[&str] = match (provider.as_str(), b.storage.secret_name.as_deref()) {
                ("gcp", Some(s)) if !s.is_empty() => &["gcpcreds/credentials"],
                ("gcp", _) => &["no GCP credentials", "GOOGLE_APPLICATION_CREDENTIALS"],
                ("azure", Some(s)) if !s.is_empty() => &["azurecreds/credentials"],
                _ => &["no Azure credentials", "AZURE_FEDERATED_TOKEN_FILE"],
            };
            for w in wanted {
                assert!(out.contains(w), "{name}: no {w:?} in {out}");
            }
            assert!(!out.contains("panicked"), "{name}: {out}");
            seen += 1;
            continue;
        };
        let out = text(&o);
        assert!(o.status.success(), "{name}: {out}");
        if v.aggregate_only() {
            assert!(out.contains("aggregated into"), "{name}: {out}");
        } else {
            assert!(
                out.contains("neo4j: FULL") || out.contains("neo4j: DIFF"),
                "{name}: {out}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 17, "only {seen} values files");
}

/// Every storage key of the chart is a flag and an environment variable (the flags are
/// the keys of `StorageOverrides`, which refuses any other).
#[test]
fn every_storage_key_is_a_flag_and_a_variable() {
    let o = run(&["backup", "--help"]);
    let help = text(&o);
    let keys =
        serde_json::to_value(catena::storage_backends::StorageOverrides::default()).expect("json");
    for key in keys.as_object().expect("object").keys() {
        let mut flag = String::from("--");
        let mut env = String::from("CATENA_");
        let chars: Vec<char> = key.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            // s3CASecretName -> s3-ca-secret-name; s3EndpointTLS -> s3-endpoint-tls
            let boundary = c.is_ascii_uppercase()
                && i > 0
                && (chars[i - 1].is_ascii_lowercase()
                    || chars[i - 1].is_ascii_digit()
                    || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
            if boundary {
                flag.push('-');
                env.push('_');
            }
            flag.push(c.to_ascii_lowercase());
            env.push(c.to_ascii_uppercase());
        }
        assert!(help.contains(&flag), "no {flag} for {key} in: {help}");
        assert!(help.contains(&env), "no {env} for {key} in: {help}");
    }
}

/// Multipart uploads still open in the moto bucket under `prefix`.
pub(super) fn moto_open_uploads(endpoint: &str, prefix: &str) -> usize {
    http_get(
        endpoint,
        &format!("/{}?uploads&prefix={prefix}", common::BUCKET),
    )
    .matches("<Upload>")
    .count()
}

/// Sends `signal` (TERM or INT) to `child` once `ready` has shown on its stderr (and
/// `after` more), then returns its exit code, how long it took to exit and all it printed.
pub(super) fn signal_when(
    mut child: std::process::Child,
    ready: &str,
    after: std::time::Duration,
    signal: &str,
) -> (Option<i32>, std::time::Duration, String) {
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(ready) {
        let n = stderr.read(&mut buf).expect("read");
        assert!(n > 0, "it ended before {ready:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::sleep(after);
    let sent = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("read");
    let exit = child.wait().expect("wait");
    let took = sent.elapsed();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).expect("stdout");
    }
    (exit.code(), took, format!("{out}{seen}{rest}"))
}

/// Writes a live lock record for `db` held by a process on another host, as a running
/// writer elsewhere would have it.
fn hold_lock_elsewhere(endpoint: &str, prefix: &str, db: &str) {
    let now = jiff::Timestamp::now();
    let record = catena::lock::LockRecord {
        held: true,
        owner: catena::lock::LockOwner {
            host: "another-pod".into(),
            pid: 1,
            start: None,
            operation: "backup".into(),
            token: "elsewhere".into(),
        },
        written_at: now,
        expires_at: now + jiff::SignedDuration::from_hours(1),
    };
    let body = catena::chain_core::sealed::seal(&record);
    let addr = endpoint.trim_start_matches("http://");
    let path = format!(
        "/{}/{prefix}/_locks/{db}/{:020}.json",
        common::BUCKET,
        u64::MAX / 2
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("request");
    s.write_all(&body).expect("body");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("response");
    assert!(reply.contains(" 200 "), "{reply}");
}

/// Kubernetes stops a job with SIGTERM, then SIGKILL 30 s later; a person with Ctrl-C
/// (SIGINT). Every command that writes cancels, aborts its multipart upload, releases its
/// lock, prints one line saying what was left, and exits 143 (or 130) within 10 s; the
/// next run works at once.
#[test]
fn every_writing_command_stops_cleanly_on_sigterm_and_sigint() {
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("neo4j")).expect("mkdir");
    std::fs::write(data.join("neo4j/store"), common::data(48 << 20, 7, true)).expect("write");
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let prefix = common::unique("signals");
    let url = format!("s3://{}/{prefix}", common::BUCKET);
    let cmd = |args: &[&str]| {
        let mut c = catena();
        c.args(args)
            .args(["--s3-endpoint", &moto, "--secret-name", "awscreds"])
            .arg("--secrets-dir")
            .arg(&secrets)
            .args(["--parts-in-flight", "1", "--part-size-mib", "5"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let data_s = data.to_str().expect("utf8");
    let mut rows = Vec::new();
    let mut check =
        |what: &str, signal: &str, code: Option<i32>, took: std::time::Duration, out: &str| {
            let wanted = if signal == "TERM" { 143 } else { 130 };
            assert_eq!(code, Some(wanted), "{what} SIG{signal}: {out}");
            assert!(
                took < std::time::Duration::from_secs(10),
                "{what}: {took:?}"
            );
            assert_eq!(
                out.matches(&format!("interrupted by SIG{signal}:")).count(),
                1,
                "{what}: one line says what was left: {out}"
            );
            assert_eq!(
                moto_open_uploads(&moto, &prefix),
                0,
                "{what}: an upload left open"
            );
            rows.push(format!("{what} SIG{signal}: exit {wanted} in {took:.1?}"));
        };

    // How many artifacts inspect lists, and its output.
    let committed = || {
        let o = run(&[
            "inspect",
            "--from-path",
            &url,
            "--s3-endpoint",
            &moto,
            "--secret-name",
            "awscreds",
            "--secrets-dir",
            secrets.to_str().expect("utf8"),
            "--format",
            "json",
        ]);
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        (rows.as_array().map_or(usize::MAX, Vec::len), o)
    };

    // backup, mid-upload: nothing committed, then the next backup takes the lock at once.
    for signal in ["TERM", "INT"] {
        let child = cmd(&["backup", "--from", data_s, "--to-path", &url])
            .spawn()
            .expect("spawn");
        let (code, took, out) = signal_when(
            child,
            "backup neo4j: started",
            std::time::Duration::from_millis(300),
            signal,
        );
        check("backup", signal, code, took, &out);
        let (listed, o) = committed();
        assert_eq!(listed, 0, "nothing committed: {}", text(&o));
    }
    // The lock was released: a backup now succeeds without waiting; then a second one,
    // so that aggregate has a chain.
    for round in 0..2u8 {
        std::fs::write(data.join("neo4j/small"), [round]).expect("write");
        let o = cmd(&["backup", "--from", data_s, "--to-path", &url])
            .output()
            .expect("runs");
        assert!(o.status.success(), "after the stops: {}", text(&o));
    }

    // aggregate, mid-upload of the new FULL: nothing committed, chain intact.
    for signal in ["TERM", "INT"] {
        let child = cmd(&["aggregate", "neo4j", "--from-path", &url])
            .spawn()
            .expect("spawn");
        let (code, took, out) = signal_when(
            child,
            "aggregate neo4j: started",
            std::time::Duration::from_millis(300),
            signal,
        );
        check("aggregate", signal, code, took, &out);
        let (listed, o) = committed();
        assert_eq!(listed, 2, "the chain is as it was: {}", text(&o));
    }

    // restore, mid-download: the destination is not created, no staging directory stays.
    for signal in ["TERM", "INT"] {
        let dest = t.path().join("restored/neo4j");
        let child = cmd(&[
            "restore",
            "neo4j",
            "--from-path",
            &url,
            "--to",
            dest.to_str().expect("utf8"),
        ])
        .spawn()
        .expect("spawn");
        let (code, took, out) = signal_when(
            child,
            "restore neo4j: started",
            std::time::Duration::from_millis(50),
            signal,
        );
        check("restore", signal, code, took, &out);
        assert!(!dest.exists(), "restore left a destination");
        let left: Vec<_> = std::fs::read_dir(t.path().join("restored"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "restore left {left:?}");
    }

    // expire and gc, waiting for a lock another pod holds: the wait ends at the signal.
    hold_lock_elsewhere(&moto, &prefix, "neo4j");
    for (what, signal, args) in [
        (
            "expire",
            "TERM",
            &[
                "expire",
                "--from-path",
                &url,
                "--keep-last",
                "1",
                "--retry-lock",
                "10m",
            ][..],
        ),
        (
            "gc",
            "INT",
            &["gc", "--from-path", &url, "--retry-lock", "10m"][..],
        ),
        (
            "expire",
            "INT",
            &[
                "expire",
                "--from-path",
                &url,
                "--keep-last",
                "1",
                "--retry-lock",
                "10m",
            ][..],
        ),
        (
            "gc",
            "TERM",
            &["gc", "--from-path", &url, "--retry-lock", "10m"][..],
        ),
        (
            "backup",
            "TERM",
            &[
                "backup",
                "--from",
                data_s,
                "--to-path",
                &url,
                "--retry-lock",
                "10m",
            ][..],
        ),
    ] {
        let mut c = cmd(args);
        c.env("RUST_LOG", "catena=info");
        let child = c.spawn().expect("spawn");
        let (code, took, out) = signal_when(
            child,
            "waiting for the lock",
            std::time::Duration::from_millis(200),
            signal,
        );
        check(
            &format!("{what} (waiting for a lock)"),
            signal,
            code,
            took,
            &out,
        );
    }
    eprintln!("signals: {}", rows.join("; "));
}

/// `unlock` does not break the lock of a writer that is running on this host (that would
/// let a second writer in beside it) unless `--force`; the writer whose lock was broken
/// says so, not that its lease ran out, and commits nothing.
#[test]
fn unlock_refuses_a_running_holder_and_the_broken_writer_says_so() {
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("neo4j")).expect("mkdir");
    std::fs::write(data.join("neo4j/store"), common::data(48 << 20, 9, true)).expect("write");
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let url = format!("s3://{}/{}", common::BUCKET, common::unique("unlock"));
    let storage = |c: &mut std::process::Command| {
        c.args([
            "--s3-endpoint",
            &moto,
            "--secret-name",
            "awscreds",
            "--secrets-dir",
        ])
        .arg(&secrets);
    };
    let mut backup = catena();
    backup
        .args(["backup", "--from"])
        .arg(&data)
        .args([
            "--to-path",
            &url,
            "--parts-in-flight",
            "1",
            "--part-size-mib",
            "5",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    storage(&mut backup);
    let mut child = backup.spawn().expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("backup neo4j: started") {
        let n = stderr.read(&mut buf).expect("read");
        assert!(n > 0, "the backup ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut unlock = catena();
    unlock.args(["unlock", "neo4j", "--from-path", &url]);
    storage(&mut unlock);
    let o = unlock.output().expect("runs");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("running on this host") && out.contains("--force"),
        "{out}"
    );
    let mut force = catena();
    force.args(["unlock", "neo4j", "--from-path", &url, "--force"]);
    storage(&mut force);
    let o = force.output().expect("runs");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("broke the lock"), "{}", text(&o));
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("read");
    let exit = child.wait_with_output().expect("wait");
    let out = format!("{}{seen}{rest}", String::from_utf8_lossy(&exit.stdout));
    assert_eq!(exit.status.code(), Some(1), "{out}");
    assert!(out.contains("broken by `catena unlock`"), "{out}");
    assert!(!out.contains("lease ran out"), "{out}");
}

/// `backup --from DIR` without a list names every entry it does not back up and why; a
/// directory left out for its name fails the run (its data would be missing), a file is
/// noted; the run record lists them.
#[test]
fn backup_names_every_entry_it_does_not_back_up() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    std::fs::create_dir_all(data.join("bad name")).expect("mkdir");
    std::fs::write(data.join("bad name/store"), b"data").expect("write");
    std::fs::write(data.join("README"), b"not a database").expect("write");
    std::fs::create_dir_all(data.join("lost+found")).expect("mkdir");
    let repo = t.path().join("repo");
    let o = run(&[
        "backup",
        "--from",
        data.to_str().expect("utf8"),
        "--to-path",
        repo.to_str().expect("utf8"),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("neo4j: FULL") && out.contains("system: FULL"),
        "{out}"
    );
    assert!(out.contains("bad name: NOT BACKED UP:"), "{out}");
    assert!(
        out.contains("README: NOT BACKED UP: not a directory (noted)"),
        "{out}"
    );
    assert!(out.contains("lost+found: NOT BACKED UP:"), "{out}");
    let runs: Vec<_> = std::fs::read_dir(repo.join("_runs"))
        .expect("runs")
        .map(|e| e.expect("entry").path())
        .collect();
    let record = std::fs::read_to_string(&runs[0]).expect("record");
    assert!(
        record.contains("\"bad name\"") && record.contains("\"README\""),
        "{record}"
    );
    assert!(record.contains("\"ok\": false"), "{record}");
}

/// `--restore-until` takes exactly the times Catena prints: inspect's column (UTC, to the
/// microsecond, so backups within one second are told apart), the RFC 3339 of JSON, and
/// RFC 3339 with another offset. Absurd durations get an error, never an overflow.
#[test]
fn restore_until_takes_the_times_catena_prints() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("neo4j")).expect("mkdir");
    let repo = t.path().join("repo");
    let repo_s = repo.to_str().expect("utf8");
    for round in 0..3u8 {
        std::fs::write(data.join("neo4j/v"), [round]).expect("write");
        let o = run(&[
            "backup",
            "--from",
            data.to_str().expect("utf8"),
            "--to-path",
            repo_s,
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = run(&["inspect", "--from-path", repo_s, "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    let o = run(&["inspect", "--from-path", repo_s]);
    let table = text(&o);
    let shown: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .skip(2)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(shown.len(), 3, "{table}");
    let offset = |rfc3339: &str| {
        // The same instant written at +01:00.
        let ts: jiff::Timestamp = rfc3339.parse().expect("time");
        format!(
            "{}+01:00",
            (ts + jiff::SignedDuration::from_hours(1)).strftime("%Y-%m-%dT%H:%M:%S%.6f")
        )
    };
    for (k, bound) in [
        shown[2].clone(),
        rows[2]["committed_at"].as_str().expect("time").to_owned(),
        offset(rows[2]["committed_at"].as_str().expect("time")),
    ]
    .into_iter()
    .enumerate()
    {
        let into = t.path().join(format!("restored-{k}"));
        let o = run(&[
            "restore",
            "neo4j",
            "--from-path",
            repo_s,
            "--to",
            into.to_str().expect("utf8"),
            "--restore-until",
            &bound,
        ]);
        let out = text(&o);
        assert!(o.status.success(), "{bound}: {out}");
        assert!(
            out.contains(rows[1]["artifact"].as_str().expect("id")),
            "{bound} selects the second backup: {out}"
        );
        assert_eq!(std::fs::read(into.join("v")).expect("read"), [1]);
    }
    for args in [
        &[
            "expire",
            "--from-path",
            repo_s,
            "--keep-within",
            "99999999999999999w",
        ][..],
        &["expire", "--from-path", repo_s, "--keep-within", "5000000w"][..],
        &[
            "gc",
            "--from-path",
            repo_s,
            "--grace",
            "18446744073709551615s",
        ][..],
        &[
            "inspect",
            "--from-path",
            repo_s,
            "--retry-lock",
            "9999999999999d",
        ][..],
    ] {
        let o = run(args);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}");
        assert!(
            out.contains("longer than 100 years") || out.contains("number and a unit"),
            "{args:?}: {out}"
        );
        assert!(
            !out.contains("panicked") && !out.contains("overflow"),
            "{out}"
        );
    }
}

/// Errors and notes say what to do, once, in plain text or as JSON, never with a double
/// space or a terminal colour when nobody reads a terminal.
#[test]
fn errors_and_notes_say_what_to_do() {
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let repo = t.path().join("repo");
    let (data_s, repo_s) = (data.to_str().expect("utf8"), repo.to_str().expect("utf8"));
    let mut outputs = Vec::new();

    // A dry run never says "done".
    let o = run(&["backup", "--from", data_s, "--to-path", repo_s, "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("done"), "{}", text(&o));
    outputs.push(text(&o));

    // A failure is printed once.
    let o = run(&[
        "backup",
        "neo4j",
        "--from",
        data_s,
        "--to-path",
        repo_s,
        "--type",
        "DIFF",
        "--fallback-to-full",
        "false",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(
        out.matches("no earlier backup")
            .count()
            .max(out.matches("FAILED").count()),
        1,
        "{out}"
    );
    outputs.push(out);

    // With --format JSON, an error is a JSON object too.
    let o = run(&[
        "--format",
        "JSON",
        "restore",
        "nosuch",
        "--from-path",
        repo_s,
        "--to",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON error");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");

    // No terminal, no colours, whatever the log level.
    let o = catena()
        .args(["backup", "--from", data_s, "--to-path", repo_s])
        .env("RUST_LOG", "debug")
        .output()
        .expect("runs");
    assert!(o.status.success());
    assert!(!text(&o).contains('\u{1b}'), "ANSI colours: {}", text(&o));

    // The CA file is a CA file, not a credentials file.
    let empty = t.path().join("secrets");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let o = run(&[
        "probe",
        "--to-path",
        "s3://b/p",
        "--s3-endpoint",
        "https://s3.example.com",
        "--s3-ca-secret-name",
        "s3-ca",
        "--secrets-dir",
        empty.to_str().expect("utf8"),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("CA certificate file") && !out.contains("credentials file"),
        "{out}"
    );
    outputs.push(out);

    // Workload identity with no token: the settings to provide, not a raw 403.
    let metadata = forbidding_metadata_service();
    let o = catena()
        .args(["backup", "--from", data_s, "--to-path"])
        .arg(format!("s3://{}/{}", common::BUCKET, common::unique("wi")))
        .args([
            "--s3-endpoint",
            &moto,
            "--service-account-name",
            "backup-sa",
        ])
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{metadata}"),
        )
        .env("HOME", t.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .output()
        .expect("runs");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("no AWS credentials") && out.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{out}"
    );
    outputs.push(out);

    // aggregate says what in the values file does not apply, like backup; keys read but
    // without effect are named.
    let values = t.path().join("values.yaml");
    std::fs::write(
        &values,
        "neo4j:\n  image: \"neo4j/helm-charts-backup\"\nbackup:\n  aggregate:\n    enabled: true\n    database: \"neo4j\"\nconsistencyCheck:\n  threads: 4\n  maxOffHeapMemory: \"1g\"\n",
    )
    .expect("write");
    let o = run(&[
        "aggregate",
        "--from-path",
        repo_s,
        "--values",
        values.to_str().expect("utf8"),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("not applicable outside Kubernetes") && out.contains("neo4j.image"),
        "{out}"
    );
    assert!(
        out.contains("consistencyCheck.maxOffHeapMemory / threads"),
        "{out}"
    );
    outputs.push(out);

    // Expire names its flags.
    let o = run(&["expire", "--from-path", repo_s]);
    assert!(text(&o).contains("--keep-last"), "{}", text(&o));
    outputs.push(text(&o));

    for out in outputs {
        for line in out.lines() {
            assert!(
                !line.trim_start().contains("  "),
                "a double space: {line:?}"
            );
        }
    }
}

/// `schedule` stops the run in flight on SIGTERM as backup does (before, its own token
/// never reached the run, which went on for 20-25 s), goes on when its history record
/// cannot be written, and reads an aggregate-only values file's repository from
/// `aggregate.fromPath`, as `aggregate --values` does.
#[test]
fn schedule_cancels_its_run_keeps_going_without_history_and_honours_from_path() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    let repo = t.path().join("repo");
    let repo_s = repo.to_str().expect("utf8");

    // An aggregate-only values file: its repository is aggregate.fromPath.
    for round in 0..2u8 {
        std::fs::write(data.join("neo4j/round"), [round]).expect("write");
        let o = run(&[
            "backup",
            "--from",
            data.to_str().expect("utf8"),
            "--to-path",
            repo_s,
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let values = t.path().join("aggregate.yaml");
    std::fs::write(
        &values,
        format!("backup:\n  aggregate:\n    enabled: true\n    fromPath: \"{repo_s}\"\n    database: \"neo4j\"\n"),
    )
    .expect("write");
    let o = run(&[
        "schedule",
        "--values",
        values.to_str().expect("utf8"),
        "--max-runs",
        "1",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("aggregated into"), "{out}");
    assert!(
        repo.join("_jobs").is_dir(),
        "the history is beside the backups it ran on"
    );

    // The history cannot be written (a file where its prefix should be): the runs go on.
    let other = t.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("_jobs"), b"in the way").expect("write");
    let plain = t.path().join("plain.yaml");
    std::fs::write(&plain, "backup:\n  database: \"neo4j\"\n").expect("write");
    let o = run(&[
        "schedule",
        "--values",
        plain.to_str().expect("utf8"),
        "--from",
        data.to_str().expect("utf8"),
        "--to-path",
        other.to_str().expect("utf8"),
        "--max-runs",
        "2",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(
        out.matches("could not write the job history record")
            .count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.matches("neo4j: FULL").count() + out.matches("neo4j: DIFF").count(),
        2,
        "both runs backed up: {out}"
    );

    // SIGTERM during a run: the run is cancelled, like a backup's.
    let Some(moto) = common::server_var("CATENA_TEST_MOTO_ENDPOINT", "moto") else {
        return;
    };
    let big = t.path().join("big");
    std::fs::create_dir_all(big.join("neo4j")).expect("mkdir");
    std::fs::write(big.join("neo4j/store"), common::data(48 << 20, 11, true)).expect("write");
    let secrets = t.path().join("secrets");
    common::aws_secret(&secrets, "awscreds", "moto-key", "moto-secret", "us-east-1");
    let prefix = common::unique("schedule");
    let child = catena()
        .args(["schedule", "--values"])
        .arg(&plain)
        .arg("--from")
        .arg(&big)
        .args(["--to-path", &format!("s3://{}/{prefix}", common::BUCKET)])
        .args([
            "--s3-endpoint",
            &moto,
            "--secret-name",
            "awscreds",
            "--secrets-dir",
        ])
        .arg(&secrets)
        .args([
            "--parts-in-flight",
            "1",
            "--part-size-mib",
            "5",
            "--max-runs",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (code, took, out) = signal_when(
        child,
        "backup neo4j: started",
        std::time::Duration::from_millis(300),
        "TERM",
    );
    assert_eq!(code, Some(143), "{out}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    assert!(
        out.contains("interrupted by SIGTERM: the scheduler stopped"),
        "{out}"
    );
    assert_eq!(
        moto_open_uploads(&moto, &prefix),
        0,
        "an upload was left open"
    );
}

/// Runs `catena` with `CATENA_BLOCKING_THREADS` set; a run that has not ended after five
/// minutes is killed and reported as stuck (a pipeline that waited on a second blocking
/// thread would hang here instead of failing). Its output goes to files, so that a full
/// pipe cannot stall it either.
fn run_with_blocking_threads(threads: &str, args: &[&str]) -> std::process::Output {
    let out = tempfile::tempfile().expect("stdout file");
    let err = tempfile::tempfile().expect("stderr file");
    let mut child = catena()
        .env("CATENA_BLOCKING_THREADS", threads)
        .args(args)
        .stdout(out.try_clone().expect("clone"))
        .stderr(err.try_clone().expect("clone"))
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("catena {args:?} with {threads} blocking thread(s) is stuck");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let read = |mut f: std::fs::File| {
        use std::io::Seek;
        f.rewind().expect("rewind");
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).expect("read");
        bytes
    };
    std::process::Output {
        status,
        stdout: read(out),
        stderr: read(err),
    }
}

#[test]
fn one_blocking_thread_backs_up_and_restores_and_a_bad_count_is_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    make_data(&data);
    // Small files too, so that the batched small-file paths run (backup and restore).
    let small = data.join("neo4j/small");
    std::fs::create_dir_all(&small).expect("mkdir");
    for i in 0..300u32 {
        let body: Vec<u8> = (0..(i * 37 % 5000 + 1)).map(|j| (i ^ j) as u8).collect();
        std::fs::write(small.join(format!("f{i:03}")), body).expect("write");
    }
    let (repo, out) = (t.path().join("repo"), t.path().join("restored"));
    let (repo_s, data_s) = (repo.to_str().expect("utf8"), data.to_str().expect("utf8"));
    let backup = ["backup", "neo4j", "--from", data_s, "--to-path", repo_s];
    let o = run_with_blocking_threads("1", &backup);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(small.join("f007"), b"changed").expect("write");
    let o = run_with_blocking_threads("1", &[&backup[..], &["--type", "DIFF"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let to = out.to_str().expect("utf8");
    let restore = ["restore", "neo4j", "--from-path", repo_s, "--to", to];
    let o = run_with_blocking_threads("1", &restore);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(out.join("store")).expect("read"),
        std::fs::read(data.join("neo4j/store")).expect("read")
    );
    for i in 0..300u32 {
        let name = format!("small/f{i:03}");
        assert_eq!(
            std::fs::read(out.join(&name)).expect("restored"),
            std::fs::read(data.join("neo4j").join(&name)).expect("source"),
            "{name}"
        );
    }

    // A count that is not a whole number from 1 up is refused before anything runs, naming
    // the variable; nothing is written.
    for bad in ["0", "-1", "many", ""] {
        let o = run_with_blocking_threads(bad, &["backup", "--from", data_s, "--to-path", repo_s]);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {}", text(&o));
        assert!(
            text(&o).contains("CATENA_BLOCKING_THREADS must be a whole number from 1 up"),
            "{bad:?}: {}",
            text(&o)
        );
    }
    let o = run(&["inspect", "--from-path", repo_s, "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect JSON");
    assert_eq!(
        rows.as_array().expect("rows").len(),
        2,
        "FULL and DIFF only"
    );
}
