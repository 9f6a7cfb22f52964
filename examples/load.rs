//! A first load tool: N concurrent clients doing puts or ranges against any etcd v3 endpoint
//! (mnemo or etcd), bounded in count and time. Prints throughput and latency percentiles.
//!
//! `cargo run --release --example load -- --endpoint http://127.0.0.1:2379 --op put --clients 64 --total 50000`
//!
//! `--endpoint` takes a comma-separated list too (the members of a cluster); connections are
//! spread over the endpoints in turn, so clients are as well.
//!
//! `--op keepalive` grants one lease per client and renews it over the client's keepalive
//! stream, one renewal in flight per client.
//!
//! `--op watch --watchers 100 --rate 1000` opens one watch stream per watcher (spread over the
//! endpoints) on the load's key prefix, then `--clients` writers put `--total` keys at `--rate`
//! puts per second in all (0: as fast as they go). Each value carries its send time, so every
//! watcher measures the delay from send to delivery; the line reports delivered events per
//! second, delay percentiles, and whether every watcher got every acknowledged put.

use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, WatchCreateRequest,
    WatchRequest, kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient,
    watch_request::RequestUnion,
};
use tonic::transport::{Channel, Endpoint};

/// Clients sharing one HTTP/2 connection, as etcd's benchmark shares `--conns`.
const CLIENTS_PER_CONNECTION: usize = 8;
/// Distinct keys the load touches.
const KEY_SPACE: usize = 10_000;

struct Options {
    endpoint: String,
    op: String,
    clients: usize,
    total: usize,
    value_bytes: usize,
    max_duration: Duration,
    watchers: usize,
    rate: usize,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        endpoint: "http://127.0.0.1:2379".into(),
        op: "put".into(),
        clients: 64,
        total: 50_000,
        value_bytes: 256,
        max_duration: Duration::from_secs(60),
        watchers: 100,
        rate: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|err| format!("{flag}: {err}"))
        };
        match flag.as_str() {
            "--endpoint" => options.endpoint = value.clone(),
            "--op" => options.op = value.clone(),
            "--clients" => options.clients = number()?,
            "--total" => options.total = number()?,
            "--value-bytes" => options.value_bytes = number()?,
            "--max-seconds" => options.max_duration = Duration::from_secs(number()? as u64),
            "--watchers" => options.watchers = number()?,
            "--rate" => options.rate = number()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !["put", "range", "watch", "keepalive"].contains(&options.op.as_str()) {
        return Err("--op must be put, range, watch or keepalive".into());
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse()?;
    let endpoints: Vec<&str> = options.endpoint.split(',').collect();
    // At least one connection per endpoint, so that every member gets clients.
    let connections = options
        .clients
        .div_ceil(CLIENTS_PER_CONNECTION)
        .max(endpoints.len());
    let mut channels = Vec::new();
    for connection in 0..connections {
        let endpoint = endpoints[connection % endpoints.len()];
        channels.push(
            Endpoint::from_shared(endpoint.to_owned())?
                .connect()
                .await?,
        );
    }
    if options.op == "watch" {
        return watch_load(&options, &endpoints, &channels).await;
    }
    if options.op == "keepalive" {
        return keepalive_load(&options, &channels).await;
    }
    if options.op == "range" {
        // Ranges read keys that exist.
        let mut kv = KvClient::new(channels[0].clone());
        for index in 0..KEY_SPACE {
            kv.put(PutRequest {
                key: key(index).into(),
                value: vec![b'v'; options.value_bytes].into(),
                ..Default::default()
            })
            .await?;
        }
    }
    let started = Instant::now();
    let deadline = started + options.max_duration;
    let per_client = options.total / options.clients;
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let mut kv = KvClient::new(channels[client % connections].clone());
        let op = options.op.clone();
        let value = vec![b'v'; options.value_bytes];
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for round in 0..per_client {
                if Instant::now() > deadline {
                    break;
                }
                let index = (client * per_client + round) % KEY_SPACE;
                let sent = Instant::now();
                let outcome = if op == "put" {
                    kv.put(PutRequest {
                        key: key(index).into(),
                        value: value.clone().into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                } else {
                    kv.range(RangeRequest {
                        key: key(index).into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                };
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    report(&options.op, options.clients, started, tasks).await
}

/// The keepalive load: each client grants a lease, then renews it over its own keepalive
/// stream, one request in flight at a time; reports renewals/s and their latency.
async fn keepalive_load(
    options: &Options,
    channels: &[Channel],
) -> Result<(), Box<dyn std::error::Error>> {
    /// TTL of the renewed leases: long enough never to expire during a run.
    const LEASE_TTL_SECS: i64 = 600;
    let per_client = options.total / options.clients;
    let deadline = Instant::now() + options.max_duration;
    let mut streams = Vec::new();
    for client in 0..options.clients {
        let mut lease = LeaseClient::new(channels[client % channels.len()].clone());
        let id = lease
            .lease_grant(LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: 0,
            })
            .await?
            .into_inner()
            .id;
        let (requests, requests_rx) = tokio::sync::mpsc::channel(1);
        // A first renewal goes out before the call is awaited: etcd (gRPC-Go) sends the
        // response headers of a bidirectional stream only with its first answer.
        requests.send(LeaseKeepAliveRequest { id }).await?;
        let mut responses = lease
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
            .await?
            .into_inner();
        responses
            .message()
            .await?
            .ok_or("keepalive stream ended at once")?;
        streams.push((id, requests, responses));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (id, requests, mut responses) in streams {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for _ in 0..per_client {
                if Instant::now() > deadline {
                    break;
                }
                let sent = Instant::now();
                if requests.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    errors += 1;
                    break;
                }
                // Bounded by the run's deadline, so a member that never answers ends the run.
                match tokio::time::timeout_at(deadline.into(), responses.message()).await {
                    Ok(Ok(Some(response))) if response.ttl > 0 => latencies.push(sent.elapsed()),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    report("keepalive", options.clients, started, tasks).await
}

/// Per-client results: latencies of the requests that succeeded, and the failure count.
type ClientTask = tokio::task::JoinHandle<(Vec<Duration>, usize)>;

/// Gathers the clients' results and prints the run's line: counts, ops/s and latency
/// percentiles.
async fn report(
    op: &str,
    clients: usize,
    started: Instant,
    tasks: Vec<ClientTask>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut done, failed) = task.await?;
        latencies.append(&mut done);
        errors += failed;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    println!(
        "op={op} clients={clients} ok={} errors={errors} seconds={:.2} ops_per_sec={:.0} p50_ms={:.2} p99_ms={:.2}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
    );
    Ok(())
}

/// Nanoseconds since the Unix epoch: the clock both the writer and the watchers read.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// The watch load: watchers first, then paced writers; reports delivery delay and rate.
async fn watch_load(
    options: &Options,
    endpoints: &[&str],
    channels: &[Channel],
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + options.max_duration;
    // One connection per endpoint for the watchers, one stream each.
    let mut watch_channels = Vec::new();
    for endpoint in endpoints {
        watch_channels.push(
            Endpoint::from_shared(endpoint.to_string())?
                .connect()
                .await?,
        );
    }
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(options.watchers.max(1));
    for watcher in 0..options.watchers {
        let channel = watch_channels[watcher % watch_channels.len()].clone();
        let ready = ready_tx.clone();
        let total = options.total;
        watchers.push(tokio::spawn(async move {
            let (requests, requests_rx) = tokio::sync::mpsc::channel(1);
            let create = WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: b"load/".to_vec().into(),
                    range_end: b"load0".to_vec().into(),
                    ..Default::default()
                })),
            };
            requests.send(create).await.ok()?;
            let mut responses = WatchClient::new(channel)
                .watch(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
                .await
                .ok()?
                .into_inner();
            let mut delays = Vec::with_capacity(total);
            let mut revisions = Vec::with_capacity(total);
            while let Ok(Some(response)) =
                tokio::time::timeout_at(deadline.into(), responses.message())
                    .await
                    .ok()?
            {
                if response.created {
                    ready.send(()).await.ok()?;
                    continue;
                }
                let arrived = now_nanos();
                for event in response.events {
                    let kv = event.kv.unwrap_or_default();
                    let sent = u64::from_le_bytes(kv.value[..8].try_into().ok()?);
                    delays.push(Duration::from_nanos(arrived.saturating_sub(sent)));
                    revisions.push(kv.mod_revision);
                }
                if revisions.len() >= total {
                    break;
                }
            }
            drop(requests);
            Some((delays, revisions))
        }));
    }
    drop(ready_tx);
    for _ in 0..options.watchers {
        ready_rx.recv().await.ok_or("a watcher failed to start")?;
    }
    let started = Instant::now();
    let per_client = options.total / options.clients;
    let pause = if options.rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(options.clients as f64 / options.rate as f64)
    };
    let mut writers = Vec::new();
    for client in 0..options.clients {
        let mut kv = KvClient::new(channels[client % channels.len()].clone());
        let value_bytes = options.value_bytes.max(8);
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut next = Instant::now();
            for round in 0..per_client {
                if Instant::now() > deadline {
                    break;
                }
                let mut value = vec![b'v'; value_bytes];
                value[..8].copy_from_slice(&now_nanos().to_le_bytes());
                let put = kv.put(PutRequest {
                    key: key(client * per_client + round).into(),
                    value: value.into(),
                    ..Default::default()
                });
                if let Ok(response) = put.await {
                    acked.push(response.into_inner().header.map_or(0, |h| h.revision));
                }
                next += pause;
                tokio::time::sleep_until(next.into()).await;
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await?);
    }
    acked.sort_unstable();
    let mut delays = Vec::new();
    let mut complete = 0;
    let mut delivered = 0usize;
    for watcher in watchers {
        if let Some((mut got_delays, revisions)) = watcher.await? {
            delivered += revisions.len();
            let mut sorted = revisions.clone();
            sorted.sort_unstable();
            if revisions == sorted && revisions == acked {
                complete += 1;
            }
            delays.append(&mut got_delays);
        }
    }
    let elapsed = started.elapsed();
    delays.sort_unstable();
    println!(
        "op=watch watchers={} writers={} puts={} events={} complete_watchers={} seconds={:.2} events_per_sec={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        options.watchers,
        options.clients,
        acked.len(),
        delivered,
        complete,
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        percentile_ms(&delays, 0.50),
        percentile_ms(&delays, 0.99),
        percentile_ms(&delays, 1.0),
    );
    Ok(())
}

fn key(index: usize) -> String {
    format!("load/{index:08}")
}
