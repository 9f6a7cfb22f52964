//! Multi-member clusters of real processes, for the `cluster` tests.
//!
//! A [`Cluster`] starts N members with etcd's clustering flags on loopback. Every member sits
//! behind a [`PeerProxy`]: it listens on its own peer port but advertises the proxy's URL in
//! `--initial-advertise-peer-urls` and `--initial-cluster`, so all member-to-member traffic
//! passes through the harness and can be cut and healed ([`Cluster::isolate`],
//! [`Cluster::heal`]).
//!
//! Cutting only the connections that arrive at a member's own proxy is not a partition:
//! etcd's members send through streams the *receiver* dialed and fall back to POSTing at the
//! receiver, so a member whose inbound side is cut still reaches everyone through connections
//! it opens to the others' proxies. An isolated member must lose those too. Every proxy
//! therefore learns which member opened each connection it accepts (from the kernel's socket
//! table and the members' file descriptors under `/proc`) and closes connections whose either
//! end is isolated.
//!
//! [`WriteLoad`] is a bounded put load through several members that records every
//! acknowledged put, for the failover and catch-up tests.
//!
//! Rules, as in the rest of the harness: only 127.0.0.1; only processes started here are
//! signalled, by PID; every wait is a `poll_until` with a deadline; every loop is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use mnemo::pb::etcdserverpb::{
    HashKvRequest, PutRequest, RangeRequest, RangeResponse, StatusRequest, StatusResponse,
};
use mnemo::pb::mvccpb::KeyValue;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::{ClusterFlags, Member, RESPONSE_BYTES_MAX, etcdctl, ok_stdout, poll_until, stderr_of};

/// `--heartbeat-interval` of every cluster test.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);
/// `--election-timeout` of every cluster test; etcd refuses one under 5 heartbeats.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);
const _: () = assert!(ELECTION_TIMEOUT.as_millis() >= 5 * HEARTBEAT_INTERVAL.as_millis());
/// `--snapshot-count` unless a test asks for another: etcd 3.4's default.
pub const SNAPSHOT_COUNT_DEFAULT: u64 = 100_000;
/// Deadline of one Maintenance.Status call; short, so that a paused or cut-off member does not
/// hold up a poll over several members.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of one read or write a helper makes while polling.
const POLL_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a cluster may take to agree on a leader (startup, or after a failure).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long members may take to reach the same state (HashKV and ranges) after a restart,
/// including catching up on tens of thousands of writes.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the proxies may take to close the connections of a member being isolated.
const CUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a membership change may be refused while the cluster counts as unhealthy (or, for
/// a promotion, while the learner is behind).
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(60);
/// etcd's refusal of a membership change while members are not yet connected long enough.
const UNHEALTHY_CLUSTER: &str = "etcdserver: unhealthy cluster";
/// Worker threads of the proxies' runtime; peer traffic is light, one would do, two keep a
/// slow connection from delaying the others.
const PROXY_THREADS: usize = 2;
/// Spawn attempts of one member that lost a port to another process.
const START_ATTEMPTS_MAX: usize = 3;
/// Log lines of each member shown when a cluster test fails.
const LOG_TAIL_LINES: usize = 25;

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of founding members.
    pub size: usize,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// Flags added to the command line of the founding member in each slot, by slot (for
    /// example a small `--quota-backend-bytes` on one member only).
    pub slot_args: Vec<(usize, Vec<String>)>,
}

impl ClusterOptions {
    /// `size` founding members and the default snapshot count.
    pub fn new(size: usize) -> ClusterOptions {
        ClusterOptions {
            size,
            snapshot_count: SNAPSHOT_COUNT_DEFAULT,
            slot_args: Vec::new(),
        }
    }
}

/// One member of the cluster, running or not, with its proxy.
struct Slot {
    member: Member,
    proxy: PeerProxy,
    /// The member id the cluster gave it, once known (from Status or `member add`).
    id: Option<u64>,
    /// False once it was removed from the membership.
    in_cluster: bool,
}

/// A cluster of real processes on loopback; members are addressed by slot (0, 1, ...), in the
/// order they were created. Dropping it kills every member still running.
pub struct Cluster {
    options: ClusterOptions,
    token: String,
    network: Arc<Network>,
    /// Runs the proxies, on a thread of its own, so that peer traffic flows at the same pace
    /// whatever the test's own runtime is busy with (a load of many writers, a blocking
    /// etcdctl call, comparing large ranges). Shut down without waiting when the cluster is
    /// dropped, which closes every proxied connection.
    proxy_runtime: Option<tokio::runtime::Runtime>,
    slots: Vec<Slot>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.proxy_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Cluster {
    /// Starts `size` members and waits until every one serves.
    pub async fn start(size: usize) -> Cluster {
        Cluster::start_with(ClusterOptions::new(size)).await
    }

    /// Starts the members `options` describe and waits until every one serves.
    pub async fn start_with(options: ClusterOptions) -> Cluster {
        let network = Arc::new(Network::new());
        let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PROXY_THREADS)
            .thread_name("peer-proxy")
            .enable_all()
            .build()
            .expect("start the proxies' runtime");
        let proxies: Vec<PeerProxy> = (0..options.size)
            .map(|slot| PeerProxy::start(slot, Arc::clone(&network), proxy_runtime.handle()))
            .collect();
        let names: Vec<String> = (0..options.size).map(member_name).collect();
        let initial_cluster = names
            .iter()
            .zip(&proxies)
            .map(|(name, proxy)| format!("{name}={}", proxy.url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("it-cluster-{}", proxies[0].port);
        let mut cluster = Cluster {
            token,
            network,
            proxy_runtime: Some(proxy_runtime),
            slots: Vec::with_capacity(options.size),
            options,
        };
        for (slot, (name, proxy)) in names.iter().zip(proxies).enumerate() {
            let mut flags = cluster.flags(&proxy, initial_cluster.clone(), "new");
            for (_, args) in cluster
                .options
                .slot_args
                .iter()
                .filter(|(of, _)| *of == slot)
            {
                flags.extra_args.extend(args.iter().cloned());
            }
            cluster.slots.push(Slot {
                member: Member::unstarted(name, Some(flags)),
                proxy,
                id: None,
                in_cluster: true,
            });
        }
        // Founding members wait for each other, so all are spawned before any is awaited.
        for slot in 0..cluster.slots.len() {
            cluster.pick_ports_and_spawn(slot);
        }
        for slot in 0..cluster.slots.len() {
            cluster.wait_ready_or_respawn(slot).await;
        }
        for slot in 0..cluster.slots.len() {
            cluster.learn_id(slot).await;
        }
        cluster
    }

    fn flags(
        &self,
        proxy: &PeerProxy,
        initial_cluster: String,
        state: &'static str,
    ) -> ClusterFlags {
        ClusterFlags {
            advertise_peer_url: proxy.url(),
            initial_cluster,
            state,
            token: self.token.clone(),
            extra_args: vec![
                "--heartbeat-interval".into(),
                HEARTBEAT_INTERVAL.as_millis().to_string(),
                "--election-timeout".into(),
                ELECTION_TIMEOUT.as_millis().to_string(),
                "--snapshot-count".into(),
                self.options.snapshot_count.to_string(),
            ],
        }
    }

    fn pick_ports_and_spawn(&mut self, slot: usize) {
        let entry = &mut self.slots[slot];
        // Two equal ports in a row is next to impossible; a handful of tries is plenty.
        let picked = (0..START_ATTEMPTS_MAX).any(|_| entry.member.pick_ports());
        assert!(
            picked,
            "no two distinct free ports for {}",
            entry.member.name()
        );
        entry.proxy.set_target(entry.member.peer_port());
        self.spawn(slot);
    }

    fn spawn(&mut self, slot: usize) {
        let member = &mut self.slots[slot].member;
        member.spawn();
        self.network.set_pid(slot, Some(member.pid()));
    }

    /// Waits until the member serves. A member that lost one of its ports to another process
    /// gets fresh ports and a fresh data directory: only its proxy's port is known to the other
    /// members, so its own ports may change before it first served.
    async fn wait_ready_or_respawn(&mut self, slot: usize) {
        for attempt in 1..=START_ATTEMPTS_MAX {
            let outcome = self.slots[slot].member.wait_ready().await;
            match outcome {
                Ok(()) => return,
                Err(why)
                    if attempt < START_ATTEMPTS_MAX && self.slots[slot].member.lost_port_race() =>
                {
                    eprintln!(
                        "{}: port taken before it could bind ({why}); retrying",
                        member_name(slot)
                    );
                    let _ = std::fs::remove_dir_all(self.slots[slot].member.data_dir());
                    self.pick_ports_and_spawn(slot);
                }
                Err(why) => panic!(
                    "{} did not become ready: {why}\n{}",
                    member_name(slot),
                    self.log_tails()
                ),
            }
        }
    }

    async fn learn_id(&mut self, slot: usize) {
        let this = &*self;
        let what = format!("Maintenance.Status of {}", member_name(slot));
        let status = poll_until_or_dump(this, &what, LEADER_TIMEOUT, || async move {
            this.status(slot).await.ok()
        })
        .await;
        let id = status.header.as_ref().map_or(0, |header| header.member_id);
        assert_ne!(id, 0, "{} reported member id 0", member_name(slot));
        self.slots[slot].id = Some(id);
    }

    /// The member in `slot`.
    pub fn member(&self, slot: usize) -> &Member {
        &self.slots[slot].member
    }

    /// The stopped member in `slot`, to change how it starts next.
    pub fn stopped_member_mut(&mut self, slot: usize) -> &mut Member {
        let member = &mut self.slots[slot].member;
        assert!(!member.is_running(), "{} still runs", member.name());
        member
    }

    /// Starts `slot`'s stopped member without waiting for it to serve (it may be expected to
    /// refuse to start; see [`Cluster::wait_exit`]).
    pub fn spawn_detached(&mut self, slot: usize) {
        self.spawn(slot);
    }

    /// The member id of `slot`.
    pub fn id(&self, slot: usize) -> u64 {
        self.slots[slot]
            .id
            .unwrap_or_else(|| panic!("the id of {} is not known yet", member_name(slot)))
    }

    /// The member id of `slot` as etcdctl prints it: lowercase hex, no padding.
    pub fn hex_id(&self, slot: usize) -> String {
        format!("{:x}", self.id(slot))
    }

    /// The slot whose member has id `id`.
    pub fn slot_of(&self, id: u64) -> Option<usize> {
        self.slots.iter().position(|entry| entry.id == Some(id))
    }

    /// Slots of members in the membership whose process runs.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&slot| self.slots[slot].in_cluster && self.slots[slot].member.is_running())
            .collect()
    }

    /// Client URLs of `slots`, comma-separated, for etcdctl's `--endpoints`.
    pub fn endpoints(&self, slots: &[usize]) -> String {
        slots
            .iter()
            .map(|&slot| self.slots[slot].member.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs etcdctl against the members in `slots`.
    pub fn etcdctl(&self, slots: &[usize], args: &[&str]) -> std::process::Output {
        etcdctl(&self.endpoints(slots), args, None)
    }

    /// A KV client of `slot` whose calls fail after `call_timeout`; it connects on first use,
    /// so it can be made for a member that is down or paused.
    pub fn kv(&self, slot: usize, call_timeout: Duration) -> KvClient<Channel> {
        KvClient::new(self.slots[slot].member.lazy_channel(call_timeout))
            .max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// A Maintenance client of `slot`, like [`Cluster::kv`].
    pub fn maintenance(&self, slot: usize, call_timeout: Duration) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.slots[slot].member.lazy_channel(call_timeout))
    }

    /// Maintenance.Status of `slot`, failing after [`STATUS_TIMEOUT`].
    pub async fn status(&self, slot: usize) -> Result<StatusResponse, tonic::Status> {
        self.maintenance(slot, STATUS_TIMEOUT)
            .status(StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    /// The leader as `slots` see it: `Some` when every one of them answers Status, all name the
    /// same leader, and that leader is one of `slots`.
    pub async fn leader_among(&self, slots: &[usize]) -> Option<usize> {
        let mut leaders = BTreeSet::new();
        for &slot in slots {
            let status = self.status(slot).await.ok()?;
            leaders.insert(status.leader);
        }
        let leader = match leaders.into_iter().collect::<Vec<_>>()[..] {
            [leader] if leader != 0 => leader,
            _ => return None,
        };
        let slot = self.slot_of(leader)?;
        slots.contains(&slot).then_some(slot)
    }

    /// Waits until `slots` agree on a leader among themselves; returns its slot.
    pub async fn wait_leader(&self, slots: &[usize]) -> usize {
        let what = format!("one leader among {}", self.names(slots));
        poll_until_or_dump(self, &what, LEADER_TIMEOUT, || self.leader_among(slots)).await
    }

    /// Names of `slots`, for messages.
    pub fn names(&self, slots: &[usize]) -> String {
        slots
            .iter()
            .map(|&slot| self.slots[slot].member.name().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `kill -9` of `slot`'s process.
    pub fn kill9(&mut self, slot: usize) -> ExitStatus {
        self.network.set_pid(slot, None);
        self.slots[slot].member.kill9()
    }

    /// SIGTERM to `slot`'s process; waits for it to exit.
    pub async fn terminate(&mut self, slot: usize) -> ExitStatus {
        let status = self.slots[slot].member.terminate().await;
        self.network.set_pid(slot, None);
        status
    }

    /// Starts `slot`'s stopped member again on its data directory and waits until it serves.
    pub async fn restart(&mut self, slot: usize) {
        self.spawn(slot);
        if let Err(why) = self.slots[slot].member.wait_ready().await {
            panic!(
                "{} did not come back after restart: {why}\n{}",
                member_name(slot),
                self.log_tails()
            );
        }
    }

    /// Freezes `slot`'s process with SIGSTOP.
    pub fn sigstop(&self, slot: usize) {
        self.slots[slot].member.signal("STOP");
    }

    /// Resumes `slot`'s process with SIGCONT.
    pub fn sigcont(&self, slot: usize) {
        self.slots[slot].member.signal("CONT");
    }

    /// Waits up to `timeout` for `slot`'s process to exit by itself.
    pub async fn wait_exit(&mut self, slot: usize, timeout: Duration) -> Option<ExitStatus> {
        let status = self.slots[slot].member.wait_exit(timeout).await;
        if status.is_some() {
            self.network.set_pid(slot, None);
        }
        status
    }

    /// Cuts `slot` off from every other member: open peer connections to or from it are
    /// closed, and new ones are closed as soon as they are accepted. Returns once no open
    /// connection carries bytes to or from it.
    pub async fn isolate(&self, slot: usize) {
        self.network.isolated.send_modify(|isolated| {
            isolated.insert(slot);
        });
        let what = format!("every peer connection of {} to close", member_name(slot));
        poll_until_or_dump(self, &what, CUT_TIMEOUT, || async move {
            (!self.network.touches(slot)).then_some(())
        })
        .await;
    }

    /// Undoes [`Cluster::isolate`].
    pub fn heal(&self, slot: usize) {
        self.network.isolated.send_modify(|isolated| {
            isolated.remove(&slot);
        });
    }

    /// Adds a member with `etcdctl member add` (through the running members) without starting
    /// it; returns its slot. Start it with [`Cluster::start_added`].
    pub async fn add_member(&mut self, learner: bool) -> usize {
        let slot = self.slots.len();
        let name = member_name(slot);
        let runtime = self
            .proxy_runtime
            .as_ref()
            .expect("the proxies' runtime runs");
        let proxy = PeerProxy::start(slot, Arc::clone(&self.network), runtime.handle());
        let peer_urls = format!("--peer-urls={}", proxy.url());
        let mut args = vec!["member", "add", &name, &peer_urls, "-w", "json"];
        if learner {
            args.push("--learner");
        }
        let running = self.running();
        let printed = self.reconfigure(&running, &args, &[]).await;
        let added: Value = serde_json::from_str(&printed)
            .unwrap_or_else(|err| panic!("member add printed no JSON: {err}"));
        let id = added["member"]["ID"]
            .as_u64()
            .unwrap_or_else(|| panic!("member add printed no member.ID: {added}"));
        // The new member must be told the membership as it is now, itself included.
        let mut initial: Vec<String> = self
            .slots
            .iter()
            .filter(|entry| entry.in_cluster)
            .map(|entry| format!("{}={}", entry.member.name(), entry.proxy.url()))
            .collect();
        initial.push(format!("{name}={}", proxy.url()));
        let flags = self.flags(&proxy, initial.join(","), "existing");
        self.slots.push(Slot {
            member: Member::unstarted(&name, Some(flags)),
            proxy,
            id: Some(id),
            in_cluster: true,
        });
        slot
    }

    /// Starts a member made by [`Cluster::add_member`] and waits until it serves.
    pub async fn start_added(&mut self, slot: usize) {
        self.pick_ports_and_spawn(slot);
        self.wait_ready_or_respawn(slot).await;
    }

    /// Removes `slot` from the membership with `etcdctl member remove`, sent through every
    /// running member (including, when it runs, the one removed: etcdctl picks one).
    pub async fn remove_member(&mut self, slot: usize) {
        let running = self.running();
        let hex = self.hex_id(slot);
        self.reconfigure(&running, &["member", "remove", &hex], &[])
            .await;
        self.slots[slot].in_cluster = false;
    }

    /// Runs an etcdctl membership command through `slots` until the cluster accepts it, and
    /// returns what it printed. etcd refuses reconfiguration with `etcdserver: unhealthy
    /// cluster` until its members have been connected for a while (5 s in 3.4, its strict
    /// reconfiguration check); a refused change did not happen, so sending it again is safe.
    /// So are the refusals in `also_retry`. Any other failure fails the test.
    pub async fn reconfigure(&self, slots: &[usize], args: &[&str], also_retry: &[&str]) -> String {
        let what = format!("etcdctl {} to be accepted", args.join(" "));
        poll_until_or_dump(self, &what, RECONFIGURE_TIMEOUT, || {
            let output = self.etcdctl(slots, args);
            let stderr = stderr_of(&output);
            let refused = !output.status.success()
                && std::iter::once(UNHEALTHY_CLUSTER)
                    .chain(also_retry.iter().copied())
                    .any(|text| stderr.contains(text));
            async move { (!refused).then(|| ok_stdout(&output)) }
        })
        .await
    }

    /// Puts `key` = `value` through `slot`, retrying for up to `timeout` (elections and
    /// forwarding may refuse a few); returns the acknowledged revision.
    pub async fn put_eventually(
        &self,
        slot: usize,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> i64 {
        let what = format!("a put of {key} through {} to succeed", member_name(slot));
        poll_until_or_dump(self, &what, timeout, || async move {
            let mut kv = self.kv(slot, POLL_CALL_TIMEOUT);
            let request = PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: value.as_bytes().to_vec().into(),
                ..Default::default()
            };
            let response = kv.put(request).await.ok()?.into_inner();
            Some(response.header.map_or(0, |header| header.revision))
        })
        .await
    }

    /// The value of `key` read through `slot`, linearizable or serializable, failing after
    /// `timeout`; `Ok(None)` when the key does not exist.
    pub async fn get(
        &self,
        slot: usize,
        key: &str,
        serializable: bool,
        timeout: Duration,
    ) -> Result<Option<String>, tonic::Status> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec().into(),
            serializable,
            ..Default::default()
        };
        let response = self.kv(slot, timeout).range(request).await?.into_inner();
        Ok(response
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Waits until a serializable read of `key` on `slot` returns `value`.
    pub async fn wait_value(&self, slot: usize, key: &str, value: &str, timeout: Duration) {
        let what = format!("{} to hold {key} = {value}", member_name(slot));
        poll_until_or_dump(self, &what, timeout, || async move {
            let seen = self.get(slot, key, true, POLL_CALL_TIMEOUT).await.ok()??;
            (seen == value).then_some(())
        })
        .await;
    }

    /// Every key at `revision` on `slot`, read serializably (from the member's own state).
    pub async fn range_all(
        &self,
        slot: usize,
        revision: i64,
        serializable: bool,
    ) -> Result<RangeResponse, tonic::Status> {
        let request = RangeRequest {
            key: vec![0].into(),
            range_end: vec![0].into(),
            revision,
            serializable,
            ..Default::default()
        };
        self.kv(slot, CATCH_UP_TIMEOUT)
            .range(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Waits until `slots` hold exactly the same store: takes the current revision from a
    /// linearizable read through the first, waits until every member's Maintenance.HashKV at
    /// that revision answers, asserts the hashes agree, then asserts the full ranges at that
    /// revision are equal. Returns the revision compared.
    pub async fn assert_converged(&self, slots: &[usize]) -> i64 {
        let revision = poll_until_or_dump(
            self,
            "a linearizable read to learn the current revision",
            LEADER_TIMEOUT,
            || async move {
                let mut kv = self.kv(slots[0], POLL_CALL_TIMEOUT);
                let request = RangeRequest {
                    key: vec![0].into(),
                    range_end: vec![0].into(),
                    count_only: true,
                    ..Default::default()
                };
                let response = kv.range(request).await.ok()?.into_inner();
                response.header.map(|header| header.revision)
            },
        )
        .await;
        let mut hashes = Vec::with_capacity(slots.len());
        for &slot in slots {
            let what = format!("HashKV at revision {revision} on {}", member_name(slot));
            let hash = poll_until_or_dump(self, &what, CATCH_UP_TIMEOUT, || async move {
                let mut maintenance = self.maintenance(slot, POLL_CALL_TIMEOUT);
                let response = maintenance.hash_kv(HashKvRequest { revision }).await.ok()?;
                let response = response.into_inner();
                Some((response.hash, response.compact_revision))
            })
            .await;
            hashes.push((slot, hash));
        }
        let first = hashes[0].1;
        assert!(
            hashes.iter().all(|(_, hash)| *hash == first),
            "HashKV (hash, compact revision) at revision {revision} differs: {:?}\n{}",
            hashes
                .iter()
                .map(|(slot, hash)| (member_name(*slot), *hash))
                .collect::<Vec<_>>(),
            self.log_tails()
        );
        let mut reference: Option<(usize, Vec<KeyValue>)> = None;
        for &slot in slots {
            let response = self
                .range_all(slot, revision, true)
                .await
                .unwrap_or_else(|status| {
                    panic!(
                        "full range of {} at {revision}: {status:?}",
                        member_name(slot)
                    )
                });
            match &reference {
                None => reference = Some((slot, response.kvs)),
                Some((first, kvs)) => {
                    assert_eq!(
                        response.kvs.len(),
                        kvs.len(),
                        "{} and {} hold different numbers of keys at revision {revision}",
                        member_name(slot),
                        member_name(*first)
                    );
                    if let Some(index) = kvs.iter().zip(&response.kvs).position(|(a, b)| a != b) {
                        panic!(
                            "{} and {} differ at revision {revision}: {:?} vs {:?}",
                            member_name(*first),
                            member_name(slot),
                            kvs[index],
                            response.kvs[index]
                        );
                    }
                }
            }
        }
        revision
    }

    /// The last log lines of every member, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        for entry in &self.slots {
            let log = entry.member.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            text.push_str(&format!(
                "--- last lines of {}'s log ---\n{}\n",
                entry.member.name(),
                lines[start..].join("\n")
            ));
        }
        text
    }
}

/// The name of the member in `slot`: `m0`, `m1`, ...
pub fn member_name(slot: usize) -> String {
    format!("m{slot}")
}

/// [`poll_until`], but a timeout panics with every member's log tail.
pub async fn poll_until_or_dump<T, F, Fut>(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    condition: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let polled = std::panic::AssertUnwindSafe(poll_until(what, timeout, condition));
    match futures::FutureExt::catch_unwind(polled).await {
        Ok(value) => value,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_default();
            panic!("{why}\n{}", cluster.log_tails());
        }
    }
}

/// Parsed `etcdctl endpoint status -w json`: per endpoint, (member id, leader id, raft index,
/// raft applied index). Panics when etcdctl fails or prints something else. etcdctl leaves
/// out fields that are zero (Go's `omitempty`), so a missing leader or index reads as 0.
pub fn endpoint_status(cluster: &Cluster, slots: &[usize]) -> Vec<(u64, u64, u64, u64)> {
    let output = cluster.etcdctl(slots, &["endpoint", "status", "-w", "json"]);
    let printed: Value = serde_json::from_str(&ok_stdout(&output))
        .unwrap_or_else(|err| panic!("endpoint status printed no JSON: {err}"));
    let entries = printed.as_array().expect("endpoint status prints an array");
    entries
        .iter()
        .map(|entry| {
            let status = &entry["Status"];
            let member_id = status["header"]["member_id"]
                .as_u64()
                .unwrap_or_else(|| panic!("endpoint status has no header.member_id: {entry}"));
            let number = |value: &Value| value.as_u64().unwrap_or(0);
            (
                member_id,
                number(&status["leader"]),
                number(&status["raftIndex"]),
                number(&status["raftAppliedIndex"]),
            )
        })
        .collect()
}

// ---- the peer network: one proxy per member, and the cut ----

/// What the proxies share: which members are cut off, and which process each member is.
struct Network {
    /// Slots cut off from all others. Connection tasks watch it and close when either end of
    /// their connection becomes isolated.
    isolated: watch::Sender<BTreeSet<usize>>,
    /// PID of each slot's running process, by slot, used to tell which member opened a
    /// connection. Locked only to read or write the vector, never across an await.
    pids: Mutex<Vec<Option<u32>>>,
    /// Connections that may carry bytes: (source slot if known, target slot), by a number
    /// unique to each. [`Cluster::isolate`] waits until none touches the isolated member.
    /// Locked only to insert, remove or scan, never across an await.
    live: Mutex<BTreeMap<u64, (Option<usize>, usize)>>,
    /// The next number for `live`.
    next_connection: AtomicU64,
}

impl Network {
    fn new() -> Network {
        Network {
            isolated: watch::Sender::new(BTreeSet::new()),
            pids: Mutex::new(Vec::new()),
            live: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
        }
    }

    /// Whether a connection still carries bytes to or from `slot`, or from an unknown source.
    fn touches(&self, slot: usize) -> bool {
        let live = self.live.lock().expect("live connections lock");
        live.values()
            .any(|&(source, target)| target == slot || source.is_none_or(|source| source == slot))
    }

    fn set_pid(&self, slot: usize, pid: Option<u32>) {
        let mut pids = self.pids.lock().expect("pids lock");
        if pids.len() <= slot {
            pids.resize(slot + 1, None);
        }
        pids[slot] = pid;
    }

    fn pids(&self) -> Vec<(usize, u32)> {
        let pids = self.pids.lock().expect("pids lock");
        pids.iter()
            .enumerate()
            .filter_map(|(slot, pid)| pid.map(|pid| (slot, pid)))
            .collect()
    }
}

/// Whether a connection from `source` to `target` may carry traffic. A connection whose
/// source could not be told is refused while anyone is isolated: it might come from the
/// isolated member, and refusing it only delays a healthy member, which dials again.
fn connection_allowed(isolated: &BTreeSet<usize>, source: Option<usize>, target: usize) -> bool {
    let source_allowed = match source {
        Some(source) => !isolated.contains(&source),
        None => isolated.is_empty(),
    };
    source_allowed && !isolated.contains(&target)
}

/// Keeps a connection listed in [`Network::live`] while it lives.
struct LiveConnection<'a> {
    network: &'a Network,
    number: u64,
}

impl<'a> LiveConnection<'a> {
    fn register(network: &'a Network, source: Option<usize>, target: usize) -> LiveConnection<'a> {
        let number = network.next_connection.fetch_add(1, Ordering::SeqCst);
        network
            .live
            .lock()
            .expect("live connections lock")
            .insert(number, (source, target));
        LiveConnection { network, number }
    }
}

impl Drop for LiveConnection<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.network.live.lock() {
            live.remove(&self.number);
        }
    }
}

/// A TCP proxy on a loopback port in front of one member's peer port.
pub struct PeerProxy {
    port: u16,
    /// The member's real peer port; it changes only while the member is down.
    target: Arc<Mutex<u16>>,
    accept_task: JoinHandle<()>,
}

impl PeerProxy {
    fn start(slot: usize, network: Arc<Network>, runtime: &tokio::runtime::Handle) -> PeerProxy {
        // The proxy keeps its port for the cluster's whole life, so it cannot lose it to
        // another process the way a member can between picking and binding.
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port on 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("make the proxy listener non-blocking");
        let address = listener.local_addr().expect("proxy local address");
        let target = Arc::new(Mutex::new(0));
        let accept_target = Arc::clone(&target);
        let accept_task = runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("register the proxy listener");
            accept_loop(listener, address, slot, accept_target, network).await;
        });
        PeerProxy {
            port: address.port(),
            target,
            accept_task,
        }
    }

    /// The URL the member advertises and the others dial.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_target(&self, port: u16) {
        *self.target.lock().expect("proxy target lock") = port;
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Accepts connections for the proxy of `slot` until aborted; each one is served by its own
/// task.
async fn accept_loop(
    listener: TcpListener,
    address: SocketAddr,
    slot: usize,
    target: Arc<Mutex<u16>>,
    network: Arc<Network>,
) {
    // One iteration per accepted connection, for as long as the cluster lives; the task is
    // aborted when the proxy is dropped.
    loop {
        let Ok((inbound, from)) = listener.accept().await else {
            continue;
        };
        let port = *target.lock().expect("proxy target lock");
        tokio::spawn(serve_connection(
            inbound,
            from,
            address,
            slot,
            port,
            Arc::clone(&network),
        ));
    }
}

async fn serve_connection(
    mut inbound: TcpStream,
    from: SocketAddr,
    proxy: SocketAddr,
    target: usize,
    target_port: u16,
    network: Arc<Network>,
) {
    let mut isolated = network.isolated.subscribe();
    if isolated.borrow().contains(&target) {
        // Refused: the peer sees the connection close at once.
        let _ = inbound.shutdown().await;
        return;
    }
    let pids = network.pids();
    let source = tokio::task::spawn_blocking(move || {
        mnemo_jepsen::net::proxy::connection_owner(from, proxy, &pids)
    })
    .await
    .ok()
    .flatten();
    // Listed before the check, so an isolation that lands between the two is seen either by
    // the check or by the watch below, and `isolate` waits for this connection to close.
    let _live = LiveConnection::register(&network, source, target);
    if !connection_allowed(&isolated.borrow_and_update(), source, target) {
        let _ = inbound.shutdown().await;
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let cut = async {
        // Ends when the connection must close: an end became isolated, or the cluster is gone.
        while isolated.changed().await.is_ok() {
            if !connection_allowed(&isolated.borrow_and_update(), source, target) {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = cut => {}
    }
    // Dropping both streams closes them.
}

// ---- a bounded write load that records what was acknowledged ----

/// How a [`WriteLoad`] runs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Puts in flight at most; when that many are waiting, the next is sent when one ends.
    pub in_flight_max: usize,
    /// Time between two sends, whatever earlier puts are doing: a steady, open-loop rate,
    /// so a put sent the moment a new leader can take it is not held back behind puts that
    /// went to a dead one. Zero sends as fast as `in_flight_max` allows.
    pub send_interval: Duration,
    /// Puts sent at most (failed ones count).
    pub puts_max: u64,
    /// The load stops sending after this long.
    pub duration_max: Duration,
    /// Deadline of one put; a put past it has an unknown outcome.
    pub put_timeout: Duration,
    /// Put `n` writes key `<prefix>/<n>` (zero-padded), through member `n % members`; every
    /// key is written once.
    pub prefix: String,
}

/// One acknowledged put.
#[derive(Clone, Debug)]
pub struct Ack {
    pub key: String,
    pub value: String,
    /// The revision in the response header.
    pub revision: i64,
    /// When the put was sent.
    pub sent: Instant,
    /// When its acknowledgement arrived.
    pub acked: Instant,
}

/// What a [`WriteLoad`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub acks: Vec<Ack>,
    /// Failed puts (timeouts included) with when they were sent; their outcome is unknown.
    pub errors: Vec<(Instant, String)>,
}

/// Puts through several members in turn, bounded in count, time and puts in flight,
/// recording every acknowledgement.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    put_timeout: Duration,
    dispatcher: JoinHandle<LoadReport>,
}

/// How long the load may take to end after a stop, beyond the deadline of the puts in flight.
const LOAD_STOP_SLACK: Duration = Duration::from_secs(5);

impl WriteLoad {
    /// Starts sending puts through the members in `slots`.
    pub fn start(cluster: &Cluster, slots: &[usize], options: &LoadOptions) -> WriteLoad {
        assert!(!slots.is_empty(), "a load needs at least one member");
        assert!(options.in_flight_max > 0, "a load needs puts in flight");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        // One connection per member: HTTP/2 carries the puts side by side, as etcd's clients
        // do, and the test process spends little CPU on connections.
        let clients: Vec<KvClient<Channel>> = slots
            .iter()
            .map(|&slot| cluster.kv(slot, options.put_timeout))
            .collect();
        let dispatcher = tokio::spawn(dispatch(
            clients,
            options.clone(),
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&sent),
        ));
        WriteLoad {
            stop,
            acked,
            sent,
            put_timeout: options.put_timeout,
            dispatcher,
        }
    }

    /// Acknowledged puts so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Puts sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Whether the load ended by itself (count or duration reached) and every put returned.
    pub fn finished(&self) -> bool {
        self.dispatcher.is_finished()
    }

    /// Stops sending, waits for the puts in flight, and returns what the load saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(self.put_timeout + LOAD_STOP_SLACK, self.dispatcher)
            .await
            .expect("the load ends within one put deadline of a stop")
            .expect("the load's dispatcher panicked")
    }
}

/// Sends the load's puts until its count, its duration or a stop, then waits for the puts in
/// flight; each put runs in a task of its own and records its outcome in the shared report.
async fn dispatch(
    clients: Vec<KvClient<Channel>>,
    options: LoadOptions,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
) -> LoadReport {
    let deadline = Instant::now() + options.duration_max;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(options.in_flight_max));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let mut puts = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(options.send_interval.max(Duration::from_nanos(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for sequence in 0..options.puts_max {
        if !options.send_interval.is_zero() {
            ticks.tick().await;
        }
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            break;
        }
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        // Finished puts are reaped as the load goes, so the set holds at most the puts in
        // flight.
        while puts.try_join_next().is_some() {}
        let member = usize::try_from(sequence).map_or(0, |sequence| sequence % clients.len());
        let mut client = clients[member].clone();
        let key = format!("{}/{sequence:07}", options.prefix);
        let value = format!("s{sequence}-via{member}");
        let (report, acked) = (Arc::clone(&report), Arc::clone(&acked));
        sent.fetch_add(1, Ordering::SeqCst);
        puts.spawn(async move {
            let request = PutRequest {
                key: key.clone().into_bytes().into(),
                value: value.clone().into_bytes().into(),
                ..Default::default()
            };
            let sent_at = Instant::now();
            let outcome = client.put(request).await;
            let mut report = report.lock().expect("load report lock");
            match outcome {
                Ok(response) => {
                    let revision = response
                        .into_inner()
                        .header
                        .map_or(0, |header| header.revision);
                    report.acks.push(Ack {
                        key,
                        value,
                        revision,
                        sent: sent_at,
                        acked: Instant::now(),
                    });
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Err(status) => report
                    .errors
                    .push((sent_at, format!("{key} via member {member}: {status:?}"))),
            }
            drop(permit);
        });
    }
    while puts.join_next().await.is_some() {}
    let mut report = report.lock().expect("load report lock");
    std::mem::take(&mut *report)
}

/// Asserts every acknowledged put is on `slot` with its value and mod revision, reading the
/// keys under `prefix` linearizably (so the member must have caught up with the acks).
pub async fn assert_acks_present(cluster: &Cluster, slot: usize, prefix: &str, acks: &[Ack]) {
    let mut range_end = prefix.as_bytes().to_vec();
    *range_end.last_mut().expect("a non-empty prefix") += 1;
    let request = RangeRequest {
        key: prefix.as_bytes().to_vec().into(),
        range_end: range_end.into(),
        ..Default::default()
    };
    // A linearizable read may fail while leadership changes; it is retried. What it returns
    // once it succeeds is checked as it is.
    let what = format!("a linearizable range of {prefix} on {}", member_name(slot));
    let request = &request;
    let response = poll_until_or_dump(cluster, &what, CATCH_UP_TIMEOUT, || async move {
        let mut kv = cluster.kv(slot, CATCH_UP_TIMEOUT);
        kv.range(request.clone()).await.ok()
    })
    .await
    .into_inner();
    let stored: std::collections::HashMap<&[u8], &KeyValue> =
        response.kvs.iter().map(|kv| (&kv.key[..], kv)).collect();
    let wrong: Vec<String> = acks
        .iter()
        .filter_map(|ack| match stored.get(ack.key.as_bytes()) {
            None => Some(format!(
                "{} (revision {}) is missing",
                ack.key, ack.revision
            )),
            Some(kv) if kv.value != ack.value.as_bytes() || kv.mod_revision != ack.revision => {
                Some(format!(
                    "{}: acknowledged {:?} at revision {}, holds {:?} at {}",
                    ack.key,
                    ack.value,
                    ack.revision,
                    String::from_utf8_lossy(&kv.value),
                    kv.mod_revision
                ))
            }
            Some(_) => None,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged puts are wrong on {}; first ones: {:#?}",
        wrong.len(),
        acks.len(),
        member_name(slot),
        &wrong[..wrong.len().min(10)]
    );
}

#[cfg(test)]
mod tests {
    //! The proxy alone, with no server: this test process plays the member that dials, and an
    //! echo listener plays the peer port behind the proxy.

    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// How long a proxied echo or a close may take.
    const IO_TIMEOUT: Duration = Duration::from_secs(5);

    /// Sends `ping` and expects it back; false when the connection was closed instead.
    async fn echoes(stream: &mut TcpStream) -> bool {
        let exchange = async {
            stream.write_all(b"ping").await?;
            let mut answer = [0_u8; 4];
            stream.read_exact(&mut answer).await?;
            Ok::<bool, std::io::Error>(&answer == b"ping")
        };
        tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .expect("an echo or a close within the timeout")
            .unwrap_or(false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxy_closes_the_connections_of_an_isolated_member_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let echo_port = echo.local_addr().expect("echo address").port();
        tokio::spawn(async move {
            // One task per accepted connection until the test's runtime ends.
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        let network = Arc::new(Network::new());
        let proxy = PeerProxy::start(0, Arc::clone(&network), &tokio::runtime::Handle::current());
        proxy.set_target(echo_port);
        // Connections this process opens count as opened by member 1.
        network.set_pid(1, Some(std::process::id()));
        let isolate = |slot: usize, cut: bool| {
            network.isolated.send_modify(|isolated| {
                if cut {
                    isolated.insert(slot);
                } else {
                    isolated.remove(&slot);
                }
            });
        };
        let connect = || TcpStream::connect(("127.0.0.1", proxy.port));
        // A cut reaches the proxy's pumps asynchronously; an echo sent at once may still pass.
        let cut_done = |slot: usize| {
            let network = Arc::clone(&network);
            async move {
                let deadline = Instant::now() + IO_TIMEOUT;
                while network.touches(slot) {
                    assert!(
                        Instant::now() < deadline,
                        "the proxy never closed the cut connections"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };

        let mut from_one = connect().await.expect("connect through the proxy");
        assert!(echoes(&mut from_one).await, "traffic flows before any cut");
        isolate(2, true);
        assert!(
            echoes(&mut from_one).await,
            "cutting an unrelated member changes nothing"
        );
        isolate(1, true);
        cut_done(1).await;
        assert!(
            !echoes(&mut from_one).await,
            "the source's connection is closed"
        );
        let mut refused = connect().await.expect("the proxy still accepts");
        assert!(
            !echoes(&mut refused).await,
            "new connections of the isolated source are closed"
        );
        isolate(1, false);
        isolate(2, false);

        let mut to_zero = connect().await.expect("connect through the proxy");
        assert!(
            echoes(&mut to_zero).await,
            "traffic flows again after healing"
        );
        isolate(0, true);
        cut_done(0).await;
        assert!(
            !echoes(&mut to_zero).await,
            "the target's connection is closed"
        );
        isolate(0, false);
        let mut healed = connect().await.expect("connect through the proxy");
        assert!(
            echoes(&mut healed).await,
            "traffic flows after healing the target"
        );
        assert!(
            network
                .live
                .lock()
                .expect("live connections lock")
                .values()
                .all(|&(source, _)| source == Some(1)),
            "every connection of this process was attributed to member 1"
        );
    }
}
