//! The Raft log's write-ahead log: segmented files of checksummed records, group-committed.
//!
//! Owns the bytes of the Raft log on disk and nothing else: it does not know what an entry
//! means (payloads are opaque bytes) and never touches the state machine. It reads the clock
//! only to time its fsyncs for `etcd_disk_wal_fsync_duration_seconds`; nothing it decides
//! depends on the time.
//!
//! # Format
//! A log directory holds segment files named `<first index, 20 digits>.wal`, in index order,
//! plus a `purged` file naming the last purged entry. A segment is a sequence of records:
//!
//! ```text
//! +-----------+-----------+------------------------------------------+
//! | len: u32  | crc: u32  | body: len bytes                          |
//! +-----------+-----------+------------------------------------------+
//! body = kind: u8, then
//!   kind 1 (entry):     index: u64, term: u64, payload kind: u8, payload bytes
//!   kind 2 (committed): index: u64, term: u64
//! ```
//! Integers are little-endian; `crc` is CRC-32 (crc32fast) of the body.
//! Entries in one log have consecutive indexes; a segment only holds entries greater than the
//! ones of the segment before it.
//!
//! A new segment is preallocated (`fallocate`) to the roll-over size, so its records are
//! written into space the file already has: an fdatasync then flushes the data alone, where a
//! growing file also had its inode and block maps written on every sync. The unused rest of a
//! segment reads as zeros; the records end at the first zero header.
//!
//! # Durability
//! Appends go to one writer thread. It writes every job that is waiting, fsyncs once, and
//! only then reports each job done ("group commit"): a caller may treat an entry as durable
//! only after its completion callback ran with `Ok`.
//!
//! The committed-position hint is not a job: [`Wal::set_committed`] leaves it beside the
//! queue, with the count of jobs queued before it, and the writer adds it to whatever it
//! writes next once it has written all those jobs. A hint therefore never precedes, in the
//! file, an entry it covers, and setting one never wakes the writer: a job of its own cost
//! a wake-up and a write per commit on every member.
//!
//! # Recovery
//! Zeros from a record boundary to the end of a segment are its unused preallocated space.
//! A record that is cut short, or whose checksum fails, at the very end of the last segment
//! (nothing but zeros after it) is the trace of a write that never completed: it is cut off and
//! the log goes on from there.
//! The same damage anywhere else means acknowledged data was lost, and opening fails with
//! [`WalError::Corrupt`] naming the file and offset.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use bytes::Bytes;

#[cfg(doc)]
use crate::limits::WAL_SEGMENT_BYTES_MAX;
use crate::limits::{
    WAL_GROUP_COMMIT_JOBS_MAX, WAL_QUEUE_DEPTH, WAL_RECORD_BYTES_MAX, WAL_WRITE_BUFFER_BYTES,
};

/// Bytes of the record frame before the body: length and checksum.
const FRAME_HEADER_BYTES: usize = 8;
/// Record kind of a log entry.
const RECORD_ENTRY: u8 = 1;
/// Record kind of a committed-index hint.
const RECORD_COMMITTED: u8 = 2;
/// Bytes of an entry body before its payload: kind, index, term, payload kind.
const ENTRY_HEADER_BYTES: usize = 1 + 8 + 8 + 1;
/// Name of the file recording the last purged position.
const PURGED_FILE: &str = "purged";
/// File name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".wal";

/// Failures of the write-ahead log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An operating-system error on a log file.
    #[error("wal i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Damage before the tail of the log: acknowledged entries cannot be read back.
    #[error("wal corrupt in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged segment.
        path: PathBuf,
        /// Byte offset of the first damaged record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The writer thread is gone (the log was closed or a previous write failed).
    #[error("wal writer stopped")]
    Stopped,
}

impl From<WalError> for io::Error {
    fn from(err: WalError) -> io::Error {
        match err {
            WalError::Io { source, .. } => io::Error::new(source.kind(), source.to_string()),
            other => io::Error::other(other.to_string()),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A position in the log: index and the term of the entry there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPos {
    /// Log index.
    pub index: u64,
    /// Term of the entry at that index.
    pub term: u64,
}

/// One log entry as the WAL stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalEntry {
    /// Log index.
    pub index: u64,
    /// Term of the leader that created it.
    pub term: u64,
    /// Opaque kind tag chosen by the caller (blank, normal, membership ...).
    pub kind: u8,
    /// Opaque payload.
    pub payload: Bytes,
}

/// What the log held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every entry after the purged position, in index order.
    pub entries: Vec<WalEntry>,
    /// The last purged position, if any.
    pub purged: Option<LogPos>,
    /// The last committed hint written, if any.
    pub committed: Option<LogPos>,
    /// Bytes cut off a torn tail, 0 when the log ended cleanly.
    pub truncated_tail_bytes: u64,
}

/// Called once the job it came with is durable (or failed).
pub type Completion = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

enum Job {
    Append {
        entries: Vec<WalEntry>,
        done: Completion,
    },
    TruncateAfter {
        last_kept: Option<u64>,
        done: mpsc::SyncSender<Result<(), WalError>>,
    },
    Purge {
        upto: LogPos,
        done: mpsc::SyncSender<Result<(), WalError>>,
    },
    Sync {
        done: mpsc::SyncSender<Result<(), WalError>>,
    },
}

/// An append that did not fit in the writer's queue (see [`Wal::try_append`]).
pub struct QueueFull(Job);

/// The latest committed-position hint not yet written, with the number of jobs queued before
/// it was set: the writer may write it once it has handled that many.
type PendingHint = Arc<parking_lot::Mutex<Option<(LogPos, u64)>>>;

/// Handle to an open write-ahead log. Cloning is not offered: one owner submits jobs, in order.
pub struct Wal {
    jobs: mpsc::SyncSender<Job>,
    /// Jobs queued so far.
    queued: AtomicU64,
    hint: PendingHint,
    writer: Option<thread::JoinHandle<()>>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, recovering its content. A segment rolls
    /// over once it holds `segment_bytes_max` bytes ([`WAL_SEGMENT_BYTES_MAX`] in production).
    ///
    /// # Errors
    /// [`WalError::Corrupt`] when damage is found before the tail, [`WalError::Io`] on I/O errors.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> Result<(Wal, Recovered), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let purged = read_purged(dir)?;
        let mut segments = list_segments(dir)?;
        let mut recovered = Recovered {
            purged,
            ..Recovered::default()
        };
        let mut locations = VecDeque::new();
        let segment_count = segments.len();
        for (position, segment) in segments.iter_mut().enumerate() {
            let is_last = position + 1 == segment_count;
            scan_segment(segment, is_last, &mut recovered, &mut locations)?;
        }
        // Entries at or below the purged position may linger in a segment that also holds
        // live entries; they are not part of the log any more.
        if let Some(purged) = recovered.purged {
            recovered.entries.retain(|entry| entry.index > purged.index);
            locations.retain(|location| location.index > purged.index);
            if let Some(first) = recovered.entries.first()
                && first.index != purged.index + 1
            {
                return Err(WalError::Corrupt {
                    path: dir.to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "log starts at index {} but only entries up to {} were purged",
                        first.index, purged.index
                    ),
                });
            }
        }
        check_contiguous(&recovered.entries, dir)?;
        let hint = PendingHint::default();
        let writer_state = Writer {
            dir: dir.to_path_buf(),
            segments,
            locations,
            current: None,
            segment_bytes_max,
            hint: Arc::clone(&hint),
            handled: 0,
        };
        let (jobs, receiver) = mpsc::sync_channel(WAL_QUEUE_DEPTH);
        let writer = thread::Builder::new()
            .name("mnemo-wal".into())
            .spawn(move || writer_state.run(receiver))
            .map_err(io_err(dir))?;
        Ok((
            Wal {
                jobs,
                queued: AtomicU64::new(0),
                hint,
                writer: Some(writer),
            },
            recovered,
        ))
    }

    /// Queues entries for appending; `done` runs after they are fsynced. Blocks while the
    /// queue is full.
    ///
    /// # Errors
    /// [`WalError::Stopped`] if the writer is gone.
    pub fn append(&self, entries: Vec<WalEntry>, done: Completion) -> Result<(), WalError> {
        self.queue(Job::Append { entries, done })
    }

    /// Queues `job`, waiting for room, and counts it.
    fn queue(&self, job: Job) -> Result<(), WalError> {
        self.jobs.send(job).map_err(|_| WalError::Stopped)?;
        self.queued.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Queues entries like [`Wal::append`] without ever blocking: when the queue is full the
    /// append comes back, to be queued with [`Wal::append_waiting`] from a thread that may
    /// block.
    ///
    /// # Errors
    /// [`WalError::Stopped`] if the writer is gone.
    pub fn try_append(
        &self,
        entries: Vec<WalEntry>,
        done: Completion,
    ) -> Result<Option<QueueFull>, WalError> {
        match self.jobs.try_send(Job::Append { entries, done }) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Release);
                Ok(None)
            }
            Err(mpsc::TrySendError::Full(job)) => Ok(Some(QueueFull(job))),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(WalError::Stopped),
        }
    }

    /// Queues an append that found the queue full, waiting for room.
    ///
    /// # Errors
    /// [`WalError::Stopped`] if the writer is gone.
    pub fn append_waiting(&self, full: QueueFull) -> Result<(), WalError> {
        self.queue(full.0)
    }

    /// Records a committed-position hint. It is written with the writer's next records after
    /// every job queued before it, and becomes durable with the next sync after that; a later
    /// hint replaces one not written yet. The hint only shortens replay after a restart, so
    /// losing the last one in a crash only means replaying from an older committed position.
    ///
    /// # Errors
    /// [`WalError::Stopped`] if the writer is gone.
    pub fn set_committed(&self, committed: LogPos) -> Result<(), WalError> {
        if self
            .writer
            .as_ref()
            .is_none_or(thread::JoinHandle::is_finished)
        {
            return Err(WalError::Stopped);
        }
        let queued = self.queued.load(Ordering::Acquire);
        *self.hint.lock() = Some((committed, queued));
        Ok(())
    }

    /// Removes every entry after `last_kept` (all of them for `None`), durably, before
    /// returning.
    ///
    /// # Errors
    /// I/O errors, or [`WalError::Stopped`].
    pub fn truncate_after(&self, last_kept: Option<u64>) -> Result<(), WalError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.queue(Job::TruncateAfter { last_kept, done })?;
        wait.recv().map_err(|_| WalError::Stopped)?
    }

    /// Forgets entries up to and including `upto`, deleting whole segments that hold nothing
    /// newer.
    ///
    /// # Errors
    /// I/O errors, or [`WalError::Stopped`].
    pub fn purge(&self, upto: LogPos) -> Result<(), WalError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.queue(Job::Purge { upto, done })?;
        wait.recv().map_err(|_| WalError::Stopped)?
    }

    /// Waits until everything queued so far is durable.
    ///
    /// # Errors
    /// I/O errors, or [`WalError::Stopped`].
    pub fn sync(&self) -> Result<(), WalError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.queue(Job::Sync { done })?;
        wait.recv().map_err(|_| WalError::Stopped)?
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop after it has written what was queued.
        let (closed_sender, _) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.jobs, closed_sender));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// One segment file as the writer knows it.
struct Segment {
    first_index: u64,
    path: PathBuf,
    len: u64,
}

/// Where an entry's record starts, so a truncation knows where to cut.
#[derive(Clone, Copy)]
struct Location {
    index: u64,
    segment_first_index: u64,
    offset: u64,
}

/// State owned by the writer thread.
struct Writer {
    dir: PathBuf,
    /// Segments in index order; the last one receives appends.
    segments: Vec<Segment>,
    /// Start of every live entry's record, in index order.
    locations: VecDeque<Location>,
    /// Open handle on the last segment, opened lazily. Records of a batch collect in its
    /// buffer and reach the file in one write at the end of the batch (or before a sync, a
    /// segment switch or a truncation), not one write per record.
    current: Option<BufWriter<File>>,
    /// Size at which the last segment rolls over.
    segment_bytes_max: u64,
    /// The committed-position hint [`Wal::set_committed`] left.
    hint: PendingHint,
    /// Jobs handled so far, in queue order.
    handled: u64,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let mut failed: Option<String> = None;
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < WAL_GROUP_COMMIT_JOBS_MAX {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut waiting: Vec<Completion> = Vec::new();
            let mut dirty = false;
            let mut batch_entries = 0_usize;
            for job in batch {
                if let Some(reason) = &failed {
                    fail_job(job, reason);
                    continue;
                }
                self.handled += 1;
                let outcome = match job {
                    Job::Append { entries, done } => {
                        waiting.push(done);
                        dirty = true;
                        batch_entries += entries.len();
                        self.write_entries(&entries)
                    }
                    Job::TruncateAfter { last_kept, done } => {
                        self.reply(&mut waiting, &mut dirty, &done, |writer| {
                            writer.truncate_after(last_kept)
                        })
                    }
                    Job::Purge { upto, done } => {
                        self.reply(&mut waiting, &mut dirty, &done, |writer| writer.purge(upto))
                    }
                    Job::Sync { done } => self.reply(&mut waiting, &mut dirty, &done, |_| Ok(())),
                }
                .map_err(|err| err.to_string());
                if let Err(reason) = outcome {
                    failed = Some(reason);
                }
            }
            if failed.is_none() {
                // Without appends there is nothing to sync: a hint written here waits in the
                // file for the next sync (see `Wal::set_committed`).
                let written = self.write_hint().and_then(|_| {
                    if dirty {
                        self.sync_current()
                    } else {
                        self.flush_current()
                    }
                });
                if let Err(err) = written {
                    failed = Some(err.to_string());
                }
            }
            if batch_entries > 0 {
                crate::metrics::get()
                    .wal_batch_entries
                    .observe(batch_entries as f64);
            }
            for done in waiting {
                match &failed {
                    None => done(Ok(())),
                    Some(reason) => done(Err(io::Error::other(reason.clone()))),
                }
            }
        }
        if failed.is_none() {
            let _ = self.write_hint();
            let _ = self.sync_current();
        }
    }

    /// Writes the pending committed-position hint if every job queued before it was
    /// handled; otherwise leaves it for later. Returns whether it wrote one.
    fn write_hint(&mut self) -> Result<bool, WalError> {
        let ready = {
            let mut hint = self.hint.lock();
            match *hint {
                Some((position, queued_before)) if queued_before <= self.handled => {
                    *hint = None;
                    Some(position)
                }
                _ => None,
            }
        };
        match ready {
            Some(position) => self
                .write_record(&committed_body(position), None)
                .map(|()| true),
            None => Ok(false),
        }
    }

    /// Makes pending appends durable and reports them, runs `action`, and tells `done` how it
    /// went. An error is returned too, because it stops the writer.
    fn reply(
        &mut self,
        waiting: &mut Vec<Completion>,
        dirty: &mut bool,
        done: &mpsc::SyncSender<Result<(), WalError>>,
        action: impl FnOnce(&mut Writer) -> Result<(), WalError>,
    ) -> Result<(), WalError> {
        let result = (|| {
            // This job counts as handled already, and it is not an append: a hint set
            // before it was queued covers only what is written by now.
            if self.write_hint()? || *dirty {
                self.sync_current()?;
                *dirty = false;
            }
            for completion in waiting.drain(..) {
                completion(Ok(()));
            }
            action(self)
        })();
        match result {
            Ok(()) => {
                let _ = done.send(Ok(()));
                Ok(())
            }
            Err(err) => {
                let reason = err.to_string();
                let _ = done.send(Err(err));
                Err(WalError::Io {
                    path: self.dir.clone(),
                    source: io::Error::other(reason),
                })
            }
        }
    }

    fn write_entries(&mut self, entries: &[WalEntry]) -> Result<(), WalError> {
        for entry in entries {
            if let Some(last) = self.locations.back() {
                assert_eq!(
                    entry.index,
                    last.index + 1,
                    "wal append must continue the log: last {}, appended {}",
                    last.index,
                    entry.index
                );
            }
            let body = entry_body(entry);
            self.write_record(&body, Some(entry.index))?;
        }
        Ok(())
    }

    /// Appends one record to the last segment, rolling to a new segment first when the
    /// current one is full and the record starts an entry.
    fn write_record(&mut self, body: &[u8], entry_index: Option<u64>) -> Result<(), WalError> {
        let needs_segment = match self.segments.last() {
            None => true,
            Some(segment) => segment.len >= self.segment_bytes_max && entry_index.is_some(),
        };
        if needs_segment {
            let first_index = entry_index
                .or_else(|| self.locations.back().map(|location| location.index + 1))
                .unwrap_or(1);
            self.start_segment(first_index)?;
        }
        let frame = frame(body);
        let segment = self
            .segments
            .last_mut()
            .expect("a segment exists after start_segment");
        let offset = segment.len;
        let path = segment.path.clone();
        let file = match &mut self.current {
            Some(file) => file,
            slot @ None => {
                // Not O_APPEND: the file may extend past its records (preallocated space),
                // and records go right after the last one.
                let mut file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
                slot.insert(BufWriter::with_capacity(WAL_WRITE_BUFFER_BYTES, file))
            }
        };
        file.write_all(&frame).map_err(io_err(&path))?;
        segment.len += frame.len() as u64;
        if let Some(index) = entry_index {
            self.locations.push_back(Location {
                index,
                segment_first_index: segment.first_index,
                offset,
            });
        }
        Ok(())
    }

    fn start_segment(&mut self, first_index: u64) -> Result<(), WalError> {
        self.sync_current()?;
        self.current = None;
        let path = segment_path(&self.dir, first_index);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        preallocate(&file, &path, self.segment_bytes_max);
        file.sync_all().map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first_index,
            path,
            len: 0,
        });
        self.current = Some(BufWriter::with_capacity(WAL_WRITE_BUFFER_BYTES, file));
        Ok(())
    }

    /// Writes the buffered records of the last segment to its file (no sync).
    fn flush_current(&mut self) -> Result<(), WalError> {
        if let (Some(file), Some(segment)) = (&mut self.current, self.segments.last()) {
            file.flush().map_err(io_err(&segment.path))?;
        }
        Ok(())
    }

    fn sync_current(&mut self) -> Result<(), WalError> {
        self.flush_current()?;
        if let (Some(file), Some(segment)) = (&self.current, self.segments.last()) {
            let started = std::time::Instant::now();
            file.get_ref().sync_data().map_err(io_err(&segment.path))?;
            crate::metrics::get()
                .wal_fsync
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn truncate_after(&mut self, last_kept: Option<u64>) -> Result<(), WalError> {
        let beyond = |location: &Location| last_kept.is_none_or(|kept| location.index > kept);
        let Some(cut) = self.locations.iter().position(beyond) else {
            return Ok(());
        };
        let cut_at = self.locations[cut];
        self.locations.truncate(cut);
        // Buffered records go to the file first, so the cut below applies to all of them.
        self.flush_current()?;
        self.current = None;
        // Drop whole segments that start after the cut, newest first, then shorten the one
        // holding the cut.
        while let Some(segment) = self.segments.last() {
            if segment.first_index <= cut_at.segment_first_index {
                break;
            }
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
            self.segments.pop();
        }
        let segment = self
            .segments
            .last_mut()
            .expect("the segment holding a live entry is still listed");
        assert_eq!(segment.first_index, cut_at.segment_first_index);
        let file = OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .map_err(io_err(&segment.path))?;
        file.set_len(cut_at.offset).map_err(io_err(&segment.path))?;
        // The cut dropped the segment's spare space with the entries; give it back.
        preallocate(&file, &segment.path, self.segment_bytes_max);
        file.sync_all().map_err(io_err(&segment.path))?;
        segment.len = cut_at.offset;
        sync_dir(&self.dir)
    }

    fn purge(&mut self, upto: LogPos) -> Result<(), WalError> {
        write_purged(&self.dir, upto)?;
        while self
            .locations
            .front()
            .is_some_and(|location| location.index <= upto.index)
        {
            self.locations.pop_front();
        }
        // A segment can go when the next one starts at or before the first live entry.
        let mut removed_any = false;
        while self.segments.len() > 1 && self.segments[1].first_index <= upto.index + 1 {
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
            removed_any = true;
        }
        if removed_any {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Gives `file` `bytes` of allocated space (reading as zeros) without writing it. Only a cost
/// saving: where the file system cannot, the segment grows with its records instead.
fn preallocate(file: &File, path: &Path, bytes: u64) {
    if let Err(err) = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        tracing::debug!(path = %path.display(), %err, "cannot preallocate a wal segment");
    }
}

fn fail_job(job: Job, reason: &str) {
    let error = || WalError::Io {
        path: PathBuf::new(),
        source: io::Error::other(reason.to_string()),
    };
    match job {
        Job::Append { done, .. } => done(Err(io::Error::other(reason.to_string()))),
        Job::TruncateAfter { done, .. } | Job::Purge { done, .. } | Job::Sync { done } => {
            let _ = done.send(Err(error()));
        }
    }
}

fn entry_body(entry: &WalEntry) -> Vec<u8> {
    let mut body = Vec::with_capacity(ENTRY_HEADER_BYTES + entry.payload.len());
    body.push(RECORD_ENTRY);
    body.extend_from_slice(&entry.index.to_le_bytes());
    body.extend_from_slice(&entry.term.to_le_bytes());
    body.push(entry.kind);
    body.extend_from_slice(&entry.payload);
    body
}

fn committed_body(position: LogPos) -> Vec<u8> {
    let mut body = Vec::with_capacity(17);
    body.push(RECORD_COMMITTED);
    body.extend_from_slice(&position.index.to_le_bytes());
    body.extend_from_slice(&position.term.to_le_bytes());
    body
}

fn frame(body: &[u8]) -> Vec<u8> {
    assert!(
        body.len() <= WAL_RECORD_BYTES_MAX,
        "wal record of {} bytes exceeds the limit",
        body.len()
    );
    let mut framed = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    let len = u32::try_from(body.len()).expect("record length bounded by WAL_RECORD_BYTES_MAX");
    framed.extend_from_slice(&len.to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    framed.extend_from_slice(body);
    framed
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}{SEGMENT_SUFFIX}"))
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut segments = Vec::new();
    for dir_entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let dir_entry = dir_entry.map_err(io_err(dir))?;
        let name = dir_entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
        else {
            continue;
        };
        let Ok(first_index) = stem.parse::<u64>() else {
            continue;
        };
        let path = dir_entry.path();
        let len = dir_entry.metadata().map_err(io_err(&path))?.len();
        segments.push(Segment {
            first_index,
            path,
            len,
        });
    }
    segments.sort_by_key(|segment| segment.first_index);
    Ok(segments)
}

/// Reads every record of one segment into `recovered`, cutting a torn tail of the last segment.
fn scan_segment(
    segment: &mut Segment,
    is_last: bool,
    recovered: &mut Recovered,
    locations: &mut VecDeque<Location>,
) -> Result<(), WalError> {
    let path = segment.path.clone();
    let mut content = Vec::new();
    File::open(&path)
        .and_then(|mut file| file.read_to_end(&mut content))
        .map_err(io_err(&path))?;
    let file_len = content.len();
    let mut offset = 0usize;
    while offset < file_len {
        match parse_record(&content, offset) {
            Ok((body, next)) => {
                apply_record(
                    body,
                    segment.first_index,
                    offset as u64,
                    recovered,
                    locations,
                )
                .map_err(|reason| WalError::Corrupt {
                    path: path.clone(),
                    offset: offset as u64,
                    reason,
                })?;
                offset = next;
            }
            // Unused preallocated space: the segment's records end here.
            Err(_) if written_len(&content[offset..]) == 0 => {
                segment.len = offset as u64;
                return Ok(());
            }
            Err(reason) => {
                if is_last && damage_is_tail(&content, offset) {
                    let cut = offset as u64;
                    recovered.truncated_tail_bytes =
                        written_len(&content).saturating_sub(offset) as u64;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    file.set_len(cut).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                    tracing::warn!(
                        path = %path.display(),
                        offset = cut,
                        bytes = recovered.truncated_tail_bytes,
                        %reason,
                        "cut a torn record off the end of the raft log"
                    );
                    segment.len = cut;
                    return Ok(());
                }
                return Err(WalError::Corrupt {
                    path,
                    offset: offset as u64,
                    reason,
                });
            }
        }
    }
    segment.len = file_len as u64;
    Ok(())
}

/// Parses the record at `offset`, returning its body and the offset after it.
fn parse_record(content: &[u8], offset: usize) -> Result<(&[u8], usize), String> {
    let remaining = content.len() - offset;
    if remaining < FRAME_HEADER_BYTES {
        return Err(format!("record header cut short ({remaining} bytes left)"));
    }
    let len = u32::from_le_bytes(content[offset..offset + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(content[offset + 4..offset + 8].try_into().expect("4 bytes"));
    if len == 0 || len > WAL_RECORD_BYTES_MAX {
        return Err(format!("impossible record length {len}"));
    }
    let start = offset + FRAME_HEADER_BYTES;
    if start + len > content.len() {
        return Err(format!(
            "record of {len} bytes cut short at {} bytes",
            content.len() - start
        ));
    }
    let body = &content[start..start + len];
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(format!(
            "checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
        ));
    }
    Ok((body, start + len))
}

/// Length of `bytes` without its trailing zeros: in a preallocated segment, where the written
/// bytes end.
fn written_len(bytes: &[u8]) -> usize {
    bytes.len() - bytes.iter().rev().take_while(|byte| **byte == 0).count()
}

/// True when the damage at `offset` can only be an unfinished last write: the bad record
/// reaches (or claims to reach past) the end of the written bytes, or its header is zeros (a
/// page that was never written).
fn damage_is_tail(content: &[u8], offset: usize) -> bool {
    let rest = &content[offset..];
    if rest.len() < FRAME_HEADER_BYTES {
        return true;
    }
    // The writer never writes a zero record header. Zeros where a header belongs are pages
    // that never reached the disk: after a power loss, unsynced pages can land out of order,
    // leaving zeros followed by later unsynced bytes. Everything acknowledged was fsynced, and
    // so lies before them.
    if rest[..FRAME_HEADER_BYTES].iter().all(|byte| *byte == 0) {
        return true;
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    len <= WAL_RECORD_BYTES_MAX && FRAME_HEADER_BYTES + len >= written_len(rest)
}

fn apply_record(
    body: &[u8],
    segment_first_index: u64,
    offset: u64,
    recovered: &mut Recovered,
    locations: &mut VecDeque<Location>,
) -> Result<(), String> {
    match body[0] {
        RECORD_ENTRY if body.len() >= ENTRY_HEADER_BYTES => {
            let index = read_u64(body, 1);
            let term = read_u64(body, 9);
            let kind = body[17];
            let payload = Bytes::copy_from_slice(&body[ENTRY_HEADER_BYTES..]);
            // A later record for an index already seen replaces it and everything after it;
            // this only happens if a truncation was interrupted before the file was cut.
            while recovered
                .entries
                .last()
                .is_some_and(|last| last.index >= index)
            {
                recovered.entries.pop();
                locations.pop_back();
            }
            recovered.entries.push(WalEntry {
                index,
                term,
                kind,
                payload,
            });
            locations.push_back(Location {
                index,
                segment_first_index,
                offset,
            });
            Ok(())
        }
        RECORD_COMMITTED if body.len() == 17 => {
            let position = LogPos {
                index: read_u64(body, 1),
                term: read_u64(body, 9),
            };
            recovered.committed = Some(position);
            Ok(())
        }
        kind => Err(format!(
            "unknown record kind {kind} of {} bytes",
            body.len()
        )),
    }
}

fn check_contiguous(entries: &[WalEntry], dir: &Path) -> Result<(), WalError> {
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index + 1 {
            return Err(WalError::Corrupt {
                path: dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "gap in the log between index {} and {}",
                    pair[0].index, pair[1].index
                ),
            });
        }
    }
    Ok(())
}

fn read_purged(dir: &Path) -> Result<Option<LogPos>, WalError> {
    let path = dir.join(PURGED_FILE);
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == 20 => {
            let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
            if crc32fast::hash(&bytes[..16]) != crc {
                return Err(WalError::Corrupt {
                    path,
                    offset: 0,
                    reason: "checksum mismatch".into(),
                });
            }
            Ok(Some(LogPos {
                index: read_u64(&bytes, 0),
                term: read_u64(&bytes, 8),
            }))
        }
        Ok(bytes) => Err(WalError::Corrupt {
            path,
            offset: 0,
            reason: format!("expected 20 bytes, found {}", bytes.len()),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WalError::Io { path, source }),
    }
}

fn write_purged(dir: &Path, position: LogPos) -> Result<(), WalError> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&position.index.to_le_bytes());
    bytes.extend_from_slice(&position.term.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_file_atomically(dir, PURGED_FILE, &bytes)
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new content.
pub(crate) fn write_file_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WalError> {
    let temporary = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut file = File::create(&temporary).map_err(io_err(&temporary))?;
    file.write_all(bytes).map_err(io_err(&temporary))?;
    file.sync_all().map_err(io_err(&temporary))?;
    fs::rename(&temporary, &target).map_err(io_err(&target))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_err(dir))
}

/// Offset of the record holding entry `index` in segment `path`, for tests that damage a log.
///
/// # Errors
/// I/O errors reading the file.
pub fn record_offset(path: &Path, index: u64) -> io::Result<Option<u64>> {
    let mut content = Vec::new();
    File::open(path)?.read_to_end(&mut content)?;
    let mut offset = 0usize;
    while let Ok((body, next)) = parse_record(&content, offset) {
        if body[0] == RECORD_ENTRY && read_u64(body, 1) == index {
            return Ok(Some(offset as u64));
        }
        offset = next;
    }
    Ok(None)
}

/// Segment files of the log in `dir`, in index order, for tests and tools.
///
/// # Errors
/// I/O errors listing the directory.
pub fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    Ok(list_segments(dir)?
        .into_iter()
        .map(|segment| segment.path)
        .collect())
}

#[cfg(test)]
mod tests;
