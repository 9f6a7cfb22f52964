//! Deliberate bugs, compiled in only with the `bug-injection` feature, for the Jepsen harness's
//! proof that its checkers are not blind (`mnemo-jepsen bugcheck`, jepsen/README.md).
//!
//! Owns the list of bugs and the switch that turns one on: `MNEMO_BUG=<name>` in the member's
//! environment, read once. The feature is off by default and never part of a release or a
//! normal build; without it this module does not exist and no call site compiles.
//!
//! Must not: change behaviour by itself. Each bug lives at its call site, behind
//! `#[cfg(feature = "bug-injection")] if bugs::enabled(Bug::...)`, so the correct path stays the
//! one that reads naturally.

use std::sync::OnceLock;
use std::time::Duration;

/// `ack-before-commit`: how long a Put waits for its commit before it is answered anyway. Far
/// above a healthy commit's few milliseconds, so the bug shows only when commits stall.
pub const ACK_EARLY_AFTER: Duration = Duration::from_millis(150);

/// The injectable bugs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Linearizable Range (and read-only Txn) skip the read barrier and answer from local state.
    StaleLocalRead,
    /// A Put whose commit takes longer than [`ACK_EARLY_AFTER`] is acknowledged anyway.
    AckBeforeCommit,
    /// A Txn applies its success branch's writes first and evaluates its compares afterwards,
    /// on the state those writes produced: a guarded txn whose guard should fail still writes.
    TxnCompareAfterWrites,
    /// A watcher created with a start revision it must catch up to (a resuming client)
    /// silently starts one revision later, losing the first event it asked for.
    WatchSkipOnResume,
    /// Followers expire leases by their own clock and delete the leases' keys from their own
    /// state, without a revoke through Raft.
    LeaseExpireLocal,
}

impl Bug {
    /// Every bug, for looking one up by name.
    pub const ALL: [Bug; 5] = [
        Bug::StaleLocalRead,
        Bug::AckBeforeCommit,
        Bug::TxnCompareAfterWrites,
        Bug::WatchSkipOnResume,
        Bug::LeaseExpireLocal,
    ];

    /// The name `MNEMO_BUG` takes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Bug::StaleLocalRead => "stale-local-read",
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::TxnCompareAfterWrites => "txn-compare-after-writes",
            Bug::WatchSkipOnResume => "watch-skip-on-resume",
            Bug::LeaseExpireLocal => "lease-expire-local",
        }
    }
}

/// Whether `bug` is switched on for this process.
#[must_use]
pub fn enabled(bug: Bug) -> bool {
    static CHOSEN: OnceLock<Option<Bug>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| {
        let name = std::env::var("MNEMO_BUG").ok()?;
        let found = Bug::ALL.into_iter().find(|bug| bug.name() == name);
        if found.is_none() {
            // A misspelt bug would make a bugcheck pass vacuously or fail mysteriously; say so.
            tracing::error!(bug = %name, "MNEMO_BUG names no known bug; none is injected");
        } else {
            tracing::warn!(bug = %name, "injected bug switched on");
        }
        found
    });
    *chosen == Some(bug)
}
