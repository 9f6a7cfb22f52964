//! The watch workload: W watch streams on the run's prefix, created before the first put and
//! from the revision after the current one, then `--clients` writers putting at `--rate` puts
//! per second in all. Each value starts with its send time, so every watcher measures the
//! delay from send to delivery of every event; when the writers are done, each watcher waits
//! (up to the drain timeout) for the last acknowledged revision, and its revisions are checked
//! against the acknowledged ones: each exactly once, in order (etcd's watch guarantees:
//! ordered, unique, and no event missed since the start revision).
//!
//! Ops are acknowledged puts; the JSON line's latency fields are event latencies, the puts'
//! own are `put_p50_us`, ... Memory: each watcher keeps the revisions it saw (8 bytes each).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::watch_client::WatchClient;
use mnemo::pb::etcdserverpb::watch_request::RequestUnion;
use mnemo::pb::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::options::{SEND_TIME_BYTES, Settings};
use crate::report::{self, Summary, Tally, histogram, record};
use crate::{BenchError, CallError, Client, RESPONSE_BYTES_MAX, call, drive};

/// Requests a watch stream queues: the create, then nothing (closing ends the stream).
const WATCH_REQUEST_QUEUE: usize = 1;

/// What the watchers are told about the writers.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Puts are still being sent: keep reading.
    Writing,
    /// The writers are done: read until `last` was seen or `deadline` passes.
    Draining { last: i64, deadline: Instant },
}

/// What one watcher saw.
struct Seen {
    /// mod_revision of every event, in delivery order.
    revisions: Vec<i64>,
    /// Send-to-delivery delay of every event that carried a send time.
    latency: Histogram<u64>,
    /// Why the watcher stopped early, if it did.
    failure: Option<String>,
}

/// The completeness of one watcher's revisions against the acknowledged ones.
#[derive(Debug, Default, PartialEq, Eq)]
struct Completeness {
    /// Acknowledged revisions the watcher never saw.
    missing: u64,
    /// Revisions it saw more than once (each extra sighting counts).
    duplicates: u64,
    /// Deliveries that came after a higher revision.
    out_of_order: u64,
    /// Revisions it saw that no writer had acknowledged (a put that timed out but was
    /// applied, or another client writing under the prefix); not an error.
    unexpected: u64,
}

/// Checks `seen` (delivery order) against `acked` (sorted, without duplicates).
fn check(seen: &[i64], acked: &[i64]) -> Completeness {
    let out_of_order = seen.windows(2).filter(|pair| pair[1] < pair[0]).count() as u64;
    let mut sorted = seen.to_vec();
    sorted.sort_unstable();
    let before = sorted.len();
    sorted.dedup();
    let duplicates = (before - sorted.len()) as u64;
    let (mut missing, mut unexpected) = (0, 0);
    let (mut mine, mut theirs) = (sorted.iter().peekable(), acked.iter().peekable());
    loop {
        match (mine.peek(), theirs.peek()) {
            (Some(got), Some(want)) if got == want => {
                mine.next();
                theirs.next();
            }
            (Some(got), Some(want)) if got < want => {
                unexpected += 1;
                mine.next();
            }
            (_, Some(_)) => {
                missing += 1;
                theirs.next();
            }
            (Some(_), None) => {
                unexpected += 1;
                mine.next();
            }
            (None, None) => break,
        }
    }
    Completeness {
        missing,
        duplicates,
        out_of_order,
        unexpected,
    }
}

/// Nanoseconds since the run's epoch: the clock writers stamp and watchers read (one
/// process, so one monotonic clock).
fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Opens a watch stream from `start_revision` on the prefix and waits for its `created`.
async fn open(
    channel: Channel,
    settings: &Settings,
    start_revision: i64,
) -> Result<
    (
        mpsc::Sender<WatchRequest>,
        tonic::Streaming<mnemo::pb::etcdserverpb::WatchResponse>,
    ),
    CallError,
> {
    let (requests, queue) = mpsc::channel(WATCH_REQUEST_QUEUE);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: settings.keys.prefix(),
            range_end: settings.keys.prefix_end(),
            start_revision,
            ..Default::default()
        })),
    };
    // Queued before the call: etcd answers a stream's headers only with its first message.
    requests
        .send(create)
        .await
        .map_err(|_| CallError::Unexpected("the watch request queue closed".into()))?;
    let mut client = WatchClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX);
    let mut responses = call(
        settings.request_timeout,
        client.watch(ReceiverStream::new(queue)),
    )
    .await?;
    match tokio::time::timeout(settings.request_timeout, responses.message()).await {
        Ok(Ok(Some(created))) if created.created && !created.canceled => Ok((requests, responses)),
        Ok(Ok(Some(other))) => Err(CallError::Unexpected(format!(
            "watch create answered created={} canceled={} reason {:?}",
            other.created, other.canceled, other.cancel_reason
        ))),
        Ok(Ok(None)) => Err(CallError::Unexpected(
            "the watch stream ended before created".into(),
        )),
        Ok(Err(status)) => Err(CallError::Status(status)),
        Err(_) => Err(CallError::Timeout),
    }
}

/// One watcher: reads events until the writers are done and the last acknowledged revision
/// came, the drain deadline passed, or the stream failed.
async fn watcher(
    channel: Channel,
    settings: Arc<Settings>,
    start_revision: i64,
    epoch: Instant,
    ready: mpsc::Sender<Result<(), String>>,
    mut phase: watch::Receiver<Phase>,
) -> Seen {
    let mut seen = Seen {
        revisions: Vec::new(),
        latency: histogram(),
        failure: None,
    };
    let (requests, mut responses) = match open(channel, &settings, start_revision).await {
        Ok(stream) => stream,
        Err(error) => {
            let _ = ready.send(Err(error.to_string())).await;
            seen.failure = Some(error.to_string());
            return seen;
        }
    };
    let _ = ready.send(Ok(())).await;
    drop(ready);
    let mut highest = 0;
    loop {
        let current = *phase.borrow_and_update();
        let deadline = match current {
            Phase::Draining { last, .. } if highest >= last => break,
            Phase::Draining { deadline, .. } => Some(deadline),
            Phase::Writing => None,
        };
        let drained = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = responses.message() => match message {
                Ok(Some(response)) => {
                    if response.canceled || response.compact_revision != 0 {
                        seen.failure = Some(format!(
                            "watch canceled (compact revision {}): {:?}",
                            response.compact_revision, response.cancel_reason
                        ));
                        break;
                    }
                    let arrived = nanos_since(epoch);
                    for event in response.events {
                        let Some(kv) = event.kv else { continue };
                        if let Some(stamp) = kv.value.get(..SEND_TIME_BYTES) {
                            let mut sent = [0; SEND_TIME_BYTES];
                            sent.copy_from_slice(stamp);
                            let sent = u64::from_le_bytes(sent);
                            record(&mut seen.latency, Duration::from_nanos(arrived.saturating_sub(sent)));
                        }
                        highest = highest.max(kv.mod_revision);
                        seen.revisions.push(kv.mod_revision);
                    }
                }
                Ok(None) => {
                    seen.failure = Some("the watch stream ended".into());
                    break;
                }
                Err(status) => {
                    seen.failure = Some(format!("watch stream: {}: {}", status.code(), status.message()));
                    break;
                }
            },
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = drained => break,
        }
    }
    drop(requests);
    seen
}

/// The store's current revision, read through the first connection.
async fn current_revision(settings: &Settings, channel: Channel) -> Result<i64, BenchError> {
    let mut kv = KvClient::new(channel);
    let request = RangeRequest {
        key: settings.keys.prefix(),
        limit: 1,
        count_only: true,
        ..Default::default()
    };
    let response = call(settings.request_timeout, kv.range(request))
        .await
        .map_err(|error| BenchError::Setup(format!("reading the current revision: {error}")))?;
    Ok(response.header.map_or(0, |header| header.revision))
}

pub async fn run(
    settings: &Arc<Settings>,
    channels: &[Channel],
    watchers: usize,
    rate: u64,
    drain_timeout: Duration,
) -> Result<Summary, BenchError> {
    let epoch = Instant::now();
    let start_revision = current_revision(settings, channels[0].clone()).await? + 1;
    let (phase_tx, phase_rx) = watch::channel(Phase::Writing);
    let (ready_tx, mut ready_rx) = mpsc::channel(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    for index in 0..watchers {
        tasks.push(tokio::spawn(watcher(
            channels[index % channels.len()].clone(),
            Arc::clone(settings),
            start_revision,
            epoch,
            ready_tx.clone(),
            phase_rx.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                return Err(BenchError::Setup(format!(
                    "a watcher could not start: {error}"
                )));
            }
            None => return Err(BenchError::Setup("a watcher ended before starting".into())),
        }
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let writes_started = Instant::now();
    let (tally, secs) = drive(
        "watch",
        settings,
        channels,
        settings.total,
        settings.duration,
        |mut client: Client| {
            let acked = Arc::clone(&acked);
            async move {
                let mut kv = KvClient::new(client.channel.clone());
                let mut tally = Tally::new();
                let mut value = vec![b'v'; client.settings.val_size];
                while let Some(op) = client.next(&mut tally) {
                    // Op n is due n/rate seconds after the start: one schedule for all writers.
                    if rate > 0 {
                        let due = writes_started + Duration::from_secs_f64(op as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    value[..SEND_TIME_BYTES].copy_from_slice(&nanos_since(epoch).to_le_bytes());
                    let request = PutRequest {
                        key: client.key(op),
                        value: Bytes::copy_from_slice(&value),
                        ..Default::default()
                    };
                    let sent = Instant::now();
                    match call(client.settings.request_timeout, kv.put(request)).await {
                        Ok(response) => {
                            tally.ok(sent.elapsed());
                            if let Some(header) = response.header {
                                acked.lock().push(header.revision);
                            }
                        }
                        Err(error) => tally.fail(error),
                    }
                    client.done.fetch_add(1, Ordering::Relaxed);
                }
                tally
            }
        },
    )
    .await?;

    let mut acked = std::mem::take(&mut *acked.lock());
    acked.sort_unstable();
    acked.dedup();
    let last = acked.last().copied().unwrap_or(0);
    let drain_started = Instant::now();
    // Every watcher holds a receiver until it returns, so sending cannot fail before the joins.
    let _ = phase_tx.send(Phase::Draining {
        last,
        deadline: drain_started + drain_timeout,
    });
    let mut events = histogram();
    let mut totals = Completeness::default();
    let (mut complete, mut failed, mut delivered) = (0u64, 0u64, 0u64);
    let mut first_failure = None;
    for task in tasks {
        let seen = task.await?;
        let completeness = check(&seen.revisions, &acked);
        delivered += seen.revisions.len() as u64;
        if completeness.missing == 0
            && completeness.duplicates == 0
            && completeness.out_of_order == 0
            && seen.failure.is_none()
        {
            complete += 1;
        }
        if let Some(failure) = seen.failure {
            failed += 1;
            first_failure.get_or_insert(failure);
        }
        totals.missing += completeness.missing;
        totals.duplicates += completeness.duplicates;
        totals.out_of_order += completeness.out_of_order;
        totals.unexpected += completeness.unexpected;
        events
            .add(&seen.latency)
            .expect("histograms with equal bounds add");
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();

    let mut summary = Summary::new("watch", settings.clients, settings.conns, secs, &tally);
    summary.errors += failed;
    if !summary.extra.contains_key("first_error")
        && let Some(failure) = first_failure
    {
        summary.insert("first_error", failure);
    }
    for (label, value) in report::percentiles(&tally.latency) {
        summary.insert(&format!("put_{label}_us"), value);
    }
    let [p50, p90, p99, max] = report::percentiles(&events).map(|(_, value)| value);
    summary.p50_us = p50;
    summary.p90_us = p90;
    summary.p99_us = p99;
    summary.max_us = max;
    summary.insert("watchers", watchers);
    summary.insert("rate", rate);
    summary.insert("events", delivered);
    summary.insert(
        "events_per_sec",
        (report::per_sec(delivered, secs + drain_secs) * 1000.0).round() / 1000.0,
    );
    summary.insert("complete_watchers", complete);
    summary.insert("missing", totals.missing);
    summary.insert("duplicates", totals.duplicates);
    summary.insert("out_of_order", totals.out_of_order);
    summary.insert("unexpected", totals.unexpected);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_watcher_has_nothing_to_report() {
        assert_eq!(check(&[3, 4, 7], &[3, 4, 7]), Completeness::default());
    }

    #[test]
    fn gaps_repeats_reorderings_and_strangers_are_each_counted() {
        // 5 is missing, 4 comes twice, 3 comes after 4, and 9 was never acknowledged.
        let completeness = check(&[4, 3, 4, 6, 9], &[3, 4, 5, 6]);
        assert_eq!(
            completeness,
            Completeness {
                missing: 1,
                duplicates: 1,
                out_of_order: 1,
                unexpected: 1,
            }
        );
    }

    #[test]
    fn a_watcher_that_saw_nothing_misses_everything() {
        assert_eq!(check(&[], &[1, 2]).missing, 2);
    }
}
