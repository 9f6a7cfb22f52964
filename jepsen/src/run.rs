//! One live test run, start to verdict: `mnemo-jepsen test` and `mnemo-jepsen bugcheck`.
//!
//! Owns the run's shape (jepsen.md §1.1, §6.3): start a cluster in a fresh run directory, let
//! `concurrency` workers (each pinned to one member, round-robin; every second round of them only
//! reads) send the register workload at
//! about `rate` operations per second while the nemesis hurts the cluster, stop at the time limit,
//! heal, wait, read every key through every member, then check the recorded history and write
//! `results.json`. The run directory keeps `test.json`, `history.jsonl`, `results.json`, and each
//! member's log and data directory.
//!
//! A run is valid only if every check passes:
//! - `linearizable`: the history against the per-key etcd model ([`crate::model::etcd`]);
//! - `stats` (non-vacuity): every function has some `ok`, every key has an `ok` final read, and
//!   when faults were asked for, at least one fired;
//! - `logs`: no member panicked.
//!
//! A violation of linearizability makes the run invalid; any other failed or undecided check
//! makes it unknown, which is never a pass.
//!
//! Must not: reach members other than through [`crate::client`], [`crate::cluster`] and
//! [`crate::nemesis`], or leave processes behind: the cluster is dropped (members killed) on every
//! path out, panics included, and worker tasks are aborted with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::task::JoinSet;

use crate::checker::linearizable::{CheckOptions, Verdict, check};
use crate::client::{Client, Outcome};
use crate::cluster::{Cluster, ClusterOptions};
use crate::history::jsonl::{self, AnyHistory, ModelName};
use crate::history::recorder::Recorder;
use crate::model::Determinized;
use crate::model::etcd::{EtcdInput, EtcdKeyModel, EtcdOp};
use crate::nemesis::{self, NemesisOptions, NemesisReport};
use crate::random::SeededRng;
use crate::workload::register::{RegisterGenerator, RegisterOptions};

/// Attempts of one final read (a failed read changed nothing, so reading again is safe).
const FINAL_READ_ATTEMPTS: usize = 5;
/// Pause between two attempts of a final read.
const FINAL_READ_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Process ids of final reads start here, far above any worker's.
const FINAL_PROCESS_BASE: u64 = 1 << 40;
/// Pause of a worker after an operation that did not succeed.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Distinct error messages kept per outcome class in the summary.
const REASONS_MAX: usize = 12;
/// Stream numbers of the seeded generators: the workload uses the seed itself, the nemesis
/// and each worker's pacing get forks.
const NEMESIS_STREAM: u64 = u64::MAX;

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// Members.
    pub nodes: usize,
    /// The `mnemo` binary.
    pub binary: PathBuf,
    /// Run directories go under this.
    pub store: PathBuf,
    /// Length of the workload phase.
    pub time_limit: Duration,
    /// Seed of the operation and fault schedules.
    pub seed: u64,
    /// Target operations per second, all workers together.
    pub rate: f64,
    /// Workers; 0 means two per member.
    pub concurrency: usize,
    /// The register workload.
    pub register: RegisterOptions,
    /// The nemesis.
    pub nemesis: NemesisOptions,
    /// Deadline of every client request.
    pub request_timeout: Duration,
    /// Wait between the heal and the final reads.
    pub heal_wait: Duration,
    /// Search time allowed per key.
    pub check_timeout: Duration,
    /// `--snapshot-count` of the members.
    pub snapshot_count: u64,
    /// `--heartbeat-interval` of the members, ms.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` of the members, ms.
    pub election_timeout_ms: u64,
    /// An injected bug the members are told to have (`MNEMO_BUG`); needs a binary built with
    /// the `bug-injection` feature.
    pub bug: Option<String>,
}

/// Whether a run passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Every check passed.
    Valid,
    /// The history is not linearizable.
    Invalid,
    /// Some check failed or could not decide; not a pass.
    Unknown,
}

impl Validity {
    fn as_json(self) -> serde_json::Value {
        match self {
            Validity::Valid => json!(true),
            Validity::Invalid => json!(false),
            Validity::Unknown => json!("unknown"),
        }
    }
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
    fn add(&mut self, function: &str, outcome: &Outcome) {
        let (class, reason) = match outcome {
            Outcome::Ok(_) => ("ok", None),
            Outcome::Fail(why) => ("fail", Some(why)),
            Outcome::Info(why) => ("info", Some(why)),
        };
        *self
            .by_function
            .entry((function.to_owned(), class.to_owned()))
            .or_default() += 1;
        if let Some(reason) = reason {
            let reasons = self.reasons.entry(class.to_owned()).or_default();
            let reason: String = reason.chars().take(120).collect();
            if reasons.len() < REASONS_MAX || reasons.contains_key(&reason) {
                *reasons.entry(reason).or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: Counts) {
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

/// What a run found.
#[derive(Debug)]
pub struct TestReport {
    /// Where everything was written.
    pub run_dir: PathBuf,
    /// The verdict.
    pub validity: Validity,
    /// The linearizability verdict, printed.
    pub linearizable: String,
    /// Non-vacuity problems, empty when the stats check passed.
    pub stats_problems: Vec<String>,
    /// Panics found in member logs.
    pub panics: Vec<String>,
    /// Workload outcomes.
    pub counts: Counts,
    /// Final reads: ok of attempted.
    pub final_reads: (u64, u64),
    /// What the nemesis did.
    pub nemesis: NemesisReport,
    /// Operations in the checked history (failed ones dropped).
    pub checked_ops: usize,
    /// How long the check took.
    pub check_time: Duration,
    /// The whole run.
    pub elapsed: Duration,
}

impl TestReport {
    /// A human summary.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let functions: std::collections::BTreeSet<&String> =
            self.counts.by_function.keys().map(|(f, _)| f).collect();
        for f in functions {
            let _ = writeln!(
                text,
                "  {f:<5} ok {:>5}  fail {:>5}  info {:>5}",
                self.counts.get(f, "ok"),
                self.counts.get(f, "fail"),
                self.counts.get(f, "info")
            );
        }
        for (class, reasons) in &self.counts.reasons {
            for (reason, count) in reasons {
                let _ = writeln!(text, "  {class} x{count}: {reason}");
            }
        }
        let _ = writeln!(
            text,
            "  final reads ok {} of {}\n  faults started: {} ({})",
            self.final_reads.0,
            self.final_reads.1,
            self.nemesis.started.len(),
            self.nemesis.started.join(",")
        );
        for error in &self.nemesis.errors {
            let _ = writeln!(text, "  nemesis error: {error}");
        }
        let _ = writeln!(
            text,
            "  linearizable: {} ({} operations checked in {:.2?})",
            self.linearizable.lines().next().unwrap_or(""),
            self.checked_ops,
            self.check_time
        );
        for problem in &self.stats_problems {
            let _ = writeln!(text, "  stats: {problem}");
        }
        for panic in &self.panics {
            let _ = writeln!(text, "  member panic: {panic}");
        }
        let _ = writeln!(
            text,
            "verdict: {:?} after {:.1?}; run directory {}",
            self.validity,
            self.elapsed,
            self.run_dir.display()
        );
        text
    }
}

/// The shared state of the workload phase.
struct Workload {
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    generator: Mutex<RegisterGenerator>,
    deadline: Instant,
    concurrency: usize,
    /// Mean pause between two operations of one worker.
    mean_pause: Duration,
    request_timeout: Duration,
    seed: u64,
}

/// What the live phase observed, for the checks.
struct Observed {
    history_path: PathBuf,
    counts: Counts,
    nemesis: NemesisReport,
    keys: Vec<String>,
    final_reads: FinalReads,
    panics: Vec<String>,
}

/// Final reads: ok reads, attempted reads, keys without any ok read.
type FinalReads = (u64, u64, Vec<String>);

/// Runs one test.
///
/// # Errors
/// When the run could not be carried out (the cluster did not start, a file could not be
/// written); a bad verdict is not an error.
pub async fn run_test(options: &TestOptions) -> anyhow::Result<TestReport> {
    let started = Instant::now();
    if options.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let run_dir = options.store.join(timestamp());
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("create the run directory {}", run_dir.display()))?;
    write_test_json(options, &run_dir)?;
    let observed = live_phase(options, &run_dir).await?;
    eprintln!("checking {}", observed.history_path.display());
    let check_started = Instant::now();
    let check_options = CheckOptions {
        partition_time_budget: options.check_timeout,
        ..CheckOptions::default()
    };
    let path = observed.history_path.clone();
    let (verdict, checked_ops) = tokio::task::spawn_blocking(move || {
        let reader = BufReader::new(File::open(&path)?);
        let AnyHistory::Etcd(history) = jsonl::parse(reader)? else {
            bail!("the recorder wrote a history for another model");
        };
        let verdict = check(&Determinized(EtcdKeyModel), &history, &check_options);
        Ok((verdict, history.len()))
    })
    .await
    .context("the checker panicked")??;
    let check_time = check_started.elapsed();

    let stats_problems = stats_problems(&observed, &options.nemesis);
    let validity = match &verdict {
        Verdict::NotLinearizable { .. } => Validity::Invalid,
        Verdict::Unknown { .. } => Validity::Unknown,
        Verdict::Linearizable if !stats_problems.is_empty() || !observed.panics.is_empty() => {
            Validity::Unknown
        }
        Verdict::Linearizable => Validity::Valid,
    };
    let linearizable = match &verdict {
        Verdict::NotLinearizable { diagnostic, .. } => format!("{verdict}\n{diagnostic}"),
        Verdict::Linearizable | Verdict::Unknown { .. } => verdict.to_string(),
    };
    let report = TestReport {
        run_dir,
        validity,
        linearizable,
        stats_problems,
        panics: observed.panics,
        counts: observed.counts,
        final_reads: (observed.final_reads.0, observed.final_reads.1),
        nemesis: observed.nemesis,
        checked_ops,
        check_time,
        elapsed: started.elapsed(),
    };
    write_results_json(&report, &verdict, &observed.final_reads.2)?;
    Ok(report)
}

/// Starts the cluster, runs the workload and the nemesis until the time limit, heals, waits,
/// reads every key, and stops the cluster.
async fn live_phase(options: &TestOptions, run_dir: &Path) -> anyhow::Result<Observed> {
    let started = Instant::now();
    let concurrency = if options.concurrency == 0 {
        2 * options.nodes
    } else {
        options.concurrency
    };
    let env = options
        .bug
        .iter()
        .map(|bug| ("MNEMO_BUG".to_owned(), bug.clone()))
        .collect();
    let cluster = Arc::new(
        Cluster::start(ClusterOptions {
            nodes: options.nodes,
            binary: options.binary.clone(),
            run_dir: run_dir.to_path_buf(),
            heartbeat_interval_ms: options.heartbeat_interval_ms,
            election_timeout_ms: options.election_timeout_ms,
            snapshot_count: options.snapshot_count,
            env,
        })
        .await?,
    );
    eprintln!(
        "cluster of {} up in {:.1?}; running {:?} with {concurrency} workers",
        cluster.len(),
        started.elapsed(),
        options.time_limit
    );
    let history_path = run_dir.join("history.jsonl");
    let recorder = Arc::new(Recorder::create(&history_path, ModelName::Etcd)?);
    let deadline = Instant::now() + options.time_limit;
    let workers_count = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let workload = Arc::new(Workload {
        cluster: Arc::clone(&cluster),
        recorder: Arc::clone(&recorder),
        generator: Mutex::new(RegisterGenerator::new(
            options.register.clone(),
            options.seed,
        )),
        deadline,
        concurrency,
        mean_pause: Duration::from_secs_f64(f64::from(workers_count) / options.rate),
        request_timeout: options.request_timeout,
        seed: options.seed,
    });

    // Dropping the set (on any early return) aborts the workers, and the guard aborts the
    // nemesis, which drops their references to the cluster; the last one kills the members.
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        workers.spawn(run_worker(Arc::clone(&workload), worker));
    }
    let nemesis_task = {
        let cluster = Arc::clone(&cluster);
        let recorder = Arc::clone(&recorder);
        let nemesis_options = options.nemesis.clone();
        let rng = SeededRng::fork(options.seed, NEMESIS_STREAM);
        tokio::spawn(async move {
            nemesis::run(&cluster, &recorder, &nemesis_options, rng, deadline).await
        })
    };
    let _abort_nemesis = AbortOnDrop(nemesis_task.abort_handle());
    let mut counts = Counts::default();
    while let Some(joined) = workers.join_next().await {
        counts.merge(joined.context("a worker panicked")??);
    }
    let nemesis = match nemesis_task.await {
        Ok(report) => report,
        Err(panic) => NemesisReport {
            errors: vec![format!("the nemesis panicked: {panic}")],
            ..NemesisReport::default()
        },
    };
    // The nemesis healed on its way out; heal again in case it died.
    let late_failures = cluster.heal_all().await;
    if !late_failures.is_empty() {
        recorder.nemesis("heal", json!({ "errors": late_failures }));
    }
    eprintln!(
        "workload done ({} operations); healed, waiting {:?} before the final reads",
        counts.total(),
        options.heal_wait
    );
    tokio::time::sleep(options.heal_wait).await;
    let keys = lock(&workload.generator).keys().to_vec();
    let final_reads = final_reads(&cluster, &recorder, &keys, options.request_timeout).await?;
    recorder.flush()?;
    Ok(Observed {
        history_path,
        counts,
        nemesis,
        keys,
        final_reads,
        panics: cluster.panics_in_logs(),
    })
}

/// Locks `mutex`, poisoned or not: what it guards stays consistent across a panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One worker: pinned to member `worker % nodes`, a reader or a mixed worker, it sends
/// operations until the deadline, one at a time, pausing a random while before each so that all workers together keep about the
/// target rate. An `info` retires its process id; it continues as `id + concurrency`.
async fn run_worker(workload: Arc<Workload>, worker: usize) -> anyhow::Result<Counts> {
    let nodes = workload.cluster.len();
    let node = worker % nodes;
    // Workers go round the members; every second round reads only (Jepsen's register keeps half
    // its threads for reads), so with two workers per member each has one of each.
    let reader = (worker / nodes) % 2 == 1;
    let mut client = Client::new(&workload.cluster.endpoint(node), workload.request_timeout)?;
    let mut rng = SeededRng::fork(workload.seed, worker as u64);
    let mut process = worker as u64;
    let mut counts = Counts::default();
    let concurrency = workload.concurrency as u64;
    // Each operation takes at least one pause or one round trip; the bound is far above what a
    // run reaches and only guards against a clock that never advances.
    for _ in 0..10_000_000_u64 {
        let pause = rng.duration_between(Duration::ZERO, workload.mean_pause * 2);
        let remaining = workload.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        tokio::time::sleep(pause.min(remaining)).await;
        if Instant::now() >= workload.deadline {
            break;
        }
        let input = if reader {
            lock(&workload.generator).next_read(&mut rng)
        } else {
            lock(&workload.generator).next_op()
        };
        let outcome = invoke_and_record(&workload.recorder, &mut client, process, &input).await;
        counts.add(input_function(&input), &outcome);
        if matches!(outcome, Outcome::Info(_)) {
            process += concurrency;
        }
        if !matches!(outcome, Outcome::Ok(_)) {
            // A member that refuses at once would otherwise be sent operations as fast as it
            // refuses them; every unknown one stays open to the end of its key's history and
            // multiplies the checker's work, while adding little evidence.
            let remaining = workload.deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(ERROR_BACKOFF.min(remaining)).await;
        }
    }
    Ok(counts)
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

/// Reads every key through every member, each read retried a few times if it fails. Returns
/// (ok reads, attempted reads, keys without any ok read).
async fn final_reads(
    cluster: &Arc<Cluster>,
    recorder: &Arc<Recorder>,
    keys: &[String],
    timeout: Duration,
) -> anyhow::Result<FinalReads> {
    let mut readers = JoinSet::new();
    for node in 0..cluster.len() {
        let mut client = Client::new(&cluster.endpoint(node), timeout)?;
        let recorder = Arc::clone(recorder);
        let keys = keys.to_vec();
        readers.spawn(async move {
            let process = FINAL_PROCESS_BASE + node as u64;
            let mut read: Vec<(String, bool)> = Vec::with_capacity(keys.len());
            let mut attempts = 0_u64;
            for key in keys {
                let input = EtcdInput {
                    key: key.clone(),
                    op: EtcdOp::Get,
                };
                let mut ok = false;
                for attempt in 0..FINAL_READ_ATTEMPTS {
                    if attempt > 0 {
                        tokio::time::sleep(FINAL_READ_RETRY_PAUSE).await;
                    }
                    attempts += 1;
                    let outcome = invoke_and_record(&recorder, &mut client, process, &input).await;
                    if matches!(outcome, Outcome::Ok(_)) {
                        ok = true;
                        break;
                    }
                }
                read.push((key, ok));
            }
            (read, attempts)
        });
    }
    let mut ok_count = 0;
    let mut attempted = 0;
    let mut read_somewhere: BTreeMap<String, bool> = BTreeMap::new();
    while let Some(joined) = readers.join_next().await {
        let (read, attempts) = joined.context("a final reader panicked")?;
        attempted += attempts;
        for (key, ok) in read {
            ok_count += u64::from(ok);
            *read_somewhere.entry(key).or_default() |= ok;
        }
    }
    let unread = read_somewhere
        .into_iter()
        .filter(|&(_, ok)| !ok)
        .map(|(key, _)| key)
        .collect();
    Ok((ok_count, attempted, unread))
}

/// Why the run says too little to count, if it does.
fn stats_problems(observed: &Observed, nemesis: &NemesisOptions) -> Vec<String> {
    let mut problems = Vec::new();
    for f in ["read", "write", "cas"] {
        if observed.counts.get(f, "ok") == 0 {
            problems.push(format!("no {f} succeeded"));
        }
    }
    let unread = &observed.final_reads.2;
    if !unread.is_empty() {
        problems.push(format!(
            "{} of {} keys had no successful final read: {}",
            unread.len(),
            observed.keys.len(),
            unread.join(", ")
        ));
    }
    if !nemesis.faults.is_empty() && observed.nemesis.started.is_empty() {
        problems.push("faults were asked for, but none fired".to_owned());
    }
    problems
}

fn write_test_json(options: &TestOptions, run_dir: &std::path::Path) -> anyhow::Result<()> {
    let faults: Vec<String> = options
        .nemesis
        .faults
        .iter()
        .map(ToString::to_string)
        .collect();
    let test = json!({
        "workload": "register",
        "nodes": options.nodes,
        "binary": options.binary.display().to_string(),
        "time_limit_secs": options.time_limit.as_secs_f64(),
        "seed": options.seed,
        "rate": options.rate,
        "concurrency": options.concurrency,
        "keys": options.register.keys,
        "ops_per_key": options.register.ops_per_key,
        "nemesis": faults,
        "nemesis_interval_secs": options.nemesis.interval.as_secs_f64(),
        "nemesis_leader_percent": options.nemesis.leader_percent,
        "request_timeout_secs": options.request_timeout.as_secs_f64(),
        "heal_wait_secs": options.heal_wait.as_secs_f64(),
        "snapshot_count": options.snapshot_count,
        "heartbeat_interval_ms": options.heartbeat_interval_ms,
        "election_timeout_ms": options.election_timeout_ms,
        "bug": options.bug,
    });
    let path = run_dir.join("test.json");
    std::fs::write(&path, serde_json::to_string_pretty(&test)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

fn write_results_json(
    report: &TestReport,
    verdict: &Verdict,
    unread: &[String],
) -> anyhow::Result<()> {
    let linearizable = match verdict {
        Verdict::Linearizable => Validity::Valid,
        Verdict::NotLinearizable { .. } => Validity::Invalid,
        Verdict::Unknown { .. } => Validity::Unknown,
    };
    let counts: BTreeMap<String, u64> = report
        .counts
        .by_function
        .iter()
        .map(|((f, class), count)| (format!("{f}:{class}"), *count))
        .collect();
    let results = json!({
        "valid": report.validity.as_json(),
        "linearizable": {
            "valid": linearizable.as_json(),
            "verdict": report.linearizable,
            "operations_checked": report.checked_ops,
            "check_secs": report.check_time.as_secs_f64(),
        },
        "stats": {
            "valid": report.stats_problems.is_empty(),
            "problems": report.stats_problems,
            "counts": counts,
            "reasons": report.counts.reasons,
            "final_reads_ok": report.final_reads.0,
            "final_reads_attempted": report.final_reads.1,
            "keys_unread": unread,
            "faults_started": report.nemesis.started,
            "nemesis_errors": report.nemesis.errors,
        },
        "logs": {
            "valid": report.panics.is_empty(),
            "panics": report.panics,
        },
        "elapsed_secs": report.elapsed.as_secs_f64(),
    });
    let path = report.run_dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

/// The run directory's name: UTC time to the millisecond, `20250102T030405.678Z`.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        now.subsec_millis()
    )
}

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01: count in
/// 400-year eras starting on March 1st, so that leap days fall at the end of a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * month_index + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    })
    .unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
