//! `mnemo-bench`: a load generator that speaks plain etcd v3 gRPC (the generated `mnemo::pb`
//! clients over tonic), so the same run can be pointed at etcd or at mnemo.
//!
//! Layout: `options` parses and checks the command line; `report` counts and prints; `kv`
//! holds put, range, mixed and txn-cas; `watch` and `lease` their workloads. This file owns the
//! connections and the client driver every workload shares: `--clients` tasks spread over
//! `--conns` connections (spread over `--endpoints`), each taking numbered ops from one shared
//! ticket counter until `--total` ops were handed out or `--duration` passed, so a run is always
//! bounded and does exactly `--total` ops when it has one.
//!
//! It must not depend on mnemo's server internals: only the wire types, so that what it
//! measures is what any etcd client would see. It must only connect to the endpoints it is
//! given.

mod kv;
mod lease;
mod options;
mod report;
mod watch;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser as _;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tonic::transport::{Channel, Endpoint};

use options::{Cli, Settings, Workload};
use report::{Progress, Summary, Tally};

/// How long connecting to an endpoint may take before the run is abandoned.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failures in a row after which a client stops: a server that hangs would otherwise hold each
/// of the client's remaining ops for a whole request timeout. The run reports `gave_up_clients`.
const ERRORS_IN_A_ROW_MAX: u64 = 20;
/// Largest gRPC message the clients accept: a range of many large values.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a run could not be done; failed requests during a run are counted, not raised.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Options(String),
    #[error("cannot connect to {endpoint}: {}", causes(source))]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{what}: {source}")]
    Rpc {
        what: &'static str,
        source: tonic::Status,
    },
    #[error("{0}")]
    Setup(String),
    #[error("a client task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// An error and its sources, `: `-separated: tonic's transport errors say only "transport
/// error" at the top, and the cause (connection refused, ...) is further down.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why one request of a run failed: counted as an error of the run.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("no answer within the request timeout")]
    Timeout,
    #[error("{0}")]
    Unexpected(String),
}

/// Awaits one unary call under the request deadline.
pub async fn call<T>(
    timeout: Duration,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CallError::Status(status)),
        Err(_) => Err(CallError::Timeout),
    }
}

/// Opens `settings.conns` connections, the i-th to endpoint i modulo their number.
async fn connect(settings: &Settings) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::with_capacity(settings.conns);
    for index in 0..settings.conns {
        let endpoint = &settings.endpoints[index % settings.endpoints.len()];
        let connection = Endpoint::from_shared(endpoint.clone())
            .map_err(|source| BenchError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| BenchError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        channels.push(connection);
    }
    Ok(channels)
}

/// Hands out op numbers 0, 1, ... until the total was handed out or the deadline passed.
pub struct Tickets {
    issued: AtomicU64,
    total: Option<u64>,
    deadline: Option<Instant>,
}

impl Tickets {
    pub fn new(total: Option<u64>, duration: Option<Duration>) -> Tickets {
        // Options guarantee at least one bound; a run without either would never end.
        assert!(
            total.is_some() || duration.is_some(),
            "a run needs a total or a duration"
        );
        Tickets {
            issued: AtomicU64::new(0),
            total,
            deadline: duration.map(|duration| Instant::now() + duration),
        }
    }

    pub fn next(&self) -> Option<u64> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return None;
        }
        let op = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.total {
            Some(total) if op >= total => None,
            _ => Some(op),
        }
    }
}

/// What a client task gets: its connection, the shared tickets and progress, its own RNG.
pub struct Client {
    pub index: usize,
    pub channel: Channel,
    pub tickets: Arc<Tickets>,
    pub done: Arc<AtomicU64>,
    pub settings: Arc<Settings>,
    pub rng: StdRng,
}

impl Client {
    /// The next op to do, or `None` when the run is over or this client failed
    /// [`ERRORS_IN_A_ROW_MAX`] times in a row (counted in `tally` as `gave_up_clients`).
    pub fn next(&self, tally: &mut Tally) -> Option<u64> {
        if tally.errors_in_a_row >= ERRORS_IN_A_ROW_MAX {
            tally.count("gave_up_clients", 1);
            return None;
        }
        self.tickets.next()
    }

    /// The key number of op `op`: in order, or at random over the key space.
    pub fn pick(&mut self, op: u64) -> u64 {
        use rand::Rng as _;
        if self.settings.sequential {
            op % self.settings.key_space
        } else {
            self.rng.gen_range(0..self.settings.key_space)
        }
    }

    /// The key of op `op` (see [`Client::pick`]).
    pub fn key(&mut self, op: u64) -> bytes::Bytes {
        let index = self.pick(op);
        self.settings.keys.key(index)
    }
}

/// Runs `body` on `settings.clients` tasks over `channels` for `total`/`duration`, with a
/// progress bar titled `what`; returns the merged tally and the seconds the phase took.
pub async fn drive<F, Fut>(
    what: &str,
    settings: &Arc<Settings>,
    channels: &[Channel],
    total: Option<u64>,
    duration: Option<Duration>,
    body: F,
) -> Result<(Tally, f64), BenchError>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let progress = Progress::start(what, total);
    let tickets = Arc::new(Tickets::new(total, duration));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(settings.clients);
    for index in 0..settings.clients {
        let client = Client {
            index,
            channel: channels[index % channels.len()].clone(),
            tickets: Arc::clone(&tickets),
            done: Arc::clone(&progress.done),
            settings: Arc::clone(settings),
            rng: StdRng::seed_from_u64(settings.seed.wrapping_add(index as u64)),
        };
        tasks.push(tokio::spawn(body(client)));
    }
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    progress.finish();
    Ok((tally, secs))
}

async fn run(cli: Cli) -> Result<Summary, BenchError> {
    let settings = Arc::new(options::settle(&cli.common, &cli.workload)?);
    let channels = connect(&settings).await?;
    if settings.preload > 0 {
        kv::preload(&settings, &channels).await?;
    }
    let op = cli.workload.name();
    let mut summary = match cli.workload {
        Workload::Put => kv::put(&settings, &channels).await?,
        Workload::Range {
            consistency,
            range_size,
        } => kv::range(&settings, &channels, consistency, range_size).await?,
        Workload::TxnCas => kv::txn_cas(&settings, &channels).await?,
        Workload::Mixed {
            read_ratio,
            consistency,
        } => kv::mixed(&settings, &channels, read_ratio, consistency).await?,
        Workload::Lease { ttl } => lease::run(&settings, &channels, ttl).await?,
        Workload::Watch {
            watchers,
            rate,
            drain_timeout,
        } => watch::run(&settings, &channels, watchers, rate, drain_timeout).await?,
    };
    debug_assert_eq!(summary.op, op);
    summary.insert("endpoints", settings.endpoints.len());
    summary.insert("key_size", settings.keys.key(0).len());
    summary.insert("val_size", settings.val_size);
    summary.insert("key_space", settings.key_space);
    Ok(summary)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mnemo-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(summary) => {
            summary.print();
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mnemo-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
