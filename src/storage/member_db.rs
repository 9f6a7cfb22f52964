//! The member's database directories: which RocksDB directory under `member/` holds the
//! current state, and replacing that state with a checkpoint made by another member so that a
//! crash at any point leaves either the whole old state or the whole new one.
//!
//! Owns: the names `member/db` (the directory of data dirs made before installs existed,
//! still used while no pointer exists), `member/db-<N>` (generation `N >= 1`), the pointer
//! file `member/db.current` naming the current one, the staged copy of a checkpoint, and the
//! removal of every such directory the pointer does not name.
//! Must not: know Raft, apply, or what the `meta` keys mean (the installer checks them
//! through a callback); touch anything else in `member/` (the WAL, snapshots, identity);
//! modify the checkpoint it installs from (the Raft layer keeps it and serves it onwards).
//!
//! Install, step by step, with the state a crash after each step restarts on:
//!
//! ```text
//! 1. copy the checkpoint into db-<N+1>: hard links for table files, copies
//!    of the rest; fsync every file, the new directory and member/        -> old
//! 2. open db-<N+1>, rebuild the MVCC index from it, run the caller's
//!    checks (applied position, membership)                               -> old
//! 3. with writers excluded: write db.current.tmp naming db-<N+1>, fsync,
//!    rename it over db.current, fsync member/                            -> old before the
//!                                                                           rename, new after
//! 4. swap the open store to the new backend and index                    -> new
//! 5. the old directory goes once its last reader drops it                -> new
//! ```
//!
//! Opening reads the pointer (no pointer: `db`) and removes every other `db`/`db-<N>`
//! directory, so what steps 1, 2 and 5 leave behind goes at the next start. A directory is
//! never named by the pointer before it is complete and durable, and the directory the
//! pointer names is never removed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::backend::{Backend, BackendError};
use super::mvcc::{MvccError, MvccStore};

/// The database directory of data dirs made before installs existed. It is opened (or
/// created, for a new member) while no pointer file exists, so old data dirs keep working.
pub const LEGACY_DB_DIR: &str = "db";

/// Prefix of the versioned database directories; the suffix is the generation, from 1.
pub const DB_DIR_PREFIX: &str = "db-";

/// The pointer file: the name of the current database directory and a newline. It is
/// replaced by rename only, so it always holds a complete name.
pub const POINTER_FILE: &str = "db.current";

/// The pointer is written under this name, fsynced, then renamed to [`POINTER_FILE`].
const POINTER_TMP_FILE: &str = "db.current.tmp";

/// RocksDB table files end in this. RocksDB never changes one after writing it (it writes
/// new ones and deletes old ones), so a copy may share them through hard links.
const TABLE_FILE_SUFFIX: &str = ".sst";

/// A failure of the directory layout or of an install.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberDbError {
    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `remove`, `copy to`, ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The pointer file does not name a database directory.
    #[error("pointer file {path} holds {content:?}, which names no database directory")]
    BadPointer {
        /// The pointer file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// The pointer names a directory that does not exist; nothing was removed.
    #[error("pointer file {pointer} names {dir}, which does not exist")]
    MissingCurrent {
        /// The pointer file.
        pointer: PathBuf,
        /// The directory it names.
        dir: PathBuf,
    },
    /// The current database could not be opened.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The current database holds history the MVCC store cannot load.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The checkpoint to install cannot be used; the current state is untouched and serving.
    #[error("cannot install checkpoint {checkpoint}: {reason}")]
    InvalidCheckpoint {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the pointer failed part way, so whether the old or the new directory is
    /// current on disk is known only when the member next opens it. The open store still
    /// serves the old state; the member must stop rather than apply more to it.
    #[error(
        "cannot switch {pointer} to {dir}; the state on disk is undetermined until restart: \
         {source}"
    )]
    Switch {
        /// The pointer file.
        pointer: PathBuf,
        /// The directory it was to name.
        dir: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl From<MemberDbError> for io::Error {
    /// For the Raft layer, which speaks `io::Error`: a bad checkpoint or a damaged layout is
    /// `InvalidData`, a file system failure keeps its kind.
    fn from(error: MemberDbError) -> io::Error {
        let kind = match &error {
            MemberDbError::Io { source, .. } | MemberDbError::Switch { source, .. } => {
                source.kind()
            }
            MemberDbError::BadPointer { .. }
            | MemberDbError::MissingCurrent { .. }
            | MemberDbError::InvalidCheckpoint { .. } => io::ErrorKind::InvalidData,
            MemberDbError::Backend(_) | MemberDbError::Mvcc(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

/// The state database of one member: the [`MvccStore`] over the current directory, and the
/// means to replace it with a checkpoint ([`MemberDb::install`]).
pub struct MemberDb {
    member_dir: PathBuf,
    store: Arc<MvccStore>,
    /// The highest generation this process has used: the current directory's at open, then
    /// raised by every install that stages a copy, failed ones included, so a staged name
    /// is never reused. Held for a whole install, so installs run one at a time. Taken
    /// before the store's locks.
    last_generation: Mutex<u64>,
}

impl std::fmt::Debug for MemberDb {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MemberDb")
            .field("member_dir", &self.member_dir)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl MemberDb {
    /// Opens the state database of the member whose directory is `member_dir` (which must
    /// exist): the directory the pointer names, or `db` (created if missing) when there is
    /// no pointer. Removes the database directories the pointer does not name.
    ///
    /// # Errors
    /// [`MemberDbError::BadPointer`] / [`MemberDbError::MissingCurrent`] for a damaged
    /// layout (nothing is removed then), [`MemberDbError::Io`] when a leftover cannot be
    /// removed, and the backend's or the MVCC store's error when the database cannot be
    /// opened.
    pub fn open(member_dir: &Path) -> Result<MemberDb, MemberDbError> {
        let pointer = read_pointer(member_dir)?;
        let generation = pointer.unwrap_or(0);
        let current = member_dir.join(dir_name(generation));
        if pointer.is_some() && !current.is_dir() {
            return Err(MemberDbError::MissingCurrent {
                pointer: member_dir.join(POINTER_FILE),
                dir: current,
            });
        }
        remove_leftovers(member_dir, generation)?;
        let backend = Backend::open(&current)?;
        let store = MvccStore::open(Arc::new(backend))?;
        Ok(MemberDb {
            member_dir: member_dir.to_path_buf(),
            store: Arc::new(store),
            last_generation: Mutex::new(generation),
        })
    }

    /// The store over the current state. It stays the same object across installs:
    /// [`MvccStore::replace`] swaps what is inside.
    #[must_use]
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    /// Directory of the database the store currently uses.
    #[must_use]
    pub fn current_dir(&self) -> PathBuf {
        self.store.backend().path().to_path_buf()
    }

    /// Replaces the whole state (every column family) with a copy of the RocksDB checkpoint
    /// in `checkpoint`, following the steps in the module docs. `check` sees the copy, opened
    /// and indexed, before anything is switched; its error refuses the checkpoint, and its
    /// value is returned once the new state is in place.
    ///
    /// `checkpoint` is only read: table files are hard-linked (copied when linking fails,
    /// for example across file systems) and every other file is copied.
    ///
    /// # Errors
    /// [`MemberDbError::InvalidCheckpoint`] when `checkpoint` is missing, is not a database
    /// with every column family, holds undecodable history or fails `check`;
    /// [`MemberDbError::Io`] when the copy cannot be written. In both cases the old state is
    /// untouched and still served. [`MemberDbError::Switch`] when the pointer could not be
    /// written (see there).
    pub fn install<T>(
        &self,
        checkpoint: &Path,
        check: impl FnOnce(&MvccStore) -> io::Result<T>,
    ) -> Result<T, MemberDbError> {
        let mut last_generation = self.last_generation.lock();
        let generation = *last_generation + 1;
        *last_generation = generation;
        let staged = self.member_dir.join(dir_name(generation));
        let (replacement, checked) = match stage(checkpoint, &staged, check) {
            Ok(staged) => staged,
            Err(error) => {
                // The copy is closed by now. A removal failure only leaves garbage, which
                // the next open removes.
                let _ = fs::remove_dir_all(&staged);
                return Err(error);
            }
        };
        let replaced = self.store.replace(replacement, || {
            write_pointer(&self.member_dir, generation).map_err(|source| MemberDbError::Switch {
                pointer: self.member_dir.join(POINTER_FILE),
                dir: staged.clone(),
                source,
            })
        })?;
        replaced.remove_when_closed();
        tracing::info!(
            from = %replaced.path().display(),
            to = %staged.display(),
            "installed a checkpoint"
        );
        Ok(checked)
    }
}

/// The directory name of `generation` (0 is the legacy name).
fn dir_name(generation: u64) -> String {
    if generation == 0 {
        LEGACY_DB_DIR.to_string()
    } else {
        format!("{DB_DIR_PREFIX}{generation}")
    }
}

/// The generation a directory name stands for, if it is one of ours (in canonical form, so
/// `db-01` is not mistaken for `db-1`).
fn parse_dir_name(name: &str) -> Option<u64> {
    if name == LEGACY_DB_DIR {
        return Some(0);
    }
    let generation: u64 = name.strip_prefix(DB_DIR_PREFIX)?.parse().ok()?;
    (generation > 0 && dir_name(generation) == name).then_some(generation)
}

/// The generation the pointer names, `None` when there is no pointer.
fn read_pointer(member_dir: &Path) -> Result<Option<u64>, MemberDbError> {
    let path = member_dir.join(POINTER_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MemberDbError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    let content = String::from_utf8_lossy(&bytes).into_owned();
    match content.strip_suffix('\n').and_then(parse_dir_name) {
        Some(generation) => Ok(Some(generation)),
        None => Err(MemberDbError::BadPointer { path, content }),
    }
}

/// Makes `generation` current on disk: after this returns, a restart opens it; if it fails,
/// a restart opens either it or the previous one.
fn write_pointer(member_dir: &Path, generation: u64) -> io::Result<()> {
    let temporary = member_dir.join(POINTER_TMP_FILE);
    let mut file = File::create(&temporary)?;
    file.write_all(format!("{}\n", dir_name(generation)).as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, member_dir.join(POINTER_FILE))?;
    sync_dir(member_dir)
}

/// Removes every database directory of `member_dir` other than `keep`'s, and a pointer left
/// half written.
fn remove_leftovers(member_dir: &Path, keep: u64) -> Result<(), MemberDbError> {
    let io_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| MemberDbError::Io {
            action,
            path,
            source,
        }
    };
    let entries = fs::read_dir(member_dir).map_err(io_error("list", member_dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list", member_dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let leftover_dir = parse_dir_name(&name).is_some_and(|generation| generation != keep);
        if leftover_dir {
            tracing::info!(path = %path.display(), "removing a database directory not in use");
            let is_dir = entry
                .file_type()
                .map_err(io_error("inspect", &path))?
                .is_dir();
            let removed = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io_error("remove", &path))?;
        } else if name == POINTER_TMP_FILE {
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

/// Steps 1 and 2 of an install: a durable copy of `checkpoint` at `staged`, opened, indexed
/// and checked.
fn stage<T>(
    checkpoint: &Path,
    staged: &Path,
    check: impl FnOnce(&MvccStore) -> io::Result<T>,
) -> Result<(MvccStore, T), MemberDbError> {
    copy_checkpoint(checkpoint, staged)?;
    let invalid = |reason: String| MemberDbError::InvalidCheckpoint {
        checkpoint: checkpoint.to_path_buf(),
        reason,
    };
    let backend = Backend::open_existing(staged).map_err(|error| invalid(error.to_string()))?;
    let store = MvccStore::open(Arc::new(backend)).map_err(|error| invalid(error.to_string()))?;
    let checked = check(&store).map_err(|error| invalid(error.to_string()))?;
    Ok((store, checked))
}

/// Copies the flat directory `checkpoint` into the new directory `target` and makes the copy
/// durable: every file, `target` itself and its entry in the parent directory.
fn copy_checkpoint(checkpoint: &Path, target: &Path) -> Result<(), MemberDbError> {
    let invalid = |reason: String| MemberDbError::InvalidCheckpoint {
        checkpoint: checkpoint.to_path_buf(),
        reason,
    };
    let io_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| MemberDbError::Io {
            action,
            path,
            source,
        }
    };
    // Listed before anything is created, so a missing checkpoint leaves no trace.
    let mut files = Vec::new();
    let entries = fs::read_dir(checkpoint).map_err(|error| invalid(error.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|error| invalid(error.to_string()))?;
        let file_type = entry
            .file_type()
            .map_err(|error| invalid(error.to_string()))?;
        // A checkpoint is a flat directory of regular files; anything else is not ours.
        if !file_type.is_file() {
            return Err(invalid(format!(
                "{} is not a regular file",
                entry.path().display()
            )));
        }
        files.push(entry.file_name());
    }

    fs::create_dir(target).map_err(io_error("create", target))?;
    for name in files {
        let from = checkpoint.join(&name);
        let to = target.join(&name);
        let is_table = name
            .to_str()
            .is_some_and(|name| name.ends_with(TABLE_FILE_SUFFIX));
        let linked = is_table && fs::hard_link(&from, &to).is_ok();
        if !linked {
            fs::copy(&from, &to).map_err(io_error("copy to", &to))?;
        }
        // A linked file is synced too: nothing says the checkpoint's files reached the disk.
        File::open(&to)
            .and_then(|file| file.sync_all())
            .map_err(io_error("sync", &to))?;
    }
    sync_dir(target).map_err(io_error("sync", target))?;
    if let Some(parent) = target.parent() {
        sync_dir(parent).map_err(io_error("sync", parent))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
