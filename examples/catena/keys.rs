//! Encryption flags and `catena key list|add|remove|passwd`.
//!
//! The secret that opens an encrypted repository comes from, in this order: `--key-file`,
//! `--passphrase-file`, `--encryption-secret-name` (the file `passphrase` of that secret
//! under the secrets directory, as the chart mounts secrets), `CATENA_PASSPHRASE`, or a
//! prompt when the repository is encrypted and stdin is a terminal.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use catena::Repository;
use catena::chain_core::Secret;
use catena::chain_core::crypto::Argon2Params;
use clap::{Args, Subcommand};

use crate::ctx::{Ctx, Outcome, open_repository, print_json};
use crate::output::Format;
use crate::storage::StorageFlags;

/// Where the passphrase or key file of an encrypted repository comes from. The first
/// backup of a new repository given one creates it encrypted.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct EncryptionFlags {
    /// A file holding the repository's passphrase (a trailing newline is ignored).
    #[arg(long, global = true, env = "CATENA_PASSPHRASE_FILE")]
    pub(crate) passphrase_file: Option<PathBuf>,
    /// A key file: at least 32 random bytes (`head -c 32 /dev/urandom > FILE`).
    #[arg(long, global = true, env = "CATENA_KEY_FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// The secret holding the passphrase, as the chart mounts secrets: the file
    /// `<secretsDir>/<NAME>/passphrase`.
    #[arg(long, global = true, env = "CATENA_ENCRYPTION_SECRET_NAME")]
    pub(crate) encryption_secret_name: Option<String>,
}

fn read_secret_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the {what} {}: {e}; check the path and its permissions",
            path.display()
        )
    })
}

fn passphrase_bytes(bytes: Vec<u8>, whence: &str) -> Result<Secret, String> {
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the passphrase in {whence} is not UTF-8 text"))?;
    Secret::passphrase(text).map_err(|e| format!("{whence}: {e}"))
}

impl EncryptionFlags {
    /// The secret given, if any (no prompt).
    pub(crate) fn secret(&self, secrets_dir: &Path) -> Result<Option<Secret>, String> {
        if let Some(path) = &self.key_file {
            let bytes = read_secret_file(path, "key file")?;
            return Secret::key_file(bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        if let Some(path) = &self.passphrase_file {
            let bytes = read_secret_file(path, "passphrase file")?;
            return passphrase_bytes(bytes, &path.display().to_string()).map(Some);
        }
        if let Some(name) = &self.encryption_secret_name {
            let path = secrets_dir.join(name).join("passphrase");
            let bytes = read_secret_file(&path, "encryption secret")?;
            return passphrase_bytes(bytes, &path.display().to_string()).map(Some);
        }
        if let Ok(text) = std::env::var("CATENA_PASSPHRASE") {
            return passphrase_bytes(text.into_bytes(), "CATENA_PASSPHRASE").map(Some);
        }
        Ok(None)
    }
}

/// Asks for a passphrase on the terminal (not echoed); `None` when stdin is not one.
pub(crate) fn prompt(question: &str) -> Result<Option<Secret>, String> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let text = rpassword::prompt_password(question)
        .map_err(|e| format!("cannot read a passphrase from the terminal: {e}"))?;
    Secret::passphrase(text)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub(crate) struct KeyArgs {
    #[command(subcommand)]
    pub(crate) command: KeyCommand,
}

/// The repository a `key` command works on.
#[derive(Args, Debug)]
pub(crate) struct KeyTarget {
    /// Where the backups are (URL or directory).
    #[arg(long)]
    pub(crate) from_path: String,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
    /// List the key slots (never any key material).
    List(KeyTarget),
    /// Add a slot for another passphrase or key file; the data is not re-encrypted.
    Add {
        #[command(flatten)]
        target: KeyTarget,
        #[command(flatten)]
        new: NewSecret,
    },
    /// Remove a slot by id (`catena key list`); the last one is never removed.
    Remove {
        /// The slot's id.
        id: String,
        #[command(flatten)]
        target: KeyTarget,
    },
    /// Replace the slot this command was opened with by one for a new passphrase or key
    /// file.
    Passwd {
        #[command(flatten)]
        target: KeyTarget,
        #[command(flatten)]
        new: NewSecret,
    },
}

impl KeyCommand {
    fn target(&self) -> &KeyTarget {
        match self {
            KeyCommand::List(t)
            | KeyCommand::Add { target: t, .. }
            | KeyCommand::Remove { target: t, .. }
            | KeyCommand::Passwd { target: t, .. } => t,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct NewSecret {
    /// A file holding the new passphrase.
    #[arg(long)]
    pub(crate) new_passphrase_file: Option<PathBuf>,
    /// A new key file (at least 32 random bytes).
    #[arg(long)]
    pub(crate) new_key_file: Option<PathBuf>,
}

impl NewSecret {
    fn secret(&self) -> Result<Secret, String> {
        if let Some(path) = &self.new_key_file {
            let bytes = read_secret_file(path, "new key file")?;
            return Secret::key_file(bytes).map_err(|e| format!("{}: {e}", path.display()));
        }
        if let Some(path) = &self.new_passphrase_file {
            let bytes = read_secret_file(path, "new passphrase file")?;
            return passphrase_bytes(bytes, &path.display().to_string());
        }
        match prompt("new passphrase: ")? {
            Some(first) => match prompt("new passphrase again: ")? {
                Some(again) if same(&first, &again) => Ok(first),
                _ => Err("the two passphrases differ; nothing was changed".into()),
            },
            None => Err("give --new-passphrase-file or --new-key-file".into()),
        }
    }
}

fn same(a: &Secret, b: &Secret) -> bool {
    match (a, b) {
        (Secret::Passphrase(a), Secret::Passphrase(b)) => a == b,
        _ => false,
    }
}

/// `catena key ...`.
pub(crate) async fn run(args: KeyArgs, ctx: &Ctx) -> Outcome {
    let target = args.command.target();
    let config = crate::storage::config(&target.storage, Some(&target.from_path), None)?;
    let repo: Repository = open_repository(config, ctx, false).await?;
    let params = Argon2Params::default();
    match args.command {
        KeyCommand::List(_) => {
            let slots = catena::keys::list_keys(&repo).await?;
            if ctx.format == Format::Json {
                print_json(&slots);
            } else {
                println!("{:<18} {:<11} {:<21} COST", "SLOT", "KIND", "CREATED");
                for s in &slots {
                    let kind = serde_json::to_value(s.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    println!(
                        "{:<18} {:<11} {:<21} {}{}",
                        s.id,
                        kind,
                        s.created_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                        s.argon2id.map_or_else(
                            || "-".to_owned(),
                            |p| format!(
                                "argon2id {} MiB x{} /{}",
                                p.memory_kib >> 10,
                                p.iterations,
                                p.parallelism
                            )
                        ),
                        if s.current {
                            "  (opened this command)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        KeyCommand::Add { new, .. } => {
            let id = catena::keys::add_key(&repo, &new.secret()?, params).await?;
            println!("added key slot {id}");
        }
        KeyCommand::Remove { id, .. } => {
            catena::keys::remove_key(&repo, &id).await?;
            println!("removed key slot {id}");
        }
        KeyCommand::Passwd { new, .. } => {
            let id = catena::keys::change_key(&repo, &new.secret()?, params).await?;
            println!("replaced the key slot this command was opened with by {id}");
        }
    }
    Ok(true)
}
