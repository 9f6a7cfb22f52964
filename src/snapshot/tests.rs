//! The snapshot format: round trip, length and padding, and refusal of damaged files.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::storage::backend::{Backend, Cf};
use crate::types::{DeleteRangeRequest, KeyRange, PutRequest};

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    }
}

/// A store with overwrites, a delete, a compaction and rows in meta and lease.
fn loaded_store() -> (tempfile::TempDir, MvccStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(Arc::new(Backend::open(dir.path()).unwrap())).unwrap();
    let no_leases = |_: crate::types::LeaseId| false;
    for round in 0..3 {
        let mut txn = store.write();
        for index in 0..200 {
            txn.put(
                &put(&format!("key/{index:04}"), &format!("v{round}")),
                &no_leases,
            )
            .unwrap();
        }
        txn.commit().unwrap();
    }
    let mut txn = store.write();
    txn.delete_range(&DeleteRangeRequest {
        range: KeyRange::single(b"key/0007".to_vec()),
        ..DeleteRangeRequest::default()
    })
    .unwrap();
    txn.put_raw(Cf::Lease, &7i64.to_be_bytes(), &[1, 2, 3]);
    txn.put_raw(Cf::Meta, b"something", b"else");
    txn.commit().unwrap();
    let mut txn = store.write();
    txn.compact(300).unwrap();
    txn.commit().unwrap();
    (dir, store)
}

/// The whole file (data and trailer) of a snapshot of `store`.
fn snapshot_bytes(store: &MvccStore) -> (Header, Vec<u8>) {
    let mut opened_with = None;
    let (header, sha, mut bytes) = dump(store, |header| {
        opened_with = Some(*header);
        Ok(Vec::new())
    })
    .unwrap();
    assert_eq!(opened_with, Some(header));
    write_trailer(&mut bytes, &sha).unwrap();
    (header, bytes)
}

fn all_rows(store: &MvccStore) -> Vec<Record> {
    let backend = store.backend();
    let mut rows = Vec::new();
    for cf in [Cf::Kv, Cf::Meta, Cf::Lease, Cf::Auth, Cf::Members] {
        for item in backend.scan(cf, &[], None) {
            let (key, value) = item.unwrap();
            rows.push(Record {
                cf,
                key: key.to_vec(),
                value: value.to_vec(),
            });
        }
    }
    rows
}

#[test]
fn dump_round_trips_every_row_and_the_revisions() {
    let (_dir, store) = loaded_store();
    let (header, bytes) = snapshot_bytes(&store);
    assert_eq!(header.revision, store.current_revision());
    assert_eq!(header.revision, 602);
    assert_eq!(header.compact_revision, 300);

    let verified = verify(bytes.as_slice(), bytes.len() as u64, HashCheck::Required).unwrap();
    assert_eq!(verified.header, header);
    assert!(verified.has_hash);
    let records: Vec<Record> = Records::new(bytes.as_slice())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = all_rows(&store);
    assert_eq!(records.len() as u64, header.record_count);
    assert_eq!(records, expected);
    assert!(records.iter().any(|record| record.cf == Cf::Lease));
}

#[test]
fn the_data_is_padded_to_512_and_the_trailer_is_its_sha256() {
    let (_dir, store) = loaded_store();
    let (header, bytes) = snapshot_bytes(&store);
    // etcdctl 3.4 checks exactly this.
    assert_eq!(bytes.len() % 512, 32);
    assert_eq!(bytes.len() as u64, header.data_bytes() + HASH_BYTES);
    let (data, trailer) = bytes.split_at(bytes.len() - 32);
    let digest: [u8; 32] = Sha256::digest(data).into();
    assert_eq!(trailer, digest);
    assert!(data[..8] == MAGIC);

    // An empty store still makes a well-formed file: one block and the trailer.
    let dir = tempfile::tempdir().unwrap();
    let empty = MvccStore::open(Arc::new(Backend::open(dir.path()).unwrap())).unwrap();
    let (header, bytes) = snapshot_bytes(&empty);
    assert_eq!((header.revision, header.record_count), (1, 0));
    assert_eq!(bytes.len(), 512 + 32);
    assert_eq!(Records::new(bytes.as_slice()).unwrap().count(), 0);
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let (_dir, store) = loaded_store();
    let (_, bytes) = snapshot_bytes(&store);
    // In the records, in the padding and in the trailer itself.
    for position in [100, bytes.len() - 40, bytes.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x01;
        let error = verify(
            damaged.as_slice(),
            damaged.len() as u64,
            HashCheck::Required,
        )
        .unwrap_err();
        assert!(
            matches!(error, SnapshotError::HashMismatch { .. }),
            "byte {position}: {error}"
        );
        assert!(error.to_string().contains("expected sha256"), "{error}");
    }
    // A damaged header is refused before any hashing.
    let mut damaged = bytes.clone();
    damaged[0] = b'X';
    let error = verify(
        damaged.as_slice(),
        damaged.len() as u64,
        HashCheck::Required,
    )
    .unwrap_err();
    assert!(
        matches!(error, SnapshotError::NotSnapshot { .. }),
        "{error}"
    );
    let mut damaged = bytes.clone();
    damaged[11] = 9;
    let error = verify(
        damaged.as_slice(),
        damaged.len() as u64,
        HashCheck::Required,
    )
    .unwrap_err();
    assert!(error.to_string().contains("format version 9"), "{error}");
}

#[test]
fn truncated_or_extended_files_are_refused() {
    let (_dir, store) = loaded_store();
    let (header, bytes) = snapshot_bytes(&store);
    for length in [bytes.len() - 1, bytes.len() - 33, bytes.len() / 2, 600] {
        let cut = &bytes[..length];
        let error = verify(cut, length as u64, HashCheck::Required).unwrap_err();
        assert!(
            matches!(error, SnapshotError::Length { .. }),
            "{length}: {error}"
        );
        assert!(error.to_string().contains("truncated"), "{error}");
    }
    for length in [0, 7, 20] {
        let error = verify(&bytes[..length], length as u64, HashCheck::Required).unwrap_err();
        assert!(error.to_string().contains("too short"), "{length}: {error}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let error = verify(longer.as_slice(), longer.len() as u64, HashCheck::Required).unwrap_err();
    assert!(matches!(error, SnapshotError::Length { .. }), "{error}");

    // Without the trailer: refused unless the hash check is skipped.
    let data = &bytes[..usize::try_from(header.data_bytes()).unwrap()];
    let error = verify(data, data.len() as u64, HashCheck::Required).unwrap_err();
    assert_eq!(
        error.to_string(),
        "snapshot missing hash but --skip-hash-check=false"
    );
    let verified = verify(data, data.len() as u64, HashCheck::Skip).unwrap();
    assert!(!verified.has_hash);
    assert_eq!(verified.header, header);
    let verified = verify(data, data.len() as u64, HashCheck::IfPresent).unwrap();
    assert!(!verified.has_hash);

    // A trailer that does not match: skipped, it is not looked at; if present, it must match.
    let mut damaged = bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let verified = verify(damaged.as_slice(), damaged.len() as u64, HashCheck::Skip).unwrap();
    assert!(verified.has_hash);
    let error = verify(
        damaged.as_slice(),
        damaged.len() as u64,
        HashCheck::IfPresent,
    )
    .unwrap_err();
    assert!(
        matches!(error, SnapshotError::HashMismatch { .. }),
        "{error}"
    );
}

#[test]
fn records_check_the_structure_without_the_hash() {
    let (_dir, store) = loaded_store();
    let (header, bytes) = snapshot_bytes(&store);
    // A column family code no version wrote: the first record starts after the header.
    let mut damaged = bytes.clone();
    damaged[HEADER_BYTES] = 9;
    let error = Records::new(damaged.as_slice())
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        error.to_string().contains("unknown column family"),
        "{error}"
    );
    // A huge declared length is refused, not allocated.
    let mut damaged = bytes.clone();
    damaged[HEADER_BYTES + 5..HEADER_BYTES + 9].copy_from_slice(&u32::MAX.to_be_bytes());
    let error = Records::new(damaged.as_slice())
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(error.to_string().contains("exceeds"), "{error}");
    // Non-zero padding.
    let mut damaged = bytes.clone();
    let padding_at = usize::try_from(header.data_bytes()).unwrap() - 1;
    if u64::try_from(padding_at).unwrap() >= header.content_bytes {
        damaged[padding_at] = 1;
        let error = Records::new(damaged.as_slice())
            .unwrap()
            .find_map(Result::err)
            .unwrap();
        assert!(error.to_string().contains("padding"), "{error}");
    }
}

#[test]
fn a_failing_writer_stops_the_dump_with_its_error() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client went away",
            ))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let (_dir, store) = loaded_store();
    let Err(error) = dump(&store, |_| Ok(Broken)) else {
        panic!("a dump into a broken writer succeeded");
    };
    assert!(error.to_string().contains("client went away"), "{error}");
}

#[test]
fn status_prints_etcdctl_shapes() {
    let status = SnapshotStatus {
        hash: 0x6b87_b408,
        revision: 6,
        total_key: 13,
        total_size: 20480,
    };
    // What etcdctl 3.4 prints for a 20 KiB etcd snapshot with these numbers.
    assert_eq!(
        status.render(StatusFormat::Simple),
        "6b87b408, 6, 13, 20 kB\n"
    );
    assert_eq!(
        status.render(StatusFormat::Json),
        "{\"hash\":1804055560,\"revision\":6,\"totalKey\":13,\"totalSize\":20480}\n"
    );
    assert_eq!(
        status.render(StatusFormat::Table),
        "+----------+----------+------------+------------+\n\
         |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
         +----------+----------+------------+------------+\n\
         | 6b87b408 |        6 |         13 |      20 kB |\n\
         +----------+----------+------------+------------+\n"
    );
    for (bytes, text) in [
        (0, "0 B"),
        (800, "800 B"),
        (1000, "1.0 kB"),
        (2_109_440, "2.1 MB"),
        (999_999, "1000 kB"),
    ] {
        assert_eq!(human_bytes(bytes), text, "{bytes}");
    }
}
