//! The hub's acceptance property test.
//!
//! Goal: every watcher receives exactly the committed events it asked for: in revision
//! order, each once, each revision's events in one message, none missing, none below its
//! start revision, with `prev_kv` as asked; or a prefix of them followed by a `Compacted`
//! naming a compaction that really removed its next revision, and nothing after. Progress
//! notifications never vouch for a revision whose events are still to come.
//!
//! Method: proptest generates steps: write batches (puts, single and range deletes,
//! multi-key txns with a compare, compactions; several per commit, as apply batches
//! entries), bursts of puts that overflow a stream's buffer, watcher creations with random
//! ranges (single key, interval, prefix, from a key, everything), start revisions (0, past,
//! current, future, the first), `prev_kv` and NOPUT/NODELETE, `prev_kv` watchers created
//! between a batch's commit and its publish (so the batch did not load `prev_kv`), cancels
//! and progress requests, on three streams that stop and resume reading. The store is the real
//! [`MvccStore`]; each batch is committed and published as apply does, while the catch-up
//! loop and a fast progress notifier run on other threads. Expectations come from the MVCC
//! property test's model (`storage::mvcc::tests::model`), not from the store's history, so
//! the hub is not checked against the code that feeds it.
//!
//! At the end every stream reads again, the loop is given time to catch everyone up, and
//! each stream's messages are checked watcher by watcher. `PROPTEST_CASES=n` overrides the
//! case count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::{Fixture, PATIENCE, no_leases, queued};
use crate::storage::mvcc::tests::model::Model;
use crate::storage::mvcc::{Committed, WriteTxn};
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, Event, EventType, KeyRange,
    PutRequest, RequestOp, Revision, TxnRequest,
};
use crate::watch::{
    CreateRequest, Message, STREAM_WATCH_ID, WatchHub, WatchId, WatchReceiver, WatchStream,
};

/// Keys written and watched: some share prefixes, so prefixes and intervals cover several.
const KEYS: [&str; 6] = ["a", "ab", "b", "ba", "c", "cd"];
const STREAMS: usize = 3;
const DEFAULT_CASES: u32 = 48;
/// Progress ticks often enough that many land between steps.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------------------------------
// Generated steps.

#[derive(Clone, Debug)]
enum GenRange {
    Single(usize),
    /// `[KEYS[first], KEYS[second])`, ordered when built.
    Interval(usize, usize),
    Prefix(&'static str),
    FromKey(usize),
    Everything,
}

impl GenRange {
    fn build(&self) -> KeyRange {
        match *self {
            GenRange::Single(key) => KeyRange::single(KEYS[key]),
            GenRange::Interval(first, second) => {
                let (low, high) = if KEYS[first] < KEYS[second] {
                    (KEYS[first], KEYS[second])
                } else {
                    (KEYS[second], KEYS[first])
                };
                if low == high {
                    KeyRange::single(low)
                } else {
                    KeyRange::new(low, high)
                }
            }
            GenRange::Prefix(prefix) => KeyRange::prefix(prefix),
            GenRange::FromKey(key) => KeyRange::new(KEYS[key], "\0"),
            GenRange::Everything => KeyRange::new("\0", "\0"),
        }
    }
}

/// One write of a txn branch: a put (`Some(value)`) or a delete of a single key.
type TxnWrite = (usize, Option<u8>);

#[derive(Clone, Debug)]
enum Change {
    Put(usize, u8),
    Delete(usize),
    DeleteRange(GenRange),
    /// If `KEYS[compare_key]` has version `version`, the success writes, else the failure
    /// writes; each branch touches distinct keys, as etcd's validation requires.
    Txn {
        compare_key: usize,
        version: i64,
        success: Vec<TxnWrite>,
        failure: Vec<TxnWrite>,
    },
    /// Compacts to this many revisions below the current one.
    Compact(i64),
}

#[derive(Clone, Copy, Debug)]
enum Start {
    /// `start_revision = 0`.
    Now,
    Back(i64),
    Current,
    Ahead(i64),
    First,
}

#[derive(Clone, Debug)]
struct GenWatch {
    range: GenRange,
    start: Start,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
}

#[derive(Clone, Debug)]
enum Step {
    /// One write batch: one commit, one publish.
    Commit(Vec<Change>),
    /// Puts in a row, one commit each: enough to fill a stream's buffer.
    Burst {
        key: usize,
        count: usize,
    },
    Create {
        stream: usize,
        watch: GenWatch,
    },
    /// Puts in one batch, committed, then a `prev_kv` watcher created, then the batch
    /// published: a create racing apply, so the batch ran before anyone wanted `prev_kv`.
    CreateDuring {
        puts: Vec<(usize, u8)>,
        stream: usize,
        watch: GenWatch,
    },
    /// Cancels the stream's `pick`-th watcher (modulo how many it had), or an unknown id.
    Cancel {
        stream: usize,
        pick: usize,
    },
    RequestProgress {
        stream: usize,
    },
    Pause {
        stream: usize,
    },
    Resume {
        stream: usize,
    },
    /// Gives the catch-up loop a moment.
    Settle,
}

fn key() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

fn gen_range() -> impl Strategy<Value = GenRange> {
    prop_oneof![
        3 => key().prop_map(GenRange::Single),
        2 => (key(), key()).prop_map(|(first, second)| GenRange::Interval(first, second)),
        2 => prop::sample::select(vec!["a", "b", "c"]).prop_map(GenRange::Prefix),
        1 => key().prop_map(GenRange::FromKey),
        1 => Just(GenRange::Everything),
    ]
}

fn txn_writes() -> impl Strategy<Value = Vec<TxnWrite>> {
    let keys: Vec<usize> = (0..KEYS.len()).collect();
    (
        prop::sample::subsequence(keys, 0..=3),
        prop::collection::vec(prop::option::weighted(0.7, any::<u8>()), 3),
    )
        .prop_map(|(keys, values)| keys.into_iter().zip(values).collect())
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => (key(), any::<u8>()).prop_map(|(key, value)| Change::Put(key, value)),
        2 => key().prop_map(Change::Delete),
        1 => gen_range().prop_map(Change::DeleteRange),
        3 => (key(), 0i64..3, txn_writes(), txn_writes()).prop_map(
            |(compare_key, version, success, failure)| Change::Txn {
                compare_key,
                version,
                success,
                failure,
            }
        ),
        1 => (0i64..4).prop_map(Change::Compact),
    ]
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        3 => Just(Start::Now),
        3 => (1i64..12).prop_map(Start::Back),
        1 => Just(Start::Current),
        2 => (1i64..4).prop_map(Start::Ahead),
        1 => Just(Start::First),
    ]
}

fn gen_watch() -> impl Strategy<Value = GenWatch> {
    (
        gen_range(),
        start(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(range, start, prev_kv, no_put, no_delete, progress_notify)| GenWatch {
                range,
                start,
                prev_kv,
                no_put,
                no_delete,
                progress_notify,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    let stream = || 0..STREAMS;
    prop_oneof![
        8 => prop::collection::vec(change(), 1..4).prop_map(Step::Commit),
        1 => (key(), 100usize..160).prop_map(|(key, count)| Step::Burst { key, count }),
        6 => (stream(), gen_watch()).prop_map(|(stream, watch)| Step::Create { stream, watch }),
        2 => (prop::collection::vec((key(), any::<u8>()), 1..4), stream(), gen_watch()).prop_map(
            |(puts, stream, watch)| Step::CreateDuring {
                puts,
                stream,
                watch: GenWatch {
                    prev_kv: true,
                    ..watch
                },
            }
        ),
        1 => (stream(), any::<usize>()).prop_map(|(stream, pick)| Step::Cancel { stream, pick }),
        1 => stream().prop_map(|stream| Step::RequestProgress { stream }),
        2 => stream().prop_map(|stream| Step::Pause { stream }),
        2 => stream().prop_map(|stream| Step::Resume { stream }),
        2 => Just(Step::Settle),
    ]
}

// ---------------------------------------------------------------------------------------
// Running the steps.

/// A created watcher, as the test knows it.
#[derive(Debug)]
struct Spec {
    request: CreateRequest,
    /// The first revision it must receive.
    start: Revision,
    /// The published revision when it was created.
    created_at: Revision,
    /// The compact revision when it was created: a start at or below it cannot be served.
    compacted_at_creation: Revision,
    cancel_requested: bool,
}

struct Client {
    stream: WatchStream,
    receiver: WatchReceiver,
    reading: bool,
    log: Vec<Message>,
    /// By watch id: auto ids count up from 0 and are never reused.
    specs: Vec<Spec>,
}

impl Client {
    fn drain(&mut self) {
        self.log.extend(queued(&mut self.receiver));
    }
}

/// What was written, according to the model.
struct Written {
    model: Model,
    /// Every committed event, in order.
    history: Vec<Event>,
    compacted: Revision,
    compactions: BTreeSet<Revision>,
}

struct Run {
    fixture: Fixture,
    written: Written,
    clients: Vec<Client>,
}

fn put_request(key: usize, value: u8) -> PutRequest {
    PutRequest::new(KEYS[key], value.to_string())
}

fn delete_request(range: KeyRange) -> DeleteRangeRequest {
    DeleteRangeRequest {
        range,
        prev_kv: false,
    }
}

fn txn_ops(writes: &[TxnWrite]) -> Vec<RequestOp> {
    writes
        .iter()
        .map(|(key, value)| match value {
            Some(value) => RequestOp::Put(put_request(*key, *value)),
            None => RequestOp::DeleteRange(delete_request(KeyRange::single(KEYS[*key]))),
        })
        .collect()
}

impl Written {
    fn apply(&mut self, batch: &mut WriteTxn<'_>, change: &Change, events: &mut Vec<Event>) {
        let model = &mut self.model;
        match change {
            Change::Put(key, value) => {
                let request = put_request(*key, *value);
                batch.put(&request, &no_leases).expect("put");
                model.put(&request, events).expect("model put");
            }
            Change::Delete(key) => {
                let request = delete_request(KeyRange::single(KEYS[*key]));
                batch.delete_range(&request).expect("delete");
                model.delete(&request, events);
            }
            Change::DeleteRange(range) => {
                let request = delete_request(range.build());
                batch.delete_range(&request).expect("delete range");
                model.delete(&request, events);
            }
            Change::Txn {
                compare_key,
                version,
                success,
                failure,
            } => {
                let request = TxnRequest {
                    compare: vec![Compare {
                        range: KeyRange::single(KEYS[*compare_key]),
                        result: CompareResult::Equal,
                        target: CompareTarget::Version(*version),
                    }],
                    success: txn_ops(success),
                    failure: txn_ops(failure),
                };
                batch.txn(&request, &no_leases).expect("txn");
                model.txn(&request, events).expect("model txn");
            }
            Change::Compact(back) => {
                let target = (model.current() - back).max(1);
                if target > self.compacted {
                    batch.compact(target).expect("compact");
                    model.compact(target).expect("model compact");
                    self.compacted = target;
                    self.compactions.insert(target);
                }
            }
        }
    }
}

impl Run {
    fn new() -> Run {
        let fixture = Fixture::new();
        let clients = (0..STREAMS)
            .map(|_| {
                let (stream, receiver) = fixture.hub.open_stream().expect("stream");
                Client {
                    stream,
                    receiver,
                    reading: true,
                    log: Vec::new(),
                    specs: Vec::new(),
                }
            })
            .collect();
        Run {
            fixture,
            written: Written {
                model: Model::new(),
                history: Vec::new(),
                compacted: 0,
                compactions: BTreeSet::new(),
            },
            clients,
        }
    }

    fn hub(&self) -> &Arc<WatchHub> {
        &self.fixture.hub
    }

    /// Runs `changes` in one batch on the store and on the model, commits and publishes.
    fn commit(&mut self, changes: &[Change]) {
        let committed = self.commit_unpublished(changes);
        self.fixture.hub.publish(&committed);
    }

    /// As [`Run::commit`], without the publish.
    fn commit_unpublished(&mut self, changes: &[Change]) -> Committed {
        // While no watcher wants `prev_kv` the hub tells the store not to load it for puts,
        // and no put here asks for it itself.
        let loads_previous = self.fixture.store.put_prev_kv();
        let mut events = Vec::new();
        let mut batch = self.fixture.store.write();
        for change in changes {
            self.written.apply(&mut batch, change, &mut events);
        }
        let committed = batch.commit().expect("commit");
        let written = &mut self.written;
        assert_eq!(
            committed.revision,
            written.model.current(),
            "committed revision"
        );
        let reported: Vec<Event> = events
            .iter()
            .map(|event| match event.kind {
                EventType::Put if !loads_previous => Event {
                    prev_kv: None,
                    ..event.clone()
                },
                _ => event.clone(),
            })
            .collect();
        assert_eq!(
            committed.events, reported,
            "the store and the model disagree"
        );
        written.history.extend(events);
        committed
    }

    async fn create(&mut self, stream: usize, watch: &GenWatch) {
        let current = self.written.model.current();
        self.create_at(stream, watch, current).await;
    }

    /// Creates a watcher while the hub has published up to `current`.
    async fn create_at(&mut self, stream: usize, watch: &GenWatch, current: Revision) {
        let start_revision = match watch.start {
            Start::Now => 0,
            Start::Back(back) => (current - back).max(1),
            Start::Current => current,
            Start::Ahead(ahead) => current + ahead,
            Start::First => 1,
        };
        let request = CreateRequest {
            range: watch.range.build(),
            start_revision,
            prev_kv: watch.prev_kv,
            no_put: watch.no_put,
            no_delete: watch.no_delete,
            progress_notify: watch.progress_notify,
            ..CreateRequest::default()
        };
        let client = &mut self.clients[stream];
        // A full buffer would make the create wait for a reader that is this very task.
        client.drain();
        client.stream.create(request.clone()).await.expect("create");
        client.specs.push(Spec {
            request,
            start: if start_revision == 0 {
                current + 1
            } else {
                start_revision
            },
            created_at: current,
            compacted_at_creation: self.written.compacted,
            cancel_requested: false,
        });
    }

    async fn cancel(&mut self, stream: usize, pick: usize) {
        let client = &mut self.clients[stream];
        client.drain();
        let count = client.specs.len();
        let watch_id = if count == 0 {
            // Unknown: there is no reply to check for, nor any to expect.
            1_000
        } else {
            let index = pick % count;
            client.specs[index].cancel_requested = true;
            WatchId::try_from(index).expect("watch id")
        };
        client.stream.cancel(watch_id).await.expect("cancel");
    }

    async fn request_progress(&mut self, stream: usize) {
        let client = &mut self.clients[stream];
        client.drain();
        client.stream.request_progress().await.expect("request");
    }

    async fn step(&mut self, step: &Step) {
        match step {
            Step::Commit(changes) => self.commit(changes),
            Step::Burst { key, count } => {
                for index in 0..*count {
                    // Values wrap; each put still makes a new revision.
                    let value = u8::try_from(index % 256).expect("wrapped");
                    self.commit(&[Change::Put(*key, value)]);
                }
            }
            Step::Create { stream, watch } => self.create(*stream, watch).await,
            Step::CreateDuring {
                puts,
                stream,
                watch,
            } => {
                let published = self.written.model.current();
                let changes: Vec<Change> = puts
                    .iter()
                    .map(|(key, value)| Change::Put(*key, *value))
                    .collect();
                let committed = self.commit_unpublished(&changes);
                self.create_at(*stream, watch, published).await;
                self.fixture.hub.publish(&committed);
            }
            Step::Cancel { stream, pick } => self.cancel(*stream, *pick).await,
            Step::RequestProgress { stream } => self.request_progress(*stream).await,
            Step::Pause { stream } => self.clients[*stream].reading = false,
            Step::Resume { stream } => self.clients[*stream].reading = true,
            Step::Settle => {
                self.fixture.nudge();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for client in &mut self.clients {
            if client.reading {
                client.drain();
            }
        }
    }

    /// Reads every stream until no watcher is behind, then asks each stream for progress,
    /// which must now be answered at once with the current revision.
    async fn finish(&mut self) {
        let converged = tokio::time::timeout(PATIENCE, async {
            loop {
                for client in &mut self.clients {
                    client.drain();
                }
                if self.hub().counts().unsynced == 0 {
                    return;
                }
                self.fixture.nudge();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(
            converged.is_ok(),
            "watchers still behind: {:?}",
            self.hub().counts()
        );
        let current = self.written.model.current();
        for client in &mut self.clients {
            client.drain();
            client.stream.request_progress().await.expect("request");
            client.drain();
            let last = client.log.iter().rev().find_map(|message| match message {
                Message::Progress {
                    watch_id: STREAM_WATCH_ID,
                    revision,
                } => Some(*revision),
                _ => None,
            });
            assert_eq!(last, Some(current), "final progress request");
        }
    }

    fn check(&self) {
        for (index, client) in self.clients.iter().enumerate() {
            let received = replay(&client.log, &client.specs);
            for (id, spec) in client.specs.iter().enumerate() {
                let watch_id = WatchId::try_from(id).expect("watch id");
                let got = received
                    .get(&watch_id)
                    .unwrap_or_else(|| panic!("stream {index}: no Created for watcher {id}"));
                let expected = expected_events(&self.written.history, spec);
                check_watcher(got, spec, &expected, &self.written.compactions)
                    .unwrap_or_else(|err| panic!("stream {index}, watcher {id} {spec:?}: {err}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checking.

/// What ended a watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Canceled,
    Compacted(Revision),
}

/// One watcher's share of its stream's messages.
#[derive(Debug, Default)]
struct Received {
    events: Vec<Event>,
    /// Every event from now on must be above this: the highest revision a message
    /// vouched for.
    floor: Revision,
    end: Option<End>,
}

/// The events `spec` must receive, as it must receive them.
fn expected_events(history: &[Event], spec: &Spec) -> Vec<Event> {
    let request = &spec.request;
    history
        .iter()
        .filter(|event| event.kv.mod_revision >= spec.start)
        .filter(|event| request.range.contains(&event.kv.key))
        .filter(|event| match event.kind {
            EventType::Put => !request.no_put,
            EventType::Delete => !request.no_delete,
        })
        .map(|event| Event {
            prev_kv: if request.prev_kv {
                event.prev_kv.clone()
            } else {
                None
            },
            ..event.clone()
        })
        .collect()
}

/// Splits a stream's messages by watcher, checking on the way what depends on their order:
/// `Created` first, nothing after the end, events above every revision vouched for before.
fn replay(log: &[Message], specs: &[Spec]) -> BTreeMap<WatchId, Received> {
    let mut watchers: BTreeMap<WatchId, Received> = BTreeMap::new();
    for message in log {
        match message {
            Message::Created { watch_id, revision } => {
                let spec = usize::try_from(*watch_id)
                    .ok()
                    .and_then(|id| specs.get(id))
                    .unwrap_or_else(|| panic!("Created for unknown watcher {watch_id}"));
                assert_eq!(*revision, spec.created_at, "Created revision of {watch_id}");
                let fresh = watchers.insert(*watch_id, Received::default()).is_none();
                assert!(fresh, "second Created for {watch_id}");
            }
            Message::Refused { reason, .. } => panic!("create refused: {reason}"),
            Message::Events {
                watch_id,
                revision,
                events,
                ..
            } => {
                let watcher = live_watcher(&mut watchers, *watch_id, message);
                assert!(!events.is_empty(), "empty events message for {watch_id}");
                let mut previous = watcher.floor;
                for event in events {
                    let at = event.kv.mod_revision;
                    assert!(
                        at > watcher.floor,
                        "watcher {watch_id}: event at {at} after revision {} was covered",
                        watcher.floor
                    );
                    assert!(at >= previous, "watcher {watch_id}: {at} after {previous}");
                    assert!(at <= *revision, "event at {at} in a message of {revision}");
                    previous = at;
                }
                watcher.floor = *revision;
                watcher.events.extend(events.iter().cloned());
            }
            Message::Canceled { watch_id, .. } => {
                let spec_asked = usize::try_from(*watch_id)
                    .ok()
                    .and_then(|id| specs.get(id))
                    .is_some_and(|spec| spec.cancel_requested);
                assert!(spec_asked, "Canceled {watch_id} without a cancel");
                live_watcher(&mut watchers, *watch_id, message).end = Some(End::Canceled);
            }
            Message::Compacted {
                watch_id,
                compact_revision,
            } => {
                live_watcher(&mut watchers, *watch_id, message).end =
                    Some(End::Compacted(*compact_revision));
            }
            Message::Progress {
                watch_id: STREAM_WATCH_ID,
                revision,
            } => {
                for (id, watcher) in &mut watchers {
                    if watcher.end.is_none() {
                        vouch(watcher, *id, *revision);
                    }
                }
            }
            Message::Progress { watch_id, revision } => {
                let asked = usize::try_from(*watch_id)
                    .ok()
                    .and_then(|id| specs.get(id))
                    .is_some_and(|spec| spec.request.progress_notify);
                assert!(
                    asked,
                    "progress notification to {watch_id}, which did not ask"
                );
                vouch(
                    live_watcher(&mut watchers, *watch_id, message),
                    *watch_id,
                    *revision,
                );
            }
        }
    }
    watchers
}

fn live_watcher<'w>(
    watchers: &'w mut BTreeMap<WatchId, Received>,
    watch_id: WatchId,
    message: &Message,
) -> &'w mut Received {
    let watcher = watchers
        .get_mut(&watch_id)
        .unwrap_or_else(|| panic!("{message:?} before Created"));
    assert_eq!(watcher.end, None, "{message:?} after the watcher ended");
    watcher
}

/// A progress message at `revision`: it may not trail an event already delivered.
fn vouch(watcher: &mut Received, watch_id: WatchId, revision: Revision) {
    if let Some(last) = watcher.events.last() {
        assert!(
            revision >= last.kv.mod_revision,
            "watcher {watch_id}: progress at {revision} after an event at {}",
            last.kv.mod_revision
        );
    }
    watcher.floor = watcher.floor.max(revision);
}

fn check_watcher(
    got: &Received,
    spec: &Spec,
    expected: &[Event],
    compactions: &BTreeSet<Revision>,
) -> Result<(), String> {
    let revisions = |events: &[Event]| -> Vec<Revision> {
        events.iter().map(|event| event.kv.mod_revision).collect()
    };
    match got.end {
        None => {
            if spec.cancel_requested {
                return Err("cancelled without a Canceled reply".into());
            }
            // The compact revision itself stays readable; only a start below it is refused.
            if spec.start < spec.compacted_at_creation {
                return Err("started at a compacted revision but was not told".into());
            }
            if !same_events(&got.events, expected, compactions) {
                return Err(format!(
                    "received revisions {:?}, expected {:?}\nreceived {:#?}\nexpected {:#?}",
                    revisions(&got.events),
                    revisions(expected),
                    got.events,
                    expected
                ));
            }
            Ok(())
        }
        Some(End::Canceled) => check_prefix(&got.events, expected, compactions),
        Some(End::Compacted(compact_revision)) => {
            if !compactions.contains(&compact_revision) {
                return Err(format!("Compacted at {compact_revision}, never compacted"));
            }
            if compact_revision <= spec.start {
                return Err(format!(
                    "Compacted at {compact_revision}, at or below its start {}",
                    spec.start
                ));
            }
            if let Some(last) = got.events.last()
                && last.kv.mod_revision >= compact_revision
            {
                return Err(format!(
                    "Compacted at {compact_revision} after an event at {}",
                    last.kv.mod_revision
                ));
            }
            check_prefix(&got.events, expected, compactions)
        }
    }
}

/// Equal event lists, except that a put at a revision that was later compacted to exactly
/// may lack its `prev_kv` when it was read back from history: the version it replaced
/// was compacted away ("may be missing after compaction").
fn same_events(got: &[Event], expected: &[Event], compactions: &BTreeSet<Revision>) -> bool {
    got.len() == expected.len()
        && got.iter().zip(expected).all(|(got, expected)| {
            got == expected
                || (got.prev_kv.is_none()
                    && got.kind == EventType::Put
                    && compactions.contains(&got.kv.mod_revision)
                    && got.kind == expected.kind
                    && got.kv == expected.kv)
        })
}

/// An ended watcher received the expected events up to some revision, all of them.
fn check_prefix(
    got: &[Event],
    expected: &[Event],
    compactions: &BTreeSet<Revision>,
) -> Result<(), String> {
    if got.len() > expected.len() || !same_events(got, &expected[..got.len()], compactions) {
        return Err(format!(
            "received {got:#?}, not a prefix of the expected {expected:#?}"
        ));
    }
    if let (Some(last), Some(next)) = (got.last(), expected.get(got.len()))
        && last.kv.mod_revision == next.kv.mod_revision
    {
        return Err(format!(
            "revision {} was split: it ended after {} of its events",
            next.kv.mod_revision,
            got.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The test.

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    }
}

fn run(steps: &[Step]) {
    // Two workers: publish (this task) and the catch-up loop really run at the same time.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut run = Run::new();
        let tasks = run.hub().spawn(PROGRESS_INTERVAL);
        for step in steps {
            run.step(step).await;
        }
        for client in &mut run.clients {
            client.reading = true;
        }
        run.finish().await;
        for task in tasks {
            task.abort();
        }
        run.check();
    });
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_watcher_gets_exactly_its_events(steps in prop::collection::vec(step(), 1..40)) {
        run(&steps);
    }
}
