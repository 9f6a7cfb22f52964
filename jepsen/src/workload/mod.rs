//! Workloads: what the clients ask of the cluster, how they check what came back, and the
//! interface every workload shares with the runner.
//!
//! Owns the workload interface. The runner ([`crate::run`]) starts the cluster and the nemesis
//! and hands a workload a [`Ctx`]; the workload then
//! 1. runs its workers against the members until [`Ctx::deadline`], recording every operation in
//!    [`Ctx::recorder`] (and any files of its own in [`Ctx::run_dir`]);
//! 2. calls [`Ctx::end_faults`] once, which waits for the nemesis to stop, heals the cluster and
//!    waits the heal time;
//! 3. runs its final phase (final reads, watch convergence, ...);
//! 4. checks what it recorded and returns a [`WorkloadReport`]: outcome counts, the functions that
//!    must have succeeded at least once, its checks, and any non-vacuity problems.
//!
//! The runner adds the checks every workload shares (the nemesis fired, no member panicked) and
//! writes `results.json`. A workload's generators are pure functions of the seed: they decide
//! the sequence of operations, never when they run.
//!
//! Must not: start or stop members, or inject faults (the nemesis does); a workload only talks to
//! members through the clients it makes from [`Ctx::cluster`]'s endpoints.

pub mod append;
pub mod lease;
pub mod register;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::task::{JoinHandle, JoinSet};

use crate::cluster::Cluster;
use crate::history::jsonl::ModelName;
use crate::history::recorder::Recorder;
use crate::nemesis::NemesisReport;
use crate::random::SeededRng;

/// Distinct error messages kept per outcome class in the counts.
const REASONS_MAX: usize = 12;
/// Characters of an error message kept in the counts.
const REASON_CHARS_MAX: usize = 120;
/// Pause of a worker after an operation whose outcome is unknown (and, as a workload chooses,
/// after other failures): every unknown operation stays open to the end of its key's history
/// and multiplies the checker's work, so a member that times out should not be sent many.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Process ids of final-phase clients start here, far above any worker's.
pub const FINAL_PROCESS_BASE: u64 = 1 << 40;
/// Attempts of one final read (a failed read changed nothing, so reading again is safe).
const FINAL_READ_ATTEMPTS: usize = 5;
/// Pause between two attempts of a final read.
const FINAL_READ_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadName {
    /// Per-key reads, writes and compare-and-sets; linearizability.
    Register,
    /// Multi-key list-append transactions; strict serializability.
    Append,
    /// Writers and resuming watchers; the watch guarantees.
    Watch,
    /// Keys under leases, and locks guarding a counter; lease and lock safety.
    Lease,
}

impl WorkloadName {
    /// Every workload, in the order `--workload all` runs them.
    pub const ALL: [WorkloadName; 4] = [
        WorkloadName::Register,
        WorkloadName::Append,
        WorkloadName::Watch,
        WorkloadName::Lease,
    ];

    /// The name on the command line and in `test.json`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            WorkloadName::Register => "register",
            WorkloadName::Append => "append",
            WorkloadName::Watch => "watch",
            WorkloadName::Lease => "lease",
        }
    }

    /// The vocabulary of its `history.jsonl`.
    #[must_use]
    pub fn model(self) -> ModelName {
        match self {
            WorkloadName::Register => ModelName::Etcd,
            WorkloadName::Append => ModelName::Append,
            WorkloadName::Watch => ModelName::Watch,
            WorkloadName::Lease => ModelName::Lease,
        }
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        WorkloadName::ALL
            .into_iter()
            .find(|workload| workload.name() == text)
            .ok_or_else(|| {
                format!("unknown workload {text:?} (expected register, append, watch or lease)")
            })
    }
}

/// Every workload's options; each workload reads its own.
#[derive(Clone, Debug, Default)]
pub struct WorkloadOptions {
    /// `register`.
    pub register: register::RegisterOptions,
    /// `append`.
    pub append: append::AppendOptions,
    /// `watch`.
    pub watch: watch::WatchOptions,
    /// `lease`.
    pub lease: lease::LeaseOptions,
}

/// Whether a check, or a run, passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// It passed.
    Valid,
    /// It found a violation.
    Invalid,
    /// It could not decide, or the run says too little; never a pass.
    Unknown,
}

impl Validity {
    /// `true`, `false` or `"unknown"`, as `results.json` writes it.
    #[must_use]
    pub fn as_json(self) -> serde_json::Value {
        match self {
            Validity::Valid => json!(true),
            Validity::Invalid => json!(false),
            Validity::Unknown => json!("unknown"),
        }
    }

    /// The verdict of several checks: invalid if any is, else unknown if any is, else valid.
    #[must_use]
    pub fn combine(all: impl IntoIterator<Item = Validity>) -> Validity {
        all.into_iter()
            .fold(Validity::Valid, |so_far, next| match (so_far, next) {
                (Validity::Invalid, _) | (_, Validity::Invalid) => Validity::Invalid,
                (Validity::Unknown, _) | (_, Validity::Unknown) => Validity::Unknown,
                (Validity::Valid, Validity::Valid) => Validity::Valid,
            })
    }
}

/// One checker's verdict on a run.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The checker: `linearizable`, `elle`, `watch`, `lock`, ...
    pub name: String,
    /// Its verdict.
    pub validity: Validity,
    /// One line for the summary.
    pub summary: String,
    /// Everything else it wants in `results.json` (anomalies, counts, timings); for an invalid
    /// verdict, the smallest failing piece of history it found, as text, under `"explanation"`.
    pub details: serde_json::Value,
}

/// What a workload found.
#[derive(Clone, Debug, Default)]
pub struct WorkloadReport {
    /// Outcomes of every operation, by function.
    pub counts: Counts,
    /// Functions that must have at least one `ok` for the run to say anything.
    pub required: Vec<String>,
    /// The workload's checks.
    pub checks: Vec<CheckResult>,
    /// Non-vacuity problems the workload found itself (keys never read at the end, watchers
    /// that never converged...); any makes the run unknown.
    pub problems: Vec<String>,
}

/// Counts of outcomes by function.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// (function, outcome) → operations.
    pub by_function: BTreeMap<(String, String), u64>,
    /// outcome → (reason → operations), a few reasons each.
    pub reasons: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Counts {
    /// Counts one operation of `function` that ended `class` (`ok`, `fail` or `info`), for
    /// `reason` when it did not succeed.
    pub fn add(&mut self, function: &str, class: &str, reason: Option<&str>) {
        *self
            .by_function
            .entry((function.to_owned(), class.to_owned()))
            .or_default() += 1;
        if let Some(reason) = reason {
            let reasons = self.reasons.entry(class.to_owned()).or_default();
            let reason: String = reason.chars().take(REASON_CHARS_MAX).collect();
            if reasons.len() < REASONS_MAX || reasons.contains_key(&reason) {
                *reasons.entry(reason).or_default() += 1;
            }
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Counts) {
        for (key, count) in other.by_function {
            *self.by_function.entry(key).or_default() += count;
        }
        for (class, reasons) in other.reasons {
            let mine = self.reasons.entry(class).or_default();
            for (reason, count) in reasons {
                if mine.len() < REASONS_MAX || mine.contains_key(&reason) {
                    *mine.entry(reason).or_default() += count;
                }
            }
        }
    }

    /// Operations of `function` that ended `class`.
    #[must_use]
    pub fn get(&self, function: &str, class: &str) -> u64 {
        self.by_function
            .get(&(function.to_owned(), class.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Operations in all.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_function.values().sum()
    }
}

/// What a workload gets from the runner.
pub struct Ctx {
    /// The members.
    pub cluster: Arc<Cluster>,
    /// `history.jsonl`, whose header names [`WorkloadName::model`].
    pub recorder: Arc<Recorder>,
    /// The run directory, for files of the workload's own.
    pub run_dir: PathBuf,
    /// When the workers stop.
    pub deadline: Instant,
    /// The run's seed; fork it ([`SeededRng::fork`]) for each worker.
    pub seed: u64,
    /// Target operations per second, all workers together.
    pub rate: f64,
    /// Workers (never 0).
    pub concurrency: usize,
    /// Deadline of every client request.
    pub request_timeout: Duration,
    /// Search time allowed per partition of a checker that searches.
    pub check_timeout: Duration,
    heal_wait: Duration,
    nemesis: Mutex<Option<JoinHandle<NemesisReport>>>,
    nemesis_report: Mutex<Option<NemesisReport>>,
}

impl Ctx {
    /// A context whose nemesis is `nemesis` (already running until `deadline`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        recorder: Arc<Recorder>,
        run_dir: PathBuf,
        deadline: Instant,
        seed: u64,
        rate: f64,
        concurrency: usize,
        request_timeout: Duration,
        check_timeout: Duration,
        heal_wait: Duration,
        nemesis: JoinHandle<NemesisReport>,
    ) -> Ctx {
        Ctx {
            cluster,
            recorder,
            run_dir,
            deadline,
            seed,
            rate,
            concurrency,
            request_timeout,
            check_timeout,
            heal_wait,
            nemesis: Mutex::new(Some(nemesis)),
            nemesis_report: Mutex::new(None),
        }
    }

    /// Mean pause between two operations of one worker, so that all workers together keep
    /// about [`Ctx::rate`].
    #[must_use]
    pub fn mean_pause(&self) -> Duration {
        let workers = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        Duration::from_secs_f64(f64::from(workers) / self.rate)
    }

    /// Sleeps a random pause (uniform in 0..2×[`Ctx::mean_pause`]), cut short by the deadline.
    /// Returns whether the deadline has passed, when the worker must stop.
    pub async fn pace(&self, rng: &mut SeededRng) -> bool {
        let pause = rng.duration_between(Duration::ZERO, self.mean_pause() * 2);
        self.sleep_within(pause).await;
        Instant::now() >= self.deadline
    }

    /// Sleeps `duration`, or until the deadline if that comes first.
    pub async fn sleep_within(&self, duration: Duration) {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(duration.min(remaining)).await;
    }

    /// Waits for the nemesis to stop (it stops at the deadline), heals every fault, and waits
    /// the heal time, so that the final phase starts on a whole, settled cluster. Call it once,
    /// after the workers have stopped; later calls return at once.
    pub async fn end_faults(&self) {
        let handle = lock(&self.nemesis).take();
        let Some(handle) = handle else {
            return;
        };
        let report = match handle.await {
            Ok(report) => report,
            Err(panic) => NemesisReport {
                errors: vec![format!("the nemesis panicked: {panic}")],
                ..NemesisReport::default()
            },
        };
        *lock(&self.nemesis_report) = Some(report);
        // The nemesis healed on its way out; heal again in case it died.
        let late_failures = self.cluster.heal_all().await;
        if !late_failures.is_empty() {
            self.recorder
                .nemesis("heal", json!({ "errors": late_failures }));
        }
        eprintln!("faults healed; waiting {:?}", self.heal_wait);
        tokio::time::sleep(self.heal_wait).await;
    }

    /// What the nemesis did; complete once [`Ctx::end_faults`] has run.
    pub(crate) fn take_nemesis_report(&self) -> Option<NemesisReport> {
        lock(&self.nemesis_report).take()
    }

    /// Aborts the nemesis if it still runs (the runner's way out on an error).
    pub(crate) fn abort_nemesis(&self) {
        if let Some(handle) = lock(&self.nemesis).as_ref() {
            handle.abort();
        }
    }
}

/// What the final reads found.
#[derive(Clone, Debug, Default)]
pub struct FinalReads {
    /// Reads that succeeded.
    pub ok: u64,
    /// Reads attempted, retries included.
    pub attempted: u64,
    /// Keys no member could read.
    pub unread: Vec<String>,
}

impl FinalReads {
    /// The non-vacuity problem of keys nobody could read, if any; `of` is how many keys there
    /// were.
    #[must_use]
    pub fn problem(&self, of: usize) -> Option<String> {
        (!self.unread.is_empty()).then(|| {
            format!(
                "{} of {of} keys had no successful final read: {}",
                self.unread.len(),
                self.unread.join(", ")
            )
        })
    }
}

/// The final phase's reads: every key through every member, `per_read` keys at a time, each
/// read retried a few times if it fails. `reader(node, process)` makes member `node`'s reader,
/// which records one read of the keys it is given under `process` and says whether it
/// succeeded; it must never end `info` (a read changes nothing, so its failures are `fail`).
///
/// # Errors
/// When a reader cannot be made or panics.
pub async fn final_reads<R, Fut>(
    ctx: &Ctx,
    keys: &[String],
    per_read: usize,
    reader: impl Fn(usize, u64) -> anyhow::Result<R>,
) -> anyhow::Result<FinalReads>
where
    R: Fn(Vec<String>) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let mut readers = JoinSet::new();
    for node in 0..ctx.cluster.len() {
        let read = reader(node, FINAL_PROCESS_BASE + node as u64)?;
        let keys = keys.to_vec();
        readers.spawn(async move {
            let mut outcome: Vec<(String, bool)> = Vec::with_capacity(keys.len());
            let (mut ok, mut attempted) = (0_u64, 0_u64);
            for chunk in keys.chunks(per_read.max(1)) {
                let mut done = false;
                for attempt in 0..FINAL_READ_ATTEMPTS {
                    if attempt > 0 {
                        tokio::time::sleep(FINAL_READ_RETRY_PAUSE).await;
                    }
                    attempted += 1;
                    if read(chunk.to_vec()).await {
                        done = true;
                        ok += 1;
                        break;
                    }
                }
                outcome.extend(chunk.iter().map(|key| (key.clone(), done)));
            }
            (outcome, ok, attempted)
        });
    }
    let mut found = FinalReads::default();
    let mut read_somewhere: BTreeMap<String, bool> = BTreeMap::new();
    while let Some(joined) = readers.join_next().await {
        let (outcome, ok, attempted) = joined.context("a final reader panicked")?;
        found.ok += ok;
        found.attempted += attempted;
        for (key, done) in outcome {
            *read_somewhere.entry(key).or_default() |= done;
        }
    }
    found.unread = read_somewhere
        .into_iter()
        .filter(|&(_, done)| !done)
        .map(|(key, _)| key)
        .collect();
    Ok(found)
}

/// Locks `mutex`, poisoned or not: what the harness guards stays consistent across a panic.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
