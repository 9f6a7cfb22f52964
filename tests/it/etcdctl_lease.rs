//! etcdctl 3.4's `lease` commands and `put --lease` against a member: what they print must
//! equal what they print against etcd 3.4.23 (captured on loopback), with two exceptions.
//!
//! - Ids etcdctl's `lease grant` gets from the server are random: its line is matched with
//!   the id as a pattern (16 lowercase hex digits, `%016x`), and the id read back over gRPC.
//!   Every other test grants its leases over gRPC with known ids, so their lines are exact.
//! - `lease timetolive`'s `remaining(Ns)` is the lease's time left truncated to whole seconds
//!   when the server answered, so it depends on how long the test took since the grant: it
//!   is checked to lie in `granted - ceil(elapsed since the grant was sent) ..= granted`.
//!
//! `lease keep-alive` renews every TTL/3 until killed or until the lease is gone; its rounds
//! are counted, not timed.

use std::time::Instant;

use mnemo::pb::etcdserverpb::lease_client::LeaseClient;
use tonic::transport::Channel;

use crate::support::etcdctl_child::EtcdctlChild;
use crate::support::lease::{grant, lease_ids, revoke, time_to_live};
use crate::support::{Member, assert_fails_with, ok_stdout};

async fn lease_client(member: &Member) -> LeaseClient<Channel> {
    LeaseClient::new(member.channel().await)
}

/// Parses `lease <16 hex> granted with TTL(<ttl>s)\n` and returns the id.
#[track_caller]
fn granted_id(printed: &str, ttl: i64) -> i64 {
    let hex = printed
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(&format!(" granted with TTL({ttl}s)\n")))
        .unwrap_or_else(|| panic!("not a grant of TTL {ttl}: {printed:?}"));
    assert!(
        hex.len() == 16
            && hex
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')),
        "the id is 16 lowercase hex digits: {printed:?}"
    );
    i64::from_str_radix(hex, 16).expect("a hex id")
}

/// Parses `lease <id> granted with TTL(<granted>s), remaining(<r>s)<rest>\n`, checks `r`
/// against the time since `granted_before`, and returns `rest`.
#[track_caller]
fn remaining_rest(printed: &str, id: &str, granted: i64, granted_before: Instant) -> String {
    let head = format!("lease {id} granted with TTL({granted}s), remaining(");
    let tail = printed
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("not a timetolive line of {id}: {printed:?}"));
    let (remaining, rest) = tail
        .split_once("s)")
        .unwrap_or_else(|| panic!("no remaining seconds in {printed:?}"));
    let remaining: i64 = remaining.parse().expect("remaining seconds");
    let elapsed = granted_before.elapsed();
    let elapsed_secs_ceil =
        i64::try_from(elapsed.as_secs()).expect("seconds") + i64::from(elapsed.subsec_nanos() > 0);
    assert!(
        (granted - elapsed_secs_ceil..=granted).contains(&remaining),
        "remaining({remaining}s) of {granted}s, {elapsed:?} after the grant: {printed:?}"
    );
    rest.to_owned()
}

/// `lease grant N` prints the new id as 16 hex digits and the granted TTL, raised to the
/// 2 s minimum for 1; a TTL over 9e9 fails. The printed id is the lease the member holds.
#[tokio::test]
async fn lease_grant_prints_the_id_and_the_granted_ttl() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let id = granted_id(&ok_stdout(&member.etcdctl(&["lease", "grant", "10"])), 10);
    let raised = granted_id(&ok_stdout(&member.etcdctl(&["lease", "grant", "1"])), 2);
    assert_eq!(time_to_live(&mut lease, id, false).await.granted_ttl, 10);
    assert_eq!(time_to_live(&mut lease, raised, false).await.granted_ttl, 2);
    assert_fails_with(
        &member.etcdctl(&["lease", "grant", "9000000001"]),
        "Error: failed to grant lease (etcdserver: too large lease TTL)",
    );
}

/// `lease revoke ID` prints `lease <id> revoked` and deletes the attached keys; a second
/// revoke fails with NotFound's message.
#[tokio::test]
async fn lease_revoke_prints_revoked_and_fails_for_an_unknown_lease() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    grant(&mut lease, 60, 0x1234).await;
    assert_eq!(
        ok_stdout(&member.etcdctl(&["put", "--lease=1234", "a", "1"])),
        "OK\n"
    );
    assert_eq!(
        ok_stdout(&member.etcdctl(&["lease", "revoke", "1234"])),
        "lease 0000000000001234 revoked\n"
    );
    assert_eq!(ok_stdout(&member.etcdctl(&["get", "a"])), "");
    assert_fails_with(
        &member.etcdctl(&["lease", "revoke", "1234"]),
        "Error: failed to revoke lease (etcdserver: requested lease not found)",
    );
}

/// `put --lease` attaches keys; `lease timetolive` prints the granted and remaining TTL and,
/// with `--keys`, the attached keys; an unknown lease prints `already expired` and succeeds.
/// A put naming an unknown lease fails.
#[tokio::test]
async fn lease_timetolive_prints_remaining_ttl_and_keys() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let granted_before = Instant::now();
    grant(&mut lease, 100, 0xabc).await;
    for (key, value) in [("k1", "v1"), ("k2", "v2")] {
        assert_eq!(
            ok_stdout(&member.etcdctl(&["put", "--lease=abc", key, value])),
            "OK\n"
        );
    }
    let id = "0000000000000abc";
    let plain = ok_stdout(&member.etcdctl(&["lease", "timetolive", "abc"]));
    assert_eq!(remaining_rest(&plain, id, 100, granted_before), "\n");
    let with_keys = ok_stdout(&member.etcdctl(&["lease", "timetolive", "--keys", "abc"]));
    let rest = remaining_rest(&with_keys, id, 100, granted_before);
    // etcd 3.4 lists the keys in its hash map's order, so either order is etcd's.
    assert!(
        [", attached keys([k1 k2])\n", ", attached keys([k2 k1])\n"].contains(&rest.as_str()),
        "{with_keys:?}"
    );
    assert_eq!(
        ok_stdout(&member.etcdctl(&["lease", "timetolive", "1234"])),
        "lease 0000000000001234 already expired\n"
    );
    assert_fails_with(
        &member.etcdctl(&["put", "--lease=1234", "x", "y"]),
        "Error: etcdserver: requested lease not found",
    );
}

/// `lease list` prints the count and then every id, the lease that expires first first (as
/// etcd 3.4 sorts them), and `found 0 leases` when there is none.
#[tokio::test]
async fn lease_list_prints_the_count_and_the_ids_soonest_expiry_first() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    assert_eq!(
        ok_stdout(&member.etcdctl(&["lease", "list"])),
        "found 0 leases\n"
    );
    for (id, ttl) in [(5, 1000), (6, 500), (3, 700)] {
        grant(&mut lease, ttl, id).await;
    }
    assert_eq!(
        ok_stdout(&member.etcdctl(&["lease", "list"])),
        "found 3 leases\n0000000000000006\n0000000000000003\n0000000000000005\n"
    );
}

/// `lease keep-alive --once` renews once and prints the granted TTL; for an unknown lease it
/// fails with NotFound's message.
#[tokio::test]
async fn lease_keep_alive_once_prints_the_granted_ttl() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    grant(&mut lease, 60, 7).await;
    assert_eq!(
        ok_stdout(&member.etcdctl(&["lease", "keep-alive", "--once", "7"])),
        "lease 0000000000000007 keepalived with TTL(60)\n"
    );
    let output = member.etcdctl(&["lease", "keep-alive", "--once", "1234"]);
    assert_fails_with(&output, "Error: etcdserver: requested lease not found");
}

/// `lease keep-alive` prints `keepalived with TTL(N)` once per renewal until killed; when the
/// lease is revoked under it, it prints `expired or revoked.` and exits successfully, and it
/// does so at once for an unknown lease. The lease stays alive while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive_prints_each_renewal_until_killed_or_revoked() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    // 3 s renews every second; the 2 s minimum would renew too fast to tell rounds apart.
    grant(&mut lease, 3, 8).await;
    let renewed = "lease 0000000000000008 keepalived with TTL(3)";

    let running = EtcdctlChild::start(&member, &["lease", "keep-alive", "8"]);
    running.wait_for_lines(renewed, 5).await;
    let printed = running.finish();
    assert!(
        printed.lines().all(|line| line == renewed),
        "only renewals: {printed:?}"
    );
    assert_eq!(lease_ids(&mut lease).await, [8], "kept alive past its TTL");

    let running = EtcdctlChild::start(&member, &["lease", "keep-alive", "8"]);
    running.wait_for_lines(renewed, 1).await;
    revoke(&mut lease, 8).await;
    let (succeeded, printed) = running.wait_exit().await;
    assert!(succeeded, "exits successfully: {printed:?}");
    let (renewals, last) = printed
        .strip_suffix("lease 0000000000000008 expired or revoked.\n")
        .map(|renewals| (renewals, true))
        .unwrap_or((&printed, false));
    assert!(last, "ends with the revoke: {printed:?}");
    assert!(
        renewals.lines().all(|line| line == renewed),
        "renewals before it: {printed:?}"
    );

    let (succeeded, printed) = EtcdctlChild::start(&member, &["lease", "keep-alive", "1234"])
        .wait_exit()
        .await;
    assert!(succeeded);
    assert_eq!(printed, "lease 0000000000001234 expired or revoked.\n");
}
