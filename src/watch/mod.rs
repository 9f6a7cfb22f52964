//! Watch: delivering committed changes to watchers, in revision order, each exactly once.
//!
//! ```text
//! apply ── commit ──► WatchHub::publish ──► synced watchers ──► stream buffer ──► client
//!                           │                (buffer full: set aside)      ▲
//!                           ▼                                               │
//!                      unsynced watchers ◄── catch-up loop reads MvccStore::history
//!                      (start in the past, or set aside)  and joins them to synced
//! ```
//!
//! Every watcher keeps `next_rev`, the first revision it has not been given. Both paths give
//! it only events at or above `next_rev` and move `next_rev` past what they gave, so a watcher
//! that joins the synced group while a publish of revisions it already read from history is
//! on its way receives nothing twice. Events of one revision always travel in one message.
//!
//! Owns watcher registration, matching, the per-stream buffers and progress notifications.
//! Must not change state, propose, or know about gRPC: `server::grpc::watch` turns
//! [`Message`]s into wire responses (and splits fragments).

mod state;
mod tasks;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use self::state::HubState;
use crate::limits::{WATCH_STREAM_BUFFER_BATCHES, WATCH_STREAM_BUFFER_BYTES_MAX};
use crate::storage::mvcc::{Committed, MvccStore};
use crate::types::{Event, KeyRange, Revision};

/// A watcher's id on its stream (etcd `watch_id`).
pub type WatchId = i64;

/// The id in a create request that asks the stream to pick one (etcd's `AutoWatchID`).
pub const AUTO_WATCH_ID: WatchId = 0;

/// The watch id of a stream-wide message: a refused create, a requested progress report.
pub const STREAM_WATCH_ID: WatchId = -1;

/// What a client asks to watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateRequest {
    /// Keys watched, with etcd's range syntax.
    pub range: KeyRange,
    /// First revision wanted; 0 means "after the current one".
    pub start_revision: Revision,
    /// Send periodic progress notifications while idle.
    pub progress_notify: bool,
    /// Leave out put events.
    pub no_put: bool,
    /// Leave out delete events.
    pub no_delete: bool,
    /// Include each event's previous version.
    pub prev_kv: bool,
    /// The id wanted, or [`AUTO_WATCH_ID`].
    pub watch_id: WatchId,
    /// Responses too large for one message may be split.
    pub fragment: bool,
}

/// Why a create was refused. The text is sent as `cancel_reason`, so it is etcd's where
/// etcd has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The stream already has a watcher with the id asked for.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    /// `key >= range_end`: no key can ever match.
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// A negative start revision (etcd 3.5 and later refuse it so).
    #[error("etcdserver: mvcc: required revision has been compacted")]
    NegativeRevision,
    /// The stream holds [`crate::limits::WATCH_STREAM_WATCHERS_MAX`] watchers.
    #[error("mvcc: too many watchers on the stream")]
    TooManyWatchers,
    /// The member serves [`crate::limits::WATCH_STREAMS_MAX`] streams.
    #[error("etcdserver: too many watch streams")]
    TooManyStreams,
    /// The caller may not read the range (decided by the server before the create reaches
    /// the hub). etcd-compat: etcd 3.4 sends its gRPC error's whole text as the reason.
    #[error("rpc error: code = PermissionDenied desc = etcdserver: permission denied")]
    PermissionDenied,
}

/// One message for a stream's client, in the order it must be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A create succeeded; always before any event of the watcher.
    Created {
        /// The watcher's id.
        watch_id: WatchId,
        /// The revision the member had published when the watcher was created.
        revision: Revision,
    },
    /// A create was refused (`created` and `canceled`, watch id -1).
    Refused {
        /// Why.
        reason: WatchError,
        /// The published revision at the time.
        revision: Revision,
    },
    /// Events of whole revisions for one watcher.
    Events {
        /// The watcher.
        watch_id: WatchId,
        /// The last revision the message covers.
        revision: Revision,
        /// The events, in revision order.
        events: Vec<Event>,
        /// The watcher allows splitting an oversized message into fragments.
        fragment: bool,
    },
    /// The watcher was cancelled at the client's request.
    Canceled {
        /// The watcher.
        watch_id: WatchId,
        /// The published revision at the time.
        revision: Revision,
    },
    /// The watcher's next revision was compacted away; it is gone.
    Compacted {
        /// The watcher.
        watch_id: WatchId,
        /// The store's compact revision.
        compact_revision: Revision,
    },
    /// Every event up to `revision` that matches the watcher (or, with
    /// [`STREAM_WATCH_ID`], every watcher of the stream) has been sent before this message.
    Progress {
        /// The watcher, or [`STREAM_WATCH_ID`].
        watch_id: WatchId,
        /// The revision vouched for.
        revision: Revision,
    },
}

/// Messages handed to a stream at once. Dropping it releases its share of the stream's
/// buffer bound.
#[derive(Debug)]
pub struct Batch {
    messages: Vec<Message>,
    bytes: usize,
    buffered: Arc<AtomicUsize>,
}

impl Batch {
    /// Takes the messages out.
    pub fn take(mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.buffered.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Bytes an event holds in a buffer, for the stream's byte bound.
fn event_bytes(event: &Event) -> usize {
    const OVERHEAD: usize = 64;
    let previous = event
        .prev_kv
        .as_ref()
        .map_or(0, |kv| kv.key.len() + kv.value.len() + OVERHEAD);
    event.kv.key.len() + event.kv.value.len() + OVERHEAD + previous
}

/// The sending half of one stream's buffer.
#[derive(Clone, Debug)]
struct Outbox {
    tx: mpsc::Sender<Batch>,
    buffered: Arc<AtomicUsize>,
}

impl Outbox {
    /// True when a batch would be taken now.
    fn has_room(&self) -> bool {
        self.tx.capacity() > 0
            && self.buffered.load(Ordering::Acquire) < WATCH_STREAM_BUFFER_BYTES_MAX
    }

    /// Queues `messages` unless the buffer is full (or the client is gone); hands them back
    /// then. One batch is always taken by an empty buffer, however large.
    fn offer(&self, messages: Vec<Message>, bytes: usize) -> Result<(), Vec<Message>> {
        let before = self.buffered.load(Ordering::Acquire);
        if before > 0 && before.saturating_add(bytes) > WATCH_STREAM_BUFFER_BYTES_MAX {
            return Err(messages);
        }
        self.buffered.fetch_add(bytes, Ordering::AcqRel);
        let batch = Batch {
            messages,
            bytes,
            buffered: Arc::clone(&self.buffered),
        };
        self.tx.try_send(batch).map_err(|err| {
            let batch = match err {
                mpsc::error::TrySendError::Full(batch)
                | mpsc::error::TrySendError::Closed(batch) => batch,
            };
            batch.take()
        })
    }
}

/// The receiver side of a stream is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("watch stream closed")]
pub struct StreamClosed;

/// Watchers of this member: registration, delivery from apply, catch-up and progress.
pub struct WatchHub {
    store: Arc<MvccStore>,
    state: Mutex<HubState>,
    /// Wakes the catch-up loop when a watcher becomes unsynced.
    wake: Notify,
    /// Set when the member stops: every receiver ends.
    closed: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = self.counts();
        formatter
            .debug_struct("WatchHub")
            .field("counts", &counts)
            .finish_non_exhaustive()
    }
}

/// How many streams and watchers a hub holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchCounts {
    /// Open streams.
    pub streams: usize,
    /// Watchers on all streams.
    pub watchers: usize,
    /// Watchers behind the published revision, catching up from history.
    pub unsynced: usize,
    /// The last revision published by apply.
    pub published: Revision,
    /// Event bytes queued in all streams' buffers.
    pub buffered_bytes: usize,
}

impl WatchHub {
    /// A hub over `store`, starting at its current revision.
    pub fn new(store: Arc<MvccStore>) -> Arc<WatchHub> {
        let published = store.current_revision();
        // No watcher yet, so no put needs to load what it replaces.
        store.set_put_prev_kv(false);
        Arc::new(WatchHub {
            store,
            state: Mutex::new(HubState::new(published)),
            wake: Notify::new(),
            closed: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Hands a committed batch's events to the synced watchers. Called by apply after the
    /// batch is in RocksDB, in commit order; never waits for a client.
    pub fn publish(&self, committed: &Committed) {
        let mut state = self.state.lock();
        // Settled here rather than at every cancel: the flag only has to be on while a
        // `prev_kv` watcher exists, and apply calls this after every batch anyway.
        self.store.set_put_prev_kv(state.wants_prev_kv());
        let set_aside = state.publish(committed.revision, &committed.events);
        drop(state);
        if set_aside {
            self.wake.notify_one();
        }
    }

    /// The store's whole state was replaced (a snapshot install): every watcher catches up
    /// from the new state's history, or learns that it was compacted.
    pub fn restore(&self) {
        let revision = self.store.current_revision();
        self.state.lock().restore(revision);
        self.wake.notify_one();
    }

    /// Opens a stream: a handle for requests and the receiver of its messages.
    ///
    /// # Errors
    /// [`WatchError::TooManyStreams`] at the member's stream limit.
    pub fn open_stream(self: &Arc<Self>) -> Result<(WatchStream, WatchReceiver), WatchError> {
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER_BATCHES);
        let outbox = Outbox {
            tx,
            buffered: Arc::new(AtomicUsize::new(0)),
        };
        let id = self.state.lock().open_stream(outbox.clone())?;
        Ok((
            WatchStream {
                hub: Arc::clone(self),
                id,
                outbox,
            },
            WatchReceiver {
                rx,
                closed: self.closed.subscribe(),
            },
        ))
    }

    /// Ends every stream (the member is stopping): receivers return `None` from now on, so
    /// client streams finish instead of holding the listener open.
    pub fn shut_down(&self) {
        self.closed.send_replace(true);
    }

    /// Current counts, for tests and metrics.
    pub fn counts(&self) -> WatchCounts {
        self.state.lock().counts()
    }

    /// Starts the catch-up loop and the progress notifier; abort the handles to stop them.
    pub fn spawn(self: &Arc<Self>, progress_interval: Duration) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(tasks::catch_up(Arc::downgrade(self))),
            tokio::spawn(tasks::notify_progress(
                Arc::downgrade(self),
                progress_interval,
            )),
        ]
    }
}

/// One client stream's request side. Dropping it removes the stream's watchers.
#[derive(Debug)]
pub struct WatchStream {
    hub: Arc<WatchHub>,
    id: state::StreamId,
    outbox: Outbox,
}

impl WatchStream {
    /// Creates a watcher. The reply (`Created` or `Refused`) is queued before any event
    /// of the watcher. Waits while the stream's buffer is full.
    ///
    /// # Errors
    /// [`StreamClosed`] when the receiver is gone.
    pub async fn create(&self, request: CreateRequest) -> Result<(), StreamClosed> {
        let permit = self.outbox.tx.reserve().await.map_err(|_| StreamClosed)?;
        // The reply is queued before the lock is released: a publish from apply that comes
        // in between would otherwise queue the new watcher's first event ahead of it (a
        // permit holds a place in the buffer's bound, not in its order).
        let mut state = self.hub.state.lock();
        let (message, unsynced) = state.create(self.id, request);
        permit.send(self.control(message));
        // On at once: a batch applied from now on loads what its puts replace. One already
        // being applied may not have; `publish` sends that one from history.
        self.hub.store.set_put_prev_kv(state.wants_prev_kv());
        drop(state);
        if unsynced {
            self.hub.wake.notify_one();
        }
        Ok(())
    }

    /// Refuses a create the hub never saw (the caller lacks permission), in the stream's
    /// order like any other reply.
    ///
    /// # Errors
    /// [`StreamClosed`] when the receiver is gone.
    pub async fn refuse(&self, reason: WatchError) -> Result<(), StreamClosed> {
        let permit = self.outbox.tx.reserve().await.map_err(|_| StreamClosed)?;
        let state = self.hub.state.lock();
        let message = Message::Refused {
            reason,
            revision: state.published(),
        };
        permit.send(self.control(message));
        drop(state);
        Ok(())
    }

    /// Cancels watcher `watch_id`, queuing `Canceled`; an unknown id gets no reply, as in
    /// etcd.
    ///
    /// # Errors
    /// [`StreamClosed`] when the receiver is gone.
    pub async fn cancel(&self, watch_id: WatchId) -> Result<(), StreamClosed> {
        let permit = self.outbox.tx.reserve().await.map_err(|_| StreamClosed)?;
        let mut state = self.hub.state.lock();
        if let Some(message) = state.cancel(self.id, watch_id) {
            permit.send(self.control(message));
        }
        drop(state);
        Ok(())
    }

    /// Asks for a stream-wide progress report: sent at once when every watcher of the
    /// stream is caught up, otherwise as soon as they all are.
    ///
    /// # Errors
    /// [`StreamClosed`] when the receiver is gone.
    pub async fn request_progress(&self) -> Result<(), StreamClosed> {
        let permit = self.outbox.tx.reserve().await.map_err(|_| StreamClosed)?;
        // Queued under the lock, so no event published after the revision it vouches for
        // can overtake it.
        let mut state = self.hub.state.lock();
        if let Some(message) = state.request_progress(self.id) {
            permit.send(self.control(message));
        }
        drop(state);
        Ok(())
    }

    fn control(&self, message: Message) -> Batch {
        Batch {
            messages: vec![message],
            bytes: 0,
            buffered: Arc::clone(&self.outbox.buffered),
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.hub.state.lock().close_stream(self.id);
    }
}

/// One client stream's message side.
#[derive(Debug)]
pub struct WatchReceiver {
    rx: mpsc::Receiver<Batch>,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl WatchReceiver {
    /// The next batch, or `None` once the stream handle is gone and everything was taken,
    /// or the member is stopping.
    pub async fn recv(&mut self) -> Option<Batch> {
        if *self.closed.borrow() {
            return None;
        }
        tokio::select! {
            batch = self.rx.recv() => batch,
            _ = self.closed.wait_for(|closed| *closed) => None,
        }
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Option<Batch> {
        if *self.closed.borrow() {
            return None;
        }
        self.rx.try_recv().ok()
    }
}
