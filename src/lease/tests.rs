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
        lessor.expired(10, Duration::from_secs(3)).is_empty(),
        "a follower's timers decide nothing"
    );
    lessor.promote(Duration::from_secs(1));
    // Promotion gives every lease at least the extension.
    assert!(lessor.expired(10, Duration::from_secs(3)).is_empty());
    assert_eq!(lessor.renew(7), Some(5));
    clock.advance(Duration::from_millis(4900));
    assert!(lessor.expired(10, Duration::from_secs(3)).is_empty());
    clock.advance(Duration::from_millis(200));
    assert_eq!(lessor.expired(10, Duration::from_secs(3)), vec![7]);
    // Proposed once per retry interval, and no longer renewable.
    assert!(lessor.expired(10, Duration::from_secs(3)).is_empty());
    assert_eq!(lessor.renew(7), None);
    clock.advance(Duration::from_secs(3));
    assert_eq!(lessor.expired(10, Duration::from_secs(3)), vec![7]);
}

#[test]
fn a_checkpoint_sets_a_followers_deadline_and_only_extends_the_leaders() {
    let (clock, leader) = lessor();
    let (follower_clock, follower) = lessor();
    leader.grant(1, 30);
    follower.grant(1, 30);
    leader.promote(Duration::from_secs(1));
    clock.advance(Duration::from_secs(10));
    follower_clock.advance(Duration::from_secs(10));
    assert_eq!(leader.renew(1), Some(30));
    let rows = follower.checkpoint(&[(1, 30)]);
    assert_eq!(rows, vec![(1, encode_row(30, 30))]);
    assert_eq!(follower.status(1).map(|status| status.remaining), Some(30));
    clock.advance(Duration::from_secs(5));
    // A checkpoint promising less than the leader's own deadline changes nothing there.
    leader.checkpoint(&[(1, 20)]);
    assert_eq!(leader.status(1).map(|status| status.remaining), Some(25));
    // One promising more (a deposed leader's renewal, committed later) binds the leader.
    leader.checkpoint(&[(1, 30)]);
    assert_eq!(leader.status(1).map(|status| status.remaining), Some(30));
    clock.advance(Duration::from_secs(29));
    assert!(leader.expired(10, Duration::from_secs(3)).is_empty());
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
        // b moves to lease 2.
        Event {
            kind: EventType::Put,
            kv: kv("b", 2),
            prev_kv: Some(kv("b", 1)),
        },
    ]);
    assert_eq!(lessor.status(1).unwrap().keys, vec![Bytes::from("a")]);
    assert_eq!(lessor.status(2).unwrap().keys, vec![Bytes::from("b")]);
    lessor.observe(&[Event {
        kind: EventType::Delete,
        kv: kv("a", 0),
        prev_kv: Some(kv("a", 1)),
    }]);
    assert!(lessor.status(1).unwrap().keys.is_empty());
    assert_eq!(lessor.revoke(2), Some(vec![Bytes::from("b")]));
    assert_eq!(lessor.revoke(2), None);
    assert!(!lessor.lease_exists(2));
}
