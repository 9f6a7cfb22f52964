//! The `lease` workload: keys under leases with keepalives, and locks guarding a shared counter.
//!
//! Not built yet: [`run`] refuses, so that a run asking for it fails loudly.
//!
//! Must not: decide timing beyond its own workers' pacing, or inject faults.

use std::sync::Arc;

use super::{Ctx, WorkloadReport};

/// The `lease` workload's options.
#[derive(Clone, Debug, Default)]
pub struct LeaseOptions {}

/// Runs the workload live.
///
/// # Errors
/// Always, for now.
#[allow(clippy::unused_async)]
pub async fn run(ctx: Arc<Ctx>, options: &LeaseOptions) -> anyhow::Result<WorkloadReport> {
    let _ = (ctx, options);
    anyhow::bail!("the lease workload is not built yet")
}
