//! Tests of the member's database directories: which directory opens, an install done in
//! place, refused checkpoints, and a crash between any two steps of an install. A crash is
//! simulated by running the install's steps directly, dropping everything open (the process
//! is gone) and opening the member directory again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tempfile::TempDir;

use super::*;
use crate::storage::backend::{BackendBatch, Cf};
use crate::storage::mvcc::HashKv;
use crate::types::{DeleteRangeRequest, KeyRange, LeaseId, PutRequest, RangeRequest, Revision};

/// One row of a column family: the family, the key and the value.
type Row = (Cf, Box<[u8]>, Box<[u8]>);

/// Everything a store holds that an install must carry over, compared as a whole.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    current_revision: Revision,
    compact_revision: Revision,
    hash: HashKv,
    kvs: Vec<(Bytes, Bytes)>,
    /// Every row of the column families the MVCC store does not own.
    others: Vec<Row>,
}

fn fingerprint(store: &MvccStore) -> Fingerprint {
    let all = RangeRequest {
        range: KeyRange::new(b"\0".to_vec(), b"\0".to_vec()),
        ..RangeRequest::default()
    };
    let kvs = store
        .range(&all)
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    let backend = store.backend();
    let mut others = Vec::new();
    for cf in [Cf::Meta, Cf::Lease, Cf::Auth, Cf::Members] {
        for item in backend.scan(cf, b"", None) {
            let (key, value) = item.unwrap();
            others.push((cf, key, value));
        }
    }
    Fingerprint {
        current_revision: store.current_revision(),
        compact_revision: store.compact_revision(),
        hash: store.hash_kv(0).unwrap(),
        kvs,
        others,
    }
}

/// One committed batch: puts, then deletes, then an optional compaction at the revision
/// reached, plus one row in each column family the store does not own.
fn write(store: &MvccStore, puts: &[(&str, &str)], deletes: &[&str], compact: bool, tag: &str) {
    let no_leases = |_: LeaseId| false;
    let mut txn = store.write();
    for (key, value) in puts {
        let request = PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..PutRequest::default()
        };
        txn.put(&request, &no_leases).unwrap();
    }
    for key in deletes {
        let request = DeleteRangeRequest {
            range: KeyRange::single(key.as_bytes().to_vec()),
            prev_kv: false,
        };
        txn.delete_range(&request).unwrap();
    }
    if compact {
        txn.compact(txn.current_revision()).unwrap();
    }
    for cf in [Cf::Meta, Cf::Lease, Cf::Auth, Cf::Members] {
        txn.put_raw(
            cf,
            format!("{tag}/{}", cf.name()).as_bytes(),
            tag.as_bytes(),
        );
    }
    txn.commit().unwrap();
}

/// A member directory holding the "old" state, opened.
fn old_member() -> (TempDir, MemberDb) {
    let dir = tempfile::tempdir().unwrap();
    let db = MemberDb::open(dir.path()).unwrap();
    write(db.store(), &[("a", "old"), ("b", "old")], &[], false, "old");
    write(db.store(), &[("a", "old-2")], &["b"], false, "old");
    (dir, db)
}

/// A checkpoint of a store holding the "new" state (history, deletes and a compaction), and
/// that state's fingerprint. The returned guard keeps the directories.
fn new_checkpoint() -> (TempDir, PathBuf, Fingerprint) {
    let dir = tempfile::tempdir().unwrap();
    let source = MemberDb::open(&created(dir.path().join("source-member"))).unwrap();
    write(
        source.store(),
        &[("x", "1"), ("y", "1"), ("z", "1")],
        &[],
        false,
        "new",
    );
    write(source.store(), &[("x", "2")], &["y"], true, "new");
    write(source.store(), &[("x", "3"), ("w", "1")], &[], false, "new");
    let checkpoint = dir.path().join("checkpoint");
    source.store().backend().checkpoint(&checkpoint).unwrap();
    let expected = fingerprint(source.store());
    (dir, checkpoint, expected)
}

/// Creates the directory `path` and hands it back.
fn created(path: PathBuf) -> PathBuf {
    fs::create_dir_all(&path).unwrap();
    path
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file of `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    names(dir)
        .into_iter()
        .map(|name| {
            let bytes = fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_member_without_pointer_opens_the_legacy_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A data dir written before installs existed: the database sits in `db`.
    {
        let backend = Arc::new(Backend::open(&dir.path().join("db")).unwrap());
        let store = MvccStore::open(backend).unwrap();
        write(&store, &[("k", "v")], &[], false, "legacy");
    }
    let db = MemberDb::open(dir.path()).unwrap();
    assert_eq!(db.current_dir(), dir.path().join(LEGACY_DB_DIR));
    assert_eq!(
        fingerprint(db.store()).kvs,
        vec![(Bytes::from("k"), Bytes::from("v"))]
    );
    assert!(!dir.path().join(POINTER_FILE).exists());
}

#[test]
fn install_switches_the_open_store_and_a_restart_keeps_the_new_state() {
    let (_source_dir, checkpoint, expected) = new_checkpoint();
    let (dir, db) = old_member();
    let taken_before = Arc::clone(db.store());
    let checked = db
        .install(&checkpoint, |store| Ok(store.current_revision()))
        .unwrap();
    assert_eq!(checked, expected.current_revision);
    assert_eq!(fingerprint(&taken_before), expected);
    assert_eq!(db.current_dir(), dir.path().join("db-1"));
    // No reader held the old database, so it is gone already.
    assert_eq!(names(dir.path()), ["db-1", POINTER_FILE]);

    drop((db, taken_before));
    let db = MemberDb::open(dir.path()).unwrap();
    assert_eq!(fingerprint(db.store()), expected);

    // A second install moves on to the next generation.
    let (_other_dir, other_checkpoint, other) = new_checkpoint();
    db.install(&other_checkpoint, |_| Ok(())).unwrap();
    assert_eq!(db.current_dir(), dir.path().join("db-2"));
    assert_eq!(names(dir.path()), ["db-2", POINTER_FILE]);
    assert_eq!(fingerprint(db.store()), other);
}

#[test]
fn install_links_table_files_and_never_changes_the_checkpoint() {
    use std::os::unix::fs::MetadataExt;

    let (_source_dir, checkpoint, expected) = new_checkpoint();
    let before = contents(&checkpoint);
    assert!(before.keys().any(|name| name.ends_with(TABLE_FILE_SUFFIX)));
    let (dir, db) = old_member();
    db.install(&checkpoint, |_| Ok(())).unwrap();
    let installed = dir.path().join("db-1");
    for name in before.keys() {
        let inode = |dir: &Path| fs::metadata(dir.join(name)).map(|metadata| metadata.ino());
        if name.ends_with(TABLE_FILE_SUFFIX) {
            assert_eq!(
                inode(&installed).unwrap(),
                inode(&checkpoint).unwrap(),
                "{name}"
            );
        } else if let Ok(copied) = inode(&installed) {
            // Opening the copy may already have retired some (an old manifest, say).
            assert_ne!(copied, inode(&checkpoint).unwrap(), "{name}");
        }
    }

    // Heavy use of the installed copy: new table files, compactions deleting linked ones.
    for round in 0..20 {
        let value = format!("{round}").repeat(1000);
        let puts: Vec<(String, &str)> = (0..50).map(|key| (format!("k{key}"), &*value)).collect();
        let puts: Vec<(&str, &str)> = puts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        write(db.store(), &puts, &["x"], round % 5 == 4, "after");
        db.store().backend().flush().unwrap();
    }
    assert_eq!(contents(&checkpoint), before);
    // The checkpoint still installs elsewhere, unchanged.
    let (_other_dir, other) = old_member();
    other.install(&checkpoint, |_| Ok(())).unwrap();
    assert_eq!(fingerprint(other.store()), expected);
}

#[test]
fn an_unusable_checkpoint_is_refused_and_the_old_state_keeps_serving() {
    let (dir, db) = old_member();
    let old = fingerprint(db.store());
    let scratch = tempfile::tempdir().unwrap();

    let empty = created(scratch.path().join("empty"));
    let garbage = created(scratch.path().join("garbage"));
    fs::write(garbage.join("CURRENT"), b"MANIFEST-000042\n").unwrap();
    fs::write(garbage.join("MANIFEST-000042"), b"not a manifest").unwrap();
    let foreign = scratch.path().join("foreign");
    {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        drop(rocksdb::DB::open(&options, &foreign).unwrap());
    }
    let nested = created(scratch.path().join("nested"));
    fs::create_dir(nested.join("sub")).unwrap();
    // A database of ours whose history rows do not decode.
    let corrupt_source = scratch.path().join("corrupt-source");
    let corrupt = scratch.path().join("corrupt");
    {
        let backend = Backend::open(&corrupt_source).unwrap();
        let mut batch = BackendBatch::new();
        batch.put(Cf::Kv, "not a revision", "not a row");
        backend.write(batch).unwrap();
        backend.checkpoint(&corrupt).unwrap();
    }
    let cases = [
        (scratch.path().join("absent"), "No such file"),
        (empty, "CURRENT"),
        (garbage, "is not a usable database"),
        (foreign, "column family kv missing"),
        (nested, "not a regular file"),
        (corrupt, "corrupt mvcc history"),
    ];
    for (checkpoint, reason) in cases {
        let error = db.install(&checkpoint, |_| Ok(())).unwrap_err();
        assert!(
            matches!(error, MemberDbError::InvalidCheckpoint { .. }),
            "{}: {error}",
            checkpoint.display()
        );
        let message = error.to_string();
        assert!(message.contains(reason), "{message}");
        assert_eq!(io::Error::from(error).kind(), io::ErrorKind::InvalidData);
        assert_eq!(fingerprint(db.store()), old, "{}", checkpoint.display());
        assert_eq!(names(dir.path()), [LEGACY_DB_DIR], "{message}");
    }

    // The caller's check refuses a good checkpoint just the same.
    let (_source_dir, checkpoint, expected) = new_checkpoint();
    let error = db
        .install(&checkpoint, |_| -> io::Result<()> {
            Err(io::Error::other("applied position is garbage"))
        })
        .unwrap_err();
    assert!(error.to_string().contains("applied position is garbage"));
    assert_eq!(fingerprint(db.store()), old);

    // The store still takes writes, and a good checkpoint still installs.
    write(db.store(), &[("c", "old")], &[], false, "old");
    db.install(&checkpoint, |_| Ok(())).unwrap();
    assert_eq!(fingerprint(db.store()), expected);
    let reopened = {
        drop(db);
        MemberDb::open(dir.path()).unwrap()
    };
    assert_eq!(fingerprint(reopened.store()), expected);
}

#[test]
fn crash_before_the_pointer_switch_restarts_on_the_old_state() {
    let (_source_dir, checkpoint, _) = new_checkpoint();
    let (dir, db) = old_member();
    let old = fingerprint(db.store());
    drop(db);

    // Steps 1 and 2 done: a complete copy, opened and indexed (RocksDB wrote to it).
    let (staged, ()) = stage(&checkpoint, &dir.path().join("db-1"), |_| Ok(())).unwrap();
    drop(staged);
    // A copy cut short.
    let partial = created(dir.path().join("db-2"));
    fs::copy(checkpoint.join("CURRENT"), partial.join("CURRENT")).unwrap();
    // A pointer written but never renamed into place.
    fs::write(dir.path().join(POINTER_TMP_FILE), b"db-1\n").unwrap();

    let db = MemberDb::open(dir.path()).unwrap();
    assert_eq!(fingerprint(db.store()), old);
    assert_eq!(names(dir.path()), [LEGACY_DB_DIR]);
    // The generation the crash left behind is free again.
    db.install(&checkpoint, |_| Ok(())).unwrap();
    assert_eq!(db.current_dir(), dir.path().join("db-1"));
}

#[test]
fn crash_after_the_pointer_switch_restarts_on_the_new_state() {
    let (_source_dir, checkpoint, expected) = new_checkpoint();
    let (dir, db) = old_member();
    drop(db);

    // Steps 1 to 3 done; the old directory was not removed yet.
    let (staged, ()) = stage(&checkpoint, &dir.path().join("db-1"), |_| Ok(())).unwrap();
    drop(staged);
    write_pointer(dir.path(), 1).unwrap();

    let db = MemberDb::open(dir.path()).unwrap();
    assert_eq!(fingerprint(db.store()), expected);
    assert_eq!(names(dir.path()), ["db-1", POINTER_FILE]);
    write(db.store(), &[("after", "1")], &[], false, "after");
    let first = fingerprint(db.store());
    drop(db);

    // The next install: switched to db-2, and the crash hit while db-1 was being removed.
    let (_other_dir, other_checkpoint, other) = new_checkpoint();
    let (staged, ()) = stage(&other_checkpoint, &dir.path().join("db-2"), |_| Ok(())).unwrap();
    drop(staged);
    write_pointer(dir.path(), 2).unwrap();
    fs::remove_file(dir.path().join("db-1").join("CURRENT")).unwrap();

    let db = MemberDb::open(dir.path()).unwrap();
    let reopened = fingerprint(db.store());
    assert_eq!(reopened, other);
    assert_ne!(reopened, first);
    assert_eq!(names(dir.path()), ["db-2", POINTER_FILE]);
}

#[test]
fn a_damaged_pointer_refuses_to_open_and_removes_nothing() {
    let (dir, db) = old_member();
    drop(db);
    let cases: [(&[u8], &str); 4] = [
        (b"db-7\n", "does not exist"),
        (b"db-01\n", "names no database directory"),
        (b"db-1", "names no database directory"),
        (b"wal\n", "names no database directory"),
    ];
    for (content, reason) in cases {
        fs::write(dir.path().join(POINTER_FILE), content).unwrap();
        let error = MemberDb::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains(reason), "{error}");
        assert!(dir.path().join(LEGACY_DB_DIR).join("CURRENT").is_file());
    }
}

#[test]
fn directory_names_round_trip_and_reject_look_alikes() {
    for generation in [0, 1, 9, 10, u64::MAX] {
        assert_eq!(parse_dir_name(&dir_name(generation)), Some(generation));
    }
    for name in [
        "db-0", "db-01", "db-", "db-x", "db-1.tmp", "dbx", "wal", "snap",
    ] {
        assert_eq!(parse_dir_name(name), None, "{name}");
    }
}
