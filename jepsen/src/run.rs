//! One live test run, start to verdict: `mnemo-jepsen test` and `mnemo-jepsen bugcheck`.
//!
//! Owns the run's shape (jepsen.md §1.1, §6.3): start a cluster in a fresh run directory, start
//! the nemesis, hand the chosen workload a [`Ctx`] (it runs its workers to the time limit, has
//! the faults healed, runs its final phase and checks what it recorded), add the checks every
//! run shares, and write `test.json` and `results.json` beside the history and the members' logs
//! and data directories.
//!
//! A run is valid only if every check passes: the workload's own (linearizability, Elle, the
//! watch guarantees, lock exclusion...), and
//! - `stats` (non-vacuity): every function the workload requires has some `ok`, the workload
//!   found no problem of its own (keys never read at the end...), and when faults were asked for,
//!   at least one fired;
//! - `logs`: no member panicked;
//! - `hashkv`: after the final phase, every member's `HashKV` at one common revision is the same
//!   (the members' key-value histories agree byte for byte, jepsen.md §6.2).
//!
//! A violation found by any checker makes the run invalid; any other failed or undecided check
//! makes it unknown, which is never a pass.
//!
//! Must not: reach members other than through the workload, [`crate::cluster`] and
//! [`crate::nemesis`], or leave processes behind: the cluster is dropped (members killed) on every
//! path out, panics included, and worker tasks are aborted with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;

use crate::cluster::{Cluster, ClusterOptions, Target};
use crate::history::recorder::Recorder;
use crate::nemesis::{self, NemesisOptions, NemesisReport};
use crate::random::SeededRng;
use crate::report;
pub use crate::workload::Validity;
use crate::workload::{
    CheckResult, Counts, Ctx, WorkloadName, WorkloadOptions, WorkloadReport, append, lease,
    register, watch,
};

/// Attempts of the `HashKV` comparison: a member that is behind refuses a future revision.
const HASHKV_ATTEMPTS: usize = 10;
/// Pause between two attempts of the `HashKV` comparison.
const HASHKV_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Stream number of the nemesis's seeded generator: the workload uses the seed itself, the
/// nemesis and each worker's pacing get forks.
const NEMESIS_STREAM: u64 = u64::MAX;

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// The store under test.
    pub target: Target,
    /// The workload.
    pub workload: WorkloadName,
    /// Every workload's options.
    pub workloads: WorkloadOptions,
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
    /// The nemesis.
    pub nemesis: NemesisOptions,
    /// Deadline of every client request.
    pub request_timeout: Duration,
    /// Wait between the heal and the final phase.
    pub heal_wait: Duration,
    /// Search time allowed per partition of a searching checker.
    pub check_timeout: Duration,
    /// `--snapshot-count` of the members.
    pub snapshot_count: u64,
    /// Lease checkpointing of the members at this interval; `None`: off (the default, as
    /// etcd's).
    pub lease_checkpoint_interval: Option<Duration>,
    /// `--heartbeat-interval` of the members, ms.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` of the members, ms.
    pub election_timeout_ms: u64,
    /// An injected bug the members are told to have (`MNEMO_BUG`); needs a binary built with
    /// the `bug-injection` feature.
    pub bug: Option<String>,
}

/// What a run found.
#[derive(Debug)]
pub struct TestReport {
    /// Where everything was written.
    pub run_dir: PathBuf,
    /// The verdict.
    pub validity: Validity,
    /// Every check, the workload's first, then `stats` and `logs`.
    pub checks: Vec<CheckResult>,
    /// Workload outcomes.
    pub counts: Counts,
    /// What the nemesis did.
    pub nemesis: NemesisReport,
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
                "  {f:<8} ok {:>6}  fail {:>5}  info {:>5}",
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
            "  faults started: {} ({})",
            self.nemesis.started.len(),
            self.nemesis.started.join(",")
        );
        for error in &self.nemesis.errors {
            let _ = writeln!(text, "  nemesis error: {error}");
        }
        for check in &self.checks {
            let _ = writeln!(
                text,
                "  {}: {:?}: {}",
                check.name,
                check.validity,
                check.summary.lines().next().unwrap_or("")
            );
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

    /// The explanations of the checks that found a violation: the smallest failing pieces of
    /// history they found.
    #[must_use]
    pub fn explanations(&self) -> String {
        let mut text = String::new();
        for check in &self.checks {
            if check.validity != Validity::Invalid {
                continue;
            }
            let _ = writeln!(text, "{}: {}", check.name, check.summary);
            if let Some(explanation) = check.details.get("explanation").and_then(|e| e.as_str()) {
                let _ = writeln!(text, "{explanation}");
            }
        }
        text
    }
}

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
    let (workload, nemesis, panics, hashkv) = live_phase(options, &run_dir).await?;

    let mut checks = workload.checks;
    let problems = stats_problems(
        &workload.counts,
        &workload.required,
        &workload.problems,
        &nemesis,
        &options.nemesis,
    );
    checks.push(CheckResult {
        name: "stats".to_owned(),
        validity: if problems.is_empty() {
            Validity::Valid
        } else {
            Validity::Unknown
        },
        summary: if problems.is_empty() {
            format!(
                "{} operations, every required function succeeded",
                workload.counts.total()
            )
        } else {
            problems.join("; ")
        },
        details: json!({ "problems": problems }),
    });
    checks.push(CheckResult {
        name: "logs".to_owned(),
        validity: if panics.is_empty() {
            Validity::Valid
        } else {
            Validity::Unknown
        },
        summary: if panics.is_empty() {
            "no member panicked".to_owned()
        } else {
            format!("{} panic lines in member logs", panics.len())
        },
        details: json!({ "panics": panics }),
    });
    checks.push(hashkv);
    let validity = Validity::combine(checks.iter().map(|check| check.validity));
    let report = TestReport {
        run_dir,
        validity,
        checks,
        counts: workload.counts,
        nemesis,
        elapsed: started.elapsed(),
    };
    write_results_json(&report)?;
    // The verdict stands whatever happens to the report.
    if let Err(error) = report::write(&report.run_dir, &report) {
        eprintln!("warning: the run report was not written: {error:#}");
    }
    Ok(report)
}

/// Starts the cluster and the nemesis, and runs the workload through its final phase and
/// checks. Returns the workload's report, the nemesis's, panic lines of the members' logs, and
/// the `HashKV` comparison.
async fn live_phase(
    options: &TestOptions,
    run_dir: &Path,
) -> anyhow::Result<(WorkloadReport, NemesisReport, Vec<String>, CheckResult)> {
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
            lease_checkpoint_interval: options.lease_checkpoint_interval,
            env,
        })
        .await?,
    );
    eprintln!(
        "cluster of {} up in {:.1?}; running {} for {:?} with {concurrency} workers",
        cluster.len(),
        started.elapsed(),
        options.workload,
        options.time_limit
    );
    let recorder = Arc::new(Recorder::create(
        &run_dir.join("history.jsonl"),
        options.workload.model(),
    )?);
    let deadline = Instant::now() + options.time_limit;
    let nemesis_task = {
        let cluster = Arc::clone(&cluster);
        let recorder = Arc::clone(&recorder);
        let nemesis_options = options.nemesis.clone();
        let rng = SeededRng::fork(options.seed, NEMESIS_STREAM);
        tokio::spawn(async move {
            nemesis::run(&cluster, &recorder, &nemesis_options, rng, deadline).await
        })
    };
    let ctx = Arc::new(Ctx::new(
        Arc::clone(&cluster),
        Arc::clone(&recorder),
        run_dir.to_path_buf(),
        deadline,
        options.seed,
        options.rate,
        concurrency,
        options.request_timeout,
        options.check_timeout,
        options.heal_wait,
        nemesis_task,
    ));
    // On an early return the guard aborts the nemesis, which drops its reference to the
    // cluster; the workload's workers are aborted by their own join sets; the last reference
    // kills the members.
    let _abort_nemesis = AbortNemesisOnDrop(Arc::clone(&ctx));
    let workloads = &options.workloads;
    let report = match options.workload {
        WorkloadName::Register => register::run(Arc::clone(&ctx), &workloads.register).await?,
        WorkloadName::Append => append::run(Arc::clone(&ctx), &workloads.append).await?,
        WorkloadName::Watch => watch::run(Arc::clone(&ctx), &workloads.watch).await?,
        WorkloadName::Lease => lease::run(Arc::clone(&ctx), &workloads.lease).await?,
    };
    // A workload that forgot to end the faults still gets them ended before the verdict.
    ctx.end_faults().await;
    recorder.flush()?;
    let nemesis = ctx.take_nemesis_report().unwrap_or_default();
    let hashkv = compare_hash_kv(&cluster).await;
    Ok((report, nemesis, cluster.panics_in_logs(), hashkv))
}

/// Compares every member's `HashKV` at the lowest current revision among them. Members that
/// disagree on their history at one revision have diverged: invalid. A member that cannot answer
/// within the attempts makes the check unknown.
async fn compare_hash_kv(cluster: &Cluster) -> CheckResult {
    let mut last_problem = String::new();
    for attempt in 0..HASHKV_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(HASHKV_RETRY_PAUSE).await;
        }
        let mut revisions = Vec::with_capacity(cluster.len());
        for index in 0..cluster.len() {
            match cluster.revision(index).await {
                Ok(revision) => revisions.push(revision),
                Err(why) => last_problem = format!("{}: {why:#}", cluster.name(index)),
            }
        }
        let Some(&revision) = revisions
            .iter()
            .min()
            .filter(|_| revisions.len() == cluster.len())
        else {
            continue;
        };
        let mut hashes = BTreeMap::new();
        for index in 0..cluster.len() {
            match cluster.hash_kv(index, revision).await {
                Ok(hash) => {
                    hashes.insert(cluster.name(index).to_owned(), hash);
                }
                Err(why) => last_problem = format!("{why:#}"),
            }
        }
        if hashes.len() < cluster.len() {
            continue;
        }
        let distinct: std::collections::BTreeSet<u32> =
            hashes.values().map(|&(hash, _)| hash).collect();
        let details = json!({
            "revision": revision,
            "hashes": hashes
                .iter()
                .map(|(name, (hash, compact))| (name.clone(), json!({ "hash": hash, "compact_revision": compact })))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
        });
        return if distinct.len() == 1 {
            CheckResult {
                name: "hashkv".to_owned(),
                validity: Validity::Valid,
                summary: format!("every member hashes its history at revision {revision} the same"),
                details,
            }
        } else {
            let mut details = details;
            details["explanation"] =
                json!(format!("HashKV at revision {revision} differs: {hashes:?}"));
            CheckResult {
                name: "hashkv".to_owned(),
                validity: Validity::Invalid,
                summary: format!("members' histories differ at revision {revision}"),
                details,
            }
        };
    }
    CheckResult {
        name: "hashkv".to_owned(),
        validity: Validity::Unknown,
        summary: format!("could not compare HashKV: {last_problem}"),
        details: json!({ "problem": last_problem }),
    }
}

/// Aborts the run's nemesis when dropped.
struct AbortNemesisOnDrop(Arc<Ctx>);

impl Drop for AbortNemesisOnDrop {
    fn drop(&mut self) {
        self.0.abort_nemesis();
    }
}

/// Why the run says too little to count, if it does.
fn stats_problems(
    counts: &Counts,
    required: &[String],
    workload_problems: &[String],
    nemesis: &NemesisReport,
    asked: &NemesisOptions,
) -> Vec<String> {
    let mut problems = Vec::new();
    for f in required {
        if counts.get(f, "ok") == 0 {
            problems.push(format!("no {f} succeeded"));
        }
    }
    problems.extend(workload_problems.iter().cloned());
    if !asked.faults.is_empty() && nemesis.started.is_empty() {
        problems.push("faults were asked for, but none fired".to_owned());
    }
    problems
}

fn write_test_json(options: &TestOptions, run_dir: &Path) -> anyhow::Result<()> {
    let faults: Vec<String> = options
        .nemesis
        .faults
        .iter()
        .map(ToString::to_string)
        .collect();
    let test = json!({
        "target": format!("{:?}", options.target).to_lowercase(),
        "workload": options.workload.name(),
        "workload_options": format!("{:?}", options.workloads),
        "nodes": options.nodes,
        "binary": options.binary.display().to_string(),
        "time_limit_secs": options.time_limit.as_secs_f64(),
        "seed": options.seed,
        "rate": options.rate,
        "concurrency": options.concurrency,
        "nemesis": faults,
        "nemesis_interval_secs": options.nemesis.interval.as_secs_f64(),
        "nemesis_leader_percent": options.nemesis.leader_percent,
        "request_timeout_secs": options.request_timeout.as_secs_f64(),
        "heal_wait_secs": options.heal_wait.as_secs_f64(),
        "snapshot_count": options.snapshot_count,
        "lease_checkpoint_interval_ms": options
            .lease_checkpoint_interval
            .map(|interval| interval.as_millis()),
        "heartbeat_interval_ms": options.heartbeat_interval_ms,
        "election_timeout_ms": options.election_timeout_ms,
        "bug": options.bug,
    });
    let path = run_dir.join("test.json");
    std::fs::write(&path, serde_json::to_string_pretty(&test)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

fn write_results_json(report: &TestReport) -> anyhow::Result<()> {
    let counts: BTreeMap<String, u64> = report
        .counts
        .by_function
        .iter()
        .map(|((f, class), count)| (format!("{f}:{class}"), *count))
        .collect();
    let mut results = json!({
        "valid": report.validity.as_json(),
        "counts": counts,
        "reasons": report.counts.reasons,
        "faults_started": report.nemesis.started,
        "nemesis_errors": report.nemesis.errors,
        "elapsed_secs": report.elapsed.as_secs_f64(),
    });
    for check in &report.checks {
        let mut entry = json!({
            "valid": check.validity.as_json(),
            "summary": check.summary,
        });
        if let (Some(entry), Some(details)) = (entry.as_object_mut(), check.details.as_object()) {
            for (name, value) in details {
                entry.insert(name.clone(), value.clone());
            }
        }
        results[&check.name] = entry;
    }
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
