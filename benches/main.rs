//! Micro-benchmarks of the hot paths, one criterion binary. IDs carry their parameters.
//! Whole-system throughput against etcd is measured by the load tool, not here.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mnemo::storage::backend::Backend;
use mnemo::storage::mvcc::{LeaseLookup, MvccStore};
use mnemo::types::{LeaseId, PutRequest, RangeRequest};

/// Keys preloaded before the range benchmarks.
const PRELOADED_KEYS: usize = 10_000;
/// Value size of the benchmarks, etcd's benchmark default.
const VALUE_BYTES: usize = 256;
/// Puts per committed write batch in the put benchmark.
const PUTS_PER_BATCH: usize = 64;

struct NoLeases;

impl LeaseLookup for NoLeases {
    fn lease_exists(&self, _id: LeaseId) -> bool {
        false
    }
}

fn open_store() -> (tempfile::TempDir, MvccStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Backend::open(dir.path()).expect("backend");
    let store = MvccStore::open(Arc::new(backend)).expect("store");
    (dir, store)
}

fn mvcc(criterion: &mut Criterion) {
    let value = vec![b'v'; VALUE_BYTES];
    let mut group = criterion.benchmark_group("mvcc");
    group.throughput(Throughput::Elements(PUTS_PER_BATCH as u64));
    let (_dir, store) = open_store();
    let mut next = 0usize;
    group.bench_function(
        format!("put/value_bytes={VALUE_BYTES}/batch={PUTS_PER_BATCH}"),
        |bench| {
            bench.iter(|| {
                let mut txn = store.write();
                for _ in 0..PUTS_PER_BATCH {
                    next += 1;
                    let request = PutRequest::new(format!("key/{next:08}"), value.clone());
                    txn.put(&request, &NoLeases).expect("put");
                }
                txn.commit().expect("commit");
            });
        },
    );

    let (_dir, store) = open_store();
    let mut txn = store.write();
    for index in 0..PRELOADED_KEYS {
        txn.put(
            &PutRequest::new(format!("key/{index:08}"), value.clone()),
            &NoLeases,
        )
        .expect("put");
    }
    txn.commit().expect("commit");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("range/single_key/keys={PRELOADED_KEYS}"), |bench| {
        let mut index = 0usize;
        bench.iter_batched(
            || {
                index = (index + 7919) % PRELOADED_KEYS;
                RangeRequest::key(format!("key/{index:08}"))
            },
            |request| store.range(&request).expect("range"),
            BatchSize::SmallInput,
        );
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function(
        format!("range/prefix_limit=100/keys={PRELOADED_KEYS}"),
        |bench| {
            let request = RangeRequest::prefix("key/").limit(100);
            bench.iter(|| store.range(&request).expect("range"));
        },
    );
    group.finish();
}

criterion_group!(benches, mvcc);
criterion_main!(benches);
