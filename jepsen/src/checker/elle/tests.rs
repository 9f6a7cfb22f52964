//! Hand-made minimal histories, one per anomaly class, each of which must be flagged as exactly
//! that class; valid histories (serial, concurrent, with failed and unknown transactions) that
//! must pass; the history reader; and a property test: a simulated strictly serializable
//! execution with random concurrency, failures and unknown outcomes always passes.

use std::collections::BTreeMap;
use std::time::Instant;

use proptest::prelude::*;

use super::*;

fn append(key: &str, value: u64) -> Mop {
    Mop::Append {
        key: key.to_owned(),
        value,
    }
}

fn read(key: &str, list: &[u64]) -> Mop {
    Mop::Read {
        key: key.to_owned(),
        value: Some(list.to_vec()),
    }
}

fn txn(status: TxnStatus, call: Time, ret: Time, ops: Vec<Mop>) -> Txn {
    Txn {
        process: call,
        call,
        ret,
        status,
        ops,
    }
}

/// Committed over `[call, ret]`.
fn ok(call: Time, ret: Time, ops: Vec<Mop>) -> Txn {
    txn(TxnStatus::Ok, call, ret, ops)
}

/// Certainly not committed; its reads unknown.
fn failed(call: Time, ret: Time, ops: Vec<Mop>) -> Txn {
    txn(TxnStatus::Fail, call, ret, without_values(ops))
}

/// Unknown outcome, open forever.
fn unknown(call: Time, ops: Vec<Mop>) -> Txn {
    txn(TxnStatus::Info, call, RETURN_NEVER, without_values(ops))
}

fn without_values(ops: Vec<Mop>) -> Vec<Mop> {
    ops.into_iter()
        .map(|mop| match mop {
            Mop::Read { key, .. } => Mop::Read { key, value: None },
            append @ Mop::Append { .. } => append,
        })
        .collect()
}

/// Checks `txns` (ordered by call, as the reader gives them) and returns the report.
fn checked(mut txns: Vec<Txn>) -> ElleReport {
    txns.sort_by_key(|txn| txn.call);
    check(&txns).expect("a well-formed history")
}

/// The history must show exactly one class of anomaly, `class`.
#[track_caller]
fn assert_only(txns: Vec<Txn>, class: AnomalyClass) -> ElleReport {
    let report = checked(txns);
    let classes: Vec<AnomalyClass> = report.counts.keys().copied().collect();
    assert_eq!(
        classes,
        vec![class],
        "expected only {class}; got {:?}\n{}",
        report.counts,
        report.explanation(10)
    );
    assert!(!report.is_valid());
    report
}

#[track_caller]
fn assert_valid(txns: Vec<Txn>) -> ElleReport {
    let report = checked(txns);
    assert!(
        report.is_valid(),
        "expected valid; got {:?}\n{}",
        report.counts,
        report.explanation(10)
    );
    report
}

/// Every transaction in these overlaps every other, so no real-time edge exists between them.
const T0: Time = 0;
const T1: Time = 100;

#[test]
fn g0_write_cycle() {
    // x's order puts T1 first, y's puts T2 first: each append precedes the other.
    let report = assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1), append("y", 1)]),
            ok(T0, T1, vec![append("x", 2), append("y", 2)]),
            ok(T0, T1, vec![read("x", &[1, 2]), read("y", &[2, 1])]),
        ],
        AnomalyClass::G0,
    );
    let explanation = report.explanation(1);
    assert!(explanation.contains("-ww->"), "{explanation}");
}

#[test]
fn g1a_aborted_read() {
    let report = assert_only(
        vec![
            failed(T0, T1, vec![append("x", 1)]),
            ok(T0, T1, vec![read("x", &[1])]),
        ],
        AnomalyClass::G1a,
    );
    assert!(report.explanation(1).contains("failed"));
}

#[test]
fn g1b_intermediate_read() {
    assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1), append("x", 2)]),
            ok(T0, T1, vec![read("x", &[1])]),
            ok(T0, T1, vec![read("x", &[1, 2])]),
        ],
        AnomalyClass::G1b,
    );
}

#[test]
fn g1c_circular_information_flow() {
    // Each read the other's append.
    assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1), read("y", &[2])]),
            ok(T0, T1, vec![append("y", 2), read("x", &[1])]),
        ],
        AnomalyClass::G1c,
    );
}

#[test]
fn g_single_read_skew() {
    // T2 sees T1's append to y but not its append to x.
    let report = assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1), append("y", 1)]),
            ok(T0, T1, vec![read("x", &[]), read("y", &[1])]),
            ok(T0, T1, vec![read("x", &[1])]),
        ],
        AnomalyClass::GSingle,
    );
    let explanation = report.explanation(1);
    assert!(explanation.contains("-rw->"), "{explanation}");
    assert!(explanation.contains("-wr->"), "{explanation}");
}

#[test]
fn g2_write_skew() {
    // Each read a key empty, then appended to the key the other read.
    assert_only(
        vec![
            ok(T0, T1, vec![read("x", &[]), append("y", 1)]),
            ok(T0, T1, vec![read("y", &[]), append("x", 1)]),
            ok(T0, T1, vec![read("x", &[1]), read("y", &[1])]),
        ],
        AnomalyClass::G2,
    );
}

#[test]
fn incompatible_orders() {
    let report = assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1)]),
            ok(T0, T1, vec![append("x", 2)]),
            ok(T0, T1, vec![read("x", &[1, 2])]),
            // Read twice by one transaction: one anomaly.
            ok(T0, T1, vec![read("x", &[2, 1]), read("x", &[2, 1])]),
        ],
        AnomalyClass::IncompatibleOrder,
    );
    assert_eq!(report.counts[&AnomalyClass::IncompatibleOrder], 1);
}

#[test]
fn internal_read_misses_own_append() {
    assert_only(
        vec![ok(T0, T1, vec![append("x", 1), read("x", &[])])],
        AnomalyClass::Internal,
    );
    // A second read that differs from the first without an append in between.
    assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1)]),
            ok(T0, T1, vec![read("x", &[]), read("x", &[1])]),
            ok(T0, T1, vec![read("x", &[1])]),
        ],
        AnomalyClass::Internal,
    );
}

#[test]
fn duplicate_value_in_a_read() {
    assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1)]),
            ok(T0, T1, vec![read("x", &[1, 1])]),
        ],
        AnomalyClass::Duplicate,
    );
}

#[test]
fn garbage_value_in_a_read() {
    assert_only(
        vec![
            ok(T0, T1, vec![append("x", 1)]),
            ok(T0, T1, vec![read("x", &[1, 7])]),
        ],
        AnomalyClass::Garbage,
    );
}

#[test]
fn stale_read_is_a_realtime_only_cycle() {
    // T1 appends and completes; T2 begins later and still reads x empty. Serializable (T2
    // before T1), but not strictly. T3 overlaps both and saw the append.
    let report = assert_only(
        vec![
            ok(0, 10, vec![append("x", 1)]),
            ok(20, 30, vec![read("x", &[])]),
            ok(0, 40, vec![read("x", &[1])]),
        ],
        AnomalyClass::GSingleRealtime,
    );
    let explanation = report.explanation(1);
    assert!(explanation.contains("-rt->"), "{explanation}");
}

#[test]
fn lost_append_that_no_read_saw() {
    // T1's append committed, yet a read that began after it ended misses it, and no read ever
    // saw it: T2 must come before T1, while real time says after.
    let report = assert_only(
        vec![
            ok(0, 10, vec![append("x", 1)]),
            ok(20, 30, vec![read("x", &[])]),
        ],
        AnomalyClass::GSingleRealtime,
    );
    assert!(report.explanation(1).contains("no read ever saw"));
}

#[test]
fn write_order_against_real_time_is_g0_realtime() {
    // T2 appended after T1 completed, yet x's order puts T2's append first.
    assert_only(
        vec![
            ok(0, 10, vec![append("x", 1)]),
            ok(20, 30, vec![append("x", 2)]),
            ok(40, 50, vec![read("x", &[2, 1])]),
        ],
        AnomalyClass::G0Realtime,
    );
}

#[test]
fn serial_history_is_valid() {
    let report = assert_valid(vec![
        ok(0, 1, vec![append("x", 1)]),
        ok(2, 3, vec![read("x", &[1]), append("y", 1), append("x", 2)]),
        ok(
            4,
            5,
            vec![read("x", &[1, 2]), read("y", &[1]), append("y", 2)],
        ),
        failed(6, 7, vec![append("x", 9), read("y", &[])]),
        ok(8, 9, vec![read("x", &[1, 2]), read("y", &[1, 2])]),
    ]);
    assert_eq!(report.committed, 4);
    assert_eq!(report.txns, 5);
}

#[test]
fn concurrent_history_is_valid() {
    // Serial order: T2 (reads empty), T1, T3, T4, T5.
    let report = assert_valid(vec![
        ok(0, 10, vec![append("x", 1)]),
        ok(0, 10, vec![read("x", &[])]),
        ok(5, 15, vec![read("x", &[1])]),
        ok(12, 20, vec![append("x", 2), read("x", &[1, 2])]),
        ok(30, 40, vec![read("x", &[1, 2])]),
    ]);
    assert!(report.edges.1[3] > 0, "real-time edges exist");
}

#[test]
fn unknown_transactions_may_or_may_not_have_committed() {
    // T1's append was seen, so it committed; T3's was never seen, so it may not have; T5's
    // append to y was never seen by a later read of y, which is fine for an unknown one.
    let report = assert_valid(vec![
        unknown(0, vec![append("x", 1), read("y", &[])]),
        ok(5, 10, vec![read("x", &[1])]),
        unknown(11, vec![append("x", 2)]),
        ok(20, 30, vec![read("x", &[1])]),
        unknown(31, vec![append("y", 5)]),
        ok(50, 60, vec![read("y", &[]), read("x", &[1])]),
    ]);
    assert_eq!(report.committed, 4, "T1 is committed, T3 and T5 are not");
}

#[test]
fn malformed_histories_are_refused() {
    let twice = vec![
        ok(0, 1, vec![append("x", 1)]),
        ok(2, 3, vec![append("x", 1)]),
    ];
    assert!(matches!(
        check(&twice),
        Err(MalformedHistory::AppendedTwice { value: 1, .. })
    ));
    let blind = vec![txn(
        TxnStatus::Ok,
        0,
        1,
        vec![Mop::Read {
            key: "x".to_owned(),
            value: None,
        }],
    )];
    assert!(matches!(
        check(&blind),
        Err(MalformedHistory::ReadWithoutValue { txn: 0, .. })
    ));
}

#[test]
fn reader_keeps_failed_and_unknown_transactions() {
    let text = r#"{"format":"mnemo-history","version":1,"model":"append"}
{"type":"invoke","process":1,"time":10,"input":{"f":"txn","ops":[{"f":"append","key":"x","value":1}]}}
{"type":"invoke","process":2,"time":11,"input":{"f":"txn","ops":[{"f":"append","key":"x","value":2}]}}
{"type":"nemesis","time":12,"f":"start-kill","value":{"target":"n1"}}
{"type":"ok","process":1,"time":20,"output":{"f":"txn","ops":[{"f":"append","key":"x","value":1}],"revision":5}}
{"type":"fail","process":2,"time":21}
{"type":"invoke","process":3,"time":30,"input":{"f":"txn","ops":[{"f":"read","key":"x"}]}}
{"type":"ok","process":3,"time":31,"output":{"f":"txn","ops":[{"f":"read","key":"x","value":[1]}]}}
{"type":"invoke","process":4,"time":40,"input":{"f":"txn","ops":[{"f":"append","key":"x","value":3}]}}
{"type":"info","process":4,"time":41}
{"type":"invoke","process":5,"time":50,"input":{"f":"txn","ops":[{"f":"append","key":"x","value":4}]}}
"#;
    let txns = read_history(text.as_bytes()).unwrap();
    let summary: Vec<(u64, TxnStatus, Time)> = txns
        .iter()
        .map(|txn| (txn.process, txn.status, txn.ret))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, TxnStatus::Ok, 20),
            (2, TxnStatus::Fail, 21),
            (3, TxnStatus::Ok, 31),
            (4, TxnStatus::Info, RETURN_NEVER),
            (5, TxnStatus::Info, RETURN_NEVER),
        ]
    );
    assert_eq!(txns[2].ops, vec![read("x", &[1])]);
    assert!(check(&txns).unwrap().is_valid());

    let other_model = r#"{"format":"mnemo-history","version":1,"model":"etcd"}"#;
    assert!(read_history(other_model.as_bytes()).is_err());
    let mismatched = r#"{"format":"mnemo-history","version":1,"model":"append"}
{"type":"invoke","process":1,"time":10,"input":{"f":"txn","ops":[{"f":"read","key":"x"}]}}
{"type":"ok","process":1,"time":20,"output":{"f":"txn","ops":[{"f":"read","key":"y","value":[]}]}}
"#;
    assert!(matches!(
        read_history(mismatched.as_bytes()),
        Err(ParseError::Syntax { line: 3, .. })
    ));
}

/// What the simulation decides for one transaction.
#[derive(Clone, Debug)]
struct Planned {
    /// (key, append?) per micro-operation.
    ops: Vec<(u8, bool)>,
    /// How long before its serialization point it was called.
    lead: Time,
    /// How long after it its response arrived.
    lag: Time,
    /// 0..=7: committed with a response; 8: failed; 9: unknown and committed; 10: unknown
    /// and never committed.
    fate: u8,
}

fn planned() -> impl Strategy<Value = Planned> {
    (
        prop::collection::vec((0_u8..3, any::<bool>()), 1..=4),
        0_u64..60,
        0_u64..60,
        0_u8..=10,
    )
        .prop_map(|(ops, lead, lag, fate)| Planned {
            ops,
            lead,
            lag,
            fate,
        })
}

/// Runs `plan` serially, transaction `i` taking effect at instant `10 * (i + 1)`, inside an
/// interval around it, on keys that are replaced by fresh ones every `rotate_every`
/// transactions (as the workload retires keys); then a final read of every key ever used.
fn simulate(plan: &[Planned], rotate_every: usize) -> Vec<Txn> {
    const SPACING: Time = 10;
    const START: Time = 100;
    let mut state: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut next_value = 0;
    let mut txns = Vec::new();
    for (index, planned) in plan.iter().enumerate() {
        let point = SPACING * (index as Time + 1) + START;
        let (status, commits) = match planned.fate {
            0..=7 => (TxnStatus::Ok, true),
            8 => (TxnStatus::Fail, false),
            9 => (TxnStatus::Info, true),
            _ => (TxnStatus::Info, false),
        };
        // Only the touched keys are copied, so that long histories stay cheap to simulate.
        let mut scratch: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut ops = Vec::new();
        for &(key, is_append) in &planned.ops {
            let name = format!("k{}/{key}", index / rotate_every);
            let list = scratch
                .entry(name.clone())
                .or_insert_with(|| state.get(&name).cloned().unwrap_or_default());
            if is_append {
                next_value += 1;
                list.push(next_value);
                ops.push(append(&name, next_value));
            } else {
                ops.push(read(&name, list));
            }
        }
        if commits {
            state.extend(scratch);
        }
        let ret = if status == TxnStatus::Info {
            RETURN_NEVER
        } else {
            point + planned.lag
        };
        let ops = if status == TxnStatus::Ok {
            ops
        } else {
            without_values(ops)
        };
        txns.push(Txn {
            process: index as u64,
            call: point - planned.lead,
            ret,
            status,
            ops,
        });
    }
    let end = SPACING * (plan.len() as Time + 2) + START;
    txns.push(ok(
        end,
        end + 1,
        state.iter().map(|(key, list)| read(key, list)).collect(),
    ));
    txns.sort_by_key(|txn| txn.call);
    txns
}

/// Transactions per key generation in the property tests: long enough for several to share
/// keys, short enough that some keys rotate.
const PROPERTY_ROTATE_EVERY: usize = 16;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn strictly_serializable_executions_pass(plan in prop::collection::vec(planned(), 1..40)) {
        let txns = simulate(&plan, PROPERTY_ROTATE_EVERY);
        let report = check(&txns).expect("unique values");
        prop_assert!(
            report.is_valid(),
            "{:?}\n{}",
            report.counts,
            report.explanation(5)
        );
    }

    #[test]
    fn moving_a_read_later_in_real_time_after_a_missed_append_is_caught(
        plan in prop::collection::vec(planned(), 2..30)
    ) {
        // Strict serializability, not just serializability, is checked: take a committed read
        // that missed a committed append, and make it start after that append's transaction
        // ended. The history must then be invalid.
        let mut txns = simulate(&plan, PROPERTY_ROTATE_EVERY);
        let appended: Vec<(usize, String, u64)> = txns
            .iter()
            .enumerate()
            .filter(|(_, txn)| txn.status == TxnStatus::Ok)
            .flat_map(|(at, txn)| txn.ops.iter().filter_map(move |mop| match mop {
                Mop::Append { key, value } => Some((at, key.clone(), *value)),
                Mop::Read { .. } => None,
            }))
            .collect();
        let stale = txns.iter().enumerate().find_map(|(reader, txn)| {
            if txn.status != TxnStatus::Ok || txn.ops.iter().any(|mop| matches!(mop, Mop::Append { .. })) {
                return None;
            }
            txn.ops.iter().find_map(|mop| match mop {
                Mop::Read { key, value: Some(list) } => appended
                    .iter()
                    .find(|(_, k, v)| k == key && !list.contains(v))
                    .map(|&(writer, _, _)| (reader, writer)),
                _ => None,
            })
        });
        prop_assume!(stale.is_some());
        let (reader, writer) = stale.expect("assumed");
        let after = txns[writer].ret + 1;
        let length = txns[reader].ret - txns[reader].call;
        txns[reader].call = after;
        txns[reader].ret = after + length;
        txns.sort_by_key(|txn| txn.call);
        let report = check(&txns).expect("unique values");
        prop_assert!(!report.is_valid(), "a stale read passed");
    }
}

#[test]
fn thirty_thousand_transactions_check_quickly() {
    // A 10-minute run records about 30k transactions. Ten clients, each transaction taking
    // effect in its interval; keys rotate every 200 transactions.
    let mut plan = Vec::new();
    let mut rng = crate::random::SeededRng::new(5);
    for _ in 0..30_000 {
        let ops = (0..=rng.below(4))
            .map(|_| (u8::try_from(rng.below(3)).expect("small"), rng.chance(50)))
            .collect();
        plan.push(Planned {
            ops,
            lead: rng.next_u64() % 50,
            lag: rng.next_u64() % 50,
            fate: u8::try_from(rng.below(11)).expect("small"),
        });
    }
    let txns = simulate(&plan, 200);
    let started = Instant::now();
    let report = check(&txns).expect("unique values");
    eprintln!(
        "checked {} transactions in {:?}: {:?}",
        txns.len(),
        started.elapsed(),
        report.edges
    );
    assert!(report.is_valid(), "{}", report.explanation(3));
}
