//! Hand-made histories for the lease and lock checkers: one per violation, which must be
//! flagged, and valid ones (a lease that expired after its keepalives stopped, an unknown
//! revoke, a slow read across an expiry, a fence that rejected a stale holder) that must pass.

use super::*;

/// One second, in history time.
const S: Time = NANOS_PER_SEC;
/// A millisecond.
const MS: Time = 1_000_000;
const FINAL: u64 = FINAL_PROCESS_BASE;

fn ok(process: u64, call: Time, ret: Time, input: LeaseInput, output: LeaseOutput) -> LeaseOp {
    Op {
        process,
        call,
        ret,
        input,
        output: Outcome::Returned(output),
    }
}

fn unknown(process: u64, call: Time, input: LeaseInput) -> LeaseOp {
    Op {
        process,
        call,
        ret: RETURN_NEVER,
        input,
        output: Outcome::Unknown,
    }
}

fn history(ops: Vec<LeaseOp>) -> History<LeaseInput, LeaseOutput> {
    let mut history = History::new();
    for op in ops {
        history.push(op);
    }
    history
}

fn grant(process: u64, call: Time, lease: i64, ttl: i64) -> LeaseOp {
    ok(
        process,
        call,
        call + 10 * MS,
        LeaseInput::Grant { lease, ttl },
        LeaseOutput::Grant { lease, ttl },
    )
}

fn put(process: u64, call: Time, key: &str, lease: i64) -> LeaseOp {
    ok(
        process,
        call,
        call + 10 * MS,
        LeaseInput::Put {
            key: key.to_owned(),
            lease,
        },
        LeaseOutput::Put { revision: 2 },
    )
}

fn keepalive(process: u64, call: Time, lease: i64, ttl: i64) -> LeaseOp {
    ok(
        process,
        call,
        call + 10 * MS,
        LeaseInput::Keepalive { lease },
        LeaseOutput::Keepalive { ttl },
    )
}

fn read(process: u64, call: Time, ret: Time, keys: &[(&str, i64)]) -> LeaseOp {
    ok(
        process,
        call,
        ret,
        LeaseInput::Read {
            prefix: "l/".to_owned(),
        },
        LeaseOutput::Read {
            revision: 9,
            kvs: keys
                .iter()
                .map(|&(key, lease)| LeasedKv {
                    key: key.to_owned(),
                    lease,
                    mod_revision: 2,
                })
                .collect(),
        },
    )
}

fn ttl(process: u64, call: Time, lease: i64, remaining: i64, granted: i64) -> LeaseOp {
    ok(
        process,
        call,
        call + 10 * MS,
        LeaseInput::Ttl { lease },
        LeaseOutput::Ttl {
            ttl: remaining,
            granted,
            keys: Vec::new(),
        },
    )
}

/// A final phase starting at `at`: every lease seen gone, an empty final read, and the final
/// counter `counter` read through two members.
fn final_phase(at: Time, leases: &[i64], counter: i64) -> Vec<LeaseOp> {
    let mut ops = Vec::new();
    let mut time = at;
    for &lease in leases {
        ops.push(ttl(FINAL, time, lease, -1, 0));
        time += 20 * MS;
    }
    ops.push(read(FINAL, time, time + 10 * MS, &[]));
    for member in 0..2 {
        let call = time + 50 * MS + member * 20 * MS;
        ops.push(ok(
            FINAL + 1 + member,
            call,
            call + 10 * MS,
            LeaseInput::ReadCounter { lock_key: None },
            LeaseOutput::ReadCounter {
                lock_create_revision: 0,
                value: counter,
                revision: 50,
            },
        ));
    }
    ops
}

/// Lease 1 (TTL 2 s) with key l/a, renewed at 1 s, then left to lapse: alive until 3 s.
/// Lease 2 with key l/b, renewed at 1.2 s, revoked with an unknown outcome at 1.5 s.
fn valid_leases() -> Vec<LeaseOp> {
    vec![
        grant(1, 0, 1, 2),
        put(1, 100 * MS, "l/a", 1),
        grant(2, 10 * MS, 2, 2),
        put(2, 120 * MS, "l/b", 2),
        keepalive(3, S, 1, 2),
        keepalive(3, 1200 * MS, 2, 2),
        unknown(2, 1500 * MS, LeaseInput::Revoke { lease: 2 }),
        // Lease 1 surely lives; lease 2 may already be revoked.
        read(4, 2 * S, 2100 * MS, &[("l/a", 1)]),
        ttl(4, 2200 * MS, 1, 0, 2),
        // Started before lease 1's bound but ended after it: it may have taken effect after a
        // legitimate expiry, so the absence proves nothing.
        read(4, 2900 * MS, 3100 * MS, &[]),
        // Long after: lease 1 expired after its keepalives stopped.
        read(4, 4 * S, 4100 * MS, &[]),
        keepalive(3, 4200 * MS, 1, 0),
    ]
}

#[test]
fn leases_that_expire_after_keepalives_stop_and_unknown_revokes_are_valid() {
    let mut ops = valid_leases();
    ops.extend(final_phase(10 * S, &[1, 2], 0));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Valid, "{result:?}");
    assert_eq!(result.details["key_presences_proven"], json!(1));
}

#[test]
fn a_key_missing_while_its_lease_surely_lives_is_early_expiry() {
    let mut ops = valid_leases();
    // Lease 1 lives until 3 s; this read ended at 2.6 s without its key.
    ops.push(read(5, 2500 * MS, 2600 * MS, &[]));
    ops.extend(final_phase(10 * S, &[1, 2], 0));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    let explanation = result.details["explanation"].as_str().unwrap();
    assert!(explanation.contains("l/a"), "{explanation}");
    assert!(explanation.contains("early-expiry"), "{explanation}");
}

#[test]
fn a_lease_reported_gone_while_it_surely_lives_is_early_expiry() {
    for gone in [keepalive(5, 2 * S, 1, 0), ttl(5, 2 * S, 1, -1, 0)] {
        let mut ops = valid_leases();
        ops.push(gone);
        ops.extend(final_phase(10 * S, &[1, 2], 0));
        let result = check_leases(&history(ops));
        assert_eq!(result.validity, Validity::Invalid, "{result:?}");
        assert_eq!(result.details["violations"]["early-expiry"], json!(1));
    }
}

#[test]
fn a_lease_still_alive_long_after_the_final_phase_started_never_expired() {
    let mut ops = valid_leases();
    // The final phase starts at 10 s; TTL 2 s + 5 s grace ends at 17 s.
    ops.extend(final_phase(10 * S, &[2], 0));
    ops.push(ttl(FINAL + 5, 16 * S, 1, 1, 2));
    assert_eq!(
        check_leases(&history(ops.clone())).validity,
        Validity::Unknown,
        "not yet past the grace and never seen gone: undecided"
    );
    ops.push(ttl(FINAL + 5, 18 * S, 1, 1, 2));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    assert_eq!(result.details["violations"]["no-expiry"], json!(1));
}

#[test]
fn a_leased_key_in_a_final_read_never_expired() {
    let mut ops = valid_leases();
    ops.extend(final_phase(10 * S, &[1, 2], 0));
    ops.push(read(FINAL + 6, 11 * S, 11 * S + 10 * MS, &[("l/a", 1)]));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    // It also outlived the TimeToLive -1 the final phase saw.
    assert_eq!(result.details["violations"]["no-expiry"], json!(1));
    assert_eq!(result.details["violations"]["key-outlived-lease"], json!(1));
}

#[test]
fn a_key_of_a_revoked_lease_read_after_the_revoke_completed_is_a_violation() {
    let mut ops = vec![
        grant(1, 0, 7, 5),
        put(1, 100 * MS, "l/c", 7),
        ok(
            1,
            S,
            1100 * MS,
            LeaseInput::Revoke { lease: 7 },
            LeaseOutput::Revoke { revision: 3 },
        ),
        // Concurrent with the revoke: either way is fine.
        read(2, 1050 * MS, 1200 * MS, &[("l/c", 7)]),
    ];
    let concurrent = {
        let mut ops = ops.clone();
        ops.extend(final_phase(10 * S, &[7], 0));
        check_leases(&history(ops))
    };
    assert_eq!(concurrent.validity, Validity::Valid, "{concurrent:?}");
    ops.push(read(2, 1300 * MS, 1400 * MS, &[("l/c", 7)]));
    ops.extend(final_phase(10 * S, &[7], 0));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    assert_eq!(result.details["violations"]["key-outlived-lease"], json!(1));
}

#[test]
fn time_to_live_above_the_granted_ttl_is_a_violation() {
    let mut ops = valid_leases();
    ops.push(ttl(5, 1500 * MS, 1, 3, 2));
    ops.extend(final_phase(10 * S, &[1, 2], 0));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    assert_eq!(result.details["violations"]["ttl-above-granted"], json!(1));
}

#[test]
fn a_history_without_a_final_phase_is_undecided() {
    let result = check_leases(&history(valid_leases()));
    assert_eq!(result.validity, Validity::Unknown, "{result:?}");
}

fn lock(process: u64, call: Time, lease: i64, key: &str) -> LeaseOp {
    ok(
        process,
        call,
        call + 10 * MS,
        LeaseInput::Lock {
            name: "lk/counter".to_owned(),
            lease,
        },
        LeaseOutput::Lock {
            key: key.to_owned(),
            revision: 10,
        },
    )
}

fn hold(process: u64, call: Time, ret: Time, lease: i64, key: &str) -> LeaseOp {
    ok(
        process,
        call,
        ret,
        LeaseInput::Hold {
            key: key.to_owned(),
            lease,
        },
        LeaseOutput::Hold {
            end: HoldEnd::Unlock,
        },
    )
}

fn read_counter(process: u64, call: Time, key: &str, value: i64) -> LeaseOp {
    ok(
        process,
        call,
        call + 10 * MS,
        LeaseInput::ReadCounter {
            lock_key: Some(key.to_owned()),
        },
        LeaseOutput::ReadCounter {
            lock_create_revision: 10,
            value,
            revision: 11,
        },
    )
}

fn incr(process: u64, call: Time, lease: i64, key: &str, read: i64, succeeded: bool) -> LeaseOp {
    ok(
        process,
        call,
        call + 10 * MS,
        incr_input(lease, key, read),
        LeaseOutput::Incr {
            succeeded,
            revision: 12,
        },
    )
}

fn incr_input(lease: i64, key: &str, read: i64) -> LeaseInput {
    LeaseInput::Incr {
        lock_key: key.to_owned(),
        lease,
        fence: 10,
        read,
        write: read + 1,
    }
}

/// One round of a holder: lock, hold (read, increment), unlock, starting at `at`.
fn round(process: u64, at: Time, lease: i64, read: i64, succeeded: bool) -> Vec<LeaseOp> {
    let key = format!("lk/counter/{lease:x}");
    let hold_process = 1000 + process;
    vec![
        lock(process, at, lease, &key),
        hold(hold_process, at + 20 * MS, at + 100 * MS, lease, &key),
        read_counter(process, at + 30 * MS, &key, read),
        incr(process, at + 50 * MS, lease, &key, read, succeeded),
        ok(
            process,
            at + 110 * MS,
            at + 120 * MS,
            LeaseInput::Unlock { key },
            LeaseOutput::Unlock { revision: 13 },
        ),
    ]
}

/// Two holders with TTL-2 leases taking turns, a stale holder rejected by the fence, and an
/// unknown increment.
fn valid_lock() -> Vec<LeaseOp> {
    let mut ops = vec![grant(1, 0, 0xa, 2), grant(2, 0, 0xb, 2)];
    ops.extend(round(1, 200 * MS, 0xa, 0, true));
    ops.extend(round(2, 400 * MS, 0xb, 1, true));
    ops.extend(round(1, 600 * MS, 0xa, 2, false));
    ops.push(unknown(2, 800 * MS, incr_input(0xb, "lk/counter/b", 2)));
    ops
}

#[test]
fn fenced_increments_in_turn_with_an_unknown_one_are_valid() {
    for counter in [2, 3] {
        let mut ops = valid_lock();
        ops.extend(final_phase(10 * S, &[0xa, 0xb], counter));
        let result = check_lock(&history(ops));
        assert_eq!(result.validity, Validity::Valid, "{result:?}");
        assert_eq!(result.details["increments_ok"], json!(2));
        assert_eq!(result.details["increments_unknown"], json!(1));
    }
}

#[test]
fn two_fenced_increments_that_read_the_same_value_lost_an_update() {
    let mut ops = valid_lock();
    ops.extend(round(1, 1200 * MS, 0xa, 1, true));
    ops.extend(final_phase(10 * S, &[0xa, 0xb], 3));
    let result = check_lock(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    assert_eq!(result.details["violations"]["lost-update"], json!(1));
}

#[test]
fn a_final_counter_outside_the_possible_range_is_a_violation() {
    for counter in [1, 4] {
        let mut ops = valid_lock();
        ops.extend(final_phase(10 * S, &[0xa, 0xb], counter));
        let result = check_lock(&history(ops));
        assert_eq!(result.validity, Validity::Invalid, "{counter}: {result:?}");
        assert_eq!(result.details["violations"]["final-counter"], json!(1));
    }
}

#[test]
fn final_counters_that_disagree_are_a_violation() {
    let mut ops = valid_lock();
    ops.extend(final_phase(10 * S, &[0xa, 0xb], 2));
    ops.push(ok(
        FINAL + 9,
        12 * S,
        12 * S + MS,
        LeaseInput::ReadCounter { lock_key: None },
        LeaseOutput::ReadCounter {
            lock_create_revision: 0,
            value: 3,
            revision: 50,
        },
    ));
    let result = check_lock(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
}

#[test]
fn overlapping_holds_of_surely_live_leases_are_two_holders() {
    let mut ops = vec![grant(1, 0, 0xa, 2), grant(2, 0, 0xb, 2)];
    ops.push(hold(11, 200 * MS, 900 * MS, 0xa, "lk/counter/a"));
    ops.push(hold(12, 500 * MS, 1200 * MS, 0xb, "lk/counter/b"));
    ops.extend(final_phase(10 * S, &[0xa, 0xb], 0));
    let result = check_lock(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    assert_eq!(result.details["violations"]["two-holders"], json!(1));
}

#[test]
fn overlapping_holds_after_a_lease_could_expire_are_only_information() {
    // Lease a (TTL 2 s, never renewed) could expire at 2 s; its holder, paused, still believes
    // it holds the lock at 3 s, when b holds it. Its increment is rejected by the fence.
    let mut ops = vec![grant(1, 0, 0xa, 2), grant(2, 2500 * MS, 0xb, 2)];
    ops.push(lock(1, 100 * MS, 0xa, "lk/counter/a"));
    ops.push(hold(11, 200 * MS, 3200 * MS, 0xa, "lk/counter/a"));
    ops.push(read_counter(1, 300 * MS, "lk/counter/a", 0));
    ops.extend(round(2, 2600 * MS, 0xb, 0, true));
    ops.push(incr(1, 3000 * MS, 0xa, "lk/counter/a", 0, false));
    ops.extend(final_phase(10 * S, &[0xa, 0xb], 1));
    let result = check_lock(&history(ops));
    assert_eq!(result.validity, Validity::Valid, "{result:?}");
    assert_eq!(
        result.details["overlapping_holds_lease_could_expire"],
        json!(1)
    );
}

#[test]
fn a_lock_key_gone_while_its_lease_surely_lives_is_early_expiry() {
    let mut ops = vec![grant(1, 0, 0xa, 2)];
    ops.push(lock(1, 100 * MS, 0xa, "lk/counter/a"));
    ops.push(ok(
        1,
        300 * MS,
        310 * MS,
        LeaseInput::ReadCounter {
            lock_key: Some("lk/counter/a".to_owned()),
        },
        LeaseOutput::ReadCounter {
            lock_create_revision: 0,
            value: 0,
            revision: 11,
        },
    ));
    ops.extend(final_phase(10 * S, &[0xa], 0));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    assert_eq!(result.details["violations"]["early-expiry"], json!(1));
}

#[test]
fn parse_reads_the_recorded_vocabulary_and_skips_nemesis_lines() {
    let text = r#"{"format":"mnemo-history","version":1,"model":"lease"}
{"type":"invoke","process":0,"time":5,"input":{"f":"grant","lease":9,"ttl":2}}
{"type":"nemesis","time":6,"f":"start-pause","value":{}}
{"type":"ok","process":0,"time":9,"output":{"f":"grant","lease":9,"ttl":2}}
{"type":"invoke","process":0,"time":10,"input":{"f":"read-counter","lock_key":null}}
{"type":"info","process":0,"time":12}
"#;
    let history = parse(text.as_bytes()).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history.ops()[0].output,
        Outcome::Returned(LeaseOutput::Grant { lease: 9, ttl: 2 })
    );
    assert_eq!(history.ops()[1].output, Outcome::Unknown);
    let mismatch = text.replace(
        r#"{"f":"grant","lease":9,"ttl":2}}"#,
        r#"{"f":"put","revision":3}}"#,
    );
    assert!(parse(mismatch.as_bytes()).is_err());
}

#[test]
fn a_renewal_binds_only_reads_that_start_after_it_completed() {
    // The shape of a run where a deposed leader answered a keepalive late: lease 3's last
    // renewal known in time is at 1 s (alive until 3 s); the key is gone from 3.5 s on; a
    // keepalive sent at 4 s is answered "renewed" at 5 s.
    let mut ops = vec![
        grant(1, 0, 3, 2),
        put(1, 100 * MS, "l/d", 3),
        keepalive(2, S, 3, 2),
        read(4, 3500 * MS, 3600 * MS, &[]),
        ok(
            2,
            4 * S,
            5 * S,
            LeaseInput::Keepalive { lease: 3 },
            LeaseOutput::Keepalive { ttl: 2 },
        ),
        read(4, 4500 * MS, 4600 * MS, &[]),
    ];
    let mut before = ops.clone();
    before.extend(final_phase(10 * S, &[3], 0));
    let result = check_leases(&history(before));
    assert_eq!(
        result.validity,
        Validity::Valid,
        "reads before the late answer are not bound by it: {result:?}"
    );
    // A read after the answer, within the renewed TTL, must still find the key.
    ops.push(read(4, 5100 * MS, 5200 * MS, &[]));
    ops.extend(final_phase(10 * S, &[3], 0));
    let result = check_leases(&history(ops));
    assert_eq!(result.validity, Validity::Invalid, "{result:?}");
    assert_eq!(result.details["violations"]["early-expiry"], json!(1));
}
