//! The benchmark groups, one module each, and what they share: the run mode and the timing
//! budget of a group.

pub mod codec;
pub mod index;
pub mod mvcc;
pub mod wal;
pub mod watch;

use std::time::Duration;

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;

/// Value size of the benchmarks, etcd's benchmark default.
pub const VALUE_BYTES: usize = 256;

/// True under `cargo bench`, which hands criterion `--bench`. Under `cargo test` criterion
/// runs each benchmark once, so the data sets built before timing shrink to keep the test
/// suite fast (the IDs say which size ran).
pub fn full_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// `full` in a real run, `quick` under `cargo test`.
pub fn scaled(full: usize, quick: usize) -> usize {
    if full_run() { full } else { quick }
}

/// Sets a group's sampling budget. Criterion's defaults (100 samples, 5 s per benchmark
/// after a 3 s warm-up) would make the whole binary take far more than a few minutes; these
/// benchmarks are steady enough that fewer, shorter samples give stable medians.
pub fn budget(group: &mut BenchmarkGroup<'_, WallTime>, samples: usize, measure: Duration) {
    group.sample_size(samples);
    group.measurement_time(measure);
    group.warm_up_time(Duration::from_secs(1));
}
