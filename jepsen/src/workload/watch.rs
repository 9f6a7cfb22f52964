//! The `watch` workload: writers plus watchers that resume from their last revision, checked for the watch guarantees.
//!
//! Not built yet: [`run`] refuses, so that a run asking for it fails loudly.
//!
//! Must not: decide timing beyond its own workers' pacing, or inject faults.

use std::sync::Arc;

use super::{Ctx, WorkloadReport};

/// The `watch` workload's options.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {}

/// Runs the workload live.
///
/// # Errors
/// Always, for now.
#[allow(clippy::unused_async)]
pub async fn run(ctx: Arc<Ctx>, options: &WatchOptions) -> anyhow::Result<WorkloadReport> {
    let _ = (ctx, options);
    anyhow::bail!("the watch workload is not built yet")
}
