//! Auto-compaction: `--auto-compaction-mode periodic|revision` with `--auto-compaction-retention`,
//! as etcd runs it.
//!
//! Owns the schedule and the choice of revision; nothing else. Every member samples its current
//! revision, but only the leader proposes a compaction (through `CompactTarget::compact`, a
//! normal replicated Compact), so followers never race it and a new leader picks up at once.
//! - `periodic`, retention P (a duration; a bare number means hours, as in etcd): every
//!   min(P, 1 h)/10 the current revision is sampled; once P has passed since the compactor
//!   started, every min(P, 1 h) the leader compacts at the newest revision sampled at least P ago,
//!   so at least P of history is always kept.
//! - `revision`, retention N: every 5 minutes the leader compacts at current − N, when that is
//!   past the last revision it compacted.
//!
//! A retention of 0 turns auto-compaction off (etcd's default). A compaction the store refuses
//! because the history is already compacted that far counts as done.
//!
//! Must not: compact anything itself or read MVCC state other than the current revision; the
//! compaction goes through Raft like a client's.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::types::Revision;

/// Retention unit of a bare number in periodic mode, as etcd reads it.
const PERIODIC_BARE_UNIT: Duration = Duration::from_secs(3600);
/// The longest time between two periodic compactions, whatever the retention.
const PERIODIC_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Samples per compaction interval in periodic mode.
const PERIODIC_SAMPLES_PER_INTERVAL: u32 = 10;
/// How often revision mode looks at the current revision (etcd's fixed five minutes).
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// The auto-compaction policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// No auto-compaction.
    Off,
    /// Keep at least this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

/// A bad auto-compaction flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AutoCompactionError {
    /// A mode other than `periodic` or `revision`.
    #[error("unknown auto-compaction-mode {0:?} (expected \"periodic\" or \"revision\")")]
    UnknownMode(String),
    /// A retention that does not parse for its mode.
    #[error("invalid auto-compaction-retention {retention:?} for mode {mode}: {reason}")]
    InvalidRetention {
        /// The mode.
        mode: &'static str,
        /// The retention given.
        retention: String,
        /// Why it does not parse.
        reason: String,
    },
}

impl AutoCompaction {
    /// Reads the two flags as etcd does.
    ///
    /// # Errors
    /// An unknown mode, or a retention that is not a duration (periodic) or a non-negative
    /// number (revision).
    pub fn parse(mode: &str, retention: &str) -> Result<AutoCompaction, AutoCompactionError> {
        let retention = retention.trim();
        match mode {
            "periodic" => {
                let invalid = |reason: String| AutoCompactionError::InvalidRetention {
                    mode: "periodic",
                    retention: retention.to_owned(),
                    reason,
                };
                let period = match retention.parse::<u64>() {
                    Ok(hours) => PERIODIC_BARE_UNIT
                        .checked_mul(u32::try_from(hours).map_err(|e| invalid(e.to_string()))?)
                        .ok_or_else(|| invalid("too long".to_owned()))?,
                    Err(_) => humantime::parse_duration(retention)
                        .map_err(|error| invalid(error.to_string()))?,
                };
                Ok(if period.is_zero() {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Periodic(period)
                })
            }
            "revision" => {
                let revisions: i64 =
                    retention
                        .parse()
                        .map_err(|error| AutoCompactionError::InvalidRetention {
                            mode: "revision",
                            retention: retention.to_owned(),
                            reason: format!("{error}"),
                        })?;
                match revisions {
                    0 => Ok(AutoCompaction::Off),
                    n if n > 0 => Ok(AutoCompaction::Revision(n)),
                    _ => Err(AutoCompactionError::InvalidRetention {
                        mode: "revision",
                        retention: retention.to_owned(),
                        reason: "must not be negative".to_owned(),
                    }),
                }
            }
            other => Err(AutoCompactionError::UnknownMode(other.to_owned())),
        }
    }
}

/// What the compactor needs of the member.
pub trait CompactTarget: Send + Sync + 'static {
    /// Whether this member leads now.
    fn is_leader(&self) -> bool;
    /// The member's current revision.
    fn current_revision(&self) -> Revision;
    /// Compacts history at `revision` through Raft. `Ok(false)` when the store refused because
    /// it is already compacted that far.
    fn compact_at(
        &self,
        revision: Revision,
    ) -> impl Future<Output = Result<bool, String>> + Send + '_;
}

/// Runs `policy` for `target` until the target is gone.
pub async fn run<T: CompactTarget>(target: Weak<T>, policy: AutoCompaction) {
    match policy {
        AutoCompaction::Off => {}
        AutoCompaction::Periodic(period) => run_periodic(target, period).await,
        AutoCompaction::Revision(keep) => run_revision(target, keep).await,
    }
}

async fn run_periodic<T: CompactTarget>(target: Weak<T>, period: Duration) {
    let interval = period.min(PERIODIC_INTERVAL_MAX);
    let sample_every = interval / PERIODIC_SAMPLES_PER_INTERVAL;
    let started = Instant::now();
    let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
    let mut last_compaction: Option<Instant> = None;
    let mut compacted: Revision = 0;
    let mut ticks = tokio::time::interval(sample_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One iteration per sample, for as long as the member lives.
    loop {
        ticks.tick().await;
        let Some(member) = target.upgrade() else {
            return;
        };
        let now = Instant::now();
        samples.push_back((now, member.current_revision()));
        let due = now.duration_since(started) >= period
            && last_compaction.is_none_or(|at| now.duration_since(at) >= interval);
        if !due || !member.is_leader() {
            continue;
        }
        // The newest sample at least `period` old; older ones are no longer needed.
        let Some(cutoff) = now.checked_sub(period) else {
            continue;
        };
        while samples.len() > 1 && samples[1].0 <= cutoff {
            samples.pop_front();
        }
        let Some(&(taken, revision)) = samples.front().filter(|(taken, _)| *taken <= cutoff) else {
            continue;
        };
        if revision <= compacted {
            last_compaction = Some(now);
            continue;
        }
        tracing::info!(revision, retention = ?period, "auto-compaction (periodic) starts");
        match member.compact_at(revision).await {
            Ok(_) => {
                compacted = revision;
                last_compaction = Some(now);
                tracing::info!(revision, sampled_ago = ?now.duration_since(taken), "auto-compaction done");
            }
            // Retried at the next sample, as etcd retries after a tenth of the interval.
            Err(why) => tracing::warn!(revision, error = %why, "auto-compaction failed"),
        }
    }
}

async fn run_revision<T: CompactTarget>(target: Weak<T>, keep: i64) {
    let mut compacted: Revision = 0;
    let mut ticks = tokio::time::interval_at(
        Instant::now() + REVISION_CHECK_INTERVAL,
        REVISION_CHECK_INTERVAL,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One iteration per check, for as long as the member lives.
    loop {
        ticks.tick().await;
        let Some(member) = target.upgrade() else {
            return;
        };
        let revision = member.current_revision() - keep;
        if revision <= 0 || revision <= compacted || !member.is_leader() {
            continue;
        }
        tracing::info!(
            revision,
            retention = keep,
            "auto-compaction (revision) starts"
        );
        match member.compact_at(revision).await {
            Ok(_) => {
                compacted = revision;
                tracing::info!(revision, "auto-compaction done");
            }
            Err(why) => tracing::warn!(revision, error = %why, "auto-compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A member whose revision grows by one per second of (paused, simulated) time.
    struct Fake {
        leader: AtomicBool,
        epoch: Instant,
        /// When not 0, the revision stays here (nothing is written any more).
        frozen: AtomicI64,
        compactions: Mutex<Vec<(Duration, Revision)>>,
    }

    impl Fake {
        fn new(leader: bool) -> Arc<Fake> {
            Arc::new(Fake {
                leader: AtomicBool::new(leader),
                epoch: Instant::now(),
                frozen: AtomicI64::new(0),
                compactions: Mutex::new(Vec::new()),
            })
        }

        fn compactions(&self) -> Vec<(Duration, Revision)> {
            self.compactions.lock().unwrap().clone()
        }
    }

    impl CompactTarget for Fake {
        fn is_leader(&self) -> bool {
            self.leader.load(Ordering::SeqCst)
        }

        fn current_revision(&self) -> Revision {
            match self.frozen.load(Ordering::SeqCst) {
                0 => 1 + i64::try_from(self.epoch.elapsed().as_secs()).unwrap(),
                frozen => frozen,
            }
        }

        fn compact_at(
            &self,
            revision: Revision,
        ) -> impl Future<Output = Result<bool, String>> + Send + '_ {
            self.compactions
                .lock()
                .unwrap()
                .push((self.epoch.elapsed(), revision));
            std::future::ready(Ok(true))
        }
    }

    #[test]
    fn flags_parse_as_etcd_reads_them() {
        let parse = AutoCompaction::parse;
        assert_eq!(parse("periodic", "0"), Ok(AutoCompaction::Off));
        assert_eq!(
            parse("periodic", "1"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse("periodic", "30m"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse("revision", "1000"),
            Ok(AutoCompaction::Revision(1000))
        );
        assert_eq!(parse("revision", "0"), Ok(AutoCompaction::Off));
        assert!(matches!(
            parse("revision", "-5"),
            Err(AutoCompactionError::InvalidRetention { .. })
        ));
        assert!(matches!(
            parse("revision", "1h"),
            Err(AutoCompactionError::InvalidRetention { .. })
        ));
        assert!(matches!(
            parse("periodic", "soon"),
            Err(AutoCompactionError::InvalidRetention { .. })
        ));
        assert_eq!(
            parse("hourly", "1"),
            Err(AutoCompactionError::UnknownMode("hourly".to_owned()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_keeps_the_retention_and_compacts_once_per_interval() {
        let fake = Fake::new(true);
        let task = tokio::spawn(run(
            Arc::downgrade(&fake),
            AutoCompaction::Periodic(Duration::from_secs(600)),
        ));
        tokio::time::sleep(Duration::from_secs(599)).await;
        assert!(
            fake.compactions().is_empty(),
            "compacted before a full retention"
        );
        tokio::time::sleep(Duration::from_secs(30 * 60)).await;
        let compactions = fake.compactions();
        // Every 10 minutes from minute 10, each keeping at least 10 minutes of history.
        assert!(compactions.len() >= 3, "{compactions:?}");
        for &(at, revision) in &compactions {
            let kept = i64::try_from(at.as_secs()).unwrap() + 1 - revision;
            assert!(
                (600..=660).contains(&kept),
                "at {at:?} compacted {revision}, keeping {kept} s"
            );
        }
        for pair in compactions.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(
                gap >= Duration::from_secs(600) && gap < Duration::from_secs(700),
                "{gap:?}"
            );
        }
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_periodic_retention_still_compacts_hourly() {
        let fake = Fake::new(true);
        let task = tokio::spawn(run(
            Arc::downgrade(&fake),
            AutoCompaction::Periodic(Duration::from_secs(10 * 3600)),
        ));
        tokio::time::sleep(Duration::from_secs(13 * 3600 - 1)).await;
        let compactions = fake.compactions();
        assert_eq!(compactions.len(), 3, "{compactions:?}");
        for &(at, revision) in &compactions {
            let kept = i64::try_from(at.as_secs()).unwrap() + 1 - revision;
            assert!((36_000..=36_000 + 360).contains(&kept), "kept {kept} s");
        }
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn revision_mode_compacts_every_five_minutes_behind_by_the_retention() {
        let fake = Fake::new(true);
        let task = tokio::spawn(run(Arc::downgrade(&fake), AutoCompaction::Revision(100)));
        tokio::time::sleep(REVISION_CHECK_INTERVAL * 3 + Duration::from_secs(1)).await;
        let compactions = fake.compactions();
        assert_eq!(compactions.len(), 3, "{compactions:?}");
        for &(at, revision) in &compactions {
            assert_eq!(revision, 1 + i64::try_from(at.as_secs()).unwrap() - 100);
        }
        // Nothing written any more: one more compaction catches up, then none repeats it.
        fake.frozen.store(fake.current_revision(), Ordering::SeqCst);
        tokio::time::sleep(REVISION_CHECK_INTERVAL * 3).await;
        assert_eq!(fake.compactions().len(), 4, "{:?}", fake.compactions());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn followers_sample_but_never_compact() {
        let fake = Fake::new(false);
        let task = tokio::spawn(run(
            Arc::downgrade(&fake),
            AutoCompaction::Periodic(Duration::from_secs(60)),
        ));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(fake.compactions().is_empty());
        // Once it leads, it compacts at once, to a revision sampled a retention ago.
        fake.leader.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let compactions = fake.compactions();
        assert_eq!(compactions.len(), 1, "{compactions:?}");
        let (at, revision) = compactions[0];
        let kept = i64::try_from(at.as_secs()).unwrap() + 1 - revision;
        assert!((60..=66).contains(&kept), "kept {kept} s");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_its_member() {
        let fake = Fake::new(true);
        let task = tokio::spawn(run(
            Arc::downgrade(&fake),
            AutoCompaction::Periodic(Duration::from_secs(60)),
        ));
        drop(fake);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(task.is_finished());
    }
}
