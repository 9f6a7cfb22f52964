//! Tests of the write-ahead log: round trips, group commit, truncation, purging, and recovery
//! from torn or corrupt records.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc;

use bytes::BytesMut;

use super::*;

const SMALL_SEGMENT_BYTES: u64 = 4 * 1024;

fn entry(index: u64, term: u64, payload: &str) -> WalEntry {
    WalEntry {
        index,
        term,
        kind: 1,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<WalEntry> {
    range
        .map(|index| entry(index, 1, &format!("value-{index}")))
        .collect()
}

/// Appends and waits until the group commit reports the entries durable.
fn append_durably(wal: &Wal, batch: Vec<WalEntry>) {
    let (sender, receiver) = mpsc::channel();
    wal.append(batch, Box::new(move |result| sender.send(result).unwrap()))
        .unwrap();
    receiver.recv().unwrap().unwrap();
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).unwrap().pop().unwrap()
}

/// Where the records of a segment end: its preallocated rest reads as zeros.
fn written_end(path: &Path) -> u64 {
    written_len(&fs::read(path).unwrap()) as u64
}

/// Overwrites `bytes` at `offset`, as a write that reached the disk would.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x10;
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&byte).unwrap();
}

#[test]
fn appended_entries_and_committed_hint_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
        assert!(recovered.entries.is_empty());
        append_durably(&wal, entries(1..=10));
        wal.set_committed(LogPos { index: 7, term: 1 }).unwrap();
        wal.sync().unwrap();
    }
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
    assert_eq!(recovered.entries, entries(1..=10));
    assert_eq!(recovered.committed, Some(LogPos { index: 7, term: 1 }));
    assert_eq!(recovered.truncated_tail_bytes, 0);
}

/// A hint nobody synced is still written when the log closes.
#[test]
fn a_hint_set_last_is_written_on_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
        append_durably(&wal, entries(1..=3));
        wal.set_committed(LogPos { index: 3, term: 1 }).unwrap();
    }
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
    assert_eq!(recovered.committed, Some(LogPos { index: 3, term: 1 }));
}

/// The writer holds a hint back until it has handled every job queued before the hint was
/// set, so the hint never lands in the file ahead of an entry it covers.
#[test]
fn a_hint_waits_for_the_jobs_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let hint = PendingHint::default();
    let mut writer = Writer {
        dir: dir.path().to_path_buf(),
        segments: Vec::new(),
        locations: VecDeque::new(),
        current: None,
        segment_bytes_max: SMALL_SEGMENT_BYTES,
        hint: Arc::clone(&hint),
        handled: 0,
    };
    *hint.lock() = Some((LogPos { index: 2, term: 1 }, 2));
    writer.handled = 1;
    assert!(
        !writer.write_hint().unwrap(),
        "one queued job is not handled yet"
    );
    assert!(hint.lock().is_some(), "the hint is kept for later");
    writer.handled = 2;
    assert!(writer.write_hint().unwrap());
    assert!(hint.lock().is_none());
    assert!(!writer.write_hint().unwrap(), "a hint is written once");
}

#[test]
fn concurrent_appends_all_complete_and_persist_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
    let (sender, receiver) = mpsc::channel();
    // Many small jobs queued back to back: the writer groups them under fewer fsyncs, but
    // every one must still be reported.
    for index in 1..=500u64 {
        let sender = sender.clone();
        let done: Completion = Box::new(move |result| sender.send((index, result)).unwrap());
        wal.append(vec![entry(index, 2, "x")], done).unwrap();
    }
    drop(sender);
    let mut completed: Vec<u64> = receiver
        .iter()
        .map(|(index, result)| {
            result.unwrap();
            index
        })
        .collect();
    completed.sort_unstable();
    assert_eq!(completed, (1..=500).collect::<Vec<_>>());
    drop(wal);
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
    assert_eq!(recovered.entries.len(), 500);
    assert!(
        segment_files(dir.path()).unwrap().len() > 1,
        "small segments must have rolled"
    );
}

#[test]
fn truncate_after_removes_later_entries_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
        append_durably(&wal, entries(1..=400));
        wal.truncate_after(Some(150)).unwrap();
        append_durably(&wal, vec![entry(151, 3, "rewritten")]);
    }
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
    assert_eq!(recovered.entries.len(), 151);
    assert_eq!(
        recovered.entries.last().unwrap(),
        &entry(151, 3, "rewritten")
    );
    assert_eq!(recovered.entries[149], entry(150, 1, "value-150"));
}

#[test]
fn purge_forgets_entries_and_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
        append_durably(&wal, entries(1..=400));
        let before = segment_files(dir.path()).unwrap().len();
        wal.purge(LogPos {
            index: 300,
            term: 1,
        })
        .unwrap();
        let after = segment_files(dir.path()).unwrap().len();
        assert!(after < before, "purge kept all {before} segments");
        append_durably(&wal, entries(401..=410));
    }
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
    assert_eq!(
        recovered.purged,
        Some(LogPos {
            index: 300,
            term: 1
        })
    );
    assert_eq!(recovered.entries.first().unwrap().index, 301);
    assert_eq!(recovered.entries.last().unwrap().index, 410);
}

#[test]
fn torn_last_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
        append_durably(&wal, entries(1..=20));
    }
    let segment = last_segment(dir.path());
    let end = written_end(&segment);
    let last_record = record_offset(&segment, 20).unwrap().unwrap();
    // The last 5 bytes never reached the disk: in preallocated space they read as zeros.
    write_at(&segment, end - 5, &[0u8; 5]);
    let (wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
    assert_eq!(recovered.entries, entries(1..=19));
    assert_eq!(recovered.truncated_tail_bytes, end - 5 - last_record);
    // The log continues cleanly after the cut.
    append_durably(&wal, vec![entry(20, 2, "again")]);
    drop(wal);
    let (wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
    assert_eq!(recovered.entries.last().unwrap(), &entry(20, 2, "again"));
    drop(wal);

    // The same tear in a file that ends with its records (one that was not preallocated).
    let end = written_end(&segment);
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(end - 5)
        .unwrap();
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
    assert_eq!(recovered.entries, entries(1..=19));
    assert!(recovered.truncated_tail_bytes > 0);
}

#[test]
fn flipped_bit_in_last_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
        append_durably(&wal, entries(1..=20));
    }
    let segment = last_segment(dir.path());
    let offset = record_offset(&segment, 20).unwrap().unwrap();
    flip_byte(&segment, offset + 12);
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
    assert_eq!(recovered.entries, entries(1..=19));
}

#[test]
fn a_new_segment_is_preallocated_and_the_log_goes_on_where_its_records_end() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = SMALL_SEGMENT_BYTES * 1024;
    {
        let (wal, _) = Wal::open(dir.path(), segment_bytes).unwrap();
        append_durably(&wal, entries(1..=5));
    }
    let segment = last_segment(dir.path());
    let allocated = fs::metadata(&segment).unwrap().len();
    let end = written_end(&segment);
    assert_eq!(
        allocated, segment_bytes,
        "the segment has its full size at once"
    );
    assert!(end < allocated);
    // Reopening finds the records' end among the zeros, and cuts nothing.
    let (wal, recovered) = Wal::open(dir.path(), segment_bytes).unwrap();
    assert_eq!(recovered.entries, entries(1..=5));
    assert_eq!(recovered.truncated_tail_bytes, 0);
    // New records go right after the old ones, inside the allocated space.
    append_durably(&wal, entries(6..=8));
    drop(wal);
    assert_eq!(fs::metadata(&segment).unwrap().len(), allocated);
    assert_eq!(record_offset(&segment, 6).unwrap(), Some(end));
    let (_wal, recovered) = Wal::open(dir.path(), segment_bytes).unwrap();
    assert_eq!(recovered.entries, entries(1..=8));
}

#[test]
fn truncation_keeps_the_segment_preallocated() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = SMALL_SEGMENT_BYTES * 1024;
    let (wal, _) = Wal::open(dir.path(), segment_bytes).unwrap();
    append_durably(&wal, entries(1..=10));
    wal.truncate_after(Some(4)).unwrap();
    append_durably(&wal, vec![entry(5, 2, "after the cut")]);
    drop(wal);
    let segment = last_segment(dir.path());
    assert_eq!(fs::metadata(&segment).unwrap().len(), segment_bytes);
    let (_wal, recovered) = Wal::open(dir.path(), segment_bytes).unwrap();
    let mut expected = entries(1..=4);
    expected.push(entry(5, 2, "after the cut"));
    assert_eq!(recovered.entries, expected);
}

#[test]
fn unsynced_pages_landing_out_of_order_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
        append_durably(&wal, entries(1..=5));
    }
    // A power loss kept a later unsynced page but not the one before it: zeros, then bytes
    // of a record that was never acknowledged.
    let segment = last_segment(dir.path());
    let mut unsynced = BytesMut::new();
    unsynced.extend_from_slice(&[0u8; 512]);
    unsynced.extend_from_slice(&frame(&entry_body(&entry(7, 1, "never acknowledged"))));
    write_at(&segment, written_end(&segment), &unsynced);
    let (_wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
    assert_eq!(recovered.entries, entries(1..=5));
    assert_eq!(recovered.truncated_tail_bytes, unsynced.len() as u64);
}

#[test]
fn flipped_bit_in_the_middle_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024).unwrap();
        append_durably(&wal, entries(1..=20));
    }
    let segment = last_segment(dir.path());
    let offset = record_offset(&segment, 10).unwrap().unwrap();
    flip_byte(&segment, offset + 14);
    let error = match Wal::open(dir.path(), SMALL_SEGMENT_BYTES * 1024) {
        Err(error) => error,
        Ok(_) => panic!("a corrupt record before the tail must stop the open"),
    };
    match &error {
        WalError::Corrupt {
            path, offset: at, ..
        } => {
            assert_eq!(path, &segment);
            assert_eq!(*at, offset);
        }
        other => panic!("expected a corruption error, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&segment.display().to_string()),
        "{message}"
    );
    assert!(message.contains(&format!("offset {offset}")), "{message}");
    // The damaged file is left as it was for an operator to inspect.
    assert!(fs::metadata(&segment).unwrap().len() > offset);
}

#[test]
fn corruption_in_an_older_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT_BYTES).unwrap();
        append_durably(&wal, entries(1..=400));
    }
    let first = segment_files(dir.path()).unwrap().remove(0);
    // Even damage in the last record of a segment that is not the newest is not a torn tail.
    write_at(&first, written_end(&first) - 3, &[0u8; 3]);
    assert!(matches!(
        Wal::open(dir.path(), SMALL_SEGMENT_BYTES),
        Err(WalError::Corrupt { .. })
    ));
}
