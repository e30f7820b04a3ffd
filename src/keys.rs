//! Encrypted repositories: opening one with its passphrase or key file, creating one at its
//! first backup, and managing its key slots (`catena key list|add|remove|passwd`).
//!
//! A repository is plain or encrypted, decided at its first backup and recorded in its
//! config object (`_config.json`, [`chain_core::crypto::RepoConfig`]). An encrypted
//! repository's master key lives only wrapped in key slots under `_keys/`, one per
//! passphrase or key file; adding or removing a slot never re-encrypts data. Formats and
//! algorithms: `docs/FORMAT.md` ("Encryption"); why these: `docs/DESIGN.md`.
//!
//! ```no_run
//! # async fn demo(repo: catena::Repository) -> Result<(), catena::Error> {
//! use catena::chain_core::Secret;
//! let secret = Secret::passphrase("correct horse battery staple")?;
//! // The first backup of an empty repository given a secret creates it encrypted;
//! // every later command opens it with a secret that opens one of its slots.
//! let repo = repo.open(Some(&secret), true).await?;
//! assert!(repo.key().is_some());
//! # Ok(()) }
//! ```

use std::sync::Arc;

use bytes::Bytes;
use chain_core::crypto::{
    Argon2Params, CONFIG_KEY, Encryption, KEYS_PREFIX, KeyError, KeySlot, RecordCipher, RepoConfig,
    RepoKey, Secret, SlotKind,
};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::Serialize;

use crate::{Error, Repository};

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        Error::Encryption(e.to_string())
    }
}

/// A key slot as `catena key list` shows it: no key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeySlotInfo {
    /// The slot's id.
    pub id: String,
    /// What opens it.
    pub kind: SlotKind,
    /// Argon2id's cost, for a passphrase slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2id: Option<Argon2Params>,
    /// When it was added.
    pub created_at: jiff::Timestamp,
    /// Whether the secret given to this command opened this slot.
    pub current: bool,
}

pub(crate) const KEY_NEEDED: &str = "give its passphrase or key file (--passphrase-file, --key-file, --encryption-secret-name, or CATENA_PASSPHRASE)";

impl Repository {
    /// The repository's key, when it is encrypted and was opened.
    pub fn key(&self) -> Option<&Arc<RepoKey>> {
        self.encryption.key.as_ref()
    }

    /// Reads the config object: `None` for a repository without one (plain).
    pub async fn config(&self) -> Result<Option<RepoConfig>, Error> {
        let key = Path::from(CONFIG_KEY);
        let bytes = match self.store().get(&key).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| storage_backends::Error::store("reading", &key, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(storage_backends::Error::store("reading", &key, e).into()),
        };
        Ok(Some(RepoConfig::from_json(&bytes)?))
    }

    /// The repository's key slots, by id. An object under `_keys/` that is not a usable slot
    /// is passed over with a warning naming it.
    pub async fn key_slots(&self) -> Result<Vec<KeySlot>, Error> {
        let metas = self.list(&Path::from(KEYS_PREFIX)).await?;
        let mut slots = Vec::new();
        for meta in metas {
            if meta.size > chain_core::sealed::MAX_RECORD_LEN as u64 {
                return Err(Error::Encryption(format!(
                    "{} is {} bytes, not a key slot; remove it",
                    meta.location, meta.size
                )));
            }
            let bytes = match self.store().get(&meta.location).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map_err(|e| storage_backends::Error::store("reading", &meta.location, e))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(storage_backends::Error::store("reading", &meta.location, e).into());
                }
            };
            // An object under _keys/ that is not a slot of its own name (damaged, or written
            // by someone else) opens nothing; it is named and passed over, so that it cannot
            // keep the repository's real slots from opening.
            match KeySlot::from_json(&bytes) {
                Ok(slot) if slot.key() == meta.location.as_ref() => slots.push(slot),
                Ok(slot) => tracing::warn!(
                    key = %meta.location,
                    slot = %slot.id,
                    "this object holds another slot's id (moved by hand?); it is passed over: remove it"
                ),
                Err(e) => tracing::warn!(
                    key = %meta.location,
                    error = %e,
                    "this object is not a usable key slot; it is passed over: remove it"
                ),
            }
        }
        slots.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(slots)
    }

    /// Opens the repository as it is: plain, or encrypted and opened with `secret`. With
    /// `create`, a repository that holds nothing yet and is given a secret becomes an
    /// encrypted one (the first backup's case). Refused: an encrypted repository without a
    /// secret, a secret that opens no slot, a plain repository given a secret.
    pub async fn open(self, secret: Option<&Secret>, create: bool) -> Result<Self, Error> {
        let config = self.config().await?;
        let encrypted = config.as_ref().filter(|c| c.encryption != Encryption::None);
        match (encrypted, secret) {
            (None, None) => Ok(self.checked(None, None)),
            (Some(_), None) => Err(Error::Encryption(format!(
                "{} is an encrypted repository; {KEY_NEEDED}",
                self.description()
            ))),
            (Some(config), Some(secret)) => {
                let slots = self.key_slots().await?;
                let secret = secret.clone();
                let config = config.clone();
                let (key, slot) = tokio::task::spawn_blocking(move || {
                    chain_core::crypto::open_slots(&config, &slots, &secret)
                })
                .await
                .map_err(|e| Error::Encryption(format!("opening the key slots: {e}")))??;
                Ok(self.checked(Some(Arc::new(key)), Some(slot)))
            }
            (None, Some(secret)) => {
                if create && config.is_none() && self.is_empty().await? {
                    self.create_encrypted(secret, Argon2Params::default()).await
                } else {
                    Err(Error::Encryption(format!(
                        "{} is a plain repository (not encrypted), but a passphrase or key file was given; an existing repository stays as it was created: drop the passphrase or key file, or back up to a new location",
                        self.description()
                    )))
                }
            }
        }
    }

    fn checked(mut self, key: Option<Arc<RepoKey>>, slot: Option<String>) -> Self {
        self.encryption = Arc::new(crate::repo::EncryptionState {
            key,
            slot,
            checked: tokio::sync::OnceCell::new_with(Some(())),
        });
        self
    }

    /// Whether the repository holds no database and no key slot.
    async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.databases().await?.is_empty() && self.key_slots().await?.is_empty())
    }

    /// Makes an empty repository an encrypted one: writes a slot for `secret` (Argon2id at
    /// `params` for a passphrase), then the config object, create-only (two writers racing
    /// for the same new repository: one config wins, the loser's slot opens nothing and
    /// it fails with "no key slot opens"). Returns the repository opened with its new key.
    pub async fn create_encrypted(
        self,
        secret: &Secret,
        params: Argon2Params,
    ) -> Result<Self, Error> {
        let cipher = RecordCipher::Xaes256Gcm;
        let config = RepoConfig::new_encrypted(cipher, jiff::Timestamp::now());
        let key = RepoKey::generate(&config.repository, cipher);
        let slot = self.write_slot(&key, secret, params).await?;
        let config_key = Path::from(CONFIG_KEY);
        match self
            .store()
            .put_opts(
                &config_key,
                Bytes::from(config.to_json()).into(),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let _ = self.store().delete(&Path::from(slot.key())).await;
                return Err(Error::Encryption(format!(
                    "another process created {} at the same moment; run the command again",
                    self.description()
                )));
            }
            Err(e) => return Err(storage_backends::Error::store("writing", &config_key, e).into()),
        }
        tracing::info!(repository = %config.repository, slot = %slot.id, "created an encrypted repository");
        Ok(self.checked(Some(Arc::new(key)), Some(slot.id)))
    }

    async fn write_slot(
        &self,
        key: &RepoKey,
        secret: &Secret,
        params: Argon2Params,
    ) -> Result<KeySlot, Error> {
        let (key, secret) = (key.clone(), secret.clone());
        let slot = tokio::task::spawn_blocking(move || {
            KeySlot::wrap(&key, &secret, params, jiff::Timestamp::now())
        })
        .await
        .map_err(|e| Error::Encryption(format!("wrapping the key: {e}")))??;
        let at = Path::from(slot.key());
        self.store()
            .put_opts(
                &at,
                Bytes::from(slot.to_json()).into(),
                PutOptions::from(PutMode::Create),
            )
            .await
            .map_err(|e| storage_backends::Error::store("writing", &at, e))?;
        Ok(slot)
    }

    /// Checks once per repository value that its encryption is what was opened: the engine
    /// calls it before reading any database, so a repository built without
    /// [`Repository::open`] is refused when it is encrypted instead of being written plain.
    pub(crate) async fn ensure_opened(&self) -> Result<(), Error> {
        self.encryption
            .checked
            .get_or_try_init(|| async {
                let config = self.config().await?;
                let encrypted = config.filter(|c| c.encryption != Encryption::None);
                match (&encrypted, &self.encryption.key) {
                    (None, None) => Ok(()),
                    (Some(_), None) => Err(Error::Encryption(format!(
                        "{} is an encrypted repository; {KEY_NEEDED}",
                        self.description()
                    ))),
                    (Some(c), Some(k)) if c.repository == k.repository() => Ok(()),
                    (Some(_), Some(_)) => Err(Error::Encryption(format!(
                        "the key given belongs to another repository than {}",
                        self.description()
                    ))),
                    (None, Some(_)) => Err(Error::Encryption(format!(
                        "{} has no config object (_config.json), so it is not an encrypted repository, but a key was given: if it was encrypted, its config object was removed; restore it from a copy",
                        self.description()
                    ))),
                }
            })
            .await
            .map(|_| ())
    }

    /// `upload` with the repository's key (blocks are encrypted in an encrypted repository).
    pub(crate) fn upload_options(
        &self,
        upload: &storage_backends::upload::UploadOptions,
    ) -> storage_backends::upload::UploadOptions {
        storage_backends::upload::UploadOptions {
            key: self.key().cloned(),
            ..upload.clone()
        }
    }

    fn opened_key(&self, command: &str) -> Result<&Arc<RepoKey>, Error> {
        self.key().ok_or_else(|| {
            Error::Encryption(format!(
                "`catena key {command}` works on an encrypted repository opened with one of its passphrases or key files; {KEY_NEEDED}"
            ))
        })
    }
}

/// The repository's key slots, for people (`catena key list`).
pub async fn list_keys(repo: &Repository) -> Result<Vec<KeySlotInfo>, Error> {
    repo.opened_key("list")?;
    Ok(repo
        .key_slots()
        .await?
        .into_iter()
        .map(|s| KeySlotInfo {
            current: repo.encryption.slot.as_deref() == Some(s.id.as_str()),
            id: s.id,
            kind: s.kind,
            argon2id: s.argon2id,
            created_at: s.created_at,
        })
        .collect())
}

/// Adds a slot opened by `secret` to an opened encrypted repository; returns its id.
pub async fn add_key(
    repo: &Repository,
    secret: &Secret,
    params: Argon2Params,
) -> Result<String, Error> {
    let key = repo.opened_key("add")?;
    Ok(repo.write_slot(key, secret, params).await?.id)
}

/// Removes the slot `id`. The last slot is never removed: without one the data could not
/// be read again.
pub async fn remove_key(repo: &Repository, id: &str) -> Result<(), Error> {
    repo.opened_key("remove")?;
    let slots = repo.key_slots().await?;
    let Some(slot) = slots.iter().find(|s| s.id == id) else {
        return Err(Error::Encryption(format!(
            "there is no key slot {id:?}; `catena key list` shows the {} slot(s)",
            slots.len()
        )));
    };
    if slots.len() == 1 {
        return Err(Error::Encryption(format!(
            "key slot {id} is the repository's last: without it nothing could be restored; add another with `catena key add` first"
        )));
    }
    let at = Path::from(slot.key());
    repo.store()
        .delete(&at)
        .await
        .map_err(|e| storage_backends::Error::store("deleting", &at, e))?;
    Ok(())
}

/// Replaces the slot this repository was opened with by one opened by `secret`: the new
/// slot is written first, then the old one removed. Returns the new slot's id.
pub async fn change_key(
    repo: &Repository,
    secret: &Secret,
    params: Argon2Params,
) -> Result<String, Error> {
    let old = repo.encryption.slot.clone();
    let new = add_key(repo, secret, params).await?;
    if let Some(old) = old {
        remove_key(repo, &old).await?;
    }
    Ok(new)
}
