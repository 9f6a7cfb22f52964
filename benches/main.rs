//! Micro-benchmarks of the hot paths, one criterion binary: `cargo bench --bench main`
//! (a few minutes on 2 cores; `cargo bench --bench main -- wal/` runs one group). IDs carry
//! their parameters. Whole-system throughput against etcd is the load tool's job
//! (`mnemo-bench`, `benches/compare-etcd.sh`), not this binary's.
//!
//! `cargo test --bench main` (part of `cargo test --all-targets`) runs every benchmark once,
//! on smaller data sets ([`micro::full_run`]), after the checks each module makes on its data
//! before timing, so a broken benchmark fails the test suite instead of timing nothing.
//! `benches/README.md` lists what each benchmark measures.

mod micro;

use criterion::{criterion_group, criterion_main};

criterion_group!(
    benches,
    micro::mvcc::benches,
    micro::index::benches,
    micro::wal::benches,
    micro::watch::benches,
    micro::codec::benches,
);
criterion_main!(benches);
