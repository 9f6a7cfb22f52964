//! The `append` workload: multi-key list-append transactions checked for strict serializability (Elle-style).
//!
//! Not built yet: [`run`] refuses, so that a run asking for it fails loudly.
//!
//! Must not: decide timing beyond its own workers' pacing, or inject faults.

use std::sync::Arc;

use super::{Ctx, WorkloadReport};

/// The `append` workload's options.
#[derive(Clone, Debug, Default)]
pub struct AppendOptions {}

/// Runs the workload live.
///
/// # Errors
/// Always, for now.
#[allow(clippy::unused_async)]
pub async fn run(ctx: Arc<Ctx>, options: &AppendOptions) -> anyhow::Result<WorkloadReport> {
    let _ = (ctx, options);
    anyhow::bail!("the append workload is not built yet")
}
