//! The `append` workload: multi-key list-append transactions, checked for strict
//! serializability by Elle-lite ([`crate::checker::elle`]; jepsen.md §1.2, §4, §6.2).
//!
//! Owns the transaction schedule, how a transaction runs against etcd, and the list encoding.
//! `keys` keys are active at once; each takes `appends_per_key` appends and is then retired for
//! a fresh one, which keeps lists (and so every read) short. A transaction is 1 to
//! `max_txn_len` micro-operations on active keys, each `append k v` (v unique per key, counting
//! up from 1) or `read k`.
//!
//! # Running a transaction (as Jepsen's etcd suite does)
//! 1. One linearizable read of every key it touches: a Txn of Ranges, all seen at one revision.
//! 2. Its reads are answered from what was seen, each append extends the seen list locally.
//! 3. A read-only transaction is done: it happened at the read's revision.
//! 4. Otherwise one Txn guarded by `mod_revision == seen` (0 for an absent key) on **every**
//!    touched key, read or appended, puts the extended lists. The guard makes the whole
//!    transaction take effect at its commit revision as if the reads were made there, so it is
//!    serializable there. A guard that does not hold is a definite `fail`: nothing was written,
//!    and the transaction is never retried.
//!
//! A failed read is `fail` (it changed nothing); the write's errors are sorted by
//! [`crate::client::classify`]: definite refusals `fail`, everything else `info`, after which the
//! worker continues under a new process id.
//!
//! # Stored lists
//! A key's value is its list as decimal integers separated by single spaces (`"1 2 5"`); an
//! absent key is the empty list. A stored token that is not a number reads as 0, a value no
//! transaction appends, so the checker reports it as garbage instead of the harness failing.
//!
//! # History vocabulary (`history.jsonl`, model `append`)
//! ```json
//! {"type":"invoke","process":3,"time":1200,"input":{"f":"txn","ops":[
//!     {"f":"append","key":"a/00002","value":7},{"f":"read","key":"a/00001"}]}}
//! {"type":"ok","process":3,"time":5400,"output":{"f":"txn","ops":[
//!     {"f":"append","key":"a/00002","value":7},{"f":"read","key":"a/00001","value":[1,2,5]}],
//!     "read_revision":40,"revision":41}}
//! ```
//! (one line each in the file). `ok` repeats the request's micro-operations with every read's
//! list filled in, plus the revision of the read and of the commit (equal for a read-only one).
//! `fail` and `info` carry nothing: a failed transaction wrote nothing, an unknown one may have.
//! Outcome counts use two functions: `append` (transactions with an append) and `read`
//! (read-only ones); guard failures count as `fail` of `append` with reason `guard failed`.
//!
//! Live ([`run`]): workers pinned to members round-robin; after the faults are healed, every key
//! ever used is read through every member (in read-only transactions of a few keys each); the
//! history file is read back and checked.
//!
//! Must not: retry a transaction (the client never does), or decide anything with the
//! generator's randomness but the transaction sequence (timing uses each worker's own fork).

use std::fs::File;
use std::io::BufReader;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use tokio::task::JoinSet;

use super::{CheckResult, Counts, Ctx, ERROR_BACKOFF, Validity, WorkloadReport, final_reads, lock};
use crate::checker::elle::{self, Mop, TxnFunction, TxnInput, TxnOutput};
use crate::client::{Client, NoResult};
use crate::history::recorder::Recorder;
use crate::random::SeededRng;

/// Active keys unless told otherwise (Jepsen's etcd suite uses 3; jepsen.md §6.2 says 3–5).
pub const KEYS_DEFAULT: usize = 4;
/// Micro-operations per transaction at most, unless told otherwise.
pub const MAX_TXN_LEN_DEFAULT: usize = 4;
/// Appends to a key before it is retired, unless told otherwise. Every read returns the whole
/// list, so this bounds a read's size and the checker's work per read.
pub const APPENDS_PER_KEY_DEFAULT: usize = 64;
/// Share of micro-operations that are reads, percent.
const READ_PERCENT: u64 = 50;
/// Keys read by one final-phase transaction.
const FINAL_READ_KEYS_PER_TXN: usize = 16;
/// Anomalies explained in `results.json` and the run's summary; `elle.txt` has all examples.
const EXPLAINED_MAX: usize = 6;
/// Functions that must each have succeeded at least once.
const REQUIRED: [&str; 2] = ["append", "read"];
/// Why a guarded write that did not apply counts as `fail`.
const GUARD_FAILED: &str = "guard failed";

/// The shape of the workload.
#[derive(Clone, Debug)]
pub struct AppendOptions {
    /// Keys active at once.
    pub keys: usize,
    /// Micro-operations per transaction at most.
    pub max_txn_len: usize,
    /// Appends to a key before it is retired.
    pub appends_per_key: usize,
}

impl Default for AppendOptions {
    fn default() -> Self {
        AppendOptions {
            keys: KEYS_DEFAULT,
            max_txn_len: MAX_TXN_LEN_DEFAULT,
            appends_per_key: APPENDS_PER_KEY_DEFAULT,
        }
    }
}

/// One active key.
#[derive(Clone, Debug)]
struct Slot {
    key: String,
    /// Appends generated for it so far; also its last value.
    appends: usize,
}

/// The seeded transaction sequence.
#[derive(Clone, Debug)]
pub struct AppendGenerator {
    options: AppendOptions,
    rng: SeededRng,
    slots: Vec<Slot>,
    /// Every key handed out so far, in order.
    keys: Vec<String>,
}

impl AppendGenerator {
    /// The sequence for `seed`.
    ///
    /// # Panics
    /// When `options` has no keys, no micro-operations or no appends per key.
    #[must_use]
    pub fn new(options: AppendOptions, seed: u64) -> Self {
        assert!(options.keys > 0, "the append workload needs keys");
        assert!(options.max_txn_len > 0, "a transaction needs operations");
        assert!(options.appends_per_key > 0, "a key needs appends");
        let mut generator = AppendGenerator {
            rng: SeededRng::new(seed),
            slots: Vec::with_capacity(options.keys),
            keys: Vec::new(),
            options,
        };
        for _ in 0..generator.options.keys {
            let slot = generator.fresh_slot();
            generator.slots.push(slot);
        }
        generator
    }

    fn fresh_slot(&mut self) -> Slot {
        let key = format!("a/{:05}", self.keys.len());
        self.keys.push(key.clone());
        Slot { key, appends: 0 }
    }

    /// Every key handed out so far; the final reads cover them all.
    #[must_use]
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The next transaction's micro-operations (reads without values).
    pub fn next_txn(&mut self) -> Vec<Mop> {
        let length = 1 + self.rng.below(self.options.max_txn_len);
        let mut ops = Vec::with_capacity(length);
        for _ in 0..length {
            let index = self.rng.below(self.slots.len());
            if self.slots[index].appends >= self.options.appends_per_key {
                self.slots[index] = self.fresh_slot();
            }
            let slot = &mut self.slots[index];
            if self.rng.chance(READ_PERCENT) {
                ops.push(Mop::Read {
                    key: slot.key.clone(),
                    value: None,
                });
            } else {
                slot.appends += 1;
                ops.push(Mop::Append {
                    key: slot.key.clone(),
                    value: slot.appends as u64,
                });
            }
        }
        ops
    }
}

/// Runs the workload live: workers until the deadline, the heal, the final reads, the check.
///
/// # Errors
/// When a client cannot be made, a worker panics, or the history cannot be read back.
pub async fn run(ctx: Arc<Ctx>, options: &AppendOptions) -> anyhow::Result<WorkloadReport> {
    let generator = Arc::new(Mutex::new(AppendGenerator::new(options.clone(), ctx.seed)));
    let mut workers = JoinSet::new();
    for worker in 0..ctx.concurrency {
        workers.spawn(run_worker(Arc::clone(&ctx), Arc::clone(&generator), worker));
    }
    let mut counts = Counts::default();
    while let Some(joined) = workers.join_next().await {
        counts.merge(joined.context("a worker panicked")??);
    }
    eprintln!("workload done ({} transactions)", counts.total());
    ctx.end_faults().await;
    let keys = lock(&generator).keys().to_vec();
    let reads = final_reads(&ctx, &keys, FINAL_READ_KEYS_PER_TXN, |node, process| {
        let client = Client::new(&ctx.cluster.endpoint(node), ctx.request_timeout)?;
        let recorder = Arc::clone(&ctx.recorder);
        Ok(move |keys: Vec<String>| {
            let (mut client, recorder) = (client.clone(), Arc::clone(&recorder));
            async move {
                let ops: Vec<Mop> = keys
                    .into_iter()
                    .map(|key| Mop::Read { key, value: None })
                    .collect();
                // Read-only: it never ends `info`, so the process id stays valid.
                execute(&recorder, &mut client, process, ops).await == TxnEnd::Ok
            }
        })
    })
    .await?;
    ctx.recorder.flush()?;
    let problems = reads.problem(keys.len()).into_iter().collect();
    let mut check = check_history(&ctx).await?;
    check.details["final_reads_ok"] = json!(reads.ok);
    check.details["final_reads_attempted"] = json!(reads.attempted);
    Ok(WorkloadReport {
        counts,
        required: REQUIRED.iter().map(|&f| f.to_owned()).collect(),
        checks: vec![check],
        problems,
    })
}

/// Reads `history.jsonl` back and checks it with Elle-lite; writes every explained anomaly to
/// `elle.txt` beside it when there are any.
async fn check_history(ctx: &Ctx) -> anyhow::Result<CheckResult> {
    let path = ctx.run_dir.join("history.jsonl");
    eprintln!("checking {}", path.display());
    let started = Instant::now();
    let (checked, txns) = tokio::task::spawn_blocking(move || {
        let txns = elle::read_history(BufReader::new(File::open(&path)?))?;
        anyhow::Ok((elle::check(&txns), txns.len()))
    })
    .await
    .context("the checker panicked")??;
    let elapsed = started.elapsed();
    let report = match checked {
        Ok(report) => report,
        Err(malformed) => {
            return Ok(CheckResult {
                name: "elle".to_owned(),
                validity: Validity::Unknown,
                summary: format!("cannot judge the history: {malformed}"),
                details: json!({ "error": malformed.to_string(), "txns": txns }),
            });
        }
    };
    let (edges, [ww, wr, rw, rt]) = report.edges;
    let mut details = json!({
        "anomalies": report.counts_by_name(),
        "txns": report.txns,
        "committed": report.committed,
        "keys": report.keys,
        "edges": { "all": edges, "ww": ww, "wr": wr, "rw": rw, "rt": rt },
        "check_secs": elapsed.as_secs_f64(),
    });
    let (validity, summary) = if report.is_valid() {
        (
            Validity::Valid,
            format!(
                "strict serializable: {} transactions ({} committed) over {} keys checked in \
                 {elapsed:.2?}",
                report.txns, report.committed, report.keys
            ),
        )
    } else {
        let classes: Vec<String> = report
            .counts
            .iter()
            .map(|(class, count)| format!("{class} x{count}"))
            .collect();
        let all = report.explanation(usize::MAX);
        let elle_txt = ctx.run_dir.join("elle.txt");
        std::fs::write(&elle_txt, &all).with_context(|| format!("write {}", elle_txt.display()))?;
        details["explanation"] = json!(report.explanation(EXPLAINED_MAX));
        (
            Validity::Invalid,
            format!(
                "anomalies: {} ({} transactions checked in {elapsed:.2?}; see elle.txt)",
                classes.join(", "),
                report.txns
            ),
        )
    };
    Ok(CheckResult {
        name: "elle".to_owned(),
        validity,
        summary,
        details,
    })
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TxnEnd {
    Ok,
    /// The guard did not hold: a normal outcome under contention.
    GuardFailed,
    /// Certainly not applied, for an error; why.
    Fail(String),
    /// Unknown; why.
    Info(String),
}

/// One worker: pinned to member `worker % nodes`, it runs transactions until the deadline, one
/// at a time, pausing a random while before each. An `info` retires its process id; it
/// continues as `id + concurrency`.
async fn run_worker(
    ctx: Arc<Ctx>,
    generator: Arc<Mutex<AppendGenerator>>,
    worker: usize,
) -> anyhow::Result<Counts> {
    let node = worker % ctx.cluster.len();
    let mut client = Client::new(&ctx.cluster.endpoint(node), ctx.request_timeout)?;
    let mut rng = SeededRng::fork(ctx.seed, worker as u64);
    let mut process = worker as u64;
    let mut counts = Counts::default();
    let concurrency = ctx.concurrency as u64;
    // Each transaction takes at least one pause or one round trip; the bound is far above what a
    // run reaches and only guards against a clock that never advances.
    for _ in 0..10_000_000_u64 {
        if ctx.pace(&mut rng).await {
            break;
        }
        let ops = lock(&generator).next_txn();
        let function = txn_function(&ops);
        let end = execute(&ctx.recorder, &mut client, process, ops).await;
        match &end {
            TxnEnd::Ok => counts.add(function, "ok", None),
            TxnEnd::GuardFailed => counts.add(function, "fail", Some(GUARD_FAILED)),
            TxnEnd::Fail(why) => counts.add(function, "fail", Some(why)),
            TxnEnd::Info(why) => counts.add(function, "info", Some(why)),
        }
        if matches!(end, TxnEnd::Info(_)) {
            process += concurrency;
        }
        // A refused guard is contention, not trouble; back off only after errors.
        if matches!(end, TxnEnd::Fail(_) | TxnEnd::Info(_)) {
            ctx.sleep_within(ERROR_BACKOFF).await;
        }
    }
    Ok(counts)
}

/// `append` for a transaction with an append, `read` for a read-only one.
fn txn_function(ops: &[Mop]) -> &'static str {
    if ops.iter().any(|mop| matches!(mop, Mop::Append { .. })) {
        "append"
    } else {
        "read"
    }
}

/// Runs one transaction as the module docs describe, recording its invoke and completion.
async fn execute(recorder: &Recorder, client: &mut Client, process: u64, ops: Vec<Mop>) -> TxnEnd {
    let mut keys: Vec<String> = Vec::new();
    for mop in &ops {
        if !keys.iter().any(|key| key == mop.key()) {
            keys.push(mop.key().to_owned());
        }
    }
    recorder.invoke(
        process,
        &TxnInput {
            f: TxnFunction::Txn,
            ops: ops.clone(),
        },
    );
    let (read_revision, seen) = match client.read_keys(&keys).await {
        Ok(read) => read,
        Err(NoResult::Fail(why) | NoResult::Info(why)) => {
            // A read changed nothing: whatever the error, nothing happened.
            recorder.fail(process);
            return TxnEnd::Fail(why);
        }
    };
    let mut lists: Vec<Vec<u64>> = seen
        .iter()
        .map(|key| decode_list(key.value.as_deref().unwrap_or("")))
        .collect();
    let mut appended = vec![false; keys.len()];
    let mut done = Vec::with_capacity(ops.len());
    for mop in ops {
        let index = keys
            .iter()
            .position(|key| key == mop.key())
            .expect("every touched key was read");
        done.push(match mop {
            Mop::Read { key, .. } => Mop::Read {
                key,
                value: Some(lists[index].clone()),
            },
            Mop::Append { key, value } => {
                lists[index].push(value);
                appended[index] = true;
                Mop::Append { key, value }
            }
        });
    }
    let output = |revision| TxnOutput {
        f: TxnFunction::Txn,
        ops: done.clone(),
        read_revision,
        revision,
    };
    if !appended.contains(&true) {
        recorder.ok(process, &output(read_revision));
        return TxnEnd::Ok;
    }
    let guards: Vec<(String, i64)> = keys
        .iter()
        .zip(&seen)
        .map(|(key, seen)| (key.clone(), seen.mod_revision))
        .collect();
    let puts: Vec<(String, String)> = keys
        .iter()
        .zip(&lists)
        .zip(&appended)
        .filter(|&(_, &appended)| appended)
        .map(|((key, list), _)| (key.clone(), encode_list(list)))
        .collect();
    match client.write_if_unchanged(&guards, &puts).await {
        Ok(Some(revision)) => {
            recorder.ok(process, &output(revision));
            TxnEnd::Ok
        }
        Ok(None) => {
            recorder.fail(process);
            TxnEnd::GuardFailed
        }
        Err(NoResult::Fail(why)) => {
            recorder.fail(process);
            TxnEnd::Fail(why)
        }
        Err(NoResult::Info(why)) => {
            recorder.info(process);
            TxnEnd::Info(why)
        }
    }
}

/// A list as stored: `"1 2 5"`.
fn encode_list(list: &[u64]) -> String {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A stored list; a token that is not a number becomes 0, which nothing appends (the checker
/// calls it garbage).
fn decode_list(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .map(|token| token.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let schedule = |seed| {
            let mut generator = AppendGenerator::new(AppendOptions::default(), seed);
            (0..500).map(|_| generator.next_txn()).collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
    }

    #[test]
    fn keys_retire_after_their_budget_and_values_are_unique_per_key() {
        let options = AppendOptions {
            keys: 3,
            max_txn_len: 4,
            appends_per_key: 5,
        };
        let mut generator = AppendGenerator::new(options, 1);
        let txns: Vec<Vec<Mop>> = (0..200).map(|_| generator.next_txn()).collect();
        assert!(txns.iter().all(|ops| (1..=4).contains(&ops.len())));
        let mut appended: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for mop in txns.iter().flatten() {
            if let Mop::Append { key, value } = mop {
                appended.entry(key).or_default().push(*value);
            }
        }
        assert!(generator.keys().len() > 10, "keys were retired");
        for (key, values) in appended {
            assert!(values.len() <= 5, "{key} got {} appends", values.len());
            let expected: Vec<u64> = (1..=values.len() as u64).collect();
            assert_eq!(values, expected, "{key}'s values count up from 1");
        }
    }

    #[test]
    fn lists_round_trip_and_junk_reads_as_garbage() {
        assert_eq!(encode_list(&[]), "");
        assert_eq!(encode_list(&[1, 2, 5]), "1 2 5");
        assert_eq!(decode_list("1 2 5"), vec![1, 2, 5]);
        assert_eq!(decode_list(""), Vec::<u64>::new());
        assert_eq!(decode_list("1 x 3"), vec![1, 0, 3]);
    }
}
