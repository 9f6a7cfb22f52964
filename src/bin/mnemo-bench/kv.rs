//! The KV workloads: preload, put, range, mixed and txn-cas, each one op per ticket.
//!
//! Owns the requests these workloads send; it must not print (report.rs does).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use mnemo::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::request_op::Request;
use mnemo::pb::etcdserverpb::response_op::Response;
use mnemo::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::Rng as _;
use tonic::transport::Channel;

use crate::options::{Consistency, Settings};
use crate::report::{Summary, Tally};
use crate::{BenchError, CallError, Client, RESPONSE_BYTES_MAX, call, drive};

/// Txns one txn-cas update may take before it counts as an error: a bound on the retry loop.
/// Kubernetes retries without a bound; a benchmark must end.
const CAS_ATTEMPTS_MAX: u64 = 1_000;

fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX)
}

fn value(settings: &Settings) -> Bytes {
    Bytes::from(vec![b'v'; settings.val_size])
}

/// Puts keys 0..preload with all clients, untimed; any failure stops the run, since the
/// measured phase would read keys that are not there.
pub async fn preload(settings: &Arc<Settings>, channels: &[Channel]) -> Result<(), BenchError> {
    let (tally, _) = drive(
        "preload",
        settings,
        channels,
        Some(settings.preload),
        None,
        |client: Client| async move {
            let mut kv = kv_client(client.channel.clone());
            let value = value(&client.settings);
            let mut tally = Tally::new();
            while let Some(op) = client.next(&mut tally) {
                let sent = Instant::now();
                let request = PutRequest {
                    key: client.settings.keys.key(op),
                    value: value.clone(),
                    ..Default::default()
                };
                match call(client.settings.request_timeout, kv.put(request)).await {
                    Ok(_) => tally.ok(sent.elapsed()),
                    Err(error) => tally.fail(error),
                }
                client.done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        },
    )
    .await?;
    if tally.errors > 0 {
        return Err(BenchError::Setup(format!(
            "preload: {} of {} puts failed, the first with {}",
            tally.errors,
            settings.preload,
            tally.first_error.unwrap_or_default()
        )));
    }
    Ok(())
}

pub async fn put(settings: &Arc<Settings>, channels: &[Channel]) -> Result<Summary, BenchError> {
    let (tally, secs) = drive(
        "put",
        settings,
        channels,
        settings.total,
        settings.duration,
        |mut client: Client| async move {
            let mut kv = kv_client(client.channel.clone());
            let value = value(&client.settings);
            let mut tally = Tally::new();
            while let Some(op) = client.next(&mut tally) {
                let request = PutRequest {
                    key: client.key(op),
                    value: value.clone(),
                    ..Default::default()
                };
                let sent = Instant::now();
                match call(client.settings.request_timeout, kv.put(request)).await {
                    Ok(_) => tally.ok(sent.elapsed()),
                    Err(error) => tally.fail(error),
                }
                client.done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        },
    )
    .await?;
    Ok(Summary::new(
        "put",
        settings.clients,
        settings.conns,
        secs,
        &tally,
    ))
}

/// The range request of op `op`: one key, or `range_size` keys from a random start that
/// leaves room for all of them.
fn range_request(
    client: &mut Client,
    op: u64,
    range_size: u64,
    consistency: Consistency,
) -> RangeRequest {
    let first = if range_size == 1 {
        client.pick(op)
    } else {
        let starts = client.settings.key_space - range_size + 1;
        if client.settings.sequential {
            op % starts
        } else {
            client.rng.gen_range(0..starts)
        }
    };
    let keys = &client.settings.keys;
    RangeRequest {
        key: keys.key(first),
        range_end: if range_size == 1 {
            Bytes::new()
        } else {
            keys.key(first + range_size)
        },
        serializable: consistency.serializable(),
        ..Default::default()
    }
}

pub async fn range(
    settings: &Arc<Settings>,
    channels: &[Channel],
    consistency: Consistency,
    range_size: u64,
) -> Result<Summary, BenchError> {
    let (tally, secs) = drive(
        "range",
        settings,
        channels,
        settings.total,
        settings.duration,
        move |mut client: Client| async move {
            let mut kv = kv_client(client.channel.clone());
            let mut tally = Tally::new();
            while let Some(op) = client.next(&mut tally) {
                let request = range_request(&mut client, op, range_size, consistency);
                let sent = Instant::now();
                match call(client.settings.request_timeout, kv.range(request)).await {
                    Ok(response) => {
                        tally.ok(sent.elapsed());
                        tally.count("kvs", response.kvs.len() as u64);
                    }
                    Err(error) => tally.fail(error),
                }
                client.done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        },
    )
    .await?;
    let mut summary = Summary::new("range", settings.clients, settings.conns, secs, &tally);
    summary.insert("consistency", consistency.letter());
    summary.insert("range_size", range_size);
    // Always present, so a range over keys that were never loaded shows as kvs 0.
    summary.insert("kvs", tally.counters.get("kvs").copied().unwrap_or(0));
    Ok(summary)
}

pub async fn mixed(
    settings: &Arc<Settings>,
    channels: &[Channel],
    read_ratio: f64,
    consistency: Consistency,
) -> Result<Summary, BenchError> {
    let (tally, secs) = drive(
        "mixed",
        settings,
        channels,
        settings.total,
        settings.duration,
        move |mut client: Client| async move {
            let mut kv = kv_client(client.channel.clone());
            let value = value(&client.settings);
            let mut tally = Tally::new();
            while let Some(op) = client.next(&mut tally) {
                let read = client.rng.gen_bool(read_ratio);
                let key = client.key(op);
                let sent = Instant::now();
                let outcome = if read {
                    let request = RangeRequest {
                        key,
                        serializable: consistency.serializable(),
                        ..Default::default()
                    };
                    call(client.settings.request_timeout, kv.range(request))
                        .await
                        .map(drop)
                } else {
                    let request = PutRequest {
                        key,
                        value: value.clone(),
                        ..Default::default()
                    };
                    call(client.settings.request_timeout, kv.put(request))
                        .await
                        .map(drop)
                };
                let elapsed = sent.elapsed();
                let kind = if read { "reads" } else { "writes" };
                match outcome {
                    Ok(()) => {
                        tally.ok(elapsed);
                        tally.record_as(kind, elapsed);
                        tally.count(kind, 1);
                    }
                    Err(error) => tally.fail(error),
                }
                client.done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        },
    )
    .await?;
    let mut summary = Summary::new("mixed", settings.clients, settings.conns, secs, &tally);
    summary.insert("read_ratio", read_ratio);
    summary.insert("consistency", consistency.letter());
    Ok(summary)
}

/// One Kubernetes-style update of `key`: read it, then Txn(mod_revision == seen) put, else read
/// it; on a conflict, retry with the revision the else branch returned. Returns the number of
/// conflicts it met.
async fn update(
    kv: &mut KvClient<Channel>,
    settings: &Settings,
    key: Bytes,
    value: Bytes,
) -> Result<u64, CallError> {
    let timeout = settings.request_timeout;
    let read = RangeRequest {
        key: key.clone(),
        ..Default::default()
    };
    let current = call(timeout, kv.range(read.clone())).await?;
    // A key that does not exist compares as mod_revision 0, as etcd's compare does.
    let mut seen = current.kvs.first().map_or(0, |kv| kv.mod_revision);
    for attempt in 0..CAS_ATTEMPTS_MAX {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal.into(),
                target: CompareTarget::Mod.into(),
                key: key.clone(),
                target_union: Some(TargetUnion::ModRevision(seen)),
                range_end: Bytes::new(),
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(read.clone())),
            }],
        };
        let response = call(timeout, kv.txn(txn)).await?;
        if response.succeeded {
            return Ok(attempt);
        }
        seen = match response
            .responses
            .first()
            .and_then(|op| op.response.as_ref())
        {
            Some(Response::ResponseRange(range)) => {
                range.kvs.first().map_or(0, |kv| kv.mod_revision)
            }
            _ => {
                return Err(CallError::Unexpected(
                    "a failed txn did not return its else range".into(),
                ));
            }
        };
    }
    Err(CallError::Unexpected(format!(
        "no update after {CAS_ATTEMPTS_MAX} conflicting txns"
    )))
}

pub async fn txn_cas(
    settings: &Arc<Settings>,
    channels: &[Channel],
) -> Result<Summary, BenchError> {
    let (tally, secs) = drive(
        "txn-cas",
        settings,
        channels,
        settings.total,
        settings.duration,
        |mut client: Client| async move {
            let mut kv = kv_client(client.channel.clone());
            let value = value(&client.settings);
            let mut tally = Tally::new();
            while let Some(op) = client.next(&mut tally) {
                let key = client.key(op);
                let sent = Instant::now();
                match update(&mut kv, &client.settings, key, value.clone()).await {
                    Ok(conflicts) => {
                        tally.ok(sent.elapsed());
                        tally.count("conflicts", conflicts);
                    }
                    Err(error) => tally.fail(error),
                }
                client.done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        },
    )
    .await?;
    let mut summary = Summary::new("txn-cas", settings.clients, settings.conns, secs, &tally);
    // Ops are successful updates; say so under the name the targets use.
    summary.insert("updates_per_sec", summary.ops_per_sec);
    summary.insert(
        "conflicts",
        tally.counters.get("conflicts").copied().unwrap_or(0),
    );
    Ok(summary)
}
