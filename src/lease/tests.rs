//! Lessor tests: deadlines by a manual clock, promotion, renewal, expiry and checkpoints.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn lessor() -> (Arc<ManualClock>, Lessor) {
    let clock = Arc::new(ManualClock::default());
    let lessor = Lessor::new(Arc::clone(&clock) as Arc<dyn Clock>);
    (clock, lessor)
}

#[test]
fn a_lease_expires_only_on_a_primary_after_its_ttl_and_renewal_restarts_it() {
    let (clock, lessor) = lessor();
    assert!(lessor.grant(7, 5).is_some());
    assert!(lessor.grant(7, 5).is_none(), "an id is granted once");
    clock.advance(Duration::from_secs(6));
    assert!(
        lessor.expired(10, Duration::from_secs(3), 1).is_empty(),
        "a follower's timers decide nothing"
    );
    lessor.promote(Duration::from_secs(1), 1);
    // Promotion gives every lease its TTL again, from the takeover.
    assert!(lessor.expired(10, Duration::from_secs(3), 1).is_empty());
    assert_eq!(
        lessor.renew(7),
        Some(Renewal {
            ttl: 5,
            checkpointed: false
        })
    );
    clock.advance(Duration::from_millis(4900));
    assert!(lessor.expired(10, Duration::from_secs(3), 1).is_empty());
    clock.advance(Duration::from_millis(200));
    assert_eq!(lessor.expired(10, Duration::from_secs(3), 1), vec![7]);
    // Proposed once per retry interval, and no longer renewable.
    assert!(lessor.expired(10, Duration::from_secs(3), 1).is_empty());
    assert_eq!(lessor.renew(7), None);
    clock.advance(Duration::from_secs(3));
    assert_eq!(lessor.expired(10, Duration::from_secs(3), 1), vec![7]);
}

#[test]
fn a_checkpoint_sets_a_followers_deadline_and_only_a_cleared_one_extends_the_leaders() {
    let (clock, leader) = lessor();
    let (follower_clock, follower) = lessor();
    leader.grant(1, 30);
    follower.grant(1, 30);
    leader.promote(Duration::from_secs(1), 1);
    clock.advance(Duration::from_secs(10));
    follower_clock.advance(Duration::from_secs(10));
    assert_eq!(leader.renew(1).map(|renewal| renewal.ttl), Some(30));
    let rows = follower.checkpoint(&[(1, 30)]);
    assert_eq!(rows, vec![(1, encode_row(30, 30))]);
    assert_eq!(follower.status(1).map(|status| status.remaining), Some(30));
    clock.advance(Duration::from_secs(5));
    // A remaining TTL is the leader's own checkpoint, taken from its deadline: applying it
    // changes nothing there, whether rounding made it more or less.
    leader.checkpoint(&[(1, 20)]);
    assert_eq!(leader.status(1).map(|status| status.remaining), Some(25));
    leader.checkpoint(&[(1, 26)]);
    assert_eq!(leader.status(1).map(|status| status.remaining), Some(25));
    // A cleared one comes with a renewal (maybe a deposed leader's, committed later), which
    // binds the leader.
    leader.checkpoint(&[(1, 0)]);
    assert_eq!(leader.status(1).map(|status| status.remaining), Some(30));
    clock.advance(Duration::from_secs(29));
    assert!(leader.expired(10, Duration::from_secs(3), 1).is_empty());
}

#[test]
fn a_renewal_reports_a_checkpoint_until_one_of_zero_clears_it() {
    let (clock, leader) = lessor();
    leader.grant(1, 30);
    leader.promote(Duration::from_secs(1), 1);
    let renewed = |leader: &Lessor| leader.renew(1).expect("a live lease renews");
    assert!(!renewed(&leader).checkpointed, "a fresh grant has none");
    leader.checkpoint(&[(1, 12)]);
    assert!(renewed(&leader).checkpointed);
    assert!(
        renewed(&leader).checkpointed,
        "renewing alone does not clear it"
    );
    clock.advance(Duration::from_secs(10));
    let rows = leader.checkpoint(&[(1, 0)]);
    assert_eq!(rows, vec![(1, encode_row(30, 0))]);
    assert!(!renewed(&leader).checkpointed);
    // Cleared, the lease has its full TTL on a member that only followed the table.
    let (_, follower) = lessor();
    follower.grant(1, 30);
    follower.checkpoint(&[(1, 12)]);
    follower.checkpoint(&[(1, 0)]);
    assert_eq!(follower.status(1).map(|status| status.remaining), Some(30));
}

#[test]
fn promotion_gives_each_lease_its_ttl_or_checkpoint_from_the_takeover() {
    let (clock, member) = lessor();
    member.grant(1, 30);
    member.grant(2, 30);
    member.grant(3, 2);
    member.checkpoint(&[(2, 8)]);
    // Long past every deadline this follower knows of: the leader kept renewing meanwhile,
    // and did not tell the followers.
    clock.advance(Duration::from_secs(100));
    member.promote(Duration::from_secs(5), 1);
    let remaining = |id| member.status(id).map(|status| status.remaining);
    assert_eq!(remaining(1), Some(30), "the full TTL");
    assert_eq!(remaining(2), Some(8), "the checkpointed remaining TTL");
    assert_eq!(remaining(3), Some(5), "at least the extension");
    // A retry interval longer than the test, so each lease shows up once.
    let expired = || member.expired(10, Duration::from_secs(600), 1);
    clock.advance(Duration::from_millis(4900));
    assert!(expired().is_empty());
    clock.advance(Duration::from_millis(200));
    assert_eq!(expired(), vec![3]);
    clock.advance(Duration::from_millis(2800));
    assert!(expired().is_empty());
    clock.advance(Duration::from_millis(200));
    assert_eq!(expired(), vec![2]);
    clock.advance(Duration::from_secs(22));
    assert_eq!(expired(), vec![1]);
}

#[test]
fn ids_are_listed_soonest_deadline_first() {
    let (clock, lessor) = lessor();
    lessor.grant(5, 1000);
    lessor.grant(6, 500);
    lessor.grant(3, 700);
    clock.advance(Duration::from_secs(1));
    lessor.grant(4, 699);
    assert_eq!(
        lessor.ids(),
        vec![6, 3, 4, 5],
        "4 and 3 end at once; 3 first by id"
    );
}

#[test]
fn keys_follow_puts_and_deletes_and_leave_with_the_revoke() {
    use crate::types::KeyValue;
    let (_, lessor) = lessor();
    lessor.grant(1, 10);
    lessor.grant(2, 10);
    let kv = |key: &str, lease| KeyValue {
        key: Bytes::from(key.to_string()),
        lease,
        ..KeyValue::default()
    };
    lessor.observe(&[
        Event {
            kind: EventType::Put,
            kv: kv("a", 1),
            prev_kv: None,
        },
        Event {
            kind: EventType::Put,
            kv: kv("b", 1),
            prev_kv: None,
        },
        // b moves to lease 2. A put's event need not carry what it replaced: the lessor
        // knows which lease each key had.
        Event {
            kind: EventType::Put,
            kv: kv("b", 2),
            prev_kv: None,
        },
        Event {
            kind: EventType::Put,
            kv: kv("c", 1),
            prev_kv: None,
        },
    ]);
    assert_eq!(
        lessor.status(1).unwrap().keys,
        vec![Bytes::from("a"), Bytes::from("c")]
    );
    assert_eq!(lessor.status(2).unwrap().keys, vec![Bytes::from("b")]);
    lessor.observe(&[
        Event {
            kind: EventType::Delete,
            kv: kv("a", 0),
            prev_kv: None,
        },
        // Put again without a lease: c leaves lease 1.
        Event {
            kind: EventType::Put,
            kv: kv("c", 0),
            prev_kv: None,
        },
    ]);
    assert!(lessor.status(1).unwrap().keys.is_empty());
    assert_eq!(lessor.revoke(2), Some(vec![Bytes::from("b")]));
    assert_eq!(lessor.revoke(2), None);
    assert!(!lessor.lease_exists(2));
    // b went with lease 2; attaching it to lease 1 now must not touch the revoked lease.
    lessor.observe(&[Event {
        kind: EventType::Put,
        kv: kv("b", 1),
        prev_kv: None,
    }]);
    assert_eq!(lessor.status(1).unwrap().keys, vec![Bytes::from("b")]);
}

#[test]
fn checkpoints_fall_due_an_interval_after_the_last_fresh_deadline_for_long_leases_only() {
    let interval = Duration::from_secs(10);
    let (clock, leader) = lessor();
    leader.grant(1, 60);
    leader.grant(2, 12);
    assert!(
        leader.checkpoints_due(interval, 10, 1).is_empty(),
        "a follower proposes nothing"
    );
    leader.promote(Duration::from_secs(1), 1);
    clock.advance(Duration::from_millis(9900));
    assert!(
        leader.checkpoints_due(interval, 10, 1).is_empty(),
        "not yet due"
    );
    clock.advance(Duration::from_millis(200));
    // Lease 2 has 1.9 s left: shorter than the interval, it needs no checkpoint.
    assert_eq!(
        leader.checkpoints_due(interval, 10, 1),
        vec![(1, 50)],
        "rounded up"
    );
    assert!(
        leader.checkpoints_due(interval, 10, 1).is_empty(),
        "proposed once per interval"
    );
    // Proposed but not applied: a renewal must clear it, as it may still commit.
    assert!(leader.renew(1).expect("alive").checkpointed);
    clock.advance(Duration::from_millis(9900));
    assert!(
        leader.checkpoints_due(interval, 10, 1).is_empty(),
        "the renewal restarted the interval"
    );
    clock.advance(Duration::from_millis(100));
    let due = leader.checkpoints_due(interval, 10, 1);
    assert_eq!(
        due,
        vec![(1, 50)],
        "a full TTL from the renewal, less the interval"
    );
    leader.checkpoint(&due);
    assert!(leader.renew(1).expect("alive").checkpointed, "applied");
    leader.checkpoint(&[(1, 0)]);
    assert!(!leader.renew(1).expect("alive").checkpointed, "cleared");
}

#[test]
fn checkpoints_come_in_batches_of_at_most_max() {
    let interval = Duration::from_secs(1);
    let (clock, leader) = lessor();
    for id in 1..=5 {
        leader.grant(id, 60);
    }
    leader.promote(Duration::from_secs(1), 1);
    clock.advance(Duration::from_secs(2));
    let first = leader.checkpoints_due(interval, 3, 1);
    let second = leader.checkpoints_due(interval, 3, 1);
    assert_eq!(
        first.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(second.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 5]);
    assert!(leader.checkpoints_due(interval, 3, 1).is_empty());
}

#[test]
fn timers_are_authoritative_only_in_the_term_they_were_promoted_in() {
    let interval = Duration::from_secs(1);
    let (clock, leader) = lessor();
    leader.grant(1, 60);
    leader.promote(Duration::from_secs(1), 4);
    assert_eq!(leader.primary_term(), Some(4));
    clock.advance(Duration::from_secs(2));
    assert!(leader.any_checkpoint_due(interval, 4));
    assert!(
        !leader.any_checkpoint_due(interval, 5),
        "a later term needs a promotion of its own"
    );
    assert!(leader.checkpoints_due(interval, 10, 5).is_empty());
    assert!(
        leader.any_checkpoint_due(interval, 4),
        "looking marks nothing"
    );
    assert_eq!(leader.checkpoints_due(interval, 10, 4).len(), 1);
    assert!(!leader.any_checkpoint_due(interval, 4));
    clock.advance(Duration::from_secs(60));
    assert!(leader.expired(10, Duration::from_secs(3), 5).is_empty());
    assert_eq!(leader.expired(10, Duration::from_secs(3), 4), vec![1]);
    leader.demote();
    assert_eq!(leader.primary_term(), None);
}
