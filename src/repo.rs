//! [`Repository`]: a store holding backups, and what every operation reads from it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use chain_core::{
    ArtifactId, BlockLocation, Catalog, ChangeSet, Damage, DamageKind, DatabaseName, Manifest,
    Sha256Digest, State,
};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use storage_backends::{Storage, layout, read};

use crate::Error;
use crate::lock::{DatabaseLock, LockOptions};

/// A repository: the store where backups live (already scoped to its prefix).
#[derive(Clone, Debug)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    description: String,
    local_root: Option<std::path::PathBuf>,
    lock_options: LockOptions,
    server_copy: Option<Arc<dyn storage_backends::assemble::ServerCopy>>,
    pub(crate) encryption: Arc<EncryptionState>,
}

/// What [`Repository::open`] found: the key of an encrypted repository, the slot that
/// opened it, and whether the config object was checked against it.
#[derive(Debug, Default)]
pub(crate) struct EncryptionState {
    pub(crate) key: Option<Arc<chain_core::RepoKey>>,
    pub(crate) slot: Option<String>,
    pub(crate) checked: tokio::sync::OnceCell<()>,
}

/// A manifest that could not be read, with why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unreadable {
    /// Its key.
    pub key: String,
    /// Why.
    pub why: String,
    /// The end of its position range, where that much of the damaged bytes still reads.
    pub positions_to: Option<chain_core::Position>,
}

/// The end of the position range a damaged manifest's bytes still show, if any: the JSON
/// may parse although its seal fails, or the field may be found in the text.
fn salvage_positions_to(bytes: &[u8]) -> Option<chain_core::Position> {
    if bytes.len() > chain_core::MAX_MANIFEST_LEN {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("positions")?
        .get("to")?
        .as_u64()
        .map(chain_core::Position)
}

/// One database as found in the store: the catalog of readable manifests, the manifests
/// that could not be read, and every object under the database's prefix with its size.
#[derive(Clone, Debug)]
pub struct CatalogView {
    /// The catalog.
    pub catalog: Catalog,
    /// Manifests that do not decode.
    pub unreadable: Vec<Unreadable>,
    /// Every object under `<database>/`: key to size.
    pub objects: BTreeMap<String, u64>,
}

impl CatalogView {
    /// The objects under the database's prefix that no artifact holds: neither a manifest,
    /// nor an object a readable manifest names, nor an object of an artifact whose manifest
    /// is present but unreadable (a person decides about those: check reports the manifest).
    /// The one rule of "unreferenced": check lists these, garbage collection removes them.
    pub fn unreferenced(&self) -> BTreeSet<String> {
        let mut referenced: BTreeSet<&str> = BTreeSet::new();
        for m in self.catalog.artifacts() {
            referenced.extend(m.objects.iter().map(|o| o.key.as_str()));
        }
        // Every artifact id that has a manifest object at all, readable or not.
        let with_manifest: BTreeSet<&str> = self
            .objects
            .keys()
            .filter_map(|key| {
                key.rsplit('/')
                    .next()?
                    .strip_suffix(layout::MANIFEST_SUFFIX)
            })
            .collect();
        self.objects
            .keys()
            .filter(|key| {
                let name = key.rsplit('/').next().unwrap_or(key);
                let id = name.split(['.', '#']).next().unwrap_or(name);
                !(referenced.contains(key.as_str())
                    || key.ends_with(layout::MANIFEST_SUFFIX)
                    || with_manifest.contains(id))
            })
            .cloned()
            .collect()
    }
}

/// A data object's key and the locations of the blocks its index lists.
type StoredBlocks = (Path, Vec<BlockLocation>);

/// The state a chain restores to, and where each of its blocks is stored.
#[derive(Clone, Debug)]
pub struct ChainState {
    /// The composed state.
    pub state: State,
    /// Where each block is stored, in the nearest artifact that stores it.
    pub blocks: BlockMap,
}

/// Where each block of a chain is stored: its data object and its location there, in the
/// nearest artifact to the chain's end that stores it.
///
/// One vector sorted by digest and each data object's key once: 56 bytes a block, where a
/// hash map holding a key per block took ~270 (a restore of a million small files plans
/// with it; `cargo bench --bench scaling`). A lookup starts from a table of where each
/// leading-bits prefix of the digests begins (about one slot per block), so that it
/// searches a handful of neighbours, not the whole vector: a binary search over a million
/// blocks costs ~20 cache misses a lookup. Digests a hostile index chooses can only crowd
/// one prefix, where the search is a binary search again.
#[derive(Clone, Debug, Default)]
pub struct BlockMap {
    /// The data objects, in chain order.
    objects: Vec<Path>,
    /// Sorted by digest, one per digest: a location and the index of its object.
    blocks: Vec<(BlockLocation, u32)>,
    /// How many leading bits of a digest `starts` is indexed by (0..=20).
    prefix_bits: u32,
    /// `starts[p]`: the first block whose digest's leading `prefix_bits` are `p` or more;
    /// `2^prefix_bits + 1` slots (empty when `prefix_bits` is 0).
    starts: Vec<u32>,
}

impl BlockMap {
    /// The map of a chain's blocks: `(data object, its blocks)` in chain order, FULL first;
    /// a block stored by several artifacts is taken from the last of them.
    pub fn new(chain: impl IntoIterator<Item = (Path, Vec<BlockLocation>)>) -> Self {
        let mut objects = Vec::new();
        let mut blocks: Vec<(BlockLocation, u32)> = Vec::new();
        for (object, locations) in chain {
            // Chains are short and an object's blocks are many: the index always fits.
            let n = u32::try_from(objects.len()).unwrap_or(u32::MAX);
            objects.push(object);
            blocks.reserve_exact(locations.len());
            blocks.extend(locations.into_iter().map(|l| (l, n)));
        }
        // By digest, the nearest artifact first; then one per digest, the first.
        blocks.sort_unstable_by(|a, b| a.0.digest.cmp(&b.0.digest).then(b.1.cmp(&a.1)));
        blocks.dedup_by(|later, kept| later.0.digest == kept.0.digest);
        blocks.shrink_to_fit();
        // About one slot per block, at most 2^20 (4 MiB): a handful of blocks per prefix.
        let prefix_bits = match u32::try_from(blocks.len()) {
            Ok(n) if n >= 64 => (u32::BITS - n.leading_zeros()).min(20),
            Ok(_) => 0,
            Err(_) => 20,
        };
        let mut starts = Vec::new();
        if prefix_bits > 0 {
            starts.reserve_exact((1usize << prefix_bits) + 1);
            let mut i = 0usize;
            for p in 0..(1u32 << prefix_bits) {
                while i < blocks.len() && Self::prefix(&blocks[i].0.digest, prefix_bits) < p {
                    i += 1;
                }
                starts.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
            starts.push(u32::try_from(blocks.len()).unwrap_or(u32::MAX));
        }
        Self {
            objects,
            blocks,
            prefix_bits,
            starts,
        }
    }

    /// The leading `bits` (1..=20) of `digest`.
    fn prefix(digest: &Sha256Digest, bits: u32) -> u32 {
        let d = &digest.0;
        (u32::from_be_bytes([d[0], d[1], d[2], d[3]])) >> (u32::BITS - bits)
    }

    /// Where the block `digest` is stored: its data object and its location there.
    pub fn get(&self, digest: &Sha256Digest) -> Option<(&Path, &BlockLocation)> {
        let among = if self.prefix_bits == 0 {
            &self.blocks[..]
        } else {
            let p = Self::prefix(digest, self.prefix_bits) as usize;
            let (from, to) = (self.starts[p] as usize, self.starts[p + 1] as usize);
            self.blocks.get(from..to)?
        };
        let i = among.binary_search_by(|(l, _)| l.digest.cmp(digest)).ok()?;
        let (location, object) = &among[i];
        Some((self.objects.get(*object as usize)?, location))
    }

    /// Number of distinct blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the chain stores no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl ChainState {
    /// The stored blocks of a file's content, in order, or an error naming the first block
    /// the chain does not hold.
    pub fn locate(
        &self,
        blocks: &[chain_core::BlockRef],
        what: &str,
    ) -> Result<Vec<(Path, BlockLocation)>, Error> {
        blocks
            .iter()
            .map(|b| {
                self.blocks
                    .get(&b.digest)
                    .map(|(key, location)| (key.clone(), *location))
                    .ok_or_else(|| Error::Inconsistent {
                        what: what.to_owned(),
                        why: format!("block {} is stored nowhere in the chain", b.digest),
                    })
            })
            .collect()
    }
}

impl Repository {
    /// A repository over a built storage.
    pub fn new(storage: Storage) -> Self {
        Self {
            store: storage.store,
            description: storage.description,
            local_root: storage.local_root,
            lock_options: LockOptions::default(),
            server_copy: storage.server_copy,
            encryption: Arc::default(),
        }
    }

    /// A repository over any store (tests, wrappers such as [`storage_backends::FaultStore`]).
    pub fn from_store(store: Arc<dyn ObjectStore>, description: impl Into<String>) -> Self {
        Self {
            store,
            description: description.into(),
            local_root: None,
            lock_options: LockOptions::default(),
            server_copy: None,
            encryption: Arc::default(),
        }
    }

    /// The same repository, taking database locks with `options` (how long to wait for
    /// another writer, the lease).
    pub fn with_lock_options(mut self, options: LockOptions) -> Self {
        self.lock_options = options;
        self
    }

    /// How locks are taken.
    pub fn lock_options(&self) -> &LockOptions {
        &self.lock_options
    }

    /// The store's ranged server-side copy, if it has one (see
    /// [`storage_backends::assemble`]).
    pub fn server_copy(&self) -> Option<&Arc<dyn storage_backends::assemble::ServerCopy>> {
        self.server_copy.as_ref()
    }

    /// Sets the store's ranged server-side copy (a repository built by [`Self::from_store`]
    /// has none; tests give one, or a [`storage_backends::assemble::FaultCopy`]).
    pub fn with_server_copy(
        mut self,
        copy: Option<Arc<dyn storage_backends::assemble::ServerCopy>>,
    ) -> Self {
        self.server_copy = copy;
        self
    }

    /// The directory of a local-directory store (where interrupted uploads leave staging
    /// files that no listing shows), `None` for other stores.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// Takes `db`'s writer lock for `operation` (see [`crate::lock`]).
    pub async fn lock(&self, db: &DatabaseName, operation: &str) -> Result<DatabaseLock, Error> {
        DatabaseLock::acquire(Arc::clone(&self.store), db, operation, &self.lock_options).await
    }

    /// Runs `work` holding `db`'s lock, taken for `operation` (the one way the engine's
    /// writing operations hold a lock); the lock is released however `work` ends. Operations
    /// with a dry run call their work without it: a dry run writes nothing.
    pub async fn with_lock<T>(
        &self,
        db: &DatabaseName,
        operation: &str,
        work: impl AsyncFnOnce(&DatabaseLock) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let lock = self.lock(db, operation).await?;
        let result = work(&lock).await;
        lock.release().await;
        result
    }

    /// Runs a maintenance operation on `db` (expire, gc): `work` under the lock, or without
    /// it for a dry run (which writes nothing), between the database's started and finished
    /// progress events.
    pub(crate) async fn maintain<T>(
        &self,
        db: &DatabaseName,
        operation: &'static str,
        dry_run: bool,
        progress: &Arc<dyn crate::Progress>,
        work: impl AsyncFnOnce(Option<&DatabaseLock>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        progress.event(crate::ProgressEvent::DatabaseStarted {
            database: db.to_string(),
            operation,
            total_bytes: None,
        });
        let result = if dry_run {
            work(None).await
        } else {
            self.with_lock(db, operation, async |lock| work(Some(lock)).await)
                .await
        };
        progress.event(crate::ProgressEvent::DatabaseFinished {
            database: db.to_string(),
            ok: result.is_ok(),
        });
        result
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where it is, for people.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The databases that have objects here, sorted.
    pub async fn databases(&self) -> Result<Vec<DatabaseName>, Error> {
        let listing = self.store.list_with_delimiter(None).await.map_err(|e| {
            storage_backends::Error::Store {
                operation: "listing",
                key: "/".into(),
                source: e,
            }
        })?;
        let mut out: Vec<DatabaseName> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|name| !layout::is_reserved(name))
            .filter_map(|name| DatabaseName::new(&name).ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// The databases whose names match `pattern` (`*` any run, `?` one character; a comma
    /// list of patterns is accepted), sorted; an error when none does.
    pub async fn databases_matching(&self, pattern: &str) -> Result<Vec<DatabaseName>, Error> {
        let patterns: Vec<&str> = pattern
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let dbs: Vec<DatabaseName> = self
            .databases()
            .await?
            .into_iter()
            .filter(|db| patterns.iter().any(|p| glob_match(p, db.as_str())))
            .collect();
        if dbs.is_empty() {
            return Err(Error::Options(format!(
                "no database here matches {pattern:?}; `catena inspect` lists the databases"
            )));
        }
        Ok(dbs)
    }

    /// Every object under `prefix`, with a listing error named by the prefix.
    pub(crate) async fn list(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>, Error> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| storage_backends::Error::store("listing", prefix, e).into())
    }

    /// Reads one database's manifests and object listing, and what the newest check report
    /// found damaged (such artifacts are unusable until a check passes again).
    pub async fn catalog(&self, db: &DatabaseName) -> Result<CatalogView, Error> {
        self.catalog_with(db, true).await
    }

    /// Like [`Repository::catalog`], without check reports: the repository as it is found
    /// (what `check` itself looks at).
    pub async fn catalog_as_found(&self, db: &DatabaseName) -> Result<CatalogView, Error> {
        self.catalog_with(db, false).await
    }

    async fn catalog_with(&self, db: &DatabaseName, reports: bool) -> Result<CatalogView, Error> {
        self.ensure_opened().await?;
        let metas = self.list(&layout::database_prefix(db)).await?;
        let mut objects = BTreeMap::new();
        let mut manifests = Vec::new();
        let mut unreadable = Vec::new();
        for meta in &metas {
            objects.insert(meta.location.to_string(), meta.size);
        }
        let manifest_keys: Vec<(Path, ArtifactId)> = metas
            .iter()
            .filter_map(|m| layout::manifest_id(&m.location).map(|id| (m.location.clone(), id)))
            .collect();
        let fetched: Vec<(Path, ArtifactId, Result<Bytes, object_store::Error>)> =
            futures::stream::iter(manifest_keys)
                .map(|(key, id)| {
                    let store = Arc::clone(&self.store);
                    async move {
                        let r = match store.get(&key).await {
                            Ok(g) => g.bytes().await,
                            Err(e) => Err(e),
                        };
                        (key, id, r)
                    }
                })
                .buffered(16)
                .collect()
                .await;
        for (key, id, bytes) in fetched {
            let bytes = match bytes {
                Ok(b) => b,
                Err(object_store::Error::NotFound { .. }) => continue, // deleted meanwhile
                Err(e) => return Err(storage_backends::Error::store("reading", &key, e).into()),
            };
            let decoded = match Manifest::from_json(&bytes) {
                // A body cut short in transit decodes no better than a damaged object:
                // read it once more before calling it unreadable.
                Err(_) => match self.store.get(&key).await {
                    Ok(g) => match g.bytes().await {
                        Ok(b) => Manifest::from_json(&b),
                        Err(_) => Manifest::from_json(&bytes),
                    },
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(_) => Manifest::from_json(&bytes),
                },
                ok => ok,
            };
            // An encrypted repository's manifests carry a MAC under its key: one that does not
            // verify was not written by Catena with this key (forged, or damaged).
            let decoded = match (decoded, self.key()) {
                (Ok(m), Some(key)) if !key.verify_manifest(&m) => {
                    Err(chain_core::Error::InvalidManifest {
                        artifact: m.id.clone(),
                        why: format!(
                            "its MAC ({}) does not verify under this repository's key: it was not written by Catena with this key (forged or damaged); it is not trusted",
                            m.mac.map_or_else(|| "none".to_owned(), |d| d.to_string())
                        ),
                    })
                }
                (Ok(m), None) if m.mac.is_some() => {
                    return Err(Error::Encryption(format!(
                        "{key} is an encrypted repository's manifest (format 3); {}",
                        crate::keys::KEY_NEEDED
                    )));
                }
                (d, _) => d,
            };
            match decoded {
                Ok(m) if m.id == id => manifests.push(m),
                Ok(m) => unreadable.push(Unreadable {
                    key: key.to_string(),
                    why: format!("its key names {id} but it holds {}", m.id),
                    positions_to: Some(m.positions.to),
                }),
                Err(e) => unreadable.push(Unreadable {
                    key: key.to_string(),
                    why: e.to_string(),
                    positions_to: salvage_positions_to(&bytes),
                }),
            }
        }
        let mut damage: Vec<Damage> = unreadable
            .iter()
            .filter_map(|u| {
                let id = layout::manifest_id(&Path::from(u.key.as_str()))?;
                Some(Damage {
                    artifact: id,
                    why: format!("{}: {}", u.key, u.why),
                    kind: DamageKind::Unreadable {
                        positions_to: u.positions_to,
                    },
                })
            })
            .collect();
        // Objects a manifest names must be listed, with the size it says.
        for m in &manifests {
            for o in &m.objects {
                let why = match objects.get(&o.key) {
                    None => format!("its object {} is missing", o.key),
                    Some(&size) if size != o.size => format!(
                        "its object {} is {size} bytes, the manifest says {}",
                        o.key, o.size
                    ),
                    Some(_) => continue,
                };
                damage.push(Damage {
                    artifact: m.id.clone(),
                    why,
                    kind: DamageKind::Found,
                });
                break;
            }
        }
        if reports {
            damage.extend(self.reported_damage(db).await?);
        }
        Ok(CatalogView {
            catalog: Catalog::with_damage(db.clone(), manifests, damage),
            unreadable,
            objects,
        })
    }

    /// The artifacts the newest check report of `db` found damaged (none when it found
    /// nothing, or there is none). A report that does not open is ignored here: `check`
    /// reports it, and it cannot make anything usable that is not.
    async fn reported_damage(&self, db: &DatabaseName) -> Result<Vec<Damage>, Error> {
        let wanted = format!("check-{db}-");
        let metas = self.list(&Path::from(layout::REPORTS_PREFIX)).await?;
        let Some(newest) = metas
            .iter()
            .filter(|m| {
                m.location
                    .filename()
                    .is_some_and(|n| n.starts_with(&wanted) && n.ends_with(".json"))
            })
            .max_by(|a, b| a.location.cmp(&b.location))
        else {
            return Ok(Vec::new());
        };
        if newest.size > chain_core::sealed::MAX_RECORD_LEN as u64 {
            return Ok(Vec::new());
        }
        let bytes = match self.store.get(&newest.location).await {
            Ok(g) => g
                .bytes()
                .await
                .map_err(|e| storage_backends::Error::store("reading", &newest.location, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => {
                return Err(storage_backends::Error::store("reading", &newest.location, e).into());
            }
        };
        let Ok(report) = chain_core::sealed::open::<crate::CheckReport>(&bytes) else {
            return Ok(Vec::new());
        };
        if report.ok || report.database != db.as_str() {
            return Ok(Vec::new());
        }
        let mut out: Vec<Damage> = Vec::new();
        for p in &report.problems {
            let Some(id) = p
                .artifact
                .as_deref()
                .and_then(|a| a.parse::<ArtifactId>().ok())
            else {
                continue;
            };
            if out.iter().any(|d| d.artifact == id) {
                continue;
            }
            out.push(Damage {
                artifact: id,
                why: format!(
                    "check report {} found {}{}",
                    newest.location,
                    p.key
                        .as_deref()
                        .map(|k| format!("{k}: "))
                        .unwrap_or_default(),
                    p.problem
                ),
                kind: DamageKind::Found,
            });
        }
        Ok(out)
    }

    /// Reads the indexes of `chain` (FULL first), composes its state, checks it against the
    /// last manifest's state digest, and maps every block to where it is stored.
    pub async fn chain_state(&self, chain: &[&Manifest]) -> Result<ChainState, Error> {
        let (state, stored) = self.compose_chain(chain, true).await?;
        Ok(ChainState {
            state,
            blocks: BlockMap::new(stored),
        })
    }

    /// [`chain_state`](Self::chain_state) without the map of where blocks are stored: what a
    /// backup needs of its parent. Each index's block list is checked record by record as it
    /// streams past and never held (at a million files, the ~50 MB list and the map built
    /// from it; only its digests, 32 bytes a block, while they are checked for repeats).
    pub async fn composed_state(&self, chain: &[&Manifest]) -> Result<State, Error> {
        Ok(self.compose_chain(chain, false).await?.0)
    }

    /// The composed and checked state of `chain`, and, with `keep_blocks`, each data
    /// object's key with its index's block list.
    async fn compose_chain(
        &self,
        chain: &[&Manifest],
        keep_blocks: bool,
    ) -> Result<(State, Vec<StoredBlocks>), Error> {
        // Owned manifests in the stream: a borrowed one would make the future of every
        // caller not `Send` for all lifetimes, so that it could not be spawned.
        let owned: Vec<Manifest> = chain.iter().map(|m| (*m).clone()).collect();
        let read: Vec<(ChangeSet, Option<StoredBlocks>)> = futures::stream::iter(owned)
            .map(|m| {
                let store = Arc::clone(&self.store);
                let key = self.key().cloned();
                async move {
                    // Without the map, the block list is checked as it streams past and
                    // never held (~50 MB at a million files).
                    let (changes, blocks, listed) = if keep_blocks {
                        let index = read::read_index(store.as_ref(), &m, key.as_ref()).await?;
                        let listed = index.blocks.len() as u64;
                        (index.changes, index.blocks, listed)
                    } else {
                        let index =
                            read::read_index_changes(store.as_ref(), &m, key.as_ref()).await?;
                        (index.changes, Vec::new(), index.blocks.blocks)
                    };
                    let stored = match read::data_object(&m) {
                        Some(data) => {
                            let key = Path::parse(&data.key).map_err(|e| Error::Inconsistent {
                                what: m.id.to_string(),
                                why: format!("invalid data key: {e}"),
                            })?;
                            // The block list moves into the map.
                            keep_blocks.then_some((key, blocks))
                        }
                        None if listed > 0 => {
                            return Err(Error::Inconsistent {
                                what: m.id.to_string(),
                                why: "its index lists blocks but the manifest names no data object"
                                    .into(),
                            });
                        }
                        None => None,
                    };
                    Ok::<_, Error>((changes, stored))
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        let mut stored = Vec::with_capacity(read.len());
        let mut changes = Vec::with_capacity(read.len());
        for (c, s) in read {
            changes.push(c);
            stored.extend(s);
        }
        // The indexes' entries move into the state: each entry is held once.
        let ids: Vec<&ArtifactId> = chain.iter().map(|m| &m.id).collect();
        let state = chain_core::compose_owned(ids.into_iter().zip(changes))?;
        let last = chain
            .last()
            .ok_or_else(|| Error::Options("an empty chain".into()))?;
        let digest = state.digest();
        if digest != last.state_digest {
            return Err(Error::Inconsistent {
                what: last.id.to_string(),
                why: format!(
                    "its chain composes to state {digest}, but the manifest records {}",
                    last.state_digest
                ),
            });
        }
        Ok((state, stored))
    }

    /// The state of `id`'s chain in `catalog` (see [`chain_state`](Self::chain_state)).
    pub async fn state_of(&self, catalog: &Catalog, id: &ArtifactId) -> Result<ChainState, Error> {
        let chain = catalog.chain(id)?;
        self.chain_state(&chain).await
    }

    /// Fails unless every manifest of `view` decodes: deleting with a manifest unread could
    /// orphan the DIFF it holds, so expire, aggregate's deletions and garbage collection
    /// delete nothing then.
    pub fn ensure_all_readable(view: &CatalogView, operation: &str) -> Result<(), Error> {
        match view.unreadable.first() {
            None => Ok(()),
            Some(u) => Err(Error::Inconsistent {
                what: u.key.clone(),
                why: format!(
                    "this manifest cannot be read ({}), and it may be a DIFF that depends on what {operation} would delete, so nothing was deleted; restore or remove the object, then run {operation} again",
                    u.why
                ),
            }),
        }
    }

    /// Deletes an artifact: the manifest first (so it is no longer committed), then its other
    /// objects. A crash in between leaves only unreferenced objects, which check reports.
    pub async fn delete_artifact(&self, m: &Manifest) -> Result<(), Error> {
        // Keys derived from the id alone, never taken from the manifest: a manifest that
        // names another artifact's object cannot get that object deleted.
        delete_if_present(self.store.as_ref(), &layout::manifest_key(&m.id)).await?;
        for key in [layout::data_key(&m.id), layout::index_key(&m.id)] {
            delete_if_present(self.store.as_ref(), &key).await?;
        }
        Ok(())
    }
}

async fn delete_if_present(store: &dyn ObjectStore, key: &Path) -> Result<(), Error> {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(storage_backends::Error::store("deleting", key, e).into()),
    }
}

use futures::StreamExt;

/// Matches `name` against a glob with `*` (any run) and `?` (one character).
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::{BlockLocation, BlockMap, Path, Sha256Digest, glob_match};

    #[test]
    fn globs_match_like_the_chart_says() {
        assert!(glob_match("*", "neo4j"));
        assert!(glob_match("neo*", "neo4j"));
        assert!(glob_match("ne?4j", "neo4j"));
        assert!(glob_match("*4*", "neo4j"));
        assert!(!glob_match("sys*", "neo4j"));
        assert!(!glob_match("neo4j?", "neo4j"));
        assert!(glob_match("neo4j", "neo4j"));
    }

    /// The block map answers as a hash map filled in chain order (the nearest artifact
    /// wins) would, for blocks it holds and blocks it does not: small maps (no prefix
    /// table), large ones, and digests crowded into one prefix (as a hostile index could
    /// write them).
    #[test]
    fn block_map_answers_as_a_map_filled_in_chain_order() {
        use std::collections::HashMap;
        let location = |digest: Sha256Digest, n: u64| BlockLocation {
            digest,
            len: 1 + n as u32,
            offset: n * 100,
            stored_len: 49 + n as u32,
        };
        let crowded = |i: u64| {
            let mut d = [0xabu8; 32];
            d[24..].copy_from_slice(&i.to_be_bytes());
            Sha256Digest(d)
        };
        let random = |i: u64| Sha256Digest::of(&i.to_be_bytes());
        for (blocks, digest) in [
            (0u64, &random as &dyn Fn(u64) -> Sha256Digest),
            (5, &random),
            (63, &random),
            (64, &random),
            (3000, &random),
            (3000, &crowded),
        ] {
            // Three objects; each stores a third of the blocks, and every block whose number
            // is a multiple of 7 again in each later object.
            let mut model: HashMap<Sha256Digest, (Path, BlockLocation)> = HashMap::new();
            let mut chain = Vec::new();
            for object in 0..3u64 {
                let key = Path::from(format!("db/{object}.data"));
                let mine: Vec<BlockLocation> = (0..blocks)
                    .filter(|i| i % 3 == object || (i % 7 == 0 && i % 3 < object))
                    .map(|i| location(digest(i), i * 10 + object))
                    .collect();
                for l in &mine {
                    model.insert(l.digest, (key.clone(), *l));
                }
                chain.push((key, mine));
            }
            let map = BlockMap::new(chain);
            assert_eq!(map.len(), model.len(), "{blocks} blocks");
            assert_eq!(map.is_empty(), blocks == 0);
            for i in 0..blocks {
                let (key, l) = &model[&digest(i)];
                assert_eq!(map.get(&digest(i)), Some((key, l)), "block {i} of {blocks}");
            }
            for i in blocks..blocks + 100 {
                assert_eq!(map.get(&digest(i)), None, "absent block {i}");
            }
            assert_eq!(map.get(&Sha256Digest([0; 32])), None);
            assert_eq!(map.get(&Sha256Digest([0xff; 32])), None);
        }
    }
}
