//! Read semantics shared by committed reads ([`super::MvccStore::range`]) and reads inside
//! a write batch: revision checks, count/limit/more, filters, sorting, `keys_only`,
//! `count_only`, and transaction compares.
//!
//! Owns: the exact etcd rules for Range responses and Compare results.
//! Must not: take locks or touch the backend itself; callers pass a walk over the index and
//! a row loader, so the same code serves both committed state and a batch's pending state.
//!
//! A read runs in two steps. The first walks the key index (under the caller's lock) and
//! keeps, per key, the version visible at the read revision. The second loads rows and
//! shapes the response. Filters and sorts on revisions and versions need only the index, so
//! rows are loaded only for what is returned (or for every match when sorting by value).

use bytes::Bytes;

use crate::types::{
    Compare, CompareResult, CompareTarget, KeyValue, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

use super::error::MvccError;
use super::index::{Index, LayeredEntry, PendingIndex, layered_range, visible};
use super::key_index::VisibleVersion;

/// What a range read will do, decided before the index walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangePlan {
    /// The main revision the read sees.
    pub at: Revision,
    collect: Collect,
}

/// Which visible versions the index walk keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Collect {
    /// Only count them (`count_only`).
    Nothing,
    /// The first `n` in key order: no filter and key-ascending order, so the limit can be
    /// applied while walking.
    First(usize),
    /// All of them: a filter or a non-key order needs the whole range before the limit.
    All,
}

/// The visible versions found by the index walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Keys visible in the range, ignoring limit and filters.
    pub count: i64,
    /// The kept versions, in key order.
    pub entries: Vec<(Bytes, VisibleVersion)>,
}

impl RangePlan {
    /// A plan that keeps every key visible at `at`, for internal reads (deletes).
    pub fn everything_at(at: Revision) -> RangePlan {
        RangePlan {
            at,
            collect: Collect::All,
        }
    }
}

/// Resolves the read revision of `request` against the `current` and `compacted` revisions.
///
/// # Errors
/// [`MvccError::FutureRevision`] above `current`, [`MvccError::Compacted`] below
/// `compacted` (the compact revision itself is readable).
pub fn plan_range(
    request: &RangeRequest,
    current: Revision,
    compacted: Revision,
) -> Result<RangePlan, MvccError> {
    let at = check_read_revision(request.revision, current, compacted)?;
    let collect = if request.count_only {
        Collect::Nothing
    } else if needs_whole_range(request) {
        Collect::All
    } else {
        match usize::try_from(request.limit) {
            Ok(limit) if limit > 0 => Collect::First(limit),
            _ => Collect::All,
        }
    };
    Ok(RangePlan { at, collect })
}

/// The revision a read of `requested` sees (`<= 0` means `current`), or why it cannot.
///
/// # Errors
/// As [`plan_range`].
pub fn check_read_revision(
    requested: Revision,
    current: Revision,
    compacted: Revision,
) -> Result<Revision, MvccError> {
    let at = if requested <= 0 { current } else { requested };
    if at > current {
        return Err(MvccError::FutureRevision { requested, current });
    }
    if at < compacted {
        return Err(MvccError::Compacted {
            requested,
            compacted,
        });
    }
    Ok(at)
}

/// True when the response depends on more than the first `limit` keys in key order.
///
/// etcd-compat: etcd (`server/etcdserver/txn/range.go`) fetches the whole range only when
/// the *requested* order is not NONE or a filter is set; with a non-key target and order
/// NONE it sorts just the first `limit + 1` keys. We sort the whole range in that case
/// too, so the answer does not depend on key order.
fn needs_whole_range(request: &RangeRequest) -> bool {
    request.sort_target != SortTarget::Key
        || request.sort_order == SortOrder::Descend
        || request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0
}

/// Walks the index entries of a range and keeps what `plan` asks for.
pub fn collect<'a>(walk: impl Iterator<Item = LayeredEntry<'a>>, plan: &RangePlan) -> Collected {
    let mut collected = Collected::default();
    for (key, committed, pending) in walk {
        let Some(version) = visible(committed, pending, plan.at) else {
            continue;
        };
        collected.count += 1;
        let keep = match plan.collect {
            Collect::Nothing => false,
            Collect::First(limit) => collected.entries.len() < limit,
            Collect::All => true,
        };
        if keep {
            collected.entries.push((key.clone(), version));
        }
    }
    collected
}

/// Shapes the response of `request` from the collected versions, loading rows through
/// `load` (which must return the row of the given version, checked by [`check_row`]).
///
/// # Errors
/// Whatever `load` returns.
pub fn finish_range(
    request: &RangeRequest,
    plan: &RangePlan,
    collected: Collected,
    mut load: impl FnMut(&Bytes, &VisibleVersion) -> Result<KeyValue, MvccError>,
) -> Result<RangeResponse, MvccError> {
    let Collected { count, mut entries } = collected;
    let limit = usize::try_from(request.limit)
        .ok()
        .filter(|limit| *limit > 0);
    let more;
    let mut kvs = match plan.collect {
        Collect::Nothing => {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        Collect::First(limit) => {
            more = count > i64::try_from(limit).unwrap_or(i64::MAX);
            load_all(&entries, &mut load)?
        }
        Collect::All => {
            entries.retain(|(_, version)| passes_filters(request, version));
            let order = effective_order(request);
            if request.sort_target == SortTarget::Value {
                let mut kvs = load_all(&entries, &mut load)?;
                sort_by_value(&mut kvs, order);
                more = limit.is_some_and(|limit| kvs.len() > limit);
                kvs.truncate(limit.unwrap_or(usize::MAX));
                kvs
            } else {
                sort_by_index_field(&mut entries, request.sort_target, order);
                more = limit.is_some_and(|limit| entries.len() > limit);
                entries.truncate(limit.unwrap_or(usize::MAX));
                load_all(&entries, &mut load)?
            }
        }
    };
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse { kvs, more, count })
}

/// The order actually applied: a non-key target with order NONE sorts ascending.
fn effective_order(request: &RangeRequest) -> SortOrder {
    if request.sort_target != SortTarget::Key && request.sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        request.sort_order
    }
}

/// Sorts by a field the index knows. Stable: ties stay in ascending key order, in both
/// directions (etcd's sort is not stable, so any tie order is compatible).
fn sort_by_index_field(
    entries: &mut [(Bytes, VisibleVersion)],
    target: SortTarget,
    order: SortOrder,
) {
    let field = |version: &VisibleVersion| match target {
        SortTarget::Version => version.version,
        SortTarget::Create => version.create_revision,
        SortTarget::Mod => version.revision.main,
        SortTarget::Key | SortTarget::Value => 0,
    };
    match (target, order) {
        (SortTarget::Key, SortOrder::Descend) => entries.reverse(),
        (SortTarget::Key, SortOrder::Ascend | SortOrder::None) => {}
        (_, SortOrder::Descend) => {
            entries.sort_by_key(|(_, version)| std::cmp::Reverse(field(version)));
        }
        (_, SortOrder::Ascend | SortOrder::None) => {
            entries.sort_by_key(|(_, version)| field(version));
        }
    }
}

/// Sorts by value bytes; stable like [`sort_by_index_field`].
fn sort_by_value(kvs: &mut [KeyValue], order: SortOrder) {
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| b.value.cmp(&a.value)),
        SortOrder::Ascend | SortOrder::None => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
}

/// The inclusive min/max revision filters; 0 means unset.
fn passes_filters(request: &RangeRequest, version: &VisibleVersion) -> bool {
    let mod_revision = version.revision.main;
    let create_revision = version.create_revision;
    (request.min_mod_revision == 0 || mod_revision >= request.min_mod_revision)
        && (request.max_mod_revision == 0 || mod_revision <= request.max_mod_revision)
        && (request.min_create_revision == 0 || create_revision >= request.min_create_revision)
        && (request.max_create_revision == 0 || create_revision <= request.max_create_revision)
}

fn load_all(
    entries: &[(Bytes, VisibleVersion)],
    load: &mut impl FnMut(&Bytes, &VisibleVersion) -> Result<KeyValue, MvccError>,
) -> Result<Vec<KeyValue>, MvccError> {
    entries
        .iter()
        .map(|(key, version)| load(key, version))
        .collect()
}

/// Pair check between the index and a loaded row: the row must be the version the index
/// points at. A mismatch means the history on disk and the index disagree.
///
/// # Errors
/// [`MvccError::Corrupt`] on any mismatch.
pub fn check_row(
    key: &[u8],
    version: &VisibleVersion,
    kv: KeyValue,
) -> Result<KeyValue, MvccError> {
    let matches = kv.key.as_ref() == key
        && kv.mod_revision == version.revision.main
        && kv.create_revision == version.create_revision
        && kv.version == version.version;
    if !matches {
        return Err(MvccError::Corrupt(format!(
            "row at {:?} is {kv:?}, but the index expects key {key:?} created {} version {}",
            version.revision, version.create_revision, version.version
        )));
    }
    Ok(kv)
}

/// Evaluates one transaction compare over the keys `walk` yields, at revision `at`.
///
/// Every existing key in the range must satisfy it. When no key exists, a VALUE compare is
/// false and the other targets compare against a zero key-value, so `version == 0` and
/// `create_revision == 0` mean "absent" (etcd `applyCompare`).
///
/// # Errors
/// Whatever `load` returns (rows are loaded only for VALUE and LEASE targets).
pub fn compare_holds<'a>(
    compare: &Compare,
    walk: impl Iterator<Item = LayeredEntry<'a>>,
    at: Revision,
    mut load: impl FnMut(&Bytes, &VisibleVersion) -> Result<KeyValue, MvccError>,
) -> Result<bool, MvccError> {
    let needs_row = matches!(
        compare.target,
        CompareTarget::Value(_) | CompareTarget::Lease(_)
    );
    let mut any_key = false;
    for (key, committed, pending) in walk {
        let Some(version) = visible(committed, pending, at) else {
            continue;
        };
        any_key = true;
        let kv = if needs_row {
            load(key, &version)?
        } else {
            KeyValue {
                key: key.clone(),
                create_revision: version.create_revision,
                mod_revision: version.revision.main,
                version: version.version,
                ..KeyValue::default()
            }
        };
        if !compare_key_value(compare, &kv) {
            return Ok(false);
        }
    }
    if any_key {
        return Ok(true);
    }
    let is_value = matches!(compare.target, CompareTarget::Value(_));
    Ok(!is_value && compare_key_value(compare, &KeyValue::default()))
}

/// Compares one key-value with the target of `compare`.
pub fn compare_key_value(compare: &Compare, kv: &KeyValue) -> bool {
    let order = match &compare.target {
        CompareTarget::Version(version) => kv.version.cmp(version),
        CompareTarget::Create(revision) => kv.create_revision.cmp(revision),
        CompareTarget::Mod(revision) => kv.mod_revision.cmp(revision),
        CompareTarget::Value(value) => kv.value.as_ref().cmp(value.as_ref()),
        CompareTarget::Lease(lease) => kv.lease.cmp(lease),
    };
    match compare.result {
        CompareResult::Equal => order.is_eq(),
        CompareResult::NotEqual => order.is_ne(),
        CompareResult::Greater => order.is_gt(),
        CompareResult::Less => order.is_lt(),
    }
}

/// Runs a txn without writes against one consistent view: `index` with `pending` layered
/// over it, at `current` with compact revision `compacted`. Compares and ranges all see that
/// view, so checking ranges before running them would find the same first error; one pass
/// does both.
///
/// # Errors
/// The first range at a future or compacted revision on the chosen path, or what `load`
/// returns.
///
/// # Panics
/// When the chosen path holds a write: callers check [`TxnRequest::is_read_only`].
pub fn read_only_txn(
    request: &TxnRequest,
    index: &Index,
    pending: &PendingIndex,
    current: Revision,
    compacted: Revision,
    load: &mut impl FnMut(&Bytes, &VisibleVersion) -> Result<KeyValue, MvccError>,
) -> Result<TxnResponse, MvccError> {
    let mut succeeded = true;
    for compare in &request.compare {
        let walk = layered_range(index, pending, &compare.range);
        if !compare_holds(compare, walk, current, &mut *load)? {
            succeeded = false;
            break;
        }
    }
    let operations = if succeeded {
        &request.success
    } else {
        &request.failure
    };
    let mut responses = Vec::with_capacity(operations.len());
    for op in operations {
        let response = match op {
            RequestOp::Range(range) => {
                let plan = plan_range(range, current, compacted)?;
                let collected = collect(layered_range(index, pending, &range.range), &plan);
                ResponseOp::Range(finish_range(range, &plan, collected, &mut *load)?)
            }
            RequestOp::Txn(nested) => ResponseOp::Txn(read_only_txn(
                nested, index, pending, current, compacted, load,
            )?),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                panic!("read_only_txn given a txn with writes")
            }
        };
        responses.push(response);
    }
    Ok(TxnResponse {
        succeeded,
        responses,
    })
}
