//! Linearizability checking: is there a total order of the operations, consistent with real time,
//! in which the model accepts every response?
//!
//! Owns the search (Wing & Gong's backtracking, with Lowe's memoization of visited
//! (linearized set, state) pairs), the split of a history into independent partitions checked in
//! parallel, the per-partition budgets, and the [`Verdict`] with its diagnostic.
//! Must not: know any model's semantics, or treat a search that ran out of budget as a pass: that
//! is [`Verdict::Unknown`], never [`Verdict::Linearizable`].
//!
//! # The search
//! Every operation contributes two entries, its call and its return, sorted by time with calls
//! first on ties, because intervals are closed (`[10, 20]` and `[20, 30]` overlap). The entries
//! form a doubly-linked list. Scanning from the head:
//! - at a call, try to linearize that operation now: if the model accepts it and the pair
//!   (linearized set, new state) has not been seen before, push it on the stack, unlink its call
//!   and return, and restart from the head;
//! - at a return, the operation it belongs to should already be linearized, so this is a dead
//!   end: pop the last choice, relink it, and try the entry after its call instead.
//!
//! The list empties exactly when every operation has a place in the order. An empty stack at a
//! dead end means no order exists. Unlinking and relinking are LIFO, so a relinked entry's own
//! neighbour pointers are still right (the "dancing links" trick).
//!
//! Worked example, one register starting absent: A = `write 1` over [0, 3], B = `read -> 1` over
//! [1, 2]. Entries: call A, call B, ret B, ret A. Linearize A (state 1), restart; the head is
//! now call B, and read 1 is legal in state 1, so linearize B. The list is empty: A, B is the
//! order. Had B read `nil`, B would be legal first (state absent), then A; also fine. Had A been
//! over [3, 4] instead, B's return would come before A's call: B would be tried first (illegal,
//! reads 1 in an absent register), the scan would reach ret B with an empty stack, and the verdict
//! would be "not linearizable" with B as the operation that could not be placed.
//!
//! # Unknown outcomes (jepsen.md §3.2)
//! An operation with an unknown outcome has its return at [`RETURN_NEVER`], after every other
//! entry, and the model accepts it with any result. So it can be placed anywhere after its call,
//! including after everything else, which is the same as never taking effect. Read-only
//! operations with unknown outcomes constrain nothing and are dropped up front. Each open
//! operation is concurrent with the rest of the history, so proving a violation costs up to
//! 2^(open operations): hence the budgets.
//!
//! # Partitions
//! If the model partitions inputs by key, each key's sub-history is checked on its own (locality:
//! the whole is linearizable iff every part is), in parallel, smallest first. The first illegal
//! partition stops the others.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::history::{History, Op, Outcome, RETURN_NEVER};
use crate::model::Model;

/// How long one partition may be searched before its verdict is [`Verdict::Unknown`]. Valid
/// histories within jepsen.md §3.3's guidance (at most 10 clients and 1000 operations per key)
/// take well under a second; proving a violation can take far longer, and 30 s is the low end of
/// the 30–60 s range that guidance recommends.
pub const PARTITION_TIME_BUDGET_DEFAULT: Duration = Duration::from_secs(30);

/// How much memory one partition's memo cache may use (a shallow estimate: the linearized set and
/// the state's inline size per entry, not heap data the state points to). Partitions run in
/// parallel, so the checker may use this much per core.
pub const CACHE_BYTES_MAX_DEFAULT: usize = 1 << 30;

/// Search steps between two looks at the clock and the stop flag; a clock read costs more than a
/// step, and 1024 steps take well under a millisecond.
const STEPS_PER_BUDGET_CHECK: u64 = 1 << 10;

/// Per-entry bookkeeping of the memo cache's hash table, beyond the entry itself.
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 16;

/// How many other open operations a diagnostic lists before summarizing the rest.
const DIAGNOSTIC_CANDIDATES_SHOWN_MAX: usize = 32;

/// Budgets for [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search time allowed per partition, from when that partition's search starts.
    pub partition_time_budget: Duration,
    /// Memo cache size allowed per partition, in bytes (estimated as described at
    /// [`CACHE_BYTES_MAX_DEFAULT`]).
    pub cache_bytes_max: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            partition_time_budget: PARTITION_TIME_BUDGET_DEFAULT,
            cache_bytes_max: CACHE_BYTES_MAX_DEFAULT,
        }
    }
}

/// The outcome of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every partition has a linearization.
    Linearizable,
    /// This partition has none.
    NotLinearizable {
        /// Which partition.
        partition: Partition,
        /// How far the search got.
        diagnostic: Diagnostic,
    },
    /// No partition was shown illegal, but this one could not be decided within its budget.
    /// This is not a pass.
    Unknown {
        /// Which partition.
        partition: Partition,
        /// Which budget ran out.
        reason: UnknownReason,
    },
}

impl Verdict {
    /// Whether the history was shown linearizable.
    #[must_use]
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable { partition, .. } => {
                write!(f, "not linearizable: {partition}")
            }
            Verdict::Unknown { partition, reason } => write!(f, "unknown: {partition} {reason}"),
        }
    }
}

/// One independently checked part of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The model's partition key, `None` when the model does not partition.
    pub key: Option<String>,
    /// Operations checked in it (after dropping unknown reads).
    pub op_count: usize,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "key {key:?} ({} operations)", self.op_count),
            None => write!(f, "the whole history ({} operations)", self.op_count),
        }
    }
}

/// Which budget a search exhausted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownReason {
    /// [`CheckOptions::partition_time_budget`].
    TimeBudget(Duration),
    /// [`CheckOptions::cache_bytes_max`].
    CacheBytes(usize),
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownReason::TimeBudget(budget) => {
                write!(f, "was not decided within its time budget of {budget:?}")
            }
            UnknownReason::CacheBytes(bytes) => {
                write!(
                    f,
                    "was not decided within its memo cache budget of {bytes} bytes"
                )
            }
        }
    }
}

/// Why a partition is not linearizable, as far as the search could tell: the longest prefix of
/// operations it managed to linearize, and the operation that then had to come next but could
/// not. Several prefixes may be equally long; this is the first one found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The longest linearizable prefix, in linearization order.
    pub prefix: Vec<OpSummary>,
    /// The model state after the prefix.
    pub state: String,
    /// The operation whose return was reached before it could be linearized after the prefix.
    pub blocked: OpSummary,
    /// Other operations called before `blocked` returned and not in the prefix: the alternatives
    /// that did not help either.
    pub candidates: Vec<OpSummary>,
}

/// One operation, named for a human.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSummary {
    /// Its index in the checked [`History`]'s operations.
    pub index: usize,
    /// Process, interval, input and output.
    pub text: String,
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.index, self.text)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "longest linearizable prefix ({} operations):",
            self.prefix.len()
        )?;
        for op in &self.prefix {
            writeln!(f, "  {op}")?;
        }
        writeln!(f, "model state after it: {}", self.state)?;
        writeln!(f, "first operation that cannot be linearized after it:")?;
        writeln!(f, "  {}", self.blocked)?;
        if !self.candidates.is_empty() {
            writeln!(f, "other operations open by then, none of which helps:")?;
            for op in self.candidates.iter().take(DIAGNOSTIC_CANDIDATES_SHOWN_MAX) {
                writeln!(f, "  {op}")?;
            }
            let hidden = self
                .candidates
                .len()
                .saturating_sub(DIAGNOSTIC_CANDIDATES_SHOWN_MAX);
            if hidden > 0 {
                writeln!(f, "  ... and {hidden} more")?;
            }
        }
        Ok(())
    }
}

/// Checks `history` against `model` within `options`' budgets.
///
/// # Panics
/// Only on a bug in the checker: its internal invariants are asserted.
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> Verdict {
    let partitions = split(model, history);
    let stop = AtomicBool::new(false);
    let ends: Vec<SearchEnd> = partitions
        .par_iter()
        .map(|(_, indexes)| {
            let ops: Vec<&Op<M::Input, M::Output>> =
                indexes.iter().map(|&index| &history.ops()[index]).collect();
            let end = search(model, &ops, options, &stop);
            if matches!(end, SearchEnd::Illegal(_)) {
                stop.store(true, Ordering::Relaxed);
            }
            end
        })
        .collect();

    let partition_of = |(key, indexes): &(Option<String>, Vec<usize>)| Partition {
        key: key.clone(),
        op_count: indexes.len(),
    };
    // Report the first illegal partition in a fixed order, so reruns agree when several are.
    for (part, end) in partitions.iter().zip(&ends) {
        if let SearchEnd::Illegal(dead_end) = end {
            let summary = |local: usize| {
                let index = part.1[local];
                OpSummary {
                    index,
                    text: history.ops()[index].to_string(),
                }
            };
            let diagnostic = Diagnostic {
                prefix: dead_end
                    .prefix
                    .iter()
                    .map(|&local| summary(local))
                    .collect(),
                state: dead_end.state.clone(),
                blocked: summary(dead_end.blocked),
                candidates: dead_end
                    .candidates
                    .iter()
                    .map(|&local| summary(local))
                    .collect(),
            };
            return Verdict::NotLinearizable {
                partition: partition_of(part),
                diagnostic,
            };
        }
    }
    for (part, end) in partitions.iter().zip(&ends) {
        let reason = match end {
            SearchEnd::OutOfTime => UnknownReason::TimeBudget(options.partition_time_budget),
            SearchEnd::OutOfCache => UnknownReason::CacheBytes(options.cache_bytes_max),
            SearchEnd::Linearizable | SearchEnd::Illegal(_) | SearchEnd::Stopped => continue,
        };
        return Verdict::Unknown {
            partition: partition_of(part),
            reason,
        };
    }
    // Searches stop early only when another partition is illegal, and none was.
    assert!(
        ends.iter()
            .all(|end| matches!(end, SearchEnd::Linearizable))
    );
    Verdict::Linearizable
}

/// The operations to check, grouped by partition key (as indexes into `history`), smallest
/// partition first so that cheap violations are found before expensive searches start.
fn split<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
) -> Vec<(Option<String>, Vec<usize>)> {
    let mut parts: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.ops().iter().enumerate() {
        if matches!(op.output, Outcome::Unknown) && model.is_read_only(&op.input) {
            continue;
        }
        parts
            .entry(model.partition_key(&op.input))
            .or_default()
            .push(index);
    }
    let mut parts: Vec<_> = parts.into_iter().collect();
    parts.sort_by_key(|(_, indexes)| indexes.len());
    parts
}

/// How one partition's search ended. Operation numbers are positions in the partition.
enum SearchEnd {
    Linearizable,
    Illegal(DeadEnd),
    OutOfTime,
    OutOfCache,
    /// Another partition was found illegal first.
    Stopped,
}

/// The deepest point the search reached before backtracking for good.
struct DeadEnd {
    prefix: Vec<usize>,
    state: String,
    blocked: usize,
    candidates: Vec<usize>,
}

/// Wing & Gong search with Lowe's memoization over one partition's operations.
fn search<M: Model>(
    model: &M,
    ops: &[&Op<M::Input, M::Output>],
    options: &CheckOptions,
    stop: &AtomicBool,
) -> SearchEnd {
    let started = Instant::now();
    let mut entries = Entries::new(ops);
    let mut state = model.init();
    let mut linearized = Bitset::new(ops.len());
    let cache_entry_bytes = linearized.bytes() + size_of::<M::State>() + CACHE_ENTRY_OVERHEAD_BYTES;
    let mut cache: HashSet<(Bitset, M::State), BuildHasherDefault<FoldHasher>> = HashSet::default();
    let mut cache_bytes = 0usize;
    // Each element: a linearized operation's call entry, and the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut deepest: Option<DeadEnd> = None;
    let mut steps: u64 = 0;
    let mut entry = entries.first();
    while entries.first() != NIL {
        if steps.is_multiple_of(STEPS_PER_BUDGET_CHECK) {
            if stop.load(Ordering::Relaxed) {
                return SearchEnd::Stopped;
            }
            if started.elapsed() >= options.partition_time_budget {
                return SearchEnd::OutOfTime;
            }
        }
        steps += 1;
        // The last entry in the list is always a return, so the scan meets one before the end.
        debug_assert!(entry != NIL);
        let op = entries.op[entry];
        if entries.is_call(entry) {
            if let Some(next) = model.step(&state, &ops[op].input, &ops[op].output) {
                linearized.set(op);
                if cache.insert((linearized.clone(), next.clone())) {
                    cache_bytes += cache_entry_bytes;
                    if cache_bytes > options.cache_bytes_max {
                        return SearchEnd::OutOfCache;
                    }
                    stack.push((entry, std::mem::replace(&mut state, next)));
                    entries.lift(entry);
                    entry = entries.first();
                    continue;
                }
                // Been here before with the same future: nothing new down this path.
                linearized.clear(op);
            }
            entry = entries.next[entry];
        } else {
            if deepest
                .as_ref()
                .is_none_or(|dead_end| stack.len() > dead_end.prefix.len())
            {
                deepest = Some(DeadEnd {
                    prefix: stack.iter().map(|&(call, _)| entries.op[call]).collect(),
                    state: format!("{state:?}"),
                    blocked: op,
                    candidates: Vec::new(),
                });
            }
            let Some((call, before)) = stack.pop() else {
                let mut dead_end = deepest.expect("recorded just above");
                dead_end.candidates = entries.open_at_return_of(&dead_end);
                return SearchEnd::Illegal(dead_end);
            };
            linearized.clear(entries.op[call]);
            state = before;
            entries.unlift(call);
            entry = entries.next[call];
        }
    }
    SearchEnd::Linearizable
}

/// "No entry": the end of the list, or the head's predecessor.
const NIL: usize = usize::MAX;

/// The head sentinel's index; entries proper are `1..=2n` in time order.
const HEAD: usize = 0;

/// Calls and returns of one partition's operations as a doubly-linked list in time order.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation each entry belongs to (unused for the head).
    op: Vec<usize>,
    /// For a call entry, its return entry; `NIL` for returns and the head.
    ret_of_call: Vec<usize>,
    /// Each operation's return entry.
    ret_of_op: Vec<usize>,
}

impl Entries {
    fn new<I, O>(ops: &[&Op<I, O>]) -> Self {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            order.push((op.call, false, index));
            order.push((op.ret, true, index));
        }
        // Calls before returns at equal times: closed intervals touch. Unknown operations return
        // at RETURN_NEVER, after everything else.
        order.sort_by_key(|&(time, is_return, _)| (time, is_return));
        let count = order.len() + 1;
        let mut entries = Entries {
            next: (1..=count)
                .map(|next| if next == count { NIL } else { next })
                .collect(),
            prev: (0..count)
                .map(|index| index.checked_sub(1).unwrap_or(NIL))
                .collect(),
            op: vec![NIL; count],
            ret_of_call: vec![NIL; count],
            ret_of_op: vec![NIL; ops.len()],
        };
        let mut call_of_op = vec![NIL; ops.len()];
        for (position, &(_, is_return, op)) in order.iter().enumerate() {
            let entry = position + 1;
            entries.op[entry] = op;
            if is_return {
                entries.ret_of_op[op] = entry;
            } else {
                call_of_op[op] = entry;
            }
        }
        for (op, &call) in call_of_op.iter().enumerate() {
            assert!(
                call < entries.ret_of_op[op],
                "operation {op} returns before its call"
            );
            entries.ret_of_call[call] = entries.ret_of_op[op];
        }
        entries
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn is_call(&self, entry: usize) -> bool {
        self.ret_of_call[entry] != NIL
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret_of_call[call]);
    }

    /// Undoes the most recent [`Entries::lift`] not yet undone, which must be of `call`.
    fn unlift(&mut self, call: usize) {
        self.relink(self.ret_of_call[call]);
        self.relink(call);
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        if next != NIL {
            self.prev[next] = entry;
        }
    }

    /// Operations outside the dead end's prefix, other than the blocked one, that were called
    /// before the blocked one returned. Entry indexes are time order, so comparing them compares
    /// times.
    fn open_at_return_of(&self, dead_end: &DeadEnd) -> Vec<usize> {
        let blocked_return = self.ret_of_op[dead_end.blocked];
        let in_prefix: BTreeSet<usize> = dead_end.prefix.iter().copied().collect();
        let mut open: Vec<(usize, usize)> = (1..blocked_return)
            .filter(|&entry| self.is_call(entry))
            .map(|entry| (entry, self.op[entry]))
            .filter(|&(_, op)| op != dead_end.blocked && !in_prefix.contains(&op))
            .collect();
        open.sort_unstable();
        open.into_iter().map(|(_, op)| op).collect()
    }
}

/// A fixed-size set of operation numbers.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn bytes(&self) -> usize {
        size_of_val(&*self.0)
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

/// A fast non-cryptographic hasher for the memo cache: the keys are our own data, so there is no
/// flooding to defend against, and the default `SipHash` would dominate the search's time on
/// long bitsets. Each word is folded in with a rotate, xor and multiply; `finish` mixes the high
/// bits down because the hash table indexes buckets by the low bits.
#[derive(Default)]
struct FoldHasher(u64);

impl FoldHasher {
    /// An odd constant with well-spread bits (the 64-bit golden ratio).
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    fn fold(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::MULTIPLIER);
    }
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.fold(u64::from_le_bytes(chunk.try_into().expect("chunks of 8")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.fold(u64::from_le_bytes(tail) ^ (chunks.remainder().len() as u64) << 56);
    }

    fn write_u8(&mut self, value: u8) {
        self.fold(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.fold(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.fold(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.fold(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

// `RETURN_NEVER` must sort after every real return for unknown operations to stay open.
const _: () = assert!(RETURN_NEVER == u64::MAX);

#[cfg(test)]
mod tests;
