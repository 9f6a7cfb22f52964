//! The backend quota and alarms (etcd-api.md §3.6, "Maintenance"): a member whose backend
//! reaches `--quota-backend-bytes` raises NOSPACE, after which every member refuses writes that
//! need space while reads and deletes go on; compaction, defragmentation and `alarm disarm`
//! restore writes. Maintenance.Alarm raises, lists and clears alarms directly too.
//!
//! Every test uses etcd's flags and etcd's outputs, so the module runs unchanged against etcd
//! 3.4 with `MNEMO_IT_SERVER=/usr/bin/etcd`. The quota is sized for both: a fresh member
//! (10 KiB in mnemo, 20 KiB in etcd) sits far below it, and a few dozen values fill it.

use std::collections::BTreeSet;
use std::time::Duration;

use mnemo::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest,
    PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest, alarm_request::AlarmAction,
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    request_op::Request,
};
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::cluster::{Cluster, ClusterOptions, LEADER_TIMEOUT, poll_until_or_dump};
use crate::support::{
    Member, READY_TIMEOUT, assert_fails_with, assert_status, http_get, ok_stdout, poll_until,
    testing_mnemo,
};

/// The quota the tests run with: 4 MiB, hundreds of times a fresh database, and reached by
/// about forty of the values below.
const QUOTA_BYTES: u64 = 4 * 1024 * 1024;
/// Size of each value written to fill the backend. Large values over few keys, so that
/// compacting away the old versions frees nearly everything.
const VALUE_BYTES: usize = 100 * 1024;
/// Keys the fill cycles over; what is left after compaction is this many values.
const FILL_KEYS: usize = 4;
/// Puts the fill may make before the test gives up on ever reaching the quota (about five
/// times the quota in values).
const FILL_PUTS_MAX: usize = 200;
/// etcd's refusal of a write that needs space.
const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
/// etcd's refusal of any write under a CORRUPT alarm.
const CORRUPT: &str = "etcdserver: corrupt cluster";
/// A member id no member has, for alarms raised by hand.
const OTHER_MEMBER: u64 = 12345;
/// How long a restarted member may take to answer again.
const RESTART_TIMEOUT: Duration = READY_TIMEOUT;
/// Deadline of one call on a healthy member.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `len` bytes that compress poorly (a splitmix64 stream), so the backend's compression
/// cannot hide them from the quota.
fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        bytes.extend_from_slice(&mixed.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn put_request(key: &str, value: impl Into<Vec<u8>>) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.into().into(),
        ..PutRequest::default()
    }
}

/// Puts large values through `kv` until one is refused; returns how many were accepted and
/// the refusal. Panics when none is refused within [`FILL_PUTS_MAX`].
async fn fill_until_refused(kv: &mut KvClient<Channel>) -> (usize, tonic::Status) {
    for put in 0..FILL_PUTS_MAX {
        let key = format!("fill/{}", put % FILL_KEYS);
        let value = incompressible(VALUE_BYTES, put as u64);
        if let Err(status) = kv.put(put_request(&key, value)).await {
            return (put, status);
        }
    }
    panic!("{FILL_PUTS_MAX} puts of {VALUE_BYTES} bytes never reached a {QUOTA_BYTES}-byte quota");
}

/// The member's Status over gRPC.
async fn status(
    maintenance: &mut MaintenanceClient<Channel>,
) -> mnemo::pb::etcdserverpb::StatusResponse {
    maintenance
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner()
}

/// The `errors` of the first endpoint in `etcdctl endpoint status -w json` (empty when absent).
fn printed_status_errors(output: &std::process::Output) -> Vec<String> {
    let printed: Value = serde_json::from_str(&ok_stdout(output)).expect("status JSON");
    printed[0]["Status"]["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|error| error.as_str().expect("error string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn alarm(
    maintenance: &mut MaintenanceClient<Channel>,
    action: AlarmAction,
    member_id: u64,
    alarm: AlarmType,
) -> BTreeSet<(u64, i32)> {
    let response = maintenance
        .alarm(AlarmRequest {
            action: action.into(),
            member_id,
            alarm: alarm.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("alarm {action:?} {member_id} {alarm:?}: {status:?}"))
        .into_inner();
    // etcd keeps alarms in a Go map, so their order is not part of the contract.
    response
        .alarms
        .iter()
        .map(|AlarmMember { member_id, alarm }| (*member_id, *alarm))
        .collect()
}

fn nospace(member: u64) -> (u64, i32) {
    (member, AlarmType::Nospace.into())
}

fn txn_with_put(key: &str) -> TxnRequest {
    TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put_request(key, "v"))),
        }],
        ..TxnRequest::default()
    }
}

fn txn_deleting(key: &str) -> TxnRequest {
    TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec().into(),
                ..DeleteRangeRequest::default()
            })),
        }],
        ..TxnRequest::default()
    }
}

#[tokio::test]
async fn reaching_the_quota_raises_nospace_until_compact_defrag_and_disarm() {
    let quota = format!("--quota-backend-bytes={QUOTA_BYTES}");
    let member = Member::start_with_flags("infra0", &[&quota]).await;
    let mut maintenance = member.maintenance().await;
    let fresh = status(&mut maintenance).await;
    let id = fresh.header.as_ref().expect("status header").member_id;
    assert!(
        u64::try_from(fresh.db_size).unwrap() < QUOTA_BYTES / 100,
        "a fresh member takes {} bytes, too close to the quota",
        fresh.db_size
    );

    // Phase 1: fill until the quota refuses a put with etcd's code and message.
    let mut kv = member.kv().await;
    let (accepted, refusal) = fill_until_refused(&mut kv).await;
    assert!(
        accepted >= FILL_KEYS,
        "only {accepted} puts fit under the quota"
    );
    assert_eq!(
        (refusal.code(), refusal.message()),
        (Code::ResourceExhausted, NO_SPACE)
    );
    let alarm_line = format!("memberID:{id} alarm:NOSPACE \n");
    assert_eq!(ok_stdout(&member.etcdctl(&["alarm", "list"])), alarm_line);
    let errors = printed_status_errors(&member.etcdctl(&["endpoint", "status", "-w", "json"]));
    assert_eq!(errors, vec![format!("memberID:{id} alarm:NOSPACE ")]);

    // Phase 2: writes that need space are refused, however small; reads and deletes work.
    assert_fails_with(
        &member.etcdctl(&["put", "x", "y"]),
        &format!("Error: {NO_SPACE}"),
    );
    assert_status(
        kv.txn(txn_with_put("x")).await,
        Code::ResourceExhausted,
        NO_SPACE,
    );
    let mut lease = LeaseClient::new(member.channel().await);
    assert_status(
        lease
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await,
        Code::ResourceExhausted,
        NO_SPACE,
    );
    assert_eq!(
        ok_stdout(&member.etcdctl(&["get", "fill/0", "--keys-only"])),
        "fill/0\n\n"
    );
    assert_eq!(ok_stdout(&member.etcdctl(&["del", "fill/3"])), "1\n");
    let deleted = kv
        .txn(txn_deleting("fill/2"))
        .await
        .expect("delete-only txn");
    assert!(deleted.into_inner().succeeded);

    // Phase 3: compaction and defragmentation free the space, but the alarm stays raised
    // until it is disarmed.
    let revision = kv
        .range(RangeRequest {
            key: b"fill/0".to_vec().into(),
            ..RangeRequest::default()
        })
        .await
        .expect("range")
        .into_inner()
        .header
        .expect("range header")
        .revision;
    assert_eq!(
        ok_stdout(&member.etcdctl(&["compaction", &revision.to_string(), "--physical"])),
        format!("compacted revision {revision}\n")
    );
    let defrag = ok_stdout(&member.etcdctl(&["defrag"]));
    assert!(
        defrag.starts_with("Finished defragmenting etcd member["),
        "{defrag}"
    );
    let defragmented = status(&mut maintenance).await;
    assert!(
        u64::try_from(defragmented.db_size).unwrap() < QUOTA_BYTES / 2,
        "{} bytes left after compaction and defragmentation",
        defragmented.db_size
    );
    assert_fails_with(
        &member.etcdctl(&["put", "x", "y"]),
        &format!("Error: {NO_SPACE}"),
    );

    // Phase 4: disarming prints the alarms it cleared, and writes work again.
    assert_eq!(ok_stdout(&member.etcdctl(&["alarm", "disarm"])), alarm_line);
    assert_eq!(ok_stdout(&member.etcdctl(&["alarm", "list"])), "");
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "x", "y"])), "OK\n");
    let errors = printed_status_errors(&member.etcdctl(&["endpoint", "status", "-w", "json"]));
    assert!(errors.is_empty(), "{errors:?}");
    lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("lease grant after disarm");
}

#[tokio::test]
async fn alarm_rpc_raises_lists_and_clears_as_etcd_does() {
    let member = Member::start().await;
    let mut maintenance = member.maintenance().await;
    let id = status(&mut maintenance)
        .await
        .header
        .expect("status header")
        .member_id;
    let none = AlarmType::None;
    let space = AlarmType::Nospace;
    assert!(
        alarm(&mut maintenance, AlarmAction::Get, 0, none)
            .await
            .is_empty()
    );

    // Activate answers with the alarm, also when it is already raised.
    for _ in 0..2 {
        let raised = alarm(&mut maintenance, AlarmAction::Activate, OTHER_MEMBER, space).await;
        assert_eq!(raised, BTreeSet::from([nospace(OTHER_MEMBER)]));
    }
    alarm(&mut maintenance, AlarmAction::Activate, id, space).await;
    let both = BTreeSet::from([nospace(OTHER_MEMBER), nospace(id)]);
    assert_eq!(
        alarm(&mut maintenance, AlarmAction::Get, 0, none).await,
        both
    );
    // GET filters by type only: the member id is not a filter.
    assert_eq!(
        alarm(&mut maintenance, AlarmAction::Get, OTHER_MEMBER, none).await,
        both
    );
    assert_eq!(
        alarm(&mut maintenance, AlarmAction::Get, 0, space).await,
        both
    );
    assert!(
        alarm(&mut maintenance, AlarmAction::Get, 0, AlarmType::Corrupt)
            .await
            .is_empty()
    );
    let errors: BTreeSet<String> = status(&mut maintenance).await.errors.into_iter().collect();
    assert_eq!(
        errors,
        BTreeSet::from([
            format!("memberID:{OTHER_MEMBER} alarm:NOSPACE "),
            format!("memberID:{id} alarm:NOSPACE "),
        ])
    );

    // /health fails while an alarm is raised (etcd 3.4 and later).
    let health = http_get(member.client_addr(), "/health")
        .await
        .expect("GET /health");
    assert_eq!(health.status, 503, "{health:?}");
    let body: Value = serde_json::from_str(&health.body_text()).expect("health JSON");
    assert_eq!(body["health"], "false", "{body}");
    if testing_mnemo() {
        // etcd 3.5's reason and `exclude` parameter; etcd 3.4 has neither.
        assert_eq!(body["reason"], "ALARM NOSPACE", "{body}");
        let excluded = http_get(member.client_addr(), "/health?exclude=NOSPACE")
            .await
            .expect("GET /health?exclude=NOSPACE");
        assert_eq!(excluded.status, 200, "{excluded:?}");
    }

    // A raised NOSPACE refuses a small put on a nearly empty member: apply decides, not size.
    let mut kv = member.kv().await;
    assert_status(
        kv.put(put_request("k", "v")).await,
        Code::ResourceExhausted,
        NO_SPACE,
    );
    kv.range(RangeRequest {
        key: b"k".to_vec().into(),
        ..RangeRequest::default()
    })
    .await
    .expect("range under NOSPACE");
    kv.compact(CompactionRequest {
        revision: 1,
        physical: false,
    })
    .await
    .expect("compaction under NOSPACE");

    // Deactivate answers with the alarm it cleared, and with nothing when none was raised.
    assert_eq!(
        alarm(
            &mut maintenance,
            AlarmAction::Deactivate,
            OTHER_MEMBER,
            space
        )
        .await,
        BTreeSet::from([nospace(OTHER_MEMBER)])
    );
    assert!(
        alarm(
            &mut maintenance,
            AlarmAction::Deactivate,
            OTHER_MEMBER,
            space
        )
        .await
        .is_empty()
    );
    assert!(
        alarm(
            &mut maintenance,
            AlarmAction::Deactivate,
            id,
            AlarmType::Corrupt
        )
        .await
        .is_empty()
    );
    // Another member's NOSPACE still refuses writes.
    assert_status(
        kv.put(put_request("k", "v")).await,
        Code::ResourceExhausted,
        NO_SPACE,
    );
    alarm(&mut maintenance, AlarmAction::Deactivate, id, space).await;
    kv.put(put_request("k", "v"))
        .await
        .expect("put after the last NOSPACE is cleared");
    assert!(status(&mut maintenance).await.errors.is_empty());
    let health = http_get(member.client_addr(), "/health")
        .await
        .expect("GET /health");
    assert_eq!(health.status, 200, "{health:?}");
}

/// Raised alarms are replicated state: they are still raised, and still refuse writes, after
/// the member restarts.
#[tokio::test]
async fn raised_alarms_survive_a_restart() {
    let mut member = Member::start().await;
    let mut maintenance = member.maintenance().await;
    alarm(
        &mut maintenance,
        AlarmAction::Activate,
        OTHER_MEMBER,
        AlarmType::Nospace,
    )
    .await;
    member.terminate().await;
    // `/health` stays unhealthy while the alarm is raised, so readiness is judged by the
    // alarm list answering instead.
    member.spawn();
    let listed = poll_until("the alarm list after a restart", RESTART_TIMEOUT, || {
        let output = member.etcdctl(&["alarm", "list"]);
        async move { output.status.success().then(|| ok_stdout(&output)) }
    })
    .await;
    assert_eq!(listed, format!("memberID:{OTHER_MEMBER} alarm:NOSPACE \n"));
    let mut kv = member.kv().await;
    assert_status(
        kv.put(put_request("k", "v")).await,
        Code::ResourceExhausted,
        NO_SPACE,
    );
}

/// etcd's quota flag values: a negative quota turns the quota off, and one above the 8 GiB
/// etcd suggests is kept, with a warning.
#[tokio::test]
async fn negative_quota_disables_it_and_a_huge_one_is_kept() {
    let member = Member::start_with_flags("infra0", &["--quota-backend-bytes", "-1"]).await;
    let mut kv = member.kv().await;
    kv.put(put_request("k", incompressible(VALUE_BYTES, 1)))
        .await
        .expect("put without a quota");
    drop(member);

    let huge = 10 * 1024 * 1024 * 1024_u64;
    let member =
        Member::start_with_flags("infra0", &[&format!("--quota-backend-bytes={huge}")]).await;
    let mut kv = member.kv().await;
    kv.put(put_request("k", "v")).await.expect("put");
    if testing_mnemo() {
        // dbSizeQuota is a 3.6 Status field, and the log line is mnemo's own.
        let mut maintenance = member.maintenance().await;
        let quota = status(&mut maintenance).await.db_size_quota;
        assert_eq!(u64::try_from(quota).unwrap(), huge);
        let log = member.log_text();
        assert!(
            log.contains("backend quota exceeds the suggested maximum"),
            "no warning about the quota in:\n{log}"
        );
    }
}

#[tokio::test]
async fn corrupt_alarm_refuses_every_write_with_data_loss() {
    let member = Member::start().await;
    let mut maintenance = member.maintenance().await;
    let mut kv = member.kv().await;
    kv.put(put_request("k", "v")).await.expect("put");
    alarm(
        &mut maintenance,
        AlarmAction::Activate,
        OTHER_MEMBER,
        AlarmType::Corrupt,
    )
    .await;
    assert_status(kv.put(put_request("k", "w")).await, Code::DataLoss, CORRUPT);
    assert_status(
        kv.delete_range(DeleteRangeRequest {
            key: b"k".to_vec().into(),
            ..DeleteRangeRequest::default()
        })
        .await,
        Code::DataLoss,
        CORRUPT,
    );
    assert_status(kv.txn(txn_deleting("k")).await, Code::DataLoss, CORRUPT);
    let read = kv
        .range(RangeRequest {
            key: b"k".to_vec().into(),
            ..RangeRequest::default()
        })
        .await
        .expect("range under CORRUPT")
        .into_inner();
    assert_eq!(read.kvs[0].value.as_ref(), b"v");
    assert_eq!(
        ok_stdout(&member.etcdctl(&["alarm", "list"])),
        format!("memberID:{OTHER_MEMBER} alarm:CORRUPT \n")
    );
    alarm(
        &mut maintenance,
        AlarmAction::Deactivate,
        OTHER_MEMBER,
        AlarmType::Corrupt,
    )
    .await;
    // Clearing it restores writes, in etcd 3.4 as in mnemo.
    kv.put(put_request("k", "w"))
        .await
        .expect("put after CORRUPT is cleared");
}

#[tokio::test]
async fn nospace_raised_by_one_member_refuses_writes_on_every_member_until_disarmed() {
    // Only member 0 has a small quota: the others refuse writes because of its alarm alone.
    let mut options = ClusterOptions::new(3);
    options.slot_args = vec![(0, vec![format!("--quota-backend-bytes={QUOTA_BYTES}")])];
    let cluster = Cluster::start_with(options).await;
    let id0 = cluster.id(0);

    let mut kv0 = cluster.kv(0, CALL_TIMEOUT);
    let (_, refusal) = fill_until_refused(&mut kv0).await;
    assert_eq!(
        (refusal.code(), refusal.message()),
        (Code::ResourceExhausted, NO_SPACE)
    );
    let alarm_line = format!("memberID:{id0} alarm:NOSPACE \n");
    for slot in 0..3 {
        assert_eq!(
            ok_stdout(&cluster.etcdctl(&[slot], &["alarm", "list"])),
            alarm_line,
            "alarm list on m{slot}"
        );
        assert_fails_with(
            &cluster.etcdctl(&[slot], &["put", "x", "y"]),
            &format!("Error: {NO_SPACE}"),
        );
        assert_eq!(
            ok_stdout(&cluster.etcdctl(&[slot], &["get", "fill/0", "--keys-only"])),
            "fill/0\n\n"
        );
    }

    // Free member 0's space, then disarm through another member.
    let revision = cluster
        .kv(1, CALL_TIMEOUT)
        .range(RangeRequest {
            key: b"fill/0".to_vec().into(),
            ..RangeRequest::default()
        })
        .await
        .expect("range")
        .into_inner()
        .header
        .expect("header")
        .revision;
    ok_stdout(&cluster.etcdctl(&[1], &["compaction", &revision.to_string(), "--physical"]));
    ok_stdout(&cluster.etcdctl(&[0], &["defrag"]));
    assert_eq!(
        ok_stdout(&cluster.etcdctl(&[2], &["alarm", "disarm"])),
        alarm_line
    );
    for slot in 0..3 {
        assert_eq!(
            ok_stdout(&cluster.etcdctl(&[slot], &["put", &format!("after/{slot}"), "y"])),
            "OK\n",
            "put through m{slot}"
        );
    }
    // Every member applied the disarm: none lists the alarm, serializable reads included.
    for slot in 0..3 {
        let what = format!("m{slot} without alarms in its status");
        poll_until_or_dump(&cluster, &what, LEADER_TIMEOUT, || async {
            let status = cluster.status(slot).await.ok()?;
            status.errors.is_empty().then_some(())
        })
        .await;
    }
}
