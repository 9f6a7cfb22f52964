//! The hub's background work: catching unsynced watchers up from history, and periodic
//! progress notifications. Both hold the hub weakly and end when it is gone.
//!
//! History is read on a blocking thread, outside the hub lock, so publishing from apply
//! never waits for a read. Must not hold the hub lock across an await.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::WatchHub;
use crate::limits::{WATCH_SYNC_INTERVAL, WATCH_SYNC_REVISIONS_MAX};
use crate::storage::mvcc::MvccError;

/// Runs catch-up rounds whenever woken, and every [`WATCH_SYNC_INTERVAL`] in case a full
/// buffer has drained since.
pub(super) async fn catch_up(hub: Weak<WatchHub>) {
    loop {
        let Some(strong) = hub.upgrade() else {
            return;
        };
        // A round that moved some watcher on is followed at once by another.
        while round(&strong).await {}
        let woken = async { strong.wake.notified().await };
        let _ = tokio::time::timeout(WATCH_SYNC_INTERVAL, woken).await;
    }
}

/// One catch-up round. Returns true when some watcher moved on.
async fn round(hub: &Arc<WatchHub>) -> bool {
    let Some(plan) = hub.state.lock().plan_catch_up() else {
        return false;
    };
    let store = Arc::clone(&hub.store);
    let from = plan.from;
    let read = tokio::task::spawn_blocking(move || store.history(from, WATCH_SYNC_REVISIONS_MAX));
    let result = match read.await {
        Ok(result) => result,
        Err(err) => {
            tracing::error!(%err, "watch history read failed to run");
            return false;
        }
    };
    let mut state = hub.state.lock();
    match result {
        Ok(batch) => state.finish_catch_up(&plan.group, plan.from, &batch),
        Err(MvccError::Compacted { compacted, .. }) => {
            state.finish_compacted(&plan.group, compacted)
        }
        Err(err) => {
            // A storage failure here also stops apply, which stops the member; the watchers
            // stay behind until then.
            tracing::error!(%err, "cannot read history for watchers");
            false
        }
    }
}

/// Sends progress notifications every `interval`.
pub(super) async fn notify_progress(hub: Weak<WatchHub>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval is immediate; a notification is due only after one.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        hub.state.lock().progress_tick();
    }
}
