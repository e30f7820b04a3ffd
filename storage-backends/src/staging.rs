//! Staging files of a local-directory store.
//!
//! `object_store`'s local store writes every object to `<key>#<n>` next to its final path
//! and renames it into place when the write completes. A process killed in between leaves
//! the staging file behind, and no listing shows it (the store hides names ending in `#`
//! and digits). These functions find them, so that check can report them and garbage
//! collection can remove them. (An S3 multipart upload left open by a killed process is the
//! equivalent there; an `AbortIncompleteMultipartUpload` lifecycle rule removes those.)

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A staging file left by an interrupted write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagingFile {
    /// Its path.
    pub path: PathBuf,
    /// Its key relative to the store root, with the `#<n>` suffix.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// Whether a file name is a staging name: `<name>#<digits>`.
pub fn is_staging_name(name: &str) -> bool {
    matches!(name.rsplit_once('#'), Some((base, n)) if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The staging files under `root/under` (recursively), sorted by key. A directory that does
/// not exist has none.
pub fn staging_files(root: &Path, under: &str) -> std::io::Result<Vec<StagingFile>> {
    let mut out = Vec::new();
    let mut todo = vec![root.join(under)];
    while let Some(dir) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            let path = entry.path();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() && is_staging_name(&entry.file_name().to_string_lossy()) {
                let key = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                out.push(StagingFile {
                    key,
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    path,
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_told_apart() {
        assert!(is_staging_name("neo4j-x.data#1"));
        assert!(is_staging_name("a#12"));
        assert!(!is_staging_name("a#"));
        assert!(!is_staging_name("#1"));
        assert!(!is_staging_name("a#b"));
        assert!(!is_staging_name("a.data"));
    }

    #[test]
    fn staging_files_are_found_below_the_root() {
        let dir = tempfile::tempdir().expect("test");
        std::fs::create_dir_all(dir.path().join("neo4j")).expect("test");
        std::fs::write(dir.path().join("neo4j/x.data#3"), b"abc").expect("test");
        std::fs::write(dir.path().join("neo4j/x.data"), b"abc").expect("test");
        let found = staging_files(dir.path(), "neo4j").expect("test");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "neo4j/x.data#3");
        assert_eq!(found[0].size, 3);
        assert!(
            staging_files(dir.path(), "missing")
                .expect("test")
                .is_empty()
        );
    }
}
