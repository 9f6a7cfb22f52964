//! Hand-made histories with known verdicts, plus a cross-check of the search against brute force
//! over every real-time-respecting order of small random histories.

use super::*;
use crate::model::Determinized;
use crate::model::etcd::{EtcdInput, EtcdKeyModel, EtcdOp, EtcdOutput, KeyValue};
use crate::model::kv::{KvInput, KvModel, KvOp, KvOutput};
use crate::model::register::{RegisterInput, RegisterModel, RegisterOutput};

type RegisterHistory = History<RegisterInput, RegisterOutput>;

fn op<I, O>(process: u64, call: u64, ret: u64, input: I, output: Outcome<O>) -> Op<I, O> {
    Op {
        process,
        call,
        ret,
        input,
        output,
    }
}

fn write(process: u64, call: u64, ret: u64, value: i64) -> Op<RegisterInput, RegisterOutput> {
    op(
        process,
        call,
        ret,
        RegisterInput::Write { value },
        Outcome::Returned(RegisterOutput::Write),
    )
}

fn unknown_write(process: u64, call: u64, value: i64) -> Op<RegisterInput, RegisterOutput> {
    op(
        process,
        call,
        RETURN_NEVER,
        RegisterInput::Write { value },
        Outcome::Unknown,
    )
}

fn read(
    process: u64,
    call: u64,
    ret: u64,
    value: Option<i64>,
) -> Op<RegisterInput, RegisterOutput> {
    op(
        process,
        call,
        ret,
        RegisterInput::Read,
        Outcome::Returned(RegisterOutput::Read { value }),
    )
}

fn history<I, O>(ops: impl IntoIterator<Item = Op<I, O>>) -> History<I, O> {
    let mut history = History::new();
    for op in ops {
        history.push(op);
    }
    history
}

fn verdict(ops: impl IntoIterator<Item = Op<RegisterInput, RegisterOutput>>) -> Verdict {
    check(&RegisterModel, &history(ops), &CheckOptions::default())
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(
        check(
            &RegisterModel,
            &RegisterHistory::new(),
            &CheckOptions::default()
        ),
        Verdict::Linearizable
    );
}

#[test]
fn stale_read_is_caught_and_explained() {
    let verdict = verdict([write(0, 0, 1, 1), write(1, 2, 3, 2), read(2, 4, 5, Some(1))]);
    let Verdict::NotLinearizable {
        partition,
        diagnostic,
    } = verdict
    else {
        panic!("stale read passed: {verdict:?}");
    };
    assert_eq!(
        partition,
        Partition {
            key: None,
            op_count: 3
        }
    );
    let prefix: Vec<usize> = diagnostic.prefix.iter().map(|op| op.index).collect();
    assert_eq!(prefix, [0, 1]);
    assert_eq!(diagnostic.blocked.index, 2);
    assert_eq!(diagnostic.state, "Some(2)");
    let text = diagnostic.to_string();
    assert!(
        text.contains("#2 process 2 [4, 5] Read -> Read { value: Some(1) }"),
        "{text}"
    );
}

#[test]
fn read_concurrent_with_a_write_may_see_either_value() {
    for seen in [None, Some(1)] {
        assert_eq!(
            verdict([write(0, 0, 10, 1), read(1, 2, 3, seen)]),
            Verdict::Linearizable
        );
    }
    // But once a later read saw the new value, an even later one cannot see the old.
    let flicker = [
        write(0, 0, 10, 1),
        read(1, 1, 2, Some(1)),
        read(2, 3, 4, None),
    ];
    assert!(matches!(verdict(flicker), Verdict::NotLinearizable { .. }));
}

#[test]
fn concurrent_writes_may_linearize_in_either_order() {
    for last in [1, 2] {
        let ops = [
            write(0, 0, 5, 1),
            write(1, 1, 6, 2),
            read(2, 7, 8, Some(last)),
        ];
        assert_eq!(verdict(ops), Verdict::Linearizable, "final value {last}");
    }
}

#[test]
fn intervals_are_closed_so_touching_operations_are_concurrent() {
    // The read's call and the write's return share time 5: either order is allowed.
    assert_eq!(
        verdict([write(0, 0, 5, 1), read(1, 5, 6, None)]),
        Verdict::Linearizable
    );
    assert!(matches!(
        verdict([write(0, 0, 4, 1), read(1, 5, 6, None)]),
        Verdict::NotLinearizable { .. }
    ));
}

#[test]
fn unknown_write_may_or_may_not_take_effect() {
    assert_eq!(
        verdict([unknown_write(0, 0, 1), read(1, 5, 6, None)]),
        Verdict::Linearizable
    );
    assert_eq!(
        verdict([unknown_write(0, 0, 1), read(1, 5, 6, Some(1))]),
        Verdict::Linearizable
    );
    // It may take effect late, after a read that missed it.
    let late = [
        unknown_write(0, 0, 1),
        read(1, 5, 6, None),
        read(2, 7, 8, Some(1)),
    ];
    assert_eq!(verdict(late), Verdict::Linearizable);
    // But not before its call, and not undone once seen.
    assert!(matches!(
        verdict([read(1, 0, 1, Some(1)), unknown_write(0, 2, 1)]),
        Verdict::NotLinearizable { .. }
    ));
    let undone = [
        unknown_write(0, 0, 1),
        read(1, 5, 6, Some(1)),
        read(2, 7, 8, None),
    ];
    assert!(matches!(verdict(undone), Verdict::NotLinearizable { .. }));
}

#[test]
fn unknown_reads_are_dropped() {
    let unknown_read = op(1, 1, RETURN_NEVER, RegisterInput::Read, Outcome::Unknown);
    let Verdict::NotLinearizable { partition, .. } =
        verdict([write(0, 0, 1, 1), unknown_read, read(2, 5, 6, Some(3))])
    else {
        panic!("expected a violation");
    };
    assert_eq!(partition.op_count, 2);
}

#[test]
fn zero_time_budget_yields_unknown() {
    let options = CheckOptions {
        partition_time_budget: Duration::ZERO,
        ..CheckOptions::default()
    };
    let verdict = check(&RegisterModel, &history([write(0, 0, 1, 1)]), &options);
    assert_eq!(
        verdict,
        Verdict::Unknown {
            partition: Partition {
                key: None,
                op_count: 1
            },
            reason: UnknownReason::TimeBudget(Duration::ZERO),
        }
    );
    assert!(!verdict.is_linearizable());
}

#[test]
fn zero_cache_budget_yields_unknown() {
    let options = CheckOptions {
        cache_bytes_max: 0,
        ..CheckOptions::default()
    };
    let verdict = check(&RegisterModel, &history([write(0, 0, 1, 1)]), &options);
    assert!(matches!(
        verdict,
        Verdict::Unknown {
            reason: UnknownReason::CacheBytes(0),
            ..
        }
    ));
}

#[test]
fn partitions_are_checked_per_key_and_the_bad_one_is_named() {
    let kv = |process, call, ret, key: &str, op: KvOp, output: KvOutput| Op {
        process,
        call,
        ret,
        input: KvInput {
            key: key.to_owned(),
            op,
        },
        output: Outcome::Returned(output),
    };
    let put = |value: &str| KvOp::Put {
        value: value.to_owned(),
    };
    let got = |value: &str| KvOutput::Get {
        value: value.to_owned(),
    };
    let ops = [
        kv(0, 0, 1, "a", put("x"), KvOutput::Put),
        kv(1, 0, 1, "b", put("y"), KvOutput::Put),
        kv(0, 2, 3, "a", KvOp::Get, got("x")),
        // Key b lost its put.
        kv(1, 2, 3, "b", KvOp::Get, got("")),
    ];
    let verdict = check(&KvModel, &history(ops.clone()), &CheckOptions::default());
    let Verdict::NotLinearizable {
        partition,
        diagnostic,
    } = verdict
    else {
        panic!("expected a violation");
    };
    assert_eq!(
        partition,
        Partition {
            key: Some("b".to_owned()),
            op_count: 2
        }
    );
    assert_eq!(
        diagnostic.blocked.index, 3,
        "indexes refer to the whole history"
    );
    let good = history(ops.into_iter().take(3));
    assert_eq!(
        check(&KvModel, &good, &CheckOptions::default()),
        Verdict::Linearizable
    );
}

#[test]
fn etcd_model_accepts_an_unseen_put_only_with_room_for_its_revision() {
    let model = Determinized(EtcdKeyModel);
    let input = |op| EtcdInput {
        key: "k".to_owned(),
        op,
    };
    let put = |value: &str| {
        input(EtcdOp::Put {
            value: value.to_owned(),
            prev_kv: false,
        })
    };
    let put_ok = |revision| {
        Outcome::Returned(EtcdOutput::Put {
            revision,
            prev_kv: None,
        })
    };
    let get_ok = |revision, mod_revision, version| {
        let kv = KeyValue {
            value: "b".to_owned(),
            mod_revision,
            version,
            create_revision: 5,
        };
        Outcome::Returned(EtcdOutput::Get {
            revision,
            kv: Some(kv),
        })
    };
    let ops = |observed_mod_revision| {
        history([
            op(0, 0, 1, put("a"), put_ok(5)),
            op(1, 2, RETURN_NEVER, put("b"), Outcome::Unknown),
            op(
                2,
                3,
                4,
                input(EtcdOp::Get),
                get_ok(9, observed_mod_revision, 2),
            ),
        ])
    };
    assert_eq!(
        check(&model, &ops(7), &CheckOptions::default()),
        Verdict::Linearizable
    );
    // Revision 5 is the first put's: the unseen one cannot have it too.
    assert!(matches!(
        check(&model, &ops(5), &CheckOptions::default()),
        Verdict::NotLinearizable { .. }
    ));
}

/// A tiny deterministic generator, so the cross-check needs no dependency and replays exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A random register history of up to `count` operations with small times and values, so that
/// both verdicts are common.
fn random_history(rng: &mut SplitMix, count: usize) -> RegisterHistory {
    let mut ops = Vec::new();
    for process in 0..count as u64 {
        let call = rng.below(8);
        let ret = if rng.below(6) == 0 {
            RETURN_NEVER
        } else {
            call + rng.below(4)
        };
        let value = |rng: &mut SplitMix| i64::try_from(rng.below(3)).unwrap();
        let (input, output) = match rng.below(3) {
            0 => {
                let seen = match rng.below(4) {
                    0 => None,
                    _ => Some(value(rng)),
                };
                (RegisterInput::Read, RegisterOutput::Read { value: seen })
            }
            1 => (
                RegisterInput::Write { value: value(rng) },
                RegisterOutput::Write,
            ),
            _ => {
                let cas = RegisterInput::Cas {
                    expected: value(rng),
                    new: value(rng),
                };
                (
                    cas,
                    RegisterOutput::Cas {
                        succeeded: rng.below(2) == 0,
                    },
                )
            }
        };
        let output = if ret == RETURN_NEVER {
            Outcome::Unknown
        } else {
            Outcome::Returned(output)
        };
        ops.push(op(process, call, ret, input, output));
    }
    history(ops)
}

/// The definition, directly: some order of all operations that respects real time (a before b
/// whenever a returns before b is called) and that the model accepts step by step.
fn brute_force(history: &RegisterHistory) -> bool {
    fn extend(
        ops: &[Op<RegisterInput, RegisterOutput>],
        placed: &mut Vec<bool>,
        state: Option<i64>,
    ) -> bool {
        if placed.iter().all(|&done| done) {
            return true;
        }
        for candidate in 0..ops.len() {
            let must_wait = (0..ops.len()).any(|other| {
                !placed[other] && other != candidate && ops[other].ret < ops[candidate].call
            });
            if placed[candidate] || must_wait {
                continue;
            }
            let op = &ops[candidate];
            if let Some(next) = RegisterModel.step(&state, &op.input, &op.output) {
                placed[candidate] = true;
                if extend(ops, placed, next) {
                    return true;
                }
                placed[candidate] = false;
            }
        }
        false
    }
    let mut placed = vec![false; history.len()];
    extend(history.ops(), &mut placed, None)
}

#[test]
fn search_agrees_with_brute_force_on_small_random_histories() {
    let mut rng = SplitMix(0x5eed);
    let (mut legal, mut illegal) = (0, 0);
    for round in 0..3000 {
        let history = random_history(&mut rng, 1 + round % 7);
        let expected = brute_force(&history);
        let verdict = check(&RegisterModel, &history, &CheckOptions::default());
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "round {round}: {history:#?}\n{verdict:?}"
        );
        assert!(!matches!(verdict, Verdict::Unknown { .. }));
        if expected { legal += 1 } else { illegal += 1 }
    }
    // The generator must exercise both verdicts for the comparison to mean anything.
    assert!(
        legal > 300 && illegal > 300,
        "legal {legal}, illegal {illegal}"
    );
}
