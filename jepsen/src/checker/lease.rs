//! The lease and lock checkers: what a history of the `lease` workload must show about keys
//! under leases, and about a counter guarded by locks.
//!
//! Owns the workload's history vocabulary ([`LeaseInput`], [`LeaseOutput`]), its reader
//! ([`parse`]) and two verdicts:
//! - [`check_leases`] (`lease`): (a) no early expiry, (b) expiry happens, (c) keys do not outlive
//!   their lease, (d) `TimeToLive` never exceeds the granted TTL;
//! - [`check_lock`] (`lock`): fenced mutual exclusion of the counter.
//!
//! Must not: talk to members or know how the history was recorded; both checkers are pure
//! functions of a [`History`], so a saved run can be judged again offline.
//!
//! # What a renewal proves
//! A member renews a lease at some instant inside the keepalive's interval, so after its call:
//! the lease then lives at least a TTL from that instant, hence at least until `call + TTL`. A
//! lease never comes back once gone, so a successful renewal (or the grant) also proves the lease
//! was alive at every moment before it. As seen at time `t`, a lease `L` is therefore alive up to
//! `alive_until(L, t)`: the latest call among its `ok` grant and keepalives (TTL > 0) that
//! *completed before `t`*, plus the granted TTL — unless a revoke of `L` took effect first. A
//! revoke that did not certainly fail may take effect any time after its call. (Counting only
//! renewals completed before `t` is what a client could know at `t`; it also keeps one late,
//! wrongly granted renewal from indicting every read before it.)
//!
//! A linearizable read takes effect somewhere inside its interval, so a read proves something
//! about an instant only if its whole interval lies on the right side of it: a key must be
//! present in a read that started after its put and the renewal completed and that *completed*
//! before `alive_until(L, start) - slack`. A read that merely started before that bound may take
//! effect after a legitimate expiry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::history::jsonl::{self, ModelName};
use crate::history::{History, Op, Outcome, ParseError, RETURN_NEVER, Time};
use crate::model::FunctionName;
use crate::workload::{CheckResult, Validity};

/// Nanoseconds in a second: history times are nanoseconds since the run started.
pub const NANOS_PER_SEC: Time = 1_000_000_000;

/// Allowance for clock granularity when comparing a lease deadline with history times.
///
/// The harness stamps times from the host's `CLOCK_MONOTONIC` (Rust's `Instant`, nanosecond
/// resolution), and the members on the same host reckon lease deadlines from the same clock, as
/// etcd does with Go's monotonic reading. A call is stamped before its request leaves and a
/// completion after its response arrives, so every other delay (network, scheduling, pauses,
/// the lessor's tick) only makes an expiry *later* than the bound, never earlier. What remains is
/// granularity: timer wheels round to whole milliseconds, and a deadline computed in one unit and
/// compared in another can land a tick early. One millisecond covers it.
pub const EXPIRY_SLACK_NANOS: Time = 1_000_000;

/// How long after the final phase starts, beyond a lease's TTL, it may take for the lease to be
/// gone (`TimeToLive` -1 and its keys absent).
///
/// The final phase starts after every fault is healed and the workers have stopped renewing, so
/// a lease's last renewal lies before it and its deadline at most a TTL later. On top of that a
/// member may legitimately take: a leader election after the heal, whose winner restarts every
/// lease at its full TTL from its takeover (etcd adds an election timeout, 1 s with the
/// harness's members), so the election's length moves the deadline; one tick of the leader's
/// expiry loop (0.5 s in mnemo, 0.5 s in etcd), the revoke's commit, and one retry of a revoke
/// proposal that was lost with a leader (3 s in mnemo). Five seconds covers that sum unless an
/// election and a lost revoke come together after the heal, which the harness's quiet final
/// phase makes rare.
pub const EXPIRY_GRACE_NANOS: Time = 5 * NANOS_PER_SEC;

/// Violations quoted in a verdict's explanation; the rest are only counted.
const EXPLAINED_MAX: usize = 8;

/// Process ids at or above this belong to the final phase
/// ([`crate::workload::FINAL_PROCESS_BASE`]).
pub const FINAL_PROCESS_BASE: u64 = crate::workload::FINAL_PROCESS_BASE;

/// A request of the `lease` workload. The `"f"` field names the function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum LeaseInput {
    /// `LeaseGrant` with an id chosen by the client (so an unknown grant still names its lease).
    Grant {
        /// The lease id asked for.
        lease: i64,
        /// The TTL asked for, seconds.
        ttl: i64,
    },
    /// Put of a fresh key (never written before) attached to `lease`.
    Put {
        /// The key.
        key: String,
        /// Its lease.
        lease: i64,
    },
    /// One renewal over a `LeaseKeepAlive` stream.
    Keepalive {
        /// The lease.
        lease: i64,
    },
    /// `LeaseRevoke`.
    Revoke {
        /// The lease.
        lease: i64,
    },
    /// `LeaseTimeToLive` with keys.
    Ttl {
        /// The lease.
        lease: i64,
    },
    /// A linearizable Range of every key under `prefix`.
    Read {
        /// The prefix.
        prefix: String,
    },
    /// Lock (v3lock) of `name` under `lease`.
    Lock {
        /// The lock's name.
        name: String,
        /// The holder's lease.
        lease: i64,
    },
    /// Not a request: the time a worker believed it held the lock, from the Lock's response to
    /// just before its Unlock (or to when it gave up on the lock).
    Hold {
        /// The lock key the Lock returned.
        key: String,
        /// The holder's lease.
        lease: i64,
    },
    /// A linearizable read-only Txn of the lock key (when given) and the counter.
    ReadCounter {
        /// The lock key, for a holder's read; `None` for a final read of the counter alone.
        lock_key: Option<String>,
    },
    /// A Txn that writes `read + 1` to the counter if the lock key still has create revision
    /// `fence` (the holder's fencing token).
    Incr {
        /// The lock key.
        lock_key: String,
        /// Its lease.
        lease: i64,
        /// Its create revision, as read under the lock.
        fence: i64,
        /// The counter value read under the lock.
        read: i64,
        /// The value written: always `read + 1`.
        write: i64,
    },
    /// Unlock of a lock key.
    Unlock {
        /// The lock key.
        key: String,
    },
}

/// A key-value a read returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedKv {
    /// The key.
    pub key: String,
    /// Its lease (0: none).
    pub lease: i64,
    /// Its mod revision.
    pub mod_revision: i64,
}

/// How a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldEnd {
    /// The worker went on to Unlock.
    Unlock,
    /// The worker learned its lease was gone (keepalive TTL 0, or its lock key absent).
    LeaseLost,
    /// The workload's time was up.
    Stopped,
}

/// A response of the `lease` workload; its `"f"` matches the request's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum LeaseOutput {
    /// The granted lease and TTL (a member raises a small TTL to its minimum).
    Grant {
        /// The lease.
        lease: i64,
        /// The granted TTL, seconds.
        ttl: i64,
    },
    /// The put's revision.
    Put {
        /// Header revision.
        revision: i64,
    },
    /// The keepalive's answer: the granted TTL, or 0 when the lease is unknown or expired.
    Keepalive {
        /// TTL, seconds.
        ttl: i64,
    },
    /// The revoke happened.
    Revoke {
        /// Header revision.
        revision: i64,
    },
    /// `TimeToLive`'s answer: remaining seconds (-1: unknown lease), granted TTL, keys.
    Ttl {
        /// Remaining seconds.
        ttl: i64,
        /// Granted TTL.
        granted: i64,
        /// Attached keys.
        keys: Vec<String>,
    },
    /// Every key under the prefix.
    Read {
        /// Header revision.
        revision: i64,
        /// The keys, in key order.
        kvs: Vec<LeasedKv>,
    },
    /// The lock key.
    Lock {
        /// The key.
        key: String,
        /// Header revision.
        revision: i64,
    },
    /// How the hold ended.
    Hold {
        /// Why.
        end: HoldEnd,
    },
    /// The lock key's create revision (0 when absent or not asked) and the counter (0 when
    /// absent).
    ReadCounter {
        /// Create revision of the lock key.
        lock_create_revision: i64,
        /// The counter.
        value: i64,
        /// Header revision.
        revision: i64,
    },
    /// Whether the fence held (and so the write happened).
    Incr {
        /// The compare held.
        succeeded: bool,
        /// Header revision.
        revision: i64,
    },
    /// The unlock happened.
    Unlock {
        /// Header revision.
        revision: i64,
    },
}

impl LeaseInput {
    /// The function name, as in `"f"`.
    #[must_use]
    pub fn function(&self) -> &'static str {
        match self {
            LeaseInput::Grant { .. } => "grant",
            LeaseInput::Put { .. } => "put",
            LeaseInput::Keepalive { .. } => "keepalive",
            LeaseInput::Revoke { .. } => "revoke",
            LeaseInput::Ttl { .. } => "ttl",
            LeaseInput::Read { .. } => "read",
            LeaseInput::Lock { .. } => "lock",
            LeaseInput::Hold { .. } => "hold",
            LeaseInput::ReadCounter { .. } => "read-counter",
            LeaseInput::Incr { .. } => "incr",
            LeaseInput::Unlock { .. } => "unlock",
        }
    }
}

impl LeaseOutput {
    /// The function name, as in `"f"`.
    #[must_use]
    pub fn function(&self) -> &'static str {
        match self {
            LeaseOutput::Grant { .. } => "grant",
            LeaseOutput::Put { .. } => "put",
            LeaseOutput::Keepalive { .. } => "keepalive",
            LeaseOutput::Revoke { .. } => "revoke",
            LeaseOutput::Ttl { .. } => "ttl",
            LeaseOutput::Read { .. } => "read",
            LeaseOutput::Lock { .. } => "lock",
            LeaseOutput::Hold { .. } => "hold",
            LeaseOutput::ReadCounter { .. } => "read-counter",
            LeaseOutput::Incr { .. } => "incr",
            LeaseOutput::Unlock { .. } => "unlock",
        }
    }
}

/// An operation of this vocabulary.
pub type LeaseOp = Op<LeaseInput, LeaseOutput>;

/// Reads a `lease` history written by [`crate::history::recorder`]: the header must name the
/// `lease` model; `nemesis` lines are skipped.
///
/// # Errors
/// On I/O failure, a wrong header, or an event that is malformed or breaks the pairing rules.
pub fn parse(reader: impl BufRead) -> Result<History<LeaseInput, LeaseOutput>, ParseError> {
    jsonl::parse_model(reader, ModelName::Lease)
}

impl FunctionName for LeaseInput {
    fn function_name(&self) -> &'static str {
        self.function()
    }
}

impl FunctionName for LeaseOutput {
    fn function_name(&self) -> &'static str {
        self.function()
    }
}

/// A time as seconds since the run started, for explanations.
fn secs(time: Time) -> String {
    if time == RETURN_NEVER {
        "never".to_owned()
    } else {
        #[allow(clippy::cast_precision_loss)]
        let seconds = time as f64 / 1e9;
        format!("{seconds:.3}s")
    }
}

fn ttl_nanos(ttl_secs: i64) -> Time {
    Time::try_from(ttl_secs)
        .unwrap_or(0)
        .saturating_mul(NANOS_PER_SEC)
}

/// What the history proves about one lease.
#[derive(Clone, Debug, Default)]
struct LeaseFacts {
    /// The granted TTL (the asked one when the grant's outcome is unknown), seconds.
    ttl: i64,
    /// Whether the grant's outcome is unknown (else it was `ok`; failed grants have no facts).
    grant_unknown: bool,
    /// When the `ok` grant completed: from then on the lease certainly existed.
    granted_at: Option<Time>,
    /// `(call, completion)` of the `ok` grant and every `ok` renewal with TTL > 0.
    renewals: Vec<(Time, Time)>,
    /// Earliest call of a revoke that did not certainly fail.
    revoke_from: Option<Time>,
    /// Earliest completion of an `ok` revoke, keepalive TTL 0 or `TimeToLive` -1: from then on the
    /// lease is certainly gone.
    gone_at: Option<Time>,
}

impl LeaseFacts {
    /// The latest call of a renewal (or the grant) that completed before `known_at`.
    fn renewed_call(&self, known_at: Time) -> Option<Time> {
        self.renewals
            .iter()
            .filter(|&&(_, ret)| ret < known_at)
            .map(|&(call, _)| call)
            .max()
    }

    /// As known at `known_at`, the lease is certainly alive up to (not including) this time,
    /// unless revoked.
    fn alive_until(&self, known_at: Time) -> Option<Time> {
        self.renewed_call(known_at)
            .map(|call| call.saturating_add(ttl_nanos(self.ttl)))
    }

    /// Whether the history proves the lease alive over the whole of `[from, to]`, from what
    /// was known at `from`.
    fn surely_alive(&self, from: Time, to: Time) -> bool {
        let (Some(granted_at), Some(alive_until)) = (self.granted_at, self.alive_until(from))
        else {
            return false;
        };
        granted_at < from
            && to.saturating_add(EXPIRY_SLACK_NANOS) < alive_until
            && self.revoke_from.is_none_or(|revoke| revoke > to)
    }
}

/// Every lease in the history and what it proves about each.
fn lease_facts(ops: &[LeaseOp]) -> BTreeMap<i64, LeaseFacts> {
    let mut facts: BTreeMap<i64, LeaseFacts> = BTreeMap::new();
    for op in ops {
        if let LeaseInput::Grant { lease, ttl } = &op.input {
            let entry = facts.entry(*lease).or_default();
            if let Outcome::Returned(LeaseOutput::Grant { ttl: granted, .. }) = &op.output {
                entry.ttl = *granted;
                entry.granted_at = Some(op.ret);
                entry.renewals.push((op.call, op.ret));
            } else {
                entry.ttl = *ttl;
                entry.grant_unknown = true;
            }
        }
    }
    for op in ops {
        let earliest = |slot: &mut Option<Time>, time: Time| {
            *slot = Some(slot.map_or(time, |known| known.min(time)));
        };
        match (&op.input, &op.output) {
            (
                LeaseInput::Keepalive { lease },
                Outcome::Returned(LeaseOutput::Keepalive { ttl }),
            ) => {
                let Some(entry) = facts.get_mut(lease) else {
                    continue;
                };
                if *ttl > 0 {
                    entry.renewals.push((op.call, op.ret));
                } else {
                    earliest(&mut entry.gone_at, op.ret);
                }
            }
            (LeaseInput::Ttl { lease }, Outcome::Returned(LeaseOutput::Ttl { ttl, .. }))
                if *ttl < 0 =>
            {
                if let Some(entry) = facts.get_mut(lease) {
                    earliest(&mut entry.gone_at, op.ret);
                }
            }
            (LeaseInput::Revoke { lease }, output) => {
                if let Some(entry) = facts.get_mut(lease) {
                    earliest(&mut entry.revoke_from, op.call);
                    if matches!(output, Outcome::Returned(_)) {
                        earliest(&mut entry.gone_at, op.ret);
                    }
                }
            }
            _ => {}
        }
    }
    facts
}

/// Collected violations, counted and a few explained.
#[derive(Default)]
struct Findings {
    by_kind: BTreeMap<&'static str, u64>,
    explained: Vec<String>,
}

impl Findings {
    fn add(&mut self, kind: &'static str, explanation: impl FnOnce() -> String) {
        *self.by_kind.entry(kind).or_default() += 1;
        if self.explained.len() < EXPLAINED_MAX {
            self.explained.push(format!("{kind}: {}", explanation()));
        }
    }

    fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Invalid with any violation, else unknown with any non-vacuity problem, else valid.
    fn validity(&self, problems: &[String]) -> Validity {
        if self.total() > 0 {
            Validity::Invalid
        } else if !problems.is_empty() {
            Validity::Unknown
        } else {
            Validity::Valid
        }
    }

    /// `"N <what> violations (kind xM, ...)"`.
    fn violations_text(&self, what: &str) -> String {
        format!(
            "{} {what} violations ({})",
            self.total(),
            self.by_kind
                .iter()
                .map(|(kind, count)| format!("{kind} x{count}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The `lease` checker over `history`.
///
/// (a) **No early expiry.** A lease is alive until `alive_until` (see the module header) unless
/// revoked; while it surely is, a read that completed before `alive_until - slack`, started after
/// a key's `ok` put under it, and started after the grant completed, must contain that key, and
/// no keepalive may answer TTL 0 and no `TimeToLive` -1.
/// (b) **Expiry happens.** Once the final phase starts (the first operation of a final-phase
/// process), every lease whose grant did not fail must be seen gone (`TimeToLive` -1) by its TTL
/// plus [`EXPIRY_GRACE_NANOS`]: a `TimeToLive` called later that still finds it is a violation,
/// and a lease never seen gone at all makes the verdict unknown. The final reads, which follow,
/// must hold no leased key.
/// (c) **Keys do not outlive their lease.** A read that starts after a lease was certainly gone
/// (an `ok` revoke, keepalive TTL 0 or `TimeToLive` -1 completed) holds none of its keys.
/// (d) **`TimeToLive` is bounded.** It never reports more than the granted TTL, and reports the
/// granted TTL itself as the grant did.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn check_leases(history: &History<LeaseInput, LeaseOutput>) -> CheckResult {
    let ops = history.ops();
    let facts = lease_facts(ops);
    let mut findings = Findings::default();
    let mut problems: Vec<String> = Vec::new();
    // Keys put with an `ok` answer: key → (lease, completion of the put).
    let mut puts: BTreeMap<&str, (i64, Time)> = BTreeMap::new();
    for op in ops {
        if let (LeaseInput::Put { key, lease }, Outcome::Returned(_)) = (&op.input, &op.output) {
            puts.insert(key.as_str(), (*lease, op.ret));
        }
    }
    let mut reads_checked = 0_u64;
    let mut presences_checked = 0_u64;
    let mut absences_allowed = 0_u64;
    for op in ops {
        let Outcome::Returned(output) = &op.output else {
            continue;
        };
        match (&op.input, output) {
            (LeaseInput::Read { prefix }, LeaseOutput::Read { kvs, revision }) => {
                reads_checked += 1;
                let present: BTreeSet<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
                // (a): every key whose lease surely lived through this read is in it.
                for (key, &(lease, put_ret)) in &puts {
                    if put_ret >= op.call || !key.starts_with(prefix.as_str()) {
                        continue;
                    }
                    let Some(lease_facts) = facts.get(&lease) else {
                        continue;
                    };
                    if lease_facts.surely_alive(op.call, op.ret) {
                        presences_checked += 1;
                        if !present.contains(key) {
                            findings.add("early-expiry", || {
                                format!(
                                    "key {key} of lease {lease} (put ok at {}) is missing from \
                                     the read [{}, {}] at revision {revision}, but the lease was \
                                     renewed with a call at {} (completed before the read started) \
                                     and TTL {}s, so it lives until at least {}, and no revoke was \
                                     sent before the read ended",
                                    secs(put_ret),
                                    secs(op.call),
                                    secs(op.ret),
                                    secs(lease_facts.renewed_call(op.call).unwrap_or(0)),
                                    lease_facts.ttl,
                                    secs(lease_facts.alive_until(op.call).unwrap_or(0)),
                                )
                            });
                        }
                    } else if !present.contains(key) {
                        absences_allowed += 1;
                    }
                }
                // (c): nothing of a lease that was certainly gone before the read started.
                for kv in kvs {
                    if kv.lease == 0 {
                        continue;
                    }
                    if let Some(gone_at) = facts.get(&kv.lease).and_then(|f| f.gone_at)
                        && gone_at < op.call
                    {
                        findings.add("key-outlived-lease", || {
                            format!(
                                "key {} of lease {} is in the read [{}, {}] at revision \
                                 {revision}, but the lease was certainly gone (revoke ok, \
                                 keepalive TTL 0 or TimeToLive -1) at {}",
                                kv.key,
                                kv.lease,
                                secs(op.call),
                                secs(op.ret),
                                secs(gone_at)
                            )
                        });
                    }
                }
            }
            (LeaseInput::Keepalive { lease }, LeaseOutput::Keepalive { ttl }) if *ttl <= 0 => {
                if let Some(lease_facts) = facts.get(lease)
                    && lease_facts.surely_alive(op.call, op.ret)
                {
                    findings.add("early-expiry", || {
                        format!(
                            "keepalive [{}, {}] of lease {lease} answered TTL 0 (not found), but \
                             the lease lives until at least {}",
                            secs(op.call),
                            secs(op.ret),
                            secs(lease_facts.alive_until(op.call).unwrap_or(0))
                        )
                    });
                }
            }
            (LeaseInput::Ttl { lease }, LeaseOutput::Ttl { ttl, granted, .. }) => {
                let Some(lease_facts) = facts.get(lease) else {
                    continue;
                };
                if *ttl < 0 && lease_facts.surely_alive(op.call, op.ret) {
                    findings.add("early-expiry", || {
                        format!(
                            "TimeToLive [{}, {}] of lease {lease} answered -1 (not found), but \
                             the lease lives until at least {}",
                            secs(op.call),
                            secs(op.ret),
                            secs(lease_facts.alive_until(op.call).unwrap_or(0))
                        )
                    });
                }
                // (d): never above what was granted.
                if *ttl > lease_facts.ttl || (*ttl >= 0 && *granted != lease_facts.ttl) {
                    findings.add("ttl-above-granted", || {
                        format!(
                            "TimeToLive [{}, {}] of lease {lease} answered TTL {ttl}s, granted \
                             {granted}s, but the lease was granted {}s",
                            secs(op.call),
                            secs(op.ret),
                            lease_facts.ttl
                        )
                    });
                }
            }
            _ => {}
        }
    }
    // (a) for lock keys: a holder's own lock key stays while its lease surely lives, until it
    // unlocks.
    check_lock_keys_present(ops, &facts, &mut findings);
    // (b): expiry happens, and the final reads hold no leased key.
    let final_start = ops
        .iter()
        .filter(|op| op.process >= FINAL_PROCESS_BASE)
        .map(|op| op.call)
        .min();
    let mut leases_seen_gone = 0_u64;
    match final_start {
        None => problems.push("the history has no final phase".to_owned()),
        Some(final_start) => {
            for (lease, lease_facts) in &facts {
                let deadline = final_start
                    .saturating_add(ttl_nanos(lease_facts.ttl))
                    .saturating_add(EXPIRY_GRACE_NANOS);
                let mut seen_gone = false;
                for op in ops.iter().filter(|op| op.process >= FINAL_PROCESS_BASE) {
                    let (
                        LeaseInput::Ttl { lease: asked },
                        Outcome::Returned(LeaseOutput::Ttl { ttl, .. }),
                    ) = (&op.input, &op.output)
                    else {
                        continue;
                    };
                    if asked != lease {
                        continue;
                    }
                    if *ttl < 0 {
                        seen_gone = true;
                    } else if op.call > deadline {
                        findings.add("no-expiry", || {
                            format!(
                                "lease {lease} (TTL {}s) still had TTL {ttl}s in TimeToLive at \
                                 {}, {} after the final phase started at {} (allowed: TTL + \
                                 grace = {})",
                                lease_facts.ttl,
                                secs(op.call),
                                secs(op.call - final_start),
                                secs(final_start),
                                secs(deadline - final_start)
                            )
                        });
                    }
                }
                if seen_gone {
                    leases_seen_gone += 1;
                }
            }
            let unconfirmed = facts.len() as u64 - leases_seen_gone;
            if unconfirmed > 0 {
                problems.push(format!(
                    "{unconfirmed} of {} leases were never seen gone in the final phase",
                    facts.len()
                ));
            }
            let mut final_reads = 0_u64;
            for op in ops.iter().filter(|op| op.process >= FINAL_PROCESS_BASE) {
                let (LeaseInput::Read { .. }, Outcome::Returned(LeaseOutput::Read { kvs, .. })) =
                    (&op.input, &op.output)
                else {
                    continue;
                };
                final_reads += 1;
                for kv in kvs.iter().filter(|kv| kv.lease != 0) {
                    findings.add("no-expiry", || {
                        format!(
                            "key {} of lease {} is still present in the final read [{}, {}], \
                             which started {} after the final phase did",
                            kv.key,
                            kv.lease,
                            secs(op.call),
                            secs(op.ret),
                            secs(op.call - final_start)
                        )
                    });
                }
            }
            if final_reads == 0 {
                problems.push("no final read succeeded".to_owned());
            }
        }
    }
    let violations = findings.total();
    let validity = findings.validity(&problems);
    let summary = if violations > 0 {
        findings.violations_text("lease")
    } else if problems.is_empty() {
        format!(
            "{} leases, {reads_checked} reads, {presences_checked} key presences proven, every \
             lease gone at the end",
            facts.len()
        )
    } else {
        format!("undecided: {}", problems.join("; "))
    };
    let mut details = json!({
        "leases": facts.len(),
        "leases_grant_unknown": facts.values().filter(|f| f.grant_unknown).count(),
        "leases_seen_gone_at_end": leases_seen_gone,
        "reads_checked": reads_checked,
        "key_presences_proven": presences_checked,
        "key_absences_allowed": absences_allowed,
        "violations": findings.by_kind,
        "problems": problems,
    });
    if violations > 0 {
        details["explanation"] = json!(findings.explained.join("\n"));
    }
    CheckResult {
        name: "lease".to_owned(),
        validity,
        summary,
        details,
    }
}

/// (a) for lock keys: between a Lock's `ok` and its Unlock's call, while the holder's lease
/// surely lives, the holder's reads of its own lock key find it.
fn check_lock_keys_present(
    ops: &[LeaseOp],
    facts: &BTreeMap<i64, LeaseFacts>,
    findings: &mut Findings,
) {
    // lock key → (lease, lock completion, earliest unlock call).
    let mut locks: BTreeMap<&str, (i64, Time, Time)> = BTreeMap::new();
    for op in ops {
        if let (LeaseInput::Lock { lease, .. }, Outcome::Returned(LeaseOutput::Lock { key, .. })) =
            (&op.input, &op.output)
        {
            let entry = locks
                .entry(key.as_str())
                .or_insert((*lease, op.ret, RETURN_NEVER));
            entry.1 = entry.1.max(op.ret);
        }
    }
    for op in ops {
        if let LeaseInput::Unlock { key } = &op.input
            && let Some(entry) = locks.get_mut(key.as_str())
            && op.call >= entry.1
        {
            entry.2 = entry.2.min(op.call);
        }
    }
    for op in ops {
        let (
            LeaseInput::ReadCounter {
                lock_key: Some(key),
            },
            Outcome::Returned(LeaseOutput::ReadCounter {
                lock_create_revision,
                revision,
                ..
            }),
        ) = (&op.input, &op.output)
        else {
            continue;
        };
        let Some(&(lease, locked_at, unlock_from)) = locks.get(key.as_str()) else {
            continue;
        };
        let Some(lease_facts) = facts.get(&lease) else {
            continue;
        };
        if *lock_create_revision == 0
            && locked_at < op.call
            && op.ret < unlock_from
            && lease_facts.surely_alive(op.call, op.ret)
        {
            findings.add("early-expiry", || {
                format!(
                    "lock key {key} of lease {lease} (locked at {}) is absent in the read [{}, \
                     {}] at revision {revision}, before any unlock, while the lease lives until \
                     at least {}",
                    secs(locked_at),
                    secs(op.call),
                    secs(op.ret),
                    secs(lease_facts.alive_until(op.call).unwrap_or(0))
                )
            });
        }
    }
}

/// One hold, and the part of it in which the holder surely held the lock.
struct Hold<'a> {
    op: &'a LeaseOp,
    key: &'a str,
    lease: i64,
    /// `[call, safe_end]`: from the Lock's answer until the holder's Unlock or the earliest its
    /// lease could have expired or been revoked; empty when `safe_end < call`.
    safe_end: Time,
}

/// The `lock` checker over `history`: fenced mutual exclusion of the counter.
///
/// - The `ok` increments whose fence held read distinct values and each wrote its read plus one:
///   two that read the same value lost an update, which fencing exists to prevent.
/// - The final counter, read through every member, is the same everywhere and lies between the
///   number of `ok` fenced increments and that plus the unknown ones (the counter starts absent,
///   i.e. 0).
/// - Two holds by different leases never overlap in the parts where both holders surely held the
///   lock (lease surely alive, no unlock sent). Before its Lock returns, a contender's key must
///   be the oldest, so its predecessor's key is gone; that key lives until its Unlock or its
///   lease ends, so surely-held intervals are disjoint. Overlaps where a lease could have
///   expired are reported as information: etcd locks are not safe under pauses without fencing
///   (jepsen.md §1.4), which is what the fence is for.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn check_lock(history: &History<LeaseInput, LeaseOutput>) -> CheckResult {
    let ops = history.ops();
    let facts = lease_facts(ops);
    let mut findings = Findings::default();
    let mut problems: Vec<String> = Vec::new();

    // Holds.
    let mut holds: Vec<Hold<'_>> = Vec::new();
    let mut holds_lost = 0_u64;
    for op in ops {
        let (LeaseInput::Hold { key, lease }, Outcome::Returned(LeaseOutput::Hold { end })) =
            (&op.input, &op.output)
        else {
            continue;
        };
        if *end == HoldEnd::LeaseLost {
            holds_lost += 1;
        }
        let lease_facts = facts.get(lease);
        // Renewals the holder had heard of by the end of its hold.
        let alive_end = lease_facts
            .and_then(|f| f.alive_until(op.ret))
            .map_or(0, |until| until.saturating_sub(EXPIRY_SLACK_NANOS + 1));
        let revoke_end = lease_facts
            .and_then(|f| f.revoke_from)
            .map_or(RETURN_NEVER, |from| from.saturating_sub(1));
        let granted = lease_facts
            .and_then(|f| f.granted_at)
            .is_some_and(|at| at < op.call);
        let safe_end = if granted {
            op.ret.min(alive_end).min(revoke_end)
        } else {
            0
        };
        holds.push(Hold {
            op,
            key,
            lease: *lease,
            safe_end,
        });
    }
    holds.sort_by_key(|hold| hold.op.call);
    let mut unsafe_overlaps = 0_u64;
    for (index, first) in holds.iter().enumerate() {
        for second in &holds[index + 1..] {
            if second.op.call > first.op.ret {
                break;
            }
            if second.lease == first.lease {
                continue;
            }
            // Strict: the successor's hold starts after the predecessor's key was deleted,
            // which is after its Unlock was sent, so the two can at most touch.
            let both_safe = second.op.call < first.safe_end
                && second.op.call < second.safe_end
                && first.op.call < first.safe_end;
            if both_safe {
                findings.add("two-holders", || {
                    format!(
                        "{} (lease {}) held the lock over [{}, {}] and {} (lease {}) over [{}, \
                         {}]; both leases surely lived and neither had unlocked, yet the holds \
                         overlap",
                        first.key,
                        first.lease,
                        secs(first.op.call),
                        secs(first.safe_end),
                        second.key,
                        second.lease,
                        secs(second.op.call),
                        secs(second.safe_end)
                    )
                });
            } else {
                unsafe_overlaps += 1;
            }
        }
    }

    // Increments, each with the read it was based on (the same process's latest read).
    let mut last_read_call: BTreeMap<u64, Time> = BTreeMap::new();
    let mut fenced: Vec<(&LeaseOp, Time, i64)> = Vec::new();
    let mut rejected = 0_u64;
    let mut unknown = 0_u64;
    for op in ops {
        match (&op.input, &op.output) {
            (LeaseInput::ReadCounter { lock_key: Some(_) }, _) => {
                last_read_call.insert(op.process, op.call);
            }
            (LeaseInput::Incr { read, write, .. }, output) => {
                if *write != read + 1 {
                    findings.add("bad-increment", || {
                        format!(
                            "increment [{}, {}] read {read} but wrote {write}",
                            secs(op.call),
                            secs(op.ret)
                        )
                    });
                }
                match output {
                    Outcome::Returned(LeaseOutput::Incr {
                        succeeded: true, ..
                    }) => {
                        let read_call = last_read_call.get(&op.process).copied().unwrap_or(op.call);
                        fenced.push((op, read_call, *read));
                    }
                    Outcome::Returned(_) => rejected += 1,
                    Outcome::Unknown => unknown += 1,
                }
            }
            _ => {}
        }
    }
    let mut by_read: BTreeMap<i64, Vec<&LeaseOp>> = BTreeMap::new();
    for (op, _, read) in &fenced {
        by_read.entry(*read).or_default().push(op);
    }
    for (read, same) in &by_read {
        if same.len() > 1 {
            findings.add("lost-update", || {
                let who: Vec<String> = same
                    .iter()
                    .map(|op| {
                        let (lock_key, fence) = match &op.input {
                            LeaseInput::Incr {
                                lock_key, fence, ..
                            } => (lock_key.as_str(), *fence),
                            _ => ("?", 0),
                        };
                        format!(
                            "[{}, {}] under {lock_key} (fence {fence})",
                            secs(op.call),
                            secs(op.ret)
                        )
                    })
                    .collect();
                format!(
                    "{} fenced increments all read {read} and wrote {}: {}",
                    same.len(),
                    read + 1,
                    who.join(", ")
                )
            });
        }
    }
    let mut overlapping_increments = 0_u64;
    let mut windows: Vec<(Time, Time)> =
        fenced.iter().map(|(op, from, _)| (*from, op.ret)).collect();
    windows.sort_unstable();
    for (index, first) in windows.iter().enumerate() {
        for second in &windows[index + 1..] {
            if second.0 > first.1 {
                break;
            }
            overlapping_increments += 1;
        }
    }

    // The final counter.
    let ok_count = fenced.len() as u64;
    let mut final_values: BTreeSet<i64> = BTreeSet::new();
    for op in ops.iter().filter(|op| op.process >= FINAL_PROCESS_BASE) {
        if let (
            LeaseInput::ReadCounter { lock_key: None },
            Outcome::Returned(LeaseOutput::ReadCounter { value, .. }),
        ) = (&op.input, &op.output)
        {
            final_values.insert(*value);
        }
    }
    if final_values.len() > 1 {
        findings.add("final-counter", || {
            format!("the final reads of the counter disagree: {final_values:?}")
        });
    }
    match final_values.iter().next() {
        None => problems.push("no final read of the counter succeeded".to_owned()),
        Some(&value) => {
            let value_count = u64::try_from(value).unwrap_or(u64::MAX);
            if value < 0 || value_count < ok_count || value_count > ok_count + unknown {
                findings.add("final-counter", || {
                    format!(
                        "the final counter is {value}, but {ok_count} fenced increments \
                         succeeded and {unknown} are unknown, so it must lie in [{ok_count}, {}]",
                        ok_count + unknown
                    )
                });
            }
        }
    }

    let violations = findings.total();
    let validity = findings.validity(&problems);
    let summary = if violations > 0 {
        findings.violations_text("lock")
    } else if problems.is_empty() {
        format!(
            "{} holds, {ok_count} fenced increments ok, {rejected} rejected by the fence, \
             {unknown} unknown; final counter {:?}; {unsafe_overlaps} overlapping holds where a \
             lease could have expired",
            holds.len(),
            final_values.iter().next().copied().unwrap_or_default()
        )
    } else {
        format!("undecided: {}", problems.join("; "))
    };
    let mut details = json!({
        "holds": holds.len(),
        "holds_lease_lost": holds_lost,
        "increments_ok": ok_count,
        "increments_rejected_by_fence": rejected,
        "increments_unknown": unknown,
        "final_counter": final_values,
        "overlapping_holds_lease_could_expire": unsafe_overlaps,
        "overlapping_fenced_increment_windows": overlapping_increments,
        "violations": findings.by_kind,
        "problems": problems,
    });
    if violations > 0 {
        let mut explanation = findings.explained.join("\n");
        if findings.explained.len() < usize::try_from(violations).unwrap_or(usize::MAX) {
            let _ = write!(
                explanation,
                "\n({} more not shown)",
                violations - findings.explained.len() as u64
            );
        }
        details["explanation"] = json!(explanation);
    }
    CheckResult {
        name: "lock".to_owned(),
        validity,
        summary,
        details,
    }
}

#[cfg(test)]
mod tests;
