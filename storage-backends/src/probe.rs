//! The endpoint self-test: does this store do what Catena relies on?
//!
//! Catena's atomic commit rests on create-only puts; some S3-compatible servers accept the
//! conditional header and overwrite anyway (Garage, s3rver). [`probe`] finds out, with a
//! handful of small objects under `_probe/<random>/`, which it removes afterwards.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;

use crate::upload::{ObjectWriter, UploadOptions};

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum CheckOutcome {
    /// It works.
    Ok,
    /// The store accepted the request but did not do it (for create-only: it overwrote).
    Ignored(String),
    /// The request failed.
    Failed(String),
}

impl CheckOutcome {
    /// Whether it works.
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckOutcome::Ok)
    }
}

/// What the store supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    /// A second create-only put of the same key fails.
    pub create_only_put: CheckOutcome,
    /// A multipart upload of two parts completes and reads back.
    pub multipart_upload: CheckOutcome,
    /// A ranged get returns exactly the range.
    pub ranged_get: CheckOutcome,
    /// A listing finds what was written.
    pub list: CheckOutcome,
    /// Deleting works and the object is gone.
    pub delete: CheckOutcome,
}

impl ProbeReport {
    /// Whether everything Catena needs works.
    pub fn all_ok(&self) -> bool {
        [
            &self.create_only_put,
            &self.multipart_upload,
            &self.ranged_get,
            &self.list,
            &self.delete,
        ]
        .iter()
        .all(|c| c.is_ok())
    }

    /// One line per unsupported feature, with what it means for the user.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.create_only_put {
            CheckOutcome::Ok => {}
            CheckOutcome::Ignored(d) => out.push(format!("create-only put is IGNORED ({d}): concurrent writers could overwrite each other's manifests; run one writer at a time against this store")),
            CheckOutcome::Failed(d) => out.push(format!("create-only put failed: {d}")),
        }
        for (name, c) in [
            ("multipart upload", &self.multipart_upload),
            ("ranged get", &self.ranged_get),
            ("list", &self.list),
            ("delete", &self.delete),
        ] {
            if let CheckOutcome::Failed(d) | CheckOutcome::Ignored(d) = c {
                out.push(format!("{name}: {d}"));
            }
        }
        out
    }
}

fn failed(e: impl std::fmt::Display) -> CheckOutcome {
    CheckOutcome::Failed(e.to_string())
}

/// Runs the self-test against `store`. Leaves nothing behind when deletes work.
pub async fn probe(store: Arc<dyn ObjectStore>) -> ProbeReport {
    let base = Path::from(format!(
        "{}/{:016x}",
        crate::layout::PROBE_PREFIX,
        rand::random::<u64>()
    ));
    let create = base.clone().join("create-only");
    let create_opts = || PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };

    let create_only_put = match store
        .put_opts(&create, PutPayload::from_static(b"first"), create_opts())
        .await
    {
        Err(e) => failed(e),
        Ok(_) => match store
            .put_opts(&create, PutPayload::from_static(b"second"), create_opts())
            .await
        {
            Err(object_store::Error::AlreadyExists { .. }) => CheckOutcome::Ok,
            Err(e) => failed(format!(
                "the second put failed with another error than 'already exists': {e}"
            )),
            Ok(_) => {
                let now = match store.get(&create).await {
                    Ok(r) => r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                CheckOutcome::Ignored(if now == b"second" {
                    "the second create-only put overwrote the first".into()
                } else {
                    "the second create-only put was accepted".into()
                })
            }
        },
    };

    let multi = base.clone().join("multipart");
    let options = UploadOptions {
        parts_in_flight: 2,
        part_size: crate::upload::MIN_PART_SIZE,
        ..UploadOptions::default()
    };
    let payload: Vec<u8> = (0..(crate::upload::MIN_PART_SIZE + 1000))
        .map(|i| (i % 251) as u8)
        .collect();
    let multipart_upload = {
        let mut w = ObjectWriter::new(Arc::clone(&store), multi.clone(), &options, None);
        match w.write(&payload).await {
            Err(e) => {
                w.abort().await;
                failed(e)
            }
            Ok(()) => match w.finish().await {
                Err(e) => failed(e),
                Ok(written) if written.size != payload.len() as u64 => failed("size differs"),
                Ok(_) => match store.get(&multi).await {
                    Ok(r) => match r.bytes().await {
                        Ok(b) if b == payload => CheckOutcome::Ok,
                        Ok(_) => failed("the object read back differs from what was uploaded"),
                        Err(e) => failed(e),
                    },
                    Err(e) => failed(e),
                },
            },
        }
    };

    let ranged_get = match store.get_range(&multi, 1000..1100).await {
        Ok(b) if b.as_ref() == &payload[1000..1100] => CheckOutcome::Ok,
        Ok(b) => failed(format!(
            "asked for 100 bytes at 1000, got {} other bytes",
            b.len()
        )),
        Err(e) => failed(e),
    };

    let list = match store.list(Some(&base)).try_collect::<Vec<_>>().await {
        Ok(items) => {
            let wrote_create = !matches!(create_only_put, CheckOutcome::Failed(_));
            let wrote_multi = multipart_upload.is_ok();
            let has = |k: &Path| items.iter().any(|m| &m.location == k);
            if (!wrote_create || has(&create)) && (!wrote_multi || has(&multi)) {
                CheckOutcome::Ok
            } else {
                failed(format!("the listing of {base} misses objects just written"))
            }
        }
        Err(e) => failed(e),
    };

    let mut delete = CheckOutcome::Ok;
    for key in [&create, &multi] {
        match store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => delete = failed(e),
        }
    }
    if delete.is_ok() && store.head(&create).await.is_ok() {
        delete = CheckOutcome::Ignored("the object is still there after delete".into());
    }
    ProbeReport {
        create_only_put,
        multipart_upload,
        ranged_get,
        list,
        delete,
    }
}

/// Which ways of naming the bucket work on an S3 endpoint (see [`crate::Addressing`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressingReport {
    /// The way the configuration uses.
    pub configured: crate::Addressing,
    /// A probe object written the configured way reads back by `<bucket>.<host>/<key>`.
    pub virtual_hosted: CheckOutcome,
    /// It reads back by `<endpoint>/<bucket>/<key>`.
    pub path_style: CheckOutcome,
}

impl AddressingReport {
    /// Whether the configured way reaches the bucket it was given: the object it wrote is
    /// found there by the other way too, or by path style, which always names the bucket.
    pub fn configured_works(&self) -> bool {
        self.path_style.is_ok()
            && (self.configured == crate::Addressing::Path || self.virtual_hosted.is_ok())
    }

    /// One line per finding that needs action.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.path_style.is_ok() && self.virtual_hosted.is_ok() {
            out.push(format!(
                "the probe object written {} was not found by path-style addressing: requests may not be reaching the bucket you gave; check s3Endpoint and s3ForcePathStyle",
                self.configured
            ));
        } else if !self.configured_works() {
            out.push(format!(
                "{} addressing does not work on this endpoint ({}){}",
                self.configured,
                match (&self.virtual_hosted, &self.path_style) {
                    (CheckOutcome::Failed(d) | CheckOutcome::Ignored(d), _)
                        if self.configured == crate::Addressing::VirtualHosted =>
                        d.clone(),
                    (_, CheckOutcome::Failed(d) | CheckOutcome::Ignored(d)) => d.clone(),
                    _ => String::new(),
                },
                if self.configured == crate::Addressing::VirtualHosted && self.path_style.is_ok() {
                    "; set s3ForcePathStyle: true"
                } else {
                    ""
                }
            ));
        }
        out
    }
}

/// For an S3 store with an endpoint: writes a probe object the configured way and reads it
/// back by virtual-hosted and by path-style addressing, so that a configuration that sends
/// requests to another bucket than the one given is found before any backup is written
/// there. `None` for other stores and for AWS itself (no endpoint).
pub async fn probe_addressing(config: &crate::StorageConfig) -> Option<AddressingReport> {
    if config.cloud_provider != crate::CloudProvider::Aws
        || (config
            .s3_endpoint
            .as_deref()
            .unwrap_or("")
            .trim()
            .is_empty()
            && config
                .minio_endpoint
                .as_deref()
                .unwrap_or("")
                .trim()
                .is_empty())
    {
        return None;
    }
    let configured = match config.build().await {
        Ok(s) => s,
        Err(e) => {
            return Some(AddressingReport {
                configured: crate::Addressing::Path,
                virtual_hosted: failed(&e),
                path_style: failed(&e),
            });
        }
    };
    let addressing = if configured
        .settings
        .iter()
        .any(|(k, v)| k == "addressing" && v.starts_with("virtual"))
    {
        crate::Addressing::VirtualHosted
    } else {
        crate::Addressing::Path
    };
    let key = Path::from(format!(
        "{}/{:016x}/addressing",
        crate::layout::PROBE_PREFIX,
        rand::random::<u64>()
    ));
    let body = format!("catena addressing probe {key}");
    if let Err(e) = configured
        .store
        .put_opts(
            &key,
            PutPayload::from(body.clone().into_bytes()),
            PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            },
        )
        .await
    {
        let why = failed(format!("the probe object could not be written: {e}"));
        return Some(AddressingReport {
            configured: addressing,
            virtual_hosted: why.clone(),
            path_style: why,
        });
    }
    let mut outcomes = Vec::new();
    for way in [crate::Addressing::VirtualHosted, crate::Addressing::Path] {
        let outcome = match config.build_addressed(way).await {
            Err(e) => failed(e),
            Ok(s) => match s.store.get(&key).await {
                Ok(r) => match r.bytes().await {
                    Ok(b) if b.as_ref() == body.as_bytes() => CheckOutcome::Ok,
                    Ok(_) => failed("another object answered under the probe's key"),
                    Err(e) => failed(e),
                },
                Err(object_store::Error::NotFound { .. }) => failed(format!(
                    "the probe object is not there when addressed {way}: the requests went to another bucket or endpoint"
                )),
                Err(e) => failed(e),
            },
        };
        outcomes.push(outcome);
    }
    let _ = configured.store.delete(&key).await;
    let path_style = outcomes.pop().expect("two outcomes");
    let virtual_hosted = outcomes.pop().expect("two outcomes");
    Some(AddressingReport {
        configured: addressing,
        virtual_hosted,
        path_style,
    })
}

/// Whether the store's ranged server-side copy (see [`crate::assemble`]) works.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerCopyReport {
    /// How the store copies (`S3 UploadPartCopy`), `None` where Catena has no server copy
    /// for it (aggregate then copies through the client).
    pub method: Option<String>,
    /// Two ranges of a probe object, swapped by the server copy, read back exactly.
    pub outcome: CheckOutcome,
}

impl ServerCopyReport {
    /// The line `catena probe` prints.
    pub fn line(&self) -> String {
        match (&self.method, &self.outcome) {
            (None, _) => "ranged server-side copy: none for this store; aggregate copies the records through the client".into(),
            (Some(m), CheckOutcome::Ok) => format!("ranged server-side copy: works ({m}); aggregate copies on the server"),
            (Some(m), CheckOutcome::Failed(d) | CheckOutcome::Ignored(d)) => format!("ranged server-side copy ({m}) does not work: {d}; `aggregate --copy auto` falls back to the client only where the store has none, so use `--copy client` here"),
        }
    }
}

/// Tests `storage`'s server copy: writes a probe object of a little more than one S3
/// minimum part, has the store assemble a new object from two of its ranges in swapped
/// order (the first part at the minimum part size, the last short), reads it back and
/// compares; removes both objects.
pub async fn probe_server_copy(storage: &crate::Storage) -> ServerCopyReport {
    let Some(copy) = &storage.server_copy else {
        return ServerCopyReport {
            method: None,
            outcome: CheckOutcome::Ok,
        };
    };
    let store = &storage.store;
    let base = Path::from(format!(
        "{}/{:016x}",
        crate::layout::PROBE_PREFIX,
        rand::random::<u64>()
    ));
    let (source, dest) = (base.clone().join("copy-source"), base.join("copy-dest"));
    let min = chain_core::PartLimits::S3.min_part;
    let payload: Vec<u8> = (0..min + 1000).map(|i| (i % 253) as u8).collect();
    let (first, second) = (1000..min + 1000, 0..1000);
    let mut expected = payload[1000..].to_vec();
    expected.extend_from_slice(&payload[..1000]);
    let plan = chain_core::AssemblyPlan {
        blocks: Vec::new(),
        segments: Vec::new(),
        parts: vec![
            chain_core::Part::Copy {
                source: 0,
                range: first,
            },
            chain_core::Part::Copy {
                source: 0,
                range: second,
            },
        ],
        size: expected.len() as u64,
        server_bytes: expected.len() as u64,
        client_bytes: 0,
    };
    let outcome = match store.put(&source, PutPayload::from(payload)).await {
        Err(e) => failed(e),
        Ok(_) => {
            let cancel = tokio_util::sync::CancellationToken::new();
            let job = crate::assemble::AssemblyJob {
                store,
                dest: &dest,
                sources: std::slice::from_ref(&source),
                plan: &plan,
                cancel: &cancel,
            };
            match copy.assemble(&job).await {
                Err(e) => failed(e),
                Ok(()) => match store.get(&dest).await {
                    Ok(r) => match r.bytes().await {
                        Ok(b) if b.as_ref() == expected.as_slice() => CheckOutcome::Ok,
                        Ok(b) => failed(format!(
                            "the copied object holds {} bytes other than the ranges asked for",
                            b.len()
                        )),
                        Err(e) => failed(e),
                    },
                    Err(e) => failed(e),
                },
            }
        }
    };
    for key in [&source, &dest] {
        let _ = store.delete(key).await;
    }
    ServerCopyReport {
        method: Some(copy.method().to_owned()),
        outcome,
    }
}
