//! The register workload: reads, unique writes and compare-and-sets on a few keys at a time.
//!
//! Owns the register operation schedule (jepsen.md §1.2, §6.2). `keys` keys are active at once;
//! each takes `ops_per_key` operations and is then retired for a fresh one, which keeps every
//! key's history short enough for the linearizability search (its cost grows with the number of
//! concurrent and unknown operations per key). Operations, in the per-key etcd vocabulary:
//! - read: a linearizable Range of the key;
//! - write: a Put of a value never written before, asking for the previous key-value;
//! - cas: a Txn comparing the key's value with one recently written to it, putting a new unique
//!   value on success.
//!
//! Besides this mixed sequence, reader workers take reads of the active keys
//! ([`RegisterGenerator::next_read`]), as Jepsen's register reserves half its threads for reads:
//! a member cut off from the others keeps being read even while its mixed workers wait on writes
//! that cannot commit, which is when a stale read would show.
//!
//! Unique values make every read name the write it saw, which is what lets the checker prove a
//! read stale.
//!
//! Live ([`run`]): workers pinned to members round-robin, every second round of them a reader;
//! after the faults are healed, every key ever used is read through every member; the history is
//! then checked against the per-key etcd model ([`crate::model::etcd`]) for linearizability.
//!
//! Must not: retry an operation (the client never does), or decide anything with the generator's
//! randomness but the operation sequence (timing uses each worker's own fork of the seed).

use std::fs::File;
use std::io::BufReader;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::task::JoinSet;

use super::{CheckResult, Counts, Ctx, ERROR_BACKOFF, Validity, WorkloadReport, final_reads, lock};
use crate::checker::linearizable::{CheckOptions, Verdict, check};
use crate::client::{Client, Outcome};
use crate::history::History;
use crate::history::jsonl::{self, AnyHistory};
use crate::history::recorder::Recorder;
use crate::model::Determinized;
use crate::model::etcd::{Compare, EtcdInput, EtcdKeyModel, EtcdOp, EtcdOutput};
use crate::random::SeededRng;

/// Active keys unless told otherwise.
pub const KEYS_DEFAULT: usize = 8;
/// Operations per key before it is retired, unless told otherwise.
pub const OPS_PER_KEY_DEFAULT: usize = 200;
/// Values remembered per key as compare-and-set candidates.
const RECENT_VALUES_MAX: usize = 3;
/// Functions that must each have succeeded at least once.
const REQUIRED: [&str; 3] = ["read", "write", "cas"];

/// The mix and shape of the workload.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    /// Keys active at once.
    pub keys: usize,
    /// Operations per key before it is retired.
    pub ops_per_key: usize,
    /// Share of reads, percent.
    pub read_percent: u64,
    /// Share of writes, percent; the rest are compare-and-sets.
    pub write_percent: u64,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            keys: KEYS_DEFAULT,
            ops_per_key: OPS_PER_KEY_DEFAULT,
            read_percent: 50,
            write_percent: 30,
        }
    }
}

/// One active key.
#[derive(Clone, Debug)]
struct Slot {
    key: String,
    ops: usize,
    /// Values generated for this key, newest last.
    recent: Vec<String>,
}

/// The seeded operation sequence.
#[derive(Clone, Debug)]
pub struct RegisterGenerator {
    options: RegisterOptions,
    rng: SeededRng,
    slots: Vec<Slot>,
    /// Every key handed out so far, in order.
    keys: Vec<String>,
    next_value: u64,
}

impl RegisterGenerator {
    /// The sequence for `seed`.
    ///
    /// # Panics
    /// When `options` has no keys or no operations per key.
    #[must_use]
    pub fn new(options: RegisterOptions, seed: u64) -> Self {
        assert!(options.keys > 0, "the register workload needs keys");
        assert!(options.ops_per_key > 0, "a key needs operations");
        let mut generator = RegisterGenerator {
            rng: SeededRng::new(seed),
            slots: Vec::with_capacity(options.keys),
            keys: Vec::new(),
            next_value: 0,
            options,
        };
        for _ in 0..generator.options.keys {
            let slot = generator.fresh_slot();
            generator.slots.push(slot);
        }
        generator
    }

    fn fresh_slot(&mut self) -> Slot {
        let key = format!("r/{:04}", self.keys.len());
        self.keys.push(key.clone());
        Slot {
            key,
            ops: 0,
            recent: Vec::new(),
        }
    }

    fn fresh_value(&mut self) -> String {
        self.next_value += 1;
        format!("v{}", self.next_value)
    }

    /// A read of one of the active keys, chosen with the reader's own `rng`. Reads taken this
    /// way do not count toward a key's budget, so the sequence [`RegisterGenerator::next_op`]
    /// yields stays a function of the seed alone; the keys a reader lands on depend on timing.
    pub fn next_read(&self, rng: &mut SeededRng) -> EtcdInput {
        let slot = &self.slots[rng.below(self.slots.len())];
        EtcdInput {
            key: slot.key.clone(),
            op: EtcdOp::Get,
        }
    }

    /// Every key handed out so far; the final reads cover them all.
    #[must_use]
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The next operation.
    pub fn next_op(&mut self) -> EtcdInput {
        let index = self.rng.below(self.slots.len());
        if self.slots[index].ops >= self.options.ops_per_key {
            self.slots[index] = self.fresh_slot();
        }
        self.slots[index].ops += 1;
        let roll = self.rng.next_u64() % 100;
        let op = if roll < self.options.read_percent {
            EtcdOp::Get
        } else if roll < self.options.read_percent + self.options.write_percent
            || self.slots[index].recent.is_empty()
        {
            EtcdOp::Put {
                value: self.remember(index),
                prev_kv: true,
            }
        } else {
            let recent = &self.slots[index].recent;
            let expected = recent[self.rng.below(recent.len())].clone();
            EtcdOp::Cas {
                compare: Compare::Value(expected),
                value: self.remember(index),
            }
        };
        EtcdInput {
            key: self.slots[index].key.clone(),
            op,
        }
    }

    /// A fresh value, remembered as a compare candidate of slot `index`.
    fn remember(&mut self, index: usize) -> String {
        let value = self.fresh_value();
        let recent = &mut self.slots[index].recent;
        if recent.len() == RECENT_VALUES_MAX {
            recent.remove(0);
        }
        recent.push(value.clone());
        value
    }
}

/// Runs the workload live: workers until the deadline, the heal, the final reads, the check.
///
/// # Errors
/// When a client cannot be made, a worker panics, or the history cannot be read back.
pub async fn run(ctx: Arc<Ctx>, options: &RegisterOptions) -> anyhow::Result<WorkloadReport> {
    let generator = Arc::new(Mutex::new(RegisterGenerator::new(
        options.clone(),
        ctx.seed,
    )));
    let mut workers = JoinSet::new();
    for worker in 0..ctx.concurrency {
        workers.spawn(run_worker(Arc::clone(&ctx), Arc::clone(&generator), worker));
    }
    let mut counts = Counts::default();
    while let Some(joined) = workers.join_next().await {
        counts.merge(joined.context("a worker panicked")??);
    }
    eprintln!("workload done ({} operations)", counts.total());
    ctx.end_faults().await;
    let keys = lock(&generator).keys().to_vec();
    let reads = final_reads(&ctx, &keys, 1, |node, process| {
        let client = Client::new(&ctx.cluster.endpoint(node), ctx.request_timeout)?;
        let recorder = Arc::clone(&ctx.recorder);
        Ok(move |keys: Vec<String>| {
            let (mut client, recorder) = (client.clone(), Arc::clone(&recorder));
            async move {
                let input = EtcdInput {
                    key: keys.into_iter().next().unwrap_or_default(),
                    op: EtcdOp::Get,
                };
                let outcome = invoke_and_record(&recorder, &mut client, process, &input).await;
                matches!(outcome, Outcome::Ok(_))
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

/// Reads `history.jsonl` back and checks it against the per-key etcd model.
async fn check_history(ctx: &Ctx) -> anyhow::Result<CheckResult> {
    let path = ctx.run_dir.join("history.jsonl");
    let options = CheckOptions {
        partition_time_budget: ctx.check_timeout,
        ..CheckOptions::default()
    };
    eprintln!("checking {}", path.display());
    let started = Instant::now();
    let (verdict, checked, located) = tokio::task::spawn_blocking(move || {
        let reader = BufReader::new(File::open(&path)?);
        let AnyHistory::Etcd(history) = jsonl::parse(reader)? else {
            bail!("the recorder wrote a history for another model");
        };
        let verdict = check(&Determinized(EtcdKeyModel), &history, &options);
        let located = violation_location(&history, &verdict);
        Ok((verdict, history.len(), located))
    })
    .await
    .context("the checker panicked")??;
    let elapsed = started.elapsed();
    let validity = match &verdict {
        Verdict::Linearizable => Validity::Valid,
        Verdict::NotLinearizable { .. } => Validity::Invalid,
        Verdict::Unknown { .. } => Validity::Unknown,
    };
    let mut details = json!({
        "verdict": verdict.to_string(),
        "operations_checked": checked,
        "check_secs": elapsed.as_secs_f64(),
    });
    if let Verdict::NotLinearizable { diagnostic, .. } = &verdict {
        details["explanation"] = json!(diagnostic.to_string());
    }
    if let (Some(details), Some(located)) = (details.as_object_mut(), located) {
        details.extend(located);
    }
    Ok(CheckResult {
        name: "linearizable".to_owned(),
        validity,
        summary: format!("{verdict} ({checked} operations checked in {elapsed:.2?})"),
        details,
    })
}

/// Where a violation lies, in terms the run report ([`crate::report`]) can find again in
/// `history.jsonl`: `failing_key`, and the diagnostic's operations as `{process, call}` (a process
/// has one operation open at a time, so the pair names one), `prefix_ops` for the longest
/// linearizable prefix (`prefix_state` the model's state after it) and `blocked_op` for the
/// operation that could not follow it. Indexes would not do: they count operations after the
/// parser dropped the failed ones.
fn violation_location(
    history: &History<EtcdInput, EtcdOutput>,
    verdict: &Verdict,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let Verdict::NotLinearizable {
        partition,
        diagnostic,
    } = verdict
    else {
        return None;
    };
    let identify = |index: usize| {
        let op = &history.ops()[index];
        json!({ "process": op.process, "call": op.call })
    };
    let mut located = serde_json::Map::new();
    located.insert("failing_key".to_owned(), json!(partition.key));
    located.insert(
        "prefix_ops".to_owned(),
        diagnostic
            .prefix
            .iter()
            .map(|op| identify(op.index))
            .collect(),
    );
    located.insert("prefix_state".to_owned(), json!(diagnostic.state));
    located.insert("blocked_op".to_owned(), identify(diagnostic.blocked.index));
    Some(located)
}

/// One worker: pinned to member `worker % nodes`, a reader or a mixed worker, it sends
/// operations until the deadline, one at a time, pausing a random while before each. An `info`
/// retires its process id; it continues as `id + concurrency`.
async fn run_worker(
    ctx: Arc<Ctx>,
    generator: Arc<Mutex<RegisterGenerator>>,
    worker: usize,
) -> anyhow::Result<Counts> {
    let nodes = ctx.cluster.len();
    let node = worker % nodes;
    // Workers go round the members; every second round reads only (Jepsen's register keeps half
    // its threads for reads), so with two workers per member each has one of each.
    let reader = (worker / nodes) % 2 == 1;
    let mut client = Client::new(&ctx.cluster.endpoint(node), ctx.request_timeout)?;
    let mut rng = SeededRng::fork(ctx.seed, worker as u64);
    let mut process = worker as u64;
    let mut counts = Counts::default();
    let concurrency = ctx.concurrency as u64;
    // Each operation takes at least one pause or one round trip; the bound is far above what a
    // run reaches and only guards against a clock that never advances.
    for _ in 0..10_000_000_u64 {
        if ctx.pace(&mut rng).await {
            break;
        }
        let input = if reader {
            lock(&generator).next_read(&mut rng)
        } else {
            lock(&generator).next_op()
        };
        let outcome = invoke_and_record(&ctx.recorder, &mut client, process, &input).await;
        count(&mut counts, input_function(&input), &outcome);
        if matches!(outcome, Outcome::Info(_)) {
            process += concurrency;
        }
        // Only an unknown outcome backs off: it stays open to the end of its key's history.
        // A definite failure (a read the member could not serve, a refused connection) costs
        // the checker nothing, and going on at the normal pace keeps a cut-off member's
        // workers probing it, which is when stale reads and early acknowledgements show.
        if matches!(outcome, Outcome::Info(_)) {
            ctx.sleep_within(ERROR_BACKOFF).await;
        }
    }
    Ok(counts)
}

fn count(counts: &mut Counts, function: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Ok(_) => counts.add(function, "ok", None),
        Outcome::Fail(why) => counts.add(function, "fail", Some(why)),
        Outcome::Info(why) => counts.add(function, "info", Some(why)),
    }
}

async fn invoke_and_record(
    recorder: &Recorder,
    client: &mut Client,
    process: u64,
    input: &EtcdInput,
) -> Outcome {
    recorder.invoke(process, input);
    let outcome = client.invoke(input).await;
    match &outcome {
        Outcome::Ok(output) => recorder.ok(process, output),
        Outcome::Fail(_) => recorder.fail(process),
        Outcome::Info(_) => recorder.info(process),
    }
    outcome
}

fn input_function(input: &EtcdInput) -> &'static str {
    match input.op {
        EtcdOp::Get => "read",
        EtcdOp::Put { .. } => "write",
        EtcdOp::Cas { .. } => "cas",
        EtcdOp::Delete => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let schedule = |seed| {
            let mut generator = RegisterGenerator::new(RegisterOptions::default(), seed);
            (0..500).map(|_| generator.next_op()).collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
    }

    #[test]
    fn keys_retire_after_their_budget_and_values_are_unique() {
        let options = RegisterOptions {
            keys: 2,
            ops_per_key: 10,
            ..RegisterOptions::default()
        };
        let mut generator = RegisterGenerator::new(options, 1);
        let ops: Vec<EtcdInput> = (0..100).map(|_| generator.next_op()).collect();
        for key in generator.keys() {
            let count = ops.iter().filter(|op| &op.key == key).count();
            assert!(count <= 10, "{key} got {count} operations");
        }
        assert!(generator.keys().len() >= 10);
        let mut written: Vec<&str> = ops
            .iter()
            .filter_map(|op| match &op.op {
                EtcdOp::Put { value, .. } | EtcdOp::Cas { value, .. } => Some(value.as_str()),
                EtcdOp::Get | EtcdOp::Delete => None,
            })
            .collect();
        let total = written.len();
        written.sort_unstable();
        written.dedup();
        assert_eq!(written.len(), total);
    }
}
