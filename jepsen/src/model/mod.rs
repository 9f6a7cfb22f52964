//! Sequential specifications: what a correct single-copy object would answer.
//!
//! Owns the [`Model`] trait the linearizability checker searches with, its non-deterministic
//! variant ([`NondeterministicModel`], made deterministic by [`Determinized`]), and the concrete
//! models with their operation vocabularies: [`register`], [`kv`] and [`etcd`].
//!
//! Must not: know about time, processes or files. A model sees one operation at a time, in the
//! order the checker proposes, and only says whether it is legal in a state and what comes next.
//!
//! Every `step` must accept [`Outcome::Unknown`] whenever the input could have been applied at all,
//! and return the state after applying it with *some* result. The checker relies on that to place
//! an unknown operation anywhere after its call, including after everything else, which is how
//! "never happened" is expressed.

pub mod etcd;
pub mod kv;
pub mod register;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;

use crate::history::Outcome;

/// A deterministic sequential specification.
pub trait Model: Sync {
    /// The object's state. The checker memoizes on it, so equal states must mean equal futures.
    type State: Clone + Eq + Hash + Debug;
    /// A request.
    type Input: Debug + Sync;
    /// A response.
    type Output: Debug + Sync;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` answered `output` in `state`, or `None` if a correct object could
    /// not have answered that. Must be a pure function.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Outcome<Self::Output>,
    ) -> Option<Self::State>;

    /// Which independent part of the object `input` touches, when the model is partitionable: the
    /// history is linearizable iff each partition's sub-history is (locality). `None` for every
    /// input means one partition.
    fn partition_key(&self, _input: &Self::Input) -> Option<String> {
        None
    }

    /// Whether `input` never changes the state. The checker drops read-only operations whose
    /// outcome is unknown, since they constrain nothing.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }
}

/// A sequential specification whose step may lead to several states, for instance because a
/// response the client never saw decided a branch.
pub trait NondeterministicModel: Sync {
    /// One possible state. `Ord` gives the set of states a canonical form for memoization.
    type State: Clone + Ord + Hash + Debug;
    /// A request.
    type Input: Debug + Sync;
    /// A response.
    type Output: Debug + Sync;

    /// The possible states before any operation.
    fn init(&self) -> Vec<Self::State>;

    /// Every state the object could be in after `input` answered `output` in `state`; empty if
    /// that answer was impossible.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Outcome<Self::Output>,
    ) -> Vec<Self::State>;

    /// As [`Model::partition_key`].
    fn partition_key(&self, _input: &Self::Input) -> Option<String> {
        None
    }

    /// As [`Model::is_read_only`].
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }
}

/// A non-deterministic model seen as a deterministic one whose state is the set of possible
/// states (the subset construction). An operation is legal if it is legal in at least one of them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Determinized<N>(pub N);

impl<N: NondeterministicModel> Model for Determinized<N> {
    type State = BTreeSet<N::State>;
    type Input = N::Input;
    type Output = N::Output;

    fn init(&self) -> Self::State {
        self.0.init().into_iter().collect()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Outcome<Self::Output>,
    ) -> Option<Self::State> {
        let next: BTreeSet<N::State> = state
            .iter()
            .flat_map(|one| self.0.step(one, input, output))
            .collect();
        (!next.is_empty()).then_some(next)
    }

    fn partition_key(&self, input: &Self::Input) -> Option<String> {
        self.0.partition_key(input)
    }

    fn is_read_only(&self, input: &Self::Input) -> bool {
        self.0.is_read_only(input)
    }
}

/// The name of an operation's function (`"read"`, `"put"`, ...), shared by a request and its
/// response so that parsers can reject a response to a different request.
pub trait FunctionName {
    /// The function name.
    fn function_name(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter incremented by an unreliable +1 or +2: the response says nothing about which.
    struct Fuzzy;

    impl NondeterministicModel for Fuzzy {
        type State = u8;
        type Input = &'static str;
        type Output = u8;

        fn init(&self) -> Vec<u8> {
            vec![0]
        }

        fn step(&self, state: &u8, input: &&'static str, output: &Outcome<u8>) -> Vec<u8> {
            match (*input, output) {
                ("bump", _) => vec![state + 1, state + 2],
                ("read", Outcome::Returned(value)) if value == state => vec![*state],
                ("read", Outcome::Returned(_)) => vec![],
                _ => vec![*state],
            }
        }
    }

    #[test]
    fn determinized_tracks_every_possible_state() {
        let model = Determinized(Fuzzy);
        let bumped = model
            .step(&model.init(), &"bump", &Outcome::Unknown)
            .unwrap();
        assert_eq!(bumped, BTreeSet::from([1, 2]));
        let twice = model.step(&bumped, &"bump", &Outcome::Unknown).unwrap();
        assert_eq!(twice, BTreeSet::from([2, 3, 4]));
        let read = model.step(&twice, &"read", &Outcome::Returned(3)).unwrap();
        assert_eq!(read, BTreeSet::from([3]));
        assert_eq!(model.step(&read, &"read", &Outcome::Returned(2)), None);
    }
}
