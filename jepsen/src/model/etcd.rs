//! One etcd key as the v3 KV API shows it: value, `mod_revision`, `version`, `create_revision`.
//!
//! Owns the per-key etcd vocabulary ([`EtcdInput`], [`EtcdOutput`]) and its specification
//! [`EtcdKeyModel`], partitioned by key (jepsen.md §3.4). The register workload records histories
//! in this vocabulary.
//!
//! Must not: check anything that couples keys. The store's revision is global, so a put's revision
//! is only known to exceed the key's previous `mod_revision`; ordering revisions across keys (unique
//! write revisions, real-time order, monotonic reads per client) belongs to a separate linear-time
//! revision checker.
//!
//! A write whose response was lost took *some* revision we never saw. Rather than guessing it, the
//! state keeps a [`RevisionBound`]: "exactly r" or "at least r". A later read that returns the key
//! pins it down; a later put must merely exceed the bound. That keeps the model deterministic except
//! for one case: an unknown compare-and-set whose compare is on a revision we only have a bound for
//! may or may not have applied, so [`EtcdKeyModel`] is a [`NondeterministicModel`]; check with
//! [`super::Determinized`]`(EtcdKeyModel)`.
//!
//! etcd invariants relied on, for one incarnation of a key (put after absence, until deleted):
//! every write has a larger revision than the last; `version` counts puts from 1;
//! `create_revision <= mod_revision`, with equality exactly when `version == 1`.

use serde::{Deserialize, Serialize};

use super::{FunctionName, NondeterministicModel};
use crate::history::Outcome;

/// An etcd store revision.
pub type Revision = i64;

/// A request on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdInput {
    /// The key.
    pub key: String,
    /// What to do with it.
    #[serde(flatten)]
    pub op: EtcdOp,
}

/// What an [`EtcdInput`] does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum EtcdOp {
    /// A linearizable Range of the single key.
    Get,
    /// A Put, optionally asking for the previous key-value.
    Put {
        /// The new value.
        value: String,
        /// Whether the request set `prev_kv`.
        #[serde(default)]
        prev_kv: bool,
    },
    /// A `DeleteRange` of the single key.
    Delete,
    /// A Txn: if `compare` holds, put `value`; otherwise do nothing.
    Cas {
        /// The guard.
        compare: Compare,
        /// The value put on success.
        value: String,
    },
}

/// An equality guard of a Txn on the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// `value == v`. etcd-compat: false when the key is absent (`server/etcdserver/txn`).
    Value(String),
    /// `version == n`; an absent key has version 0.
    Version(i64),
    /// `mod_revision == r`; an absent key has `mod_revision` 0.
    ModRevision(Revision),
}

/// The key-value a response carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The value.
    pub value: String,
    /// Revision of the last put.
    pub mod_revision: Revision,
    /// Puts since creation, from 1.
    pub version: i64,
    /// Revision of the put that created this incarnation.
    pub create_revision: Revision,
}

/// A response; `revision` is always the response header's revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum EtcdOutput {
    /// The key, or `None` if absent.
    Get {
        /// Header revision.
        revision: Revision,
        /// The key-value.
        kv: Option<KeyValue>,
    },
    /// The put's revision and, if requested, the key before it.
    Put {
        /// Header revision: the put's own.
        revision: Revision,
        /// The previous key-value, when requested and present.
        #[serde(default)]
        prev_kv: Option<KeyValue>,
    },
    /// Whether a key was deleted.
    Delete {
        /// Header revision: the delete's own when `deleted`.
        revision: Revision,
        /// Whether the key existed.
        deleted: bool,
    },
    /// Whether the compare held.
    Cas {
        /// Header revision: the put's own when `succeeded`.
        revision: Revision,
        /// Whether the compare held and the put happened.
        succeeded: bool,
    },
}

impl FunctionName for EtcdInput {
    fn function_name(&self) -> &'static str {
        match self.op {
            EtcdOp::Get => "get",
            EtcdOp::Put { .. } => "put",
            EtcdOp::Delete => "delete",
            EtcdOp::Cas { .. } => "cas",
        }
    }
}

impl FunctionName for EtcdOutput {
    fn function_name(&self) -> &'static str {
        match self {
            EtcdOutput::Get { .. } => "get",
            EtcdOutput::Put { .. } => "put",
            EtcdOutput::Delete { .. } => "delete",
            EtcdOutput::Cas { .. } => "cas",
        }
    }
}

/// What the model knows about a revision: exactly `min`, or some revision `>= min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionBound {
    /// The revision, or its lower bound.
    pub min: Revision,
    /// Whether `min` is the revision itself.
    pub exact: bool,
}

impl RevisionBound {
    /// Exactly `revision`.
    #[must_use]
    pub fn exactly(revision: Revision) -> Self {
        RevisionBound {
            min: revision,
            exact: true,
        }
    }

    /// Some revision later than every revision this bound allows to be the earliest.
    fn later(self) -> Self {
        RevisionBound {
            min: self.min + 1,
            exact: false,
        }
    }

    /// Whether the revision could be `observed`.
    fn admits(self, observed: Revision) -> bool {
        if self.exact {
            observed == self.min
        } else {
            observed >= self.min
        }
    }
}

/// One key's state. While absent, `version` is 0 and `create_revision` is exactly 0.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtcdKeyState {
    /// The value, `None` while absent.
    pub value: Option<String>,
    /// Puts since creation.
    pub version: i64,
    /// Revision of the last put or delete of this key (0 before any); etcd reports it as the
    /// key's `mod_revision` while the key exists.
    pub mod_revision: RevisionBound,
    /// Revision of the put that created the current incarnation.
    pub create_revision: RevisionBound,
}

impl Default for EtcdKeyState {
    fn default() -> Self {
        EtcdKeyState {
            value: None,
            version: 0,
            mod_revision: RevisionBound::exactly(0),
            create_revision: RevisionBound::exactly(0),
        }
    }
}

/// Whether a compare holds, when the state may not say.
enum Truth {
    Holds,
    Fails,
    /// The compare is on a revision the state only bounds.
    Either,
}

impl EtcdKeyState {
    /// The state after a read returned `kv`, with bounds pinned to the observed revisions.
    fn observe(&self, kv: Option<&KeyValue>) -> Option<Self> {
        let (Some(kv), Some(value)) = (kv, &self.value) else {
            return (kv.is_none() && self.value.is_none()).then(|| self.clone());
        };
        let same_incarnation = kv.value == *value
            && kv.version == self.version
            && self.mod_revision.admits(kv.mod_revision)
            && self.create_revision.admits(kv.create_revision);
        let well_formed = kv.create_revision <= kv.mod_revision
            && (kv.version == 1) == (kv.create_revision == kv.mod_revision);
        (same_incarnation && well_formed).then(|| EtcdKeyState {
            value: self.value.clone(),
            version: self.version,
            mod_revision: RevisionBound::exactly(kv.mod_revision),
            create_revision: RevisionBound::exactly(kv.create_revision),
        })
    }

    /// Whether a response header at `revision` could have been produced in this state: the
    /// store's revision is never below the key's last change.
    fn header_admits(&self, revision: Revision) -> bool {
        revision >= self.mod_revision.min
    }

    /// The state after a put at `revision`, if that revision is later than the last change.
    fn put(&self, value: &str, revision: Revision) -> Option<Self> {
        (revision > self.mod_revision.min)
            .then(|| self.put_at(value, RevisionBound::exactly(revision)))
    }

    /// The state after a put whose revision was never seen.
    fn put_unseen(&self, value: &str) -> Self {
        self.put_at(value, self.mod_revision.later())
    }

    fn put_at(&self, value: &str, revision: RevisionBound) -> Self {
        let (version, create_revision) = match self.value {
            Some(_) => (self.version + 1, self.create_revision),
            None => (1, revision),
        };
        EtcdKeyState {
            value: Some(value.to_owned()),
            version,
            mod_revision: revision,
            create_revision,
        }
    }

    /// The state after a delete of the existing key at `revision`.
    fn delete(&self, revision: RevisionBound) -> Self {
        debug_assert!(
            self.value.is_some(),
            "delete of an absent key changes nothing"
        );
        EtcdKeyState {
            mod_revision: revision,
            ..EtcdKeyState::default()
        }
    }

    fn evaluate(&self, compare: &Compare) -> Truth {
        let holds = match compare {
            Compare::Value(expected) => self.value.as_ref() == Some(expected),
            Compare::Version(expected) => self.version == *expected,
            Compare::ModRevision(expected) if self.value.is_none() => *expected == 0,
            Compare::ModRevision(expected) if !self.mod_revision.exact => {
                if *expected >= self.mod_revision.min {
                    return Truth::Either;
                }
                false
            }
            Compare::ModRevision(expected) => self.mod_revision.min == *expected,
        };
        if holds { Truth::Holds } else { Truth::Fails }
    }

    /// This state, given that its `mod_revision` is `revision` (a compare on it held).
    fn assume_mod_revision(&self, revision: Revision) -> Self {
        debug_assert!(self.mod_revision.admits(revision));
        let mut assumed = self.clone();
        assumed.mod_revision = RevisionBound::exactly(revision);
        if assumed.version == 1 {
            // One put since creation: it is both the creating and the last one.
            assumed.create_revision = assumed.mod_revision;
        }
        assumed
    }

    /// This state, given that its `mod_revision` is not `revision` (a compare on it failed).
    fn exclude_mod_revision(&self, revision: Revision) -> Self {
        let mut excluded = self.clone();
        if !excluded.mod_revision.exact && excluded.mod_revision.min == revision {
            excluded.mod_revision.min += 1;
        }
        excluded
    }
}

/// The per-key etcd specification.
#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdKeyModel;

impl NondeterministicModel for EtcdKeyModel {
    type State = EtcdKeyState;
    type Input = EtcdInput;
    type Output = EtcdOutput;

    fn init(&self) -> Vec<EtcdKeyState> {
        vec![EtcdKeyState::default()]
    }

    fn step(
        &self,
        state: &EtcdKeyState,
        input: &EtcdInput,
        output: &Outcome<EtcdOutput>,
    ) -> Vec<EtcdKeyState> {
        step_known(state, input, output)
            .into_iter()
            .flatten()
            .collect()
    }

    fn partition_key(&self, input: &EtcdInput) -> Option<String> {
        Some(input.key.clone())
    }

    fn is_read_only(&self, input: &EtcdInput) -> bool {
        matches!(input.op, EtcdOp::Get)
    }
}

/// At most two successor states; `None` entries are dropped by the caller.
fn step_known(
    state: &EtcdKeyState,
    input: &EtcdInput,
    output: &Outcome<EtcdOutput>,
) -> [Option<EtcdKeyState>; 2] {
    use Outcome::{Returned, Unknown};
    let one = |next: Option<EtcdKeyState>| [next, None];
    match (&input.op, output) {
        (EtcdOp::Get, Returned(EtcdOutput::Get { revision, kv })) => one(state
            .observe(kv.as_ref())
            .filter(|observed| observed.header_admits(*revision))),
        (EtcdOp::Get, Unknown) => one(Some(state.clone())),
        (
            EtcdOp::Put {
                value,
                prev_kv: asked,
            },
            Returned(EtcdOutput::Put { revision, prev_kv }),
        ) => {
            let before = if *asked {
                state.observe(prev_kv.as_ref())
            } else {
                Some(state.clone())
            };
            one(before.and_then(|before| before.put(value, *revision)))
        }
        (EtcdOp::Put { value, .. }, Unknown) => one(Some(state.put_unseen(value))),
        (EtcdOp::Delete, Returned(EtcdOutput::Delete { revision, deleted })) => {
            one(match (state.value.is_some(), *deleted) {
                (true, true) => (*revision > state.mod_revision.min)
                    .then(|| state.delete(RevisionBound::exactly(*revision))),
                (false, false) => state.header_admits(*revision).then(|| state.clone()),
                _ => None,
            })
        }
        (EtcdOp::Delete, Unknown) => one(Some(match state.value {
            Some(_) => state.delete(state.mod_revision.later()),
            None => state.clone(),
        })),
        (
            EtcdOp::Cas { compare, value },
            Returned(EtcdOutput::Cas {
                revision,
                succeeded,
            }),
        ) => {
            let before = match (state.evaluate(compare), *succeeded, compare) {
                (Truth::Holds, true, _) | (Truth::Fails, false, _) => Some(state.clone()),
                (Truth::Either, true, Compare::ModRevision(expected)) => {
                    Some(state.assume_mod_revision(*expected))
                }
                (Truth::Either, false, Compare::ModRevision(expected)) => {
                    Some(state.exclude_mod_revision(*expected))
                }
                _ => None,
            };
            one(before.and_then(|before| {
                if *succeeded {
                    before.put(value, *revision)
                } else {
                    before.header_admits(*revision).then_some(before)
                }
            }))
        }
        (EtcdOp::Cas { compare, value }, Unknown) => match (state.evaluate(compare), compare) {
            (Truth::Holds, _) => one(Some(state.put_unseen(value))),
            (Truth::Fails, _) => one(Some(state.clone())),
            (Truth::Either, Compare::ModRevision(expected)) => [
                Some(state.assume_mod_revision(*expected).put_unseen(value)),
                Some(state.exclude_mod_revision(*expected)),
            ],
            (Truth::Either, _) => unreachable!("only a revision compare can be undecided"),
        },
        // A response to a different function: the parsers never build one.
        (_, Returned(_)) => one(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_key(op: EtcdOp) -> EtcdInput {
        EtcdInput {
            key: "k".to_owned(),
            op,
        }
    }

    fn put(value: &str) -> EtcdInput {
        on_key(EtcdOp::Put {
            value: value.to_owned(),
            prev_kv: false,
        })
    }

    fn put_ok(revision: Revision) -> Outcome<EtcdOutput> {
        Outcome::Returned(EtcdOutput::Put {
            revision,
            prev_kv: None,
        })
    }

    fn kv(
        value: &str,
        mod_revision: Revision,
        version: i64,
        create_revision: Revision,
    ) -> KeyValue {
        KeyValue {
            value: value.to_owned(),
            mod_revision,
            version,
            create_revision,
        }
    }

    fn get_ok(revision: Revision, kv: Option<KeyValue>) -> Outcome<EtcdOutput> {
        Outcome::Returned(EtcdOutput::Get { revision, kv })
    }

    /// Steps from every state in `states`, failing the test if the result is not unique.
    fn only(states: Vec<EtcdKeyState>) -> EtcdKeyState {
        assert_eq!(states.len(), 1, "{states:?}");
        states.into_iter().next().unwrap()
    }

    // Owned outputs let the tests pass temporaries like `put_ok(5)` inline.
    #[allow(clippy::needless_pass_by_value)]
    fn step(
        state: &EtcdKeyState,
        input: &EtcdInput,
        output: Outcome<EtcdOutput>,
    ) -> Vec<EtcdKeyState> {
        EtcdKeyModel.step(state, input, &output)
    }

    #[test]
    fn put_needs_a_later_revision_and_counts_versions() {
        let absent = only(EtcdKeyModel.init());
        let first = only(step(&absent, &put("a"), put_ok(5)));
        assert_eq!(
            (first.version, first.mod_revision, first.create_revision),
            (1, RevisionBound::exactly(5), RevisionBound::exactly(5))
        );
        assert!(
            step(&first, &put("b"), put_ok(5)).is_empty(),
            "same revision twice"
        );
        assert!(
            step(&first, &put("b"), put_ok(4)).is_empty(),
            "revision going back"
        );
        let second = only(step(&first, &put("b"), put_ok(9)));
        assert_eq!(
            (
                second.version,
                second.mod_revision.min,
                second.create_revision.min
            ),
            (2, 9, 5)
        );
    }

    #[test]
    fn get_must_match_value_and_metadata() {
        let absent = only(EtcdKeyModel.init());
        let state = only(step(&absent, &put("a"), put_ok(5)));
        let get = on_key(EtcdOp::Get);
        assert_eq!(
            only(step(&state, &get, get_ok(7, Some(kv("a", 5, 1, 5))))),
            state
        );
        assert!(
            step(&state, &get, get_ok(7, Some(kv("b", 5, 1, 5)))).is_empty(),
            "value"
        );
        assert!(
            step(&state, &get, get_ok(7, Some(kv("a", 6, 1, 5)))).is_empty(),
            "mod_revision"
        );
        assert!(
            step(&state, &get, get_ok(7, Some(kv("a", 5, 2, 5)))).is_empty(),
            "version"
        );
        assert!(step(&state, &get, get_ok(7, None)).is_empty(), "absent");
        assert!(
            step(&state, &get, get_ok(4, Some(kv("a", 5, 1, 5)))).is_empty(),
            "header < mod"
        );
        assert_eq!(only(step(&absent, &get, get_ok(1, None))), absent);
    }

    #[test]
    fn unknown_put_bounds_the_revision_until_a_read_pins_it() {
        let absent = only(EtcdKeyModel.init());
        let known = only(step(&absent, &put("a"), put_ok(5)));
        let unseen = only(step(&known, &put("b"), Outcome::Unknown));
        assert_eq!(
            unseen.mod_revision,
            RevisionBound {
                min: 6,
                exact: false
            }
        );
        assert_eq!(unseen.version, 2);
        // A later put must leave room for the unseen one: revision 6 is taken by it at the least.
        assert!(step(&unseen, &put("c"), put_ok(6)).is_empty());
        assert_eq!(
            only(step(&unseen, &put("c"), put_ok(7))).mod_revision,
            RevisionBound::exactly(7)
        );
        // A read pins the bound; an observation below the bound is impossible.
        let get = on_key(EtcdOp::Get);
        assert!(step(&unseen, &get, get_ok(9, Some(kv("b", 5, 2, 5)))).is_empty());
        let pinned = only(step(&unseen, &get, get_ok(9, Some(kv("b", 8, 2, 5)))));
        assert_eq!(pinned.mod_revision, RevisionBound::exactly(8));
    }

    #[test]
    fn version_one_ties_create_to_mod() {
        let absent = only(EtcdKeyModel.init());
        let created = only(step(&absent, &put("a"), Outcome::Unknown));
        let get = on_key(EtcdOp::Get);
        assert!(step(&created, &get, get_ok(9, Some(kv("a", 4, 1, 3)))).is_empty());
        assert_eq!(
            only(step(&created, &get, get_ok(9, Some(kv("a", 4, 1, 4)))))
                .create_revision
                .min,
            4
        );
    }

    #[test]
    fn delete_restarts_the_incarnation() {
        let absent = only(EtcdKeyModel.init());
        let state = only(step(&absent, &put("a"), put_ok(5)));
        let delete = on_key(EtcdOp::Delete);
        let deleted = Outcome::Returned(EtcdOutput::Delete {
            revision: 6,
            deleted: true,
        });
        let gone = only(step(&state, &delete, deleted.clone()));
        assert_eq!(
            (gone.value.as_deref(), gone.version, gone.mod_revision.min),
            (None, 0, 6)
        );
        assert!(
            step(&gone, &delete, deleted).is_empty(),
            "nothing left to delete"
        );
        let noop = Outcome::Returned(EtcdOutput::Delete {
            revision: 6,
            deleted: false,
        });
        assert_eq!(only(step(&gone, &delete, noop)), gone);
        assert!(
            step(&gone, &put("b"), put_ok(6)).is_empty(),
            "put must follow the delete"
        );
        let again = only(step(&gone, &put("b"), put_ok(8)));
        assert_eq!((again.version, again.create_revision.min), (1, 8));
    }

    #[test]
    fn put_with_prev_kv_checks_the_previous_key() {
        let absent = only(EtcdKeyModel.init());
        let state = only(step(&absent, &put("a"), put_ok(5)));
        let put_prev = on_key(EtcdOp::Put {
            value: "b".to_owned(),
            prev_kv: true,
        });
        let with_prev = |prev| {
            Outcome::Returned(EtcdOutput::Put {
                revision: 7,
                prev_kv: prev,
            })
        };
        assert_eq!(
            only(step(&state, &put_prev, with_prev(Some(kv("a", 5, 1, 5))))).version,
            2
        );
        assert!(step(&state, &put_prev, with_prev(None)).is_empty());
        assert!(step(&state, &put_prev, with_prev(Some(kv("z", 5, 1, 5)))).is_empty());
    }

    #[test]
    fn cas_on_value_and_version() {
        let absent = only(EtcdKeyModel.init());
        let cas = |compare| {
            on_key(EtcdOp::Cas {
                compare,
                value: "n".to_owned(),
            })
        };
        let result = |revision, succeeded| {
            Outcome::Returned(EtcdOutput::Cas {
                revision,
                succeeded,
            })
        };
        // etcd-compat: a value compare on an absent key fails, a version compare sees 0.
        assert!(
            step(
                &absent,
                &cas(Compare::Value(String::new())),
                result(3, true)
            )
            .is_empty()
        );
        assert_eq!(
            only(step(
                &absent,
                &cas(Compare::Value(String::new())),
                result(3, false)
            )),
            absent
        );
        let created = only(step(&absent, &cas(Compare::Version(0)), result(3, true)));
        assert_eq!((created.value.as_deref(), created.version), (Some("n"), 1));
        assert!(step(&created, &cas(Compare::Value("n".into())), result(2, true)).is_empty());
        assert!(step(&created, &cas(Compare::Value("n".into())), result(4, false)).is_empty());
        assert!(
            step(&created, &cas(Compare::Value("x".into())), result(2, false)).is_empty(),
            "header"
        );
    }

    #[test]
    fn unknown_cas_on_a_bounded_revision_forks() {
        let absent = only(EtcdKeyModel.init());
        let known = only(step(&absent, &put("a"), put_ok(5)));
        let unseen = only(step(&known, &put("b"), Outcome::Unknown));
        let cas = on_key(EtcdOp::Cas {
            compare: Compare::ModRevision(6),
            value: "c".to_owned(),
        });
        let forks = step(&unseen, &cas, Outcome::Unknown);
        assert_eq!(forks.len(), 2, "{forks:?}");
        assert!(
            forks
                .iter()
                .any(|s| s.value.as_deref() == Some("c") && s.version == 3)
        );
        assert!(
            forks
                .iter()
                .any(|s| s.value.as_deref() == Some("b") && s.mod_revision.min == 7)
        );
        // A known success pins the revision the compare named.
        let succeeded = Outcome::Returned(EtcdOutput::Cas {
            revision: 9,
            succeeded: true,
        });
        let applied = only(step(&unseen, &cas, succeeded));
        assert_eq!(
            (applied.version, applied.mod_revision),
            (3, RevisionBound::exactly(9))
        );
        // A compare on a revision below the bound cannot hold.
        let stale = on_key(EtcdOp::Cas {
            compare: Compare::ModRevision(5),
            value: "c".to_owned(),
        });
        assert_eq!(only(step(&unseen, &stale, Outcome::Unknown)), unseen);
    }

    #[test]
    fn jsonl_shape() {
        let cas = on_key(EtcdOp::Cas {
            compare: Compare::ModRevision(4),
            value: "v".to_owned(),
        });
        let json = serde_json::to_string(&cas).unwrap();
        assert_eq!(
            json,
            r#"{"key":"k","f":"cas","compare":{"mod_revision":4},"value":"v"}"#
        );
        assert_eq!(serde_json::from_str::<EtcdInput>(&json).unwrap(), cas);
        let get: EtcdInput = serde_json::from_str(r#"{"key":"k","f":"get"}"#).unwrap();
        assert_eq!(get.op, EtcdOp::Get);
    }
}
