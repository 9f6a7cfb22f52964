//! The `lease` workload: keys under leases kept alive, left to lapse or revoked; and locks (the
//! v3lock service) guarding a shared counter.
//!
//! Owns the lease workload's schedule, its requests over the Lease, KV and Lock services, and its
//! final phase. Workers are pinned to members round-robin; on each member, alternate rounds of
//! workers take the two halves:
//! - **Leased keys** (`l/<worker>/<n>`, each written once): a worker grants leases with ids of
//!   its own choosing (so a grant with an unknown outcome still names its lease) and a short TTL
//!   (`key_ttl_secs`), each with a plan: *keep* (renewed by the worker's keeper for a while,
//!   then left to lapse), *lapse* (never renewed) or *revoke* (renewed, then revoked). Between
//!   grants it puts fresh keys under its leases, reads every key under `l/` (one linearizable
//!   Range) and asks `TimeToLive`.
//! - **Locks**: a worker grants a lease (`lock_ttl_secs`) its keeper renews, takes the lock
//!   `lk/counter` with it, reads the lock key and the counter `c/counter` in one read-only Txn,
//!   writes the counter plus one with a Txn *fenced* by the lock key's create revision (the
//!   fencing token etcd's docs ask for, jepsen.md §1.4), and unlocks. A Lock or Unlock with an
//!   unknown outcome may leave the worker's key holding the lock, so the worker then gives the
//!   lease up (revokes it and stops renewing) instead of blocking everyone until the end.
//!
//! Each worker's keeper task renews its leases over one `LeaseKeepAlive` stream, one request and
//! one response at a time, every third of the TTL.
//!
//! After the workers stop and [`Ctx::end_faults`] has healed everything, the final phase asks
//! `TimeToLive` of every lease ever granted (grants with unknown outcomes included) until each is
//! gone or its TTL plus [`crate::checker::lease::EXPIRY_GRACE_NANOS`] has passed, then reads `l/`,
//! `lk/` and the counter through every member. The history is judged by
//! [`crate::checker::lease`]: `lease` and `lock`.
//!
//! # Vocabulary (`history.jsonl`, model `lease`)
//! Requests and responses are [`LeaseInput`] and [`LeaseOutput`], tagged by `"f"`:
//! `grant {lease, ttl}` → `{lease, ttl}`; `put {key, lease}` → `{revision}`;
//! `keepalive {lease}` → `{ttl}` (0: lease gone); `revoke {lease}` → `{revision}`;
//! `ttl {lease}` → `{ttl, granted, keys}` (-1: gone); `read {prefix}` → `{revision, kvs: [{key,
//! lease, mod_revision}]}`; `lock {name, lease}` → `{key, revision}`; `read-counter {lock_key}` →
//! `{lock_create_revision, value, revision}`; `incr {lock_key, lease, fence, read, write}` →
//! `{succeeded, revision}`; `unlock {key}` → `{revision}`; and `hold {key, lease}` → `{end}`, not
//! a request but the span a worker believed it held the lock (invoked when the Lock answered,
//! completed just before its Unlock), recorded under a process of its own.
//!
//! Process ids: a worker's requests use `worker + k × concurrency` (a new `k` after each `info`),
//! its keeper's the same plus [`KEEPER_PROCESS_BASE`], its holds `worker` plus
//! [`HOLD_PROCESS_BASE`]; the final phase's start at [`FINAL_PROCESS_BASE`].
//!
//! Must not: retry a request, decide timing beyond its own workers' pacing, or inject faults.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{Counts, Ctx, ERROR_BACKOFF, FINAL_PROCESS_BASE, WorkloadReport, lock};
use crate::checker::lease::{
    EXPIRY_GRACE_NANOS, HoldEnd, LeaseInput, LeaseOutput, LeasedKv, check_leases, check_lock, parse,
};
use crate::client::{Outcome, classify};
use crate::history::recorder::Recorder;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::request_op::Request as RequestKind;
use crate::pb::etcdserverpb::response_op::Response as ResponseKind;
use crate::pb::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::pb::v3lockpb::lock_client::LockClient;
use crate::pb::v3lockpb::{LockRequest, UnlockRequest};
use crate::random::SeededRng;

/// TTL of the leases that carry keys unless told otherwise, seconds: a few seconds, above the
/// members' minimum (ceil(1.5 × election timeout) = 2 s with the harness's 1 s) so that a
/// keepalive delayed by one request timeout (2 s) does not always lose the lease.
pub const KEY_TTL_SECS_DEFAULT: i64 = 3;
/// TTL of the lock holders' leases unless told otherwise, seconds: the members' minimum, so a
/// paused holder loses its lock quickly and the fence gets exercised.
pub const LOCK_TTL_SECS_DEFAULT: i64 = 2;
/// Leases a key worker keeps granted at once unless told otherwise.
pub const LEASES_PER_WORKER_DEFAULT: usize = 3;
/// Keeper processes start here, above any worker's request processes.
pub const KEEPER_PROCESS_BASE: u64 = 1 << 36;
/// Hold pseudo-operations' processes start here.
pub const HOLD_PROCESS_BASE: u64 = 1 << 37;
/// Deadline of a connection attempt; shorter than any request deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Renewals per TTL: etcd's client renews every third of the TTL, so two can be lost in a row.
const RENEWALS_PER_TTL: u32 = 3;
/// Bound of a keepalive stream's request queue; one request is in flight at a time.
const KEEPALIVE_QUEUE: usize = 4;
/// How long a *keep* lease is renewed before it is left to lapse, at least and at most.
const KEEP_SPAN_MIN: Duration = Duration::from_secs(4);
const KEEP_SPAN_MAX: Duration = Duration::from_secs(12);
/// How long a *revoke* lease is renewed before it is revoked, at least and at most.
const REVOKE_AFTER_MIN: Duration = Duration::from_secs(1);
const REVOKE_AFTER_MAX: Duration = Duration::from_secs(4);
/// Share of grants planned *keep*, and *lapse*, percent; the rest are *revoke*.
const PLAN_KEEP_PERCENT: u64 = 50;
const PLAN_LAPSE_PERCENT: u64 = 25;
/// Shares of a key worker's operations once its leases are granted, percent: reads, puts, and
/// the rest `TimeToLive`.
const READ_PERCENT: u64 = 50;
const PUT_PERCENT: u64 = 35;
/// The shared counter and the lock guarding it.
const COUNTER_KEY: &str = "c/counter";
const LOCK_NAME: &str = "lk/counter";
/// Prefixes of the leased keys and of the lock keys.
const KEY_PREFIX: &str = "l/";
const LOCK_PREFIX: &str = "lk/";
/// Pause between two rounds of the final `TimeToLive` polling.
const FINAL_POLL_PAUSE: Duration = Duration::from_millis(500);
/// Polling continues this long past the checker's deadline, so the checker sees a `TimeToLive`
/// called after it for any lease that is still alive.
const FINAL_POLL_OVERRUN: Duration = Duration::from_secs(1);
/// Attempts of one final read (a read changes nothing, so reading again is safe).
const FINAL_READ_ATTEMPTS: usize = 5;
/// Pause between two attempts of a final read.
const FINAL_READ_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Functions that must each have succeeded at least once.
const REQUIRED: [&str; 10] = [
    "grant",
    "put",
    "keepalive",
    "revoke",
    "ttl",
    "read",
    "lock",
    "read-counter",
    "incr",
    "unlock",
];

/// The `lease` workload's options.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// TTL of the leases carrying keys, seconds.
    pub key_ttl_secs: i64,
    /// TTL of the lock holders' leases, seconds.
    pub lock_ttl_secs: i64,
    /// Leases a key worker keeps granted at once.
    pub leases_per_worker: usize,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            key_ttl_secs: KEY_TTL_SECS_DEFAULT,
            lock_ttl_secs: LOCK_TTL_SECS_DEFAULT,
            leases_per_worker: LEASES_PER_WORKER_DEFAULT,
        }
    }
}

/// How a request ended, with its result when it happened.
enum Reply<T> {
    Ok(T),
    Fail(String),
    Info(String),
}

impl<T> Reply<T> {
    fn class(&self) -> &'static str {
        match self {
            Reply::Ok(_) => "ok",
            Reply::Fail(_) => "fail",
            Reply::Info(_) => "info",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Reply::Ok(_) => None,
            Reply::Fail(why) | Reply::Info(why) => Some(why),
        }
    }
}

/// Sorts a call's result into the three classes: a timeout of a read is `fail` (it changed
/// nothing), of anything else `info`; errors as [`classify`] says.
async fn settle<T>(
    timeout: Duration,
    read_only: bool,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Reply<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Reply::Ok(value),
        Ok(Err(status)) => match classify(&status, read_only) {
            Outcome::Fail(why) => Reply::Fail(why),
            Outcome::Ok(_) | Outcome::Info(_) => {
                Reply::Info(format!("{:?}: {}", status.code(), status.message()))
            }
        },
        Err(_) if read_only => Reply::Fail("timeout".to_owned()),
        Err(_) => Reply::Info("timeout".to_owned()),
    }
}

/// A channel to one member. No channel-wide deadline: tonic would send it as `grpc-timeout` and
/// end a keepalive stream with it; every call is bounded by [`settle`] instead.
fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy())
}

/// One logical client: a process id that moves on after an `info`, and the run's recorder.
struct Lane {
    recorder: Arc<Recorder>,
    process: u64,
    stride: u64,
    counts: Counts,
}

impl Lane {
    /// Records `input`, runs `call`, records and counts its outcome.
    async fn run<T>(
        &mut self,
        input: &LeaseInput,
        call: impl Future<Output = Reply<T>>,
        output: impl FnOnce(&T) -> LeaseOutput,
    ) -> Reply<T> {
        self.recorder.invoke(self.process, input);
        let reply = call.await;
        match &reply {
            Reply::Ok(value) => self.recorder.ok(self.process, &output(value)),
            Reply::Fail(_) => self.recorder.fail(self.process),
            Reply::Info(_) => self.recorder.info(self.process),
        }
        self.counts
            .add(input.function(), reply.class(), reply.reason());
        if matches!(reply, Reply::Info(_)) {
            self.process += self.stride;
        }
        reply
    }
}

/// The clients of one member's services.
#[derive(Clone)]
struct Services {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    lock: LockClient<Channel>,
    timeout: Duration,
}

impl Services {
    fn new(endpoint: &str, timeout: Duration) -> anyhow::Result<Services> {
        let channel = channel(endpoint)?;
        Ok(Services {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            lock: LockClient::new(channel),
            timeout,
        })
    }

    async fn grant(&mut self, lane: &mut Lane, lease: i64, ttl: i64) -> Reply<i64> {
        let input = LeaseInput::Grant { lease, ttl };
        let call = async {
            let response = self
                .lease
                .lease_grant(LeaseGrantRequest { ttl, id: lease })
                .await?
                .into_inner();
            Ok(response.ttl)
        };
        lane.run(&input, settle(self.timeout, false, call), |&ttl| {
            LeaseOutput::Grant { lease, ttl }
        })
        .await
    }

    async fn put(&mut self, lane: &mut Lane, key: &str, lease: i64) -> Reply<i64> {
        let input = LeaseInput::Put {
            key: key.to_owned(),
            lease,
        };
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease,
            ..PutRequest::default()
        };
        let call = async {
            let response = self.kv.put(request).await?.into_inner();
            Ok(response.header.map_or(0, |header| header.revision))
        };
        lane.run(&input, settle(self.timeout, false, call), |&revision| {
            LeaseOutput::Put { revision }
        })
        .await
    }

    async fn revoke(&mut self, lane: &mut Lane, lease: i64) -> Reply<i64> {
        let input = LeaseInput::Revoke { lease };
        let call = async {
            let response = self
                .lease
                .lease_revoke(LeaseRevokeRequest { id: lease })
                .await?
                .into_inner();
            Ok(response.header.map_or(0, |header| header.revision))
        };
        lane.run(&input, settle(self.timeout, false, call), |&revision| {
            LeaseOutput::Revoke { revision }
        })
        .await
    }

    async fn time_to_live(&mut self, lane: &mut Lane, lease: i64) -> Reply<LeaseOutput> {
        let input = LeaseInput::Ttl { lease };
        let call = async {
            let response = self
                .lease
                .lease_time_to_live(LeaseTimeToLiveRequest {
                    id: lease,
                    keys: true,
                })
                .await?
                .into_inner();
            Ok(LeaseOutput::Ttl {
                ttl: response.ttl,
                granted: response.granted_ttl,
                keys: response
                    .keys
                    .iter()
                    .map(|key| String::from_utf8_lossy(key).into_owned())
                    .collect(),
            })
        };
        // TimeToLive changes nothing, so like a read its errors are failures.
        lane.run(&input, settle(self.timeout, true, call), Clone::clone)
            .await
    }

    async fn read(&mut self, lane: &mut Lane, prefix: &str) -> Reply<LeaseOutput> {
        let input = LeaseInput::Read {
            prefix: prefix.to_owned(),
        };
        let request = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            ..RangeRequest::default()
        };
        let call = async {
            let response = self.kv.range(request).await?.into_inner();
            Ok(LeaseOutput::Read {
                revision: response.header.map_or(0, |header| header.revision),
                kvs: response
                    .kvs
                    .iter()
                    .map(|kv| LeasedKv {
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                        lease: kv.lease,
                        mod_revision: kv.mod_revision,
                    })
                    .collect(),
            })
        };
        lane.run(&input, settle(self.timeout, true, call), Clone::clone)
            .await
    }

    async fn lock(
        &mut self,
        lane: &mut Lane,
        lease: i64,
        timeout: Duration,
    ) -> Reply<(String, i64)> {
        let input = LeaseInput::Lock {
            name: LOCK_NAME.to_owned(),
            lease,
        };
        let call = async {
            let response = self
                .lock
                .lock(LockRequest {
                    name: LOCK_NAME.as_bytes().to_vec(),
                    lease,
                })
                .await?
                .into_inner();
            Ok((
                String::from_utf8_lossy(&response.key).into_owned(),
                response.header.map_or(0, |header| header.revision),
            ))
        };
        lane.run(&input, settle(timeout, false, call), |(key, revision)| {
            LeaseOutput::Lock {
                key: key.clone(),
                revision: *revision,
            }
        })
        .await
    }

    async fn unlock(&mut self, lane: &mut Lane, key: &str) -> Reply<i64> {
        let input = LeaseInput::Unlock {
            key: key.to_owned(),
        };
        let call = async {
            let response = self
                .lock
                .unlock(UnlockRequest {
                    key: key.as_bytes().to_vec(),
                })
                .await?
                .into_inner();
            Ok(response.header.map_or(0, |header| header.revision))
        };
        lane.run(&input, settle(self.timeout, false, call), |&revision| {
            LeaseOutput::Unlock { revision }
        })
        .await
    }

    /// Reads the lock key (when given) and the counter in one read-only Txn. Returns the lock
    /// key's create revision (0: absent) and the counter (0: absent).
    async fn read_counter(&mut self, lane: &mut Lane, lock_key: Option<&str>) -> Reply<(i64, i64)> {
        let input = LeaseInput::ReadCounter {
            lock_key: lock_key.map(str::to_owned),
        };
        let range = |key: &str| RequestOp {
            request: Some(RequestKind::RequestRange(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..RangeRequest::default()
            })),
        };
        let mut success: Vec<RequestOp> = lock_key.into_iter().map(range).collect();
        success.push(range(COUNTER_KEY));
        let request = TxnRequest {
            compare: Vec::new(),
            success,
            failure: Vec::new(),
        };
        let call = async {
            let response = self.kv.txn(request).await?.into_inner();
            let revision = response.header.map_or(0, |header| header.revision);
            let mut ranges = response.responses.into_iter().map(|op| match op.response {
                Some(ResponseKind::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            });
            let lock_create_revision = if lock_key.is_some() {
                ranges.next().flatten().map_or(0, |kv| kv.create_revision)
            } else {
                0
            };
            let value = match ranges.next().flatten() {
                None => 0,
                Some(kv) => String::from_utf8_lossy(&kv.value).parse().map_err(|_| {
                    tonic::Status::internal("the counter holds something else than a number")
                })?,
            };
            Ok((lock_create_revision, value, revision))
        };
        let reply = lane
            .run(
                &input,
                settle(self.timeout, true, call),
                |&(lock_create_revision, value, revision)| LeaseOutput::ReadCounter {
                    lock_create_revision,
                    value,
                    revision,
                },
            )
            .await;
        match reply {
            Reply::Ok((create, value, _)) => Reply::Ok((create, value)),
            Reply::Fail(why) => Reply::Fail(why),
            Reply::Info(why) => Reply::Info(why),
        }
    }

    /// Writes `read + 1` to the counter if `lock_key` still has create revision `fence`.
    async fn increment(
        &mut self,
        lane: &mut Lane,
        lock_key: &str,
        lease: i64,
        fence: i64,
        read: i64,
    ) -> Reply<bool> {
        let input = LeaseInput::Incr {
            lock_key: lock_key.to_owned(),
            lease,
            fence,
            read,
            write: read + 1,
        };
        let request = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal.into(),
                target: CompareTarget::Create.into(),
                key: lock_key.as_bytes().to_vec(),
                target_union: Some(TargetUnion::CreateRevision(fence)),
                ..Compare::default()
            }],
            success: vec![RequestOp {
                request: Some(RequestKind::RequestPut(PutRequest {
                    key: COUNTER_KEY.as_bytes().to_vec(),
                    value: (read + 1).to_string().into_bytes(),
                    ..PutRequest::default()
                })),
            }],
            failure: Vec::new(),
        };
        let call = async {
            let response = self.kv.txn(request).await?.into_inner();
            Ok((
                response.succeeded,
                response.header.map_or(0, |header| header.revision),
            ))
        };
        let reply = lane
            .run(
                &input,
                settle(self.timeout, false, call),
                |&(succeeded, revision)| LeaseOutput::Incr {
                    succeeded,
                    revision,
                },
            )
            .await;
        match reply {
            Reply::Ok((succeeded, _)) => Reply::Ok(succeeded),
            Reply::Fail(why) => Reply::Fail(why),
            Reply::Info(why) => Reply::Info(why),
        }
    }
}

/// The end of the range of every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: to the end of the keyspace.
    vec![0]
}

/// The leases a keeper renews, and those it found gone.
#[derive(Default)]
struct Kept {
    renew: BTreeSet<i64>,
    lost: BTreeSet<i64>,
}

/// One `LeaseKeepAlive` stream, opened on first use and dropped after any error.
struct KeepAliveStream {
    lease: LeaseClient<Channel>,
    open: Option<(
        mpsc::Sender<LeaseKeepAliveRequest>,
        tonic::Streaming<LeaseKeepAliveResponse>,
    )>,
}

impl KeepAliveStream {
    /// Renews `lease` once: sends one request, waits for one response. Returns the TTL.
    async fn renew(&mut self, lease: i64) -> Result<i64, tonic::Status> {
        let request = LeaseKeepAliveRequest { id: lease };
        if let Some((sender, _)) = &self.open {
            sender
                .send(request)
                .await
                .map_err(|_| tonic::Status::unavailable("keepalive stream closed"))?;
        } else {
            let (sender, receiver) = mpsc::channel(KEEPALIVE_QUEUE);
            // The first request goes in before the call is awaited: a member may answer the
            // call only once the stream has carried a message.
            sender
                .send(request)
                .await
                .map_err(|_| tonic::Status::internal("keepalive queue closed"))?;
            let responses = self
                .lease
                .lease_keep_alive(ReceiverStream::new(receiver))
                .await?
                .into_inner();
            self.open = Some((sender, responses));
        }
        let Some((_, responses)) = &mut self.open else {
            return Err(tonic::Status::internal("keepalive stream missing"));
        };
        match responses.message().await? {
            Some(response) => Ok(response.ttl),
            None => Err(tonic::Status::unavailable("keepalive stream ended")),
        }
    }
}

/// A worker's keeper: renews every lease in `kept.renew` every `interval` until the deadline.
/// A lease answered with TTL 0 moves to `kept.lost`.
async fn run_keeper(
    ctx: Arc<Ctx>,
    endpoint: String,
    worker: usize,
    kept: Arc<Mutex<Kept>>,
    interval: Duration,
) -> anyhow::Result<Counts> {
    let mut lane = Lane {
        recorder: Arc::clone(&ctx.recorder),
        process: KEEPER_PROCESS_BASE + worker as u64,
        stride: ctx.concurrency as u64,
        counts: Counts::default(),
    };
    let mut stream = KeepAliveStream {
        lease: LeaseClient::new(channel(&endpoint)?),
        open: None,
    };
    while Instant::now() < ctx.deadline {
        let round_started = Instant::now();
        let leases: Vec<i64> = lock(&kept).renew.iter().copied().collect();
        for lease in leases {
            if Instant::now() >= ctx.deadline {
                break;
            }
            let input = LeaseInput::Keepalive { lease };
            let reply = lane
                .run(
                    &input,
                    settle(ctx.request_timeout, false, stream.renew(lease)),
                    |&ttl| LeaseOutput::Keepalive { ttl },
                )
                .await;
            match reply {
                Reply::Ok(ttl) if ttl <= 0 => {
                    let mut kept = lock(&kept);
                    kept.renew.remove(&lease);
                    kept.lost.insert(lease);
                }
                Reply::Ok(_) => {}
                Reply::Fail(_) | Reply::Info(_) => stream.open = None,
            }
        }
        ctx.sleep_within(interval.saturating_sub(round_started.elapsed()))
            .await;
    }
    Ok(lane.counts)
}

/// What a key worker means to do with a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Renewed until `until`, then left to lapse.
    Keep,
    /// Never renewed.
    Lapse,
    /// Renewed until `until`, then revoked.
    Revoke,
}

/// A lease a key worker granted and still uses.
struct Owned {
    id: i64,
    plan: Plan,
    granted: Instant,
    /// End of the renewals (keep, revoke); for lapse, when puts under it stop.
    until: Instant,
}

/// Everything the final phase needs from the workers.
#[derive(Default)]
struct Registry {
    /// Every lease whose grant did not certainly fail, with its TTL.
    leases: BTreeMap<i64, i64>,
}

/// Runs the workload live: workers until the deadline, the heal, the final phase, the checks.
///
/// # Errors
/// When a client cannot be made, a worker panics, or the history cannot be read back.
pub async fn run(ctx: Arc<Ctx>, options: &LeaseOptions) -> anyhow::Result<WorkloadReport> {
    anyhow::ensure!(
        options.key_ttl_secs > 0 && options.lock_ttl_secs > 0,
        "lease TTLs must be positive"
    );
    anyhow::ensure!(
        options.leases_per_worker > 0,
        "a key worker needs at least one lease"
    );
    let registry = Arc::new(Mutex::new(Registry::default()));
    let mut workers = JoinSet::new();
    let nodes = ctx.cluster.len();
    for worker in 0..ctx.concurrency {
        let endpoint = ctx.cluster.endpoint(worker % nodes);
        let kept = Arc::new(Mutex::new(Kept::default()));
        // Alternate rounds of workers over the members take the two halves.
        let locker = (worker / nodes) % 2 == 1;
        let ttl = if locker {
            options.lock_ttl_secs
        } else {
            options.key_ttl_secs
        };
        let interval = Duration::from_secs(u64::try_from(ttl).unwrap_or(1)) / RENEWALS_PER_TTL;
        workers.spawn(run_keeper(
            Arc::clone(&ctx),
            endpoint.clone(),
            worker,
            Arc::clone(&kept),
            interval,
        ));
        let services = Services::new(&endpoint, ctx.request_timeout)?;
        if locker {
            workers.spawn(run_locker(
                Arc::clone(&ctx),
                options.clone(),
                services,
                worker,
                kept,
                Arc::clone(&registry),
            ));
        } else {
            workers.spawn(run_key_worker(
                Arc::clone(&ctx),
                options.clone(),
                services,
                worker,
                kept,
                Arc::clone(&registry),
            ));
        }
    }
    let mut counts = Counts::default();
    while let Some(joined) = workers.join_next().await {
        counts.merge(joined.context("a worker panicked")??);
    }
    eprintln!("workload done ({} operations)", counts.total());
    ctx.end_faults().await;
    let leases = std::mem::take(&mut lock(&registry).leases);
    let mut problems = final_phase(&ctx, &leases, &mut counts).await?;
    ctx.recorder.flush()?;
    let path = ctx.run_dir.join("history.jsonl");
    eprintln!("checking {}", path.display());
    let started = Instant::now();
    let (mut lease_check, mut lock_check) = tokio::task::spawn_blocking(move || {
        let history = parse(std::io::BufReader::new(std::fs::File::open(&path)?))?;
        anyhow::Ok((check_leases(&history), check_lock(&history)))
    })
    .await
    .context("the checker panicked")??;
    let check_secs = started.elapsed().as_secs_f64();
    lease_check.details["check_secs"] = json!(check_secs);
    lock_check.details["check_secs"] = json!(check_secs);
    if ctx.concurrency < 2 * nodes {
        problems.push(format!(
            "{} workers on {nodes} members leave one half of the workload without workers",
            ctx.concurrency
        ));
    }
    Ok(WorkloadReport {
        counts,
        required: REQUIRED.iter().map(|&f| f.to_owned()).collect(),
        checks: vec![lease_check, lock_check],
        problems,
    })
}

/// A key worker: grants leases with plans, puts keys under them, reads, asks `TimeToLive`, and
/// revokes; its keeper renews the leases planned to be renewed.
async fn run_key_worker(
    ctx: Arc<Ctx>,
    options: LeaseOptions,
    mut services: Services,
    worker: usize,
    kept: Arc<Mutex<Kept>>,
    registry: Arc<Mutex<Registry>>,
) -> anyhow::Result<Counts> {
    let mut rng = SeededRng::fork(ctx.seed, worker as u64);
    let mut lane = Lane {
        recorder: Arc::clone(&ctx.recorder),
        process: worker as u64,
        stride: ctx.concurrency as u64,
        counts: Counts::default(),
    };
    let ttl = options.key_ttl_secs;
    let ttl_duration = Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
    let mut owned: Vec<Owned> = Vec::new();
    let mut next_lease = 0_i64;
    let mut next_key = 0_u64;
    // Each operation takes at least one pause or one round trip; the bound only guards against
    // a clock that never advances.
    for _ in 0..10_000_000_u64 {
        if ctx.pace(&mut rng).await {
            break;
        }
        let now = Instant::now();
        // Leases whose time is up: keep leases are left to lapse, lapse leases stop taking keys.
        owned.retain(|lease| match lease.plan {
            Plan::Keep if now >= lease.until => {
                lock(&kept).renew.remove(&lease.id);
                false
            }
            Plan::Lapse => now < lease.until,
            Plan::Keep | Plan::Revoke => true,
        });
        let reply_ok = if owned.len() < options.leases_per_worker {
            next_lease += 1;
            let id = lease_id(worker, next_lease);
            let roll = rng.next_u64() % 100;
            let plan = if roll < PLAN_KEEP_PERCENT {
                Plan::Keep
            } else if roll < PLAN_KEEP_PERCENT + PLAN_LAPSE_PERCENT {
                Plan::Lapse
            } else {
                Plan::Revoke
            };
            let until = now
                + match plan {
                    Plan::Keep => rng.duration_between(KEEP_SPAN_MIN, KEEP_SPAN_MAX),
                    Plan::Revoke => rng.duration_between(REVOKE_AFTER_MIN, REVOKE_AFTER_MAX),
                    // Puts stop at half the TTL, so most of them land before it lapses.
                    Plan::Lapse => ttl_duration / 2,
                };
            let reply = services.grant(&mut lane, id, ttl).await;
            if !matches!(reply, Reply::Fail(_)) {
                lock(&registry).leases.insert(id, ttl);
            }
            if let Reply::Ok(_) = reply {
                if plan != Plan::Lapse {
                    lock(&kept).renew.insert(id);
                }
                owned.push(Owned {
                    id,
                    plan,
                    granted: now,
                    until,
                });
                true
            } else {
                false
            }
        } else if let Some(index) = owned
            .iter()
            .position(|lease| lease.plan == Plan::Revoke && now >= lease.until)
        {
            let lease = owned.swap_remove(index);
            lock(&kept).renew.remove(&lease.id);
            matches!(services.revoke(&mut lane, lease.id).await, Reply::Ok(_))
        } else {
            let roll = rng.next_u64() % 100;
            if roll < READ_PERCENT {
                matches!(services.read(&mut lane, KEY_PREFIX).await, Reply::Ok(_))
            } else if roll < READ_PERCENT + PUT_PERCENT {
                let lease = owned[rng.below(owned.len())].id;
                next_key += 1;
                let key = format!("{KEY_PREFIX}{worker}/{next_key}");
                matches!(services.put(&mut lane, &key, lease).await, Reply::Ok(_))
            } else {
                // The oldest lease is the most likely to be near its end.
                let lease = owned
                    .iter()
                    .min_by_key(|lease| lease.granted)
                    .map_or(0, |lease| lease.id);
                matches!(services.time_to_live(&mut lane, lease).await, Reply::Ok(_))
            }
        };
        // A lease the keeper found gone takes no more keys.
        let lost: BTreeSet<i64> = std::mem::take(&mut lock(&kept).lost);
        owned.retain(|lease| !lost.contains(&lease.id));
        if !reply_ok {
            ctx.sleep_within(ERROR_BACKOFF).await;
        }
    }
    lock(&kept).renew.clear();
    Ok(lane.counts)
}

/// A lease id of `worker`'s own: the worker in the high bits, so no two workers pick the same;
/// always a positive int63 as etcd requires.
fn lease_id(worker: usize, sequence: i64) -> i64 {
    (i64::try_from(worker).unwrap_or(0) + 1) << 32 | (sequence & 0xffff_ffff)
}

/// A lock worker: under a lease its keeper renews, takes the lock, reads the counter, writes it
/// plus one fenced by the lock key, unlocks; and records each hold.
async fn run_locker(
    ctx: Arc<Ctx>,
    options: LeaseOptions,
    mut services: Services,
    worker: usize,
    kept: Arc<Mutex<Kept>>,
    registry: Arc<Mutex<Registry>>,
) -> anyhow::Result<Counts> {
    let mut rng = SeededRng::fork(ctx.seed, worker as u64);
    let mut lane = Lane {
        recorder: Arc::clone(&ctx.recorder),
        process: worker as u64,
        stride: ctx.concurrency as u64,
        counts: Counts::default(),
    };
    let hold_process = HOLD_PROCESS_BASE + worker as u64;
    let ttl = options.lock_ttl_secs;
    // Waiting for the lock may take up to a holder's lease lapsing (when it was paused) on top
    // of a request's own time.
    let lock_timeout = ctx.request_timeout + Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
    let mut lease: Option<i64> = None;
    let mut next_lease = 0_i64;
    for _ in 0..10_000_000_u64 {
        if ctx.pace(&mut rng).await {
            break;
        }
        let lost = std::mem::take(&mut lock(&kept).lost);
        if lease.is_some_and(|id| lost.contains(&id)) {
            lease = None;
        }
        let Some(id) = lease else {
            next_lease += 1;
            let id = lease_id(worker, next_lease);
            let reply = services.grant(&mut lane, id, ttl).await;
            if !matches!(reply, Reply::Fail(_)) {
                lock(&registry).leases.insert(id, ttl);
            }
            if let Reply::Ok(_) = reply {
                lock(&kept).renew.insert(id);
                lease = Some(id);
            } else {
                ctx.sleep_within(ERROR_BACKOFF).await;
            }
            continue;
        };
        let (key, keep_lease) = match services.lock(&mut lane, id, lock_timeout).await {
            Reply::Ok((key, _)) => {
                let kept_lease = hold(
                    &ctx,
                    &mut services,
                    &mut lane,
                    hold_process,
                    &key,
                    id,
                    &kept,
                )
                .await;
                (key, kept_lease)
            }
            Reply::Fail(_) => {
                ctx.sleep_within(ERROR_BACKOFF).await;
                continue;
            }
            // The lock may be ours without our knowing; give the lease up so it does not block
            // the others until the end.
            Reply::Info(_) => (String::new(), false),
        };
        if !keep_lease {
            lock(&kept).renew.remove(&id);
            lease = None;
            let _ = services.revoke(&mut lane, id).await;
            if !key.is_empty() {
                ctx.sleep_within(ERROR_BACKOFF).await;
            }
        }
    }
    lock(&kept).renew.clear();
    Ok(lane.counts)
}

/// One hold of the lock `key` under `lease`: read the counter, write it plus one fenced by the
/// key, unlock. Returns whether the lease may be used again (the unlock happened).
async fn hold(
    ctx: &Ctx,
    services: &mut Services,
    lane: &mut Lane,
    hold_process: u64,
    key: &str,
    lease: i64,
    kept: &Mutex<Kept>,
) -> bool {
    ctx.recorder.invoke(
        hold_process,
        &LeaseInput::Hold {
            key: key.to_owned(),
            lease,
        },
    );
    let mut end = HoldEnd::Unlock;
    match services.read_counter(lane, Some(key)).await {
        Reply::Ok((0, _)) => end = HoldEnd::LeaseLost,
        Reply::Ok((fence, value)) => {
            let _ = services.increment(lane, key, lease, fence, value).await;
        }
        Reply::Fail(_) | Reply::Info(_) => {}
    }
    if lock(kept).lost.contains(&lease) {
        end = HoldEnd::LeaseLost;
    }
    ctx.recorder.ok(hold_process, &LeaseOutput::Hold { end });
    lane.counts.add("hold", "ok", None);
    matches!(services.unlock(lane, key).await, Reply::Ok(_))
}

/// The final phase: `TimeToLive` of every lease until all are gone (or past their TTL plus the
/// grace), then reads of the leased keys, the lock keys and the counter through every member.
/// Returns the problems found (members never read, leases never seen gone).
async fn final_phase(
    ctx: &Ctx,
    leases: &BTreeMap<i64, i64>,
    counts: &mut Counts,
) -> anyhow::Result<Vec<String>> {
    let nodes = ctx.cluster.len();
    let mut services: Vec<Services> = (0..nodes)
        .map(|node| Services::new(&ctx.cluster.endpoint(node), ctx.request_timeout))
        .collect::<anyhow::Result<_>>()?;
    let mut lanes: Vec<Lane> = (0..nodes)
        .map(|node| Lane {
            recorder: Arc::clone(&ctx.recorder),
            process: FINAL_PROCESS_BASE + node as u64,
            stride: nodes as u64,
            counts: Counts::default(),
        })
        .collect();
    let started = Instant::now();
    let ttl_max = leases.values().copied().max().unwrap_or(0);
    let poll_until = started
        + Duration::from_secs(u64::try_from(ttl_max).unwrap_or(0))
        + Duration::from_nanos(EXPIRY_GRACE_NANOS)
        + FINAL_POLL_OVERRUN;
    let mut pending: Vec<i64> = leases.keys().copied().collect();
    let mut turn = 0_usize;
    eprintln!(
        "final phase: waiting for {} leases to expire",
        pending.len()
    );
    loop {
        let mut still = Vec::new();
        for lease in pending {
            let node = turn % nodes;
            turn += 1;
            match services[node].time_to_live(&mut lanes[node], lease).await {
                Reply::Ok(LeaseOutput::Ttl { ttl, .. }) if ttl < 0 => {}
                _ => still.push(lease),
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() > poll_until {
            break;
        }
        tokio::time::sleep(FINAL_POLL_PAUSE).await;
    }
    let mut problems = Vec::new();
    for node in 0..nodes {
        let (service, lane) = (&mut services[node], &mut lanes[node]);
        for read in [
            FinalRead::Prefix(KEY_PREFIX),
            FinalRead::Prefix(LOCK_PREFIX),
            FinalRead::Counter,
        ] {
            if !final_read(service, lane, read).await {
                problems.push(format!(
                    "no final read of {read:?} through {} succeeded",
                    ctx.cluster.name(node)
                ));
            }
        }
    }
    for lane in lanes {
        counts.merge(lane.counts);
    }
    Ok(problems)
}

/// What a final read reads.
#[derive(Clone, Copy, Debug)]
enum FinalRead {
    /// Every key under a prefix.
    Prefix(&'static str),
    /// The counter.
    Counter,
}

/// Runs a final read up to [`FINAL_READ_ATTEMPTS`] times until it succeeds; returns whether it
/// did.
async fn final_read(service: &mut Services, lane: &mut Lane, read: FinalRead) -> bool {
    for attempt in 0..FINAL_READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(FINAL_READ_RETRY_PAUSE).await;
        }
        let ok = match read {
            FinalRead::Prefix(prefix) => matches!(service.read(lane, prefix).await, Reply::Ok(_)),
            FinalRead::Counter => matches!(service.read_counter(lane, None).await, Reply::Ok(_)),
        };
        if ok {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end("l/"), b"l0".to_vec());
        assert_eq!(prefix_end("lk/"), b"lk0".to_vec());
        assert!(b"lk/counter/1".as_slice() >= b"lk/".as_slice());
        assert!(b"lk/counter/1".as_slice() < prefix_end("lk/").as_slice());
        assert!(b"l/0/1".as_slice() < prefix_end("l/").as_slice());
        // Lock keys are not leased keys: the two prefixes do not overlap.
        assert!(b"lk/counter/1".as_slice() >= prefix_end("l/").as_slice());
    }

    #[test]
    fn lease_ids_are_positive_and_distinct_across_workers() {
        let ids: BTreeSet<i64> = (0..8)
            .flat_map(|worker| (1..100).map(move |sequence| lease_id(worker, sequence)))
            .collect();
        assert_eq!(ids.len(), 8 * 99);
        assert!(ids.iter().all(|&id| id > 0));
    }
}
