//! The Lock and Election services and the client-side recipes: mutual exclusion under
//! contention, hand-over on unlock and on lease revoke, leadership, proclaim, observe and
//! resign, with etcd's errors. Runs unchanged against etcd 3.4 (`MNEMO_IT_SERVER`).

use std::time::Duration;

use futures::StreamExt;
use mnemo::client::{ClientError, EtcdError, GrpcClient, KvClient, LeaseKeeper, concurrency};
use mnemo::pb::etcdserverpb::{LeaseGrantRequest, lease_client::LeaseClient};
use mnemo::pb::v3electionpb::{
    CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest, election_client::ElectionClient,
};
use mnemo::pb::v3lockpb::{LockRequest, UnlockRequest, lock_client::LockClient};
use tonic::Code;

use crate::support::Member;

/// Longest a test waits for a call that should complete.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a blocked call is watched to make sure it stays blocked.
const STILL_BLOCKED: Duration = Duration::from_millis(700);

async fn grant(member: &Member, ttl: i64) -> i64 {
    LeaseClient::new(member.channel().await)
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_hands_over_on_unlock_and_on_lease_revoke() {
    let member = Member::start().await;
    let channel = member.channel().await;
    let (first_lease, second_lease, third_lease) = (
        grant(&member, 60).await,
        grant(&member, 60).await,
        grant(&member, 60).await,
    );
    let mut lock = LockClient::new(channel.clone());
    let first = tokio::time::timeout(
        CALL_TIMEOUT,
        lock.lock(LockRequest {
            name: b"job".to_vec().into(),
            lease: first_lease,
        }),
    )
    .await
    .expect("uncontended lock in time")
    .expect("lock")
    .into_inner();
    assert_eq!(
        first.key,
        format!("job/{first_lease:x}").into_bytes(),
        "the key is <name>/<lease in hex>"
    );
    let mut waiting_lock = LockClient::new(channel.clone());
    let mut second = tokio::spawn(async move {
        waiting_lock
            .lock(LockRequest {
                name: b"job".to_vec().into(),
                lease: second_lease,
            })
            .await
    });
    assert!(
        tokio::time::timeout(STILL_BLOCKED, &mut second)
            .await
            .is_err(),
        "the second contender must wait"
    );
    lock.unlock(UnlockRequest { key: first.key })
        .await
        .expect("unlock");
    let second = tokio::time::timeout(CALL_TIMEOUT, second)
        .await
        .expect("the waiter gets the lock after unlock")
        .expect("task")
        .expect("lock")
        .into_inner();
    assert_eq!(second.key, format!("job/{second_lease:x}").into_bytes());

    // The holder's lease is revoked: its key goes, and the next contender gets the lock.
    let mut waiting_lock = LockClient::new(channel.clone());
    let third = tokio::spawn(async move {
        waiting_lock
            .lock(LockRequest {
                name: b"job".to_vec().into(),
                lease: third_lease,
            })
            .await
    });
    LeaseClient::new(channel.clone())
        .lease_revoke(mnemo::pb::etcdserverpb::LeaseRevokeRequest { id: second_lease })
        .await
        .expect("revoke");
    let third = tokio::time::timeout(CALL_TIMEOUT, third)
        .await
        .expect("the waiter gets the lock after the holder's lease is revoked")
        .expect("task")
        .expect("lock")
        .into_inner();
    assert_eq!(third.key, format!("job/{third_lease:x}").into_bytes());

    // An unknown lease is refused with etcd's error.
    let refused = lock
        .lock(LockRequest {
            name: b"job".to_vec().into(),
            lease: 0x1234_5678,
        })
        .await
        .expect_err("a lock without a lease");
    assert_eq!(refused.message(), "etcdserver: requested lease not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_increments_of_a_shared_counter_never_collide() {
    const CONTENDERS: usize = 6;
    const ROUNDS: usize = 5;
    let member = Member::start().await;
    let client = GrpcClient::connect(&member.endpoint())
        .await
        .expect("connect");
    client.set("counter", "0").await.expect("init");
    let mut tasks = Vec::new();
    for _ in 0..CONTENDERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let keeper = LeaseKeeper::grant(&client, 30).await.expect("lease");
            for _ in 0..ROUNDS {
                let (key, _) = concurrency::lock(&client, b"counter-lock", keeper.id())
                    .await
                    .expect("lock");
                // A plain read-modify-write: only the lock keeps increments apart.
                let value: u64 = String::from_utf8_lossy(
                    &client
                        .get("counter")
                        .await
                        .expect("get")
                        .expect("set")
                        .value,
                )
                .parse()
                .expect("number");
                tokio::time::sleep(Duration::from_millis(5)).await;
                client
                    .set("counter", (value + 1).to_string())
                    .await
                    .expect("put");
                concurrency::unlock(&client, key).await.expect("unlock");
            }
            keeper.revoke(&client).await.expect("revoke");
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("contenders finish")
            .expect("task");
    }
    let total = client
        .get("counter")
        .await
        .expect("get")
        .expect("set")
        .value;
    assert_eq!(total, (CONTENDERS * ROUNDS).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_leader_proclaim_observe_and_resign() {
    let member = Member::start().await;
    let channel = member.channel().await;
    let mut election = ElectionClient::new(channel.clone());
    let no_leader = election
        .leader(LeaderRequest {
            name: b"pick".to_vec().into(),
        })
        .await
        .expect_err("nobody campaigned");
    assert_eq!(
        (no_leader.code(), no_leader.message()),
        (Code::Unknown, "election: no leader")
    );
    let (alice_lease, bob_lease) = (grant(&member, 60).await, grant(&member, 60).await);
    let alice = election
        .campaign(CampaignRequest {
            name: b"pick".to_vec().into(),
            lease: alice_lease,
            value: b"alice".to_vec().into(),
        })
        .await
        .expect("campaign")
        .into_inner()
        .leader
        .expect("leader key");
    let mut observe = ElectionClient::new(channel.clone())
        .observe(LeaderRequest {
            name: b"pick".to_vec().into(),
        })
        .await
        .expect("observe")
        .into_inner();
    let mut observed = Vec::new();
    let mut next_observed = async || {
        let response = tokio::time::timeout(CALL_TIMEOUT, observe.message())
            .await
            .expect("an observed leader in time")
            .expect("observe stream")
            .expect("observe item");
        String::from_utf8_lossy(&response.kv.expect("kv").value).into_owned()
    };
    observed.push(next_observed().await);

    let mut bob_election = ElectionClient::new(channel.clone());
    let mut bob = tokio::spawn(async move {
        bob_election
            .campaign(CampaignRequest {
                name: b"pick".to_vec().into(),
                lease: bob_lease,
                value: b"bob".to_vec().into(),
            })
            .await
    });
    assert!(
        tokio::time::timeout(STILL_BLOCKED, &mut bob).await.is_err(),
        "bob waits while alice leads"
    );
    election
        .proclaim(ProclaimRequest {
            leader: Some(alice.clone()),
            value: b"alice-2".to_vec().into(),
        })
        .await
        .expect("proclaim");
    observed.push(next_observed().await);
    let leader = election
        .leader(LeaderRequest {
            name: b"pick".to_vec().into(),
        })
        .await
        .expect("leader")
        .into_inner();
    assert_eq!(leader.kv.expect("kv").value, b"alice-2".to_vec());

    election
        .resign(ResignRequest {
            leader: Some(alice.clone()),
        })
        .await
        .expect("resign");
    let bob = tokio::time::timeout(CALL_TIMEOUT, bob)
        .await
        .expect("bob leads after alice resigns")
        .expect("task")
        .expect("campaign")
        .into_inner()
        .leader
        .expect("leader key");
    assert_eq!(bob.key, format!("pick/{bob_lease:x}").into_bytes());
    observed.push(next_observed().await);
    assert_eq!(observed, ["alice", "alice-2", "bob"]);

    // Alice no longer leads: proclaiming with her key is refused.
    let stale = election
        .proclaim(ProclaimRequest {
            leader: Some(alice),
            value: b"late".to_vec().into(),
        })
        .await
        .expect_err("a resigned leader cannot proclaim");
    assert_eq!(
        (stale.code(), stale.message()),
        (Code::Unknown, "election: not leader")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_outlives_its_ttl_and_the_recipes_report_etcds_errors() {
    let member = Member::start().await;
    let client = GrpcClient::connect(&member.endpoint())
        .await
        .expect("connect");
    let keeper = LeaseKeeper::grant(&client, 2).await.expect("lease");
    client
        .put(mnemo::types::PutRequest::new("kept", "v").with_lease(keeper.id()))
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(keeper.is_alive());
    assert!(client.get("kept").await.expect("get").is_some());
    let no_leader = concurrency::leader(&client, b"nobody")
        .await
        .expect_err("nobody campaigned");
    assert_eq!(no_leader, ClientError::Etcd(EtcdError::ElectionNoLeader));
    let observed = concurrency::observe(client.clone(), "nobody".into());
    futures::pin_mut!(observed);
    assert!(
        tokio::time::timeout(STILL_BLOCKED, observed.next())
            .await
            .is_err(),
        "observing an election without a leader waits"
    );
    keeper.revoke(&client).await.expect("revoke");
    assert!(client.get("kept").await.expect("get").is_none());
}

/// etcdctl 3.4 `lock` and `elect` run clientv3's recipes over KV, Lease and Watch: against
/// the member they exclude each other, hand over when the holder stops, and report leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_work_against_the_member() {
    use tokio::io::{AsyncBufReadExt, BufReader, Lines};
    use tokio::process::{Child, ChildStdout, Command};

    /// A running etcdctl whose output is read line by line.
    struct Running {
        child: Child,
        lines: Lines<BufReader<ChildStdout>>,
    }

    fn start(member: &Member, args: &[&str]) -> Running {
        let mut command = Command::from(crate::support::etcdctl_command(&member.endpoint(), args));
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("etcdctl runs");
        let stdout = child.stdout.take().expect("piped stdout");
        Running {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn next_line(running: &mut Running) -> String {
        tokio::time::timeout(CALL_TIMEOUT, running.lines.next_line())
            .await
            .expect("etcdctl printed in time")
            .expect("readable output")
            .expect("a line before etcdctl ended")
    }

    /// Stops etcdctl the way a user does (Ctrl-C), so it releases what it holds.
    async fn interrupt(mut running: Running) {
        let pid = running.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(CALL_TIMEOUT, running.child.wait())
            .await
            .expect("etcdctl exits after SIGINT")
            .expect("wait");
    }

    let member = Member::start().await;
    let mut first = start(&member, &["lock", "job"]);
    let first_key = next_line(&mut first).await;
    assert!(first_key.starts_with("job/"), "{first_key}");
    let mut second = start(&member, &["lock", "job"]);
    assert!(
        tokio::time::timeout(STILL_BLOCKED, second.lines.next_line())
            .await
            .is_err(),
        "the second etcdctl lock must wait"
    );
    interrupt(first).await;
    let second_key = next_line(&mut second).await;
    assert!(second_key.starts_with("job/"), "{second_key}");
    assert_ne!(second_key, first_key);
    interrupt(second).await;

    let mut alice = start(&member, &["elect", "pick", "alice"]);
    let alice_key = next_line(&mut alice).await;
    assert!(alice_key.starts_with("pick/"), "{alice_key}");
    assert_eq!(next_line(&mut alice).await, "alice");
    let mut listener = start(&member, &["elect", "--listen", "pick"]);
    assert_eq!(next_line(&mut listener).await, alice_key);
    assert_eq!(next_line(&mut listener).await, "alice");
    let mut bob = start(&member, &["elect", "pick", "bob"]);
    interrupt(alice).await;
    let bob_key = next_line(&mut bob).await;
    assert_eq!(next_line(&mut bob).await, "bob");
    assert_eq!(next_line(&mut listener).await, bob_key);
    assert_eq!(next_line(&mut listener).await, "bob");
    interrupt(bob).await;
    interrupt(listener).await;
}
