//! The state model: what an artifact's chain restores to, and what each DIFF changes.
//!
//! A [`State`] is the complete set of entries of a database at one point: files (as a list
//! of content blocks), directories and symbolic links, each with its metadata. An artifact
//! stores a [`ChangeSet`] against its parent's state: a FULL's change set adds every entry
//! of an empty state; a DIFF's adds, changes and removes entries. [`compose`] applies a
//! chain of change sets in order and gives the resulting state, whose
//! [`digest`](State::digest) every artifact records.
//!
//! Composition is associative in the sense that aggregation relies on: composing a whole
//! chain gives the same state as composing a prefix, recording the result as one FULL change
//! set ([`ChangeSet::full`]), and composing that with the rest.
//!
//! Application is strict: adding an entry that exists, or changing or removing one that does
//! not, is an error. A chain that composes without error is consistent; one that does not has
//! a damaged or mismatched link, and the error names the artifact and the path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::id::truncate_for_message;
use crate::{ArtifactId, Error, Sha256Digest};

/// The longest entry path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// The longest single path component accepted, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;

/// A relative path inside a database: `/`-separated components, none empty, `.` or `..`,
/// no NUL byte, no leading `/`. Such a path cannot name anything outside the directory it is
/// restored into (symbolic links are handled by the restore, which never follows them).
///
/// ```
/// use chain_core::EntryPath;
/// assert!("graph/store.db".parse::<EntryPath>().is_ok());
/// assert!("../etc/passwd".parse::<EntryPath>().is_err());
/// assert!("/etc/passwd".parse::<EntryPath>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryPath(String);

impl EntryPath {
    /// Validates `path` and wraps it.
    pub fn new(path: &str) -> Result<Self, Error> {
        let invalid = |why: &'static str| Error::InvalidEntryPath {
            path: truncate_for_message(path),
            why,
        };
        if path.is_empty() {
            return Err(invalid("it is empty"));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(invalid("it is longer than 4096 bytes"));
        }
        if path.contains('\0') {
            return Err(invalid("it contains a NUL byte"));
        }
        if path.starts_with('/') {
            return Err(invalid("it is absolute"));
        }
        for component in path.split('/') {
            match component {
                "" => return Err(invalid("it has an empty component")),
                "." | ".." => return Err(invalid("it has a '.' or '..' component")),
                c if c.len() > MAX_COMPONENT_LEN => {
                    return Err(invalid("a component is longer than 255 bytes"));
                }
                _ => {}
            }
        }
        Ok(Self(path.to_owned()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent directory's path, `None` for a top-level entry.
    pub fn parent(&self) -> Option<EntryPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| EntryPath(parent.to_owned()))
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for EntryPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl Serialize for EntryPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One block of a file's content: its length and the SHA-256 of its uncompressed bytes.
/// Where the block is stored is the storage layer's business (an artifact's index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRef {
    /// SHA-256 of the uncompressed block.
    pub digest: Sha256Digest,
    /// Uncompressed length in bytes; never 0.
    pub len: u32,
}

/// Owner of an entry, when the source records it (`includeMetadata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
}

/// Metadata restored with an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch (UTC).
    pub mtime_ns: i64,
    /// Owner, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Extended attributes, when recorded: name to value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file: its size and its content as blocks, in order.
    File {
        /// Size in bytes; the sum of the blocks' lengths.
        size: u64,
        /// The content, block by block.
        blocks: Vec<BlockRef>,
    },
    /// A symbolic link, stored as a link (never followed).
    Symlink {
        /// The link's target, as the source recorded it.
        target: String,
    },
    /// Another name of a regular file of the same state (a hard link): restored as a hard
    /// link to `target`, which must be a [`EntryKind::File`] entry. Of the names a file has
    /// inside the database, the first in byte order is the file, the others are hard links
    /// to it (format 2).
    HardLink {
        /// The path of the file entry this name links to.
        target: EntryPath,
    },
}

/// What the source showed of a regular file when it was read, besides what is restored: the
/// device, inode and status-change time (format 2). A DIFF whose source shows the same
/// size, mtime and stamp trusts the parent's blocks for the file instead of reading it
/// (see [`FileStamp::unchanged`]). Not part of the state digest: a restore does not bring it
/// back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStamp {
    /// Device number (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
    /// Status-change time (`st_ctime`), nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
}

impl FileStamp {
    /// Whether a file the source lists with `size`, `mtime_ns` and `stamp` can be taken as
    /// `recorded` without reading it: a regular file of the same size, modification time and
    /// stamp (device, inode and ctime all equal), as restic and rsync judge it. A recorded
    /// entry without a stamp (written before format 2, or by a source without stamps) is
    /// never trusted.
    pub fn unchanged(recorded: &Entry, size: u64, mtime_ns: i64, stamp: Option<FileStamp>) -> bool {
        matches!(recorded.kind, EntryKind::File { size: s, .. } if s == size)
            && recorded.meta.mtime_ns == mtime_ns
            && recorded.stamp.is_some()
            && recorded.stamp == stamp
    }
}

/// One entry of a state: a path, what it is, and its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Where the entry lives, relative to the database's root.
    pub path: EntryPath,
    /// What it is.
    pub kind: EntryKind,
    /// Its metadata.
    pub meta: Metadata,
    /// For a regular file, what the source showed when it was read (format 2; `None`
    /// before, and for sources without it). A change of it alone is a change of the entry,
    /// recorded by the next DIFF (its blocks are not stored again), so that the DIFF after
    /// that can trust it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<FileStamp>,
}

impl Entry {
    /// Checks what serde cannot: a file's size equals the sum of its blocks, no block is
    /// empty, a hard link does not name itself.
    pub fn validate(&self) -> Result<(), Error> {
        if let EntryKind::HardLink { target } = &self.kind
            && *target == self.path
        {
            return Err(self.invalid("a hard link names itself"));
        }
        if let EntryKind::File { size, blocks } = &self.kind {
            if blocks.iter().any(|b| b.len == 0) {
                return Err(self.invalid("a block has length 0"));
            }
            let sum = blocks.iter().map(|b| u64::from(b.len)).sum::<u64>();
            if sum != *size {
                return Err(self.invalid("the file size differs from the sum of its blocks"));
            }
        }
        Ok(())
    }

    fn invalid(&self, why: &'static str) -> Error {
        Error::InvalidEntry {
            path: self.path.to_string(),
            why,
        }
    }
}

/// What a manifest records of the state an artifact restores to ([`State::summary`]): kept
/// so that the state itself can be dropped (or moved on) before the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSummary {
    /// The state digest.
    pub digest: Sha256Digest,
    /// Bytes of file content.
    pub logical_bytes: u64,
    /// Number of entries.
    pub entries: u64,
}

/// The complete set of entries of a database at one point in its history, and the
/// metadata of the database's root directory when the source records it (format 2).
///
/// Held as one vector sorted by path (looked up by binary search): each entry once, its path
/// once, no tree nodes. A million-file database plans a restore in this state, so its size
/// per entry is the planning's memory per file (`cargo bench --bench scaling`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct State {
    /// Sorted by path, no path twice.
    entries: Vec<Entry>,
    root: Option<Metadata>,
}

impl State {
    /// An empty state (what a FULL's change set applies to).
    pub fn new() -> Self {
        Self::default()
    }

    /// A state holding `entries`; a later entry with the same path replaces an earlier one.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut entries: Vec<Entry> = entries.into_iter().collect();
        sort_by_path(&mut entries);
        // Of entries with one path (now neighbours, in their given order), the last stays:
        // `dedup_by` removes the later of two, so the later moves forward first.
        entries.dedup_by(|later, kept| {
            let same = later.path == kept.path;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        entries.shrink_to_fit();
        Self {
            entries,
            root: None,
        }
    }

    /// Where `path` is in the sorted entries (`Err`: where it would go).
    fn position(&self, path: &EntryPath) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.path.cmp(path))
    }

    /// The same state with the root directory's metadata recorded (`None`: not recorded,
    /// a restore leaves the root directory's mode and mtime as it creates them).
    pub fn with_root(mut self, root: Option<Metadata>) -> Self {
        self.root = root;
        self
    }

    /// The root directory's metadata, when recorded.
    pub fn root(&self) -> Option<&Metadata> {
        self.root.as_ref()
    }

    /// The entries in path order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The entry at `path`.
    pub fn get(&self, path: &EntryPath) -> Option<&Entry> {
        self.position(path).ok().map(|i| &self.entries[i])
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of file content.
    pub fn logical_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// What a manifest records of this state: its digest, bytes of file content and
    /// number of entries.
    pub fn summary(&self) -> StateSummary {
        StateSummary {
            digest: self.digest(),
            logical_bytes: self.logical_bytes(),
            entries: self.len() as u64,
        }
    }

    /// The digests of every block the state's files use.
    pub fn block_digests(&self) -> BTreeSet<Sha256Digest> {
        self.entries
            .iter()
            .flat_map(|e| match &e.kind {
                EntryKind::File { blocks, .. } => blocks.as_slice(),
                _ => &[],
            })
            .map(|b| b.digest)
            .collect()
    }

    /// Applies one change set, strictly: each list sorted by path without repeats, an added
    /// path absent, a changed or removed one present, no path both changed and removed. On
    /// error the state is left as it was.
    pub fn apply(&mut self, changes: &ChangeSet) -> Result<(), ChangeConflict> {
        self.apply_owned(changes.clone())
    }

    /// Like [`State::apply`], moving the change set's entries into the state instead of
    /// copying them: composing a chain whose indexes are not needed afterwards holds each
    /// entry once.
    pub fn apply_owned(&mut self, changes: ChangeSet) -> Result<(), ChangeConflict> {
        changes.check_conflicts(self)?;
        let ChangeSet {
            added,
            changed,
            removed,
            root,
        } = changes;
        // Removed paths are present (checked) and sorted: one pass drops them in place.
        if !removed.is_empty() {
            let mut gone = removed.iter().peekable();
            self.entries.retain(|e| {
                let drop = gone.peek().is_some_and(|p| **p == e.path);
                if drop {
                    gone.next();
                }
                !drop
            });
        }
        // Changed paths are present: each replaces its entry where it is.
        for entry in changed {
            if let Ok(i) = self.position(&entry.path) {
                self.entries[i] = entry;
            }
        }
        self.insert_sorted(added);
        if let Some(root) = root {
            self.root = Some(root);
        }
        Ok(())
    }

    /// Merges `added` (sorted, every path absent from the state) into the entries in place:
    /// the vector grows by exactly `added.len()` and is filled from its end, the larger of
    /// the two lists' last entries first, so that neither list is ever held twice.
    fn insert_sorted(&mut self, mut added: Vec<Entry>) {
        let past_the_end = match (self.entries.last(), added.first()) {
            (Some(last), Some(first)) => last.path < first.path,
            _ => true,
        };
        if past_the_end {
            if self.entries.is_empty() {
                self.entries = added;
            } else {
                self.entries.reserve_exact(added.len());
                self.entries.append(&mut added);
            }
            return;
        }
        let mut old = self.entries.len();
        let mut write = old + added.len();
        self.entries.reserve_exact(added.len());
        // Placeholders (an empty path allocates nothing), each overwritten below.
        self.entries.resize_with(write, || Entry {
            path: EntryPath(String::new()),
            kind: EntryKind::Directory,
            meta: Metadata::default(),
            stamp: None,
        });
        while let Some(next) = added.pop() {
            while old > 0 && self.entries[old - 1].path > next.path {
                old -= 1;
                write -= 1;
                self.entries.swap(old, write);
            }
            write -= 1;
            self.entries[write] = next;
        }
        debug_assert_eq!(
            old, write,
            "the old entries before the first added one stay put"
        );
    }

    /// The deterministic digest of the state: SHA-256 over the canonical encoding described
    /// in `docs/FORMAT.md` ("State digest"). Equal states have equal digests; any difference
    /// in a path, kind, metadata or block changes it.
    pub fn digest(&self) -> Sha256Digest {
        digest_of(
            self.entries.len() as u64,
            self.entries.iter(),
            self.root.as_ref(),
        )
    }
}

/// Sorts entries by path, entries of one path kept in their given order (what a stable sort
/// gives), without the scratch space of a stable sort (half the entries, 72 MB for a
/// million): the positions are sorted (4 bytes an entry), then the entries are moved into
/// that order in place, one cycle of the permutation at a time. Sorted input is left as it
/// is.
fn sort_by_path(entries: &mut [Entry]) {
    if entries.is_sorted_by(|a, b| a.path <= b.path) {
        return;
    }
    let Ok(len) = u32::try_from(entries.len()) else {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        return;
    };
    let mut order: Vec<u32> = (0..len).collect();
    order.sort_unstable_by(|&a, &b| {
        entries[a as usize]
            .path
            .cmp(&entries[b as usize].path)
            .then(a.cmp(&b))
    });
    // Position `i` takes the entry at `order[i]`. Following a cycle from `start`, the entry
    // that was at `start` travels along it and lands where the cycle closes.
    const DONE: u32 = u32::MAX;
    for start in 0..entries.len() {
        let mut at = start;
        while order[at] != DONE {
            let from = order[at] as usize;
            order[at] = DONE;
            if from == start {
                break;
            }
            entries.swap(at, from);
            at = from;
        }
    }
}

/// The state digest of `count` entries given in path order, and the root's metadata.
fn digest_of<'a>(
    count: u64,
    entries: impl Iterator<Item = &'a Entry>,
    root: Option<&Metadata>,
) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(b"catena-state-v1\n");
    h.update(count.to_be_bytes());
    for e in entries {
        put_bytes(&mut h, e.path.as_str().as_bytes());
        match &e.kind {
            EntryKind::Directory => h.update([0u8]),
            EntryKind::File { size, blocks } => {
                h.update([1u8]);
                h.update(size.to_be_bytes());
                h.update((blocks.len() as u64).to_be_bytes());
                for b in blocks {
                    h.update(b.digest.0);
                    h.update(b.len.to_be_bytes());
                }
            }
            EntryKind::Symlink { target } => {
                h.update([2u8]);
                put_bytes(&mut h, target.as_bytes());
            }
            EntryKind::HardLink { target } => {
                h.update([3u8]);
                put_bytes(&mut h, target.as_str().as_bytes());
            }
        }
        put_meta(&mut h, &e.meta);
    }
    // Recorded root metadata follows the entries; a state without it hashes as it did
    // before format 2, so that format-1 digests stay valid.
    if let Some(root) = root {
        h.update(b"root");
        put_meta(&mut h, root);
    }
    Sha256Digest(h.finalize().into())
}

fn put_meta(h: &mut Sha256, meta: &Metadata) {
    h.update(meta.mode.to_be_bytes());
    h.update(meta.mtime_ns.to_be_bytes());
    match meta.owner {
        None => h.update([0u8]),
        Some(o) => {
            h.update([1u8]);
            h.update(o.uid.to_be_bytes());
            h.update(o.gid.to_be_bytes());
        }
    }
    h.update((meta.xattrs.len() as u64).to_be_bytes());
    for (name, value) in &meta.xattrs {
        put_bytes(h, name.as_bytes());
        put_bytes(h, value);
    }
}

fn put_bytes(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Why a change set does not apply to a state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {why}")]
pub struct ChangeConflict {
    /// The path that conflicts.
    pub path: EntryPath,
    /// What is wrong with it.
    pub why: &'static str,
}

/// What one artifact changes: entries added, entries changed (replaced whole, with their new
/// blocks and metadata) and paths removed. Each list is sorted by path and a path appears in
/// at most one list.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSet {
    /// Entries that did not exist in the parent's state.
    #[serde(default)]
    pub added: Vec<Entry>,
    /// Entries that existed and differ (content, kind or metadata).
    #[serde(default)]
    pub changed: Vec<Entry>,
    /// Paths that existed and are gone.
    #[serde(default)]
    pub removed: Vec<EntryPath>,
    /// The root directory's metadata, when it is recorded and differs from the parent's
    /// (a FULL records it whenever the state has it). Format 2; absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Metadata>,
}

impl ChangeSet {
    /// The change set of a FULL: every entry of `state`, added.
    pub fn full(state: &State) -> Self {
        Self {
            added: state.entries().cloned().collect(),
            changed: Vec::new(),
            removed: Vec::new(),
            root: state.root.clone(),
        }
    }

    /// What turns `old` into `new`. The root's metadata, once recorded, stays recorded: when
    /// `new` records none, the change set leaves `old`'s in place (a source that stops
    /// recording it changes nothing there).
    pub fn between(old: &State, new: &State) -> Self {
        Self::between_owned(old, new.clone())
    }

    /// Like [`ChangeSet::between`], moving `new`'s entries into the change set instead of
    /// copying them (a backup's new state is not needed once its change set is made).
    pub fn between_owned(old: &State, new: State) -> Self {
        let mut cs = ChangeSet::default();
        if new.root != old.root {
            cs.root.clone_from(&new.root);
        }
        if old.entries.is_empty() {
            // A FULL adds every entry: the state's vector becomes the list as it is.
            cs.added = new.entries;
            return cs;
        }
        // Both sides are sorted by path: one merge walk.
        let mut before = old.entries.iter().peekable();
        for entry in new.entries {
            while let Some(gone) = before.next_if(|b| b.path < entry.path) {
                cs.removed.push(gone.path.clone());
            }
            match before.next_if(|b| b.path == entry.path) {
                None => cs.added.push(entry),
                Some(b) if *b != entry => cs.changed.push(entry),
                Some(_) => {}
            }
        }
        cs.removed.extend(before.map(|b| b.path.clone()));
        cs
    }

    /// The summary of the state this change set turns `base` into, computed as the two are
    /// merged in path order, without building that state. The change set must apply to
    /// `base` (as [`ChangeSetBuilder::finish`]'s does); `root` is the new state's root.
    fn summary_over(&self, base: &State, root: Option<&Metadata>) -> StateSummary {
        let mut changed = self.changed.iter().peekable();
        let mut removed = self.removed.iter().peekable();
        let mut rest = base
            .entries
            .iter()
            .filter_map(move |e| {
                if let Some(c) = changed.next_if(|c| c.path == e.path) {
                    return Some(c);
                }
                if removed.next_if(|p| **p == e.path).is_some() {
                    return None;
                }
                Some(e)
            })
            .peekable();
        let mut added = self.added.iter().peekable();
        let mut logical_bytes = 0u64;
        let merged = std::iter::from_fn(|| {
            let next = match (rest.peek(), added.peek()) {
                (Some(r), Some(a)) if r.path < a.path => rest.next(),
                (Some(_), None) => rest.next(),
                _ => added.next(),
            };
            if let Some(EntryKind::File { size, .. }) = next.map(|e| &e.kind) {
                logical_bytes += size;
            }
            next
        });
        let entries = (base.len() - self.removed.len() + self.added.len()) as u64;
        let digest = digest_of(entries, merged, root);
        StateSummary {
            digest,
            logical_bytes,
            entries,
        }
    }

    /// Whether nothing changed (an EMPTY artifact).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.root.is_none()
    }

    /// Blocks that the change set's entries use and that `base` does not have: what an
    /// artifact with this change set must store. Each digest once, in first-use order.
    pub fn blocks_missing_from(&self, base: &State) -> Vec<BlockRef> {
        let have = base.block_digests();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for e in self.added.iter().chain(&self.changed) {
            if let EntryKind::File { blocks, .. } = &e.kind {
                for b in blocks {
                    if !have.contains(&b.digest) && seen.insert(b.digest) {
                        out.push(*b);
                    }
                }
            }
        }
        out
    }

    /// Checks the change set on its own: every entry valid, each list sorted by path with
    /// no repeats, and no path in two lists.
    pub fn validate(&self) -> Result<(), Error> {
        for e in self.added.iter().chain(&self.changed) {
            e.validate()?;
        }
        let sorted = |paths: &mut dyn Iterator<Item = &EntryPath>| {
            let v: Vec<&EntryPath> = paths.collect();
            v.windows(2).all(|w| w[0] < w[1])
        };
        if !sorted(&mut self.added.iter().map(|e| &e.path))
            || !sorted(&mut self.changed.iter().map(|e| &e.path))
            || !sorted(&mut self.removed.iter())
        {
            return Err(Error::InvalidChangeSet {
                why: "a list is not sorted by path or repeats a path",
            });
        }
        let mut all = BTreeSet::new();
        let every = self
            .added
            .iter()
            .map(|e| &e.path)
            .chain(self.changed.iter().map(|e| &e.path))
            .chain(&self.removed);
        for p in every {
            if !all.insert(p) {
                return Err(Error::InvalidChangeSet {
                    why: "a path appears in more than one list",
                });
            }
        }
        Ok(())
    }

    fn check_conflicts(&self, state: &State) -> Result<(), ChangeConflict> {
        let conflict = |path: &EntryPath, why| ChangeConflict {
            path: path.clone(),
            why,
        };
        // The state merges the lists in path order (an index's decoder has checked this
        // already; a change set built in memory may not have been).
        let unsorted = |paths: &mut dyn Iterator<Item = &EntryPath>| {
            let mut last: Option<&EntryPath> = None;
            for p in paths {
                if last.is_some_and(|l| l >= p) {
                    return Some(p.clone());
                }
                last = Some(p);
            }
            None
        };
        let unsorted = unsorted(&mut self.added.iter().map(|e| &e.path))
            .or_else(|| unsorted(&mut self.changed.iter().map(|e| &e.path)))
            .or_else(|| unsorted(&mut self.removed.iter()));
        if let Some(path) = unsorted {
            return Err(ChangeConflict {
                path,
                why: "a list of the change set is not sorted by path or repeats this path",
            });
        }
        // Changed and removed are both sorted: one walk finds a path in both.
        let mut removed = self.removed.iter().peekable();
        for e in &self.changed {
            while removed.next_if(|p| **p < e.path).is_some() {}
            if removed.peek().is_some_and(|p| **p == e.path) {
                return Err(conflict(&e.path, "both changed and removed"));
            }
        }
        for e in &self.added {
            if state.position(&e.path).is_ok() {
                return Err(conflict(&e.path, "added, but it already exists"));
            }
        }
        for e in &self.changed {
            if state.position(&e.path).is_err() {
                return Err(conflict(&e.path, "changed, but it does not exist"));
            }
        }
        for p in &self.removed {
            if state.position(p).is_err() {
                return Err(conflict(p, "removed, but it does not exist"));
            }
        }
        Ok(())
    }
}

/// A backup's change set, built while it walks its source: each listed entry is compared
/// with the base state's entry of its path as it arrives, and only entries that are new or
/// differ are kept. A DIFF of a million unchanged files thus holds the base once, where
/// [`ChangeSet::between_owned`] needs the whole listed state beside it (the memory of a
/// DIFF of 1,000,000 files: docs/BENCHMARKS.md).
///
/// ```
/// use chain_core::{ChangeSetBuilder, Entry, EntryKind, EntryPath, Metadata, State};
/// let dir = |p: &str| Entry {
///     path: EntryPath::new(p).unwrap(),
///     kind: EntryKind::Directory,
///     meta: Metadata::default(),
///     stamp: None,
/// };
/// let base = State::from_entries([dir("a"), dir("b")]);
/// let mut listed = ChangeSetBuilder::new(&base);
/// listed.push(dir("c"))?;
/// listed.push(dir("a"))?;
/// let (changes, summary) = listed.finish(None)?;
/// assert_eq!(changes.added, [dir("c")]);
/// assert_eq!(changes.removed, [EntryPath::new("b").unwrap()]);
/// assert_eq!(summary, State::from_entries([dir("a"), dir("c")]).summary());
/// # Ok::<(), chain_core::ChangeConflict>(())
/// ```
#[derive(Debug)]
pub struct ChangeSetBuilder<'a> {
    base: &'a State,
    /// For each of the base's entries, whether an entry of its path was listed.
    listed: Vec<bool>,
    /// Listed entries that are new or differ from the base's, in the order they came.
    kept: Vec<Entry>,
}

impl<'a> ChangeSetBuilder<'a> {
    /// A change set against `base`, nothing listed yet.
    pub fn new(base: &'a State) -> Self {
        Self {
            base,
            listed: vec![false; base.len()],
            kept: Vec::new(),
        }
    }

    /// Records the entry the source lists at its path. A source lists each path once: a
    /// path listed again is refused (the listing is not a state).
    pub fn push(&mut self, entry: Entry) -> Result<(), ChangeConflict> {
        match self.base.position(&entry.path) {
            Ok(i) => {
                if std::mem::replace(&mut self.listed[i], true) {
                    return Err(Self::twice(&entry.path));
                }
                if self.base.entries[i] != entry {
                    self.kept.push(entry);
                }
            }
            Err(_) => self.kept.push(entry),
        }
        Ok(())
    }

    /// Records a listed regular file of `size` bytes, `meta` and `stamp` if the base
    /// records the file unchanged by them ([`FileStamp::unchanged`]): the listed entry is
    /// then the base's blocks under the listed metadata, recorded without reading the file
    /// (and, when it equals the base's entry, without building it). Returns `false`, having
    /// recorded nothing, when the file must be read and [`push`](Self::push)ed; a path
    /// recorded already is refused as by `push`.
    pub fn push_unchanged(
        &mut self,
        path: &EntryPath,
        size: u64,
        meta: &Metadata,
        stamp: Option<FileStamp>,
    ) -> Result<bool, ChangeConflict> {
        let Ok(i) = self.base.position(path) else {
            return Ok(false);
        };
        let recorded = &self.base.entries[i];
        if !FileStamp::unchanged(recorded, size, meta.mtime_ns, stamp) {
            return Ok(false);
        }
        if std::mem::replace(&mut self.listed[i], true) {
            return Err(Self::twice(path));
        }
        // The stamp is the base's already (`unchanged` compares it); other metadata can
        // differ only where a change kept the ctime, which a source may not record.
        if recorded.meta != *meta {
            self.kept.push(Entry {
                path: path.clone(),
                kind: recorded.kind.clone(),
                meta: meta.clone(),
                stamp,
            });
        }
        Ok(true)
    }

    /// The change set that turns the base into the listed state whose root directory's
    /// metadata is `root` (what [`ChangeSet::between_owned`] gives for that state), and the
    /// summary of that state (what its manifest records).
    pub fn finish(
        self,
        root: Option<Metadata>,
    ) -> Result<(ChangeSet, StateSummary), ChangeConflict> {
        let base = self.base;
        let mut kept = self.kept;
        sort_by_path(&mut kept);
        if let Some(w) = kept.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Self::twice(&w[0].path));
        }
        let mut cs = ChangeSet::default();
        if root != base.root {
            cs.root.clone_from(&root);
        }
        // What the base has is changed, the rest (all of a FULL's) added, in place.
        cs.changed = kept
            .extract_if(.., |e| base.position(&e.path).is_ok())
            .collect();
        cs.added = kept;
        cs.removed = base
            .entries
            .iter()
            .zip(&self.listed)
            .filter(|(_, listed)| !**listed)
            .map(|(e, _)| e.path.clone())
            .collect();
        let summary = cs.summary_over(base, root.as_ref());
        Ok((cs, summary))
    }

    fn twice(path: &EntryPath) -> ChangeConflict {
        ChangeConflict {
            path: path.clone(),
            why: "the source listed this path twice",
        }
    }
}

/// Applies a chain's change sets in order, starting from an empty state, and returns the
/// resulting state. The chain is given as `(artifact, its change set)` pairs, FULL first;
/// an error names the artifact whose change set does not apply.
///
/// ```
/// use chain_core::{compose, ArtifactId, ChangeSet, State};
/// # let id: ArtifactId = "neo4j-20260101T000000.000000Z-0000000000000001".parse()?;
/// let full = ChangeSet::default();
/// let state = compose([(&id, &full)])?;
/// assert_eq!(state, State::new());
/// # Ok::<(), chain_core::Error>(())
/// ```
pub fn compose<'a>(
    chain: impl IntoIterator<Item = (&'a ArtifactId, &'a ChangeSet)>,
) -> Result<State, Error> {
    compose_owned(chain.into_iter().map(|(id, changes)| (id, changes.clone())))
}

/// Like [`compose`], consuming the change sets (see [`State::apply_owned`]).
pub fn compose_owned<'a>(
    chain: impl IntoIterator<Item = (&'a ArtifactId, ChangeSet)>,
) -> Result<State, Error> {
    let mut state = State::new();
    for (artifact, changes) in chain {
        state
            .apply_owned(changes)
            .map_err(|conflict| Error::ComposeConflict {
                artifact: artifact.clone(),
                conflict,
            })?;
    }
    Ok(state)
}

/// Checks, before anything is written, everything about a composed state that would make a
/// restore refuse it or write something else than it records: an entry below a symbolic
/// link (writing it would go through the link, possibly outside the destination); a hard
/// link whose target is not a regular file of the state; a file
/// block that is empty or longer than [`crate::MAX_BLOCK_SIZE`]; blocks that do not add up
/// to their file's size; a block stored nowhere on the chain, or stored with another
/// length than the file records (`stored` gives the stored length of a block, `None` when
/// the chain stores it nowhere). One validation serves restore and check, so that a chain
/// check passes is a chain restore takes.
pub fn check_restorable(
    state: &State,
    stored: impl Fn(&Sha256Digest) -> Option<u32>,
) -> Result<(), Error> {
    let refuse = |path: &EntryPath, why: String| Error::Unrestorable {
        path: path.to_string(),
        why,
    };
    let links: BTreeSet<&EntryPath> = state
        .entries()
        .filter(|e| matches!(e.kind, EntryKind::Symlink { .. }))
        .map(|e| &e.path)
        .collect();
    for e in state.entries() {
        let mut ancestor = e.path.parent();
        while let Some(a) = ancestor {
            if links.contains(&&a) {
                return Err(refuse(
                    &e.path,
                    format!(
                        "it lies below the symbolic link {a}; refusing to write through a link"
                    ),
                ));
            }
            ancestor = a.parent();
        }
        if let EntryKind::HardLink { target } = &e.kind {
            match state.get(target).map(|t| &t.kind) {
                Some(EntryKind::File { .. }) => {}
                Some(_) => {
                    return Err(refuse(
                        &e.path,
                        format!("it is a hard link to {target}, which is not a regular file"),
                    ));
                }
                None => {
                    return Err(refuse(
                        &e.path,
                        format!("it is a hard link to {target}, which is not in the state"),
                    ));
                }
            }
            continue;
        }
        let EntryKind::File { size, blocks } = &e.kind else {
            continue;
        };
        let mut sum = 0u64;
        for (i, b) in blocks.iter().enumerate() {
            if b.len == 0 || b.len > crate::MAX_BLOCK_SIZE {
                return Err(refuse(
                    &e.path,
                    format!(
                        "block {i} has length {}, outside 1..={}",
                        b.len,
                        crate::MAX_BLOCK_SIZE
                    ),
                ));
            }
            match stored(&b.digest) {
                None => {
                    return Err(refuse(
                        &e.path,
                        format!("block {} is stored nowhere in the chain", b.digest),
                    ));
                }
                Some(len) if len != b.len => {
                    return Err(refuse(
                        &e.path,
                        format!(
                            "block {i} is recorded as {} bytes but stored as {len}",
                            b.len
                        ),
                    ));
                }
                Some(_) => {}
            }
            sum += u64::from(b.len);
        }
        if sum != *size {
            return Err(refuse(
                &e.path,
                format!("its blocks add up to {sum} bytes, its size is {size}"),
            ));
        }
    }
    Ok(())
}
