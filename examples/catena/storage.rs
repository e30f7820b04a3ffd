//! The storage flags and the one merge of values file, URL and flags.
//!
//! The flags are [`StorageOverrides`] itself (its `clap` feature): every storage key of the
//! chart is a flag and a `CATENA_*` variable, described once, so flags, environment and
//! values file cannot drift apart.

use catena::StorageConfig;
use catena::values::Values;

pub(crate) use catena::storage_backends::StorageOverrides as StorageFlags;

/// Where a command's backups are: the values file's storage keys, then the URL (which names
/// provider, bucket and prefix, or the directory), then flags and environment over both
/// ([`catena::values::storage_config`], the one place storage settings are merged).
pub(crate) fn config(
    flags: &StorageFlags,
    url: Option<&str>,
    values: Option<&Values>,
) -> Result<StorageConfig, String> {
    catena::values::storage_config(url, values, flags).map_err(|e| e.to_string())
}
