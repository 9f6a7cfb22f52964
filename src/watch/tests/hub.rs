//! One hub behaviour per test, through `WatchHub`, `WatchStream` and `WatchReceiver`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::{Fixture, PATIENCE, event_revisions, open_store, put, queued, receive_until, watch};
use crate::limits::{WATCH_STREAM_BUFFER_BATCHES, WATCH_SYNC_REVISIONS_MAX};
use crate::storage::mvcc::Committed;
use crate::types::{Event, EventType, KeyRange, KeyValue, Revision};
use crate::watch::{CreateRequest, Message, STREAM_WATCH_ID, WatchId};

/// A progress interval no test outlives: only the catch-up loop matters.
const NO_TICKS: Duration = Duration::from_secs(3600);

fn is_created(message: &Message, id: WatchId) -> bool {
    matches!(message, Message::Created { watch_id, .. } if *watch_id == id)
}

fn stream_progress(messages: &[Message]) -> Vec<Revision> {
    messages
        .iter()
        .filter_map(|message| match message {
            Message::Progress {
                watch_id: STREAM_WATCH_ID,
                revision,
            } => Some(*revision),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn created_comes_before_events_and_auto_ids_count_up() {
    let fixture = Fixture::new();
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    for _ in 0..2 {
        stream
            .create(watch(KeyRange::single("a"), 0))
            .await
            .expect("create");
    }
    let revision = fixture.put("a", "1");
    let got = queued(&mut receiver);
    assert!(is_created(&got[0], 0), "{got:?}");
    assert!(is_created(&got[1], 1), "{got:?}");
    let ids: Vec<WatchId> = got[2..]
        .iter()
        .map(|message| match message {
            Message::Events {
                watch_id, events, ..
            } => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].kv.mod_revision, revision);
                *watch_id
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![0, 1]);
}

#[tokio::test]
async fn a_past_start_replays_history_then_continues_live() {
    let fixture = Fixture::new();
    let first = fixture.put("a", "1");
    fixture.put("b", "1");
    let last = fixture.put("a", "2");
    let _tasks = fixture.hub.spawn(NO_TICKS);
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), first))
        .await
        .expect("create");

    let replayed = receive_until(&fixture, &mut receiver, |got| {
        event_revisions(got, 0).last() == Some(&last)
    })
    .await;
    assert_eq!(
        replayed[0],
        Message::Created {
            watch_id: 0,
            revision: last
        }
    );
    assert_eq!(event_revisions(&replayed, 0), vec![first, last]);
    assert_eq!(fixture.hub.counts().unsynced, 0, "caught up, so synced");

    // From now on publish itself delivers, before it returns.
    let live = fixture.put("a", "3");
    fixture.put("b", "2");
    assert_eq!(event_revisions(&queued(&mut receiver), 0), vec![live]);
}

/// A client that stops reading fills its stream's buffer: its watchers are set aside
/// instead of blocking publish, a watcher on another stream still gets every event as soon
/// as it is published, and once the slow client reads again it gets everything it missed,
/// once each and in order.
#[tokio::test]
async fn a_full_buffer_sets_watchers_aside_while_other_streams_keep_receiving() {
    let fixture = Fixture::new();
    let _tasks = fixture.hub.spawn(NO_TICKS);
    let (slow, mut slow_receiver) = fixture.hub.open_stream().expect("stream");
    let (fast, mut fast_receiver) = fixture.hub.open_stream().expect("stream");
    for stream in [&slow, &fast] {
        stream
            .create(watch(KeyRange::prefix("k"), 0))
            .await
            .expect("create");
    }
    assert!(is_created(&queued(&mut fast_receiver)[0], 0));

    // The slow stream's `Created` holds one place; each publish takes one more.
    let mut revisions = Vec::new();
    for index in 0..WATCH_STREAM_BUFFER_BATCHES + 40 {
        let revision = fixture.put(&format!("k{}", index % 3), &index.to_string());
        revisions.push(revision);
        assert_eq!(
            event_revisions(&queued(&mut fast_receiver), 0),
            vec![revision],
            "the fast stream has each event as soon as it is published"
        );
        let full = index + 1 >= WATCH_STREAM_BUFFER_BATCHES;
        assert_eq!(
            fixture.hub.counts().unsynced,
            usize::from(full),
            "after {} publishes",
            index + 1
        );
    }

    let slow_got = receive_until(&fixture, &mut slow_receiver, |got| {
        event_revisions(got, 0).last() == revisions.last()
    })
    .await;
    assert!(is_created(&slow_got[0], 0));
    assert_eq!(event_revisions(&slow_got, 0), revisions);
    assert_eq!(fixture.hub.counts().unsynced, 0);

    let live = fixture.put("k0", "live");
    assert_eq!(event_revisions(&queued(&mut slow_receiver), 0), vec![live]);
    assert_eq!(event_revisions(&queued(&mut fast_receiver), 0), vec![live]);
}

#[tokio::test]
async fn a_watcher_starting_at_a_compacted_revision_is_told_and_removed() {
    let fixture = Fixture::new();
    let first = fixture.put("a", "1");
    fixture.put("a", "2");
    let compacted = fixture.put("a", "3");
    fixture.compact(compacted);
    let _tasks = fixture.hub.spawn(NO_TICKS);
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), first))
        .await
        .expect("create");

    let got = receive_until(&fixture, &mut receiver, |got| got.len() == 2).await;
    assert!(is_created(&got[0], 0));
    assert_eq!(
        got[1],
        Message::Compacted {
            watch_id: 0,
            compact_revision: compacted
        }
    );
    assert_eq!(fixture.hub.counts().watchers, 0);
    fixture.put("a", "4");
    assert_eq!(queued(&mut receiver), Vec::new());
}

/// A watcher set aside by a full buffer, whose catch-up position is then compacted, gets
/// everything before that position and then `Compacted`.
#[tokio::test]
async fn a_set_aside_watcher_whose_position_is_compacted_is_told_and_removed() {
    let fixture = Fixture::new();
    let _tasks = fixture.hub.spawn(NO_TICKS);
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), 0))
        .await
        .expect("create");
    let mut revisions = Vec::new();
    while fixture.hub.counts().unsynced == 0 {
        revisions.push(fixture.put("a", "x"));
    }
    let compacted = fixture.put("a", "y");
    fixture.compact(compacted);

    let got = receive_until(&fixture, &mut receiver, |got| {
        got.iter()
            .any(|message| matches!(message, Message::Compacted { .. }))
    })
    .await;
    // Everything the buffer took, and nothing after it: the last revision it took was the
    // one before the watcher was set aside.
    revisions.pop();
    assert_eq!(event_revisions(&got, 0), revisions);
    assert_eq!(
        got.last(),
        Some(&Message::Compacted {
            watch_id: 0,
            compact_revision: compacted
        })
    );
    assert_eq!(fixture.hub.counts().watchers, 0);
    fixture.put("a", "z");
    assert_eq!(queued(&mut receiver), Vec::new());
}

#[tokio::test]
async fn a_progress_request_is_answered_at_once_when_every_watcher_is_synced() {
    let fixture = Fixture::new();
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), 0))
        .await
        .expect("create");
    fixture.put("a", "1");
    let current = fixture.put("b", "1");
    stream.request_progress().await.expect("request");
    let got = queued(&mut receiver);
    assert_eq!(
        got.last(),
        Some(&Message::Progress {
            watch_id: STREAM_WATCH_ID,
            revision: current
        })
    );
}

/// With a watcher behind, the answer waits until it has caught up, and vouches only for
/// revisions whose events were all sent before it.
#[tokio::test]
async fn a_progress_request_waits_for_catch_up() {
    let fixture = Fixture::new();
    // More revisions than one catch-up round reads, so catching up takes several rounds.
    let mut revisions = Vec::new();
    for index in 0..WATCH_SYNC_REVISIONS_MAX + 50 {
        revisions.push(fixture.put("a", &index.to_string()));
    }
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), revisions[0]))
        .await
        .expect("create");
    stream
        .create(watch(KeyRange::single("b"), 0))
        .await
        .expect("create");
    stream.request_progress().await.expect("request");
    let before = queued(&mut receiver);
    assert_eq!(before.len(), 2, "only the two replies: {before:?}");

    let _tasks = fixture.hub.spawn(NO_TICKS);
    let got = receive_until(&fixture, &mut receiver, |got| {
        !stream_progress(got).is_empty()
    })
    .await;
    assert_eq!(event_revisions(&got, 0), revisions);
    assert_eq!(
        got.last(),
        Some(&Message::Progress {
            watch_id: STREAM_WATCH_ID,
            revision: *revisions.last().expect("revisions")
        })
    );
    let batches = got
        .iter()
        .filter(|message| matches!(message, Message::Events { .. }))
        .count();
    assert!(batches > 1, "caught up in {batches} messages");
}

/// The answer to a progress request that waited for catch-up is not lost when the message
/// that completed the catch-up took the buffer's last place.
#[tokio::test]
async fn a_waiting_progress_request_is_answered_after_a_full_buffer_drains() {
    let fixture = Fixture::new();
    let first = fixture.put("a", "1");
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), first))
        .await
        .expect("create");
    stream
        .create(watch(KeyRange::single("b"), 0))
        .await
        .expect("create");
    stream.request_progress().await.expect("request");
    // Two `Created` replies and these events leave exactly one free place in the buffer,
    // which the catch-up of watcher 0 takes.
    for _ in 0..WATCH_STREAM_BUFFER_BATCHES - 3 {
        fixture.put("b", "x");
    }
    let current = fixture.hub.counts().published;

    let _tasks = fixture.hub.spawn(NO_TICKS);
    // Let the catch-up finish before reading anything, so its message takes the last place.
    let caught_up = tokio::time::timeout(PATIENCE, async {
        while fixture.hub.counts().unsynced > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(caught_up.is_ok(), "watcher 0 did not catch up");
    let got = receive_until(&fixture, &mut receiver, |got| {
        !stream_progress(got).is_empty()
    })
    .await;
    assert_eq!(event_revisions(&got, 0), vec![first]);
    assert_eq!(stream_progress(&got), vec![current]);
}

/// A tick sends a notification to each synced watcher that asked for them and was sent
/// nothing since the previous tick; never to one that did not ask, nor to one behind.
#[tokio::test]
async fn progress_ticks_reach_only_synced_idle_watchers_that_asked() {
    let fixture = Fixture::new();
    let early = fixture.put("d", "1");
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    let (behind, mut behind_receiver) = fixture.hub.open_stream().expect("stream");
    let notify = |key: &str| CreateRequest {
        progress_notify: true,
        ..watch(KeyRange::single(key.to_owned()), 0)
    };
    for request in [notify("a"), notify("b"), watch(KeyRange::single("c"), 0)] {
        stream.create(request).await.expect("create");
    }
    // No catch-up loop runs, so this one stays behind.
    behind
        .create(CreateRequest {
            start_revision: early,
            ..notify("d")
        })
        .await
        .expect("create");
    queued(&mut receiver);
    queued(&mut behind_receiver);
    let tick = || fixture.hub.state.lock().progress_tick();
    let progress = |messages: Vec<Message>| -> Vec<(WatchId, Revision)> {
        messages
            .into_iter()
            .map(|message| match message {
                Message::Progress { watch_id, revision } => (watch_id, revision),
                other => panic!("only progress expected, got {other:?}"),
            })
            .collect()
    };

    let both_at = |revision| vec![(0, revision), (1, revision)];
    let sorted = |mut got: Vec<(WatchId, Revision)>| {
        got.sort_unstable();
        got
    };
    let current = fixture.hub.counts().published;
    tick();
    assert_eq!(sorted(progress(queued(&mut receiver))), both_at(current));
    // Watcher 1 is sent an event: the next tick skips it, the one after does not.
    let busy = fixture.put("b", "1");
    assert_eq!(event_revisions(&queued(&mut receiver), 1), vec![busy]);
    tick();
    assert_eq!(progress(queued(&mut receiver)), vec![(0, busy)]);
    tick();
    assert_eq!(sorted(progress(queued(&mut receiver))), both_at(busy));
    assert_eq!(queued(&mut behind_receiver), Vec::new());
}

#[tokio::test]
async fn the_spawned_notifier_ticks() {
    let fixture = Fixture::new();
    let current = fixture.put("a", "1");
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(CreateRequest {
            progress_notify: true,
            ..watch(KeyRange::single("a"), 0)
        })
        .await
        .expect("create");
    stream
        .create(watch(KeyRange::single("a"), 0))
        .await
        .expect("create");
    let _tasks = fixture.hub.spawn(Duration::from_millis(5));
    let got = receive_until(&fixture, &mut receiver, |got| {
        got.iter()
            .filter(|message| matches!(message, Message::Progress { .. }))
            .count()
            >= 2
    })
    .await;
    for message in &got[2..] {
        assert_eq!(
            *message,
            Message::Progress {
                watch_id: 0,
                revision: current
            }
        );
    }
}

/// After the store's state is replaced (a snapshot install), watchers catch up from the new
/// state's history, from just after what they had already been given.
#[tokio::test]
async fn restore_after_a_replaced_store_makes_watchers_catch_up() {
    let fixture = Fixture::new();
    let published = fixture.put("a", "1");
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::prefix(""), 0))
        .await
        .expect("create");
    queued(&mut receiver);

    // The same first revision, then more.
    let replacement_dir = tempfile::tempdir().expect("temp dir");
    let replacement = open_store(&replacement_dir);
    let mut expected = Vec::new();
    for (key, value) in [("a", "1"), ("a", "2"), ("b", "1")] {
        let mut txn = replacement.write();
        put(&mut txn, key, value);
        let committed = txn.commit().expect("commit");
        if committed.revision > published {
            expected.push(committed.revision);
        }
    }
    fixture
        .store
        .replace(replacement, || Ok::<(), std::convert::Infallible>(()))
        .expect("replace");
    fixture.hub.restore();
    assert_eq!(fixture.hub.counts().unsynced, 1);

    let _tasks = fixture.hub.spawn(NO_TICKS);
    let got = receive_until(&fixture, &mut receiver, |got| {
        event_revisions(got, 0).last() == expected.last()
    })
    .await;
    assert_eq!(event_revisions(&got, 0), expected);
    let live = fixture.put("c", "1");
    assert_eq!(event_revisions(&queued(&mut receiver), 0), vec![live]);
}

/// The simplest restore: revisions that reached the store without being published.
#[tokio::test]
async fn restore_delivers_revisions_the_hub_was_never_given() {
    let fixture = Fixture::new();
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), 0))
        .await
        .expect("create");
    let unseen: Vec<Revision> = (0..3)
        .map(|_| {
            fixture
                .commit_unpublished(|txn| put(txn, "a", "x"))
                .revision
        })
        .collect();
    fixture.hub.restore();
    let _tasks = fixture.hub.spawn(NO_TICKS);
    let got = receive_until(&fixture, &mut receiver, |got| {
        event_revisions(got, 0).last() == unseen.last()
    })
    .await;
    assert_eq!(event_revisions(&got, 0), unseen);
}

#[tokio::test]
async fn cancel_of_an_unknown_id_sends_nothing_and_cancel_stops_events() {
    let fixture = Fixture::new();
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), 0))
        .await
        .expect("create");
    stream.cancel(7).await.expect("cancel");
    let got = queued(&mut receiver);
    assert_eq!(got.len(), 1, "only the create reply: {got:?}");

    let current = fixture.put("a", "1");
    stream.cancel(0).await.expect("cancel");
    let got = queued(&mut receiver);
    assert_eq!(event_revisions(&got, 0), vec![current]);
    assert_eq!(
        got.last(),
        Some(&Message::Canceled {
            watch_id: 0,
            revision: current
        })
    );
    stream.cancel(0).await.expect("cancel");
    fixture.put("a", "2");
    assert_eq!(queued(&mut receiver), Vec::new());
    assert_eq!(fixture.hub.counts().watchers, 0);
}

/// Apply publishes from its own thread while a client creates watchers: each watcher's
/// `Created` must still come before its first event. The publishes here carry made-up
/// events at made-up revisions (nothing is committed), so they come as fast as the hub
/// takes them and often land between a create's registration and its reply.
#[tokio::test]
async fn created_comes_first_while_apply_publishes_concurrently() {
    const WATCHERS: usize = 3000;
    let fixture = Arc::new(Fixture::new());
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let hub = Arc::clone(&fixture.hub);
        let stop = Arc::clone(&stop);
        let first = fixture.store.current_revision() + 1;
        std::thread::spawn(move || {
            for revision in first.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let kv = KeyValue {
                    key: Bytes::from_static(b"k"),
                    create_revision: first,
                    mod_revision: revision,
                    version: revision - first + 1,
                    ..KeyValue::default()
                };
                hub.publish(&Committed {
                    revision,
                    events: vec![Event {
                        kind: EventType::Put,
                        kv,
                        prev_kv: None,
                    }],
                });
            }
        })
    };
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    let mut got = Vec::new();
    for _ in 0..WATCHERS {
        stream
            .create(watch(KeyRange::single("k"), 0))
            .await
            .expect("create");
        got.extend(queued(&mut receiver));
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    got.extend(queued(&mut receiver));

    let mut created = HashSet::new();
    for message in &got {
        match message {
            Message::Created { watch_id, .. } => {
                created.insert(*watch_id);
            }
            Message::Events { watch_id, .. } => {
                assert!(
                    created.contains(watch_id),
                    "an event of {watch_id} before its Created"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created.len(), WATCHERS);
}

/// Puts load the version they replace only while a watcher wants `prev_kv`. A batch applied
/// before such a watcher was created, but published after, reaches it with every `prev_kv`
/// read back from history; a watcher without `prev_kv` gets the same batch live.
#[tokio::test]
async fn prev_kv_is_loaded_only_while_wanted_and_read_back_for_a_batch_applied_before() {
    let fixture = Fixture::new();
    fixture.put("a", "1");
    assert!(!fixture.store.put_prev_kv(), "no watcher: nothing to load");
    let plain = fixture.commit(|txn| put(txn, "a", "2"));
    assert_eq!(plain.events[0].kv.version, 2);
    assert_eq!(plain.events[0].prev_kv, None, "not loaded: nobody wants it");

    let _tasks = fixture.hub.spawn(NO_TICKS);
    let (stream, mut receiver) = fixture.hub.open_stream().expect("stream");
    stream
        .create(watch(KeyRange::single("a"), 0))
        .await
        .expect("create plain watcher");
    let racing = fixture.commit_unpublished(|txn| put(txn, "a", "3"));
    assert_eq!(
        racing.events[0].prev_kv, None,
        "applied before anyone asked"
    );
    stream
        .create(CreateRequest {
            prev_kv: true,
            ..watch(KeyRange::single("a"), 0)
        })
        .await
        .expect("create prev_kv watcher");
    assert!(
        fixture.store.put_prev_kv(),
        "on as soon as a watcher wants it"
    );
    fixture.hub.publish(&racing);
    let after = fixture.put("a", "4");

    let got = receive_until(&fixture, &mut receiver, |got| {
        event_revisions(got, 1).last() == Some(&after)
    })
    .await;
    assert_eq!(event_revisions(&got, 0), vec![racing.revision, after]);
    assert_eq!(event_revisions(&got, 1), vec![racing.revision, after]);
    let previous_values: Vec<Option<Bytes>> = got
        .iter()
        .filter_map(|message| match message {
            Message::Events {
                watch_id: 1,
                events,
                ..
            } => Some(events),
            _ => None,
        })
        .flatten()
        .map(|event| event.prev_kv.as_ref().map(|kv| kv.value.clone()))
        .collect();
    assert_eq!(
        previous_values,
        vec![Some(Bytes::from("2")), Some(Bytes::from("3"))]
    );

    // The last prev_kv watcher gone, the next publish turns loading off again.
    stream.cancel(1).await.expect("cancel");
    fixture.put("a", "5");
    assert!(!fixture.store.put_prev_kv());
}
