//! The hub's bookkeeping, under one lock: streams, watchers, the synced indexes and the
//! unsynced set. Everything here is synchronous and never waits: a full stream buffer turns
//! a synced watcher into an unsynced one instead.
//!
//! Must not read the store: the catch-up loop (`tasks`) reads history outside the lock and
//! hands the batch to [`HubState::finish_catch_up`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;

use super::{
    AUTO_WATCH_ID, CreateRequest, Message, Outbox, STREAM_WATCH_ID, WatchCounts, WatchError,
    WatchId, event_bytes,
};
use crate::limits::{WATCH_STREAM_WATCHERS_MAX, WATCH_STREAMS_MAX, WATCH_SYNC_WATCHERS_MAX};
use crate::storage::mvcc::HistoryBatch;
use crate::types::{Event, EventType, KeyRange, Revision};

/// A stream's id inside the hub.
pub(super) type StreamId = u64;

/// A watcher's identity in the hub: its stream, then its id there. Ordered by stream so
/// the watchers of one stream are adjacent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct WatcherKey {
    pub stream: StreamId,
    pub id: WatchId,
}

#[derive(Debug)]
struct Watcher {
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// The first revision this watcher has not been given.
    next_rev: Revision,
    /// In the synced indexes (receives from publish) rather than in `unsynced`.
    synced: bool,
    /// Something was sent to it since the last progress tick.
    sent_since_tick: bool,
}

impl Watcher {
    /// The event as this watcher receives it, if it wants it.
    fn shape(&self, event: &Event) -> Option<Event> {
        let wanted = match event.kind {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        };
        if !wanted || event.kv.mod_revision < self.next_rev || !self.range.contains(&event.kv.key) {
            return None;
        }
        let mut shaped = event.clone();
        if !self.prev_kv {
            shaped.prev_kv = None;
        }
        Some(shaped)
    }
}

#[derive(Debug)]
struct StreamEntry {
    outbox: Outbox,
    ids: BTreeSet<WatchId>,
    /// Where the search for an automatic id starts (etcd: ids count up, skipping used ones).
    next_auto_id: WatchId,
    /// Its watchers that are not synced.
    unsynced: usize,
    /// A requested progress report waits for every watcher to catch up.
    progress_pending: bool,
}

/// What the catch-up loop reads next: history from `from`, for `group`.
#[derive(Debug)]
pub(super) struct CatchUpPlan {
    pub from: Revision,
    pub group: Vec<WatcherKey>,
}

/// Streams and watchers.
#[derive(Debug)]
pub(super) struct HubState {
    /// The last revision apply published.
    published: Revision,
    next_stream: StreamId,
    streams: HashMap<StreamId, StreamEntry>,
    watchers: HashMap<WatcherKey, Watcher>,
    /// Synced watchers of a single key, by key.
    synced_keys: HashMap<Bytes, HashSet<WatcherKey>>,
    /// Synced watchers of a range.
    synced_ranges: BTreeSet<WatcherKey>,
    unsynced: BTreeSet<WatcherKey>,
    /// Where the next catch-up round starts in `unsynced`, so every watcher gets its turn.
    catch_up_cursor: Option<WatcherKey>,
    /// Watchers that asked for `prev_kv`.
    prev_kv_watchers: usize,
}

impl HubState {
    pub fn new(published: Revision) -> HubState {
        HubState {
            published,
            next_stream: 0,
            streams: HashMap::new(),
            watchers: HashMap::new(),
            synced_keys: HashMap::new(),
            synced_ranges: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            catch_up_cursor: None,
            prev_kv_watchers: 0,
        }
    }

    /// Some watcher wants `prev_kv`, so puts must load the version they replace (see
    /// `MvccStore::set_put_prev_kv`).
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers > 0
    }

    pub fn counts(&self) -> WatchCounts {
        WatchCounts {
            streams: self.streams.len(),
            watchers: self.watchers.len(),
            unsynced: self.unsynced.len(),
            published: self.published,
            buffered_bytes: self
                .streams
                .values()
                .map(|entry| {
                    entry
                        .outbox
                        .buffered
                        .load(std::sync::atomic::Ordering::Acquire)
                })
                .sum(),
        }
    }

    pub fn open_stream(&mut self, outbox: Outbox) -> Result<StreamId, WatchError> {
        if self.streams.len() >= WATCH_STREAMS_MAX {
            return Err(WatchError::TooManyStreams);
        }
        let id = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(
            id,
            StreamEntry {
                outbox,
                ids: BTreeSet::new(),
                next_auto_id: 0,
                unsynced: 0,
                progress_pending: false,
            },
        );
        Ok(id)
    }

    pub fn close_stream(&mut self, stream: StreamId) {
        let Some(entry) = self.streams.remove(&stream) else {
            return;
        };
        for id in entry.ids {
            self.forget(WatcherKey { stream, id });
        }
    }

    /// The last revision apply published.
    pub fn published(&self) -> Revision {
        self.published
    }

    /// Registers a watcher. Returns the reply and whether it starts behind (unsynced).
    pub fn create(&mut self, stream: StreamId, request: CreateRequest) -> (Message, bool) {
        let published = self.published;
        let refused = |reason| {
            (
                Message::Refused {
                    reason,
                    revision: published,
                },
                false,
            )
        };
        let Some(entry) = self.streams.get_mut(&stream) else {
            return refused(WatchError::TooManyStreams);
        };
        if request.range.is_empty_interval() {
            return refused(WatchError::EmptyRange);
        }
        if request.start_revision < 0 {
            return refused(WatchError::NegativeRevision);
        }
        if entry.ids.len() >= WATCH_STREAM_WATCHERS_MAX {
            return refused(WatchError::TooManyWatchers);
        }
        let id = if request.watch_id == AUTO_WATCH_ID {
            while entry.ids.contains(&entry.next_auto_id) {
                entry.next_auto_id += 1;
            }
            let id = entry.next_auto_id;
            entry.next_auto_id += 1;
            id
        } else if entry.ids.contains(&request.watch_id) {
            return refused(WatchError::DuplicateId);
        } else {
            request.watch_id
        };
        entry.ids.insert(id);
        let next_rev = if request.start_revision == 0 {
            published + 1
        } else {
            request.start_revision
        };
        // Injected bug: a watcher that must catch up from history (a resuming client) starts
        // one revision late, so the first revision it asked for is never delivered.
        #[cfg(feature = "bug-injection")]
        let next_rev = if crate::bugs::enabled(crate::bugs::Bug::WatchSkipOnResume)
            && request.start_revision != 0
            && next_rev <= published
        {
            next_rev + 1
        } else {
            next_rev
        };
        let key = WatcherKey { stream, id };
        let synced = next_rev > published;
        self.prev_kv_watchers += usize::from(request.prev_kv);
        self.watchers.insert(
            key,
            Watcher {
                range: request.range,
                no_put: request.no_put,
                no_delete: request.no_delete,
                prev_kv: request.prev_kv,
                progress_notify: request.progress_notify,
                fragment: request.fragment,
                next_rev,
                synced: false,
                sent_since_tick: false,
            },
        );
        if synced {
            self.index(key);
        } else {
            self.unsynced.insert(key);
            if let Some(entry) = self.streams.get_mut(&stream) {
                entry.unsynced += 1;
            }
        }
        (
            Message::Created {
                watch_id: id,
                revision: published,
            },
            !synced,
        )
    }

    pub fn cancel(&mut self, stream: StreamId, id: WatchId) -> Option<Message> {
        let entry = self.streams.get_mut(&stream)?;
        if !entry.ids.remove(&id) {
            return None;
        }
        self.forget(WatcherKey { stream, id });
        Some(Message::Canceled {
            watch_id: id,
            revision: self.published,
        })
    }

    pub fn request_progress(&mut self, stream: StreamId) -> Option<Message> {
        let published = self.published;
        let entry = self.streams.get_mut(&stream)?;
        if entry.unsynced == 0 {
            Some(Message::Progress {
                watch_id: STREAM_WATCH_ID,
                revision: published,
            })
        } else {
            entry.progress_pending = true;
            None
        }
    }

    /// Delivers a committed batch to synced watchers. Returns true when some watcher was set
    /// aside because its stream's buffer was full.
    pub fn publish(&mut self, revision: Revision, events: &[Event]) -> bool {
        self.published = self.published.max(revision);
        if events.is_empty() || (self.synced_keys.is_empty() && self.synced_ranges.is_empty()) {
            return false;
        }
        let mut matched: BTreeMap<WatcherKey, Vec<Event>> = BTreeMap::new();
        // Watchers that want a `prev_kv` this batch did not load, with the revision of the
        // first such event: they take the batch from history instead.
        let mut unloaded: BTreeMap<WatcherKey, Revision> = BTreeMap::new();
        for event in events {
            let by_key = self
                .synced_keys
                .get(event.kv.key.as_ref())
                .into_iter()
                .flatten();
            for key in by_key.chain(self.synced_ranges.iter()) {
                let Some(watcher) = self.watchers.get(key) else {
                    continue;
                };
                if let Some(shaped) = watcher.shape(event) {
                    if watcher.prev_kv && prev_kv_unloaded(event) {
                        unloaded.entry(*key).or_insert(event.kv.mod_revision);
                    } else {
                        matched.entry(*key).or_default().push(shaped);
                    }
                }
            }
        }
        let mut set_aside = Vec::new();
        for (key, at) in unloaded {
            let first = matched
                .remove(&key)
                .and_then(|events| Some(events.first()?.kv.mod_revision))
                .unwrap_or(at);
            set_aside.push((key, first));
        }
        for (stream, group) in group_by_stream(matched) {
            let Some(entry) = self.streams.get(&stream) else {
                continue;
            };
            let (messages, bytes) = self.event_messages(&group, revision);
            if entry.outbox.offer(messages, bytes).is_ok() {
                for (key, events) in &group {
                    if let (Some(watcher), Some(last)) = (self.watchers.get_mut(key), events.last())
                    {
                        watcher.next_rev = last.kv.mod_revision + 1;
                        watcher.sent_since_tick = true;
                    }
                }
            } else {
                set_aside.extend(
                    group
                        .iter()
                        .filter_map(|(key, events)| Some((*key, events.first()?.kv.mod_revision))),
                );
            }
        }
        let any = !set_aside.is_empty();
        for (key, first) in set_aside {
            self.set_aside(key, first);
        }
        any
    }

    /// Every synced watcher falls behind: the state was replaced under them.
    pub fn restore(&mut self, revision: Revision) {
        let synced: Vec<WatcherKey> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| watcher.synced)
            .map(|(key, _)| *key)
            .collect();
        // Everything up to the old published revision was given to them (or did not match).
        let delivered = self.published + 1;
        for key in synced {
            self.set_aside(key, delivered);
        }
        self.published = revision;
    }

    /// Picks the unsynced watchers whose streams have room, joining at once those already
    /// past the published revision. `None` when there is nothing to read.
    ///
    /// First retries the progress reports that could not be sent when their stream caught
    /// up: the loop comes here whenever woken and every [`WATCH_SYNC_INTERVAL`], so such a
    /// report waits for the buffer to drain, not for the next progress tick (10 minutes by
    /// default).
    ///
    /// [`WATCH_SYNC_INTERVAL`]: crate::limits::WATCH_SYNC_INTERVAL
    pub fn plan_catch_up(&mut self) -> Option<CatchUpPlan> {
        self.retry_pending_progress();
        let start = match self.catch_up_cursor {
            Some(cursor) => Bound::Excluded(cursor),
            None => Bound::Unbounded,
        };
        let after = self.unsynced.range((start, Bound::Unbounded));
        let before = self
            .catch_up_cursor
            .map(|cursor| self.unsynced.range(..=cursor))
            .into_iter()
            .flatten();
        let mut group = Vec::new();
        let mut ready = Vec::new();
        for key in after.chain(before) {
            if group.len() >= WATCH_SYNC_WATCHERS_MAX {
                break;
            }
            let (Some(watcher), Some(entry)) =
                (self.watchers.get(key), self.streams.get(&key.stream))
            else {
                continue;
            };
            if !entry.outbox.has_room() {
                continue;
            }
            if watcher.next_rev > self.published {
                ready.push(*key);
            } else {
                group.push(*key);
            }
        }
        for key in ready {
            self.join(key);
        }
        self.catch_up_cursor = group.last().copied();
        let from = group
            .iter()
            .filter_map(|key| self.watchers.get(key))
            .map(|watcher| watcher.next_rev)
            .min()?;
        Some(CatchUpPlan { from, group })
    }

    /// Gives `group` the events of `batch` that they have not had. Returns true when some
    /// watcher moved on.
    ///
    /// `from` is where the read started. A watcher now behind it (its id was cancelled and
    /// created again, earlier, while the read ran) is left for the next round. The batch is
    /// cut at the published revision: history may already hold a commit whose publish is on
    /// its way, and a watcher must not run ahead of what a progress report would vouch for.
    pub fn finish_catch_up(
        &mut self,
        group: &[WatcherKey],
        from: Revision,
        batch: &HistoryBatch,
    ) -> bool {
        let next = batch.next.min(self.published + 1);
        let mut matched: BTreeMap<WatcherKey, Vec<Event>> = BTreeMap::new();
        for key in group {
            let Some(watcher) = self.watchers.get(key) else {
                continue;
            };
            if watcher.synced || watcher.next_rev < from || watcher.next_rev >= next {
                continue;
            }
            let events = batch
                .events
                .iter()
                .filter(|event| event.kv.mod_revision < next)
                .filter_map(|event| watcher.shape(event))
                .collect();
            matched.insert(*key, events);
        }
        let header_revision = next - 1;
        let mut progressed = false;
        for (stream, group) in group_by_stream(matched) {
            let Some(entry) = self.streams.get(&stream) else {
                continue;
            };
            let sending: Vec<_> = group
                .iter()
                .filter(|(_, events)| !events.is_empty())
                .cloned()
                .collect();
            if !sending.is_empty() {
                let (messages, bytes) = self.event_messages(&sending, header_revision);
                if entry.outbox.offer(messages, bytes).is_err() {
                    continue;
                }
            }
            for (key, events) in &group {
                if let Some(watcher) = self.watchers.get_mut(key) {
                    watcher.next_rev = next;
                    watcher.sent_since_tick |= !events.is_empty();
                    progressed = true;
                    if watcher.next_rev > self.published {
                        self.join(*key);
                    }
                }
            }
        }
        progressed
    }

    /// Tells the watchers of `group` whose next revision is compacted, and drops them.
    /// Returns true when some watcher was told.
    pub fn finish_compacted(&mut self, group: &[WatcherKey], compact_revision: Revision) -> bool {
        let mut progressed = false;
        for key in group {
            let Some(watcher) = self.watchers.get(key) else {
                continue;
            };
            if watcher.synced || watcher.next_rev >= compact_revision {
                continue;
            }
            let Some(entry) = self.streams.get_mut(&key.stream) else {
                continue;
            };
            let message = Message::Compacted {
                watch_id: key.id,
                compact_revision,
            };
            if entry.outbox.offer(vec![message], 0).is_ok() {
                entry.ids.remove(&key.id);
                self.forget(*key);
                progressed = true;
            }
        }
        progressed
    }

    /// One progress tick: every synced watcher that asked for notifications and was sent
    /// nothing since the last tick gets one at the published revision.
    pub fn progress_tick(&mut self) {
        let mut due: BTreeMap<StreamId, Vec<Message>> = BTreeMap::new();
        for (key, watcher) in &mut self.watchers {
            if watcher.progress_notify && watcher.synced && !watcher.sent_since_tick {
                due.entry(key.stream).or_default().push(Message::Progress {
                    watch_id: key.id,
                    revision: self.published,
                });
            }
            watcher.sent_since_tick = false;
        }
        for (stream, messages) in due {
            if let Some(entry) = self.streams.get(&stream) {
                // A full buffer skips this tick: the watcher is busy receiving anyway.
                let _ = entry.outbox.offer(messages, 0);
            }
        }
        self.retry_pending_progress();
    }

    /// Sends the progress reports that waited for catch-up and then found their stream's
    /// buffer full.
    fn retry_pending_progress(&mut self) {
        let pending: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, entry)| entry.progress_pending && entry.unsynced == 0)
            .map(|(id, _)| *id)
            .collect();
        for stream in pending {
            self.send_pending_progress(stream);
        }
    }

    fn event_messages(
        &self,
        group: &[(WatcherKey, Vec<Event>)],
        revision: Revision,
    ) -> (Vec<Message>, usize) {
        let mut bytes = 0;
        let messages = group
            .iter()
            .map(|(key, events)| {
                bytes += events.iter().map(event_bytes).sum::<usize>();
                Message::Events {
                    watch_id: key.id,
                    revision,
                    events: events.clone(),
                    fragment: self.watchers.get(key).is_some_and(|w| w.fragment),
                }
            })
            .collect();
        (messages, bytes)
    }

    /// Puts a synced watcher into the synced indexes.
    fn index(&mut self, key: WatcherKey) {
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return;
        };
        watcher.synced = true;
        if watcher.range.is_single() {
            self.synced_keys
                .entry(watcher.range.key.clone())
                .or_default()
                .insert(key);
        } else {
            self.synced_ranges.insert(key);
        }
    }

    /// Takes a watcher out of the synced indexes.
    fn unindex(&mut self, key: WatcherKey) {
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return;
        };
        watcher.synced = false;
        if watcher.range.is_single() {
            if let Some(set) = self.synced_keys.get_mut(watcher.range.key.as_ref()) {
                set.remove(&key);
                if set.is_empty() {
                    self.synced_keys.remove(watcher.range.key.as_ref());
                }
            }
        } else {
            self.synced_ranges.remove(&key);
        }
    }

    /// A synced watcher could not be given events starting at `first`: it catches up.
    fn set_aside(&mut self, key: WatcherKey, first: Revision) {
        self.unindex(key);
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return;
        };
        watcher.next_rev = watcher.next_rev.max(first);
        if self.unsynced.insert(key)
            && let Some(entry) = self.streams.get_mut(&key.stream)
        {
            entry.unsynced += 1;
        }
    }

    /// An unsynced watcher has everything up to the published revision: it joins the synced
    /// group, and a pending progress report of its stream may now go out.
    fn join(&mut self, key: WatcherKey) {
        if !self.unsynced.remove(&key) {
            return;
        }
        self.index(key);
        let Some(entry) = self.streams.get_mut(&key.stream) else {
            return;
        };
        entry.unsynced -= 1;
        if entry.unsynced == 0 && entry.progress_pending {
            self.send_pending_progress(key.stream);
        }
    }

    fn send_pending_progress(&mut self, stream: StreamId) {
        let published = self.published;
        if let Some(entry) = self.streams.get_mut(&stream) {
            let message = Message::Progress {
                watch_id: STREAM_WATCH_ID,
                revision: published,
            };
            if entry.outbox.offer(vec![message], 0).is_ok() {
                entry.progress_pending = false;
            }
        }
    }

    /// Removes a watcher from every index (its stream's id set is the caller's).
    fn forget(&mut self, key: WatcherKey) {
        self.unindex(key);
        if self.unsynced.remove(&key)
            && let Some(entry) = self.streams.get_mut(&key.stream)
        {
            entry.unsynced -= 1;
            if entry.unsynced == 0 && entry.progress_pending {
                self.send_pending_progress(key.stream);
            }
        }
        if let Some(watcher) = self.watchers.remove(&key) {
            self.prev_kv_watchers -= usize::from(watcher.prev_kv);
        }
    }
}

/// A put that replaced a version without loading it: the batch was applied while no
/// watcher wanted `prev_kv` (a put's `version` counts from 1 at creation).
fn prev_kv_unloaded(event: &Event) -> bool {
    event.kind == EventType::Put && event.kv.version > 1 && event.prev_kv.is_none()
}

/// The events each watcher of one stream gets.
type StreamGroup = Vec<(WatcherKey, Vec<Event>)>;

/// Splits per-watcher events into runs of one stream each.
fn group_by_stream(matched: BTreeMap<WatcherKey, Vec<Event>>) -> Vec<(StreamId, StreamGroup)> {
    let mut groups: Vec<(StreamId, StreamGroup)> = Vec::new();
    for (key, events) in matched {
        match groups.last_mut() {
            Some((stream, group)) if *stream == key.stream => group.push((key, events)),
            _ => groups.push((key.stream, vec![(key, events)])),
        }
    }
    groups
}
