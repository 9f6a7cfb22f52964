//! Multi-member clusters of real processes: agreement on a leader, reads through every member,
//! leader failover under load, catch-up of a member that missed many writes, membership
//! changes, leadership transfer, and reads on members that are cut off or paused.
//!
//! Every test starts its own cluster (`support::cluster`) with etcd's flags, so the suite runs
//! unchanged against etcd 3.4 with `MNEMO_IT_SERVER=/usr/bin/etcd`; where etcd 3.4 behaves
//! differently from what mnemo promises (log lines), the test branches on `testing_mnemo()`
//! and says why.
//!
//! Linearizable reads follow etcd's API guarantees ("Linearizability" in etcd's
//! api_guarantees.md): a read that returns must see every write acknowledged before it was
//! sent. Serializable reads are served from the member's own state and may be stale.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::MoveLeaderRequest;
use serde_json::Value;
use tonic::Code;

use crate::support::cluster::{
    CATCH_UP_TIMEOUT, Cluster, ClusterOptions, ELECTION_TIMEOUT, LEADER_TIMEOUT, LoadOptions,
    WriteLoad, assert_acks_present, endpoint_status, member_name, poll_until_or_dump,
};
use crate::support::{assert_status, ok_stdout, stderr_of, testing_mnemo};

/// Deadline of one read or write a test makes on a healthy member.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a member may take to apply a write it was sent (serializable reads poll this).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on unavailability after the leader dies: writes are acknowledged again
/// within three election timeouts of the kill.
const FAILOVER_BOUND: Duration = ELECTION_TIMEOUT.saturating_mul(3);
/// How long a removed member may keep running.
const REMOVED_EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of the linearizable read on a member that cannot reach a quorum: long enough for
/// the member to answer with an error of its own, short enough to keep the test quick.
const CUT_OFF_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The line a removed member logs; mnemo promises it, and etcd 3.4's own line, "the member has
/// been permanently removed from the cluster", contains it too.
const REMOVED_LOG_TEXT: &str = "removed from the cluster";
/// etcdctl's own refusal of `move-leader` when none of its endpoints is the leader.
const NO_LEADER_ENDPOINT: &str = "no leader endpoint given at";
/// etcd's refusal to promote a learner that is behind the leader; promoting again later is
/// safe.
const LEARNER_NOT_IN_SYNC: &str = "can only promote a learner member which is in sync with leader";
/// The line mnemo logs when it installs a snapshot sent by the leader.
const MNEMO_SNAPSHOT_LOG_TEXT: &str = "installed snapshot";
/// etcd 3.4 logs no such line; a follower that received a snapshot from the leader logs
/// "finished applying incoming snapshot at index N" (etcdserver/server.go, applySnapshot).
const ETCD_SNAPSHOT_LOG_TEXT: &str = "finished applying incoming snapshot";

// Failover under load.
/// Time between two puts of the failover load (200 a second, whatever the cluster does), so
/// the first put the new leader can take is sent within this of its election.
const FAILOVER_SEND_INTERVAL: Duration = Duration::from_millis(5);
/// Deadline of one put of the failover load: puts forwarded to the dead leader wait this
/// long before they count as unknown.
const FAILOVER_PUT_TIMEOUT: Duration = Duration::from_secs(1);
/// Puts in flight at most: enough for every put of a whole put deadline, so puts stuck on the
/// dead leader never hold back new ones.
const FAILOVER_IN_FLIGHT_MAX: usize = 256;
const _: () = assert!(
    FAILOVER_IN_FLIGHT_MAX as u128
        >= FAILOVER_PUT_TIMEOUT.as_millis() / FAILOVER_SEND_INTERVAL.as_millis()
);
/// Upper bound of the failover load's puts.
const FAILOVER_PUTS_MAX: u64 = 20_000;
/// Upper bound of the failover load's duration.
const FAILOVER_LOAD_DURATION: Duration = Duration::from_secs(90);
/// Acknowledged puts before the kill, and again after it before the load stops.
const FAILOVER_ACKS_EACH_SIDE: u64 = 300;
/// How long the load may take to gather those acknowledgements.
const FAILOVER_ACKS_TIMEOUT: Duration = Duration::from_secs(30);

// Catch-up after many writes.
/// `--snapshot-count` of the catch-up test: small, so the leader compacts its log far past
/// the stopped member and must send it a snapshot.
const CATCH_UP_SNAPSHOT_COUNT: u64 = 1_000;
/// Puts made while the member is stopped (the number).
const CATCH_UP_PUTS: u64 = 50_000;
/// Puts in flight at once, sent as fast as the cluster takes them.
const CATCH_UP_IN_FLIGHT_MAX: usize = 64;
/// The whole load must finish within this.
const CATCH_UP_LOAD_DEADLINE: Duration = Duration::from_secs(240);
/// Deadline of one put of that load; a healthy majority answers far sooner.
const CATCH_UP_PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The value of `key` through `slot` from the first linearizable read that succeeds.
///
/// A linearizable read may fail while the cluster changes leader (`etcdserver: leader
/// changed`, which a slow, shared machine provokes now and then); such failures are retried
/// for up to [`LEADER_TIMEOUT`]. What a read that succeeds returns is never retried away.
async fn linearizable_get(cluster: &Cluster, slot: usize, key: &str) -> Option<String> {
    let what = format!(
        "a linearizable read of {key} on {} to succeed",
        member_name(slot)
    );
    poll_until_or_dump(cluster, &what, LEADER_TIMEOUT, || async move {
        cluster.get(slot, key, false, CALL_TIMEOUT).await.ok()
    })
    .await
}

/// `member list -w json` through `slots`: (id, name, is learner) of every member.
fn member_list(cluster: &Cluster, slots: &[usize]) -> Vec<(u64, String, bool)> {
    let output = cluster.etcdctl(slots, &["member", "list", "-w", "json"]);
    let printed: Value = serde_json::from_str(&ok_stdout(&output)).expect("member list JSON");
    printed["members"]
        .as_array()
        .expect("member list has members")
        .iter()
        .map(|member| {
            (
                member["ID"].as_u64().expect("member ID"),
                member["name"].as_str().unwrap_or_default().to_owned(),
                member["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The first `member list` through `slots` that satisfies `wanted`, polled for up to
/// [`CATCH_UP_TIMEOUT`]. A member announces its name on its own once it has started (etcd's
/// publish), so a list read right after it caught up may still show it unnamed.
async fn wait_member_list(
    cluster: &Cluster,
    slots: &[usize],
    what: &str,
    wanted: impl Fn(&[(u64, String, bool)]) -> bool,
) -> Vec<(u64, String, bool)> {
    let wanted = &wanted;
    poll_until_or_dump(cluster, what, CATCH_UP_TIMEOUT, || async move {
        let listed = member_list(cluster, slots);
        wanted(&listed).then_some(listed)
    })
    .await
}

/// A put through every one of `slots`, each read back linearizably through all of them.
async fn assert_cluster_works(cluster: &Cluster, slots: &[usize], tag: &str) {
    for &writer in slots {
        let key = format!("works/{tag}/via-{}", member_name(writer));
        let value = format!("{tag}-{writer}");
        cluster
            .put_eventually(writer, &key, &value, LEADER_TIMEOUT)
            .await;
        for &reader in slots {
            assert_eq!(
                linearizable_get(cluster, reader, &key).await.as_deref(),
                Some(value.as_str()),
                "{} does not see {key} written through {}",
                member_name(reader),
                member_name(writer)
            );
        }
    }
}

/// Waits until the member in `slot`, just removed, stops serving: for mnemo it must exit with
/// a failure code; for both, its log must say it was removed.
async fn assert_removed_member_stops(cluster: &mut Cluster, slot: usize) {
    let exit = cluster.wait_exit(slot, REMOVED_EXIT_TIMEOUT).await;
    let Some(status) = exit else {
        panic!(
            "{} still runs {REMOVED_EXIT_TIMEOUT:?} after its removal\n{}",
            member_name(slot),
            cluster.log_tails()
        );
    };
    eprintln!("removed {} exited with {status}", member_name(slot));
    // mnemo promises a failure code; etcd 3.4 exits 0 once it learns it was removed.
    if testing_mnemo() {
        assert!(
            !status.success(),
            "a removed member exits with a failure code, got {status}"
        );
    }
    assert!(
        cluster.member(slot).log_text().contains(REMOVED_LOG_TEXT),
        "{}'s log does not say {REMOVED_LOG_TEXT:?}\n{}",
        member_name(slot),
        cluster.member(slot).log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_agree_on_one_leader_and_every_member_serves_every_write() {
    let cluster = Cluster::start(3).await;
    let all = [0, 1, 2];
    let ids: BTreeSet<u64> = all.iter().map(|&slot| cluster.id(slot)).collect();
    assert_eq!(ids.len(), 3, "three distinct member ids");

    // etcdctl's own view: one leader that all agree on, and the same raft index everywhere
    // once the cluster is idle.
    let cluster_ref = &cluster;
    let ids_ref = &ids;
    poll_until_or_dump(
        &cluster,
        "endpoint status to show one leader and equal raft indexes",
        LEADER_TIMEOUT,
        || async move {
            let statuses = endpoint_status(cluster_ref, &all);
            assert_eq!(statuses.len(), 3, "one status per endpoint: {statuses:?}");
            let members: BTreeSet<u64> = statuses.iter().map(|status| status.0).collect();
            assert_eq!(&members, ids_ref, "endpoint status names the members");
            let leaders: BTreeSet<u64> = statuses.iter().map(|status| status.1).collect();
            let indexes: BTreeSet<u64> = statuses.iter().map(|status| status.2).collect();
            let applied: BTreeSet<u64> = statuses.iter().map(|status| status.3).collect();
            let one_leader = leaders.len() == 1 && ids_ref.contains(leaders.first()?);
            (one_leader && indexes.len() == 1 && applied == indexes).then_some(())
        },
    )
    .await;

    let members = member_list(&cluster, &all);
    let mut names: Vec<(u64, String, bool)> = members;
    names.sort_by(|a, b| a.1.cmp(&b.1));
    let expected: Vec<(u64, String, bool)> = all
        .iter()
        .map(|&slot| (cluster.id(slot), member_name(slot), false))
        .collect();
    assert_eq!(
        names, expected,
        "member list shows the three voters by name"
    );

    for writer in all {
        let key = format!("everywhere/via-{}", member_name(writer));
        let value = format!("written through {}", member_name(writer));
        cluster
            .put_eventually(writer, &key, &value, LEADER_TIMEOUT)
            .await;
        // Linearizable: any read through any member that succeeds sees the acknowledged put.
        for reader in all {
            assert_eq!(
                linearizable_get(&cluster, reader, &key).await.as_deref(),
                Some(value.as_str()),
                "linearizable read of {key} on {}",
                member_name(reader)
            );
        }
        // Serializable: every member applies it eventually.
        for reader in all {
            cluster
                .wait_value(reader, &key, &value, REPLICATION_TIMEOUT)
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_under_load_loses_no_acknowledged_put() {
    let mut cluster = Cluster::start(3).await;
    let all = [0, 1, 2];
    let leader = cluster.wait_leader(&all).await;
    let survivors: Vec<usize> = all.into_iter().filter(|&slot| slot != leader).collect();
    let prefix = "failover";
    let load = WriteLoad::start(
        &cluster,
        &all,
        &LoadOptions {
            in_flight_max: FAILOVER_IN_FLIGHT_MAX,
            send_interval: FAILOVER_SEND_INTERVAL,
            puts_max: FAILOVER_PUTS_MAX,
            duration_max: FAILOVER_LOAD_DURATION,
            put_timeout: FAILOVER_PUT_TIMEOUT,
            prefix: prefix.into(),
        },
    );
    let load_ref = &load;
    poll_until_or_dump(
        &cluster,
        "acknowledged puts before the kill",
        FAILOVER_ACKS_TIMEOUT,
        || async move { (load_ref.acked() >= FAILOVER_ACKS_EACH_SIDE).then_some(()) },
    )
    .await;

    let acked_before_kill = load.acked();
    let killed_at = Instant::now();
    cluster.kill9(leader);
    let new_leader = cluster.wait_leader(&survivors).await;
    eprintln!(
        "killed leader {}, new leader {} after {:?}",
        member_name(leader),
        member_name(new_leader),
        killed_at.elapsed()
    );
    poll_until_or_dump(
        &cluster,
        "acknowledged puts after the kill",
        FAILOVER_ACKS_TIMEOUT,
        || async move {
            let enough = load_ref.acked() >= acked_before_kill + FAILOVER_ACKS_EACH_SIDE;
            assert!(
                enough || !load_ref.finished(),
                "the load ran out with {} puts sent",
                load_ref.sent()
            );
            enough.then_some(())
        },
    )
    .await;
    let report = load.stop().await;

    // Measured from the kill to the acknowledgement of the first put *sent* after it: a put
    // sent before the kill may have been committed by the old leader already.
    let resumed_after = report
        .acks
        .iter()
        .filter(|ack| ack.sent >= killed_at)
        .map(|ack| ack.acked - killed_at)
        .min()
        .expect("puts were acknowledged after the kill");
    eprintln!(
        "failover: first put sent after kill -9 acknowledged {resumed_after:?} after it; {} acks, {} failed or unknown puts",
        report.acks.len(),
        report.errors.len()
    );
    assert!(
        resumed_after <= FAILOVER_BOUND,
        "writes resumed {resumed_after:?} after the leader was killed, over {FAILOVER_BOUND:?}\n{}",
        cluster.log_tails()
    );

    for &slot in &survivors {
        assert_acks_present(&cluster, slot, prefix, &report.acks).await;
    }

    cluster.restart(leader).await;
    let revision = cluster.assert_converged(&all).await;
    eprintln!("all three members hold the same store at revision {revision}");
    assert_acks_present(&cluster, leader, prefix, &report.acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_stopped_through_50k_writes_catches_up_by_snapshot() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        snapshot_count: CATCH_UP_SNAPSHOT_COUNT,
        ..ClusterOptions::new(3)
    })
    .await;
    let all = [0, 1, 2];
    let leader = cluster.wait_leader(&all).await;
    let stopped = (leader + 1) % all.len();
    let running: Vec<usize> = all.into_iter().filter(|&slot| slot != stopped).collect();
    let status = cluster.terminate(stopped).await;
    eprintln!("stopped {} with SIGTERM: {status}", member_name(stopped));

    let prefix = "catch-up";
    let started = Instant::now();
    let load = WriteLoad::start(
        &cluster,
        &running,
        &LoadOptions {
            in_flight_max: CATCH_UP_IN_FLIGHT_MAX,
            send_interval: Duration::ZERO,
            puts_max: CATCH_UP_PUTS,
            duration_max: CATCH_UP_LOAD_DEADLINE,
            put_timeout: CATCH_UP_PUT_TIMEOUT,
            prefix: prefix.into(),
        },
    );
    let load_ref = &load;
    poll_until_or_dump(
        &cluster,
        "the 50k puts to finish",
        CATCH_UP_LOAD_DEADLINE + CATCH_UP_PUT_TIMEOUT,
        || async move { load_ref.finished().then_some(()) },
    )
    .await;
    let report = load.stop().await;
    eprintln!(
        "catch-up: {} puts acknowledged in {:?} with one member down",
        report.acks.len(),
        started.elapsed()
    );
    assert!(
        report.errors.is_empty(),
        "{} puts failed on a healthy majority; first ones: {:#?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    assert_eq!(
        report.acks.len() as u64,
        CATCH_UP_PUTS,
        "not every put was acknowledged within {CATCH_UP_LOAD_DEADLINE:?}"
    );

    let restarted_at = Instant::now();
    cluster.restart(stopped).await;
    let revision = cluster.assert_converged(&all).await;
    eprintln!(
        "catch-up: {} equal to the others at revision {revision} {:?} after restart",
        member_name(stopped),
        restarted_at.elapsed()
    );
    assert_acks_present(&cluster, stopped, prefix, &report.acks).await;

    // The leader's log no longer reached back to where the stopped member was, so it can only
    // have caught up from a snapshot; each server says so in its own words.
    let snapshot_line = if testing_mnemo() {
        MNEMO_SNAPSHOT_LOG_TEXT
    } else {
        ETCD_SNAPSHOT_LOG_TEXT
    };
    assert!(
        cluster.member(stopped).log_text().contains(snapshot_line),
        "{} caught up without logging {snapshot_line:?}\n{}",
        member_name(stopped),
        cluster.member(stopped).log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_added_catches_up_and_is_promoted() {
    let mut cluster = Cluster::start(3).await;
    let voters = [0, 1, 2];
    cluster.wait_leader(&voters).await;
    let recent = "join/recent";
    for round in 0..10 {
        let slot = voters[round % voters.len()];
        cluster
            .put_eventually(slot, recent, &format!("v{round}"), LEADER_TIMEOUT)
            .await;
    }

    let learner = cluster.add_member(true).await;
    let listed = member_list(&cluster, &voters);
    let added = listed
        .iter()
        .find(|member| member.0 == cluster.id(learner))
        .unwrap_or_else(|| panic!("member list lacks the learner: {listed:?}"));
    assert!(added.2, "the added member is a learner: {listed:?}");

    cluster.start_added(learner).await;
    // A learner serves serializable reads from its own state only; seeing the latest value
    // proves it received the log (or a snapshot) from the leader.
    cluster
        .wait_value(learner, recent, "v9", CATCH_UP_TIMEOUT)
        .await;

    let hex = cluster.hex_id(learner);
    let promoted = cluster
        .reconfigure(
            &voters,
            &["member", "promote", &hex],
            &[LEARNER_NOT_IN_SYNC],
        )
        .await;
    assert!(
        // etcdctl pads member ids to 16 characters with spaces here ("%16x").
        promoted.contains(&format!("Member {:16x} promoted", cluster.id(learner))),
        "unexpected promote output: {promoted}"
    );
    let (learner_id, learner_name) = (cluster.id(learner), member_name(learner));
    wait_member_list(
        &cluster,
        &voters,
        "the promoted member to be listed as a named voter",
        |listed| {
            listed
                .iter()
                .any(|member| member.0 == learner_id && member.1 == learner_name && !member.2)
        },
    )
    .await;

    let everyone = [0, 1, 2, learner];
    cluster.wait_leader(&everyone).await;
    assert_cluster_works(&cluster, &everyone, "after-promote").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voter_added_joins_and_serves() {
    let mut cluster = Cluster::start(3).await;
    let founders = [0, 1, 2];
    cluster.wait_leader(&founders).await;
    cluster
        .put_eventually(0, "join/before", "old", LEADER_TIMEOUT)
        .await;

    let voter = cluster.add_member(false).await;
    cluster.start_added(voter).await;
    let everyone = [0, 1, 2, voter];
    cluster.wait_leader(&everyone).await;
    cluster
        .wait_value(voter, "join/before", "old", CATCH_UP_TIMEOUT)
        .await;
    let expected: Vec<(u64, String, bool)> = everyone
        .iter()
        .map(|&slot| (cluster.id(slot), member_name(slot), false))
        .collect();
    wait_member_list(&cluster, &everyone, "four named voters", |listed| {
        let mut shown = listed.to_vec();
        shown.sort_by(|a, b| a.1.cmp(&b.1));
        shown == expected
    })
    .await;
    assert_cluster_works(&cluster, &everyone, "after-join").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_follower_then_the_leader_leaves_a_working_cluster() {
    // Four members, so that two remain at the end and writes still need replication.
    let mut cluster = Cluster::start(4).await;
    let leader = cluster.wait_leader(&[0, 1, 2, 3]).await;
    let follower = (leader + 1) % 4;

    cluster.remove_member(follower).await;
    assert_removed_member_stops(&mut cluster, follower).await;
    let remaining = cluster.running();
    assert_eq!(remaining.len(), 3);
    cluster.wait_leader(&remaining).await;
    assert_cluster_works(&cluster, &remaining, "without-follower").await;
    let listed = member_list(&cluster, &remaining);
    assert!(
        listed.iter().all(|member| member.0 != cluster.id(follower)),
        "member list still shows the removed follower: {listed:?}"
    );

    let leader = cluster.wait_leader(&remaining).await;
    cluster.remove_member(leader).await;
    assert_removed_member_stops(&mut cluster, leader).await;
    let remaining = cluster.running();
    assert_eq!(remaining.len(), 2);
    cluster.wait_leader(&remaining).await;
    assert_cluster_works(&cluster, &remaining, "without-leader").await;
    let listed = member_list(&cluster, &remaining);
    let ids: BTreeSet<u64> = listed.iter().map(|member| member.0).collect();
    let expected: BTreeSet<u64> = remaining.iter().map(|&slot| cluster.id(slot)).collect();
    assert_eq!(
        ids, expected,
        "member list shows exactly the two remaining members"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_moves_leadership_and_a_follower_refuses_it() {
    let cluster = Cluster::start(3).await;
    let all = [0, 1, 2];
    // Sent to the leader it finds; tried again only if leadership moved on its own in between
    // (then etcdctl, given a follower, finds no leader among its endpoints).
    let cluster_ref = &cluster;
    let (leader, printed) = poll_until_or_dump(
        &cluster,
        "move-leader through the leader to succeed",
        LEADER_TIMEOUT,
        || async move {
            let leader = cluster_ref.wait_leader(&all).await;
            let target = cluster_ref.hex_id((leader + 1) % 3);
            let output = cluster_ref.etcdctl(&[leader], &["move-leader", &target]);
            if !output.status.success() && stderr_of(&output).contains(NO_LEADER_ENDPOINT) {
                return None;
            }
            Some((leader, ok_stdout(&output)))
        },
    )
    .await;
    let target = (leader + 1) % 3;
    let bystander = (leader + 2) % 3;
    assert_eq!(
        printed.trim_end(),
        format!(
            "Leadership transferred from {} to {}",
            cluster.hex_id(leader),
            cluster.hex_id(target)
        )
    );
    let target_id = cluster.id(target);
    poll_until_or_dump(
        &cluster,
        "endpoint status to show the new leader",
        LEADER_TIMEOUT,
        || async move {
            let statuses = endpoint_status(cluster_ref, &all);
            statuses
                .iter()
                .all(|status| status.1 == target_id)
                .then_some(())
        },
    )
    .await;

    // Sent to a follower (the old leader is one now), the RPC is refused.
    let refused = cluster
        .maintenance(leader, CALL_TIMEOUT)
        .move_leader(MoveLeaderRequest {
            target_id: cluster.id(bystander),
        })
        .await;
    assert_status(refused, Code::FailedPrecondition, "etcdserver: not leader");

    // etcdctl looks for the leader among the endpoints it is given (Maintenance.Status) and,
    // given only followers, fails on its own without sending MoveLeader.
    let output = cluster.etcdctl(
        &[leader, bystander],
        &["move-leader", &cluster.hex_id(bystander)],
    );
    assert!(
        !output.status.success(),
        "move-leader through followers succeeded"
    );
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(NO_LEADER_ENDPOINT),
        "unexpected etcdctl error: {stderr}"
    );
    assert_eq!(
        cluster.wait_leader(&all).await,
        target,
        "leadership stayed put"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_never_serves_a_stale_linearizable_read() {
    let cluster = Cluster::start(3).await;
    let all = [0, 1, 2];
    let leader = cluster.wait_leader(&all).await;
    let cut = (leader + 1) % 3;
    let key = "partition/register";
    cluster
        .put_eventually(leader, key, "old", LEADER_TIMEOUT)
        .await;
    for slot in all {
        cluster
            .wait_value(slot, key, "old", REPLICATION_TIMEOUT)
            .await;
    }

    cluster.isolate(cut).await;
    // The leader and the other follower are a majority; the write commits without `cut`.
    cluster
        .put_eventually(leader, key, "new", LEADER_TIMEOUT)
        .await;

    match cluster.get(cut, key, false, CUT_OFF_READ_TIMEOUT).await {
        Err(status) => {
            eprintln!("linearizable read on the cut-off member failed, as allowed: {status:?}")
        }
        Ok(value) => assert_eq!(
            value.as_deref(),
            Some("new"),
            "a cut-off member answered a linearizable read with stale data"
        ),
    }
    // A serializable read is answered from the member's own state, which cannot have heard of
    // the new value: this stale answer is what serializable reads allow.
    let stale = cluster
        .get(cut, key, true, CALL_TIMEOUT)
        .await
        .unwrap_or_else(|status| panic!("serializable read on the cut-off member: {status:?}"));
    assert_eq!(
        stale.as_deref(),
        Some("old"),
        "serializable read on the cut-off member"
    );

    cluster.heal(cut);
    cluster.wait_value(cut, key, "new", LEADER_TIMEOUT).await;
    let cluster_ref = &cluster;
    poll_until_or_dump(
        &cluster,
        "a linearizable read on the healed member",
        LEADER_TIMEOUT,
        || async move {
            let value = cluster_ref.get(cut, key, false, CALL_TIMEOUT).await.ok()?;
            assert_eq!(
                value.as_deref(),
                Some("new"),
                "stale linearizable read after healing"
            );
            Some(())
        },
    )
    .await;
    cluster.wait_leader(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_leader_never_serves_a_stale_linearizable_read() {
    let cluster = Cluster::start(3).await;
    let all = [0, 1, 2];
    let old_leader = cluster.wait_leader(&all).await;
    let others: Vec<usize> = all.into_iter().filter(|&slot| slot != old_leader).collect();
    let key = "pause/register";
    cluster
        .put_eventually(old_leader, key, "old", LEADER_TIMEOUT)
        .await;
    for slot in all {
        cluster
            .wait_value(slot, key, "old", REPLICATION_TIMEOUT)
            .await;
    }
    // Connected before the pause, so the read below is written into the paused member's socket
    // and is the first thing it handles when it resumes.
    let mut kv = cluster.kv(old_leader, CUT_OFF_READ_TIMEOUT);
    kv.range(mnemo::pb::etcdserverpb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        serializable: true,
        ..Default::default()
    })
    .await
    .expect("a read on the leader before it is paused");

    cluster.sigstop(old_leader);
    let new_leader = cluster.wait_leader(&others).await;
    cluster
        .put_eventually(new_leader, key, "new", LEADER_TIMEOUT)
        .await;

    let read = tokio::spawn(async move {
        kv.range(mnemo::pb::etcdserverpb::RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
    });
    tokio::task::yield_now().await;
    cluster.sigcont(old_leader);
    let answered = read.await.expect("read task");
    let right_after = cluster
        .get(old_leader, key, false, CUT_OFF_READ_TIMEOUT)
        .await;
    for (when, result) in [
        (
            "sent while paused",
            answered.map(|response| {
                response
                    .into_inner()
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            }),
        ),
        ("sent right after SIGCONT", right_after),
    ] {
        match result {
            Err(status) => eprintln!(
                "linearizable read {when} on the old leader failed, as allowed: {status:?}"
            ),
            Ok(value) => assert_eq!(
                value.as_deref(),
                Some("new"),
                "the old leader answered a linearizable read {when} with stale data"
            ),
        }
    }

    let cluster_ref = &cluster;
    poll_until_or_dump(
        &cluster,
        "a linearizable read on the resumed old leader",
        LEADER_TIMEOUT,
        || async move {
            let value = cluster_ref
                .get(old_leader, key, false, CALL_TIMEOUT)
                .await
                .ok()?;
            assert_eq!(
                value.as_deref(),
                Some("new"),
                "stale linearizable read after resuming"
            );
            Some(())
        },
    )
    .await;
    cluster.wait_leader(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_survive_two_killed_including_the_leader() {
    let mut cluster = Cluster::start(5).await;
    let all = [0, 1, 2, 3, 4];
    let leader = cluster.wait_leader(&all).await;
    let follower = (leader + 1) % 5;
    let killed_at = Instant::now();
    let leader_status = cluster.kill9(leader);
    let follower_status = cluster.kill9(follower);
    assert_eq!(leader_status.signal(), Some(9));
    assert_eq!(follower_status.signal(), Some(9));

    let remaining = cluster.running();
    assert_eq!(remaining.len(), 3);
    let new_leader = cluster.wait_leader(&remaining).await;
    eprintln!(
        "five members, two killed: {} leads {:?} after the kills",
        member_name(new_leader),
        killed_at.elapsed()
    );
    assert_cluster_works(&cluster, &remaining, "two-down").await;
}

/// Members started with different `--initial-cluster-token`s belong to different clusters,
/// even with the same `--initial-cluster`: each refuses the other's peer messages, says so
/// in its log, and neither ever gets a leader (each alone is no quorum of two).
#[tokio::test]
async fn members_of_another_cluster_are_refused_and_logged() {
    use crate::support::{ClusterFlags, Member, poll_until};

    let timing = vec![
        "--heartbeat-interval".to_owned(),
        "50".to_owned(),
        "--election-timeout".to_owned(),
        "500".to_owned(),
    ];
    let mut members = [Member::unstarted("a", None), Member::unstarted("b", None)];
    while !members.iter_mut().all(Member::pick_ports) {}
    let initial_cluster = format!("a={},b={}", members[0].peer_url(), members[1].peer_url());
    for (member, token) in members.iter_mut().zip(["token-one", "token-two"]) {
        let flags = ClusterFlags {
            advertise_peer_url: member.peer_url(),
            initial_cluster: initial_cluster.clone(),
            state: "new",
            token: token.to_owned(),
            extra_args: timing.clone(),
        };
        member.set_cluster(flags);
        member.spawn();
    }
    // Both sides log the refusal (mnemo: "cluster ID mismatch: member .. is in cluster ..";
    // etcd: "request cluster ID mismatch").
    for member in &members {
        poll_until(
            "a log line about the other cluster's messages",
            Duration::from_secs(20),
            || async {
                member
                    .log_text()
                    .contains("cluster ID mismatch")
                    .then_some(())
            },
        )
        .await;
    }
    // Several election timeouts later neither member has a leader: mnemo answers /health
    // with false at once. etcd 3.4 does not serve its client port at all until it has
    // published itself through a leader, so there is nothing to ask it.
    tokio::time::sleep(ELECTION_TIMEOUT * 4).await;
    if !testing_mnemo() {
        return;
    }
    for member in &members {
        let body = poll_until(
            "an answer from /health",
            Duration::from_secs(20),
            || async {
                crate::support::http_get(member.client_addr(), "/health")
                    .await
                    .ok()
                    .map(|response| response.body_text())
            },
        )
        .await;
        let health: Value = serde_json::from_str(&body).expect("/health answers JSON");
        assert_eq!(
            health["health"],
            "false",
            "{} has a leader: {body}",
            member.name()
        );
    }
}

/// A member that lost its quorum refuses at once a client that sent `hasleader: true`, with
/// etcd's "no leader", instead of making it wait for a leader that will not come.
#[tokio::test]
async fn hasleader_requests_fail_at_once_without_a_leader() {
    use mnemo::pb::etcdserverpb::PutRequest;

    /// A refusal slower than this would mean the member waited for a leader.
    const PROMPT: Duration = Duration::from_secs(1);

    let mut cluster = Cluster::start(3).await;
    cluster.kill9(1);
    cluster.kill9(2);
    let survivor = 0;
    let kv = cluster.kv(survivor, CALL_TIMEOUT);
    // Once the survivor has noticed it cannot reach a quorum, every such request is refused
    // promptly; before that it may still count itself led.
    let refusal = poll_until_or_dump(
        &cluster,
        "a prompt no-leader refusal",
        LEADER_TIMEOUT,
        || {
            let mut kv = kv.clone();
            async move {
                let mut request = tonic::Request::new(PutRequest {
                    key: b"needs-a-leader".to_vec().into(),
                    value: b"v".to_vec().into(),
                    ..PutRequest::default()
                });
                request
                    .metadata_mut()
                    .insert("hasleader", "true".parse().expect("ascii metadata"));
                let started = Instant::now();
                // Until it gives up on the dead leader the survivor may also fail fast for
                // other reasons (a forward to the dead leader reports "leader changed"); only
                // the no-leader refusal ends the wait.
                match kv.put(request).await {
                    Err(status)
                        if started.elapsed() < PROMPT
                            && status.message() == "etcdserver: no leader" =>
                    {
                        Some(status)
                    }
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_status(
        Err::<(), _>(refusal),
        Code::Unavailable,
        "etcdserver: no leader",
    );
    // The refusal did not write anything: the key is absent once a quorum is back.
    cluster.restart(1).await;
    let value = poll_until_or_dump(
        &cluster,
        "a linearizable read with a quorum",
        LEADER_TIMEOUT,
        || async {
            cluster
                .get(survivor, "needs-a-leader", false, CALL_TIMEOUT)
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(value, None);
}
