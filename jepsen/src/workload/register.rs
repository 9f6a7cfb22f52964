//! The register workload: reads, unique writes and compare-and-sets on a few keys at a time.
//!
//! Owns the register operation schedule (jepsen.md §1.2, §6.2). `keys` keys are active at once;
//! each takes `ops_per_key` operations and is then retired for a fresh one, which keeps every
//! key's history short enough for the linearizability search (its cost grows with the number of
//! concurrent and unknown operations per key). Operations, in the per-key etcd vocabulary:
//! - read: a linearizable Range of the key;
//! - write: a Put of a value never written before, asking for the previous key-value;
//! - cas: a Txn comparing the key's value with one recently written to it, putting a new unique
//!   value on success.
//!
//! Besides this mixed sequence, reader workers take reads of the active keys
//! ([`RegisterGenerator::next_read`]), as Jepsen's register reserves half its threads for reads:
//! a member cut off from the others keeps being read even while its mixed workers wait on writes
//! that cannot commit, which is when a stale read would show.
//!
//! Unique values make every read name the write it saw, which is what lets the checker prove a
//! read stale. Must not: decide timing, nodes or processes.

use crate::model::etcd::{Compare, EtcdInput, EtcdOp};
use crate::random::SeededRng;

/// Active keys unless told otherwise.
pub const KEYS_DEFAULT: usize = 8;
/// Operations per key before it is retired, unless told otherwise.
pub const OPS_PER_KEY_DEFAULT: usize = 200;
/// Values remembered per key as compare-and-set candidates.
const RECENT_VALUES_MAX: usize = 3;

/// The mix and shape of the workload.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    /// Keys active at once.
    pub keys: usize,
    /// Operations per key before it is retired.
    pub ops_per_key: usize,
    /// Share of reads, percent.
    pub read_percent: u64,
    /// Share of writes, percent; the rest are compare-and-sets.
    pub write_percent: u64,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            keys: KEYS_DEFAULT,
            ops_per_key: OPS_PER_KEY_DEFAULT,
            read_percent: 50,
            write_percent: 30,
        }
    }
}

/// One active key.
#[derive(Clone, Debug)]
struct Slot {
    key: String,
    ops: usize,
    /// Values generated for this key, newest last.
    recent: Vec<String>,
}

/// The seeded operation sequence.
#[derive(Clone, Debug)]
pub struct RegisterGenerator {
    options: RegisterOptions,
    rng: SeededRng,
    slots: Vec<Slot>,
    /// Every key handed out so far, in order.
    keys: Vec<String>,
    next_value: u64,
}

impl RegisterGenerator {
    /// The sequence for `seed`.
    ///
    /// # Panics
    /// When `options` has no keys or no operations per key.
    #[must_use]
    pub fn new(options: RegisterOptions, seed: u64) -> Self {
        assert!(options.keys > 0, "the register workload needs keys");
        assert!(options.ops_per_key > 0, "a key needs operations");
        let mut generator = RegisterGenerator {
            rng: SeededRng::new(seed),
            slots: Vec::with_capacity(options.keys),
            keys: Vec::new(),
            next_value: 0,
            options,
        };
        for _ in 0..generator.options.keys {
            let slot = generator.fresh_slot();
            generator.slots.push(slot);
        }
        generator
    }

    fn fresh_slot(&mut self) -> Slot {
        let key = format!("r/{:04}", self.keys.len());
        self.keys.push(key.clone());
        Slot {
            key,
            ops: 0,
            recent: Vec::new(),
        }
    }

    fn fresh_value(&mut self) -> String {
        self.next_value += 1;
        format!("v{}", self.next_value)
    }

    /// A read of one of the active keys, chosen with the reader's own `rng`. Reads taken this
    /// way do not count toward a key's budget, so the sequence [`RegisterGenerator::next_op`]
    /// yields stays a function of the seed alone; the keys a reader lands on depend on timing.
    pub fn next_read(&self, rng: &mut SeededRng) -> EtcdInput {
        let slot = &self.slots[rng.below(self.slots.len())];
        EtcdInput {
            key: slot.key.clone(),
            op: EtcdOp::Get,
        }
    }

    /// Every key handed out so far; the final reads cover them all.
    #[must_use]
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The next operation.
    pub fn next_op(&mut self) -> EtcdInput {
        let index = self.rng.below(self.slots.len());
        if self.slots[index].ops >= self.options.ops_per_key {
            self.slots[index] = self.fresh_slot();
        }
        self.slots[index].ops += 1;
        let roll = self.rng.next_u64() % 100;
        let op = if roll < self.options.read_percent {
            EtcdOp::Get
        } else if roll < self.options.read_percent + self.options.write_percent
            || self.slots[index].recent.is_empty()
        {
            EtcdOp::Put {
                value: self.remember(index),
                prev_kv: true,
            }
        } else {
            let recent = &self.slots[index].recent;
            let expected = recent[self.rng.below(recent.len())].clone();
            EtcdOp::Cas {
                compare: Compare::Value(expected),
                value: self.remember(index),
            }
        };
        EtcdInput {
            key: self.slots[index].key.clone(),
            op,
        }
    }

    /// A fresh value, remembered as a compare candidate of slot `index`.
    fn remember(&mut self, index: usize) -> String {
        let value = self.fresh_value();
        let recent = &mut self.slots[index].recent;
        if recent.len() == RECENT_VALUES_MAX {
            recent.remove(0);
        }
        recent.push(value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let schedule = |seed| {
            let mut generator = RegisterGenerator::new(RegisterOptions::default(), seed);
            (0..500).map(|_| generator.next_op()).collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
    }

    #[test]
    fn keys_retire_after_their_budget_and_values_are_unique() {
        let options = RegisterOptions {
            keys: 2,
            ops_per_key: 10,
            ..RegisterOptions::default()
        };
        let mut generator = RegisterGenerator::new(options, 1);
        let ops: Vec<EtcdInput> = (0..100).map(|_| generator.next_op()).collect();
        for key in generator.keys() {
            let count = ops.iter().filter(|op| &op.key == key).count();
            assert!(count <= 10, "{key} got {count} operations");
        }
        assert!(generator.keys().len() >= 10);
        let mut written: Vec<&str> = ops
            .iter()
            .filter_map(|op| match &op.op {
                EtcdOp::Put { value, .. } | EtcdOp::Cas { value, .. } => Some(value.as_str()),
                EtcdOp::Get | EtcdOp::Delete => None,
            })
            .collect();
        let total = written.len();
        written.sort_unstable();
        written.dedup();
        assert_eq!(written.len(), total);
    }
}
