//! openraft's log storage on top of the write-ahead log.
//!
//! Owns the translation between openraft entries and WAL records, the in-memory copy of the
//! live log (as etcd's raft keeps its unsnapshotted log in memory, so reads never touch disk),
//! and the vote file. It must not interpret payloads.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;

use super::wal::{self, Completion, LogPos, Wal, WalEntry};
use super::{EngineLogId, Payload, TypeConfig, to_log_id, to_pos};

type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;

/// WAL payload kind of a leader's blank entry.
const KIND_BLANK: u8 = 0;
/// WAL payload kind of a proposal.
const KIND_NORMAL: u8 = 1;
/// WAL payload kind of a membership change (JSON of openraft's membership).
const KIND_MEMBERSHIP: u8 = 2;
/// File holding the durable vote.
const VOTE_FILE: &str = "vote";

/// The live log, shared by the store and its readers.
#[derive(Default)]
struct LogMemory {
    /// Entries after the purged position, consecutive.
    entries: VecDeque<Entry>,
    /// Last purged entry.
    purged: Option<EngineLogId>,
    /// Last committed hint.
    committed: Option<EngineLogId>,
    /// Durable vote.
    vote: Option<Vote>,
}

impl LogMemory {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.log_id.index)
    }

    fn slice<RB: RangeBounds<u64>>(&self, range: &RB) -> Vec<Entry> {
        let Some(first) = self.first_index() else {
            return Vec::new();
        };
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index + 1,
            Bound::Unbounded => first,
        };
        let end = match range.end_bound() {
            Bound::Included(index) => index + 1,
            Bound::Excluded(index) => *index,
            Bound::Unbounded => u64::MAX,
        };
        let start_position = usize::try_from(start.saturating_sub(first)).unwrap_or(usize::MAX);
        self.entries
            .iter()
            .skip(start_position)
            .take_while(|entry| entry.log_id.index < end)
            .cloned()
            .collect()
    }
}

/// openraft's `RaftLogStorage`.
pub(super) struct LogStore {
    wal: Arc<Wal>,
    memory: Arc<Mutex<LogMemory>>,
    dir: PathBuf,
}

/// openraft's `RaftLogReader`: reads the in-memory live log.
pub(super) struct LogReader {
    memory: Arc<Mutex<LogMemory>>,
}

impl LogStore {
    /// Opens the log in `dir`; the flag is true when no log or vote existed.
    pub(super) fn open(dir: &Path, segment_bytes_max: u64) -> io::Result<(LogStore, bool)> {
        let (wal, recovered) = Wal::open(dir, segment_bytes_max)?;
        let vote = read_vote(dir)?;
        let fresh = recovered.entries.is_empty() && recovered.purged.is_none() && vote.is_none();
        let mut memory = LogMemory {
            purged: recovered.purged.map(to_log_id),
            committed: recovered.committed.map(to_log_id),
            vote,
            entries: VecDeque::with_capacity(recovered.entries.len()),
        };
        for record in recovered.entries {
            memory.entries.push_back(decode_entry(&record)?);
        }
        if recovered.truncated_tail_bytes > 0 {
            tracing::warn!(
                bytes = recovered.truncated_tail_bytes,
                "raft log had a torn tail"
            );
        }
        let store = LogStore {
            wal: Arc::new(wal),
            memory: Arc::new(Mutex::new(memory)),
            dir: dir.to_path_buf(),
        };
        Ok((store, fresh))
    }

    fn reader(&self) -> LogReader {
        LogReader {
            memory: Arc::clone(&self.memory),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.memory.lock().slice(&range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.memory.lock().vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader().try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.reader().read_vote().await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let memory = self.memory.lock();
        let last = memory
            .entries
            .back()
            .map(|entry| entry.log_id)
            .or(memory.purged);
        Ok(LogState {
            last_purged_log_id: memory.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            memory: Arc::clone(&self.memory),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let encoded = serde_json::to_vec(vote).map_err(io::Error::other)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || wal::write_file_atomically(&dir, VOTE_FILE, &encoded))
            .await
            .map_err(io::Error::other)??;
        self.memory.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<EngineLogId>) -> Result<(), io::Error> {
        if let Some(log_id) = committed {
            self.wal.set_committed(to_pos(&log_id))?;
        }
        self.memory.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<EngineLogId>, io::Error> {
        Ok(self.memory.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let records = entries
            .iter()
            .map(encode_entry)
            .collect::<io::Result<Vec<_>>>()?;
        // Readers may see the entries before they are durable; openraft only counts them
        // towards commit once the callback below has run.
        {
            let mut memory = self.memory.lock();
            for entry in entries {
                if let Some(last) = memory.entries.back() {
                    assert_eq!(
                        entry.log_id.index,
                        last.log_id.index + 1,
                        "raft log append must be consecutive"
                    );
                }
                memory.entries.push_back(entry);
            }
        }
        let done: Completion = Box::new(move |result| callback.io_completed(result));
        // The queue is bounded; when it is full, the wait for room happens on a blocking
        // thread, never on a runtime worker. openraft awaits each append, so order holds.
        if let Some(full) = self.wal.try_append(records, done)? {
            let wal = Arc::clone(&self.wal);
            tokio::task::spawn_blocking(move || wal.append_waiting(full))
                .await
                .map_err(io::Error::other)??;
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_kept: Option<EngineLogId>) -> Result<(), io::Error> {
        let keep_through = last_kept.map_or(0, |log_id| log_id.index);
        {
            let mut memory = self.memory.lock();
            while memory
                .entries
                .back()
                .is_some_and(|entry| last_kept.is_none() || entry.log_id.index > keep_through)
            {
                memory.entries.pop_back();
            }
        }
        let wal = Arc::clone(&self.wal);
        let cut_after = if last_kept.is_none() {
            None
        } else {
            Some(keep_through)
        };
        tokio::task::spawn_blocking(move || wal.truncate_after(cut_after))
            .await
            .map_err(io::Error::other)??;
        Ok(())
    }

    async fn purge(&mut self, log_id: EngineLogId) -> Result<(), io::Error> {
        {
            let mut memory = self.memory.lock();
            while memory
                .entries
                .front()
                .is_some_and(|entry| entry.log_id.index <= log_id.index)
            {
                memory.entries.pop_front();
            }
            memory.purged = Some(log_id);
        }
        let wal = Arc::clone(&self.wal);
        let position = to_pos(&log_id);
        tokio::task::spawn_blocking(move || wal.purge(position))
            .await
            .map_err(io::Error::other)??;
        Ok(())
    }
}

fn encode_entry(entry: &Entry) -> io::Result<WalEntry> {
    let (kind, payload) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, Bytes::new()),
        EntryPayload::Normal(Payload(bytes)) => (KIND_NORMAL, bytes.clone()),
        EntryPayload::Membership(membership) => (
            KIND_MEMBERSHIP,
            Bytes::from(serde_json::to_vec(membership).map_err(io::Error::other)?),
        ),
    };
    let position = to_pos(&entry.log_id);
    Ok(WalEntry {
        index: position.index,
        term: position.term,
        kind,
        payload,
    })
}

fn decode_entry(record: &WalEntry) -> io::Result<Entry> {
    let log_id = to_log_id(LogPos {
        index: record.index,
        term: record.term,
    });
    let payload = match record.kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(Payload(record.payload.clone())),
        KIND_MEMBERSHIP => {
            EntryPayload::Membership(serde_json::from_slice(&record.payload).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("membership entry {}: {err}", record.index),
                )
            })?)
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("entry {} has unknown payload kind {other}", record.index),
            ));
        }
    };
    Ok(Entry::new(log_id, payload))
}

fn read_vote(dir: &Path) -> io::Result<Option<Vote>> {
    match std::fs::read(dir.join(VOTE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("vote file: {err}"))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}
