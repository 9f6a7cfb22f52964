//! Model-based property test of the MVCC store.
//!
//! Goal: every response, header revision, error kind and commit event of the store matches
//! a deliberately naive model of etcd's semantics, across random batches, aborted batches,
//! compactions and restarts.
//!
//! Method: proptest generates a sequence of steps over a small key alphabet (so requests
//! collide): write batches holding several requests (range with every option, put with
//! prev_kv/ignore_value/ignore_lease and known/unknown leases, delete over single keys,
//! intervals, prefixes and "\0" ranges, nested txns with compares of all targets, compact),
//! committed or dropped, each with the store's `put_prev_kv` on or off; committed reads
//! while a batch is open; restarts (the store and the RocksDB backend are reopened on
//! the same directory); and HashKV checks. The model keeps a
//! full copy of the key space for every revision (`states[r]`), which makes reads at old
//! revisions trivial and independent of the store's index and compaction code.
//!
//! [`Model`] also gives the watch hub's property test (`watch::tests::model`) the events it
//! expects, which is why it and its write methods are visible to the crate.
//!
//! Failures print the minimal failing step sequence; proptest also stores the seed under
//! `proptest-regressions/` and replays it first next time. `PROPTEST_CASES=n` overrides the
//! case count.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use tempfile::TempDir;

use crate::storage::backend::{Backend, Cf};
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventType, KeyRange, KeyValue, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

use super::super::{MvccError, MvccStore};

/// Keys used by every request: single letters, two-letter keys sharing prefixes, and the
/// extreme bytes `\0` and `\xff`.
const KEYS: [&[u8]; 10] = [
    b"\0", b"a", b"b", b"c", b"d", b"e", b"aa", b"ab", b"ba", b"\xff",
];
const VALUES: [&[u8]; 5] = [b"", b"x", b"y", b"z", b"xx"];
/// Leases granted in every run; anything else is unknown.
const GRANTED_LEASES: [LeaseId; 2] = [1, 2];
const UNKNOWN_LEASE: LeaseId = 99;
const DEFAULT_CASES: u32 = 64;

fn lease_exists(id: LeaseId) -> bool {
    GRANTED_LEASES.contains(&id)
}

// ---------------------------------------------------------------------------------------
// Generated steps. Revisions are symbolic and resolved against the current revision when a
// request runs, so reads hit old, compacted, current and future revisions in useful mixes.

#[derive(Clone, Copy, Debug)]
enum RevisionPick {
    /// `revision = 0`.
    Latest,
    /// A negative revision (also means latest).
    Negative,
    /// `current - n`, at least 1.
    Back(i64),
    /// A fixed revision, often in the future or compacted.
    Absolute(i64),
}

impl RevisionPick {
    fn resolve(self, current: Revision) -> Revision {
        match self {
            RevisionPick::Latest => 0,
            RevisionPick::Negative => -1,
            RevisionPick::Back(back) => (current - back).max(1),
            RevisionPick::Absolute(revision) => revision,
        }
    }
}

#[derive(Clone, Debug)]
struct GenRange {
    request: RangeRequest,
    revision: RevisionPick,
}

#[derive(Clone, Debug)]
enum GenOp {
    Range(GenRange),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(GenTxn),
}

#[derive(Clone, Debug)]
struct GenTxn {
    compare: Vec<Compare>,
    success: Vec<GenOp>,
    failure: Vec<GenOp>,
}

#[derive(Clone, Debug)]
enum Request {
    Op(GenOp),
    Compact(RevisionPick),
}

#[derive(Clone, Debug)]
enum CommittedRead {
    Range(GenRange),
    Txn(GenTxn),
}

#[derive(Clone, Debug)]
enum Step {
    /// Runs the requests in one write batch; commits it or drops it. The committed reads
    /// (ranges, and read-only txns through `MvccStore::read_txn`) run against the store,
    /// not the batch, halfway through.
    Batch {
        requests: Vec<Request>,
        commit: bool,
        committed_reads: Vec<CommittedRead>,
        /// The store's `put_prev_kv` setting while the batch runs.
        put_prev_kv: bool,
    },
    /// Reopens the backend and the store on the same directory, optionally after
    /// compacting at the current revision (which may remove the newest history rows).
    Restart { compact_first: bool },
    /// HashKV at a revision.
    Hash(RevisionPick),
}

fn materialize(op: &GenOp, current: Revision) -> RequestOp {
    match op {
        GenOp::Range(range) => RequestOp::Range(RangeRequest {
            revision: range.revision.resolve(current),
            ..range.request.clone()
        }),
        GenOp::Put(put) => RequestOp::Put(put.clone()),
        GenOp::Delete(delete) => RequestOp::DeleteRange(delete.clone()),
        GenOp::Txn(txn) => RequestOp::Txn(materialize_txn(txn, current)),
    }
}

fn materialize_txn(txn: &GenTxn, current: Revision) -> TxnRequest {
    TxnRequest {
        compare: txn.compare.clone(),
        success: txn
            .success
            .iter()
            .map(|op| materialize(op, current))
            .collect(),
        failure: txn
            .failure
            .iter()
            .map(|op| materialize(op, current))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Strategies.

fn key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(KEYS.to_vec()).prop_map(Bytes::from_static)
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(VALUES.to_vec()).prop_map(Bytes::from_static)
}

fn lease() -> impl Strategy<Value = LeaseId> {
    prop_oneof![6 => Just(0), 1 => Just(1), 1 => Just(2), 1 => Just(UNKNOWN_LEASE)]
}

fn key_range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        5 => key().prop_map(KeyRange::single),
        3 => (key(), key()).prop_map(|(key, range_end)| KeyRange::new(key, range_end)),
        1 => key().prop_map(|key| KeyRange::new(key, Bytes::from_static(b"\0"))),
        1 => Just(KeyRange::new(Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))),
        2 => prop::sample::select(vec![&b""[..], b"a", b"b", b"\xff"])
            .prop_map(|prefix| KeyRange::prefix(Bytes::from_static(prefix))),
    ]
}

fn revision_pick() -> impl Strategy<Value = RevisionPick> {
    prop_oneof![
        6 => Just(RevisionPick::Latest),
        1 => Just(RevisionPick::Negative),
        4 => (0i64..8).prop_map(RevisionPick::Back),
        1 => (1i64..60).prop_map(RevisionPick::Absolute),
    ]
}

fn filter_revision() -> impl Strategy<Value = Revision> {
    prop_oneof![12 => Just(0), 1 => 1i64..40]
}

fn gen_range() -> impl Strategy<Value = GenRange> {
    let shape = (
        key_range(),
        prop_oneof![3 => Just(0i64), 2 => 1i64..5, 1 => Just(-1i64)],
        prop::sample::select(vec![SortOrder::None, SortOrder::Ascend, SortOrder::Descend]),
        prop::sample::select(vec![
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ]),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    );
    let filters = (
        filter_revision(),
        filter_revision(),
        filter_revision(),
        filter_revision(),
    );
    (shape, filters, revision_pick()).prop_map(
        |((range, limit, sort_order, sort_target, keys_only, count_only), filters, revision)| {
            let (min_mod_revision, max_mod_revision, min_create_revision, max_create_revision) =
                filters;
            GenRange {
                request: RangeRequest {
                    range,
                    limit,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    min_mod_revision,
                    max_mod_revision,
                    min_create_revision,
                    max_create_revision,
                    ..RangeRequest::default()
                },
                revision,
            }
        },
    )
}

fn put_request() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        lease(),
        any::<bool>(),
        prop::bool::weighted(0.08),
        prop::bool::weighted(0.08),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (key_range(), any::<bool>()).prop_map(|(range, prev_kv)| DeleteRangeRequest { range, prev_kv })
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0i64..4).prop_map(CompareTarget::Version),
        (0i64..30).prop_map(CompareTarget::Create),
        (0i64..30).prop_map(CompareTarget::Mod),
        value().prop_map(CompareTarget::Value),
        prop::sample::select(vec![0, 1, 2, UNKNOWN_LEASE]).prop_map(CompareTarget::Lease),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ]);
    let range = prop_oneof![4 => key().prop_map(KeyRange::single), 1 => key_range()];
    (range, result, target).prop_map(|(range, result, target)| Compare {
        range,
        result,
        target,
    })
}

fn gen_op(depth: u32) -> BoxedStrategy<GenOp> {
    let leaf = prop_oneof![
        3 => gen_range().prop_map(GenOp::Range),
        4 => put_request().prop_map(GenOp::Put),
        2 => delete_request().prop_map(GenOp::Delete),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![6 => leaf, 1 => gen_txn(depth - 1).prop_map(GenOp::Txn)].boxed()
}

fn gen_txn(depth: u32) -> BoxedStrategy<GenTxn> {
    let ops = |max: usize| prop::collection::vec(gen_op(depth), 0..max);
    (prop::collection::vec(compare(), 0..3), ops(4), ops(3))
        .prop_map(|(compare, success, failure)| GenTxn {
            compare,
            success,
            failure,
        })
        .boxed()
}

/// A txn that writes, deletes a key and then puts it again with `ignore_value` or
/// `ignore_lease`. When the key exists before the txn, the checks made before running pass
/// and the txn fails while running, after some of its writes: they must all be undone.
fn delete_then_reuse() -> impl Strategy<Value = GenTxn> {
    (put_request(), key(), any::<bool>()).prop_map(|(first, key, ignore_value)| {
        let delete = DeleteRangeRequest {
            range: KeyRange::single(key.clone()),
            prev_kv: false,
        };
        let reuse = PutRequest {
            key,
            ignore_value,
            ignore_lease: !ignore_value,
            ..PutRequest::default()
        };
        GenTxn {
            compare: Vec::new(),
            success: vec![GenOp::Put(first), GenOp::Delete(delete), GenOp::Put(reuse)],
            failure: Vec::new(),
        }
    })
}

fn compaction_pick() -> impl Strategy<Value = RevisionPick> {
    prop_oneof![
        // Compacting at the current revision is the edge that removes the newest rows.
        2 => Just(RevisionPick::Back(0)),
        3 => (1i64..10).prop_map(RevisionPick::Back),
        1 => (0i64..60).prop_map(RevisionPick::Absolute),
    ]
}

/// A txn holding only compares, ranges and nested read-only txns.
fn gen_read_txn(depth: u32) -> BoxedStrategy<GenTxn> {
    let op = if depth == 0 {
        gen_range().prop_map(GenOp::Range).boxed()
    } else {
        prop_oneof![
            4 => gen_range().prop_map(GenOp::Range),
            1 => gen_read_txn(depth - 1).prop_map(GenOp::Txn),
        ]
        .boxed()
    };
    let ops = move |max: usize| prop::collection::vec(op.clone(), 0..max);
    (prop::collection::vec(compare(), 0..3), ops(3), ops(3))
        .prop_map(|(compare, success, failure)| GenTxn {
            compare,
            success,
            failure,
        })
        .boxed()
}

fn committed_read() -> impl Strategy<Value = CommittedRead> {
    prop_oneof![
        2 => gen_range().prop_map(CommittedRead::Range),
        1 => gen_read_txn(1).prop_map(CommittedRead::Txn),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        3 => gen_range().prop_map(|range| Request::Op(GenOp::Range(range))),
        7 => put_request().prop_map(|put| Request::Op(GenOp::Put(put))),
        2 => delete_request().prop_map(|delete| Request::Op(GenOp::Delete(delete))),
        3 => gen_txn(2).prop_map(|txn| Request::Op(GenOp::Txn(txn))),
        1 => delete_then_reuse().prop_map(|txn| Request::Op(GenOp::Txn(txn))),
        1 => compaction_pick().prop_map(Request::Compact),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let batch = (
        prop::collection::vec(request(), 1..10),
        prop::bool::weighted(0.85),
        prop::collection::vec(committed_read(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(requests, commit, committed_reads, put_prev_kv)| Step::Batch {
                requests,
                commit,
                committed_reads,
                put_prev_kv,
            },
        );
    prop_oneof![
        12 => batch,
        2 => any::<bool>().prop_map(|compact_first| Step::Restart { compact_first }),
        1 => revision_pick().prop_map(Step::Hash),
    ]
}

// ---------------------------------------------------------------------------------------
// The model.

/// The error kinds compared between store and model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    Future {
        requested: Revision,
        current: Revision,
    },
    LeaseNotFound(LeaseId),
    KeyNotFound,
}

fn failure(error: MvccError) -> Failure {
    match error {
        MvccError::Compacted {
            requested,
            compacted,
        } => Failure::Compacted {
            requested,
            compacted,
        },
        MvccError::FutureRevision { requested, current } => Failure::Future { requested, current },
        MvccError::LeaseNotFound(lease) => Failure::LeaseNotFound(lease),
        MvccError::KeyNotFound => Failure::KeyNotFound,
        fatal => panic!("fatal store error: {fatal}"),
    }
}

type KeySpace = BTreeMap<Bytes, KeyValue>;

/// The naive model: one full key space per revision.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    /// `states[r]` is the key space at revision `r`; `states[0]` is unused.
    states: Vec<KeySpace>,
    /// `rows[r]` is the number of changes (history rows) made at revision `r`.
    rows: Vec<usize>,
    /// `deletes[r]` is the number of those changes that are deletes.
    deletes: Vec<usize>,
    compacted: Revision,
    /// Puts report the version they replace in their event even unasked (the store's
    /// `put_prev_kv`).
    pub(crate) put_prev_kv: bool,
}

/// What a txn execution in the model accumulates.
struct TxnRun<'m> {
    model: &'m Model,
    work: KeySpace,
    revision: Revision,
    changed: bool,
    events: Vec<Event>,
}

impl Model {
    pub(crate) fn new() -> Model {
        Model {
            states: vec![KeySpace::new(), KeySpace::new()],
            rows: vec![0, 0],
            deletes: vec![0, 0],
            compacted: 0,
            put_prev_kv: true,
        }
    }

    pub(crate) fn current(&self) -> Revision {
        Revision::try_from(self.states.len()).unwrap() - 1
    }

    fn latest(&self) -> &KeySpace {
        self.states.last().unwrap()
    }

    fn check_revision(&self, requested: Revision) -> Result<Revision, Failure> {
        let current = self.current();
        let at = if requested <= 0 { current } else { requested };
        if at > current {
            return Err(Failure::Future { requested, current });
        }
        if at < self.compacted {
            return Err(Failure::Compacted {
                requested,
                compacted: self.compacted,
            });
        }
        Ok(at)
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Failure> {
        let at = self.check_revision(request.revision)?;
        Ok(model_range(
            &self.states[usize::try_from(at).unwrap()],
            request,
        ))
    }

    pub(crate) fn put(
        &mut self,
        request: &PutRequest,
        events: &mut Vec<Event>,
    ) -> Result<(PutResponse, Revision), Failure> {
        if request.lease != 0 && !lease_exists(request.lease) {
            return Err(Failure::LeaseNotFound(request.lease));
        }
        let mut work = self.latest().clone();
        let revision = self.current() + 1;
        let response = model_put(&mut work, request, revision, self.put_prev_kv, events)?;
        self.push(work, 1, 0);
        Ok((response, revision))
    }

    pub(crate) fn delete(
        &mut self,
        request: &DeleteRangeRequest,
        events: &mut Vec<Event>,
    ) -> (DeleteRangeResponse, Revision) {
        let mut work = self.latest().clone();
        let revision = self.current() + 1;
        let response = model_delete(&mut work, request, revision, events);
        if response.deleted == 0 {
            return (response, self.current());
        }
        self.push(work, doomed_rows(&response), doomed_rows(&response));
        (response, revision)
    }

    pub(crate) fn txn(
        &mut self,
        request: &TxnRequest,
        events: &mut Vec<Event>,
    ) -> Result<(TxnResponse, Revision), Failure> {
        let before = self.latest().clone();
        let mut path = Vec::new();
        choose_path(&before, request, &mut path);
        self.check_puts(&before, request, &path, &mut 0)?;
        self.check_ranges(request, &path, &mut 0)?;
        let mut run = TxnRun {
            model: self,
            work: before,
            revision: self.current() + 1,
            changed: false,
            events: Vec::new(),
        };
        let response = run.execute(request, &path, &mut 0)?;
        let (work, changed, new_events) = (run.work, run.changed, run.events);
        if changed {
            let deletes = new_events
                .iter()
                .filter(|event| event.kind == EventType::Delete)
                .count();
            self.push(work, new_events.len(), deletes);
        }
        events.extend(new_events);
        Ok((response, self.current()))
    }

    fn push(&mut self, state: KeySpace, rows: usize, deletes: usize) {
        assert!(rows > 0, "a new revision changes something");
        self.states.push(state);
        self.rows.push(rows);
        self.deletes.push(deletes);
    }

    /// History rows left after compaction: every change above the compact revision, the
    /// version at the compact revision of each key live then, and for each key deleted
    /// exactly at the compact revision its tombstone and the put it ended (the compact
    /// revision stays readable as history).
    fn expected_rows(&self) -> usize {
        let compacted = usize::try_from(self.compacted).unwrap();
        if compacted == 0 {
            return self.rows.iter().sum();
        }
        // Each delete at the compact revision ended one generation, whose last put stays.
        self.rows[compacted + 1..].iter().sum::<usize>()
            + self.states[compacted].len()
            + 2 * self.deletes[compacted]
    }

    fn check_puts(
        &self,
        before: &KeySpace,
        request: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<(), Failure> {
        let succeeded = path[*cursor];
        *cursor += 1;
        for op in if succeeded {
            &request.success
        } else {
            &request.failure
        } {
            match op {
                RequestOp::Put(put) => {
                    if (put.ignore_value || put.ignore_lease) && !before.contains_key(&put.key) {
                        return Err(Failure::KeyNotFound);
                    }
                    if put.lease != 0 && !lease_exists(put.lease) {
                        return Err(Failure::LeaseNotFound(put.lease));
                    }
                }
                RequestOp::Txn(nested) => self.check_puts(before, nested, path, cursor)?,
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(())
    }

    fn check_ranges(
        &self,
        request: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<(), Failure> {
        let succeeded = path[*cursor];
        *cursor += 1;
        for op in if succeeded {
            &request.success
        } else {
            &request.failure
        } {
            match op {
                RequestOp::Range(range) => {
                    self.check_revision(range.revision)?;
                }
                RequestOp::Txn(nested) => self.check_ranges(nested, path, cursor)?,
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(())
    }

    pub(crate) fn compact(&mut self, revision: Revision) -> Result<Revision, Failure> {
        if revision <= self.compacted {
            return Err(Failure::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        if revision > self.current() {
            return Err(Failure::Future {
                requested: revision,
                current: self.current(),
            });
        }
        self.compacted = revision;
        Ok(self.current())
    }
}

impl TxnRun<'_> {
    fn execute(
        &mut self,
        request: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<TxnResponse, Failure> {
        let succeeded = path[*cursor];
        *cursor += 1;
        let mut responses = Vec::new();
        for op in if succeeded {
            &request.success
        } else {
            &request.failure
        } {
            responses.push(match op {
                RequestOp::Range(range) if range.revision > 0 => {
                    ResponseOp::Range(self.model.range(range)?)
                }
                RequestOp::Range(range) => ResponseOp::Range(model_range(&self.work, range)),
                RequestOp::Put(put) => {
                    let response = model_put(
                        &mut self.work,
                        put,
                        self.revision,
                        self.model.put_prev_kv,
                        &mut self.events,
                    )?;
                    self.changed = true;
                    ResponseOp::Put(response)
                }
                RequestOp::DeleteRange(delete) => {
                    let response =
                        model_delete(&mut self.work, delete, self.revision, &mut self.events);
                    self.changed |= response.deleted > 0;
                    ResponseOp::DeleteRange(response)
                }
                RequestOp::Txn(nested) => ResponseOp::Txn(self.execute(nested, path, cursor)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }
}

fn doomed_rows(response: &DeleteRangeResponse) -> usize {
    usize::try_from(response.deleted).unwrap()
}

fn choose_path(before: &KeySpace, request: &TxnRequest, path: &mut Vec<bool>) {
    let succeeded = request
        .compare
        .iter()
        .all(|compare| model_compare(before, compare));
    path.push(succeeded);
    for op in if succeeded {
        &request.success
    } else {
        &request.failure
    } {
        if let RequestOp::Txn(nested) = op {
            choose_path(before, nested, path);
        }
    }
}

fn model_compare(space: &KeySpace, compare: &Compare) -> bool {
    let matching: Vec<&KeyValue> = space
        .values()
        .filter(|kv| compare.range.contains(&kv.key))
        .collect();
    if matching.is_empty() {
        if let CompareTarget::Value(_) = compare.target {
            return false;
        }
        return compare_one(&KeyValue::default(), compare);
    }
    matching.into_iter().all(|kv| compare_one(kv, compare))
}

fn compare_one(kv: &KeyValue, compare: &Compare) -> bool {
    // -1, 0, 1 like a C comparison, computed without `Ord::cmp` on purpose.
    let sign = |left: i64, right: i64| (left > right) as i32 - (left < right) as i32;
    let relation = match &compare.target {
        CompareTarget::Version(version) => sign(kv.version, *version),
        CompareTarget::Create(revision) => sign(kv.create_revision, *revision),
        CompareTarget::Mod(revision) => sign(kv.mod_revision, *revision),
        CompareTarget::Lease(lease) => sign(kv.lease, *lease),
        CompareTarget::Value(value) => {
            let (left, right) = (kv.value.to_vec(), value.to_vec());
            (left > right) as i32 - (left < right) as i32
        }
    };
    match compare.result {
        CompareResult::Equal => relation == 0,
        CompareResult::NotEqual => relation != 0,
        CompareResult::Greater => relation == 1,
        CompareResult::Less => relation == -1,
    }
}

/// A put; its event carries what it replaced when `put_prev_kv` is on or the request itself
/// needed it (asked for it, or kept its value or lease).
fn model_put(
    space: &mut KeySpace,
    request: &PutRequest,
    revision: Revision,
    put_prev_kv: bool,
    events: &mut Vec<Event>,
) -> Result<PutResponse, Failure> {
    let previous = space.get(&request.key).cloned();
    if (request.ignore_value || request.ignore_lease) && previous.is_none() {
        return Err(Failure::KeyNotFound);
    }
    let kv = KeyValue {
        key: request.key.clone(),
        create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
        mod_revision: revision,
        version: previous.as_ref().map_or(1, |p| p.version + 1),
        value: match (&previous, request.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => request.value.clone(),
        },
        lease: match (&previous, request.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => request.lease,
        },
    };
    space.insert(request.key.clone(), kv.clone());
    let loaded = put_prev_kv || request.prev_kv || request.ignore_value || request.ignore_lease;
    events.push(Event {
        kind: EventType::Put,
        kv,
        prev_kv: if loaded { previous.clone() } else { None },
    });
    Ok(PutResponse {
        prev_kv: if request.prev_kv { previous } else { None },
    })
}

fn model_delete(
    space: &mut KeySpace,
    request: &DeleteRangeRequest,
    revision: Revision,
    events: &mut Vec<Event>,
) -> DeleteRangeResponse {
    let doomed: Vec<KeyValue> = space
        .values()
        .filter(|kv| request.range.contains(&kv.key))
        .cloned()
        .collect();
    for kv in &doomed {
        space.remove(&kv.key);
        let tombstone = KeyValue {
            key: kv.key.clone(),
            mod_revision: revision,
            ..KeyValue::default()
        };
        events.push(Event {
            kind: EventType::Delete,
            kv: tombstone,
            prev_kv: Some(kv.clone()),
        });
    }
    DeleteRangeResponse {
        deleted: i64::try_from(doomed.len()).unwrap(),
        prev_kvs: if request.prev_kv { doomed } else { Vec::new() },
    }
}

fn model_range(space: &KeySpace, request: &RangeRequest) -> RangeResponse {
    let mut kvs: Vec<KeyValue> = space
        .values()
        .filter(|kv| request.range.contains(&kv.key))
        .cloned()
        .collect();
    let count = i64::try_from(kvs.len()).unwrap();
    if request.count_only {
        return RangeResponse {
            kvs: Vec::new(),
            more: false,
            count,
        };
    }
    let within =
        |value: i64, min: i64, max: i64| (min == 0 || value >= min) && (max == 0 || value <= max);
    kvs.retain(|kv| {
        within(
            kv.mod_revision,
            request.min_mod_revision,
            request.max_mod_revision,
        ) && within(
            kv.create_revision,
            request.min_create_revision,
            request.max_create_revision,
        )
    });
    let mut order = request.sort_order;
    if request.sort_target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        // Stable sort; ties keep ascending key order in both directions.
        let target = request.sort_target;
        kvs.sort_by(|a, b| {
            let ordering = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(request.limit)
        && limit > 0
        && kvs.len() > limit
    {
        kvs.truncate(limit);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResponse { kvs, more, count }
}

// ---------------------------------------------------------------------------------------
// The test.

struct Harness {
    dir: TempDir,
    store: Option<MvccStore>,
    model: Model,
    /// HashKV results seen so far, by (compact revision, hash revision).
    hashes: BTreeMap<(Revision, Revision), u32>,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Backend::open(dir.path()).unwrap());
        let store = Some(MvccStore::open(backend).unwrap());
        Harness {
            dir,
            store,
            model: Model::new(),
            hashes: BTreeMap::new(),
        }
    }

    fn store(&self) -> &MvccStore {
        self.store.as_ref().unwrap()
    }

    fn restart(&mut self) {
        drop(self.store.take());
        let backend = Arc::new(Backend::open(self.dir.path()).unwrap());
        self.store = Some(MvccStore::open(backend).unwrap());
        self.check_every_revision();
    }

    fn check_counters(&self) {
        assert_eq!(
            self.store().current_revision(),
            self.model.current(),
            "current revision"
        );
        assert_eq!(
            self.store().compact_revision(),
            self.model.compacted,
            "compact revision"
        );
    }

    /// Reads every readable revision in full and compares it with the model, and checks
    /// that compaction removed exactly the unreadable history rows.
    fn check_every_revision(&self) {
        self.check_counters();
        let rows = self.store().backend().scan(Cf::Kv, &[], None).count();
        assert_eq!(
            rows,
            self.model.expected_rows(),
            "history rows after compaction"
        );
        let everything = RangeRequest {
            range: KeyRange::new(Bytes::from_static(b"\0"), Bytes::from_static(b"\0")),
            ..RangeRequest::default()
        };
        for revision in self.model.compacted.max(1)..=self.model.current() {
            let request = RangeRequest {
                revision,
                ..everything.clone()
            };
            let stored = self.store().range(&request).map_err(failure);
            assert_eq!(
                stored,
                self.model.range(&request),
                "full read at revision {revision}"
            );
        }
    }

    fn hash(&mut self, pick: RevisionPick) {
        let revision = pick.resolve(self.model.current());
        let stored = self.store().hash_kv(revision).map_err(failure);
        let expected = self.model.check_revision(revision);
        match (stored, expected) {
            (Ok(hash), Ok(at)) => {
                assert_eq!(
                    (hash.hash_revision, hash.compact_revision),
                    (at, self.model.compacted)
                );
                let seen = *self
                    .hashes
                    .entry((self.model.compacted, at))
                    .or_insert(hash.hash);
                assert_eq!(
                    seen, hash.hash,
                    "hash of ({}, {at}] changed",
                    self.model.compacted
                );
            }
            (stored, expected) => {
                assert_eq!(
                    stored.map(|_| ()),
                    expected.map(|_| ()),
                    "hash_kv({revision})"
                );
            }
        }
    }

    fn batch(
        &mut self,
        requests: &[Request],
        commit: bool,
        committed_reads: &[CommittedRead],
        put_prev_kv: bool,
    ) {
        self.store().set_put_prev_kv(put_prev_kv);
        self.model.put_prev_kv = put_prev_kv;
        let before = self.model.clone();
        let mut events = Vec::new();
        let store = self.store.as_ref().unwrap();
        let mut batch = store.write();
        for (position, request) in requests.iter().enumerate() {
            if position == requests.len() / 2 {
                for read in committed_reads {
                    check_committed_read(store, &before, read);
                }
            }
            let current = self.model.current();
            assert_eq!(
                batch.current_revision(),
                current,
                "batch revision before {request:?}"
            );
            match request {
                Request::Compact(pick) => {
                    let revision = pick.resolve(current);
                    let stored = batch.compact(revision).map_err(failure);
                    assert_eq!(stored, self.model.compact(revision), "compact({revision})");
                }
                Request::Op(op) => match materialize(op, current) {
                    RequestOp::Range(range) => {
                        let stored = batch.range(&range).map_err(failure);
                        assert_eq!(stored, self.model.range(&range), "range {range:?}");
                    }
                    RequestOp::Put(put) => {
                        let stored = batch.put(&put, &lease_exists).map_err(failure);
                        assert_eq!(stored, self.model.put(&put, &mut events), "put {put:?}");
                    }
                    RequestOp::DeleteRange(delete) => {
                        let stored = batch.delete_range(&delete).map_err(failure);
                        let expected = self.model.delete(&delete, &mut events);
                        assert_eq!(stored, Ok(expected), "delete {delete:?}");
                    }
                    RequestOp::Txn(txn) => {
                        let stored = batch.txn(&txn, &lease_exists).map_err(failure);
                        assert_eq!(stored, self.model.txn(&txn, &mut events), "txn {txn:?}");
                    }
                },
            }
        }
        if commit {
            let committed = batch.commit().unwrap();
            assert_eq!(
                committed.revision,
                self.model.current(),
                "committed revision"
            );
            assert_eq!(committed.events, events, "events");
        } else {
            drop(batch);
            self.model = before;
        }
        self.check_counters();
    }

    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            match step {
                Step::Batch {
                    requests,
                    commit,
                    committed_reads,
                    put_prev_kv,
                } => {
                    self.batch(requests, *commit, committed_reads, *put_prev_kv);
                }
                Step::Restart { compact_first } => {
                    if *compact_first && self.model.current() > self.model.compacted {
                        let current = self.model.current();
                        self.batch(
                            &[Request::Compact(RevisionPick::Absolute(current))],
                            true,
                            &[],
                            true,
                        );
                    }
                    self.restart();
                }
                Step::Hash(pick) => self.hash(*pick),
            }
        }
        self.check_every_revision();
    }
}

/// A read through the store (not the batch) must see only `committed`, the model before
/// the open batch.
fn check_committed_read(store: &MvccStore, committed: &Model, read: &CommittedRead) {
    match read {
        CommittedRead::Range(range) => {
            let request = RangeRequest {
                revision: range.revision.resolve(committed.current()),
                ..range.request.clone()
            };
            let stored = store.range(&request).map_err(failure);
            assert_eq!(
                stored,
                committed.range(&request),
                "committed read {request:?}"
            );
        }
        CommittedRead::Txn(txn) => {
            let request = materialize_txn(txn, committed.current());
            let stored = store.read_txn(&request).map_err(failure);
            let expected = committed.clone().txn(&request, &mut Vec::new());
            assert_eq!(stored, expected, "committed read-only txn {request:?}");
        }
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn store_matches_the_model(steps in prop::collection::vec(step(), 1..32)) {
        Harness::new().run(&steps);
    }
}
