//! The in-memory key index alone (`storage::mvcc`'s `Index`, a B-tree of per-key
//! generations): a point lookup of the version visible at a revision, and the index half of
//! a committed range (plan, then the walk that collects the visible versions of a span).
//! Rows are never loaded here; `mvcc::range/*` measures the whole read.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use mnemo::storage::mvcc::index_for_benches::{
    Index, PendingIndex, RevisionPair, collect, layered_range, plan_range,
};
use mnemo::types::{RangeRequest, Revision};

use super::{budget, scaled};

/// Keys in the index.
const INDEX_KEYS: usize = 100_000;
/// The same under `cargo test`.
const INDEX_KEYS_QUICK: usize = 1_000;
/// Versions per key in the index "with history".
const HISTORY_VERSIONS: usize = 10;
/// Keys walked by the span benchmark.
const SPAN_KEYS: usize = 100;
/// Step between the keys successive iterations look up (a prime, to spread them).
const KEY_STRIDE: usize = 7919;

/// The keys, made once so that formatting them is not part of what is timed.
fn make_keys(count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|index| Bytes::from(format!("key/{index:08}")))
        .collect()
}

/// An index of `keys`, each put `versions` times in rounds over every key, with revisions
/// numbered as a store would (its first revision is 1). Returns the last revision.
fn build(keys: &[Bytes], versions: usize) -> (Index, Revision) {
    let mut index = Index::new();
    let mut revision: Revision = 1;
    for _ in 0..versions {
        for key in keys {
            revision += 1;
            index
                .entry(key.clone())
                .or_default()
                .put(RevisionPair::new(revision, 0));
        }
    }
    (index, revision)
}

pub fn benches(criterion: &mut Criterion) {
    let key = make_keys(scaled(INDEX_KEYS, INDEX_KEYS_QUICK));
    let keys = key.len();
    let no_pending = PendingIndex::new();
    let mut group = criterion.benchmark_group("index");
    budget(&mut group, 30, Duration::from_secs(2));
    for versions in [1, HISTORY_VERSIONS] {
        let (index, current) = build(&key, versions);
        // The revision that ends the first round: every key at its first version.
        let first_round = 1 + keys as Revision;
        let shape = format!("keys={keys}/versions={versions}");
        let lookup = |position: usize, at: Revision| {
            index
                .get(key[position].as_ref())
                .and_then(|key_index| key_index.visible_at(at))
        };
        assert_eq!(
            lookup(3, current).map(|found| found.version),
            Some(versions as i64)
        );
        assert_eq!(lookup(3, first_round).map(|found| found.version), Some(1));

        let mut position = 0usize;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("point/{shape}"), |bench| {
            bench.iter(|| {
                position = (position + KEY_STRIDE) % keys;
                lookup(position, current)
            });
        });
        if versions > 1 {
            group.bench_function(format!("point_at_first_version/{shape}"), |bench| {
                bench.iter(|| {
                    position = (position + KEY_STRIDE) % keys;
                    lookup(position, first_round)
                });
            });
        }

        let span = |start: usize| {
            let start = start % (keys - SPAN_KEYS);
            RangeRequest::range(key[start].clone(), key[start + SPAN_KEYS].clone())
        };
        let scan = |request: &RangeRequest| {
            let plan = plan_range(request, current, 0).expect("readable revision");
            collect(layered_range(&index, &no_pending, &request.range), &plan)
        };
        let collected = scan(&span(3));
        assert_eq!(collected.count, SPAN_KEYS as i64);
        assert_eq!(collected.entries.len(), SPAN_KEYS);
        group.throughput(Throughput::Elements(SPAN_KEYS as u64));
        group.bench_function(format!("scan/span={SPAN_KEYS}/{shape}"), |bench| {
            bench.iter_batched(
                || {
                    position = (position + KEY_STRIDE) % keys;
                    span(position)
                },
                |request| black_box(scan(&request)),
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}
