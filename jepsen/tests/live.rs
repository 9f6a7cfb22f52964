//! Live runs of the harness against real `mnemo` processes (3 members on loopback).
//!
//! - `smoke_register_under_kill_and_partition`: a short register run with kill and partition
//!   faults must be judged valid, with every fault class having fired and every function having
//!   succeeded (the stats check makes a vacuous run unknown, which fails this test).
//! - `bugcheck_catches_*`: the same harness against members built with the `bug-injection`
//!   feature and run with `MNEMO_BUG=<bug>`, with the workload and faults `mnemo_jepsen::bugs`
//!   gives each bug, must judge the run invalid (`stale-local-read`: linearizable reads skip the
//!   read barrier; `ack-before-commit`: a stalled Put is acknowledged anyway).
//! - `etcd_register_under_kill_and_partition`: the register smoke run against real etcd
//!   (`/usr/bin/etcd`, Debian's etcd-server) must be valid too: one harness judges both systems.
//! - `smoke_append_under_kill_and_partition`: a short list-append run with kill and partition
//!   faults must be judged strict serializable by Elle-lite, with both fault classes fired.
//! - `bugcheck_catches_txn_compare_after_writes`: members with `MNEMO_BUG=txn-compare-after-writes`
//!   (a Txn writes its success branch, then judges its compares on the result) must be judged
//!   invalid by Elle-lite without any fault: every guarded append writes yet reports a failed
//!   guard, and later reads see those values (G1a).
//! - `smoke_watch_under_kill_and_partition`: a short watch run (writers, resuming watchers,
//!   collectors) under kill and partition faults must be judged valid, with watchers having
//!   resumed and every watch guarantee held.
//! - `bugcheck_catches_watch_skip_on_resume`: against `MNEMO_BUG=watch-skip-on-resume` (a watcher
//!   that must catch up from a past revision starts one revision late) the watch checker must
//!   find resumable violations.
//! - `smoke_lease_under_kill_and_pause`: a short `lease` run (keys under leases, locks guarding a
//!   counter) under kill and pause faults must be judged valid by the `lease` and `lock`
//!   checkers, with both faults fired.
//! - `bugcheck_catches_lease_expire_local`: against `MNEMO_BUG=lease-expire-local` (followers
//!   expire leases by their own clock and delete the keys locally), isolating and pausing
//!   followers must make the `lease` checker find keys missing while their leases surely live.
//!   The members keep 10,000 entries between snapshots here, so a follower back from a fault
//!   replays the log and keeps the damage; with the usual 100 it installs a snapshot, which
//!   repairs its state before any read reaches it.
//!
//! The member binaries come from the target directory these tests were built in:
//! `<target>/debug/mnemo` (`cargo build --bin mnemo` at the repository root) and
//! `<target>/debug/mnemo-bug-injection` (a copy of the binary built with
//! `cargo build --bin mnemo --features bug-injection`); `scripts/test` builds both first. A missing
//! binary fails the test; it never skips.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use mnemo_jepsen::cluster::{ETCD_BINARY_DEFAULT, Target, own_target_dir};
use mnemo_jepsen::nemesis::{Fault, NemesisOptions};
use mnemo_jepsen::run::{TestOptions, TestReport, Validity, run_test};
use mnemo_jepsen::workload::register::RegisterOptions;
use mnemo_jepsen::workload::{CheckResult, WorkloadName, WorkloadOptions};

/// Live runs share two cores with the checker; one at a time keeps their timing honest.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The member binary named `name` in `<target>/debug`, or a failure that says how to build it.
fn binary(name: &str, build: &str) -> PathBuf {
    let target = own_target_dir().expect("the test binary lives in a cargo target directory");
    let path = target.join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing; build it at the repository root with `{build}` (same CARGO_TARGET_DIR)",
        path.display()
    );
    path
}

fn options(workload: WorkloadName, binary: PathBuf, faults: Vec<Fault>, seed: u64) -> TestOptions {
    TestOptions {
        target: Target::Mnemo,
        workload,
        workloads: WorkloadOptions {
            register: RegisterOptions {
                ops_per_key: 100,
                ..RegisterOptions::default()
            },
            ..WorkloadOptions::default()
        },
        nodes: 3,
        binary,
        store: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jepsen-live"),
        time_limit: Duration::from_secs(16),
        seed,
        rate: 40.0,
        concurrency: 0,
        nemesis: NemesisOptions {
            faults,
            interval: Duration::from_secs(3),
            leader_percent: 50,
            partition_shapes: Vec::new(),
        },
        request_timeout: Duration::from_secs(2),
        heal_wait: Duration::from_secs(3),
        check_timeout: Duration::from_secs(20),
        snapshot_count: 100,
        lease_checkpoint_interval: None,
        heartbeat_interval_ms: 100,
        election_timeout_ms: 1000,
        bug: None,
    }
}

/// The check of `report` named `name`.
fn check<'a>(report: &'a TestReport, name: &str) -> &'a CheckResult {
    report
        .checks
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("the run has no {name} check"))
}

/// Runs `options` on a runtime of its own, one run at a time.
fn run(options: &TestOptions) -> TestReport {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = tokio::runtime::Runtime::new().expect("start a runtime");
    let report = runtime
        .block_on(run_test(options))
        .expect("the run is carried out");
    eprintln!("{}", report.summary());
    report
}

/// A clean run of `workload` on `binary` under `faults` must be valid, with every fault class
/// having fired. A failing run's directory is kept for inspection; a passing one only takes
/// space.
fn smoke(options: &TestOptions) -> TestReport {
    let report = run(options);
    assert_eq!(
        report.validity,
        Validity::Valid,
        "{} run not valid; see {}\n{}{}",
        options.workload,
        report.run_dir.display(),
        report.summary(),
        report.explanations()
    );
    for fault in &options.nemesis.faults {
        let fault = fault.to_string();
        assert!(
            report.nemesis.started.contains(&fault),
            "no {fault} fired: {:?}",
            report.nemesis.started
        );
    }
    let _ = std::fs::remove_dir_all(&report.run_dir);
    report
}

/// A clean run of `workload` on the plain member under `faults`; see [`smoke`].
fn smoke_mnemo(workload: WorkloadName, faults: Vec<Fault>, seed: u64) -> TestReport {
    let binary = binary("mnemo", "cargo build --bin mnemo");
    smoke(&options(workload, binary, faults, seed))
}

/// The bugcheck of `name`, with the workload, faults and length `mnemo_jepsen::bugs` gives it,
/// must judge the run invalid.
fn bugcheck(name: &str, seed: u64) -> TestReport {
    let case = mnemo_jepsen::bugs::find(name).expect("a known bug");
    let binary = binary(
        "mnemo-bug-injection",
        "cargo build --bin mnemo --features bug-injection && cp \"$CARGO_TARGET_DIR/debug/mnemo\" \
         \"$CARGO_TARGET_DIR/debug/mnemo-bug-injection\" && cargo build --bin mnemo",
    );
    let mut options = options(case.workload, binary, case.faults.to_vec(), seed);
    options.time_limit = Duration::from_secs(case.time_limit_secs);
    options.nemesis.leader_percent = case.leader_percent;
    options.nemesis.interval = Duration::from_secs_f64(case.nemesis_interval_secs);
    options.nemesis.partition_shapes = case.partition_shapes.to_vec();
    if let Some(count) = case.snapshot_count {
        options.snapshot_count = count;
    }
    options.bug = Some(name.to_owned());
    let report = run(&options);
    assert_eq!(
        report.validity,
        Validity::Invalid,
        "the injected {name} bug was not caught; see {}\n{}",
        report.run_dir.display(),
        report.summary()
    );
    let _ = std::fs::remove_dir_all(&report.run_dir);
    report
}

#[test]
fn smoke_register_under_kill_and_partition() {
    let report = smoke_mnemo(
        WorkloadName::Register,
        vec![Fault::Kill, Fault::Partition],
        7,
    );
    assert_eq!(check(&report, "linearizable").validity, Validity::Valid);
}

#[test]
fn bugcheck_catches_stale_local_reads() {
    let report = bugcheck("stale-local-read", 11);
    assert_eq!(check(&report, "linearizable").validity, Validity::Invalid);
}

#[test]
fn bugcheck_catches_ack_before_commit() {
    let report = bugcheck("ack-before-commit", 5);
    assert_eq!(check(&report, "linearizable").validity, Validity::Invalid);
}

/// The same harness judges real etcd: a short register run under kill and partition is valid.
#[test]
fn etcd_register_under_kill_and_partition() {
    let etcd = PathBuf::from(ETCD_BINARY_DEFAULT);
    assert!(
        etcd.is_file(),
        "{} is missing; install Debian's etcd-server (scripts/setup does)",
        etcd.display()
    );
    let mut options = options(
        WorkloadName::Register,
        etcd,
        vec![Fault::Kill, Fault::Partition],
        7,
    );
    options.target = Target::Etcd;
    smoke(&options);
}

#[test]
fn smoke_append_under_kill_and_partition() {
    let report = smoke_mnemo(WorkloadName::Append, vec![Fault::Kill, Fault::Partition], 3);
    assert_eq!(check(&report, "elle").validity, Validity::Valid);
}

#[test]
fn bugcheck_catches_txn_compare_after_writes() {
    let report = bugcheck("txn-compare-after-writes", 13);
    let elle = check(&report, "elle");
    assert_eq!(elle.validity, Validity::Invalid);
    assert!(
        elle.details["anomalies"]["G1a"].as_u64() > Some(0),
        "expected aborted reads: {}",
        elle.details
    );
}

#[test]
fn smoke_watch_under_kill_and_partition() {
    let report = smoke_mnemo(WorkloadName::Watch, vec![Fault::Kill, Fault::Partition], 3);
    let stats = &check(&report, "watch").details["stats"];
    assert!(stats["resumes"].as_u64() > Some(0), "no resume: {stats}");
    assert!(stats["collectors"].as_u64() == Some(3), "{stats}");
    assert!(
        stats["writes_checked"].as_u64() > Some(100),
        "too few writes: {stats}"
    );
}

#[test]
fn bugcheck_catches_watch_skip_on_resume() {
    let report = bugcheck("watch-skip-on-resume", 5);
    let violations = &check(&report, "watch").details["violations"];
    assert!(
        violations["resumable"].as_u64() > Some(0),
        "caught, but not as a resume that skipped: {violations}"
    );
}

/// The lease workload's smoke run under kills and pauses, with `seed`.
fn lease_smoke_options(seed: u64) -> TestOptions {
    let binary = binary("mnemo", "cargo build --bin mnemo");
    let mut options = options(
        WorkloadName::Lease,
        binary,
        vec![Fault::Kill, Fault::Pause],
        seed,
    );
    options.time_limit = Duration::from_secs(18);
    options
}

/// A smoke run whose lease and lock checks must both be valid.
fn lease_smoke(options: &TestOptions) {
    let report = smoke(options);
    assert_eq!(check(&report, "lease").validity, Validity::Valid);
    assert_eq!(check(&report, "lock").validity, Validity::Valid);
}

#[test]
fn smoke_lease_under_kill_and_pause() {
    lease_smoke(&lease_smoke_options(5));
}

/// With lease checkpointing every second, leases longer than the interval get their remaining
/// TTLs recorded through Raft while renewals, kills and pauses go on: no checkpoint may make a
/// new leader end a lease earlier than its last renewal promised.
#[test]
fn smoke_lease_with_checkpoints_under_kill_and_pause() {
    let mut options = lease_smoke_options(6);
    options.lease_checkpoint_interval = Some(Duration::from_secs(1));
    // Long enough to outlast the interval between renewals, so checkpoints are taken.
    options.workloads.lease.key_ttl_secs = 6;
    lease_smoke(&options);
}

#[test]
fn bugcheck_catches_lease_expire_local() {
    let report = bugcheck("lease-expire-local", 3);
    // The follower's local revokes must show as keys missing while their leases surely live.
    // Diverged lock counters or HashKV alone would not do: they catch any divergence, and
    // this test is about the lease checker's own sight.
    let lease = check(&report, "lease");
    assert!(
        lease.details["violations"]["early-expiry"].as_u64() > Some(0),
        "caught, but not as early expiry by the lease checker: {}",
        lease.summary
    );
}
