//! `mnemo snapshot restore`: builds the data dir of a founding member of a NEW cluster from a
//! snapshot file, as `etcdutl snapshot restore` does for etcd.
//!
//! Owns: which records of a snapshot a restored member keeps, the staging directory a restore
//! builds in, and the identity (member id, cluster id) it stores.
//! Must not: start a member or touch a data dir that exists; leave anything behind when it
//! fails (the data dir appears, by one rename, only once it is complete and synced).
//!
//! What is kept: the whole key history (`kv`: every key with its create and mod revisions and
//! version), so the current and compact revisions stay those of the snapshot; the lease table
//! (keys stay attached; every lease starts its TTL afresh when the new cluster's leader takes
//! over); auth rows; the MVCC store's own `meta` keys.
//! What is dropped: the applied log position and membership (`raft.*`) and the `members`
//! family, because membership, member ids and the log come from the restore flags, as etcd's
//! restore rewrites them; and raised alarms, which name members of the old cluster.
//! etcd-compat: etcd 3.4's restore keeps its alarm bucket, so a NOSPACE raised in the old
//! cluster would refuse writes in the new one; we drop alarms instead.
//!
//! The restored member starts with an empty Raft log and bootstraps like any founding member,
//! but with the identity and membership stored here (derived from the restore's flags the way
//! a founding member derives them from its own), so the clustering flags it is started with
//! do not matter, as with etcd.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::config::{Config, ConfigError};
use super::identity::Identity;
use crate::apply::{META_APPLIED, META_MEMBERSHIP};
use crate::snapshot::{HashCheck, Records, SnapshotError, verify};
use crate::storage::backend::{Backend, BackendBatch, Cf};
use crate::storage::member_db::LEGACY_DB_DIR;
use crate::storage::mvcc::MvccStore;
use crate::types::Revision;

/// Bytes of rows written to RocksDB in one batch while restoring: large enough to be fast,
/// small enough that a large snapshot never sits in memory whole.
const RESTORE_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What to restore and where.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The new member: `name`, `data_dir`, `initial_cluster`, `initial_cluster_token` and
    /// `initial_advertise_peer_urls` are used, as etcd's restore uses its flags.
    pub config: Config,
    /// Do not check the SHA-256 trailer, and accept a file without one (etcd's
    /// `--skip-hash-check`).
    pub skip_hash_check: bool,
}

/// What a restore built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The new data dir.
    pub data_dir: PathBuf,
    /// The restored member's id.
    pub member_id: u64,
    /// The new cluster's id.
    pub cluster_id: u64,
    /// The revision the store holds.
    pub revision: Revision,
    /// The compact revision it holds.
    pub compact_revision: Revision,
    /// Snapshot records written.
    pub record_count: u64,
}

/// Why a restore failed; nothing was left on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The target data dir exists (etcd's message).
    #[error("data-dir {:?} exists", .0.display().to_string())]
    DataDirExists(PathBuf),
    /// The flags do not describe a member of a cluster.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The snapshot file is unreadable, damaged or not a snapshot.
    #[error("snapshot {}: {source}", path.display())]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: SnapshotError,
    },
    /// The snapshot's rows do not make the store its header describes.
    #[error("snapshot {}: inconsistent: {reason}", path.display())]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// Building the data dir failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The new database could not be written.
    #[error("building the data dir: {0}")]
    Storage(String),
}

/// Restores `options.snapshot` into `options.config.data_dir`; see the module docs.
///
/// # Errors
/// [`RestoreError`]; the data dir does not exist afterwards unless it existed before
/// ([`RestoreError::DataDirExists`]).
pub fn restore(options: &RestoreOptions) -> Result<Restored, RestoreError> {
    let config = &options.config;
    let data_dir = &config.data_dir;
    if data_dir.exists() {
        return Err(RestoreError::DataDirExists(data_dir.clone()));
    }
    config.validate()?;
    let mut identity = Identity::for_new_cluster(config).map_err(|error| match error {
        super::NodeError::Config(config) => RestoreError::Config(config),
        other => RestoreError::Storage(other.to_string()),
    })?;
    identity.bootstrap_members = Some(Identity::initial_members(config));
    let snapshot_error = |source| RestoreError::Snapshot {
        path: options.snapshot.clone(),
        source,
    };

    // The whole file is checked before anything is created.
    let open = || {
        File::open(&options.snapshot).map_err(|source| RestoreError::Io {
            action: "open",
            path: options.snapshot.clone(),
            source,
        })
    };
    let file = open()?;
    let file_bytes = file
        .metadata()
        .map_err(|source| RestoreError::Io {
            action: "inspect",
            path: options.snapshot.clone(),
            source,
        })?
        .len();
    let check = if options.skip_hash_check {
        HashCheck::Skip
    } else {
        HashCheck::Required
    };
    let verified = verify(BufReader::new(file), file_bytes, check).map_err(snapshot_error)?;

    let staging = staging_dir(data_dir)?;
    let built = build(options, &staging, &identity);
    let restored = built.and_then(|restored| {
        fs::rename(&staging, data_dir).map_err(|source| RestoreError::Io {
            action: "rename the staged data dir to",
            path: data_dir.clone(),
            source,
        })?;
        sync_parent(data_dir)?;
        Ok(restored)
    });
    match restored {
        Ok(restored) => {
            assert_eq!(
                restored.revision, verified.header.revision,
                "restore checked the revision"
            );
            Ok(restored)
        }
        Err(error) => {
            // Best effort: a leftover staging dir is removed by the next restore anyway.
            let _ = fs::remove_dir_all(&staging);
            Err(error)
        }
    }
}

/// The directory a restore into `data_dir` builds in: a hidden sibling, so the final rename
/// stays on one file system. One left by a restore that crashed is removed.
fn staging_dir(data_dir: &Path) -> Result<PathBuf, RestoreError> {
    let name = data_dir.file_name().ok_or_else(|| RestoreError::Io {
        action: "use",
        path: data_dir.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the data dir has no name"),
    })?;
    let parent = match data_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut staged_name = std::ffi::OsString::from(".");
    staged_name.push(name);
    staged_name.push(".restoring");
    let staging = parent.join(staged_name);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|source| RestoreError::Io {
            action: "remove the leftover",
            path: staging.clone(),
            source,
        })?;
    }
    fs::create_dir_all(&parent).map_err(|source| RestoreError::Io {
        action: "create",
        path: parent.clone(),
        source,
    })?;
    Ok(staging)
}

/// Whether a restored member keeps `record` (see the module docs).
fn keeps(cf: Cf, key: &[u8]) -> bool {
    match cf {
        Cf::Kv | Cf::Lease | Cf::Auth => true,
        Cf::Meta => {
            key != META_APPLIED
                && key != META_MEMBERSHIP
                && !key.starts_with(crate::alarm::ROW_PREFIX)
        }
        Cf::Members => false,
    }
}

fn build(
    options: &RestoreOptions,
    staging: &Path,
    identity: &Identity,
) -> Result<Restored, RestoreError> {
    let storage = |error: &dyn std::fmt::Display| RestoreError::Storage(error.to_string());
    let snapshot_error = |source| RestoreError::Snapshot {
        path: options.snapshot.clone(),
        source,
    };
    let member_dir = staging.join("member");
    fs::create_dir_all(&member_dir).map_err(io_error("create", &member_dir))?;
    let backend = Backend::open(&member_dir.join(LEGACY_DB_DIR)).map_err(|e| storage(&e))?;

    let file = File::open(&options.snapshot).map_err(io_error("open", &options.snapshot))?;
    let records = Records::new(BufReader::new(file)).map_err(snapshot_error)?;
    let header = *records.header();
    let mut batch = BackendBatch::new();
    let mut batch_bytes = 0usize;
    let mut record_count = 0u64;
    for record in records {
        let record = record.map_err(snapshot_error)?;
        record_count += 1;
        if !keeps(record.cf, &record.key) {
            continue;
        }
        batch_bytes += record.key.len() + record.value.len();
        batch.put(record.cf, record.key, record.value);
        if batch_bytes >= RESTORE_BATCH_BYTES {
            backend
                .write(std::mem::take(&mut batch))
                .map_err(|e| storage(&e))?;
            batch_bytes = 0;
        }
    }
    backend.write(batch).map_err(|e| storage(&e))?;
    backend.flush().map_err(|e| storage(&e))?;

    // Open it as the member will, and check it is the store the header describes.
    let store = MvccStore::open(Arc::new(backend)).map_err(|error| RestoreError::Inconsistent {
        path: options.snapshot.clone(),
        reason: error.to_string(),
    })?;
    let found = (store.current_revision(), store.compact_revision());
    if found != (header.revision, header.compact_revision) {
        return Err(RestoreError::Inconsistent {
            path: options.snapshot.clone(),
            reason: format!(
                "the header says revision {} compacted at {}, the rows make revision {} \
                 compacted at {}",
                header.revision, header.compact_revision, found.0, found.1
            ),
        });
    }
    drop(store);

    identity.save(&member_dir).map_err(|e| storage(&e))?;
    sync_tree(staging)?;
    Ok(Restored {
        data_dir: options.config.data_dir.clone(),
        member_id: identity.member_id,
        cluster_id: identity.cluster_id,
        revision: header.revision,
        compact_revision: header.compact_revision,
        record_count,
    })
}

/// Fsyncs every file and directory under `dir` (a few dozen: RocksDB's files, the identity),
/// so the data dir is durable before it appears under its name.
fn sync_tree(dir: &Path) -> Result<(), RestoreError> {
    let entries = fs::read_dir(dir).map_err(io_error("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list", dir))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(io_error("inspect", &path))?
            .is_dir()
        {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(io_error("sync", &path))?;
        }
    }
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(io_error("sync", dir))
}

/// An I/O failure of `action` on `path`, for `map_err`.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io {
        action,
        path,
        source,
    }
}

fn sync_parent(path: &Path) -> Result<(), RestoreError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&parent)
        .and_then(|file| file.sync_all())
        .map_err(|source| RestoreError::Io {
            action: "sync",
            path: parent,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::{Alarm, AlarmType, row_key};
    use crate::types::{LeaseId, PutRequest};

    /// A snapshot file of a store holding a key, a lease row, an alarm and the Raft rows.
    fn snapshot_file(dir: &Path) -> PathBuf {
        let store = MvccStore::open(Arc::new(Backend::open(&dir.join("source")).unwrap())).unwrap();
        let mut txn = store.write();
        let request = PutRequest {
            key: bytes::Bytes::from_static(b"k"),
            value: bytes::Bytes::from_static(b"v"),
            ..PutRequest::default()
        };
        txn.put(&request, &|_: LeaseId| false).unwrap();
        txn.put_raw(Cf::Lease, &5i64.to_be_bytes(), &[0; 16]);
        let alarm = Alarm {
            member: 9,
            kind: AlarmType::NoSpace,
        };
        txn.put_raw(Cf::Meta, &row_key(alarm), &[]);
        txn.put_raw(Cf::Meta, META_APPLIED, &[1; 16]);
        txn.put_raw(Cf::Meta, META_MEMBERSHIP, b"{}");
        txn.commit().unwrap();
        let path = dir.join("snapshot.db");
        let file = File::create(&path).unwrap();
        let (_, sha, mut file) = crate::snapshot::dump(&store, |_| Ok(file)).unwrap();
        crate::snapshot::write_trailer(&mut file, &sha).unwrap();
        path
    }

    fn options(snapshot: PathBuf, data_dir: PathBuf) -> RestoreOptions {
        RestoreOptions {
            snapshot,
            config: Config {
                data_dir,
                ..Config::default()
            },
            skip_hash_check: false,
        }
    }

    #[test]
    fn restore_keeps_keys_and_leases_and_drops_raft_rows_and_alarms() {
        let dir = tempfile::tempdir().unwrap();
        let file = snapshot_file(dir.path());
        let data_dir = dir.path().join("restored");
        let restored = restore(&options(file.clone(), data_dir.clone())).unwrap();
        assert_eq!(restored.revision, 2);
        let expected = Identity::for_new_cluster(&Config::default()).unwrap();
        assert_eq!(restored.member_id, expected.member_id);
        assert_eq!(restored.cluster_id, expected.cluster_id);

        let member_dir = data_dir.join("member");
        let backend = Backend::open_existing(&member_dir.join(LEGACY_DB_DIR)).unwrap();
        assert!(
            backend
                .get(Cf::Lease, &5i64.to_be_bytes())
                .unwrap()
                .is_some()
        );
        assert_eq!(backend.get(Cf::Meta, META_APPLIED).unwrap(), None);
        assert_eq!(backend.get(Cf::Meta, META_MEMBERSHIP).unwrap(), None);
        let alarms = backend.scan(Cf::Meta, crate::alarm::ROW_PREFIX, Some(b"alarm0"));
        assert_eq!(alarms.count(), 0);
        drop(backend);
        let identity = Identity::load(&member_dir, &Config::default())
            .unwrap()
            .unwrap();
        let members = identity.bootstrap_members.unwrap();
        assert_eq!(
            members.keys().copied().collect::<Vec<_>>(),
            vec![expected.member_id]
        );
        // Nothing but the data dir was made next to it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");

        // A second restore into it is refused with etcd's message.
        let error = restore(&options(file, data_dir)).unwrap_err();
        assert!(error.to_string().ends_with("restored\" exists"), "{error}");
    }

    #[test]
    fn a_refused_restore_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = snapshot_file(dir.path());
        let mut bytes = fs::read(&file).unwrap();
        bytes[60] ^= 1;
        fs::write(&file, &bytes).unwrap();
        let data_dir = dir.path().join("restored");
        let error = restore(&options(file.clone(), data_dir.clone())).unwrap_err();
        assert!(error.to_string().contains("expected sha256"), "{error}");
        assert!(!data_dir.exists());

        // The hash check skipped, the damaged record is still caught by its structure or
        // by the store check, and nothing is left either.
        bytes[HEADER_BYTES_FOR_TEST] = 77;
        fs::write(&file, &bytes).unwrap();
        let mut skipping = options(file, data_dir.clone());
        skipping.skip_hash_check = true;
        let error = restore(&skipping).unwrap_err();
        assert!(error.to_string().contains("malformed"), "{error}");
        assert!(!data_dir.exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// Where the first record starts: its column family code.
    const HEADER_BYTES_FOR_TEST: usize = crate::snapshot::HEADER_BYTES;
}
