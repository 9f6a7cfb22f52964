//! The MVCC store (`MvccStore` over a real RocksDB in a temp dir): puts committed in batches
//! of 1 and 64, Kubernetes' optimistic update (a txn comparing `mod_revision`, then a put,
//! else a read), and committed ranges (one key, a 100-key span, count-only over every key)
//! over keys with one version or with a history of several.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use mnemo::storage::backend::Backend;
use mnemo::storage::mvcc::{LeaseLookup, MvccStore};
use mnemo::types::{
    Compare, CompareResult, LeaseId, PutRequest, RangeRequest, RequestOp, Revision, TxnRequest,
};

use super::{VALUE_BYTES, budget, scaled};

/// Keys preloaded before the range and txn benchmarks.
const PRELOADED_KEYS: usize = 10_000;
/// The same under `cargo test`.
const PRELOADED_KEYS_QUICK: usize = 500;
/// Versions per key in the store "with history" (each key overwritten this many times).
const HISTORY_VERSIONS: usize = 10;
/// Keys read by the span benchmark.
const SPAN_KEYS: usize = 100;
/// Puts per committed write batch; apply commits a batch per group of Raft entries.
const PUT_BATCHES: [usize; 2] = [1, 64];
/// Step between the keys successive iterations read or update (a prime, so they spread
/// over the key space instead of walking it in order).
const KEY_STRIDE: usize = 7919;

/// The store never sees leases in these benchmarks.
struct NoLeases;

impl LeaseLookup for NoLeases {
    fn lease_exists(&self, _id: LeaseId) -> bool {
        false
    }
}

/// A fresh store in a temp dir; the dir must outlive the store.
pub fn open_store() -> (tempfile::TempDir, MvccStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Backend::open(dir.path()).expect("backend");
    let store = MvccStore::open(Arc::new(backend)).expect("store");
    (dir, store)
}

fn key(index: usize) -> String {
    format!("key/{index:08}")
}

/// A store holding `keys` keys, each put `versions` times, one write batch per round of
/// puts over every key. Returns the revision at the end of the first round too.
fn preloaded(keys: usize, versions: usize) -> (tempfile::TempDir, MvccStore, Revision) {
    let (dir, store) = open_store();
    let value = vec![b'v'; VALUE_BYTES];
    let mut first_round = 0;
    for round in 0..versions {
        let mut txn = store.write();
        for index in 0..keys {
            txn.put(&PutRequest::new(key(index), value.clone()), &NoLeases)
                .expect("put");
        }
        let committed = txn.commit().expect("commit");
        if round == 0 {
            first_round = committed.revision;
        }
    }
    (dir, store, first_round)
}

pub fn benches(criterion: &mut Criterion) {
    puts(criterion);
    txns(criterion);
    ranges(criterion);
}

fn puts(criterion: &mut Criterion) {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let mut group = criterion.benchmark_group("mvcc");
    budget(&mut group, 20, Duration::from_secs(3));
    for batch in PUT_BATCHES {
        let (_dir, store) = open_store();
        let mut next = 0usize;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(
            format!("put/value_bytes={VALUE_BYTES}/batch={batch}"),
            |bench| {
                bench.iter(|| {
                    let mut txn = store.write();
                    for _ in 0..batch {
                        next += 1;
                        txn.put(&PutRequest::new(key(next), value.clone()), &NoLeases)
                            .expect("put");
                    }
                    txn.commit().expect("commit")
                });
            },
        );
    }
    group.finish();
}

/// Kubernetes' GuaranteedUpdate: `If(mod_revision(key) == seen) Then(Put) Else(Get)`, one
/// txn per commit. The success case updates the key; the conflict case holds a stale
/// revision and reads the key instead.
fn txns(criterion: &mut Criterion) {
    let keys = scaled(PRELOADED_KEYS, PRELOADED_KEYS_QUICK);
    let value = Bytes::from(vec![b'u'; VALUE_BYTES]);
    let (_dir, store, _) = preloaded(keys, 1);
    // The mod revision of every key, as a client would have read it.
    let all = store.range(&RangeRequest::prefix("key/")).expect("range");
    assert_eq!(all.kvs.len(), keys, "every preloaded key is read back");
    let mut seen: Vec<Revision> = all.kvs.iter().map(|kv| kv.mod_revision).collect();

    let cas = |index: usize, expected: Revision| {
        TxnRequest::when([Compare::mod_revision(
            key(index),
            CompareResult::Equal,
            expected,
        )])
        .and_then([RequestOp::Put(PutRequest::new(key(index), value.clone()))])
        .or_else([RequestOp::Range(RangeRequest::key(key(index)))])
    };

    let mut group = criterion.benchmark_group("mvcc");
    budget(&mut group, 20, Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    let mut index = 0usize;
    group.bench_function(format!("txn/cas_success/keys={keys}"), |bench| {
        bench.iter(|| {
            index = (index + KEY_STRIDE) % keys;
            let request = cas(index, seen[index]);
            let mut txn = store.write();
            let (response, revision) = txn.txn(&request, &NoLeases).expect("txn");
            txn.commit().expect("commit");
            assert!(
                response.succeeded,
                "the compare holds on the revision last written"
            );
            seen[index] = revision;
        });
    });
    group.bench_function(format!("txn/cas_conflict/keys={keys}"), |bench| {
        bench.iter(|| {
            index = (index + KEY_STRIDE) % keys;
            // Revision 1 is the empty store's: no key was ever written at it.
            let request = cas(index, 1);
            let mut txn = store.write();
            let (response, _) = txn.txn(&request, &NoLeases).expect("txn");
            txn.commit().expect("commit");
            assert!(!response.succeeded, "a stale revision fails the compare");
            response
        });
    });
    group.finish();
}

fn ranges(criterion: &mut Criterion) {
    let keys = scaled(PRELOADED_KEYS, PRELOADED_KEYS_QUICK);
    let mut group = criterion.benchmark_group("mvcc");
    budget(&mut group, 20, Duration::from_secs(2));
    for versions in [1, HISTORY_VERSIONS] {
        let (_dir, store, first_round) = preloaded(keys, versions);
        let shape = format!("keys={keys}/versions={versions}");
        // Made once so that formatting keys is not part of what is timed.
        let names: Vec<Bytes> = (0..keys).map(|index| Bytes::from(key(index))).collect();
        let point = |index: usize| RangeRequest::key(names[index].clone());
        let span = |start: usize| {
            let start = start % (keys - SPAN_KEYS);
            RangeRequest::range(names[start].clone(), names[start + SPAN_KEYS].clone())
        };
        let count_all = RangeRequest::prefix("key/").count_only();
        // What is timed below must answer what it claims to.
        let one = store.range(&point(3)).expect("range");
        assert_eq!(one.kvs.len(), 1);
        assert_eq!(one.kvs[0].version, versions as i64);
        assert_eq!(store.range(&span(3)).expect("range").kvs.len(), SPAN_KEYS);
        let counted = store.range(&count_all).expect("range");
        assert!(counted.kvs.is_empty());
        assert_eq!(counted.count, keys as i64);

        let mut index = 0usize;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("range/point/{shape}"), |bench| {
            bench.iter(|| {
                index = (index + KEY_STRIDE) % keys;
                store.range(&point(index)).expect("range")
            });
        });
        if versions > 1 {
            let old = store
                .range(&point(3).at_revision(first_round))
                .expect("range");
            assert_eq!(old.kvs[0].version, 1, "the first round's version is read");
            group.bench_function(format!("range/point_at_first_version/{shape}"), |bench| {
                bench.iter(|| {
                    index = (index + KEY_STRIDE) % keys;
                    store
                        .range(&point(index).at_revision(first_round))
                        .expect("range")
                });
            });
        }
        group.throughput(Throughput::Elements(SPAN_KEYS as u64));
        group.bench_function(format!("range/span={SPAN_KEYS}/{shape}"), |bench| {
            bench.iter(|| {
                index = (index + KEY_STRIDE) % keys;
                store.range(&span(index)).expect("range")
            });
        });
        group.throughput(Throughput::Elements(keys as u64));
        group.bench_function(format!("range/count_only/span=all/{shape}"), |bench| {
            bench.iter(|| black_box(store.range(&count_all).expect("range").count));
        });
    }
    group.finish();
}
