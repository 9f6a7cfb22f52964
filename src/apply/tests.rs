//! Snapshot install through the applier, as the Raft state machine drives it: a checkpoint
//! of one member replaces every part of another's state, in place and across a restart;
//! a bad checkpoint is refused; readers racing an install see one whole state.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use tempfile::TempDir;

use super::*;
use crate::storage::backend::{BackendBatch, Cf};
use crate::storage::mvcc::HashKv;
use crate::types::{DeleteRangeRequest, KeyRange, PutRequest, RangeRequest};

/// Opens the applier of the member directory `dir`, as `embed` does.
fn applier(dir: &Path) -> Applier {
    Applier::new(MemberDb::open(dir).unwrap()).unwrap()
}

/// A new member directory and its applier.
fn member() -> (TempDir, Applier) {
    let dir = tempfile::tempdir().unwrap();
    let applier = applier(dir.path());
    (dir, applier)
}

fn put(key: &str, value: &str) -> Proposal {
    Proposal::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    })
}

fn delete(key: &str) -> Proposal {
    Proposal::DeleteRange(DeleteRangeRequest {
        range: KeyRange::single(key.as_bytes().to_vec()),
        prev_kv: false,
    })
}

/// A grant, then a put of `key` under the new lease.
fn leased(id: i64, key: &str) -> Vec<Proposal> {
    vec![
        Proposal::LeaseGrant { id, ttl: 30 },
        Proposal::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"leased"),
            lease: id,
            ..PutRequest::default()
        }),
    ]
}

fn compact(revision: Revision) -> Proposal {
    Proposal::Compact {
        revision,
        physical: false,
    }
}

/// Applies `proposals` as one batch of entries after the applied index, in `term`, with a
/// membership entry `membership` at the end when given. Every proposal must succeed.
fn apply(applier: &Applier, term: u64, proposals: Vec<Proposal>, membership: Option<&str>) {
    let mut index = applier.applied_index();
    let mut entries = Vec::new();
    for proposal in &proposals {
        index += 1;
        entries.push(CommittedEntry {
            position: LogPos { index, term },
            data: CommittedData::Normal(codec::encode_proposal(index, proposal)),
        });
    }
    if let Some(blob) = membership {
        index += 1;
        entries.push(CommittedEntry {
            position: LogPos { index, term },
            data: CommittedData::Membership(Bytes::copy_from_slice(blob.as_bytes())),
        });
    }
    for response in applier.apply(&entries).unwrap() {
        codec::decode_outcome(&response).unwrap();
    }
    assert_eq!(applier.applied_index(), index);
}

/// Writes `tag` rows straight into the column families apply does not fill yet (auth,
/// members), so the test sees them carried over (or dropped) too.
fn write_other_families(applier: &Applier, tag: &str) {
    let mut batch = BackendBatch::new();
    for cf in [Cf::Auth, Cf::Members] {
        batch.put(cf, format!("{tag}/{}", cf.name()), tag);
    }
    applier.store().backend().write(batch).unwrap();
}

fn range_all(at: Revision) -> RangeRequest {
    RangeRequest {
        range: KeyRange::new(b"\0".to_vec(), b"\0".to_vec()),
        revision: at,
        ..RangeRequest::default()
    }
}

/// One row of a column family: the family, the key and the value.
pub(super) type Row = (Cf, Box<[u8]>, Box<[u8]>);

/// Every row of every column family.
pub(super) fn rows(store: &MvccStore) -> Vec<Row> {
    let backend = store.backend();
    let mut rows = Vec::new();
    for cf in Cf::ALL {
        for item in backend.scan(cf, b"", None) {
            let (key, value) = item.unwrap();
            rows.push((cf, key, value));
        }
    }
    rows
}

/// Member A: history with overwrites, deletes and a compaction, a membership, and rows in
/// every column family.
fn member_a() -> (TempDir, Applier) {
    let (dir, a) = member();
    apply(
        &a,
        2,
        vec![put("a", "1"), put("b", "1"), put("c", "1")],
        None,
    ); // 2, 3, 4
    apply(&a, 2, vec![put("a", "2"), delete("b")], Some("members-a")); // 5, 6
    apply(&a, 3, vec![compact(5), put("d", "1"), put("a", "3")], None); // 7, 8
    apply(&a, 3, leased(0xa, "leased-a"), None); // 9
    write_other_families(&a, "a");
    (dir, a)
}

/// Member B: a different, shorter history of its own.
fn member_b() -> (TempDir, Applier) {
    let (dir, b) = member();
    apply(&b, 1, vec![put("x", "b"), put("a", "b")], Some("members-b"));
    apply(&b, 1, leased(0xb, "leased-b"), None);
    write_other_families(&b, "b");
    (dir, b)
}

/// A checkpoint of `applier` in a new directory, as a snapshot is built.
fn checkpoint(applier: &Applier) -> (TempDir, std::path::PathBuf, AppliedState) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("data");
    let state = applier.checkpoint(&target).unwrap();
    (dir, target, state)
}

/// Asserts that `store` holds exactly what `expected` does, at every readable revision.
fn assert_same_state(store: &MvccStore, expected: &MvccStore) {
    assert_eq!(store.current_revision(), expected.current_revision());
    assert_eq!(store.compact_revision(), expected.compact_revision());
    for at in expected.compact_revision()..=expected.current_revision() {
        assert_eq!(
            store.range(&range_all(at)).unwrap(),
            expected.range(&range_all(at)).unwrap(),
            "at revision {at}"
        );
        assert_eq!(store.hash_kv(at).unwrap(), expected.hash_kv(at).unwrap());
    }
    let below = expected.compact_revision() - 1;
    assert!(matches!(
        store.range(&range_all(below)),
        Err(MvccError::Compacted { .. })
    ));
    assert_eq!(rows(store), rows(expected));
}

#[test]
fn install_replaces_every_part_of_the_state_in_place() {
    let (_a_dir, a) = member_a();
    let (_b_dir, b) = member_b();
    let (_snap, data, checkpointed) = checkpoint(&a);
    assert_eq!(checkpointed, a.applied_state().unwrap());
    let taken_before = Arc::clone(b.store());
    let old_backend = b.store().backend().path().to_path_buf();

    b.install(&data).unwrap();

    assert_same_state(&taken_before, a.store());
    assert_eq!(b.applied_state().unwrap(), checkpointed);
    assert_eq!(checkpointed.membership.as_deref(), Some(&b"members-a"[..]));
    assert_eq!(b.applied_index(), a.applied_index());
    // The lease table is A's, keys attached included.
    assert_eq!(b.lessor().ids(), vec![0xa]);
    assert_eq!(
        b.lessor().status(0xa).map(|status| status.keys),
        Some(vec![Bytes::from_static(b"leased-a")])
    );
    // Sizes (Status.dbSize) come from the new database.
    let backend = taken_before.backend();
    assert_ne!(backend.path(), old_backend);
    assert!(backend.size_bytes() > 0);
    assert!(!old_backend.exists());

    // Writes continue from A's revision and log position, exactly as on A.
    let next = vec![put("e", "1"), delete("d")];
    apply(&a, 3, next.clone(), None);
    apply(&b, 3, next, None);
    assert_eq!(b.store().current_revision(), 11);
    assert_same_state(b.store(), a.store());
    assert_eq!(b.applied_state().unwrap(), a.applied_state().unwrap());
}

#[test]
fn installed_state_survives_a_restart_without_the_checkpoint() {
    let (_a_dir, a) = member_a();
    let (b_dir, b) = member_b();
    let (snap, data, checkpointed) = checkpoint(&a);
    b.install(&data).unwrap();
    drop(b);
    // The Raft layer may delete the snapshot later; the member must not depend on it.
    drop(snap);

    let b = applier(b_dir.path());
    assert_same_state(b.store(), a.store());
    assert_eq!(b.applied_state().unwrap(), checkpointed);
    assert_eq!(b.applied_index(), a.applied_index());
}

#[test]
fn installing_a_bad_checkpoint_fails_and_the_old_state_keeps_serving() {
    let (_a_dir, a) = member_a();
    let (_b_dir, b) = member_b();
    let b_rows = rows(b.store());
    let b_state = b.applied_state().unwrap();

    let garbage = tempfile::tempdir().unwrap();
    std::fs::write(garbage.path().join("CURRENT"), b"garbage").unwrap();
    std::fs::write(garbage.path().join("000001.sst"), b"garbage").unwrap();
    let error = b.install(garbage.path()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(
        error.to_string().contains("cannot install checkpoint"),
        "{error}"
    );

    // A real database whose applied position does not decode: Raft could not restart on it.
    let (_bad_dir, bad) = member();
    let mut batch = BackendBatch::new();
    batch.put(Cf::Meta, META_APPLIED, b"short");
    bad.store().backend().write(batch).unwrap();
    let bad_snap = tempfile::tempdir().unwrap();
    let data = bad_snap.path().join("data");
    // Straight from the backend: the applier itself refuses to checkpoint such a state.
    bad.store().backend().checkpoint(&data).unwrap();
    let error = b.install(&data).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("not 16 bytes"), "{error}");

    assert_eq!(rows(b.store()), b_rows);
    assert_eq!(b.applied_state().unwrap(), b_state);
    apply(&b, 1, vec![put("still", "writable")], None);

    // And a good checkpoint still installs afterwards.
    let (_snap, data, _) = checkpoint(&a);
    b.install(&data).unwrap();
    assert_same_state(b.store(), a.store());
}

/// What a reader may see of one whole state: the header revision, the values and the hash.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    revision: Revision,
    values: Vec<Bytes>,
    hash: HashKv,
}

fn member_with_keys(value: &str, overwrites: usize) -> (TempDir, Applier) {
    let (dir, applier) = member();
    let keys: Vec<String> = (0..20).map(|key| format!("k{key:02}")).collect();
    apply(
        &applier,
        1,
        keys.iter().map(|key| put(key, value)).collect(),
        None,
    );
    for _ in 0..overwrites {
        apply(&applier, 1, vec![put("k00", value)], None);
    }
    (dir, applier)
}

fn seen(store: &MvccStore) -> Seen {
    let (response, revision) = store.range_with_revision(&range_all(0)).unwrap();
    Seen {
        revision,
        values: response.kvs.into_iter().map(|kv| kv.value).collect(),
        hash: store.hash_kv(0).unwrap(),
    }
}

#[test]
fn readers_racing_installs_see_one_whole_state_at_a_time() {
    let (old_dir, old) = member_with_keys("old", 0);
    let (_new_dir, new) = member_with_keys("new", 5);
    let old_seen = seen(old.store());
    let new_seen = seen(new.store());
    assert_ne!(old_seen.revision, new_seen.revision);
    let (_old_snap, old_data, _) = checkpoint(&old);
    let (_new_snap, new_data, _) = checkpoint(&new);
    // Alternating, starting and ending with the new state.
    let installs = 11;

    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let store = Arc::clone(old.store());
                let (old_seen, new_seen, done) = (&old_seen, &new_seen, &done);
                scope.spawn(move || {
                    let mut reads = 0u64;
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        // Values, header revision and hash come from separate calls, so
                        // each is checked against its own read's revision.
                        let (response, revision) =
                            store.range_with_revision(&range_all(0)).unwrap();
                        let expected = if revision == old_seen.revision {
                            old_seen
                        } else {
                            new_seen
                        };
                        assert_eq!(revision, expected.revision);
                        let values: Vec<Bytes> =
                            response.kvs.into_iter().map(|kv| kv.value).collect();
                        assert_eq!(values, expected.values);
                        let hash = store.hash_kv(0).unwrap();
                        assert!(hash == old_seen.hash || hash == new_seen.hash, "{hash:?}");
                        let txn = TxnRequest {
                            compare: Vec::new(),
                            success: vec![crate::types::RequestOp::Range(range_all(0))],
                            failure: Vec::new(),
                        };
                        let (_, txn_revision) = store.read_txn(&txn).unwrap();
                        assert!(
                            txn_revision == old_seen.revision || txn_revision == new_seen.revision
                        );
                        reads += 1;
                        if finished {
                            return reads;
                        }
                    }
                })
            })
            .collect();
        for install in 0..installs {
            let data = if install % 2 == 0 {
                &new_data
            } else {
                &old_data
            };
            old.install(data).unwrap();
        }
        done.store(true, Ordering::Release);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
    assert_eq!(seen(old.store()), new_seen);
    // Every replaced database closed and went once its last reader let go.
    let mut names: Vec<String> = std::fs::read_dir(old_dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [format!("db-{installs}"), "db.current".to_string()]);
}

/// A checkpoint renews only leases that still exist: one of a revoked lease (a deposed leader's
/// renewal committing after the new leader's revoke) is refused as not found and changes nothing,
/// while one naming a live lease records its remaining TTL.
#[test]
fn a_checkpoint_of_a_revoked_lease_is_refused_and_changes_nothing() {
    let (_dir, applier) = member();
    apply(&applier, 1, leased(7, "k"), None);
    apply(&applier, 1, vec![Proposal::LeaseRevoke { id: 7 }], None);
    let before = rows(applier.store());
    let index = applier.applied_index() + 1;
    let entry = CommittedEntry {
        position: LogPos { index, term: 2 },
        data: CommittedData::Normal(codec::encode_proposal(
            index,
            &Proposal::LeaseCheckpoint(vec![(7, 20)]),
        )),
    };
    let responses = applier.apply(&[entry]).unwrap();
    assert_eq!(
        codec::decode_outcome(&responses[0]).unwrap_err(),
        ApplyError::LeaseNotFound
    );
    let after: Vec<Row> = rows(applier.store())
        .into_iter()
        .filter(|(cf, key, _)| !(*cf == Cf::Meta && &**key == META_APPLIED))
        .collect();
    let before: Vec<Row> = before
        .into_iter()
        .filter(|(cf, key, _)| !(*cf == Cf::Meta && &**key == META_APPLIED))
        .collect();
    assert_eq!(after, before);

    apply(&applier, 2, leased(8, "j"), None);
    apply(
        &applier,
        2,
        vec![Proposal::LeaseCheckpoint(vec![(7, 5), (8, 12)])],
        None,
    );
    let status = applier.lessor().status(8).expect("lease 8 lives");
    // Whole seconds left of the 12 recorded, read a moment later.
    assert!(
        (11..=12).contains(&status.remaining),
        "{}",
        status.remaining
    );
}
