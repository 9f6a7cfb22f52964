//! A first load tool: N concurrent clients doing puts or ranges against any etcd v3 endpoint
//! (mnemo or etcd), bounded in count and time. Prints throughput and latency percentiles.
//!
//! `cargo run --release --example load -- --endpoint http://127.0.0.1:2379 --op put --clients 64 --total 50000`
//!
//! `--endpoint` takes a comma-separated list too (the members of a cluster); connections are
//! spread over the endpoints in turn, so clients are as well.

use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};
use tonic::transport::Endpoint;

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
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        endpoint: "http://127.0.0.1:2379".into(),
        op: "put".into(),
        clients: 64,
        total: 50_000,
        value_bytes: 256,
        max_duration: Duration::from_secs(60),
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
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.op != "put" && options.op != "range" {
        return Err("--op must be put or range".into());
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
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut done, failed) = task.await?;
        latencies.append(&mut done);
        errors += failed;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "op={} clients={} ok={} errors={} seconds={:.2} ops_per_sec={:.0} p50_ms={:.2} p99_ms={:.2}",
        options.op,
        options.clients,
        latencies.len(),
        errors,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1000.0,
        percentile(0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}

fn key(index: usize) -> String {
    format!("load/{index:08}")
}
