//! The injected bugs `bugcheck` knows, and for each, the workload and faults that catch it.
//!
//! Owns the table only. The bugs themselves live in the member (`src/bugs.rs` at the repository
//! root, compiled in with the `bug-injection` feature and switched on by `MNEMO_BUG`); `bugcheck`
//! runs the harness with each case's settings and passes only when the run is judged invalid.
//!
//! Must not: judge anything; the workload's checkers do.

use crate::nemesis::{Fault, PartitionShape};
use crate::workload::WorkloadName;

/// One bug and how to catch it.
#[derive(Clone, Copy, Debug)]
pub struct BugCase {
    /// `MNEMO_BUG`'s value.
    pub name: &'static str,
    /// What the bug does.
    pub about: &'static str,
    /// The workload whose checker sees it.
    pub workload: WorkloadName,
    /// Faults that make it show.
    pub faults: &'static [Fault],
    /// Chance, percent, that a fault targets the leader.
    pub leader_percent: u64,
    /// Seconds of workload enough to catch it in nearly every run.
    pub time_limit_secs: u64,
    /// Mean seconds a fault is held and between faults.
    pub nemesis_interval_secs: f64,
    /// Shapes its partitions take; empty means every shape.
    pub partition_shapes: &'static [PartitionShape],
    /// The members' `--snapshot-count`, when the harness's default would hide the bug.
    pub snapshot_count: Option<u64>,
}

/// Every bug `bugcheck` can run.
pub const BUGS: &[BugCase] = &[
    BugCase {
        name: "stale-local-read",
        about: "linearizable reads skip the read barrier and answer from local state",
        workload: WorkloadName::Register,
        // A cut-off follower answers stale reads at once while the others keep writing. Only
        // a partition makes that happen: a paused member answers nothing at all, so a run
        // whose faults were all pauses (it happened) could not catch the bug.
        faults: &[Fault::Partition],
        leader_percent: 0,
        time_limit_secs: 14,
        nemesis_interval_secs: 4.0,
        // One follower cut from both others: its reads are stale for the whole fault. Other
        // shapes may leave it a path to the leader.
        partition_shapes: &[PartitionShape::Isolate],
        snapshot_count: None,
    },
    BugCase {
        name: "ack-before-commit",
        about: "a Put not committed within 150 ms is acknowledged anyway, with a guessed revision",
        workload: WorkloadName::Register,
        // An isolated leader's writes never commit there, yet are acknowledged; reads through the
        // majority never see them.
        faults: &[Fault::Partition],
        leader_percent: 100,
        // Short faults, many of them: the isolated leader's one mixed worker spends most of a
        // fault on reads that time out, so each fault gives it only a few chances to write.
        time_limit_secs: 30,
        nemesis_interval_secs: 3.0,
        // Only the leader cut off from both others stalls every commit it is asked for.
        partition_shapes: &[PartitionShape::Isolate],
        snapshot_count: None,
    },
    BugCase {
        name: "txn-compare-after-writes",
        about: "a Txn writes its success branch first and evaluates its compares afterwards",
        workload: WorkloadName::Append,
        // No fault needed: every guarded append writes, then its guard on the key it just wrote
        // fails, so it is reported as failed while a later read sees its value (G1a), and
        // appends whose guard should have failed overwrite lists (lost appends, cycles).
        faults: &[],
        leader_percent: 0,
        time_limit_secs: 8,
        nemesis_interval_secs: 5.0,
        partition_shapes: &[],
        snapshot_count: None,
    },
    BugCase {
        name: "watch-skip-on-resume",
        about: "a watcher created to catch up from a past revision starts one revision late",
        workload: WorkloadName::Watch,
        // Every resume that starts behind the member's revision shows it; watchers resume every
        // few seconds on their own, and a partition makes the cut-off member's watchers fall
        // behind and resume elsewhere with history to catch up on.
        faults: &[Fault::Partition],
        leader_percent: 50,
        time_limit_secs: 12,
        nemesis_interval_secs: 5.0,
        partition_shapes: &[],
        snapshot_count: None,
    },
    BugCase {
        name: "lease-expire-local",
        about: "followers expire leases by their own clock and delete the keys locally, \
                without Raft",
        workload: WorkloadName::Lease,
        // A follower cut off or paused for longer than a TTL stops hearing the leader's renewal
        // checkpoints, expires leases the leader keeps alive, and then serves reads without
        // their keys.
        faults: &[Fault::Partition, Fault::Pause],
        leader_percent: 0,
        // Runs of 20 s saw two faults, and once neither left the counters apart.
        time_limit_secs: 30,
        // Faults of 2 to 6 s: mostly longer than a key lease's TTL, so the follower expires
        // leases, and shorter than most lock leases, which are then still alive when it
        // serves reads again.
        nemesis_interval_secs: 4.0,
        // Only a follower cut from both others misses renewals; a bridge or halves partition
        // may leave it a path to the leader.
        partition_shapes: &[PartitionShape::Isolate],
        // With the harness's 100, a follower back from a fault of a few seconds is behind the
        // leader's kept log and catches up by a snapshot, which replaces its whole state and
        // so repairs what the bug deleted before any read sees it. With a longer log it
        // catches up by replaying entries, keeps the damage, and answers reads without keys
        // whose leases are alive: what the lease checker looks for.
        snapshot_count: Some(10_000),
    },
];

/// The case named `name`.
#[must_use]
pub fn find(name: &str) -> Option<&'static BugCase> {
    BUGS.iter().find(|case| case.name == name)
}
