//! The RocksDB backend: ordered byte maps (column families), atomic write batches,
//! point-in-time snapshots, checkpoints and size metrics.
//!
//! Owns: the RocksDB instance, its options (one shared LRU block cache, modest memtables) and
//! the list of column families.
//! Must not: know revisions, leases, Raft or protobuf. Callers give it bytes; it gives bytes back.
//! It times each batch commit for `etcd_disk_backend_commit_duration_seconds` and nothing else.
//!
//! Durability: [`Backend::write`] does not fsync. The Raft WAL is the durable record, and
//! every entry after the last applied index recorded in the backend is applied again after a
//! crash. RocksDB's own WAL stays enabled so that a process crash without an OS crash loses
//! nothing and a torn batch is never visible: a batch is all-or-nothing.
//!
//! Every [`BackendError`] is fatal for the caller: the on-disk state can no longer be trusted
//! to match the in-memory state built on top of it. The exception is
//! [`Backend::open_existing`] on a directory received from elsewhere, whose failure only
//! means that directory is not a usable database.
//!
//! A database that was replaced can be marked with [`Backend::remove_when_closed`]: its
//! directory goes once the last handle drops and RocksDB has closed it, so readers that
//! still hold the old handle keep working until they finish.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DB, DBCompressionType,
    DBRawIteratorWithThreadMode, DataBlockIndexType, Options, ReadOptions, SnapshotWithThreadMode,
    WriteBatch, WriteOptions, checkpoint::Checkpoint, properties,
};

use crate::limits::{BACKEND_SIZE_REFRESH_INTERVAL, BACKEND_STALL_RECHECK_INTERVAL};

/// Size of the block cache shared by every column family. Hot MVCC rows are also
/// served from memtables, so a modest cache is enough on the small machines we target.
pub const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Memtable size of the `kv` column family, which takes almost all writes.
pub const KV_WRITE_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Memtable size of the small column families (meta, lease, auth, members).
pub const SMALL_WRITE_BUFFER_BYTES: usize = 2 * 1024 * 1024;

/// Memtables per column family (one active plus one being flushed).
pub const WRITE_BUFFERS_PER_CF_MAX: i32 = 2;

/// RocksDB background threads (flushes plus compactions); CI machines have two cores.
pub const BACKGROUND_JOBS_MAX: i32 = 2;

/// Total size of RocksDB WAL files before the column families holding the oldest one are
/// flushed. Without it a rarely written column family would pin old WAL files forever.
pub const ROCKSDB_WAL_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Bloom filter bits per key: point lookups of history rows by revision are the common read.
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// RocksDB's informational LOG files kept on disk.
const INFO_LOG_FILES_KEPT: usize = 4;

const _: () = assert!(SMALL_WRITE_BUFFER_BYTES <= KV_WRITE_BUFFER_BYTES);
const _: () = assert!(ROCKSDB_WAL_BYTES_MAX >= KV_WRITE_BUFFER_BYTES as u64);

/// A column family of the backend. Each is an independent ordered map of byte keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// MVCC history rows keyed by revision; owned by `storage::mvcc`.
    Kv,
    /// Small bookkeeping values (compact revision, applied log id, ...).
    Meta,
    /// Lease records; owned by the lease layer.
    Lease,
    /// Users, roles and the auth switch; owned by the auth layer.
    Auth,
    /// Cluster membership; owned by the Raft/server layer.
    Members,
}

impl Cf {
    /// Every column family the backend creates.
    pub const ALL: [Cf; 5] = [Cf::Kv, Cf::Meta, Cf::Lease, Cf::Auth, Cf::Members];

    /// The RocksDB name of the column family. These names are an on-disk format.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Cf::Kv => "kv",
            Cf::Meta => "meta",
            Cf::Lease => "lease",
            Cf::Auth => "auth",
            Cf::Members => "members",
        }
    }

    fn slot(self) -> usize {
        match self {
            Cf::Kv => 0,
            Cf::Meta => 1,
            Cf::Lease => 2,
            Cf::Auth => 3,
            Cf::Members => 4,
        }
    }
}

/// A failure of the backend. Callers treat every variant as fatal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The database could not be opened (or its column families listed).
    #[error("cannot open rocksdb at {path}: {source}")]
    Open {
        /// Directory of the database.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A read, write or iteration failed.
    #[error("rocksdb {operation} failed: {source}")]
    Rocks {
        /// What was being done (`get`, `write`, `scan`, ...).
        operation: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// An existing database was required and `path` is not one (or lacks a column family).
    #[error("{path} is not a usable database: {reason}")]
    Invalid {
        /// Directory that was to be opened.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint could not be created.
    #[error("cannot create rocksdb checkpoint at {target}: {source}")]
    Checkpoint {
        /// Directory the checkpoint was to be written to.
        target: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
}

/// One change inside a [`BackendBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum BatchOp {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    DeleteRange {
        cf: Cf,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// A set of changes applied atomically by [`Backend::write`], in insertion order (a delete
/// after a put of the same key wins, and the other way round).
///
/// It holds owned bytes and no handle to the database, so it can be built anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendBatch {
    ops: Vec<BatchOp>,
}

impl BackendBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> BackendBatch {
        BackendBatch::default()
    }

    /// Sets `key` to `value` in `cf`.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Removes `key` from `cf` (a no-op when absent).
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            cf,
            key: key.into(),
        });
    }

    /// Removes every key in `[from, to)` from `cf`.
    pub fn delete_range(&mut self, cf: Cf, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::DeleteRange {
            cf,
            from: from.into(),
            to: to.into(),
        });
    }

    /// True when the batch holds no change.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of changes in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// The RocksDB database of one member.
///
/// It is `Send + Sync`; share it as `Arc<Backend>`. All methods block on disk I/O, so async
/// callers must run them on a blocking thread.
pub struct Backend {
    db: DB,
    path: PathBuf,
    /// The last [`Backend::size_bytes`] reading and when it was taken, for
    /// [`Backend::size_bytes_recent`].
    size_seen: parking_lot::Mutex<Option<(Instant, u64)>>,
    /// When [`Backend::writes_may_wait`] last found that writes would not wait, if it did.
    unstalled_seen: parking_lot::Mutex<Option<Instant>>,
    /// Declared after `db`: fields drop in order, so the directory is removed only after
    /// RocksDB has closed every file in it.
    removal: RemoveOnClose,
}

/// Removes a database directory on drop once armed by [`Backend::remove_when_closed`].
#[derive(Debug)]
struct RemoveOnClose {
    path: PathBuf,
    armed: AtomicBool,
}

impl Drop for RemoveOnClose {
    fn drop(&mut self) {
        if !*self.armed.get_mut() {
            return;
        }
        // Nothing can be returned from a drop. The directory is unused garbage by now, and
        // whoever owns the directory layout removes leftovers when it next opens.
        if let Err(err) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "cannot remove a replaced database");
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Backend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Opens (or creates) the database in `dir`, creating missing column families.
    ///
    /// Column families found on disk that this version does not know (written by a newer
    /// version, say) are opened too and left alone, because RocksDB refuses to open a
    /// database without naming all of them.
    ///
    /// # Errors
    /// [`BackendError::Open`] when RocksDB cannot open the directory.
    ///
    /// # Panics
    /// When RocksDB opens without one of the requested column families (a RocksDB bug).
    pub fn open(dir: &Path) -> Result<Backend, BackendError> {
        Backend::open_with(dir, false)
    }

    /// Opens the database in `dir` only if it exists and has every column family of
    /// [`Cf::ALL`]; nothing is created. This is how a copy received from another member is
    /// checked: [`Backend::open`] would turn an empty or partial directory into a valid,
    /// empty database.
    ///
    /// # Errors
    /// [`BackendError::Invalid`] when `dir` holds no database or misses a column family,
    /// [`BackendError::Open`] when RocksDB cannot open it (for example a damaged manifest).
    ///
    /// # Panics
    /// As [`Backend::open`].
    pub fn open_existing(dir: &Path) -> Result<Backend, BackendError> {
        Backend::open_with(dir, true)
    }

    fn open_with(dir: &Path, must_exist: bool) -> Result<Backend, BackendError> {
        let open_error = |source| BackendError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let invalid = |reason: String| BackendError::Invalid {
            path: dir.to_path_buf(),
            reason,
        };
        // A clock cache: lookups take no shard mutex, where the LRU cache's lock and list
        // upkeep were most of a cached point read. An estimated entry charge of 0 lets
        // RocksDB size its table from the entries it sees.
        let cache = Cache::new_hyper_clock_cache(BLOCK_CACHE_BYTES, 0);

        let mut db_options = Options::default();
        db_options.create_if_missing(!must_exist);
        db_options.create_missing_column_families(!must_exist);
        db_options.set_max_background_jobs(BACKGROUND_JOBS_MAX);
        db_options.set_max_total_wal_size(ROCKSDB_WAL_BYTES_MAX);
        db_options.set_keep_log_file_num(INFO_LOG_FILES_KEPT);

        // Only an existing database can be asked for its column families.
        let is_database = dir.join("CURRENT").is_file();
        if must_exist && !is_database {
            return Err(invalid("no rocksdb CURRENT file".to_string()));
        }
        let existing = if is_database {
            DB::list_cf(&db_options, dir).map_err(open_error)?
        } else {
            Vec::new()
        };
        if must_exist {
            for cf in Cf::ALL {
                if !existing.iter().any(|name| name == cf.name()) {
                    return Err(invalid(format!("column family {} missing", cf.name())));
                }
            }
        }

        let mut descriptors: Vec<ColumnFamilyDescriptor> = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), column_family_options(cf, &cache)))
            .collect();
        for name in existing {
            let known = name == "default" || Cf::ALL.iter().any(|cf| cf.name() == name);
            if !known {
                let options = column_family_options(Cf::Meta, &cache);
                descriptors.push(ColumnFamilyDescriptor::new(name, options));
            }
        }

        let db = DB::open_cf_descriptors(&db_options, dir, descriptors).map_err(open_error)?;
        let backend = Backend {
            db,
            path: dir.to_path_buf(),
            size_seen: parking_lot::Mutex::new(None),
            unstalled_seen: parking_lot::Mutex::new(None),
            removal: RemoveOnClose {
                path: dir.to_path_buf(),
                armed: AtomicBool::new(false),
            },
        };
        for cf in Cf::ALL {
            // Pair assertion with the descriptors above: every handle resolves from now on.
            assert!(
                backend.db.cf_handle(cf.name()).is_some(),
                "column family {} missing",
                cf.name()
            );
        }
        Ok(backend)
    }

    /// Directory of the database.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the database as replaced: its directory is removed when the last handle to it
    /// drops, after RocksDB has closed it. Handles still held keep reading until then.
    /// A crash before that leaves the directory to whoever owns the directory layout.
    pub fn remove_when_closed(&self) {
        self.removal.armed.store(true, Ordering::Release);
    }

    /// The value of `key` in `cf`, if any.
    ///
    /// # Errors
    /// [`BackendError::Rocks`] on a read failure.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.db
            .get_cf(&self.handle(cf), key)
            .map_err(|source| BackendError::Rocks {
                operation: "get",
                source,
            })
    }

    /// Applies `batch` atomically. The write is not synced (see the module docs).
    ///
    /// # Errors
    /// [`BackendError::Rocks`] on a write failure; nothing of the batch is applied then.
    pub fn write(&self, batch: BackendBatch) -> Result<(), BackendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let handles = Cf::ALL.map(|cf| self.handle(cf));
        let mut write_batch = WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    write_batch.put_cf(&handles[cf.slot()], key, value);
                }
                BatchOp::Delete { cf, key } => write_batch.delete_cf(&handles[cf.slot()], key),
                BatchOp::DeleteRange { cf, from, to } => {
                    write_batch.delete_range_cf(&handles[cf.slot()], from, to);
                }
            }
        }
        let mut write_options = WriteOptions::default();
        write_options.set_sync(false);
        write_options.disable_wal(false);
        // Timed here, around the one call that commits the batch, as etcd times its
        // backend commit; the apply layer above keeps no clock.
        let started = std::time::Instant::now();
        let written = self
            .db
            .write_opt(write_batch, &write_options)
            .map_err(|source| BackendError::Rocks {
                operation: "write",
                source,
            });
        crate::metrics::get()
            .backend_commit
            .observe(started.elapsed().as_secs_f64());
        written
    }

    /// Iterates over the keys of `cf` in `[from, to)` in ascending byte order; `to = None`
    /// means "to the end". The iterator reads the latest state, not a snapshot; use
    /// [`Backend::snapshot`] for a consistent view across several reads.
    ///
    /// An error ends the iteration: it is yielded once, then `None` follows.
    #[must_use]
    pub fn scan(&self, cf: Cf, from: &[u8], to: Option<&[u8]>) -> BackendIter<'_> {
        let options = scan_options(from, to);
        BackendIter::start(self.db.raw_iterator_cf_opt(&self.handle(cf), options), from)
    }

    /// A consistent point-in-time view of every column family. Writes made after this call
    /// are invisible through it, and rows it can see are never reclaimed while it lives.
    #[must_use]
    pub fn snapshot(&self) -> BackendSnapshot<'_> {
        BackendSnapshot {
            backend: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// Writes a consistent copy of the database to `target_dir`, which must not exist yet
    /// and should be on the same filesystem (table files are hard-linked, not copied).
    /// Memtables are flushed first, so the copy holds every write made before the call.
    ///
    /// # Errors
    /// [`BackendError::Checkpoint`] when RocksDB cannot create it (for example when the
    /// directory already exists).
    pub fn checkpoint(&self, target_dir: &Path) -> Result<(), BackendError> {
        let checkpoint_error = |source| BackendError::Checkpoint {
            target: target_dir.to_path_buf(),
            source,
        };
        let checkpoint = Checkpoint::new(&self.db).map_err(checkpoint_error)?;
        checkpoint
            .create_checkpoint(target_dir)
            .map_err(checkpoint_error)
    }

    /// Flushes every memtable to table files. Not needed for durability (see the module
    /// docs); useful before measuring sizes and in tests.
    ///
    /// # Errors
    /// [`BackendError::Rocks`] on a flush failure.
    pub fn flush(&self) -> Result<(), BackendError> {
        for cf in Cf::ALL {
            self.db
                .flush_cf(&self.handle(cf))
                .map_err(|source| BackendError::Rocks {
                    operation: "flush",
                    source,
                })?;
        }
        Ok(())
    }

    /// Rewrites every column family's table files in one full compaction, dropping what
    /// deletions and overwrites left behind: mnemo's defragment. Blocking; it can take seconds
    /// on a large database, so callers run it off the async threads. Readers and writers go on
    /// meanwhile (RocksDB compacts in the background of its own locks), unlike etcd's defragment,
    /// which blocks the member.
    ///
    /// # Errors
    /// [`BackendError::Rocks`] when a flush fails (the compaction itself reports no error).
    pub fn compact_all(&self) -> Result<(), BackendError> {
        // Memtables first, so that their dead entries are compacted away as well.
        self.flush()?;
        for cf in Cf::ALL {
            self.db
                .compact_range_cf(&self.handle(cf), None::<&[u8]>, None::<&[u8]>);
        }
        // The size just shrank: the quota check must not go on with the old reading.
        *self.size_seen.lock() = None;
        Ok(())
    }

    /// Bytes the database takes: table files plus memtables of every column family
    /// (RocksDB's own WAL is not counted). This is `Status.dbSize` and what the quota checks.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.sum_property(properties::TOTAL_SST_FILES_SIZE)
            + self.sum_property(properties::SIZE_ALL_MEM_TABLES)
    }

    /// [`Backend::size_bytes`] as read at most [`BACKEND_SIZE_REFRESH_INTERVAL`] ago. The
    /// quota check asks before every write; reading RocksDB's properties takes its mutex and
    /// walks every column family, which is worth doing a few times a second, not per write.
    #[must_use]
    pub fn size_bytes_recent(&self) -> u64 {
        let mut seen = self.size_seen.lock();
        match *seen {
            Some((at, size)) if at.elapsed() < BACKEND_SIZE_REFRESH_INTERVAL => size,
            _ => {
                let size = self.size_bytes();
                *seen = Some((Instant::now(), size));
                size
            }
        }
    }

    /// Bytes holding live data: RocksDB's estimate of live table data plus the memtables in
    /// use, never more than [`Backend::size_bytes`]. This is `Status.dbSizeInUse`; the gap to
    /// `size_bytes` is what RocksDB's own compaction will reclaim.
    #[must_use]
    pub fn size_in_use_bytes(&self) -> u64 {
        let in_use = self.sum_property(properties::ESTIMATE_LIVE_DATA_SIZE)
            + self.sum_property(properties::CUR_SIZE_ALL_MEM_TABLES);
        in_use.min(self.size_bytes())
    }

    /// Whether a write now might wait inside RocksDB: writes are being delayed or stopped
    /// until compaction catches up, or a column family still has a full memtable waiting for
    /// its flush, so that the next one to fill would have to wait for it (each has at most
    /// [`WRITE_BUFFERS_PER_CF_MAX`]). A property RocksDB cannot report counts as a yes, so a
    /// caller that must not wait takes the slow way.
    ///
    /// A "no" is reused for [`BACKEND_STALL_RECHECK_INTERVAL`]; a "yes" is read afresh every
    /// time, so the caller is back on its fast path as soon as RocksDB catches up.
    #[must_use]
    pub fn writes_may_wait(&self) -> bool {
        let mut seen = self.unstalled_seen.lock();
        if seen.is_some_and(|at| at.elapsed() < BACKEND_STALL_RECHECK_INTERVAL) {
            return false;
        }
        let may_wait = self.writes_may_wait_now();
        *seen = (!may_wait).then(Instant::now);
        may_wait
    }

    fn writes_may_wait_now(&self) -> bool {
        let read = |name: &properties::PropName| self.db.property_int_value(name).ok().flatten();
        let stopped = read(properties::IS_WRITE_STOPPED);
        let delayed_rate = read(properties::ACTUAL_DELAYED_WRITE_RATE);
        if !matches!((stopped, delayed_rate), (Some(0), Some(0))) {
            return true;
        }
        Cf::ALL.iter().any(|&cf| {
            let unflushed = self
                .db
                .property_int_value_cf(&self.handle(cf), properties::NUM_IMMUTABLE_MEM_TABLE)
                .ok()
                .flatten();
            unflushed.is_none_or(|count| {
                count.saturating_add(1) >= u64::from(WRITE_BUFFERS_PER_CF_MAX.unsigned_abs())
            })
        })
    }

    /// Sum of an integer property over our column families. These are metrics only, so a
    /// property RocksDB cannot report counts as zero instead of failing the caller.
    fn sum_property(&self, name: &properties::PropName) -> u64 {
        Cf::ALL
            .iter()
            .map(|&cf| {
                self.db
                    .property_int_value_cf(&self.handle(cf), name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            })
            .sum()
    }

    fn handle(&self, cf: Cf) -> Arc<BoundColumnFamily<'_>> {
        // `open` created and checked every column family, and none is ever dropped.
        let handle = self.db.cf_handle(cf.name());
        handle.unwrap_or_else(|| panic!("column family {} missing after open", cf.name()))
    }
}

/// A point-in-time view of the backend; see [`Backend::snapshot`].
pub struct BackendSnapshot<'a> {
    backend: &'a Backend,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl BackendSnapshot<'_> {
    /// The value of `key` in `cf` as of the snapshot.
    ///
    /// # Errors
    /// [`BackendError::Rocks`] on a read failure.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.snapshot
            .get_cf(&self.backend.handle(cf), key)
            .map_err(|source| BackendError::Rocks {
                operation: "snapshot get",
                source,
            })
    }

    /// Like [`Backend::scan`], as of the snapshot.
    #[must_use]
    pub fn scan(&self, cf: Cf, from: &[u8], to: Option<&[u8]>) -> BackendIter<'_> {
        let options = scan_options(from, to);
        let raw = self
            .snapshot
            .raw_iterator_cf_opt(&self.backend.handle(cf), options);
        BackendIter::start(raw, from)
    }

    /// CRC-32 of every row of every column family, each family's name first: the whole
    /// database as of the snapshot (Maintenance.Hash). It covers bookkeeping such as the
    /// applied log position, so members agree only when they have applied exactly as far.
    ///
    /// # Errors
    /// [`BackendError::Rocks`] on a read failure.
    pub fn hash_all(&self) -> Result<u32, BackendError> {
        let mut hasher = crc32fast::Hasher::new();
        for cf in Cf::ALL {
            hasher.update(cf.name().as_bytes());
            for row in self.scan_uncached(cf, &[], None) {
                let (key, value) = row?;
                hasher.update(&key);
                hasher.update(&value);
            }
        }
        Ok(hasher.finalize())
    }

    /// Like [`BackendSnapshot::scan`] for a one-off pass over much of the database (a
    /// snapshot dump): the blocks it reads are not put in the block cache, so the pass
    /// neither evicts the hot rows nor grows the cache's memory.
    #[must_use]
    pub fn scan_uncached(&self, cf: Cf, from: &[u8], to: Option<&[u8]>) -> BackendIter<'_> {
        let mut options = scan_options(from, to);
        options.fill_cache(false);
        let raw = self
            .snapshot
            .raw_iterator_cf_opt(&self.backend.handle(cf), options);
        BackendIter::start(raw, from)
    }
}

/// Ascending iterator over a key interval of one column family; see [`Backend::scan`].
pub struct BackendIter<'a> {
    raw: DBRawIteratorWithThreadMode<'a, DB>,
    done: bool,
}

impl<'a> BackendIter<'a> {
    fn start(mut raw: DBRawIteratorWithThreadMode<'a, DB>, from: &[u8]) -> BackendIter<'a> {
        raw.seek(from);
        BackendIter { raw, done: false }
    }
}

impl Iterator for BackendIter<'_> {
    type Item = Result<(Box<[u8]>, Box<[u8]>), BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some((key, value)) = self.raw.item() {
            let item = (Box::from(key), Box::from(value));
            self.raw.next();
            return Some(Ok(item));
        }
        // An invalid iterator is either exhausted or failed; only status() tells which.
        self.done = true;
        match self.raw.status() {
            Ok(()) => None,
            Err(source) => Some(Err(BackendError::Rocks {
                operation: "scan",
                source,
            })),
        }
    }
}

fn scan_options(from: &[u8], to: Option<&[u8]>) -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_iterate_lower_bound(from.to_vec());
    if let Some(to) = to {
        options.set_iterate_upper_bound(to.to_vec());
    }
    options
}

fn column_family_options(cf: Cf, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    table.set_cache_index_and_filter_blocks(true);
    // Newly flushed files are the hot ones: their index and filter stay in the cache
    // without a lookup on every read.
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // A hash index inside each data block finds a point key without a binary search.
    table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);

    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    // Snappy (RocksDB's default) is not compiled in; LZ4 is cheap and always available here.
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_max_write_buffer_number(WRITE_BUFFERS_PER_CF_MAX);
    options.set_write_buffer_size(match cf {
        Cf::Kv => KV_WRITE_BUFFER_BYTES,
        Cf::Meta | Cf::Lease | Cf::Auth | Cf::Members => SMALL_WRITE_BUFFER_BYTES,
    });
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(iter: BackendIter<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        iter.map(|item| {
            let (key, value) = item.unwrap();
            (key.to_vec(), value.to_vec())
        })
        .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        items
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn batch_applies_puts_deletes_and_range_deletes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let mut batch = BackendBatch::new();
        assert!(batch.is_empty());
        for key in ["a", "b", "c", "d", "e"] {
            batch.put(Cf::Lease, key, format!("v{key}"));
        }
        batch.delete(Cf::Lease, "b");
        batch.delete_range(Cf::Lease, "c", "e");
        batch.put(Cf::Lease, "d", "again");
        batch.put(Cf::Auth, "a", "other family");
        assert_eq!(batch.len(), 9);
        backend.write(batch).unwrap();

        let all = collect(backend.scan(Cf::Lease, b"", None));
        assert_eq!(all, pairs(&[("a", "va"), ("d", "again"), ("e", "ve")]));
        assert_eq!(
            backend.get(Cf::Auth, b"a").unwrap().unwrap(),
            b"other family"
        );
        assert_eq!(backend.get(Cf::Kv, b"a").unwrap(), None);
    }

    #[test]
    fn scan_bounds_are_inclusive_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let mut batch = BackendBatch::new();
        for key in ["a", "b", "ba", "c"] {
            batch.put(Cf::Meta, key, key);
        }
        backend.write(batch).unwrap();
        let keys = |from: &str, to: Option<&str>| -> Vec<Vec<u8>> {
            let iter = backend.scan(Cf::Meta, from.as_bytes(), to.map(str::as_bytes));
            collect(iter).into_iter().map(|(key, _)| key).collect()
        };
        assert_eq!(keys("b", Some("c")), vec![b"b".to_vec(), b"ba".to_vec()]);
        assert_eq!(keys("ba", None), vec![b"ba".to_vec(), b"c".to_vec()]);
        assert!(keys("c", Some("c")).is_empty());
        assert!(keys("d", None).is_empty());
    }

    #[test]
    fn snapshot_ignores_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let mut batch = BackendBatch::new();
        batch.put(Cf::Kv, "k", "old");
        backend.write(batch).unwrap();
        let snapshot = backend.snapshot();
        let mut batch = BackendBatch::new();
        batch.put(Cf::Kv, "k", "new");
        batch.put(Cf::Kv, "l", "new");
        backend.write(batch).unwrap();
        assert_eq!(snapshot.get(Cf::Kv, b"k").unwrap().unwrap(), b"old");
        assert_eq!(
            collect(snapshot.scan(Cf::Kv, b"", None)),
            pairs(&[("k", "old")])
        );
        assert_eq!(backend.get(Cf::Kv, b"k").unwrap().unwrap(), b"new");
    }

    #[test]
    fn reopen_keeps_data_and_tolerates_unknown_column_families() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = Backend::open(dir.path()).unwrap();
            let mut batch = BackendBatch::new();
            batch.put(Cf::Members, "m", "1");
            backend.write(batch).unwrap();
            // A column family this version does not know, as a newer version might add.
            backend
                .db
                .create_cf("from_the_future", &Options::default())
                .unwrap();
        }
        let backend = Backend::open(dir.path()).unwrap();
        assert_eq!(backend.get(Cf::Members, b"m").unwrap().unwrap(), b"1");
        assert_eq!(backend.path(), dir.path());
    }

    #[test]
    fn checkpoint_is_an_openable_copy() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(&dir.path().join("db")).unwrap();
        let mut batch = BackendBatch::new();
        batch.put(Cf::Kv, "k", "v");
        backend.write(batch).unwrap();
        let target = dir.path().join("checkpoint");
        backend.checkpoint(&target).unwrap();
        assert!(matches!(
            backend.checkpoint(&target),
            Err(BackendError::Checkpoint { .. })
        ));

        let mut batch = BackendBatch::new();
        batch.put(Cf::Kv, "after", "v");
        backend.write(batch).unwrap();
        let copy = Backend::open(&target).unwrap();
        assert_eq!(copy.get(Cf::Kv, b"k").unwrap().unwrap(), b"v");
        assert_eq!(copy.get(Cf::Kv, b"after").unwrap(), None);
    }

    #[test]
    fn open_existing_refuses_what_open_would_create() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let error = Backend::open_existing(&empty).unwrap_err();
        assert!(matches!(error, BackendError::Invalid { .. }), "{error}");
        assert!(error.to_string().contains("CURRENT"), "{error}");
        // Nothing was created in the refused directory.
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        assert!(matches!(
            Backend::open_existing(&dir.path().join("absent")),
            Err(BackendError::Invalid { .. })
        ));

        // A RocksDB database without our column families.
        let foreign = dir.path().join("foreign");
        let mut options = Options::default();
        options.create_if_missing(true);
        drop(DB::open(&options, &foreign).unwrap());
        let error = Backend::open_existing(&foreign).unwrap_err();
        assert!(
            error.to_string().contains("column family kv missing"),
            "{error}"
        );

        let ours = dir.path().join("ours");
        drop(Backend::open(&ours).unwrap());
        Backend::open_existing(&ours).unwrap();
    }

    #[test]
    fn replaced_database_is_removed_after_its_last_handle_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let backend = Arc::new(Backend::open(&path).unwrap());
        let mut batch = BackendBatch::new();
        batch.put(Cf::Kv, "k", "v");
        backend.write(batch).unwrap();
        let reader = Arc::clone(&backend);
        backend.remove_when_closed();
        drop(backend);
        // A reader still holding the database keeps reading it.
        assert!(path.is_dir());
        assert_eq!(reader.get(Cf::Kv, b"k").unwrap().unwrap(), b"v");
        drop(reader);
        assert!(!path.exists());

        // An unmarked database stays.
        drop(Backend::open(&path).unwrap());
        assert!(path.is_dir());
    }

    #[test]
    fn sizes_grow_with_data_and_in_use_never_exceeds_total() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let empty = backend.size_bytes();
        let mut batch = BackendBatch::new();
        for index in 0..2_000u32 {
            batch.put(Cf::Kv, index.to_be_bytes(), vec![7u8; 100]);
        }
        backend.write(batch).unwrap();
        backend.flush().unwrap();
        assert!(
            backend.size_bytes() > empty,
            "{} <= {empty}",
            backend.size_bytes()
        );
        assert!(backend.size_in_use_bytes() <= backend.size_bytes());
        assert!(backend.size_in_use_bytes() > 0);
    }
}
