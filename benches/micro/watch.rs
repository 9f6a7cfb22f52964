//! Watch fan-out (`watch::WatchHub`): apply publishes one committed batch of events to N
//! synced watchers of a key range (one stream each, as N clients would have), measured as
//! the publish alone (matching, shaping and queuing into every stream's buffer, under the
//! hub's lock that apply holds) and as publish plus delivery (every stream's receiver takes
//! its messages, as the gRPC send loops do).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use mnemo::storage::mvcc::Committed;
use mnemo::types::{Event, EventType, KeyRange, KeyValue, Revision};
use mnemo::watch::{CreateRequest, Message, WatchHub, WatchReceiver, WatchStream};

use super::mvcc::open_store;
use super::{VALUE_BYTES, budget};

/// Watchers fed by one publish.
const WATCHERS: [usize; 3] = [1, 100, 1000];
/// Events in one published batch, one revision each, as apply commits a group of puts.
const EVENTS_PER_BATCH: usize = 10;
/// The range every watcher watches; every event falls in it.
const WATCHED_PREFIX: &str = "watched/";

/// A hub with `watchers` synced watchers, and the revision its next batch starts at.
struct FanOut {
    hub: Arc<WatchHub>,
    /// Kept open: dropping a stream removes its watchers.
    _streams: Vec<WatchStream>,
    receivers: Vec<WatchReceiver>,
    next_revision: Revision,
    _dir: tempfile::TempDir,
}

impl FanOut {
    fn new(watchers: usize) -> FanOut {
        let (dir, store) = open_store();
        let hub = WatchHub::new(Arc::new(store));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut streams = Vec::with_capacity(watchers);
        let mut receivers = Vec::with_capacity(watchers);
        for _ in 0..watchers {
            let (stream, mut receiver) = hub.open_stream().expect("stream");
            runtime
                .block_on(stream.create(CreateRequest {
                    range: KeyRange::prefix(WATCHED_PREFIX),
                    ..CreateRequest::default()
                }))
                .expect("create");
            let created = receiver.try_recv().expect("reply").take();
            assert!(matches!(created[..], [Message::Created { .. }]));
            streams.push(stream);
            receivers.push(receiver);
        }
        let counts = hub.counts();
        assert_eq!((counts.watchers, counts.unsynced), (watchers, 0));
        FanOut {
            next_revision: counts.published + 1,
            hub,
            _streams: streams,
            receivers,
            _dir: dir,
        }
    }

    /// The next committed batch: one put per revision, keys inside the watched range.
    fn next_batch(&mut self, value: &Bytes) -> Committed {
        let events: Vec<Event> = (0..EVENTS_PER_BATCH)
            .map(|offset| {
                let revision = self.next_revision + offset as Revision;
                Event {
                    kind: EventType::Put,
                    kv: KeyValue {
                        key: Bytes::from(format!("{WATCHED_PREFIX}{offset:04}")),
                        create_revision: revision,
                        mod_revision: revision,
                        version: 1,
                        value: value.clone(),
                        lease: 0,
                    },
                    prev_kv: None,
                }
            })
            .collect();
        self.next_revision += EVENTS_PER_BATCH as Revision;
        Committed {
            revision: self.next_revision - 1,
            events,
        }
    }

    /// Takes what every receiver holds; returns the number of events.
    fn deliver(&mut self) -> usize {
        let mut events = 0;
        for receiver in &mut self.receivers {
            while let Some(batch) = receiver.try_recv() {
                for message in batch.take() {
                    if let Message::Events { events: got, .. } = message {
                        events += got.len();
                    }
                }
            }
        }
        events
    }
}

pub fn benches(criterion: &mut Criterion) {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let mut group = criterion.benchmark_group("watch");
    budget(&mut group, 20, Duration::from_secs(2));
    for watchers in WATCHERS {
        let mut fan_out = FanOut::new(watchers);
        let expected = watchers * EVENTS_PER_BATCH;
        // Events handed to watchers per iteration.
        group.throughput(Throughput::Elements(expected as u64));
        let shape = format!("watchers={watchers}/events={EVENTS_PER_BATCH}");
        group.bench_function(format!("publish/{shape}"), |bench| {
            bench.iter_custom(|iterations| {
                let mut publishing = Duration::ZERO;
                for _ in 0..iterations {
                    let batch = fan_out.next_batch(&value);
                    let started = Instant::now();
                    fan_out.hub.publish(&batch);
                    publishing += started.elapsed();
                    // Emptied outside the timing, so buffers never fill up.
                    assert_eq!(fan_out.deliver(), expected, "every watcher got every event");
                }
                publishing
            });
        });
        group.bench_function(format!("publish_and_deliver/{shape}"), |bench| {
            bench.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let batch = fan_out.next_batch(&value);
                    let started = Instant::now();
                    fan_out.hub.publish(&batch);
                    let delivered = fan_out.deliver();
                    elapsed += started.elapsed();
                    assert_eq!(delivered, expected, "every watcher got every event");
                }
                elapsed
            });
        });
        assert_eq!(fan_out.hub.counts().unsynced, 0, "no watcher fell behind");
    }
    group.finish();
}
